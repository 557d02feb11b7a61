# test/t/002_standby.pl: nothing runs on a hot standby; a promoted one serves
#
# A primary with the worker completes a task; a streaming standby made from
# its backup runs no launcher and no worker, refuses kling_submit, and shows
# the replicated tasks.  Once promoted, the launcher and the worker start
# there and a task submitted on it completes.  Both talk to the same mock.

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
my $t0 = time;
my $url = start_mock();
mock_reset($url, { fixed_seconds => 0.5 });

my $primary =
  new_kling_node('primary', $url, init => { allows_streaming => 1 });
$primary->start;
$primary->safe_psql($db, 'CREATE EXTENSION kling');
ok(defined wait_worker($primary, 30), 'the primary runs a kling worker');

my $p_id =
  $primary->safe_psql($db, "SELECT kling_submit('standby: on the primary')");
ok(wait_final($primary, $db, 20), 'a task on the primary reaches a final state');
is($primary->safe_psql($db, "SELECT status FROM kling_tasks WHERE id = $p_id"),
	'completed', 'and completed');

# The standby: its postgresql.conf comes from the backup, with the same
# kling settings (preload, mock URL, key, intervals).
$primary->backup('b1');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'b1', has_streaming => 1);
$standby->start;
is($standby->safe_psql($db, 'SELECT pg_is_in_recovery()'),
	't', 'the standby is in recovery');
is($standby->safe_psql($db, 'SHOW kling.base_url'),
	$url, 'the standby has the same kling settings');

# Look for a couple of seconds: neither the launcher nor a worker starts.
my $seen = 0;
for (1 .. 20)
{
	$seen += $standby->safe_psql($db,
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type IN"
		  . " ('kling launcher', 'kling worker')");
	usleep(100_000);
}
is($seen, 0, 'no kling launcher nor kling worker runs on the standby');

my ($ret, $out, $err) = $standby->psql($db,
	"SELECT kling_submit('standby: refused on the standby')");
isnt($ret, 0, 'kling_submit fails on the standby');
like($err, qr/cannot submit a kling task on a server in recovery/,
	'with a clear error');

$primary->wait_for_catchup($standby);
is( $standby->safe_psql(
		$db, "SELECT status, video_url IS NOT NULL FROM kling_status($p_id)"),
	'completed|t',
	'the replicated task is readable on the standby with kling_status');

# Promotion: the launcher and the worker start on the new primary.
$standby->promote;
ok( wait_until(
		$standby, $db, 'SELECT pg_is_in_recovery()', 'f', 30),
	'the standby is promoted');
ok(defined wait_worker($standby, 30),
	'a kling worker runs on the promoted server');
ok(defined launcher_pid($standby),
	'the kling launcher runs on the promoted server');

my $s_id =
  $standby->safe_psql($db, "SELECT kling_submit('standby: after promotion')");
ok(wait_final($standby, $db, 20),
	'a task submitted on the promoted server reaches a final state');
is($standby->safe_psql($db, "SELECT status FROM kling_tasks WHERE id = $s_id"),
	'completed', 'and completed');
is(mock_created($url, 'standby: after promotion'),
	1, 'the mock created it once');
is(mock_created($url, 'standby: on the primary'),
	1, 'the task replicated from the primary was not sent again');
is(mock_created($url, 'standby: refused on the standby'),
	0, 'the refused submission sent nothing');

$standby->stop('fast');
$primary->stop('fast');
stop_mock();
note sprintf('002_standby ran in %.1f s', time - $t0);
done_testing();
