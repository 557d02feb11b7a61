/*-------------------------------------------------------------------------
 *
 * cluster.c
 *		kling on a Citus cluster: each node keeps the tasks of the rows it
 *		holds (a trigger on a distributed table runs on the shard's node),
 *		and the nodes split the account's kling.max_in_flight between them.
 *
 * A node's share is kling.max_in_flight divided by the number of nodes
 * (the primaries in pg_dist_node, this one included), the remainder going
 * to the nodes of the lowest group ids, so the shares add up to the
 * account's limit however many nodes send.  The split is static: a node
 * with nothing to send leaves its share unused.
 *
 * A write-back names the distributed table, not the shard: after the shard
 * moves to another node, or splits, the URL still reaches the row, routed
 * by Citus from the node that holds the task.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "cluster.h"

static bool kling_citus_present(void);

/* Whether Citus's catalog is in this database. */
static bool
kling_citus_present(void)
{
	return OidIsValid(get_relname_relid("pg_dist_node", PG_CATALOG_NAMESPACE)) &&
		OidIsValid(get_relname_relid("pg_dist_local_group", PG_CATALOG_NAMESPACE)) &&
		OidIsValid(get_relname_relid("pg_dist_shard", PG_CATALOG_NAMESPACE));
}

/*
 * This node's share of max_in_flight, or max_in_flight itself outside a
 * Citus cluster.  Runs inside SPI.
 */
int
kling_cluster_share(int max_in_flight)
{
	int			nodes;
	int			before;
	bool		isnull;

	if (!kling_citus_present())
		return max_in_flight;
	if (SPI_execute("WITH g AS (SELECT groupid FROM pg_catalog.pg_dist_node"
					"           WHERE isactive AND noderole = 'primary'"
					"           UNION SELECT groupid FROM pg_catalog.pg_dist_local_group)"
					" SELECT count(*)::int4, (count(*) FILTER (WHERE groupid <"
					"        (SELECT groupid FROM pg_catalog.pg_dist_local_group)))::int4 FROM g",
					true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not count the nodes of the Citus cluster");
	nodes = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	before = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	if (nodes <= 1)
		return max_in_flight;
	return max_in_flight / nodes + (before < max_in_flight % nodes ? 1 : 0);
}

/*
 * The distributed table a Citus shard belongs to (its name is the table's
 * name, "_", the shard id, in the same schema), or the relation itself.
 * With the trigger's rights, its catalog query fully qualified.
 */
Oid
kling_cluster_logical_table(Relation rel)
{
	const char *name = RelationGetRelationName(rel);
	const char *suffix = strrchr(name, '_');
	Oid			logical = InvalidOid;
	Datum		shardid;
	bool		isnull;
	char	   *logical_name;

	if (suffix == NULL || suffix[1] == '\0' || strlen(suffix + 1) > 18 ||
		strspn(suffix + 1, "0123456789") != strlen(suffix + 1) ||
		!kling_citus_present())
		return RelationGetRelid(rel);

	shardid = Int64GetDatum(pg_strtoint64(suffix + 1));
	SPI_connect();
	if (SPI_execute_with_args("SELECT logicalrelid::pg_catalog.oid FROM pg_catalog.pg_dist_shard"
							  " WHERE shardid OPERATOR(pg_catalog.=) $1",
							  1, (Oid[]) {INT8OID}, &shardid, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look up the Citus shard \"%s\"", name);
	if (SPI_processed == 1)
		logical = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
												 SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();

	/* A table whose name merely ends in digits is no shard. */
	logical_name = OidIsValid(logical) ? get_rel_name(logical) : NULL;
	if (logical_name == NULL ||
		get_rel_namespace(logical) != RelationGetNamespace(rel) ||
		strlen(logical_name) != (size_t) (suffix - name) ||
		strncmp(logical_name, name, suffix - name) != 0)
		return RelationGetRelid(rel);
	return logical;
}
