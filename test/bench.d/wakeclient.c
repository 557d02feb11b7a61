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
 * Usage: wakeclient N GAP_MS   (connection from the usual PG* variables)
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

int
main(int argc, char **argv)
{
	PGconn	   *conn;
	int			n,
				gap_ms;

	if (argc != 3)
	{
		fprintf(stderr, "usage: %s N GAP_MS\n", argv[0]);
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
