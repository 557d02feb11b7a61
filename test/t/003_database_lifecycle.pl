# test/t/003_database_lifecycle.pl: the served database comes and goes
#
# The launcher waits quietly for a database that does not exist yet (one
# log line, no worker, no FATAL crash loop), starts the worker once it is
# created, lets DROP DATABASE ... WITH (FORCE) end it, says so once and
# waits again, and starts it again when the database is back.  DROP
# EXTENSION and CREATE EXTENSION in the served database leave the same
# worker running.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use FindBin;
use lib $FindBin::RealBin;
use KlingTest;

my $db = 'kling_db';
my $missing = qr/kling: database "kling_db" does not exist/;
my $t0 = time;

my $url = start_mock();
mock_reset($url, { fixed_seconds => 0.3 });

my $node = new_kling_node('dblife', $url, 'kling.database_name' => $db);
$node->start;

# Submit one task in the served database and wait for it; returns its status.
sub run_task
{
	my ($prompt) = @_;
	my $id = $node->safe_psql($db, "SELECT kling_submit('$prompt')");
	wait_final($node, $db, 20);
	return $node->safe_psql($db,
		"SELECT status FROM kling_tasks WHERE id = $id");
}

#
# Before the database exists.
#
ok(wait_log($node, $missing, 0, 20),
	'the log says the served database does not exist');
sleep 3;
is(log_count($node, $missing), 1, 'it says so once');
is(log_count($node, qr/FATAL/), 0, 'no FATAL in the log: no crash loop');
is(log_count($node, qr/background worker "kling/),
	0, 'no kling process exited');
ok(defined launcher_pid($node), 'the kling launcher runs');
ok(!defined worker_pid($node), 'no kling worker runs');

#
# CREATE DATABASE: the launcher notices (it looks every 10 s).
#
$node->safe_psql('postgres', "CREATE DATABASE $db");
my $worker = wait_worker($node, 20);
ok(defined $worker, 'after CREATE DATABASE a kling worker runs');
is( $node->safe_psql(
		'postgres',
		"SELECT datname FROM pg_stat_activity WHERE backend_type = 'kling worker'"
	),
	$db,
	'in the served database');
is(log_count($node, $missing), 1,
	'the launcher did not repeat itself while it waited');
is(log_count($node, qr/FATAL/), 0, 'still no FATAL in the log');

$node->safe_psql($db, 'CREATE EXTENSION kling');
is(run_task('db: first task'), 'completed', 'a task completes there');

#
# DROP EXTENSION, CREATE EXTENSION: the same worker serves throughout.
#
{
	my $offset = -s $node->logfile;
	$node->safe_psql($db, 'DROP EXTENSION kling');
	usleep(500_000);
	$node->safe_psql($db, 'CREATE EXTENSION kling');
	is(run_task('db: after re-creating the extension'),
		'completed', 'after DROP and CREATE EXTENSION a new task completes');
	is(worker_pid($node), $worker, 'served by the same kling worker');
	is(log_count($node, qr/background worker "kling/, $offset),
		0, 'no kling process exited meanwhile');
	is(log_count($node, qr/FATAL|PANIC/, $offset),
		0, 'no FATAL in the log meanwhile');
}

#
# DROP DATABASE ... WITH (FORCE): the worker goes away, the launcher says
# once that the database does not exist, and then keeps quiet.
#
{
	my $offset = -s $node->logfile;
	my ($ret, $out, $err) =
	  $node->psql('postgres', "DROP DATABASE $db WITH (FORCE)");
	is($ret, 0, 'DROP DATABASE WITH (FORCE) succeeds')
	  or diag $err;
	ok( wait_until(
			$node, 'postgres',
			"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'kling worker'",
			'0', 10),
		'the kling worker goes away');
	ok(wait_log($node, $missing, $offset, 20),
		'the log says once more that the database does not exist');
	my $quiet_from = -s $node->logfile;
	sleep 12;    # longer than the launcher's 10 s recheck
	is(log_count($node, $missing, $offset),
		1, 'it says so once in 12 s and more');
	is(log_count($node, qr/kling worker started/, $offset),
		0, 'no kling worker started meanwhile');
	is(log_count($node, qr/FATAL|PANIC/, $quiet_from),
		0, 'no FATAL in the log meanwhile: no crash loop');
	is(log_count($node, qr/background worker "kling/, $quiet_from),
		0, 'no kling process exited meanwhile');
	ok(!defined worker_pid($node), 'no kling worker runs');
	ok(defined launcher_pid($node), 'the kling launcher still runs');
}

#
# The database is back: so is the worker.
#
$node->safe_psql('postgres', "CREATE DATABASE $db");
my $worker2 = wait_worker($node, 20);
ok(defined $worker2, 'after re-creating the database a kling worker runs');
$node->safe_psql($db, 'CREATE EXTENSION kling');
is(run_task('db: in the re-created database'),
	'completed', 'and a task completes there');
is(mock_stats($url)->{duplicate_creates},
	0, 'the mock counts no duplicate create');

$node->stop('fast');
stop_mock();
note sprintf('003_database_lifecycle ran in %.1f s', time - $t0);
done_testing();
