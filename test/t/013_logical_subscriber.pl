# test/t/013_logical_subscriber.pl: a subscriber never sends the publisher's tasks
#
# kling_tasks published by one server and subscribed to by another (both
# with kling): the rows the subscriber receives are the publisher's tasks.
# Its worker must send none of them (the provider would bill twice): it
# finds the table in pg_subscription_rel, stops in that database and says
# so, and the claim refuses such rows meanwhile.  Without that, the pending
# rows copied before the publisher's worker sends them would go out twice.

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
my $db = 'postgres';
my $url = start_mock();
mock_reset($url, { fixed_seconds => 0.5 });

# The publisher holds its tasks pending (no key yet) while they are copied.
my $publisher = new_kling_node('publisher', $url, 'wal_level' => 'logical',
	'max_wal_senders' => '4', 'max_replication_slots' => '4',
	'kling.api_key' => '');
my $subscriber = new_kling_node('subscriber', $url);
$_->start for $publisher, $subscriber;
$_->safe_psql($db, 'CREATE EXTENSION kling') for $publisher, $subscriber;
ok(defined wait_worker($subscriber, 30), 'the subscriber serves its database');

my @ids = map { $publisher->safe_psql($db, "SELECT kling_submit('published $_')") } 1 .. 3;
$publisher->safe_psql($db, 'CREATE PUBLICATION tasks FOR TABLE kling_tasks');
usleep(1_200_000);    # the worker looks at most once a second
(my $connstr = $publisher->connstr($db)) =~ s/'/''/g;
$subscriber->safe_psql($db,
	"CREATE SUBSCRIPTION tasks CONNECTION '$connstr' PUBLICATION tasks");
ok(wait_until($subscriber, $db,
		"SELECT count(*) FROM kling_tasks WHERE status = 'pending'", '3', 30),
	'the subscriber has the publisher\'s three pending tasks');
ok(wait_log($subscriber, qr/kling worker stopped: kling_tasks here is a logical replication subscriber's copy/, 0, 30),
	'its worker stops in that database, saying why');

# A reload makes a worker run a round: one still serving the subscriber's
# database would send the pending rows now.
$subscriber->reload;
usleep(1_000_000);

# Now the publisher sends them.
$publisher->append_conf('postgresql.conf', "kling.api_key = 'test-key'\n");
$publisher->reload;
ok(wait_final($publisher, $db, 30), 'the publisher\'s tasks are final');
ok(wait_until($subscriber, $db,
		"SELECT count(*) FROM kling_tasks WHERE status = 'completed'", '3', 30),
	'the subscriber sees them completed, by replication');
is(mock_created($url, "published $_"), 1, "published $_ was created once") for 1 .. 3;
is(mock_stats($url)->{create_requests}, 3, 'the provider got three creates in all');
usleep(6_000_000);    # longer than the launcher's pause before a restart
ok(!defined worker_pid($subscriber), 'no worker was started again on the subscriber');

$subscriber->stop('fast');
$publisher->stop('fast');
stop_mock();
note sprintf('013_logical_subscriber ran in %.1f s', time - $t0);
done_testing();
