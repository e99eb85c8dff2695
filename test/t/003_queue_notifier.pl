# The queue notifier (src/queue_notify.cpp): enqueue's wakeups are sent after
# commit by a per-database background worker.
#  - a committed enqueue reaches a listener, an aborted one does not;
#  - the worker runs while there is work and leaves when idle, so DROP
#    DATABASE right after an enqueue succeeds;
#  - a notifier killed while a transaction that enqueued is open is replaced
#    at that transaction's commit, and the wakeup still arrives;
#  - PREPARE TRANSACTION after an enqueue fails with 0A000, as after NOTIFY.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $node = PostgreSQL::Test::Cluster->new('notifier');
$node->init;
$node->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'lockext'
max_prepared_transactions = 2
});
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE app');
$node->safe_psql('app', q{
CREATE EXTENSION lockext;
CREATE EXTENSION dblink;
SELECT lockext.create_queue('q');
SELECT lockext.create_queue('other');
});

my $connstr = 'host=' . $node->host . ' port=' . $node->port . ' dbname=app';

# Poll `sql` on database `db` until it returns `want` (10 s at most); true if it did.
sub poll_until
{
	my ($db, $sql, $want) = @_;
	for (1 .. 200)
	{
		return 1 if $node->safe_psql($db, $sql) eq $want;
		usleep(50_000);
	}
	return 0;
}

my $notifiers = q{SELECT count(*) FROM pg_stat_activity
                  WHERE backend_type = 'lockext notifier' AND datname = 'app'};

# A listener (dblink connection 'l') and a writer ('w') in one session, so
# the steps interleave in the order written. Returns what the last statement printed.
sub script
{
	my ($body) = @_;
	return $node->safe_psql('app', qq{
SELECT dblink_connect('l', '$connstr') \\g /dev/null
SELECT dblink_connect('w', '$connstr') \\g /dev/null
SELECT dblink_exec('l', 'LISTEN lockext_queue_q; LISTEN lockext_queue_other') \\g /dev/null
CREATE TEMP TABLE heard (name text);
-- Collect notifications for up to 10 s, stopping at the first poll that has any.
CREATE FUNCTION pg_temp.await() RETURNS text LANGUAGE plpgsql AS \$\$
BEGIN
    FOR i IN 1..1000 LOOP
        INSERT INTO heard SELECT notify_name FROM dblink_get_notify('l');
        IF FOUND THEN
            RETURN (SELECT string_agg(DISTINCT name, ',' ORDER BY name) FROM heard);
        END IF;
        PERFORM pg_sleep(0.01);
    END LOOP;
    RETURN 'nothing';
END \$\$;
$body
});
}

# Committed and aborted enqueues.
is( script(q{
SELECT dblink_exec('w', 'BEGIN') \g /dev/null
SELECT * FROM dblink('w', 'SELECT lockext.enqueue(''q'', ''{}'')') AS t(id bigint) \g /dev/null
SELECT dblink_exec('w', 'ROLLBACK') \g /dev/null
SELECT * FROM dblink('w', 'SELECT lockext.enqueue(''other'', ''{}'')') AS t(id bigint) \g /dev/null
SELECT pg_temp.await();
}),
	'lockext_queue_other',
	'a committed enqueue wakes its listener; the rolled-back one sends nothing');

ok(poll_until('app', $notifiers, '0'), 'the idle notifier leaves');

# Kill the notifier while a transaction that enqueued is open: its commit
# starts a new one, and the wakeup arrives.
is( script(q{
SELECT dblink_exec('w', 'BEGIN') \g /dev/null
SELECT * FROM dblink('w', 'SELECT lockext.enqueue(''q'', ''{}'')') AS t(id bigint) \g /dev/null
SELECT pg_terminate_backend(pid) FROM pg_stat_activity
 WHERE backend_type = 'lockext notifier' AND datname = 'app' \g /dev/null
DO $$ BEGIN
    FOR i IN 1..500 LOOP
        PERFORM pg_stat_clear_snapshot();  -- else read once per transaction
        EXIT WHEN NOT EXISTS (SELECT 1 FROM pg_stat_activity
                              WHERE backend_type = 'lockext notifier' AND datname = 'app');
        PERFORM pg_sleep(0.01);
    END LOOP;
END $$;
SELECT dblink_exec('w', 'COMMIT') \g /dev/null
SELECT pg_temp.await();
}),
	'lockext_queue_q',
	'a notifier killed under an open enqueue is replaced at its commit');

# PREPARE TRANSACTION after an enqueue fails as it does after NOTIFY, and the
# job is gone with the transaction.
my ($rc, $out, $err) = $node->psql('app', q{
\set VERBOSITY verbose
BEGIN;
SELECT lockext.enqueue('q', '{"prepared": true}');
PREPARE TRANSACTION 'p';
});
like($err, qr/0A000: cannot PREPARE a transaction that has enqueued jobs/,
	'PREPARE after enqueue fails with 0A000');
is($node->safe_psql('app', q{SELECT count(*) FROM lockext.queue_q WHERE payload ? 'prepared'}),
	'0', 'the job of the failed PREPARE is not kept');
is($node->safe_psql('app', 'SELECT count(*) FROM pg_prepared_xacts'), '0', 'nothing was prepared');

# DROP DATABASE right after an enqueue: the notifier is still connected, and
# leaves on its own within the 5 s DROP DATABASE waits for other sessions.
$node->safe_psql('app', q{SELECT lockext.enqueue('q', '{}')});
is($node->safe_psql('app', $notifiers), '1', 'a notifier serves the database after an enqueue');
$node->safe_psql('postgres', 'DROP DATABASE app');
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_database WHERE datname = 'app'}),
	'0', 'DROP DATABASE right after an enqueue succeeds');

$node->stop;
done_testing();
