/*
 * wakeclient.c: the client side of test/bench's wake-latency figure.
 *
 * Submits N tasks one at a time, each in its own (autocommit) transaction,
 * with the prompt "wake latency bench#w<i>", and prints for each
 * "w<i> <returned> <sent>", wall-clock times as <epoch seconds>.<microseconds>:
 * <returned> is taken right after the server's answer to the committed
 * statement came back, i.e. just after the commit (the worker was woken
 * during the commit, before that answer was sent); <sent> right before the
 * statement was sent.  The commit happened between the two.  Between submits it waits GAP_MS plus up to
 * GAP_MS of jitter, so that each create finds the worker idle.
 *
 * With -x it runs the given statements instead, in turn, each in its own
 * (autocommit) transaction, and prints "<i> <returned> <sent>" for the i-th
 * (from 1), stamped the same way: the bulk figure's one statement that
 * submits many tasks, the first-task figure's CREATE EXTENSION and then its
 * submit.  An error stops it (exit 1) after what ran has been printed.
 *
 * Usage: wakeclient N GAP_MS         (connection from the usual PG* variables)
 *        wakeclient -x STATEMENT...
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

static void
stamp(struct timespec *t)
{
	clock_gettime(CLOCK_REALTIME, t);
}

/* -x: each statement in turn, autocommit; "<i> <returned> <sent>" each. */
static int
run_statements(PGconn *conn, int n, char **stmts)
{
	for (int i = 0; i < n; i++)
	{
		PGresult   *res;
		struct timespec t,
					t_sent;
		ExecStatusType st;

		stamp(&t_sent);
		res = PQexec(conn, stmts[i]);
		stamp(&t);
		st = PQresultStatus(res);
		if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
		{
			fprintf(stderr, "%s", PQerrorMessage(conn));
			return 1;
		}
		PQclear(res);
		printf("%d %lld.%06ld %lld.%06ld\n", i + 1, (long long) t.tv_sec, t.tv_nsec / 1000,
			   (long long) t_sent.tv_sec, t_sent.tv_nsec / 1000);
		fflush(stdout);
	}
	return 0;
}

int
main(int argc, char **argv)
{
	PGconn	   *conn;
	int			n,
				gap_ms;

	if (argc >= 3 && strcmp(argv[1], "-x") == 0)
	{
		int			rc;

		conn = PQconnectdb("");
		if (PQstatus(conn) != CONNECTION_OK)
		{
			fprintf(stderr, "%s", PQerrorMessage(conn));
			return 1;
		}
		rc = run_statements(conn, argc - 2, argv + 2);
		PQfinish(conn);
		return rc;
	}
	if (argc != 3)
	{
		fprintf(stderr, "usage: %s N GAP_MS | %s -x STATEMENT...\n", argv[0], argv[0]);
		return 2;
	}
	n = atoi(argv[1]);
	gap_ms = atoi(argv[2]);

	conn = PQconnectdb("");
	if (PQstatus(conn) != CONNECTION_OK)
	{
		fprintf(stderr, "%s", PQerrorMessage(conn));
		return 1;
	}
	srand(42);
	for (int i = 1; i <= n; i++)
	{
		char		sql[128];
		PGresult   *res;
		struct timespec t,
					t_sent;
		struct timespec gap;
		long		us = (gap_ms + rand() % (gap_ms + 1)) * 1000L;

		snprintf(sql, sizeof(sql), "SELECT kling_submit('wake latency bench#w%d')", i);
		clock_gettime(CLOCK_REALTIME, &t_sent);
		res = PQexec(conn, sql);
		clock_gettime(CLOCK_REALTIME, &t);
		if (PQresultStatus(res) != PGRES_TUPLES_OK)
		{
			fprintf(stderr, "%s", PQerrorMessage(conn));
			return 1;
		}
		PQclear(res);
		printf("w%d %lld.%06ld %lld.%06ld\n", i, (long long) t.tv_sec, t.tv_nsec / 1000,
			   (long long) t_sent.tv_sec, t_sent.tv_nsec / 1000);
		gap.tv_sec = us / 1000000;
		gap.tv_nsec = (us % 1000000) * 1000;
		nanosleep(&gap, NULL);
	}
	PQfinish(conn);
	return 0;
}
