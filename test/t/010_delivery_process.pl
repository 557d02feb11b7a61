# test/t/010_delivery_process.pl: user code never holds up the worker
#
# Write-backs and callbacks run in the delivery process, not in the worker:
# a callback that sleeps does not delay other roles' sends and polls, and a
# callback that catches every cancel is ended with its process, recorded as
# abandoned, while the worker runs on.  Roles have only kling_user.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib $FindBin::RealBin;
use KlingTest;

my $db = 'postgres';
my $url = start_mock();
mock_reset($url, { fixed_seconds => 0.3 });
my $node = new_kling_node('delivery', $url, 'kling.delivery_timeout' => '30s');
$node->start;
$node->safe_psql(
	$db, q{
CREATE EXTENSION kling;
CREATE ROLE slow LOGIN;
CREATE ROLE other LOGIN;
GRANT kling_user TO slow, other;
CREATE SCHEMA slow AUTHORIZATION slow;
});
ok(defined wait_worker($node, 30), 'the kling worker starts');
my $worker = worker_pid($node);

sub as
{
	my ($role, $sql) = @_;
	return $node->safe_psql($db, $sql, extra_params => [ '-U', $role ]);
}

as('slow', q{
CREATE FUNCTION slow.sleepy(t kling_tasks) RETURNS void LANGUAGE sql
    AS 'SELECT pg_sleep(20)';
CREATE FUNCTION slow.stubborn(t kling_tasks) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    LOOP
        BEGIN
            PERFORM pg_sleep(10);
        EXCEPTION WHEN query_canceled THEN
            NULL;
        END;
    END LOOP;
END $$;
});

# 1. A callback sleeps for 20 s; meanwhile another role's tasks are sent,
# polled and completed as usual.
my $sleepy = as('slow', q{SELECT kling_submit('sleepy callback', '{"callback": "slow.sleepy(kling_tasks)"}')});
my $sleeping = "SELECT string_agg(backend_type, ',') FROM pg_stat_activity"
  . " WHERE backend_type LIKE 'kling%' AND wait_event = 'PgSleep'";
ok(wait_until($node, $db, "SELECT ($sleeping) IS NOT NULL", 't', 15), 'the callback sleeps');
is($node->safe_psql($db, $sleeping), 'kling delivery',
	'in the delivery process, not in the worker');
my $other = as('other', q{SELECT kling_submit('not held up by a sleeping callback')});
ok( wait_until(
		$node, $db, "SELECT status FROM kling_tasks WHERE id = $other", 'completed', 10),
	'another role\'s task is sent, polled and completed while the callback sleeps');
is($node->safe_psql($db, "SELECT status || ' ' || delivery_pending FROM kling_tasks WHERE id = $sleepy"),
	'completed true', 'the sleeping callback\'s task is completed, its delivery pending');
is(worker_pid($node), $worker, 'the worker was never held nor restarted');
ok(wait_final($node, $db, 40), 'the sleeping callback ends and its task is delivered');

# 2. A callback that catches every cancel: its process is ended, the
# delivery abandoned, and the next deliveries go on; the worker runs on.
$node->safe_psql($db, "ALTER SYSTEM SET kling.delivery_timeout = '500ms'");
$node->reload;
my $stubborn = as('slow',
	q{SELECT kling_submit('stubborn callback', '{"callback": "slow.stubborn(kling_tasks)"}')});
ok( wait_until(
		$node, $db,
		"SELECT delivery_error LIKE 'abandoned: %' AND NOT delivery_pending FROM kling_tasks WHERE id = $stubborn",
		't', 30),
	'a callback that catches every cancel is abandoned, and says so');
my $after = as('slow', q{SELECT kling_submit('delivered after the stubborn one', '{"callback": "slow.sleepy(kling_tasks)"}')});
ok( wait_until(
		$node, $db,
		"SELECT status || ' ' || coalesce(delivery_error, '') FROM kling_tasks WHERE id = $after",
		'completed callback: canceled: took longer than kling.delivery_timeout (500 ms)', 30),
	'the restarted delivery process delivers the next task (its slow callback cancelled at the limit)');
is(worker_pid($node), $worker, 'the worker ran on throughout');
ok(wait_log($node, qr/the delivery of task $stubborn did not stop when cancelled/, 0, 5),
	'the log says which delivery was abandoned');

$node->stop;
stop_mock();
done_testing();
