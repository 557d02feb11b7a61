# kling: PGXS build of the extension and its regression suite

EXTENSION = kling
EXTVERSION = $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" $(EXTENSION).control)

MODULE_big = kling
OBJS = \
	src/kling.o \
	src/settings.o \
	src/video_settings.o \
	src/launcher.o \
	src/utility_hook.o \
	src/shmem.o \
	src/account.o \
	src/cluster.o \
	src/models.o \
	src/images.o \
	src/options.o \
	src/protocol.o \
	src/secret.o \
	src/http.o \
	src/plan_cache.o \
	src/task_access.o \
	src/spend_limits.o \
	src/task_claims.o \
	src/task_results.o \
	src/task_history.o \
	src/delivery_queue.o \
	src/subxact.o \
	src/sandbox.o \
	src/sql_api.o \
	src/diagnostics.o \
	src/trigger.o \
	src/delivery.o \
	src/download.o \
	src/keeper.o \
	src/upload.o \
	src/deliverer.o \
	src/monitor.o \
	src/policy.o \
	src/schedule.o \
	src/responses.o \
	src/wait_events.o \
	src/worker.o

DATA = $(wildcard sql/$(EXTENSION)--*.sql)

REGRESS = install upgrade validation normalize lifecycle protocol policy security grants reporting models
REGRESS_OPTS = \
	--temp-instance=build/regress/tmp_check \
	--outputdir=build/regress \
	--temp-config=test/regress.conf \
	--encoding=UTF8 --no-locale

PG_CPPFLAGS = -DKLING_VERSION='"$(EXTVERSION)"' -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers \
	$(shell curl-config --cflags)
SHLIB_LINK = $(shell curl-config --libs)

# TAP tests of crashes, restarts, a standby and dropped databases
# (PostgreSQL::Test::Cluster); "make tapcheck" runs them.
PROVE_TESTS = test/t/*.pl

EXTRA_CLEAN = build tmp_check

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# pg_regress keeps its output and temporary instance under build/.
installcheck: regress-outputdir
regress-outputdir:
	@mkdir -p build/regress
.PHONY: regress-outputdir

# After the include: Makefile.global resets PROVE_FLAGS.
PROVE_FLAGS = -I test/t --verbose
tapcheck:
	$(prove_installcheck)
.PHONY: tapcheck
