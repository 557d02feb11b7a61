# test/t/KlingTest.pm: helpers shared by the kling TAP suite (test/t/*.pl)
#
# Start and stop the mock of the provider API (test/mock_api.py), call its
# control API, make a node with the worker preloaded and pointed at the
# mock, and wait for the worker, its tasks and the server log; make roles
# with the README's grants and run SQL as them.
#
# The mock is stopped by an END block of this module (by the process we
# started, never by name), so it goes away even when a test dies; the nodes
# are stopped by PostgreSQL::Test::Cluster's own END block.

package KlingTest;

use strict;
use warnings;

use Exporter 'import';
use File::Basename qw(dirname);
use File::Spec;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

our @EXPORT = qw(start_mock stop_mock mock_call mock_reset mock_stats
  mock_created new_kling_node new_attack_node wait_final wait_until worker_pid
  launcher_pid wait_worker wait_log log_count new_role as_role sqlstate_of
  submit_as wait_status attack);

my $PYTHON = '/usr/bin/python3';
my $MOCK_SCRIPT =
  File::Spec->rel2abs(dirname(__FILE__) . '/../mock_api.py');

my $mock_harness;
my $mock_url;

# Start the mock on a free loopback port; returns its base URL.
sub start_mock
{
	my $dir = PostgreSQL::Test::Utils::tempdir('mock');
	my $port_file = "$dir/port";
	my $log = "$PostgreSQL::Test::Utils::tmp_check/mock_api.log";

	$mock_harness = IPC::Run::start(
		[
			$PYTHON, $MOCK_SCRIPT, '--host', '127.0.0.1', '--port', '0',
			'--port-file', $port_file, '--api-key', 'test-key'
		],
		'<', \undef, '>>', $log, '2>>', $log);

	for (1 .. 200)
	{
		last if -s $port_file;
		usleep(50_000);
	}
	die "the mock API did not start (see $log)" unless -s $port_file;

	my $port = PostgreSQL::Test::Utils::slurp_file($port_file);
	$port =~ s/\s+//g;
	$mock_url = "http://127.0.0.1:$port";
	note "mock API at $mock_url";
	return $mock_url;
}

# Stop the mock we started, by its process.
sub stop_mock
{
	return unless $mock_harness;
	# SIGTERM, then SIGKILL if it has not exited within 5 s.
	eval { $mock_harness->kill_kill(grace => 5); 1; }
	  or diag "could not stop the mock API: $@";
	$mock_harness = undef;
	return;
}

END
{
	local $?;
	stop_mock();
}

# Call the mock's API: method, path (e.g. '/__mock/stats'), optional body (a
# Perl structure or a JSON string).  Returns the decoded JSON answer.
sub mock_call
{
	my ($url, $method, $path, $body) = @_;
	my @cmd = ('curl', '-sS', '-g', '--max-time', '10', '-X', $method);
	if (defined $body)
	{
		$body = encode_json($body) if ref $body;
		push @cmd, '-H', 'Content-Type: application/json', '--data-binary',
		  $body;
	}
	push @cmd, $url . $path;

	my ($out, $err) = ('', '');
	IPC::Run::run(\@cmd, '<', \undef, '>', \$out, '2>', \$err)
	  or die "curl $method $path failed: $err";
	return decode_json($out);
}

# Forget everything the mock knows, then apply a config.
sub mock_reset
{
	my ($url, $config) = @_;
	mock_call($url, 'POST', '/__mock/reset', {});
	mock_call($url, 'POST', '/__mock/config', $config) if $config;
	return;
}

sub mock_stats
{
	my ($url) = @_;
	return mock_call($url, 'GET', '/__mock/stats');
}

# How many tasks the mock created for one prompt.
sub mock_created
{
	my ($url, $prompt) = @_;
	return mock_stats($url)->{creates_by_prompt}{$prompt} // 0;
}

# An initialized (not started) node that preloads kling and talks to the
# mock.  %extra_conf: more settings (name => value, quoted as strings),
# overriding the defaults below; database_name defaults to 'postgres'.
# %init_params for $node->init come through the key 'init'; the key
# 'install_path' makes a node of another installation (pg_upgrade's old).
sub new_kling_node
{
	my ($name, $url, %extra_conf) = @_;
	my $init = delete $extra_conf{init} // {};
	my $install_path = delete $extra_conf{install_path};
	my %conf = (
		'kling.base_url' => $url,
		'kling.api_key' => 'test-key',
		'kling.poll_interval' => '100ms',
		'kling.request_timeout' => '2s',
		'kling.database_name' => 'postgres',
		%extra_conf);

	my $node = PostgreSQL::Test::Cluster->new($name,
		defined $install_path ? (install_path => $install_path) : ());
	$node->init(%$init);
	# The test framework turns crash restarts off; the suite needs them.
	my $text = "shared_preload_libraries = 'kling'\nrestart_after_crash = on\n";
	for my $key (sort keys %conf)
	{
		(my $v = $conf{$key}) =~ s/'/''/g;
		$text .= "$key = '$v'\n";
	}
	$node->append_conf('postgresql.conf', $text);
	return $node;
}

# A started node for the attack suites, with the extension created: spend
# limits on (their counting queries run as the table owner), a short
# kling.delivery_timeout; %extra_conf overrides or adds settings.
sub new_attack_node
{
	my ($name, $url, %extra_conf) = @_;
	my $node = new_kling_node(
		$name, $url,
		'kling.delivery_timeout' => '1s',
		'kling.max_active_tasks' => '100',
		'kling.max_daily_tasks' => '1000',
		%extra_conf);
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION kling');
	ok(defined wait_worker($node, 30), 'the kling worker starts');
	return $node;
}

# Poll a query (one value, compared as text) until it gives $expected or
# $timeout seconds pass; errors (server restarting) count as not yet.
# Returns true on success.
sub wait_until
{
	my ($node, $db, $query, $expected, $timeout) = @_;
	$expected = 't' unless defined $expected;
	$timeout //= 30;
	my $deadline = time() + $timeout;
	my $last = '';
	while (1)
	{
		my ($ret, $out, $err) = $node->psql($db, $query);
		$last = defined $out ? $out : '';
		return 1 if $ret == 0 && $last eq $expected;
		last if time() > $deadline;
		usleep(100_000);
	}
	diag "timed out after ${timeout}s waiting for [$query] = [$expected];"
	  . " last answer [$last]";
	return 0;
}

# Wait until no task is pending, submitting, queued or generating, or has
# its delivery (write-back, callback) pending.
sub wait_final
{
	my ($node, $db, $timeout) = @_;
	return wait_until(
		$node, $db,
		"SELECT count(*) FROM kling_tasks WHERE status IN"
		  . " ('pending', 'submitting', 'queued', 'generating') OR delivery_pending",
		'0', $timeout);
}

# The pid of a process of this backend_type, or undef.
sub _backend_pid
{
	my ($node, $type) = @_;
	my ($ret, $out) = $node->psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = '$type'");
	return ($ret == 0 && $out =~ /^\d+$/) ? $out : undef;
}

sub worker_pid { return _backend_pid($_[0], 'kling worker'); }
sub launcher_pid { return _backend_pid($_[0], 'kling launcher'); }

# Wait until a kling worker runs whose pid is not $not_pid; returns its pid
# or undef after $timeout seconds.
sub wait_worker
{
	my ($node, $timeout, $not_pid) = @_;
	my $deadline = time() + ($timeout // 30);
	while (time() <= $deadline)
	{
		my $pid = worker_pid($node);
		return $pid if defined $pid && (!defined $not_pid || $pid != $not_pid);
		usleep(100_000);
	}
	return undef;
}

# Wait until the server log, from byte $offset on, matches $re; returns
# true if it did within $timeout seconds.
sub wait_log
{
	my ($node, $re, $offset, $timeout) = @_;
	my $deadline = time() + ($timeout // 30);
	while (1)
	{
		my $log = PostgreSQL::Test::Utils::slurp_file($node->logfile,
			$offset // 0);
		return 1 if $log =~ $re;
		return 0 if time() > $deadline;
		usleep(100_000);
	}
}

# How many lines of the server log, from byte $offset on, match $re.
sub log_count
{
	my ($node, $re, $offset) = @_;
	my $log = PostgreSQL::Test::Utils::slurp_file($node->logfile, $offset // 0);
	return scalar grep { $_ =~ $re } split /\n/, $log;
}

# A LOGIN role (the test clusters trust local connections) with only the
# grants the README gives, and a schema of its own named after it.
# Options: grants => 0 for no grant at all; trigger => 1 to add EXECUTE on
# kling_on_insert().
sub new_role
{
	my ($node, $db, $role, %opt) = @_;
	my $sql = "CREATE ROLE $role LOGIN;\nCREATE SCHEMA $role AUTHORIZATION $role;\n";
	if ($opt{grants} // 1)
	{
		$sql .=
		    "GRANT EXECUTE ON FUNCTION kling_submit(text, jsonb), kling_status(bigint),"
		  . " kling_cancel(bigint), kling_wait(bigint, interval) TO $role;\n"
		  . "GRANT SELECT ON kling_tasks TO $role;\n";
		$sql .= "GRANT EXECUTE ON FUNCTION kling_on_insert() TO $role;\n"
		  if $opt{trigger};
	}
	$node->safe_psql($db, $sql);
	return;
}

# Run SQL as a role, errors with their SQLSTATE (VERBOSITY verbose) and the
# script stopped at the first one.  Returns (exit code, stdout, stderr).
sub as_role
{
	my ($node, $db, $role, $sql) = @_;
	my ($ret, $out, $err) = $node->psql($db, "\\set VERBOSITY verbose\n$sql",
		extra_params => [ '-U', $role ]);
	return ($ret, $out // '', $err // '');
}

# The SQLSTATE of the first error in psql's stderr (VERBOSITY verbose), or ''.
sub sqlstate_of
{
	my ($stderr) = @_;
	return ($stderr // '') =~ /ERROR:\s+([0-9A-Z]{5}):/ ? $1 : '';
}

# kling_submit as a role ($opts: JSON text or undef; $before: SQL run first
# in the same session); returns the task id, or undef (the error shown).
sub submit_as
{
	my ($node, $db, $role, $prompt, $opts, $before) = @_;
	my ($ret, $out, $err) = as_role($node, $db, $role,
		($before // '')
		  . "SELECT public.kling_submit('$prompt'"
		  . (defined $opts ? ", '$opts'" : '') . ')');
	diag "submit as $role failed: $err" if $ret;
	return $ret == 0 ? $out : undef;
}

# Wait until every task of @$ids has $status ('final': any final status);
# false at once if an id is missing (a submit failed).
sub wait_status
{
	my ($node, $db, $ids, $status, $timeout) = @_;
	return 0 if !@$ids || grep { !defined } @$ids;
	my $in = $status eq 'final' ? "'completed', 'failed', 'cancelled'" : "'$status'";
	return wait_until($node, $db,
		"SELECT count(*) FROM public.kling_tasks WHERE id IN (" . join(', ', @$ids)
		  . ") AND status IN ($in)",
		scalar(@$ids), $timeout);
}

# Run one part of a test; one that dies is a failure, and the next runs.
sub attack
{
	my ($name, $code) = @_;
	ok(eval { $code->(); 1 }, "$name: ran to the end") or diag $@;
	return;
}

1;
