# test/t/006_locked_task.pl: a user's open transaction on a task never
# stalls the worker
#
# A kling_cancel that is not yet committed holds its task's row.  The worker
# must pass that task by (its poll is due) and go on sending and polling the
# others; once the cancel commits, the task is cancelled and never polled
# again.  The worker is held (no key) while the row is taken, so that no
# poll of the task can be under way at that moment.

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
mock_reset($url, { fixed_seconds => 1 });
my $node = new_kling_node('locked', $url);
$node->start;
$node->safe_psql($db, 'CREATE EXTENSION kling');
ok(defined wait_worker($node, 30), 'the kling worker starts');

# A task the provider takes a minute over: its poll is due every 100 ms.
mock_call($url, 'POST', '/__mock/config', { fixed_seconds => 60 });
my $held = $node->safe_psql($db, "SELECT kling_submit('held by an open cancel')");
ok( wait_until(
		$node, $db, "SELECT status FROM kling_tasks WHERE id = $held", 'queued', 10),
	'the task is at the provider');

# Hold the worker, let polls under way finish, then take the row.
$node->safe_psql($db, "ALTER SYSTEM SET kling.api_key = ''");
$node->reload;
ok( wait_until(
		$node, $db, "SELECT state LIKE 'holding%' FROM kling_worker", 't', 10),
	'the worker holds');
sleep(1);
my $session = $node->background_psql($db);
$session->query_safe('BEGIN');
is($session->query_safe("SELECT kling_cancel($held)"),
	't', 'a cancel is made and left uncommitted');

# Resume: the row stays taken while other tasks are sent and polled.
mock_call($url, 'POST', '/__mock/config', { fixed_seconds => 0.3 });
$node->safe_psql($db, 'ALTER SYSTEM RESET kling.api_key');
$node->reload;
my $other = $node->safe_psql($db, "SELECT kling_submit('submitted meanwhile')");
ok( wait_until(
		$node, $db, "SELECT status FROM kling_tasks WHERE id = $other",
		'completed', 15),
	'another task completes while the row is taken');
is( $node->safe_psql(
		$db,
		"SELECT wait_event_type IS DISTINCT FROM 'Lock' FROM pg_stat_activity"
		  . " WHERE backend_type = 'kling worker'"),
	't',
	'the worker is not waiting on the row');

$session->query_safe('COMMIT');
$session->quit;
is($node->safe_psql($db, "SELECT status FROM kling_tasks WHERE id = $held"),
	'cancelled', 'the cancel commits');
my $polls = mock_stats($url)->{polls};
sleep(1);
is(mock_stats($url)->{polls}, $polls, 'the cancelled task is not polled any more');

$node->stop;
stop_mock();
done_testing();
