# test/t/009_first_hour.pl: the traps of a new user's first hour
#
# Forgetting shared_preload_libraries is a plain error, not a dead session;
# a provider that cannot be reached holds the queue instead of failing it;
# a kling.* value the server refuses in postgresql.conf holds the worker
# instead of sending with the old value or the default; kling_retry sends a
# failed task that never reached the provider again.

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

# 1. Not preloaded: CREATE EXTENSION fails with an error that says what to
# do, and the session goes on.
my $bare = PostgreSQL::Test::Cluster->new('bare');
$bare->init;
$bare->start;
my ($ret, $out, $err) = $bare->psql($db, "CREATE EXTENSION kling; SELECT 'still connected'",
	on_error_stop => 0);
like($err, qr/ERROR:  kling must be loaded via shared_preload_libraries/,
	'without shared_preload_libraries, CREATE EXTENSION is a plain error');
like($err, qr/HINT:  Add kling to shared_preload_libraries/, 'with the line to add as a hint');
is($out, 'still connected', 'and the session survives it');
$bare->stop;

# 2. A provider that cannot be reached (nothing listens at the URL): the
# queue holds, the task keeps its place, and nothing fails.
my $node = new_kling_node('first', 'http://127.0.0.1:1', 'kling.max_attempts' => '2');
$node->start;
$node->safe_psql($db, 'CREATE EXTENSION kling');
ok(defined wait_worker($node, 30), 'the kling worker starts');
my $t = $node->safe_psql($db, "SELECT kling_submit('sent during an outage')");
ok( wait_until(
		$node, $db, "SELECT state FROM kling_worker",
		'holding: the provider cannot be reached', 10),
	'the worker says it holds because the provider cannot be reached');
sleep(3);    # far beyond kling.max_attempts backoffs at a 100 ms interval
is( $node->safe_psql($db,
		"SELECT status || ' ' || (error LIKE 'the provider cannot be reached%')::text"
		  . " FROM kling_tasks WHERE id = $t"),
	'pending true',
	'the task is still pending after the outage, with the reason as its error');

$node->append_conf('postgresql.conf', "kling.base_url = '$url'");
$node->reload;
ok( wait_until(
		$node, $db, "SELECT status FROM kling_tasks WHERE id = $t", 'completed', 15),
	'once the provider is reachable again, the task completes');

# 3. A kling.base_url the server refuses (no scheme): it keeps the old value
# and logs it once; the worker holds and says why, rather than send there.
$node->append_conf('postgresql.conf', "kling.base_url = '127.0.0.1:44133'");
$node->reload;
ok( wait_until(
		$node, $db, "SELECT state FROM kling_worker",
		'holding: kling.base_url is not valid', 10),
	'a refused kling.base_url in the configuration file holds the worker, and says so');
$t = $node->safe_psql($db, "SELECT kling_submit('sent while the file is wrong')");
sleep(1);
is($node->safe_psql($db, "SELECT status FROM kling_tasks WHERE id = $t"),
	'pending', 'nothing is sent with the previous value meanwhile');
is(mock_created($url, 'sent while the file is wrong'), 0, 'the provider saw nothing');
$node->append_conf('postgresql.conf', "kling.base_url = '$url'");
$node->reload;
ok( wait_until(
		$node, $db, "SELECT status FROM kling_tasks WHERE id = $t", 'completed', 15),
	'once the file is fixed and reloaded, the task completes');

# The same at start: the server would use the default URL.
$node->append_conf('postgresql.conf', "kling.base_url = 'ftp//nowhere'");
$node->restart;
ok( wait_until(
		$node, $db, "SELECT state FROM kling_worker",
		'holding: kling.base_url is not valid', 20),
	'a refused kling.base_url at start holds the worker instead of using the default');
$node->append_conf('postgresql.conf', "kling.base_url = '$url'");
$node->reload;
ok( wait_until($node, $db, "SELECT state FROM kling_worker", 'running', 15),
	'and it runs once the file is fixed');

# 4. kling_retry: a task that gave up on refusals (503s, never created)
# is sent again and completes; one that reached the provider is refused.
mock_call($url, 'POST', '/__mock/faults', { route => 'create', kind => '503', count => 2 });
$t = $node->safe_psql($db, "SELECT kling_submit('gave up on 503s')");
ok( wait_until(
		$node, $db, "SELECT status FROM kling_tasks WHERE id = $t", 'failed', 15),
	'a create refused with 503 twice fails at kling.max_attempts = 2');
$node->safe_psql($db, "SELECT kling_retry($t)");
ok( wait_until(
		$node, $db, "SELECT status FROM kling_tasks WHERE id = $t", 'completed', 15),
	'kling_retry sends it again and it completes');
is(mock_created($url, 'gave up on 503s'), 1, 'the provider created it once');
($ret, $out, $err) = $node->psql($db, "SELECT kling_retry($t)");
like($err, qr/is completed, not failed/, 'a completed task cannot be retried');

$node->stop;
stop_mock();
done_testing();
