/*-------------------------------------------------------------------------
 *
 * responses.h
 *		Reading the worker's finished requests into what they mean.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KLING_RESPONSES_H
#define KLING_RESPONSES_H

#include "http.h"
#include "protocol.h"

extern void kling_read_responses(KlingHttpRequest **requests, const KlingRequestKind *kinds,
								 KlingResponse *out, int n);

#endif							/* KLING_RESPONSES_H */
