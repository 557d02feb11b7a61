# test/citus/t/001_cluster.pl: kling on a Citus 12.1 cluster
#
# A coordinator and two workers on loopback, each preloading citus and
# kling and pointed at the mock.  What this records (observed with Citus
# 12.1.12 and kling 0.4 on PostgreSQL 15):
#
#  - CREATE EXTENSION kling on the coordinator is propagated: Citus runs
#    CREATE EXTENSION IF NOT EXISTS kling on every worker, in a two-phase
#    commit (PREPARE TRANSACTION, then COMMIT PREPARED), and marks the
#    extension and the kling_user role as distributed objects.
#  - kling's worker starts on the coordinator at once, and on the worker
#    nodes too: their CREATE EXTENSION commits by COMMIT PREPARED, which
#    wakes kling's launcher (a prepared transaction's own wakes are dropped
#    at PREPARE).
#  - CREATE TRIGGER ... kling_on_insert() on a distributed table is
#    refused ("triggers are not supported on distributed tables") unless
#    citus.enable_unsafe_triggers is on; with it the trigger goes onto
#    every shard, fires on the worker nodes, and the tasks are those of the
#    worker nodes' kling_tasks (the coordinator's has none); their
#    workers send them and write the URL back into the shards.  A
#    multi-shard INSERT commits on the workers by two-phase commit too;
#    COMMIT PREPARED wakes their kling workers, so its tasks go out at
#    once, as a single-row INSERT's do.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

# KlingTest.pm is in test/t, two levels up from here.
use FindBin;
use lib "$FindBin::RealBin/../../t";
use KlingTest;

my $db = 'postgres';
my $url = start_mock();

# Citus must come first in shared_preload_libraries.  Citus connects to
# the nodes over TCP: each listens on 127.0.0.1 too, on the port the test
# framework picked for it (free on 127.0.0.1, reserved for this run), and
# initdb's trust covers host connections from 127.0.0.1.
my @nodes = map {
	new_kling_node(
		$_, $url,
		'shared_preload_libraries' => 'citus,kling',
		'listen_addresses' => '127.0.0.1')
} qw(coord worker1 worker2);
my ($coord, @workers) = @nodes;
$_->start for @nodes;

# Run SQL; returns (exit code, stdout, stderr).
sub run_sql
{
	my ($node, $sql) = @_;
	my ($ret, $out, $err) = $node->psql($db, $sql);
	return ($ret, $out // '', $err // '');
}

# The databases the kling workers of a node serve, comma-separated.
sub kling_worker_dbs
{
	my ($node) = @_;
	return $node->safe_psql($db,
		"SELECT coalesce(string_agg(datname, ',' ORDER BY datname), '') "
		  . "FROM pg_stat_activity WHERE backend_type = 'kling worker'");
}

# --- the cluster ---------------------------------------------------------

for my $node (@nodes)
{
	$node->safe_psql($db, 'CREATE EXTENSION citus');
	like($node->safe_psql($db, 'SELECT citus_version()'),
		qr/^Citus 12\.1\.12\b/, $node->name . ': CREATE EXTENSION citus, Citus 12.1.12');
}

$coord->safe_psql($db,
	"SELECT citus_set_coordinator_host('127.0.0.1', " . $coord->port . ')');
for my $w (@workers)
{
	$coord->safe_psql($db,
		"SELECT citus_add_node('127.0.0.1', " . $w->port . ')');
}
is($coord->safe_psql($db,
		'SELECT count(*) FROM citus_get_active_worker_nodes()'),
	'2', 'the coordinator has two active workers');
is( $coord->safe_psql(
		$db,
		'SELECT string_agg(nodeport::text, \',\' ORDER BY nodeport) '
		  . 'FROM pg_dist_node WHERE isactive AND noderole = \'primary\''),
	join(',', sort { $a <=> $b } map { $_->port } @nodes),
	'pg_dist_node lists the coordinator and both workers');

# --- CREATE EXTENSION kling: propagated ----------------------------------

my $log_offsets = { map { $_->name => -s $_->logfile } @workers };
$coord->safe_psql($db, 'CREATE EXTENSION kling');
my $version =
  $coord->safe_psql($db,
	"SELECT extversion FROM pg_extension WHERE extname = 'kling'");
ok(defined wait_worker($coord, 30), 'coordinator: the kling worker starts');
is(kling_worker_dbs($coord), $db, "coordinator: its kling worker serves '$db'");
is( $coord->safe_psql(
		$db,
		"SELECT count(*) FROM pg_dist_object WHERE classid = 'pg_extension'::regclass "
		  . "AND objid = (SELECT oid FROM pg_extension WHERE extname = 'kling')"),
	'1',
	'Citus records kling as a distributed object (pg_dist_object)');

for my $w (@workers)
{
	my $name = $w->name;
	is( $w->safe_psql(
			$db, "SELECT extversion FROM pg_extension WHERE extname = 'kling'"),
		$version,
		"$name: CREATE EXTENSION kling was propagated (version $version)");
	is($w->safe_psql($db,
			"SELECT count(*) FROM pg_roles WHERE rolname = 'kling_user'"),
		'1', "$name: the kling_user role came along");
	ok( wait_log(
			$w,
			qr/CREATE EXTENSION IF NOT EXISTS kling\b.*\n(?s:.*)PREPARE TRANSACTION\b(?s:.*)COMMIT PREPARED/,
			$log_offsets->{$name}, 10),
		"$name: Citus ran it in a two-phase commit");
}

# A database whose worker found no extension rests until a committed
# CREATE EXTENSION wakes the launcher; COMMIT PREPARED does, so the
# propagated one serves each worker node's database without a restart.
for my $w (@workers)
{
	ok(defined wait_worker($w, 20),
		$w->name . ': the propagated CREATE EXTENSION (COMMIT PREPARED) starts a kling worker');
	is(kling_worker_dbs($w), $db, $w->name . ": its kling worker serves '$db'");
}

# kling works as usual on the coordinator.
my $t = $coord->safe_psql($db, "SELECT kling_submit('citus: on the coordinator')");
ok(wait_status($coord, $db, [$t], 'completed', 30),
	'coordinator: a kling_submit task completes');

# --- a distributed table with the kling_on_insert trigger ----------------

$coord->safe_psql(
	$db, q{
CREATE TABLE scenes (id bigint PRIMARY KEY, prompt text, opts jsonb,
                     task_id bigint, video_url text);
SELECT create_distributed_table('scenes', 'id');
});
is($coord->safe_psql($db,
		"SELECT count(*) FROM citus_shards WHERE table_name = 'scenes'::regclass"),
	'32', 'scenes is distributed (32 shards)');

my $trigger_sql =
    'CREATE TRIGGER scenes_video BEFORE INSERT ON scenes FOR EACH ROW '
  . "EXECUTE FUNCTION kling_on_insert('prompt', 'task_id', 'video_url')";
my ($ret, $out, $err) = run_sql($coord, $trigger_sql);
isnt($ret, 0, 'CREATE TRIGGER kling_on_insert on a distributed table is refused');
like($err, qr/ERROR:\s+triggers are not supported on distributed tables/,
	'... with "triggers are not supported on distributed tables"');

($ret, $out, $err) =
  run_sql($coord, "SET citus.enable_unsafe_triggers = on;\n$trigger_sql");
is($ret, 0, 'with citus.enable_unsafe_triggers = on it is created') or diag $err;
for my $w (@workers)
{
	# Citus names a shard's trigger after the shard: scenes_video_102008.
	my $shards = $coord->safe_psql($db,
		"SELECT count(*) FROM citus_shards WHERE table_name = 'scenes'::regclass "
		  . "AND nodeport = " . $w->port);
	is( $w->safe_psql(
			$db,
			"SELECT count(*) FROM pg_trigger WHERE tgname ~ '^scenes_video_[0-9]+\$'"),
		$shards,
		$w->name . ": the trigger is on its $shards shards (scenes_video_<shard id>)");
	is($w->safe_psql($db,
			"SELECT count(*) FROM pg_trigger WHERE tgname = 'scenes_video'"),
		'1', $w->name . ': and on its shell table scenes');
}

# How long each task of a worker node waited to be sent, noted.
sub note_delays
{
	my ($w, $what) = @_;
	note "observed: " . $w->name . " ($what), seconds from insert to send: "
	  . $w->safe_psql($db,
		"SELECT string_agg(format('%s %s', prompt, "
		  . "round(extract(epoch FROM submitted_at - created_at)::numeric, 1)), '; ' ORDER BY id) "
		  . "FROM kling_tasks WHERE submitted_at IS NOT NULL");
	return;
}

# A multi-shard INSERT: Citus commits it on both workers by two-phase
# commit; COMMIT PREPARED wakes their kling workers.
my $start = time();
($ret, $out, $err) = run_sql($coord,
	"INSERT INTO scenes (id, prompt) VALUES (1, 'citus: a fox'), (2, 'citus: an owl'), "
	  . "(3, 'citus: a bear'), (4, 'citus: a lynx') RETURNING task_id IS NOT NULL");
is($ret, 0, 'a multi-shard INSERT into the distributed table') or diag $err;
is($out, join("\n", ('t') x 4), 'every inserted row got a task id');

is( $coord->safe_psql(
		$db, "SELECT count(*) FROM kling_tasks WHERE prompt <> 'citus: on the coordinator'"),
	'0',
	"the coordinator's kling_tasks has none of the trigger's tasks");
my %on;
$on{ $_->name } = $_->safe_psql($db, 'SELECT count(*) FROM kling_tasks') for @workers;
is($on{worker1} + $on{worker2}, 4, "the worker nodes' kling_tasks have the four tasks");
ok($on{worker1} > 0 && $on{worker2} > 0, '... on both worker nodes')
  or diag "worker1 $on{worker1}, worker2 $on{worker2}";

for my $w (@workers)
{
	ok(wait_final($w, $db, 20), $w->name . ': its tasks end, sent at once');
	note_delays($w, 'multi-shard INSERT, two-phase commit');
}
note sprintf('observed: the multi-shard INSERT\'s tasks were final %.1f s after it', time() - $start);
is($coord->safe_psql($db,
		"SELECT count(*) FROM scenes WHERE video_url LIKE 'http%'"),
	'4', 'the coordinator sees a video URL in every row (written back into the shards)');

# A single-row INSERT: one statement on one worker, committed there by
# itself (no two-phase commit), which wakes that worker's kling worker.
my $port5 = $coord->safe_psql($db,
	"SELECT nodeport FROM citus_shards WHERE shardid = get_shard_id_for_distribution_column('scenes', 5)");
my ($w5) = grep { $_->port == $port5 } @workers;
$start = time();
$coord->safe_psql($db, "INSERT INTO scenes (id, prompt) VALUES (5, 'citus: one row')");
ok(wait_until($coord, $db, "SELECT video_url LIKE 'http%' FROM scenes WHERE id = 5", 't', 15),
	'a single-row INSERT: its task is sent at once and its URL written back');
note_delays($w5, 'after the single-row INSERT');
note sprintf('observed: the single-row INSERT\'s URL was there %.1f s after it', time() - $start);

is(mock_stats($url)->{creates}, 6, 'the mock created six tasks, each once');
is(mock_stats($url)->{duplicate_creates}, 0, '... no duplicate');

# --- one account across the nodes ------------------------------------------
# kling.max_in_flight = 3 on every node: three nodes, a share of one each,
# so the provider never holds more than 3 of the cluster's tasks at once.
for my $node (@nodes)
{
	$node->append_conf('postgresql.conf', "kling.max_in_flight = 3\n");
	$node->reload;
}
usleep(1_500_000);    # the workers look at their share at most once a second
$_->reload for @nodes;
mock_reset($url, { fixed_seconds => 0.6 });
$coord->safe_psql($db,
	"INSERT INTO scenes (id, prompt) SELECT i, 'citus: budget ' || i FROM generate_series(11, 22) i");
$coord->safe_psql($db, "SELECT kling_submit('citus: budget on the coordinator ' || i) FROM generate_series(1, 3) i");
ok(wait_final($_, $db, 60), $_->name . ': the budget round ends') for @nodes;
is($coord->safe_psql($db, "SELECT count(*) FROM scenes WHERE id BETWEEN 11 AND 22 AND video_url LIKE 'http%'"),
	'12', 'every row of the second INSERT has its video URL');
cmp_ok(mock_stats($url)->{max_in_flight}, '<=', 3,
	'three nodes sending at once never exceeded kling.max_in_flight (3) together');
note 'observed: the provider held at most ' . mock_stats($url)->{max_in_flight} . ' at once';

# One query on the coordinator reports the whole cluster's history.
my $total = 0;
$total += $_->safe_psql($db, 'SELECT count(*) FROM kling_tasks') for @nodes;
is($coord->safe_psql($db,
		"SELECT sum(result::bigint) FROM run_command_on_all_nodes('SELECT count(*) FROM kling_tasks')"),
	$total, "one query on the coordinator counts every node's tasks ($total)");

# ... and kling_stats, summed over the nodes (the README's query).
is($coord->safe_psql($db, q{
SELECT sum(s.submitted)
FROM run_command_on_all_nodes(
       'SELECT coalesce(json_agg(s), ''[]'') FROM kling_stats s') AS r,
     json_to_recordset(r.result::json)
       AS s(day date, model text, submitted bigint, completed bigint,
            failed bigint, credits_used numeric)}),
	$total, "kling_stats over all nodes from the coordinator counts them too");

# --- a shard moved while its row's task is in flight ------------------------
mock_call($url, 'POST', '/__mock/config', { fixed_seconds => 4 });
$coord->safe_psql($db, "INSERT INTO scenes (id, prompt) VALUES (30, 'citus: moved mid-flight')");
my ($shard, $from) = split /\|/, $coord->safe_psql($db,
	"SELECT shardid, nodeport FROM citus_shards"
	  . " WHERE shardid = get_shard_id_for_distribution_column('scenes', 30)");
my ($holder) = grep { $_->port == $from } @workers;
my ($other) = grep { $_->port != $from } @workers;
ok(wait_until($holder, $db,
		"SELECT status IN ('queued', 'generating') FROM kling_tasks WHERE prompt = 'citus: moved mid-flight'",
		't', 20),
	'the moving row\'s task is at the provider');
($ret, $out, $err) = run_sql($coord,
	"SELECT citus_move_shard_placement($shard, '127.0.0.1', $from, '127.0.0.1', "
	  . $other->port . ", shard_transfer_mode := 'block_writes')");
is($ret, 0, 'citus_move_shard_placement moves its shard to the other worker') or diag $err;
is($coord->safe_psql($db,
		"SELECT nodeport FROM citus_shards WHERE shardid = $shard"),
	$other->port, '... which holds it now');
ok(wait_until($coord, $db, "SELECT video_url LIKE 'http%' FROM scenes WHERE id = 30", 't', 30),
	'the URL reaches the moved row (written back through the distributed table)');
is(mock_created($url, 'citus: moved mid-flight'), 1, 'its task was sent once');

$_->stop for reverse @nodes;
done_testing();
