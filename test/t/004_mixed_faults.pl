# test/t/004_mixed_faults.pl: 500 tasks through a mixed fault schedule
#
# 429s with and without Retry-After, 5xx, malformed and oversized bodies,
# stalls and dropped connections, on creates and polls, plus one SIGKILL of
# the worker and one immediate restart of the server: every task reaches a
# final state, the provider never creates a task twice, and every failed
# task says why.  The figures are reported with diag.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use FindBin;
use lib $FindBin::RealBin;
use KlingTest;

my $db = 'postgres';
my $tasks = 500;
my $url = start_mock();
mock_reset($url, { time_scale => 0.005 });
my $node = new_kling_node(
	'mixed', $url,
	'kling.poll_interval' => '300ms',
	'kling.max_in_flight' => '100',
	'kling.max_attempts' => '6',
	'kling.max_active_tasks' => '0',
	'kling.max_daily_tasks' => '0');
$node->start;
$node->safe_psql($db, 'CREATE EXTENSION kling');
ok(defined wait_worker($node, 30), 'the kling worker starts');

my @faults;
push @faults, { route => 'create', kind => '429', count => 15, retry_after => '1' };
push @faults, { route => 'any', kind => '429', count => 15 };
push @faults, { route => 'any', kind => $_, count => 8 } for qw(500 502 503 504);
push @faults, { route => 'poll', kind => 'malformed', count => 10 };
push @faults, { route => 'create', kind => 'malformed', count => 3 };
push @faults, { route => 'poll', kind => 'oversized', count => 5 };
push @faults, { route => 'create', kind => 'oversized', count => 2 };
push @faults, { route => 'poll', kind => 'stall', count => 5, stall_seconds => 4 };
push @faults, { route => 'create', kind => 'stall', count => 2, stall_seconds => 4 };
push @faults, { route => 'any', kind => 'drop', count => 6 };
push @faults, { route => 'create', kind => 'create_then_drop', count => 2 };
mock_call($url, 'POST', '/__mock/faults', \@faults);

my $started = time();
for my $batch (0 .. 4)
{
	$node->safe_psql($db,
		"SELECT count(kling_submit(format('mixed task %s', i)))"
		  . " FROM generate_series($batch * 100 + 1, $batch * 100 + 100) i");
}

# One worker SIGKILL while tasks are in flight.
ok( wait_until(
		$node, $db,
		"SELECT count(*) > 20 FROM kling_tasks WHERE status IN ('queued', 'generating')"),
	'tasks are at the provider');
my $pid = worker_pid($node);
kill 'KILL', $pid;
ok(defined wait_worker($node, 60, $pid), 'a new worker runs after the SIGKILL');

# One immediate restart while tasks are in flight.
ok( wait_until(
		$node, $db,
		"SELECT count(*) > 20 FROM kling_tasks WHERE status IN ('queued', 'generating')"),
	'tasks are at the provider again');
$node->stop('immediate');
$node->start;
ok(defined wait_worker($node, 60), 'the worker runs after the immediate restart');

ok(wait_final($node, $db, 300), 'every task reached a final state');
my $elapsed = time() - $started;

my $final = $node->safe_psql($db,
	"SELECT count(*) FROM kling_tasks WHERE status IN ('completed', 'failed', 'cancelled')");
is($final, $tasks, "all $tasks tasks are final");

my $stats = mock_stats($url);
is($stats->{duplicate_creates}, 0, 'the provider created no task twice');
my $max = 0;
$max < $_ and $max = $_ for values %{ $stats->{creates_by_prompt} };
cmp_ok($max, '<=', 1, 'no prompt was created more than once');

is( $node->safe_psql($db,
		"SELECT count(*) FROM kling_tasks WHERE status = 'failed' AND coalesce(error, '') = ''"),
	'0',
	'every failed task says why');
is( $node->safe_psql($db,
		"SELECT count(*) FROM kling_tasks WHERE status = 'completed' AND video_url IS NULL"),
	'0',
	'every completed task has its URL');

my $by_status = $node->safe_psql($db,
	"SELECT string_agg(status || ' ' || n, ', ' ORDER BY status) FROM"
	  . " (SELECT status, count(*) AS n FROM kling_tasks GROUP BY status) s");
my $reasons = $node->safe_psql($db,
	"SELECT string_agg(n || ' x ' || reason, '; ' ORDER BY n DESC) FROM"
	  . " (SELECT left(error, 60) AS reason, count(*) AS n FROM kling_tasks"
	  . "  WHERE status = 'failed' GROUP BY 1) s");
diag sprintf('mixed faults: %d tasks final in %.1f s: %s', $tasks, $elapsed, $by_status);
diag "failed because: $reasons" if $reasons;
diag sprintf('provider: %d creates, %d create requests, %d polls, faults served %s',
	$stats->{creates}, $stats->{create_requests}, $stats->{polls},
	join(', ', map { "$_ $stats->{faults_served}{$_}" } sort keys %{ $stats->{faults_served} }));

$node->stop;
done_testing();
