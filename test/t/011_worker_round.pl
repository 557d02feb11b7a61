# test/t/011_worker_round.pl: what a failed round does and does not do
#
# Faults are injected with kling.fault_injection (server configuration
# only): round_end fails a worker round just before it commits (its
# isolated re-run too), request_start makes a request fail to start,
# delivery_end fails a delivery batch after its callbacks ran.
#  1. a crash in the first round: the recovery it rolled back is done again
#     once rounds commit, without a restart;
#  2. a request that cannot start fails its task with the reason, in the
#     next round, and holds nothing up;
#  3. a response decided in a round that fails twice counts once;
#  4. a callback whose batch fails is rolled back with it and runs again:
#     its effects happen once.

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

# Start with no key: the task waits, pending.
my $node = new_kling_node('round', $url, 'kling.api_key' => '');
$node->start;
$node->safe_psql($db, 'CREATE EXTENSION kling');
ok(defined wait_worker($node, 30), 'the kling worker starts');

# Inject faults at these points (or none: ''): a restart, so that the
# worker surely runs with them when the next statement commits.
sub fault
{
	my ($points) = @_;
	$node->safe_psql($db, "ALTER SYSTEM SET kling.fault_injection = '$points'");
	$node->restart;
	ok(defined wait_worker($node, 30), "the worker runs with faults '$points'");
	return;
}

sub worker_figure
{
	my ($column) = @_;
	return $node->safe_psql($db, "SELECT $column FROM kling_worker");
}

# 1. A task left 'submitting' by a stopped server; the first rounds after
# the restart fail.
my $sent = $node->safe_psql($db, q{SELECT kling_submit('left submitting')});
$node->safe_psql($db, "UPDATE kling_tasks SET status = 'submitting' WHERE id = $sent");
$node->stop;
$node->append_conf('postgresql.conf',
	"kling.api_key = 'test-key'\nkling.fault_injection = 'round_end'\n");
my $offset = -s $node->logfile;
$node->start;
my $worker = wait_worker($node, 30);
ok(defined $worker, 'the worker starts again');
ok(wait_log($node, qr/injected fault at round_end(?s:.*)injected fault at round_end/, $offset, 30),
	'its first rounds fail');
is($node->safe_psql($db, "SELECT status FROM kling_tasks WHERE id = $sent"),
	'submitting', 'the recovery they made is rolled back');
$node->safe_psql($db, "ALTER SYSTEM SET kling.fault_injection = ''");
$node->reload;
ok( wait_until(
		$node, $db,
		"SELECT status || ': ' || left(error, 15) FROM kling_tasks WHERE id = $sent",
		'failed: outcome unknown', 30),
	'once rounds commit, the task left submitting fails as unknown');
is(worker_pid($node), $worker, 'without a restart of the worker');

# 2. A request that cannot start.
fault('request_start');
my $unstarted = $node->safe_psql($db, q{SELECT kling_submit('cannot start')});
ok(wait_status($node, $db, [$unstarted], 'failed', 30), 'a task whose request cannot start fails');
like(
	$node->safe_psql($db, "SELECT error FROM kling_tasks WHERE id = $unstarted"),
	qr/^could not start the request: injected fault .*; it was never sent$/,
	'with the reason, saying it was never sent');
is(worker_figure('state'), 'running', 'the queue is not held for it');
fault('');
$node->safe_psql($db, "SELECT kling_retry($unstarted)");
ok(wait_status($node, $db, [$unstarted], 'completed', 30),
	'never sent, it can be retried, and completes');

# 3. A poll answered 500 while every round fails: counted once.
mock_reset($url, { fixed_seconds => 30 });
my $polled = $node->safe_psql($db, q{SELECT kling_submit('polled while rounds fail')});
ok(wait_status($node, $db, [$polled], 'queued', 30), 'a task reaches the provider');
$offset = -s $node->logfile;
fault('round_end');
ok(wait_log($node, qr/injected fault at round_end/, $offset, 30), 'rounds fail again');
my ($failed_before, $retried_before) =
  split /\|/, worker_figure('requests_failed || $$|$$ || requests_retried');
mock_call($url, 'POST', '/__mock/faults', { route => 'poll', kind => '500', count => 1 });
ok( wait_until(
		$node, $db,
		"SELECT requests_failed > $failed_before FROM kling_worker", 't', 30),
	'the 500 is decided');
$offset = -s $node->logfile;
ok( wait_log(
		$node,
		qr/(?s:injected fault at round_end.*){6}/,
		$offset, 30),
	'and more rounds fail after it');
is(worker_figure('requests_failed') - $failed_before, 1, 'the failed request counts once');
is(worker_figure('requests_retried') - $retried_before, 1, 'so does its retry');
fault('');
$node->safe_psql($db, "SELECT kling_cancel($polled)");

# 4. A delivery batch that fails after its callback ran.
$node->safe_psql(
	$db, q{
CREATE TABLE callback_log (task bigint);
CREATE FUNCTION log_task(t kling_tasks) RETURNS void LANGUAGE sql
    AS 'INSERT INTO public.callback_log VALUES (t.id)';
});
mock_reset($url, { fixed_seconds => 0.3 });
fault('delivery_end');
$offset = -s $node->logfile;
my $called = $node->safe_psql($db,
	q{SELECT kling_submit('called back', '{"callback": "public.log_task(kling_tasks)"}')});
ok(wait_log($node, qr/injected fault at delivery_end/, $offset, 30),
	'the delivery batch fails after the callback ran');
is( $node->safe_psql(
		$db,
		"SELECT (SELECT count(*) FROM callback_log) || ' ' || delivery_pending FROM kling_tasks WHERE id = $called"
	),
	'0 true',
	'its effects are rolled back with it, the delivery still pending');
fault('');
ok(wait_final($node, $db, 30), 'the delivery is made again');
is( $node->safe_psql(
		$db,
		"SELECT count(*) || ' ' || coalesce((SELECT delivery_error FROM kling_tasks WHERE id = $called), 'none')"
		  . " FROM callback_log WHERE task = $called"),
	'1 none',
	'the callback took effect exactly once');

$node->stop;
done_testing();
