/*
 * curlfloor.c: the HTTP floor of the drain figure, for test/bench.  A bare
 * libcurl client makes the requests the worker makes for N tasks (a create,
 * then a poll with the id it returned), with the same headers and body size,
 * up to 256 at once on kept-alive connections, and prints the CPU seconds
 * it used (user + system).  Whatever the worker spends beyond this is the
 * cost of running the queue in PostgreSQL: claims, results, commits.
 *
 * Usage: curlfloor BASE_URL N
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <curl/curl.h>

#define MAX_AT_ONCE 256

typedef struct Transfer
{
	CURL	   *easy;
	int			is_create;
	char		body[4096];
	size_t		len;
} Transfer;

static const char *create_body =
"{\"model\": \"klingai/v2.1-master-text-to-video\", \"prompt\": \"drain task 12345 - "
"A cheerful white raccoon running through a sequoia forest\", \"duration\": 5, "
"\"aspect_ratio\": \"16:9\"}";

static struct curl_slist *headers;
static char base_url[1024];

static size_t
collect(char *data, size_t size, size_t n, void *userp)
{
	Transfer   *t = userp;
	size_t		len = size * n;

	if (t->len + len >= sizeof(t->body))
		return 0;
	memcpy(t->body + t->len, data, len);
	t->len += len;
	t->body[t->len] = '\0';
	return len;
}

/* Start a create, or the poll of the id a create returned. */
static void
start(CURLM *multi, Transfer *t, const char *poll_id)
{
	char		url[2048];

	if (t->easy == NULL)
		t->easy = curl_easy_init();
	else
		curl_easy_reset(t->easy);
	t->len = 0;
	t->is_create = (poll_id == NULL);
	if (t->is_create)
	{
		snprintf(url, sizeof(url), "%s/v2/generate/video/kling/generation", base_url);
		curl_easy_setopt(t->easy, CURLOPT_COPYPOSTFIELDS, create_body);
	}
	else
		snprintf(url, sizeof(url), "%s/v2/generate/video/kling/generation?generation_id=%s",
				 base_url, poll_id);
	curl_easy_setopt(t->easy, CURLOPT_URL, url);
	curl_easy_setopt(t->easy, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(t->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(t->easy, CURLOPT_USERAGENT, "kling-postgresql");
	curl_easy_setopt(t->easy, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(t->easy, CURLOPT_WRITEDATA, t);
	curl_easy_setopt(t->easy, CURLOPT_PRIVATE, t);
	curl_multi_add_handle(multi, t->easy);
}

int
main(int argc, char **argv)
{
	static Transfer transfers[MAX_AT_ONCE];
	CURLM	   *multi;
	int			n, started = 0, done = 0, running = 1;
	struct rusage ru;

	if (argc != 3)
	{
		fprintf(stderr, "usage: curlfloor BASE_URL N\n");
		return 2;
	}
	snprintf(base_url, sizeof(base_url), "%s", argv[1]);
	n = atoi(argv[2]);

	curl_global_init(CURL_GLOBAL_ALL);
	headers = curl_slist_append(NULL, "Authorization: Bearer bench-key-0123456789abcdef");
	headers = curl_slist_append(headers, "Accept: application/json");
	headers = curl_slist_append(headers, "Content-Type: application/json");
	headers = curl_slist_append(headers, "Expect:");
	multi = curl_multi_init();

	for (int i = 0; i < MAX_AT_ONCE && started < n; i++, started++)
		start(multi, &transfers[i], NULL);

	while (done < n && running)
	{
		CURLMsg    *msg;
		int			queued;

		curl_multi_perform(multi, &running);
		while ((msg = curl_multi_info_read(multi, &queued)) != NULL)
		{
			Transfer   *t;
			char		id[256] = "";
			const char *p;

			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &t);
			curl_multi_remove_handle(multi, t->easy);
			if (msg->data.result != CURLE_OK)
			{
				fprintf(stderr, "curlfloor: %s\n", curl_easy_strerror(msg->data.result));
				return 1;
			}
			if (t->is_create && (p = strstr(t->body, "\"id\"")) != NULL &&
				sscanf(p, "\"id\"%*[ :]\"%255[^\"]\"", id) == 1)
				start(multi, t, id);
			else
			{
				done++;
				if (started < n)
				{
					start(multi, t, NULL);
					started++;
				}
			}
		}
		running = 1;
		if (done < n)
			curl_multi_poll(multi, NULL, 0, 1000, NULL);
	}

	getrusage(RUSAGE_SELF, &ru);
	printf("%.3f\n", ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
		   ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
	return 0;
}
