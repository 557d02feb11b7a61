use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../../t";
use KlingTest;

my $url = start_mock();
my @nodes;
for my $name (qw(coord worker1 worker2))
{
	my $n = new_kling_node($name, $url,
		'shared_preload_libraries' => 'citus,kling',
		'listen_addresses' => '127.0.0.1');
	$n->start;
	push @nodes, $n;
}
my ($coord, @workers) = @nodes;
for my $n (@nodes)
{
	my $pid = wait_worker($n, 30);
	ok(defined $pid, $n->name . ': kling worker');
	diag $n->safe_psql('postgres', "SELECT backend_type, datname, application_name FROM pg_stat_activity WHERE backend_type NOT IN ('client backend','checkpointer','walwriter','background writer','autovacuum launcher','logical replication launcher')");
	my ($r, $o, $e) = $n->psql('postgres', 'CREATE EXTENSION citus');
	diag "create citus: $r $o $e";
}
diag $coord->safe_psql('postgres', "SELECT citus_set_coordinator_host('127.0.0.1', " . $coord->port . ")");
for my $w (@workers)
{
	my ($r, $o, $e) = $coord->psql('postgres', "SELECT citus_add_node('127.0.0.1', " . $w->port . ")");
	diag "add node: $r $o $e";
}
diag $coord->safe_psql('postgres', 'SELECT * FROM pg_dist_node');
my ($r, $o, $e) = $coord->psql('postgres', 'CREATE EXTENSION kling');
diag "create kling: $r [$o] [$e]";
for my $n (@nodes)
{
	diag $n->name . ": " . $n->safe_psql('postgres', "SELECT string_agg(extname||' '||extversion, ', ') FROM pg_extension");
	diag $n->safe_psql('postgres', "SELECT backend_type, datname FROM pg_stat_activity WHERE backend_type NOT IN ('client backend','checkpointer','walwriter','background writer','autovacuum launcher','logical replication launcher')");
}
diag $coord->safe_psql('postgres', "SELECT classid::regclass, objid, objsubid FROM pg_dist_object");
$coord->safe_psql('postgres', "CREATE TABLE scenes (id bigint PRIMARY KEY, prompt text, opts jsonb, task_id bigint, video_url text); SELECT create_distributed_table('scenes', 'id')");
($r, $o, $e) = $coord->psql('postgres', "CREATE TRIGGER scenes_video BEFORE INSERT ON scenes FOR EACH ROW EXECUTE FUNCTION kling_on_insert('prompt', 'task_id', 'video_url')");
diag "trigger: $r [$o] [$e]";
($r, $o, $e) = $coord->psql('postgres', "SET citus.enable_unsafe_triggers = on; CREATE TRIGGER scenes_video BEFORE INSERT ON scenes FOR EACH ROW EXECUTE FUNCTION kling_on_insert('prompt', 'task_id', 'video_url')");
diag "trigger unsafe: $r [$o] [$e]";
($r, $o, $e) = $coord->psql('postgres', "INSERT INTO scenes (id, prompt) VALUES (1, 'a fox'), (2, 'an owl'), (3, 'a bear') RETURNING *");
diag "insert: $r [$o] [$e]";
sleep 5;
for my $n (@nodes)
{
	diag $n->name . ": " . $n->psql('postgres', "SELECT id, status, prompt, video_url, error, delivery_error FROM kling_tasks");
	diag $n->name . ": " . $n->psql('postgres', "SELECT * FROM scenes");
}
diag explain mock_stats($url);
ok(1);
done_testing();
