/*-------------------------------------------------------------------------
 *
 * account.c
 *		The provider's limits are the account's, not a database's: the
 *		workers of all databases share kling.max_in_flight and a hold when
 *		the provider refuses the account.
 *
 * Each worker publishes how many of its tasks count against the budget and
 * whether pending tasks wait for more.  While several databases wait, each
 * may fill up to an equal share of kling.max_in_flight and no further, so a
 * database with ten thousand pending tasks cannot keep another's single
 * task waiting for more than one freed place; alone, a database may use it
 * all.  A worker whose count falls wakes the others that wait.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/timestamp.h"

#include "account.h"
#include "shmem_internal.h"

/*
 * Reserve up to want more places in the account's budget (limit: this
 * server's part of it) for this database, which has in_flight tasks
 * counting already; returns how many it got.  The caller publishes its count again once it has claimed them.
 */
int
kling_budget_take(int in_flight, int want, int limit)
{
	KlingDatabaseSlot *mine;
	int			total = 0;
	int			waiting = 0;
	int			allowance;

	SpinLockAcquire(&kling_shared->mutex);
	mine = kling_own_slot();
	mine->in_flight = in_flight;
	mine->wants_more = true;
	for (int i = 0; i < kling_shared->nslots; i++)
	{
		KlingDatabaseSlot *slot = &kling_shared->slots[i];

		if (!OidIsValid(slot->database_id))
			continue;
		total += slot->in_flight;
		if (slot->wants_more)
			waiting++;
	}
	allowance = limit - total;
	if (waiting > 1)
	{
		int			share = (limit + waiting - 1) / waiting;

		allowance = Min(allowance, share - in_flight);
	}
	allowance = Max(0, Min(allowance, want));
	mine->in_flight += allowance;
	SpinLockRelease(&kling_shared->mutex);
	return allowance;
}

/*
 * Publish this database's count and whether pending tasks wait for more;
 * if the count fell, wake the workers that wait, so that they take the
 * places freed.
 */
void
kling_budget_publish(int in_flight, bool wants_more)
{
	KlingDatabaseSlot *mine;
	bool		fell;

	SpinLockAcquire(&kling_shared->mutex);
	mine = kling_own_slot();
	fell = in_flight < mine->in_flight;
	mine->in_flight = in_flight;
	mine->wants_more = wants_more;
	SpinLockRelease(&kling_shared->mutex);
	if (!fell)
		return;

	/*
	 * Read without the lock: a latch pointer is one word, and a stale one
	 * points into the process array, where a needless wake is harmless.
	 */
	for (int i = 0; i < kling_shared->nslots; i++)
	{
		KlingDatabaseSlot *slot = &kling_shared->slots[i];
		Latch	   *latch = slot->worker_latch;

		if (slot != mine && slot->wants_more && latch != NULL)
			SetLatch(latch);
	}
}

/* Hold every database's sending until then, for this reason. */
void
kling_account_hold(TimestampTz until, const char *reason)
{
	SpinLockAcquire(&kling_shared->mutex);
	if (until > kling_shared->hold_until)
	{
		kling_shared->hold_until = until;
		strlcpy(kling_shared->hold_reason, reason, sizeof(kling_shared->hold_reason));
	}
	SpinLockRelease(&kling_shared->mutex);
}

/* Until when the account is held (0: not), and why. */
TimestampTz
kling_account_held_until(char *reason, Size reason_size)
{
	TimestampTz until;

	SpinLockAcquire(&kling_shared->mutex);
	until = kling_shared->hold_until;
	strlcpy(reason, kling_shared->hold_reason, reason_size);
	SpinLockRelease(&kling_shared->mutex);
	return until;
}

/* End the account's hold: new settings may cure it. */
void
kling_account_release(void)
{
	SpinLockAcquire(&kling_shared->mutex);
	kling_shared->hold_until = 0;
	SpinLockRelease(&kling_shared->mutex);
}
