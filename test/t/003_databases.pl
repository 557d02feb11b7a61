# test/t/003_databases.pl: every database with the extension is served
#
# No setting names the databases: four created after the server started,
# the extension created in each, are each served by a worker of their own;
# tasks submitted in all of them complete while the provider never holds
# more than kling.max_in_flight of the account's at once.  A plain DROP
# DATABASE of a served database with tasks in flight works, and so does a
# DROP EXTENSION; the other databases keep going and no kling process is
# left behind.  kling.databases narrows the databases served, and
# kling.max_databases caps them, saying so once.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use FindBin;
use lib $FindBin::RealBin;
use KlingTest;

my $t0 = time;
my $url = start_mock();
mock_reset($url, { fixed_seconds => 1 });

my $node = new_kling_node('databases', $url,
	'kling.database_name' => '',
	'kling.max_in_flight' => '3',
	# Each database served takes two: its worker and its delivery process.
	'max_worker_processes' => '16');
$node->start;

# The kling processes of a database, by type.
sub processes_in
{
	my ($db) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'kling %'"
		  . " AND backend_type <> 'kling launcher' AND datname = '$db'");
}

sub workers_by_database
{
	return $node->safe_psql('postgres',
		"SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_stat_activity"
		  . " WHERE backend_type = 'kling worker'");
}

ok(wait_until($node, 'postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'kling launcher'", '1', 30),
	'the launcher runs');
usleep(1_500_000);
is(workers_by_database(), '', 'no worker runs: no database has the extension');
is(log_count($node, qr/kling worker started/), 0, 'and none said it serves one');

my @dbs = map { "shop$_" } 1 .. 4;
$node->safe_psql('postgres', "CREATE DATABASE $_") for @dbs;
$node->safe_psql($_, 'CREATE EXTENSION kling') for @dbs;
ok(wait_until($node, 'postgres',
		"SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_stat_activity"
		  . " WHERE backend_type = 'kling worker'", join(',', @dbs), 20),
	'each of four databases made after the start is served by a worker of its own');

# Five tasks in each database: all complete, within the account's budget.
my %ids;
my ($ret, $out, $err);
for my $db (@dbs)
{
	$ids{$db} = [ map { $node->safe_psql($db, "SELECT kling_submit('$db task $_')") } 1 .. 5 ];
}
ok(wait_final($node, $_, 60), "every task of $_ is final") for @dbs;
is($node->safe_psql($_, "SELECT string_agg(DISTINCT status, ',') FROM kling_tasks"),
	'completed', "and completed in $_") for @dbs;
cmp_ok(mock_stats($url)->{max_in_flight}, '<=', 3,
	'the provider never held more than kling.max_in_flight (3) tasks at once');
is(mock_stats($url)->{duplicate_creates}, 0, 'no create was sent twice');

# A role that may not drop, rename or copy a database cannot stop its
# worker by trying: only a role allowed to run the statement makes kling's
# processes leave the database first.
$node->safe_psql('postgres', 'CREATE ROLE mallory LOGIN CREATEDB');
my $worker_of_shop4 = "SELECT pid FROM pg_stat_activity WHERE backend_type = 'kling worker' AND datname = 'shop4'";
my $pid4 = $node->safe_psql('postgres', $worker_of_shop4);
for my $sql ('DROP DATABASE shop4', 'ALTER DATABASE shop4 RENAME TO stolen',
	'CREATE DATABASE copied TEMPLATE shop4', 'DROP DATABASE shop4 WITH (FORCE)')
{
	($ret, $out, $err) = $node->psql('postgres', $sql, extra_params => [ '-U', 'mallory' ]);
	isnt($ret, 0, "mallory (not the owner): $sql fails");
}
usleep(500_000);
is($node->safe_psql('postgres', $worker_of_shop4), $pid4,
	"shop4's worker ran on throughout: nobody else's statement stopped it");

# A plain DROP DATABASE while tasks are at the provider; a DROP EXTENSION.
mock_call($url, 'POST', '/__mock/config', { fixed_seconds => 4 });
$node->safe_psql('shop1', "SELECT kling_submit('shop1 in flight $_')") for 1 .. 2;
$node->safe_psql('shop2', "SELECT kling_submit('shop2 in flight')");
ok(wait_until($node, 'shop1',
		"SELECT count(*) > 0 FROM kling_tasks WHERE status IN ('queued', 'generating')", 't', 20),
	'shop1 has tasks at the provider');
($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE shop1');
is($ret, 0, 'a plain DROP DATABASE of a served database with tasks in flight works')
  or diag $err;
($ret, $out, $err) = $node->psql('shop2', 'DROP EXTENSION kling');
is($ret, 0, 'DROP EXTENSION kling works') or diag $err;
ok(wait_until($node, 'postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'kling %'"
		  . " AND backend_type <> 'kling launcher' AND datname IN ('shop1', 'shop2')", '0', 20),
	'no kling process is left in the dropped database nor in the one without the extension');

# The others keep going.
my @rest = qw(shop3 shop4);
mock_call($url, 'POST', '/__mock/config', { fixed_seconds => 0.5 });
$node->safe_psql($_, "SELECT kling_submit('$_ after the drops')") for @rest;
ok(wait_final($node, $_, 30), "$_ keeps going: its new task is final") for @rest;
is($node->safe_psql($_, "SELECT status FROM kling_tasks WHERE prompt = '$_ after the drops'"),
	'completed', "and completed in $_") for @rest;
usleep(6_000_000);    # longer than the launcher's pause before a restart
is(workers_by_database(), 'shop3,shop4', 'no worker was started again where nothing is served');

# kling.databases narrows what is served, on a reload.
$node->append_conf('postgresql.conf', "kling.databases = 'shop4'\n");
$node->reload;
ok(wait_until($node, 'postgres',
		"SELECT string_agg(datname, ',') FROM pg_stat_activity WHERE backend_type = 'kling worker'",
		'shop4', 20),
	'kling.databases: only the database listed keeps its worker');
my $submit_err;
($ret, $out, $submit_err) = $node->psql('shop3', "SELECT kling_submit('left out')");
like($submit_err, qr/kling workers do not serve database "shop3"/,
	'a submit where kling.databases leaves the database out warns');

# The extension created anew in a database: served again at once.
$node->safe_psql('shop2', 'CREATE EXTENSION kling');
$node->append_conf('postgresql.conf', "kling.databases = ''\n");
$node->reload;
ok(wait_until($node, 'postgres',
		"SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_stat_activity"
		  . " WHERE backend_type = 'kling worker'", 'shop2,shop3,shop4', 20),
	'CREATE EXTENSION kling where it had been dropped: the database is served again');

# kling.max_databases caps the databases served and says so once.
$node->append_conf('postgresql.conf', "kling.max_databases = 2\n");
$node->restart;
ok(wait_until($node, 'postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'kling worker'", '2', 20),
	'kling.max_databases = 2: two databases are served');
my $offset = -s $node->logfile;
usleep(6_000_000);
is(log_count($node, qr/is not served: all 2 of kling\.max_databases are taken/),
	1, 'the log says once that a database is left unserved');

# DROP DATABASE ... WITH (FORCE) works as well.
($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE shop3 WITH (FORCE)');
is($ret, 0, 'DROP DATABASE WITH (FORCE) of a served database works') or diag $err;
is(processes_in('shop3'), '0', 'no kling process is left in it');
is(log_count($node, qr/PANIC|server process .* was terminated/), 0, 'nothing crashed');

$node->stop('fast');
stop_mock();
note sprintf('003_databases ran in %.1f s', time - $t0);
done_testing();
