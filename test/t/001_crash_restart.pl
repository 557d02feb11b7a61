# test/t/001_crash_restart.pl: the worker across crashes and restarts
#
# A SIGKILLed worker makes the postmaster go through crash recovery; the
# launcher and the worker come back, every task ends final, and no create is
# ever sent twice: a task caught 'submitting' fails as "outcome unknown",
# pending tasks are sent afterwards, tasks at the provider are polled to the
# end.  The same after an immediate shutdown.  A fast shutdown does not wait
# for a request stalled at the provider.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

# The Makefile's PROVE_FLAGS (-I test/t) may not reach prove: find the
# helper module next to this file.
use FindBin;
use lib $FindBin::RealBin;
use KlingTest;

my $db = 'postgres';
my $url = start_mock();
my $node = new_kling_node('crash', $url);
$node->start;
$node->safe_psql($db, 'CREATE EXTENSION kling');

ok(defined wait_worker($node, 30), 'the kling worker starts');

# Submit one task per prompt in one transaction; returns their ids.
sub submit
{
	my @prompts = @_;
	my $list = join ', ', map { "'$_'" } @prompts;
	my $out = $node->safe_psql($db,
		"SELECT kling_submit(p) FROM unnest(ARRAY[$list]) WITH ORDINALITY AS u(p, n) ORDER BY n"
	);
	return split /\n/, $out;
}

sub ids_sql { return 'ARRAY[' . join(',', @_) . ']::bigint[]'; }

# How many of the given tasks are in one of the given states.
sub count_in
{
	my ($ids, @states) = @_;
	my $states = join ', ', map { "'$_'" } @states;
	return "SELECT count(*) FROM kling_tasks WHERE id = ANY ("
	  . ids_sql(@$ids)
	  . ") AND status IN ($states)";
}

# The mock's create counts for prompts with a prefix: (max, total, #prompts).
sub creates_with_prefix
{
	my ($prefix) = @_;
	my $by = mock_stats($url)->{creates_by_prompt};
	my @n = map { $by->{$_} } grep { index($_, $prefix) == 0 } keys %$by;
	my ($max, $sum) = (0, 0);
	for (@n) { $max = $_ if $_ > $max; $sum += $_; }
	return ($max, $sum, scalar @n);
}

# Set one setting in postgresql.conf and reload; give the worker a moment
# to process the SIGHUP.
sub set_conf
{
	my ($name, $value) = @_;
	$node->append_conf('postgresql.conf', "$name = '$value'");
	$node->reload;
	usleep(500_000);
}

# SIGKILL the worker, then check that the server went through crash
# recovery and that the launcher and a new worker run.
sub kill_worker
{
	my ($label) = @_;
	my $old_worker = worker_pid($node);
	my $old_launcher = launcher_pid($node);
	my $offset = -s $node->logfile;

	ok(defined $old_worker && kill('KILL', $old_worker),
		"$label: SIGKILL sent to the worker");
	ok( wait_log(
			$node,
			qr/all server processes terminated; reinitializing/,
			$offset, 30),
		"$label: the postmaster reinitializes after the worker's crash");
	ok( wait_log(
			$node, qr/automatic recovery in progress/, $offset, 30),
		"$label: the server goes through crash recovery");
	my $new_worker = wait_worker($node, 30, $old_worker);
	ok(defined $new_worker, "$label: a new kling worker runs after the crash");
	my $new_launcher = launcher_pid($node);
	ok(defined $new_launcher && defined $old_launcher
		  && $new_launcher != $old_launcher,
		"$label: the kling launcher was restarted too");
	return;
}

my $t0 = time;

#
# (a) SIGKILL with tasks in flight.
#
mock_reset($url, { fixed_seconds => 2 });
my @a_early = submit(map { "a: in flight $_" } 1 .. 8);
ok( wait_until(
		$node, $db, count_in(\@a_early, 'queued', 'generating'),
		'8', 20),
	'a: eight tasks are at the provider');
# A few more, submitted just before the kill: pending, submitting or sent.
my @a_late = submit(map { "a: just submitted $_" } 1 .. 4);
kill_worker('a');

ok(wait_final($node, $db, 40), 'a: every task reaches a final state');
is($node->safe_psql($db, count_in(\@a_early, 'completed')),
	'8', 'a: the tasks at the provider at the crash all completed');
is( $node->safe_psql(
		$db, count_in(\@a_late, 'completed', 'failed')),
	'4',
	'a: the tasks submitted just before the crash completed or failed');
is( $node->safe_psql(
		$db,
		"SELECT count(*) FROM kling_tasks WHERE status = 'failed'"
		  . " AND coalesce(error, '') = ''"),
	'0',
	'a: every failed task has an error');
is( $node->safe_psql(
		$db,
		"SELECT count(*) FROM kling_tasks WHERE status = 'failed'"
		  . " AND error NOT LIKE 'outcome unknown%'"),
	'0',
	'a: a task failed only because its outcome is unknown');
{
	my ($max, $sum, $n) = creates_with_prefix('a: ');
	ok($max <= 1, 'a: no prompt was created twice')
	  or diag "a prompt was created $max times";
	is(mock_stats($url)->{duplicate_creates},
		0, 'a: the mock counts no duplicate create');
	my $by = mock_stats($url)->{creates_by_prompt};
	my @completed = split /\n/,
	  $node->safe_psql($db,
		"SELECT prompt FROM kling_tasks WHERE prompt LIKE 'a: %' AND status = 'completed'"
	  );
	my @wrong = grep { ($by->{$_} // 0) != 1 } @completed;
	ok(@completed >= 8 && !@wrong,
		'a: every completed task was created exactly once')
	  or diag explain { completed => \@completed, creates => $by };
}

#
# (b) A create stalled at the provider when the worker dies: the task was
# 'submitting'; it fails with "outcome unknown" and is never sent again.
#
mock_reset($url, { fixed_seconds => 1 });
set_conf('kling.request_timeout', '120s');
mock_call($url, 'POST', '/__mock/faults',
	{ route => 'create', kind => 'create_then_stall', stall_seconds => 60 });
my ($b_id) = submit('b: create stalled at the provider');
{
	my $deadline = time + 20;
	usleep(100_000)
	  until ((mock_stats($url)->{faults_served}{create_then_stall} // 0) >= 1
		  || time > $deadline);
}
is(mock_created($url, 'b: create stalled at the provider'),
	1, 'b: the provider created the task and stalls its answer');
is($node->safe_psql($db, "SELECT status FROM kling_tasks WHERE id = $b_id"),
	'submitting', 'b: the task is submitting when the worker dies');
my $b_offset = -s $node->logfile;
kill_worker('b');
ok(wait_final($node, $db, 20), 'b: the task reaches a final state');
is($node->safe_psql($db, "SELECT status FROM kling_tasks WHERE id = $b_id"),
	'failed', 'b: the task failed');
like(
	$node->safe_psql($db, "SELECT error FROM kling_tasks WHERE id = $b_id"),
	qr/^outcome unknown/,
	'b: its error says the outcome is unknown');
ok( wait_log(
		$node, qr/1 tasks were being sent when the server stopped/,
		$b_offset, 5),
	'b: the worker logs the interrupted task');
sleep 1;    # would a resend come?
is(mock_created($url, 'b: create stalled at the provider'),
	1, 'b: the mock created it exactly once');
is( scalar @{
		mock_call($url, 'GET',
			'/__mock/bodies?prompt=b%3A%20create%20stalled%20at%20the%20provider')
	},
	1,
	'b: the create was never sent again');
set_conf('kling.request_timeout', '2s');

#
# (c) Tasks still pending at a crash are sent after the restart.
#
mock_reset($url, { fixed_seconds => 2 });
set_conf('kling.max_in_flight', '1');
my @c = submit(map { "c: waits its turn $_" } 1 .. 4);
ok( wait_until(
		$node, $db,
		"SELECT count(*) FILTER (WHERE status IN ('queued', 'generating'))"
		  . " || '/' || count(*) FILTER (WHERE status = 'pending')"
		  . " FROM kling_tasks WHERE id = ANY ("
		  . ids_sql(@c) . ")",
		'1/3', 20),
	'c: one task is at the provider, three wait pending');
my @c_pending = split /\n/,
  $node->safe_psql($db,
	    "SELECT id FROM kling_tasks WHERE id = ANY ("
	  . ids_sql(@c)
	  . ") AND status = 'pending' ORDER BY id");
kill_worker('c');
is(scalar @c_pending, 3, 'c: three tasks were pending at the crash');
ok(wait_final($node, $db, 40), 'c: every task reaches a final state');
is($node->safe_psql($db, count_in(\@c_pending, 'completed')),
	'3', 'c: the tasks pending at the crash were sent and completed');
is($node->safe_psql($db, count_in(\@c, 'completed')),
	'4', 'c: all four tasks completed, the one at the provider too');
{
	my ($max, $sum, $n) = creates_with_prefix('c: ');
	is($n, 4, 'c: the mock created every task');
	is($max, 1, 'c: none twice');
	is(mock_stats($url)->{max_in_flight},
		1, 'c: kling.max_in_flight = 1 was kept across the restart');
}
set_conf('kling.max_in_flight', '20');

#
# (d) An immediate shutdown and a start with tasks in flight.
#
mock_reset($url, { fixed_seconds => 2 });
my @d_early = submit(map { "d: in flight $_" } 1 .. 6);
ok( wait_until(
		$node, $db, count_in(\@d_early, 'queued', 'generating'),
		'6', 20),
	'd: six tasks are at the provider');
my @d_late = submit(map { "d: just submitted $_" } 1 .. 3);
{
	my $old_worker = worker_pid($node);
	my $offset = -s $node->logfile;
	$node->stop('immediate');
	$node->start;
	ok(wait_log($node, qr/automatic recovery in progress/, $offset, 30),
		'd: the server recovers after the immediate shutdown');
	ok(defined wait_worker($node, 30, $old_worker),
		'd: a new kling worker runs');
	ok(defined launcher_pid($node), 'd: the kling launcher runs');
}
ok(wait_final($node, $db, 40), 'd: every task reaches a final state');
is($node->safe_psql($db, count_in(\@d_early, 'completed')),
	'6', 'd: the tasks at the provider all completed');
is($node->safe_psql($db, count_in(\@d_late, 'completed', 'failed')),
	'3', 'd: the tasks submitted just before completed or failed');
is( $node->safe_psql(
		$db,
		"SELECT count(*) FROM kling_tasks WHERE prompt LIKE 'd: %'"
		  . " AND status = 'failed' AND error NOT LIKE 'outcome unknown%'"),
	'0',
	'd: a task failed only because its outcome is unknown');
{
	my ($max, $sum, $n) = creates_with_prefix('d: ');
	ok($max <= 1, 'd: no prompt was created twice')
	  or diag "a prompt was created $max times";
	is(mock_stats($url)->{duplicate_creates},
		0, 'd: the mock counts no duplicate create');
}

#
# (e) A fast shutdown with a poll stalled at the provider does not wait for
# it (the request timeout is 60 s).
#
mock_reset($url, { fixed_seconds => 1 });
set_conf('kling.request_timeout', '60s');
mock_call($url, 'POST', '/__mock/faults',
	{ route => 'poll', kind => 'stall', stall_seconds => 60 });
submit('e: poll stalled');
{
	my $deadline = time + 20;
	usleep(100_000)
	  until ((mock_stats($url)->{faults_served}{stall} // 0) >= 1
		  || time > $deadline);
}
is(mock_stats($url)->{faults_served}{stall},
	1, 'e: a poll is stalled at the provider');
my $stop_start = time;
my $stopped = $node->stop('fast', fail_ok => 1);
my $stop_seconds = time - $stop_start;
ok($stopped, 'e: the fast shutdown succeeds');
ok($stop_seconds < 20,
	'e: the fast shutdown does not wait for the stalled request (under 20 s)');
diag sprintf('fast shutdown with a stalled poll took %.2f s', $stop_seconds);

note sprintf('001_crash_restart ran its cases in %.1f s', time - $t0);
stop_mock();
done_testing();
