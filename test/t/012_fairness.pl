# test/t/012_fairness.pl: one account, shared fairly
#
# Nobody's bulk starves another's single task, and a refused account holds
# every database.
#
# Within a database, pending tasks are taken in turns across their owners,
# counting what each has in flight; across databases, each waiting
# database may fill an equal share of the account's kling.max_in_flight.
# So a single task submitted behind another role's (or another database's)
# bulk of forty is sent as soon as one place at the provider frees: at most
# kling.max_in_flight of the bulk's creates can come between its submit and
# its own create (those already being claimed).  Oldest-first, it would
# wait behind the whole bulk.

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
my $bulk = 40;
my $url = start_mock();
mock_reset($url, { fixed_seconds => 0.4 });

my $node = new_kling_node('fairness', $url,
	'kling.database_name' => '',
	'kling.max_in_flight' => '2');
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE second');
$node->safe_psql($_, 'CREATE EXTENSION kling') for qw(postgres second);
new_role($node, 'postgres', $_) for qw(bulk_role single_role);

# How many creates the provider got before the one of this prompt, from
# the mock's bodies in arrival order (undef if it got none).
sub creates_before
{
	my ($prompt) = @_;
	my $bodies = mock_call($url, 'GET', '/__mock/bodies');
	for my $i (0 .. $#$bodies)
	{
		return $i if ($bodies->[$i]{prompt} // '') eq $prompt;
	}
	return undef;
}

sub creates_so_far { return scalar @{ mock_call($url, 'GET', '/__mock/bodies') }; }

#
# Two roles in one database.
#
as_role($node, 'postgres', 'bulk_role',
	"SELECT public.kling_submit('bulk ' || i) FROM generate_series(1, $bulk) i");
ok(wait_until($node, 'postgres',
		"SELECT count(*) FROM kling_tasks WHERE status IN ('queued', 'generating')", '2', 20),
	'the bulk fills kling.max_in_flight');
my $before = creates_so_far();
my $single = submit_as($node, 'postgres', 'single_role', 'the single task');
ok(wait_final($node, 'postgres', 120), 'every task ends');
my $at = creates_before('the single task');
ok(defined $at, "the single task was sent");
cmp_ok($at - $before, '<=', 2,
	"another role's single task was sent within kling.max_in_flight creates of its submit"
	  . " (bulk creates between: " . (($at // 0) - $before) . " of $bulk)");
is($node->safe_psql('postgres', "SELECT status FROM kling_tasks WHERE id = $single"),
	'completed', 'and completed');

#
# Two databases: one bulk, one single task.
#
mock_reset($url, { fixed_seconds => 0.4 });
$node->safe_psql('postgres',
	"SELECT kling_submit('db bulk ' || i) FROM generate_series(1, $bulk) i");
ok(wait_until($node, 'postgres',
		"SELECT count(*) FROM kling_tasks WHERE status IN ('queued', 'generating')", '2', 20),
	"one database's bulk fills the account's kling.max_in_flight");
$before = creates_so_far();
$node->safe_psql('second', "SELECT kling_submit('the other database''s task')");
ok(wait_final($node, 'second', 120), "the other database's task ends");
$at = creates_before("the other database's task");
ok(defined $at, "it was sent");
cmp_ok($at - $before, '<=', 2,
	"another database's single task was sent within kling.max_in_flight creates of its submit"
	  . " (bulk creates between: " . (($at // 0) - $before) . " of $bulk)");
ok(wait_final($node, 'postgres', 120), 'the bulk ends too');
cmp_ok(mock_stats($url)->{max_in_flight}, '<=', 2,
	'the two databases together never exceeded kling.max_in_flight');

#
# The provider refuses the account (401): every database holds, not only
# the one whose worker heard it.  A hold lasts kling.poll_interval at first.
#
mock_reset($url, { fixed_seconds => 0.4, api_key => 'rotated-key' });
$node->append_conf('postgresql.conf', "kling.poll_interval = 4s\n");
$node->reload;
usleep(500_000);
my $refused = $node->safe_psql('postgres', "SELECT kling_submit('refused: the account is held')");
ok(wait_until($node, 'postgres',
		"SELECT error LIKE '%refused the API key%' FROM kling_tasks WHERE id = $refused", 't', 10),
	"one database's worker hears the 401 and holds");
my $held = $node->safe_psql('second', "SELECT kling_submit('held in the other database')");
usleep(1_500_000);
is(mock_stats($url)->{create_requests}, 1,
	'the other database sends nothing meanwhile: the hold is the account\'s');
is($node->safe_psql('second', "SELECT status FROM kling_tasks WHERE id = $held"),
	'pending', '... its task waits, pending');
mock_call($url, 'POST', '/__mock/config', { api_key => 'test-key' });
$node->append_conf('postgresql.conf', "kling.poll_interval = 100ms\n");
$node->reload;
ok(wait_final($node, $_, 30), "after the key is accepted again, $_ goes on") for qw(postgres second);

$node->stop('fast');
stop_mock();
note sprintf('012_fairness ran in %.1f s', time - $t0);
done_testing();
