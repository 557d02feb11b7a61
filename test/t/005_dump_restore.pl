# test/t/005_dump_restore.pl: pg_dump and pg_restore keep the history
#
# kling_tasks and its id sequence are marked with pg_extension_config_dump,
# so a dump carries every task and the sequence position; restored into a
# new database, the history is whole and new ids continue after the old.
# Kept videos (kling_videos and their large objects) come back byte for byte.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib $FindBin::RealBin;
use KlingTest;

my $url = start_mock();
mock_reset($url, { fixed_seconds => 0.2, video_base => 'self' });
my $node = new_kling_node('dump', $url, 'kling.database_name' => 'videos',
	'kling.download_allow_private' => 'on');
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE videos');
$node->safe_psql('videos', 'CREATE EXTENSION kling');
ok(defined wait_worker($node, 30), 'the worker serves the database');
$node->safe_psql('videos',
	"SELECT kling_submit('dumped ' || i, jsonb_build_object('context', i)) FROM generate_series(1, 5) i");
ok(wait_final($node, 'videos', 30), 'the tasks are final');
$node->safe_psql('videos', "SELECT kling_submit('one more')");
my $kept = $node->safe_psql('videos', q{SELECT kling_submit('kept [size:2m]', '{"keep": true}')});
ok(wait_until($node, 'videos', "SELECT keep_state FROM kling_tasks WHERE id = $kept", 'kept', 30),
	'a video is kept');
my $video = "SELECT task_id, owner, content_type, size, sha256, encode(sha256(kling_video(task_id)), 'hex')"
  . ' FROM kling_videos ORDER BY task_id';
my $videos_before = $node->safe_psql('videos', $video);

my $snapshot = 'SELECT id, owner, prompt, opts, generation_id, video_url, result, error,'
  . ' created_at, completed_at FROM kling_tasks ORDER BY id';
ok(wait_final($node, 'videos', 30), 'every task is final before the dump');
my $before = $node->safe_psql('videos', $snapshot);
my $max_id = $node->safe_psql('videos', 'SELECT max(id) FROM kling_tasks');

my $dump = $node->basedir . '/videos.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-d', $node->connstr('videos'), '-f', $dump ],
	'pg_dump of the database');
$node->safe_psql('postgres', 'CREATE DATABASE restored');
$node->command_ok([ 'pg_restore', '-d', $node->connstr('restored'), $dump ],
	'pg_restore into a new database');

is($node->safe_psql('restored', $snapshot), $before, 'every task came back as it was');
is($node->safe_psql('restored', 'SELECT count(*) FROM kling_tasks'), '7', 'all seven tasks');
is($node->safe_psql('restored', $video), $videos_before,
	'the kept video came back, byte for byte');
cmp_ok($node->safe_psql('restored', "SELECT kling_submit('after restore')"),
	'>', $max_id, 'new ids continue after the restored ones');
is($node->safe_psql('restored', "SELECT extversion FROM pg_extension WHERE extname = 'kling'"),
	'0.5', 'the extension is restored at its version');

$node->stop;
done_testing();
