# test/t/008_attacks_worker.pl: no role can stop, hold or mislead the worker
# that serves everyone, and the provider never bills a create twice
#
# Attacks run as non-superuser LOGIN roles with only the README's grants.
#
#  4a. a callback taking a look-alike kling_tasks row type is refused at
#      submit (22023), so the worker never calls it with the real row;
#  4b. a provider answer with a 9,000-character video URL completes and is
#      announced (a notification holds at most 8,000 bytes), same worker;
#  4c. a user's uncommitted kling_cancel on a task whose poll, or whose
#      create, is under way: the worker never waits on that row, others'
#      tasks go on; after COMMIT the task is cancelled, after ROLLBACK the
#      create's answer is still written (sent once, completed);
#  4d. in a SQL_ASCII database a prompt that is not UTF-8 is refused (22021);
#      one put in the table directly fails alone, "could not build the
#      request", and no task stays 'submitting';
#  7.  a create answered 500, 502 or 504 may have been made: it fails as
#      "outcome unknown", sent once; one answered 503 or 429 was refused and
#      is sent again;
#  8b. a terminated launcher comes back without starting a second worker;
#  8c. 429 with Retry-After: 0 does not make the worker send in a loop;
#  8d. http_proxy and friends in the server's environment are not used.
# Numbers follow the attack list: 1-3 are in 007_attacks_sql.pl, 5, 6 and
# 8a in 007_attacks_limits.pl.
# kling.request_timeout is 5s here, so that a create or poll the mock holds
# for 3 s is answered (or dropped) rather than timed out.

use strict;
use warnings;

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use FindBin;
use lib $FindBin::RealBin;
use KlingTest;

my $db = 'postgres';
my $url = start_mock();
mock_reset($url, { fixed_seconds => 1 });
my $node = new_attack_node('attacks_worker', $url, 'kling.request_timeout' => '5s');

# ---- helpers ----

sub q1 { return $node->safe_psql($db, $_[0]); }
sub submit { return submit_as($node, $db, @_); }

# Tasks of this node, or with $n of the SQL_ASCII node.
sub wait_tasks
{
	my ($ids, $status, $timeout, $n) = @_;
	return wait_status($n // $node, $n ? 'ascii' : $db, $ids, $status, $timeout);
}

sub run_as
{
	my ($role, $sql) = @_;
	my ($ret, $out, $err) = as_role($node, $db, $role, $sql);
	die "as $role: $err" if $ret;
	return $out;
}

sub field
{
	my ($id, $column, $n) = @_;
	return '' unless defined $id;
	return ($n // $node)
	  ->safe_psql($n ? 'ascii' : $db,
		"SELECT coalesce(${column}::text, '') FROM kling_tasks WHERE id = $id");
}

sub mock_config { mock_call($url, 'POST', '/__mock/config', $_[0]); return; }
sub mock_faults { mock_call($url, 'POST', '/__mock/faults', [@_]); return; }

# Create requests the mock received for a prompt (faulted ones included).
sub sent
{
	my ($prompt) = @_;
	(my $q = $prompt) =~ s/([^A-Za-z0-9_.~-])/sprintf('%%%02X', ord $1)/ge;
	return scalar @{ mock_call($url, 'GET', "/__mock/bodies?prompt=$q") };
}

sub served { return mock_stats($url)->{faults_served}{ $_[0] } // 0; }

sub wait_served
{
	my ($kind, $n, $timeout) = @_;
	my $deadline = time() + $timeout;
	while (time() < $deadline)
	{
		return 1 if served($kind) >= $n;
		usleep(50_000);
	}
	return 0;
}

sub worker_not_locked
{
	return q1("SELECT coalesce(bool_and(wait_event_type IS DISTINCT FROM 'Lock'), true)"
		  . " FROM pg_stat_activity WHERE backend_type = 'kling worker'");
}

# The status a LISTEN kling session heard for task $id within $timeout s,
# or ''.
sub heard
{
	my ($session, $id, $timeout) = @_;
	my $deadline = time() + $timeout;
	my $heard = '';
	while (time() < $deadline)
	{
		$heard .= $session->query('SELECT 1') . "\n";
		for my $p ($heard =~ /Asynchronous notification "kling" with payload "(.*)" received/g)
		{
			my $json = eval { decode_json($p) };
			return $json->{status} // ''
			  if ref $json eq 'HASH' && ($json->{id} // '') eq $id;
		}
		usleep(200_000);
	}
	return '';
}

new_role($node, $db, $_) for qw(rb r4 r10 r11 r13 r14 r15);

# ---- 4a. a look-alike row type for the callback ----

attack('4a', sub {
	# Should a task be accepted, the provider takes long enough over it
	# that it is cancelled before any callback could run.
	mock_config({ fixed_seconds => 30 });
	run_as('r4', <<~'SQL');
	    CREATE TABLE r4.kling_tasks (id text, owner bigint, prompt point);
	    CREATE FUNCTION r4.cb(t r4.kling_tasks) RETURNS void LANGUAGE plpgsql
	        AS $$BEGIN RAISE NOTICE '% % %', t.id, t.owner, t.prompt; END$$;
	    SQL
	my ($ret, $out, $err) = as_role($node, $db, 'r4',
		q{SELECT public.kling_submit('4a: look-alike', '{"callback": "r4.cb(r4.kling_tasks)"}')});
	q1("SELECT count(kling_cancel(id)) FROM kling_tasks WHERE owner = 'r4'");
	mock_config({ fixed_seconds => 1 });
	isnt($ret, 0, '4a: a callback taking r4.kling_tasks is refused');
	is(sqlstate_of($err), '22023', '4a: with SQLSTATE 22023');
	is(q1("SELECT count(*) FROM kling_tasks WHERE owner = 'r4'"), '0', '4a: nothing is enqueued');
});

# ---- 4c. a row held by a user's open transaction ----

attack('4c poll', sub {
	mock_config({ fixed_seconds => 60 });
	my $held = submit('r10', '4c: its poll is under way');
	ok( wait_until(
			$node, $db,
			"SELECT status IN ('queued', 'generating') FROM kling_tasks WHERE id = $held",
			't', 15),
		'4c poll: the provider has the task');
	mock_config({ fixed_seconds => 1 });
	my $session = $node->background_psql($db, extra_params => [ '-U', 'r10' ]);
	my $stalls = served('stall');
	# The next poll (of this task, the only one) gets no answer for 3 s.
	mock_faults({ route => 'poll', kind => 'stall', count => 1, stall_seconds => 3 });
	ok(wait_served('stall', $stalls + 1, 10), '4c poll: a poll of the task is under way');
	$session->query_safe('BEGIN');
	is($session->query_safe("SELECT public.kling_cancel($held)"),
		't', '4c poll: a cancel is made and left uncommitted');
	sleep(4);    # the poll has failed meanwhile, its result is due
	my $other = submit('r11', '4c: another role, the row taken');
	ok(wait_tasks([$other], 'completed', 15), '4c poll: another role\'s task completes');
	is(worker_not_locked(), 't', '4c poll: the worker is not waiting on the row');
	$session->query_safe('COMMIT');
	$session->quit;
	ok(wait_tasks([$held], 'cancelled', 10), '4c poll: after COMMIT the task is cancelled');
});

attack('4c create', sub {
	my $session = $node->background_psql($db, extra_params => [ '-U', 'r10' ]);
	my $prompt = '4c: its create is in flight';
	# The create is answered, normally, 3 s late.
	mock_faults({ route => 'create', kind => 'slow', count => 1, stall_seconds => 3 });
	my $id = submit('r10', $prompt);
	ok(wait_until($node, $db, "SELECT status FROM kling_tasks WHERE id = $id", 'submitting', 10),
		'4c create: the create is in flight');
	$session->query_safe('BEGIN');
	is($session->query_safe("SELECT public.kling_cancel($id)"),
		't', '4c create: a cancel is made and left uncommitted');
	sleep(4);    # the create's answer has arrived meanwhile
	my $other = submit('r11', '4c: another role, the created row taken');
	ok(wait_tasks([$other], 'completed', 15), '4c create: another role\'s task completes');
	is(worker_not_locked(), 't', '4c create: the worker is not waiting on the row');
	$session->query_safe('ROLLBACK');
	$session->quit;
	ok(wait_tasks([$id], 'completed', 30),
		'4c create: after ROLLBACK the task completes, its create\'s answer kept');
	is(sent($prompt), 1, '4c create: the create was sent once');
	is(mock_created($url, $prompt), 1, '4c create: the provider made it once');
});

# ---- 7. an ambiguous answer to a create is never sent again ----

attack('7', sub {
	for my $code (qw(500 502 504 503 429))
	{
		my $prompt = "7: a create answered $code";
		mock_faults({ route => 'create', kind => $code, count => 1 });
		my $id = submit('r14', $prompt);
		ok(wait_tasks([$id], 'final', 30), "7: $code: the task is final");
		if ($code =~ /^50[024]$/)
		{
			is(field($id, 'status'), 'failed', "7: $code: the task fails");
			like(field($id, 'error'), qr/^outcome unknown/, "7: $code: as outcome unknown");
			is(sent($prompt), 1, "7: $code: the create was sent once");
		}
		else
		{
			is(field($id, 'status'), 'completed', "7: $code: refused, sent again, completed");
			is(sent($prompt), 2, "7: $code: the create was sent twice");
			is(mock_created($url, $prompt), 1, "7: $code: the provider made it once");
		}
	}
});

# ---- 8c. Retry-After: 0 ----

attack('8c', sub {
	my $prompt = '8c: Retry-After 0';
	mock_faults({ route => 'create', kind => '429', count => 50, retry_after => '0' });
	my $start = time();
	my $id = submit('r15', $prompt);
	my $left = 3 - (time() - $start);
	usleep(int($left * 1_000_000)) if $left > 0;
	my ($n, $attempts) = (sent($prompt), field($id, 'attempts'));
	mock_call($url, 'DELETE', '/__mock/faults');
	cmp_ok($n, '<', 15, '8c: fewer than 15 creates in 3 s');
	cmp_ok($attempts || 0, '>', 0, '8c: the task counts its attempts while it waits');
	ok(wait_tasks([$id], 'completed', 30), '8c: it completes once the provider takes it');
});

# ---- 4b. a 9,000-character URL ----

attack('4b', sub {
	my $listener = $node->background_psql($db, extra_params => [ '-U', 'r13' ]);
	$listener->query_safe('LISTEN kling');
	my $pid = worker_pid($node);
	my $id = submit('r13', '4b: a long URL [longurl:9000]');
	my $done = wait_tasks([$id], 'completed', 30);
	my $status = heard($listener, $id, $done ? 10 : 0);
	# A task the worker cannot finish would hold it: stop following it.
	q1("SELECT kling_cancel($id)") unless $done;
	$listener->quit;
	ok($done, '4b: the task completes');
	cmp_ok(length(field($id, 'video_url')), '>=', 9000, '4b: with its whole URL');
	is($status, 'completed', '4b: a listener hears that it completed');
	is(worker_pid($node), $pid, '4b: the worker is the same process');
});

# ---- 4d. bytes that are not UTF-8, in a SQL_ASCII database ----

attack('4d', sub {
	my $ascii = new_kling_node('attacks_ascii', $url, 'kling.delivery_timeout' => '1s',
		'kling.request_timeout' => '5s', 'kling.database_name' => 'ascii');
	$ascii->start;
	$ascii->safe_psql('postgres', "CREATE DATABASE ascii ENCODING 'SQL_ASCII' TEMPLATE template0");
	$ascii->safe_psql('ascii', 'CREATE EXTENSION kling');
	ok(defined wait_worker($ascii, 30), '4d: the worker starts in the SQL_ASCII database');
	new_role($ascii, 'ascii', 'ra');
	my ($ret, $out, $err) =
	  as_role($ascii, 'ascii', 'ra', q{SELECT public.kling_submit(E'bad \xff byte')});
	isnt($ret, 0, '4d: a prompt that is not UTF-8 is refused');
	is(sqlstate_of($err), '22021', '4d: with SQLSTATE 22021');
	is($ascii->safe_psql('ascii', q{SELECT count(*) FROM kling_tasks WHERE prompt LIKE 'bad %'}),
		'0', '4d: nothing is enqueued');
	my $direct = $ascii->safe_psql('ascii',
		q{INSERT INTO kling_tasks (prompt) VALUES (E'direct \xff byte') RETURNING id});
	my @valid = map {
		(as_role($ascii, 'ascii', 'ra', "SELECT public.kling_submit('4d: valid $_')"))[1]
	} 1 .. 2;
	ok(wait_tasks([ $direct, @valid ], 'final', 30, $ascii), '4d: the tasks are final');
	is(field($direct, 'status', $ascii), 'failed', '4d: the bad one fails');
	like(field($direct, 'error', $ascii), qr/could not build the request/, '4d: saying why');
	is($ascii->safe_psql('ascii', q{SELECT count(*) FROM kling_tasks WHERE status = 'submitting'}),
		'0', '4d: no task stays submitting');
	ok(wait_tasks(\@valid, 'completed', 30, $ascii), '4d: the valid ones complete');
	$ascii->stop;
});

# ---- 8b. the launcher terminated ----

attack('8b', sub {
	my $launcher = launcher_pid($node);
	ok(defined $launcher, '8b: the launcher runs');
	q1("SELECT pg_terminate_backend($launcher)");
	ok( wait_until(
			$node, $db,
			"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'kling launcher'"
			  . " AND pid <> $launcher",
			'1', 20),
		'8b: the launcher comes back');
	sleep(8);
	my @workers;
	for (1 .. 4)
	{
		push @workers,
		  q1("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'kling worker'");
		sleep(1) if $_ < 4;
	}
	is(join(' ', @workers), '1 1 1 1', '8b: exactly one worker runs, seen four times over 3 s');
	my $id = submit('rb', '8b: after the launcher came back');
	ok(wait_tasks([$id], 'completed', 30), '8b: tasks complete');
});

# ---- 8d. a proxy in the server's environment ----

attack('8d', sub {
	$node->stop;
	{
		local @ENV{qw(http_proxy HTTP_PROXY https_proxy HTTPS_PROXY all_proxy ALL_PROXY)} =
		  ('http://127.0.0.1:9') x 6;
		delete local $ENV{no_proxy};
		delete local $ENV{NO_PROXY};
		$node->start;
	}
	ok(defined wait_worker($node, 30), '8d: the worker starts');
	my @ids = map { submit('rb', "8d: a proxy in the environment $_") } 1 .. 2;
	ok(wait_tasks(\@ids, 'completed', 30), '8d: tasks complete, not sent to that proxy');
});

$node->stop;
done_testing();
