# test/t/014_keep_s3.pl: kept videos uploaded to an S3-compatible bucket
#
# The bucket is test/s3's local server: s3rver behind a SigV4 check of our
# own (s3rver does not check signatures), so a wrongly signed upload fails
# here as it would at S3.
#  1. a kept video is uploaded byte for byte, its object key on the task;
#  2. a wrong secret: the service refuses the upload, the task says why,
#     nothing is stored;
#  3. incomplete settings: nothing is fetched, no attempt is spent, the log
#     says why; once set, the video is kept.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Digest::SHA;
use Time::HiRes qw(usleep);

use FindBin;
use lib $FindBin::RealBin;
use KlingTest;

plan skip_all => 'the local S3 server needs Node.js (the host suite has it)'
  if ($ENV{KLING_S3_SERVER} // 'on') eq 'off';

my $db = 'postgres';
my $url = start_mock();
mock_reset($url, { fixed_seconds => 0.3, video_base => 'self' });

my $s3_dir = PostgreSQL::Test::Utils::tempdir('s3');
my $s3_port = PostgreSQL::Test::Cluster::get_free_port();
my $s3_url = "http://127.0.0.1:$s3_port";
my ($out, $err) = ('', '');
IPC::Run::run([ "$FindBin::RealBin/../s3/start", $s3_dir, $s3_port ],
	'<', \undef, '>', \$out, '2>', \$err)
  or BAIL_OUT("the S3 server did not start: $err");
chomp(my $s3_pid = $out);
END { kill 'TERM', $s3_pid if $s3_pid; }

my $node = new_kling_node(
	'keep_s3', $url,
	'kling.storage' => 's3',
	'kling.s3_endpoint' => $s3_url,
	'kling.s3_bucket' => 'kling',
	'kling.s3_access_key' => 'S3RVER',
	'kling.s3_secret_key' => 'S3RVER',
	'kling.download_allow_private' => 'on');
$node->start;
$node->safe_psql($db, 'CREATE EXTENSION kling');
ok(defined wait_worker($node, 30), 'the kling worker starts');

# An object of the bucket, read back with a signed GET: (HTTP status, SHA-256).
sub s3_get
{
	my ($key) = @_;
	my $file = "$s3_dir/got";
	unlink $file;
	my ($status, $e) = ('', '');
	IPC::Run::run(
		[
			'curl', '-sS', '-o', $file, '-w', '%{http_code}',
			'--aws-sigv4', 'aws:amz:us-east-1:s3', '--user', 'S3RVER:S3RVER',
			# curl 7.88 does not add it; the empty payload's hash
			'-H', 'x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
			"$s3_url/kling/$key"
		],
		'<', \undef, '>', \$status, '2>', \$e);
	my $sha = -f $file ? Digest::SHA->new(256)->addfile($file)->hexdigest : '';
	return ($status, $sha);
}

sub media_sha
{
	my ($id) = @_;
	my $gid = $node->safe_psql($db, "SELECT generation_id FROM kling_tasks WHERE id = $id");
	$gid =~ s/[^A-Za-z0-9_-]/_/g;
	return mock_call($url, 'GET', "/__mock/media/$gid")->{sha256};
}

# 1. Uploaded byte for byte.
my $kept = $node->safe_psql($db, q{SELECT kling_submit('fox for the bucket [size:300k]', '{"keep": true}')});
ok(wait_until($node, $db, "SELECT keep_state FROM kling_tasks WHERE id = $kept", 'kept', 30),
	'a kept video is uploaded');
my $key = $node->safe_psql($db, "SELECT video_key FROM kling_tasks WHERE id = $kept");
like($key, qr{^kling/\d+/$kept\.mp4$}, 'its object key is on the task');
my ($status, $sha) = s3_get($key);
is($status, '200', 'the object is in the bucket');
is($sha, media_sha($kept), 'byte for byte (SHA-256)');
is($node->safe_psql($db, "SELECT count(*) FROM kling_videos"), '0',
	'nothing is stored in the database');

# A text column named for the kept video gets its object key.
$node->safe_psql($db, q{
	CREATE TABLE clips (id serial, prompt text, task_id bigint, video_url text, video_key text);
	CREATE TRIGGER clip BEFORE INSERT ON clips FOR EACH ROW
	    EXECUTE FUNCTION kling_on_insert('prompt', 'task_id', 'video_url', '{"keep": true}', '', 'error', '', 'video_key');
	INSERT INTO clips (prompt) VALUES ('clip for the bucket');
});
my $clip = $node->safe_psql($db, 'SELECT task_id FROM clips');
ok(wait_until($node, $db, 'SELECT video_key IS NOT NULL FROM clips', 't', 30),
	'kling_on_insert writes the object key into the row');
is($node->safe_psql($db, 'SELECT video_key FROM clips'),
	$node->safe_psql($db, "SELECT video_key FROM kling_tasks WHERE id = $clip"), 'the task\'s key');

# 2. A wrong secret: refused by the service, not stored, said on the task.
$node->safe_psql($db, "ALTER SYSTEM SET kling.s3_secret_key = 'not-the-secret'");
$node->reload;
sleep 1;
my $wrong = $node->safe_psql($db, q{SELECT kling_submit('fox signed wrongly', '{"keep": true}')});
ok(wait_until($node, $db, "SELECT keep_state FROM kling_tasks WHERE id = $wrong", 'failed', 30),
	'an upload signed with a wrong secret is not kept');
like($node->safe_psql($db, "SELECT delivery_error FROM kling_tasks WHERE id = $wrong"),
	qr/refused the upload \(HTTP 403\)/, 'the task says the service refused it');
my ($db_oid) = $key =~ m{^kling/(\d+)/};
($status) = s3_get("kling/$db_oid/$wrong.mp4");
is($status, '404', 'and nothing is in the bucket');
is($node->safe_psql($db, "SELECT status FROM kling_tasks WHERE id = $wrong"), 'completed',
	'the task itself is completed');

# 3. No bucket: nothing fetched, no attempt spent, the log says why.
$node->safe_psql($db, "ALTER SYSTEM SET kling.s3_secret_key = 'S3RVER'");
$node->safe_psql($db, "ALTER SYSTEM SET kling.s3_bucket = ''");
my $offset = -s $node->logfile;
$node->reload;
sleep 1;
my $waiting = $node->safe_psql($db, q{SELECT kling_submit('fox waiting for a bucket', '{"keep": true}')});
ok(wait_final($node, $db, 30), 'the task completes');
ok(wait_log($node, qr/videos are not kept for now: kling.storage is s3 but kling.s3_bucket is not set/, $offset, 30),
	'the log says why videos are not kept');
sleep 2;
is($node->safe_psql($db, "SELECT keep_state || ' ' || keep_attempts FROM kling_tasks WHERE id = $waiting"),
	'waiting 0', 'the video waits, no attempt spent');
$node->safe_psql($db, "ALTER SYSTEM RESET kling.s3_bucket");
$node->safe_psql($db, "ALTER SYSTEM SET kling.s3_bucket = 'kling'");
$node->reload;
ok(wait_until($node, $db, "SELECT keep_state FROM kling_tasks WHERE id = $waiting", 'kept', 30),
	'once the bucket is set, it is kept');

# 4. kling.retention deletes the objects with their tasks.
$node->safe_psql($db, "ALTER SYSTEM SET kling.retention = '1s'");
$node->reload;
ok(wait_until($node, $db, "SELECT count(*) FROM kling_tasks WHERE id = $kept", '0', 30),
	'retention deletes the task');
my $gone = 0;
for (1 .. 50)
{
	($status) = s3_get($key);
	$gone = 1, last if $status eq '404';
	usleep(100_000);
}
ok($gone, 'and its object in the bucket');

$node->stop;
done_testing();
