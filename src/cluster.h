/*-------------------------------------------------------------------------
 *
 * cluster.h
 *		A Citus cluster's nodes share the account's budget.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KLING_CLUSTER_H
#define KLING_CLUSTER_H

extern int	kling_cluster_share(int max_in_flight);
extern Oid	kling_cluster_logical_table(Relation rel);

#endif							/* KLING_CLUSTER_H */
