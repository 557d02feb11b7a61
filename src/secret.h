/*-------------------------------------------------------------------------
 *
 * secret.h
 *		Keeps the API key out of the server log.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KLING_SECRET_H
#define KLING_SECRET_H

extern void kling_secret_init(void);

#endif							/* KLING_SECRET_H */
