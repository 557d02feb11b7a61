/*
 * fileserve.c: a loopback file server for test/bench's download figure.
 * Every GET is answered with the same file (its path does not matter),
 * sent with sendfile() from a thread per connection, so that the server is
 * never what limits a download: the figure measures the worker, and a bare
 * curl of the same URLs gives the floor.
 *
 * Each transfer is logged to stdout as "<start> <end> <bytes>" (epoch
 * seconds with microseconds) when it ends; the download throughput is the
 * bytes of a batch over its first start to its last end.
 *
 * Usage: fileserve -f PORT_FILE -d FILE      (127.0.0.1, a free port)
 * SIGTERM stops it.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

static const char *file_path;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static double
now(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return tv.tv_sec + tv.tv_usec / 1e6;
}

/* Read the request head; answer with the file; close. */
static void *
serve(void *arg)
{
	int			fd = (int) (long) arg;
	char		head[8192];
	size_t		len = 0;
	int			file = -1;
	struct stat st;
	char		answer[256];
	off_t		off = 0;
	double		start = now();

	while (len < sizeof(head) - 1)
	{
		ssize_t		n = read(fd, head + len, sizeof(head) - 1 - len);

		if (n <= 0)
			goto done;
		len += n;
		head[len] = '\0';
		if (strstr(head, "\r\n\r\n"))
			break;
	}
	if (strncmp(head, "GET ", 4) != 0 || (file = open(file_path, O_RDONLY)) < 0 ||
		fstat(file, &st) < 0)
		goto done;
	snprintf(answer, sizeof(answer),
			 "HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nContent-Length: %lld\r\n"
			 "Connection: close\r\n\r\n", (long long) st.st_size);
	if (write(fd, answer, strlen(answer)) < 0)
		goto done;
	while (off < st.st_size)
		if (sendfile(fd, file, &off, st.st_size - off) <= 0)
			break;
	pthread_mutex_lock(&log_lock);
	printf("%.6f %.6f %lld\n", start, now(), (long long) off);
	fflush(stdout);
	pthread_mutex_unlock(&log_lock);
done:
	if (file >= 0)
		close(file);
	close(fd);
	return NULL;
}

int
main(int argc, char **argv)
{
	const char *port_file = NULL;
	struct sockaddr_in addr = {.sin_family = AF_INET};
	socklen_t	addrlen = sizeof(addr);
	int			one = 1;
	int			lfd;
	int			c;
	FILE	   *f;

	while ((c = getopt(argc, argv, "f:d:")) != -1)
	{
		if (c == 'f')
			port_file = optarg;
		else if (c == 'd')
			file_path = optarg;
	}
	if (!port_file || !file_path)
	{
		fprintf(stderr, "usage: fileserve -f PORT_FILE -d FILE\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lfd, (struct sockaddr *) &addr, sizeof(addr)) < 0 || listen(lfd, 128) < 0 ||
		getsockname(lfd, (struct sockaddr *) &addr, &addrlen) < 0)
	{
		perror("fileserve");
		return 1;
	}
	f = fopen(port_file, "w");
	fprintf(f, "%d\n", ntohs(addr.sin_port));
	fclose(f);
	for (;;)
	{
		int			fd = accept(lfd, NULL, NULL);
		pthread_t	t;

		if (fd < 0)
			continue;
		if (pthread_create(&t, NULL, serve, (void *) (long) fd) != 0)
			close(fd);
		else
			pthread_detach(t);
	}
}
