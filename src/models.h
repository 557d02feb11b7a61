/*-------------------------------------------------------------------------
 *
 * models.h
 *		The Kling models the extension knows: what each one takes, what it
 *		requires, and which provider routes serve it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KLING_MODELS_H
#define KLING_MODELS_H

/* The fields of a create body, as bits of a model's rules. */
#define KLING_F_PROMPT			(1 << 0)
#define KLING_F_NEGATIVE_PROMPT	(1 << 1)
#define KLING_F_ASPECT_RATIO	(1 << 2)
#define KLING_F_DURATION		(1 << 3)
#define KLING_F_CFG_SCALE		(1 << 4)
#define KLING_F_CAMERA_CONTROL	(1 << 5)
#define KLING_F_EXTERNAL_TASK_ID (1 << 6)
#define KLING_F_IMAGE_URL		(1 << 7)
#define KLING_F_TAIL_IMAGE_URL	(1 << 8)
#define KLING_F_STATIC_MASK		(1 << 9)
#define KLING_F_DYNAMIC_MASKS	(1 << 10)
#define KLING_F_GENERATE_AUDIO	(1 << 11)

typedef struct KlingModel
{
	const char *name;
	bool		unified_only;	/* not served on the seed's generation route */
	uint32		required;		/* fields a create must carry */
	uint32		accepted;		/* fields it may carry, the required ones too */
} KlingModel;

extern const KlingModel *kling_find_model(const char *name);
extern const KlingModel *kling_default_model(void);
extern char *kling_model_names(void);
extern int	kling_model_route(const char *name);

#endif							/* KLING_MODELS_H */
