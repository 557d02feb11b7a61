/*-------------------------------------------------------------------------
 *
 * options.h
 *		Validation and normalization of a task's prompt and options.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KLING_OPTIONS_H
#define KLING_OPTIONS_H

#include "utils/jsonb.h"

/* Limits of the provider's create body. */
#define KLING_MAX_PROMPT_CHARS 2500
#define KLING_DEFAULT_MODEL "klingai/v2.1-master-text-to-video"

extern bool kling_prompt_is_blank(const char *s, int len);
extern bool kling_opts_need_prompt(Jsonb *opts);
extern Jsonb *kling_normalize_request(text *prompt, Jsonb *opts);
extern bool kling_option_is_sent(const char *key);

#endif							/* KLING_OPTIONS_H */
