# test/t/007_attacks_sql.pl: a role granted kling's functions cannot run
# its code with the table owner's or the worker's rights
#
# Every attack runs as a non-superuser LOGIN role with only the README's
# grants (EXECUTE on kling_submit, kling_status, kling_cancel, kling_wait,
# SELECT on kling_tasks, EXECUTE on kling_on_insert where a trigger is used)
# and a schema of its own.  Its malicious code (functions, operators,
# triggers) writes current_user into the role's marker table rN.fired, then
# tries ALTER ROLE rN SUPERUSER (an error there is swallowed, so the marker
# tells who ran it).  The role must not be a superuser afterwards, and the
# marker must be empty (or hold no row written with a superuser's rights).
#
#  1. the queries kling_submit/status/cancel/wait run as the table's owner
#     (the spend-limit counts too) ignore the caller's search_path;
#  2. callbacks and write-backs run as the task's owner, restricted: no
#     deferred trigger fires later with the worker's rights, a search_path
#     set by a callback does not stay in the worker, kling.delivery_timeout
#     stops a callback that sleeps, failures land in delivery_error and the
#     worker goes on;
#  3. the worker's own search_path is pinned: neither CREATE on public nor
#     ALTER DATABASE ... SET search_path by the database's owner reaches it.
# Numbers follow the attack list: 4, 7 and 8b-d are in 008_attacks_worker.pl,
# 5, 6 and 8a in 007_attacks_limits.pl.

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
my $url = start_mock();
mock_reset($url, { fixed_seconds => 1 });
my $node = new_attack_node('attacks_sql', $url);
my $su = $node->safe_psql($db, 'SELECT current_user');

# ---- helpers ----

sub run_as
{
	my ($role, $sql) = @_;
	my ($ret, $out, $err) = as_role($node, $db, $role, $sql);
	die "as $role: $err" if $ret;
	return $out;
}

# A role with the README's grants, its marker table, and rN.evil(), which
# every piece of its malicious code calls.
sub attacker
{
	my ($role, %opt) = @_;
	new_role($node, $db, $role, %opt);
	run_as($role, <<~"SQL");
	    CREATE TABLE $role.fired (who name, at timestamptz DEFAULT pg_catalog.clock_timestamp());
	    GRANT USAGE ON SCHEMA $role TO PUBLIC;
	    GRANT INSERT ON $role.fired TO PUBLIC;
	    CREATE FUNCTION $role.evil() RETURNS void LANGUAGE plpgsql AS \$\$
	    BEGIN
	        INSERT INTO $role.fired (who) VALUES (current_user);
	        BEGIN
	            EXECUTE 'ALTER ROLE $role SUPERUSER';
	        EXCEPTION WHEN OTHERS THEN NULL;
	        END;
	    END \$\$;
	    SQL
	return;
}

# Malicious look-alikes of built-in functions and operators: each calls the
# role's evil() and then does what the real one does.
my %EVIL = (
	now => q{CREATE FUNCTION @S.now() RETURNS timestamptz LANGUAGE plpgsql
		AS $$BEGIN PERFORM @R.evil(); RETURN pg_catalog.now(); END$$;},
	date_trunc => q{CREATE FUNCTION @S.date_trunc(text, timestamptz) RETURNS timestamptz
		LANGUAGE plpgsql AS $$BEGIN PERFORM @R.evil(); RETURN pg_catalog.date_trunc($1, $2); END$$;
		CREATE FUNCTION @S.date_trunc(text, timestamptz, text) RETURNS timestamptz
		LANGUAGE plpgsql AS $$BEGIN PERFORM @R.evil(); RETURN pg_catalog.date_trunc($1, $2, $3); END$$;},
	eq_name => q{CREATE FUNCTION @S.evil_eq(name, name) RETURNS boolean LANGUAGE plpgsql
		AS $$BEGIN PERFORM @R.evil(); RETURN $1 OPERATOR(pg_catalog.=) $2; END$$;
		CREATE OPERATOR @S.= (LEFTARG = name, RIGHTARG = name, FUNCTION = @S.evil_eq);},
	ge_tstz => q{CREATE FUNCTION @S.evil_ge(timestamptz, timestamptz) RETURNS boolean LANGUAGE plpgsql
		AS $$BEGIN PERFORM @R.evil(); RETURN $1 OPERATOR(pg_catalog.>=) $2; END$$;
		CREATE OPERATOR @S.>= (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = @S.evil_ge);},
	mul => q{CREATE FUNCTION @S.evil_mul(integer, interval) RETURNS interval LANGUAGE plpgsql
		AS $$BEGIN PERFORM @R.evil(); RETURN $2 OPERATOR(pg_catalog.*) $1::pg_catalog.float8; END$$;
		CREATE OPERATOR @S.* (LEFTARG = integer, RIGHTARG = interval, FUNCTION = @S.evil_mul);},
	plus => q{CREATE FUNCTION @S.evil_plus(timestamptz, interval) RETURNS timestamptz LANGUAGE plpgsql
		AS $$BEGIN PERFORM @R.evil(); RETURN $1 OPERATOR(pg_catalog.+) $2; END$$;
		CREATE OPERATOR @S.+ (LEFTARG = timestamptz, RIGHTARG = interval, FUNCTION = @S.evil_plus);},
	minus => q{CREATE FUNCTION @S.evil_minus(timestamptz, interval) RETURNS timestamptz LANGUAGE plpgsql
		AS $$BEGIN PERFORM @R.evil(); RETURN $1 OPERATOR(pg_catalog.-) $2; END$$;
		CREATE OPERATOR @S.- (LEFTARG = timestamptz, RIGHTARG = interval, FUNCTION = @S.evil_minus);});

# Role $role creates the named look-alikes in schema $schema.
sub plant
{
	my ($role, $schema, @kinds) = @_;
	my $sql = join "\n", map { $EVIL{$_} } @kinds;
	$sql =~ s/\@S/$schema/g;
	$sql =~ s/\@R/$role/g;
	run_as($role, $sql);
	return;
}

sub q1 { return $node->safe_psql($db, $_[0]); }
sub submit { return submit_as($node, $db, @_); }
sub wait_tasks { return wait_status($node, $db, @_); }

sub field
{
	my ($id, $column) = @_;
	return '' unless defined $id;
	return q1("SELECT coalesce(${column}::text, '') FROM public.kling_tasks WHERE id = $id");
}

# The role is no superuser, and its marker is empty ($how 'empty') or has
# no row written by a superuser ($how 'no superuser').
sub not_escalated
{
	my ($label, $role, $how) = @_;
	is(q1("SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = '$role'"),
		'f', "$label: $role did not become a superuser");
	my $who = q1("SELECT coalesce(string_agg(DISTINCT who::text, ', '), '') FROM $role.fired");
	if ($how eq 'empty')
	{
		is(q1("SELECT count(*) FROM $role.fired"), '0',
			"$label: the malicious code never ran")
		  or diag "it ran as: $who";
	}
	else
	{
		is( q1( "SELECT count(*) FROM $role.fired WHERE who IN"
				  . " (SELECT rolname FROM pg_catalog.pg_roles WHERE rolsuper AND rolname <> '$role')"),
			'0',
			"$label: the malicious code never ran with a superuser's rights"
		) or diag "it ran as: $who";
	}
	# Undo what an attack that worked did, so that it spoils no other.
	q1("ALTER ROLE $role NOSUPERUSER");
	return;
}

# Wait until a task's column matches a POSIX regular expression.
sub wait_field
{
	my ($id, $column, $re, $timeout) = @_;
	return 0 unless defined $id;
	return 1
	  if wait_until($node, $db,
		"SELECT coalesce(${column}::text, '') ~ '$re' FROM public.kling_tasks WHERE id = $id",
		't', $timeout);
	diag "$column of task $id is [" . field($id, $column) . ']';
	return 0;
}

# Tasks of the bystander, with a callback: once they are complete and
# their callbacks have run, the worker and whatever process delivers have
# run every kind of query since the attack.
sub bystanders
{
	my ($label, $before) = @_;
	my @ids = map {
		submit('rb', "$label: a task of the bystander $_", '{"callback": "rb.cb(kling_tasks)"}', $before)
	} 1 .. 3;
	ok( wait_tasks(\@ids, 'completed', 30) && wait_until(
			$node, $db,
			'SELECT count(*) FROM rb.called WHERE id IN (' . join(', ', @ids) . ')',
			'3', 30),
		"$label: other tasks complete and their callbacks run");
	return;
}

# Restart the worker (and the process that delivers, if there is one).
sub restart_worker
{
	my ($label) = @_;
	my $old = worker_pid($node);
	q1("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
		  . " WHERE backend_type LIKE 'kling %' AND backend_type <> 'kling launcher'");
	my $new = wait_worker($node, 30, $old);
	ok(defined $new, "$label: the worker is restarted");
	return $new;
}

# The status the mock gives the task of a prompt, or ''.
sub mock_status
{
	my ($prompt) = @_;
	for my $t (@{ mock_call($url, 'GET', '/__mock/tasks') })
	{
		return $t->{status} if $t->{prompt} eq $prompt;
	}
	return '';
}

sub wait_mock_status
{
	my ($prompt, $status, $timeout) = @_;
	my $deadline = time() + $timeout;
	while (time() < $deadline)
	{
		return 1 if mock_status($prompt) eq $status;
		usleep(100_000);
	}
	return 0;
}

# A bystander whose tasks must go on, with a harmless callback.
new_role($node, $db, 'rb');
run_as('rb', <<~'SQL');
    CREATE TABLE rb.called (id bigint);
    CREATE FUNCTION rb.cb(t public.kling_tasks) RETURNS void LANGUAGE plpgsql
        AS $$BEGIN INSERT INTO rb.called VALUES (t.id); END$$;
    SQL

# ---- 1. the owner's queries ignore the caller's search_path ----

attack('1', sub {
	attacker('r1');
	plant('r1', 'r1', qw(now date_trunc eq_name ge_tstz));
	my ($ret, $out, $err) = as_role($node, $db, 'r1', <<~'SQL');
	    SET search_path = r1, pg_catalog;
	    SELECT public.kling_submit('1: hostile search_path') AS id \gset
	    SELECT (public.kling_status(:id)).status;
	    SELECT (public.kling_wait(:id, '10 ms')).status;
	    SELECT public.kling_cancel(:id);
	    SQL
	is($ret, 0, '1: submit, status, wait and cancel work under a hostile search_path')
	  or diag $err;
	not_escalated('1', 'r1', 'empty');
});

# ---- 2. user code runs as its owner, restricted and time-limited ----

my $pid = worker_pid($node);

attack('2a', sub {
	attacker('r2');
	run_as('r2', <<~'SQL');
	    CREATE TABLE r2.t (task_id bigint);
	    CREATE FUNCTION r2.trig() RETURNS trigger LANGUAGE plpgsql
	        AS $$BEGIN PERFORM r2.evil(); RETURN NULL; END$$;
	    CREATE CONSTRAINT TRIGGER t_later AFTER INSERT ON r2.t
	        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION r2.trig();
	    CREATE FUNCTION r2.cb(t public.kling_tasks) RETURNS void LANGUAGE plpgsql
	        AS $$BEGIN INSERT INTO r2.t VALUES (t.id); END$$;
	    SQL
	my $id = submit('r2', '2a: deferred trigger', '{"callback": "r2.cb(kling_tasks)"}');
	ok(wait_tasks([$id], 'completed', 30), '2a: the task completes');
	ok(wait_field($id, 'delivery_error', 'deferred trigger', 15),
		'2a: the deferred trigger is refused, and that is recorded');
	not_escalated('2a', 'r2', 'empty');
});

attack('2b', sub {
	attacker('r3');
	plant('r3', 'r3', qw(now mul plus minus));
	run_as('r3', <<~'SQL');
	    CREATE TABLE r3.called (id bigint);
	    CREATE FUNCTION r3.cb(t public.kling_tasks) RETURNS void LANGUAGE plpgsql AS $$
	    BEGIN
	        INSERT INTO r3.called VALUES (t.id);
	        PERFORM pg_catalog.set_config('search_path', 'r3, pg_catalog', false);
	    END $$;
	    SQL
	my $id = submit('r3', '2b: search_path left behind', '{"callback": "r3.cb(kling_tasks)"}');
	ok(wait_tasks([$id], 'completed', 30), '2b: the task completes');
	ok(wait_until($node, $db, 'SELECT count(*) FROM r3.called', '1', 15),
		'2b: its callback has run');
	bystanders('2b');
	not_escalated('2b', 'r3', 'empty');
	is(worker_pid($node), $pid, '2b: the worker is the same process');
	q1('DROP SCHEMA r3 CASCADE');
});

attack('2c', sub {
	attacker('r2b', trigger => 1);
	run_as('r2b', <<~'SQL');
	    CREATE TABLE r2b.scenes (id serial, prompt text, task_id bigint, video_url text);
	    CREATE TRIGGER scenes_video BEFORE INSERT ON r2b.scenes FOR EACH ROW
	        EXECUTE FUNCTION public.kling_on_insert('prompt', 'task_id', 'video_url');
	    CREATE FUNCTION r2b.trig() RETURNS trigger LANGUAGE plpgsql
	        AS $$BEGIN PERFORM r2b.evil(); RETURN NULL; END$$;
	    CREATE CONSTRAINT TRIGGER scenes_later AFTER UPDATE ON r2b.scenes
	        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION r2b.trig();
	    INSERT INTO r2b.scenes (prompt) VALUES ('2c: deferred trigger on the write-back');
	    SQL
	my $id = q1('SELECT task_id FROM r2b.scenes');
	ok(wait_tasks([$id], 'completed', 30), '2c: the task completes');
	ok(wait_field($id, 'delivery_error', 'deferred trigger', 15),
		'2c: the deferred trigger is refused, and that is recorded');
	not_escalated('2c', 'r2b', 'no superuser');
});

attack('2d', sub {
	new_role($node, $db, 'r2d');
	run_as('r2d', <<~'SQL');
	    CREATE FUNCTION r2d.cb(t public.kling_tasks) RETURNS void LANGUAGE plpgsql
	        AS $$BEGIN PERFORM pg_catalog.pg_sleep(20); END$$;
	    SQL
	my $prompt = '2d: a callback that sleeps';
	my $slow = submit('r2d', $prompt, '{"callback": "r2d.cb(kling_tasks)"}');
	# Once the provider has finished it, its callback is about to run.
	ok(wait_mock_status($prompt, 'completed', 20), '2d: the provider has finished the task');
	usleep(500_000);
	my $other = submit('rb', '2d: submitted while the callback runs');
	ok(wait_tasks([$other], 'completed', 15), '2d: another role\'s task completes meanwhile');
	ok(wait_tasks([$slow], 'completed', 30), '2d: the task itself completes');
	ok(wait_field($slow, 'delivery_error', 'kling\.delivery_timeout', 30),
		'2d: the callback is stopped at kling.delivery_timeout, and that is recorded');
	is(worker_pid($node), $pid, '2d: the worker is the same process');
});

attack('2e', sub {
	new_role($node, $db, 'r2e');
	run_as('r2e', <<~'SQL');
	    CREATE FUNCTION r2e.boom(t public.kling_tasks) RETURNS void LANGUAGE plpgsql
	        AS $$BEGIN RAISE EXCEPTION 'callback fails on purpose'; END$$;
	    CREATE FUNCTION r2e.gone(t public.kling_tasks) RETURNS void LANGUAGE plpgsql
	        AS $$BEGIN NULL; END$$;
	    SQL
	my $boom = submit('r2e', '2e: a failing callback', '{"callback": "r2e.boom(kling_tasks)"}');
	my $gone = run_as('r2e', <<~'SQL');
	    SELECT public.kling_submit('2e: a dropped callback', '{"callback": "r2e.gone(kling_tasks)"}');
	    DROP FUNCTION r2e.gone(public.kling_tasks);
	    SQL
	my $other = submit('rb', '2e: another role');
	ok(wait_tasks([ $boom, $gone, $other ], 'completed', 30),
		'2e: the tasks complete, the other role\'s too');
	ok(wait_field($boom, 'delivery_error', 'callback fails on purpose', 15),
		'2e: a failing callback is recorded');
	ok(wait_field($gone, 'delivery_error', '.', 15), '2e: a dropped callback is recorded');
	is(worker_pid($node), $pid, '2e: the worker is the same process');
});

# ---- 3. the worker's search_path is pinned ----

attack('3a', sub {
	attacker('r5');
	q1('GRANT CREATE ON SCHEMA public TO r5');    # as before PostgreSQL 15
	plant('r5', 'public', qw(mul now plus));
	restart_worker('3a');
	bystanders('3a');
	not_escalated('3a', 'r5', 'empty');
	q1('REVOKE CREATE ON SCHEMA public FROM r5; DROP OWNED BY r5');
});

attack('3b', sub {
	attacker('r6');
	plant('r6', 'r6', qw(now mul plus minus));
	q1("ALTER DATABASE $db OWNER TO r6");
	my $ok = eval {
		run_as('r6', "ALTER DATABASE $db SET search_path = r6, pg_catalog");
		restart_worker('3b');
		# The submitting session sets its own search_path: only the worker's
		# queries are under test here.
		bystanders('3b', "SET search_path = pg_catalog, public;\n");
		1;
	};
	my $error = $@;
	$node->psql($db, "ALTER DATABASE $db RESET search_path");
	$node->psql($db, "ALTER DATABASE $db OWNER TO \"$su\"");
	die $error unless $ok;
	not_escalated('3b', 'r6', 'empty');
	q1('DROP OWNED BY r6');
	restart_worker('3b, clean-up');
});

$node->stop;
done_testing();
