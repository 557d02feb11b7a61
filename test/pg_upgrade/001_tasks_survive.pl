# test/pg_upgrade/001_tasks_survive.pl: pg_upgrade of a cluster with kling
#
# A cluster of the older version (KLING_OLD_INSTALL, set by
# test/pg_upgrade/run) holds tasks in every state: completed, failed,
# cancelled, queued at the provider, pending behind kling.max_in_flight, and
# one caught 'submitting' (its create stalled at the provider).  After
# pg_upgrade to this version, the history is intact, nothing ran while the
# upgrade did (the library loads under pg_upgrade but starts no worker),
# pending tasks are sent, queued ones polled to the end, the 'submitting'
# one ends as "outcome unknown", and no create is sent twice.

use strict;
use warnings;

use File::Temp qw(tempdir);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

use FindBin;
use lib "$FindBin::RealBin/../t";
use KlingTest;

my $old_install = $ENV{KLING_OLD_INSTALL}
  or plan skip_all => 'KLING_OLD_INSTALL names the older installation';

my $db = 'postgres';
my $url = start_mock();
# Both with checksums: 18's initdb turns them on by default, 17's does not,
# and pg_upgrade needs the two to agree.
my %init = (init => { extra => ['--data-checksums'] });
my $old = new_kling_node('old', $url, %init,
	install_path => $old_install, 'kling.max_in_flight' => '3');
$old->start;
$old->safe_psql($db, 'CREATE EXTENSION kling');
ok(defined wait_worker($old, 30), 'the worker starts on the old version');

sub submit_on
{
	my ($node, $prompt) = @_;
	return $node->safe_psql($db, "SELECT kling_submit('$prompt')");
}

sub status_of
{
	my ($node, $id) = @_;
	return $node->safe_psql($db, "SELECT status FROM kling_tasks WHERE id = $id");
}

# Final tasks: one completed, one failed at the provider, one cancelled.
mock_reset($url, { fixed_seconds => 0.5 });
my $done = submit_on($old, 'completed before the upgrade');
my $failed = submit_on($old, 'failed before the upgrade [error]');
my $cancelled = submit_on($old, 'cancelled before the upgrade');
$old->safe_psql($db, "SELECT kling_cancel($cancelled)");
ok(wait_status($old, $db, [ $done, $failed, $cancelled ], 'final', 30),
	'the old cluster has final tasks');

# Two tasks at the provider, taking 20 s: queued when the old cluster stops.
mock_call($url, 'POST', '/__mock/config', { fixed_seconds => 20 });
my @queued = map { submit_on($old, "queued across the upgrade $_") } 1 .. 2;
ok( wait_until(
		$old, $db,
		"SELECT count(*) FROM kling_tasks WHERE id IN (@{[join ',', @queued]})"
		  . " AND status IN ('queued', 'generating')",
		'2', 30),
	'two tasks are at the provider');

# One create stalled at the provider: 'submitting' when the cluster stops.
mock_call($url, 'POST', '/__mock/faults',
	{ route => 'create', kind => 'create_then_stall', stall_seconds => 120 });
my $submitting = submit_on($old, 'submitting across the upgrade');
ok(wait_until($old, $db, "SELECT status FROM kling_tasks WHERE id = $submitting",
		'submitting', 30),
	'a task is submitting (its create stalled at the provider)');

# kling.max_in_flight (3) is reached: these stay pending.
my @pending = map { submit_on($old, "pending across the upgrade $_") } 1 .. 2;
usleep(1_000_000);
is( $old->safe_psql($db,
		"SELECT count(*) FROM kling_tasks WHERE id IN (@{[join ',', @pending]}) AND status = 'pending'"),
	'2', 'two tasks are pending behind kling.max_in_flight');

my $history_sql =
  "SELECT id, owner, prompt, opts, generation_id, video_url, created_at, completed_at"
  . " FROM kling_tasks WHERE id IN ($done, $failed, $cancelled) ORDER BY id";
my $history_before = $old->safe_psql($db, $history_sql);
my $ids_before = $old->safe_psql($db, 'SELECT string_agg(id::text, \',\' ORDER BY id) FROM kling_tasks');
my $last_before = $old->safe_psql($db, 'SELECT max(id) FROM kling_tasks');
# Debian trixie's 17.12 records a column option, pg_attver, on every column
# of every table; sid's 18.6 does not know it, so pg_upgrade stops in
# pg_restore ("unrecognized parameter") for any table, kling's or not.  It is
# stripped here, as a user of those two builds must, so that what is tested
# is kling across the upgrade (README, "Upgrading").
my $attver_sql = "SELECT count(*) FROM pg_attribute WHERE attoptions::text LIKE '%pg_attver=%'";
if ($old->safe_psql($db, $attver_sql) > 0)
{
	note 'this 17 build records pg_attver column options: stripped before the upgrade';
	$old->safe_psql($db,
		"UPDATE pg_attribute SET attoptions = nullif(array(SELECT o FROM unnest(attoptions) o"
		  . " WHERE o NOT LIKE 'pg_attver=%'), '{}'::text[])"
		  . " WHERE attoptions::text LIKE '%pg_attver=%'");
}
$old->stop('fast');
my $creates_before = mock_stats($url)->{create_requests};
my $polls_before = mock_stats($url)->{polls};

# The upgrade.  The new cluster preloads kling too, as it will run with it.
my $new = new_kling_node('new', $url, %init, 'kling.max_in_flight' => '3');
my $cwd = tempdir(DIR => $PostgreSQL::Test::Utils::tmp_check, CLEANUP => 1);
chdir $cwd or die "chdir $cwd: $!";
command_ok(
	[
		'pg_upgrade', '--no-sync',
		'--old-datadir' => $old->data_dir,
		'--new-datadir' => $new->data_dir,
		'--old-bindir' => $old->config_data('--bindir'),
		'--new-bindir' => $new->config_data('--bindir'),
		'--socketdir' => $new->host,
		'--old-port' => $old->port,
		'--new-port' => $new->port,
		'--copy', '--retain',
	],
	'pg_upgrade runs');

my $upgrade_logs = '';
for my $f (glob($new->data_dir . '/pg_upgrade_output.d/*/log/*.log'))
{
	$upgrade_logs .= slurp_file($f);
}
like($upgrade_logs, qr/database system is ready to accept connections/,
	'the servers pg_upgrade ran left their logs');
unlike($upgrade_logs, qr/kling worker started/,
	'no kling launcher or worker ran during the upgrade');
is(mock_stats($url)->{create_requests}, $creates_before,
	'no create was sent during the upgrade');
is(mock_stats($url)->{polls}, $polls_before, 'no poll was sent during the upgrade');

# The new version serves the upgraded cluster.
mock_call($url, 'DELETE', '/__mock/faults');
mock_call($url, 'POST', '/__mock/config', { fixed_seconds => 0.5 });
$new->start;
ok(defined wait_worker($new, 30), 'the worker starts on the new version');
is($new->safe_psql($db, 'SELECT string_agg(id::text, \',\' ORDER BY id) FROM kling_tasks'),
	$ids_before, 'every task is there');
is($new->safe_psql($db, $history_sql), $history_before,
	'the history (final tasks) is intact');
ok(wait_final($new, $db, 60), 'every task ends final');
is(status_of($new, $_), 'completed', "queued task $_ was polled to the end")
  for @queued;
is(status_of($new, $_), 'completed', "pending task $_ was sent and completed")
  for @pending;
is(status_of($new, $submitting), 'failed', 'the submitting task failed');
like($new->safe_psql($db, "SELECT error FROM kling_tasks WHERE id = $submitting"),
	qr/^outcome unknown/, '... as "outcome unknown"');
my $by_prompt = mock_stats($url)->{creates_by_prompt};
my @twice = grep { $by_prompt->{$_} > 1 } sort keys %$by_prompt;
is_deeply(\@twice, [], 'no create was sent twice');
is($by_prompt->{'submitting across the upgrade'}, 1,
	'the submitting task was never sent again');
my $after = submit_on($new, 'after the upgrade');
cmp_ok($after, '>', $last_before, 'new task ids continue the sequence');
ok(wait_status($new, $db, [$after], 'completed', 30), 'a new task completes');

$new->stop;
done_testing();
