# test/t/015_keep_crash.pl: a crash while a video is being stored
#
# A large video is stored into its large object over several rounds; the
# worker is killed (SIGKILL, a crash restart of the server) in the middle.
# After the restart the half-made large object is removed, the video is
# fetched and stored again, and no large object is left without its row.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib $FindBin::RealBin;
use KlingTest;

my $db = 'postgres';
my $url = start_mock();
mock_reset($url, { fixed_seconds => 0.2, video_base => 'self' });

my $node = new_kling_node('keep_crash', $url, 'kling.download_allow_private' => 'on');
$node->start;
$node->safe_psql($db, 'CREATE EXTENSION kling');
ok(defined wait_worker($node, 30), 'the kling worker starts');

my $id = $node->safe_psql($db, q{SELECT kling_submit('crash fox [size:150m]', '{"keep": true}')});
ok(wait_until($node, $db, "SELECT video_key LIKE 'lo:%' FROM kling_tasks WHERE id = $id", 't', 60),
	'the video is being stored, partly');
my $partial = $node->safe_psql($db, "SELECT substr(video_key, 4) FROM kling_tasks WHERE id = $id");
my $worker = worker_pid($node);
kill 'KILL', $worker;
ok(wait_until($node, $db, "SELECT keep_state FROM kling_tasks WHERE id = $id", 'kept', 120),
	'after the crash restart the video is kept');
is($node->safe_psql($db, "SELECT count(*) FROM pg_largeobject_metadata WHERE oid = $partial"), '0',
	'the half-made large object is gone');
is($node->safe_psql($db,
		'SELECT count(*) FROM pg_largeobject_metadata m WHERE NOT EXISTS (SELECT FROM kling_videos v WHERE v.data = m.oid)'),
	'0', 'no large object is left without its row');
my $gid = $node->safe_psql($db, "SELECT generation_id FROM kling_tasks WHERE id = $id");
$gid =~ s/[^A-Za-z0-9_-]/_/g;
is($node->safe_psql($db, "SELECT sha256 FROM kling_videos WHERE task_id = $id"),
	mock_call($url, 'GET', "/__mock/media/$gid")->{sha256}, 'the kept video is whole');
is($node->safe_psql($db, "SELECT count(*) FROM pg_ls_dir('base/pgsql_tmp', true, false) f WHERE f LIKE '%kling%'"),
	'0', 'no temporary file is left');

$node->stop;
done_testing();
