# test/t/007_attacks_limits.pl: what a role granted kling's functions can
# learn of others' tasks, how much it can spend, and where the key can leak
#
# Attacks run as non-superuser LOGIN roles with the README's grants (or
# none at all).
#
#  5.  a listener with no grants learns only the id and the status of
#      another role's task: the notification has no URL and no error;
#  6a. the daily cap counts the day of kling.time_zone (the server's), not
#      the caller's TimeZone; the test sets kling.time_zone to a POSIX zone
#      where it is about noon now, and the caller to one where it is about
#      1 a.m., so that it holds whatever the wall clock says;
#  6b. a task cancelled after the provider got it still counts against
#      kling.max_active_tasks (the provider still makes and bills it); one
#      cancelled before it was sent does not;
#  8a. no spelling of kling.api_key in ALTER SYSTEM or set_config() puts
#      the key into the server log (log_statement = all, the framework's).
# Numbers follow the attack list: 1-3 are in 007_attacks_sql.pl, 4, 7 and
# 8b-d in 008_attacks_worker.pl.  A spend limit refuses with SQLSTATE 53400
# (configuration_limit_exceeded), as it always has.

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
my $node = new_attack_node('attacks_limits', $url);

# ---- helpers ----

sub q1 { return $node->safe_psql($db, $_[0]); }
sub submit { return submit_as($node, $db, @_); }
sub wait_tasks { return wait_status($node, $db, @_); }

sub run_as
{
	my ($role, $sql) = @_;
	my ($ret, $out, $err) = as_role($node, $db, $role, $sql);
	die "as $role: $err" if $ret;
	return $out;
}

# Settings from the server configuration: append, reload, and wait until a
# new session sees the first one (a setting the code before the change knew
# too, so that the test runs on it).
sub set_conf
{
	my (@pairs) = @_;
	my $text = '';
	for (my $i = 0; $i < @pairs; $i += 2)
	{
		$text .= "$pairs[$i] = '$pairs[$i + 1]'\n";
	}
	$node->append_conf('postgresql.conf', $text);
	$node->reload;
	wait_until($node, $db, "SHOW $pairs[0]", $pairs[1], 10)
	  or die "$pairs[0] is not $pairs[1] after a reload";
	return;
}

# A POSIX time zone whose local time is UTC + $east hours.
sub posix_zone
{
	my ($east) = @_;
	return sprintf('<%s%02d>%s%d', $east < 0 ? '-' : '+', abs $east,
		$east > 0 ? '-' : '', abs $east);
}

new_role($node, $db, 'rb');    # a role whose tasks others may hear of

# ---- 5. a listener with no grants ----

attack('5', sub {
	new_role($node, $db, 'r7', grants => 0);
	my $listener = $node->background_psql($db, extra_params => [ '-U', 'r7' ]);
	$listener->query_safe('LISTEN kling');
	my $id = submit('rb', '5: heard by a stranger');
	ok(wait_tasks([$id], 'completed', 30), '5: the task completes');
	my ($payload, $heard) = (undef, '');
	my $deadline = time() + 10;
	while (!defined $payload && time() < $deadline)
	{
		$heard .= $listener->query('SELECT 1') . "\n";
		for my $p ($heard =~ /Asynchronous notification "kling" with payload "(.*)" received/g)
		{
			my $json = eval { decode_json($p) };
			$payload = $json if ref $json eq 'HASH' && ($json->{id} // '') eq $id;
		}
		usleep(200_000) unless defined $payload;
	}
	$listener->quit;
	ok(defined $payload, '5: the listener hears of the task') or return;
	is(join(',', sort keys %$payload), 'id,status',
		'5: the payload holds the id and the status, nothing else');
	is($payload->{status}, 'completed', '5: the status is right');
});

# ---- 6. spend limits ----

attack('6a', sub {
	my $h = q1("SELECT extract(hour FROM now() AT TIME ZONE 'UTC')::int");
	my $server_zone = posix_zone(12 - $h);    # about noon there now
	my $east = 1 - $h;                         # about 1 a.m. there now
	$east += 24 if $east < -11;
	my $caller_zone = posix_zone($east);
	note "server zone $server_zone, caller zone $caller_zone";
	set_conf('kling.max_daily_tasks' => '2', 'kling.time_zone' => $server_zone);
	new_role($node, $db, 'r8');
	my @ids = map { submit('r8', "6a: task $_ of the day") } 1 .. 2;
	is(scalar(grep { defined } @ids), 2, '6a: two tasks are accepted under a cap of two');
	q1("UPDATE public.kling_tasks SET created_at = now() - interval '2 hours' WHERE owner = 'r8'");
	is( run_as(
			'r8',
			"SET TIME ZONE '$caller_zone';\nSELECT count(*) FROM public.kling_tasks"
			  . " WHERE created_at >= date_trunc('day', now())"),
		'0',
		'6a: (set-up) in the caller\'s time zone, they were submitted yesterday');
	my ($ret, $out, $err) = as_role($node, $db, 'r8',
		"SET TIME ZONE '$caller_zone';\nSELECT public.kling_submit('6a: a third one')");
	isnt($ret, 0, '6a: a third task the same server day is refused');
	is(sqlstate_of($err), '53400', '6a: with SQLSTATE 53400 (configuration_limit_exceeded)');
	like($err, qr/submitted 2 kling tasks today/, '6a: naming the daily limit');
	set_conf('kling.max_daily_tasks' => '1000', 'kling.time_zone' => '');
});

attack('6b', sub {
	set_conf('kling.max_active_tasks' => '1');
	new_role($node, $db, $_) for qw(r9 r9b);
	mock_call($url, 'POST', '/__mock/config', { fixed_seconds => 30 });
	my $id = submit('r9', '6b: long at the provider');
	ok( wait_until(
			$node, $db,
			"SELECT status IN ('queued', 'generating') FROM public.kling_tasks WHERE id = $id",
			't', 15),
		'6b: the provider has the task');
	mock_call($url, 'POST', '/__mock/config', { fixed_seconds => 1 });
	is(run_as('r9', "SELECT public.kling_cancel($id)"), 't', '6b: the task is cancelled');
	my ($ret, $out, $err) =
	  as_role($node, $db, 'r9', "SELECT public.kling_submit('6b: one more')");
	isnt($ret, 0, '6b: a cancelled task the provider still works on keeps its slot');
	is(sqlstate_of($err), '53400', '6b: with SQLSTATE 53400 (configuration_limit_exceeded)');
	like($err, qr/already has/, '6b: naming the active-task limit');
	($ret, $out, $err) = as_role($node, $db, 'r9b', <<~'SQL');
	    BEGIN;
	    SELECT public.kling_cancel(public.kling_submit('6b: cancelled while pending'));
	    COMMIT;
	    SELECT public.kling_submit('6b: in the freed slot');
	    SQL
	is($ret, 0, '6b: a task cancelled before it was sent frees its slot') or diag $err;
	set_conf('kling.max_active_tasks' => '100');
});

# ---- 8a. the API key never reaches the log ----

attack('8a', sub {
	my %canary = (
		'canary-one-1234' => q{ALTER SYSTEM SET KLING.API_KEY = 'canary-one-1234'},
		'canary-two-5678' => q{ALTER SYSTEM SET "kling"."api_key" = 'canary-two-5678'},
		'canary-three-9012' => q{ALTER SYSTEM SET kling . api_key TO 'canary-three-9012'});
	my $sql = "SET log_statement = 'all';\n";
	for my $c (sort keys %canary)
	{
		$sql .= "$canary{$c};\nSELECT pg_reload_conf(), pg_sleep(0.5);\n"
		  . "ALTER SYSTEM RESET kling.api_key;\nSELECT pg_reload_conf(), pg_sleep(0.5);\n";
	}
	$sql .= "SELECT set_config('Kling.Api_Key', 'canary-four-3456', false);\n";
	my ($ret, $out, $err) = $node->psql($db, $sql, on_error_stop => 0);
	is(scalar(() = $err =~ /ERROR:/g), 1,
		'8a: (set-up) every ALTER SYSTEM is accepted, only set_config fails')
	  or diag $err;
	sleep(1);
	my $log = slurp_file($node->logfile);
	for my $c ((sort keys %canary), 'canary-four-3456')
	{
		ok(index($log, $c) < 0, "8a: $c is not in the server log")
		  or diag join "\n", grep { index($_, $c) >= 0 } split /\n/, $log;
	}
});

$node->stop;
done_testing();
