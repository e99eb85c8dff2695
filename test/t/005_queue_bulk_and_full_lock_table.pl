# Bulk transactions and a full lock table (src/queue_ops.cpp). Enqueue and
# complete take no locks per key, so one transaction can enqueue or finish
# thousands of distinct keys on a server with a tiny lock table without
# holding anything others wait for. Running jobs hold leases in lockext's
# lock table: when lockext.max_locks is full, dequeue fails with 53400 and a
# clear message, and no job is lost (the failed call gives back what it took).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use LockextTap;

# A PostgreSQL lock table of a few hundred entries, and 64 lease slots.
my $node = lockext_node('bulk',
	"max_locks_per_transaction = 10\nmax_connections = 10\nlockext.max_locks = 64\n",
	q{SELECT lockext.create_queue('q'); SELECT lockext.create_queue('other');});

my ($rc, $out, $err) = $node->psql('postgres', q{
BEGIN;
SELECT count(lockext.enqueue('q', jsonb_build_object('n', g), 'k' || g))
  FROM generate_series(1, 5000) g;
SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid();
COMMIT;
});
is($rc, 0, 'one transaction enqueues 5000 distinct keys, one call each') or diag($err);
is($out, "5000\n0", 'every job was enqueued, and no advisory lock was taken');

# A bulk enqueue holds up nobody: keyed enqueues of the same keys go on.
my $bulk = $node->background_psql('postgres');
$bulk->query_safe('BEGIN');
$bulk->query_safe(q{
SELECT count(*) FROM lockext.enqueue_batch('q',
    ARRAY(SELECT jsonb_build_object('n', g) FROM generate_series(1, 5000) g),
    ARRAY(SELECT 'b' || g FROM generate_series(1, 5000) g))});
($rc, $out, $err) = $node->psql('postgres', q{
SET lock_timeout = '300ms';
SELECT lockext.enqueue('q', '{"n": "b1 again"}', 'b1') > 0, lockext.enqueue('other', '{}', 'b1') > 0});
is($out, 't|t', 'keyed enqueues are not held up by an open bulk enqueue') or diag($err);
$bulk->query_safe('COMMIT');
$bulk->quit;
is($node->safe_psql('postgres', q{SELECT ready FROM lockext.queue_stats WHERE queue = 'q'}),
	'10001', 'all 10,001 jobs are ready');

# More running jobs than lease slots: 53400, and nothing taken or lost.
($rc, $out, $err) = $node->psql('postgres', q{
\set VERBOSITY verbose
SELECT count(*) FROM lockext.dequeue('q', 200)});
like($err, qr/ERROR:\s+53400: lockext lock table is full \(64 slots\)/,
	'a dequeue past lockext.max_locks fails with 53400');
like($err, qr/DETAIL:\s+Every running job holds a lease/, 'and says why');
like($err, qr/HINT:.*lockext\.max_locks/, 'and names the setting');
is( $node->safe_psql('postgres', q{
SELECT ready, running FROM lockext.queue_stats WHERE queue = 'q';
SELECT count(*) FROM lockext.holders}),
	"10001|0\n0",
	'no job was lost and no lease was left behind');

# What fits runs; once the table is full, the next dequeue fails the same
# way; finishing the running jobs frees their slots.
($rc, $out, $err) = $node->psql('postgres', q{
CREATE TABLE taken AS SELECT id, token FROM lockext.dequeue('q', 60, '5 minutes');
SELECT count(*) FROM taken;
});
is($out, '60', '60 jobs run at once') or diag($err);
($rc, $out, $err) = $node->psql('postgres', q{SELECT count(*) FROM lockext.dequeue('q', 10)});
like($err, qr/lock table is full/, 'a full lease table refuses the next dequeue');
is( $node->safe_psql('postgres', q{
SELECT lockext.complete('q', array_agg(id), array_agg(token)) FROM taken;
SELECT count(*) FROM lockext.dequeue('q', 10);
SELECT ready + running FROM lockext.queue_stats WHERE queue = 'q'}),
	"60\n10\n9941",
	'completing them frees the slots, and nothing else went missing');

# A job taken and finished in one transaction keeps its slot until that
# transaction ends (a rollback would give it back): taking more than
# lockext.max_locks jobs in one transaction fails, and the rollback loses
# nothing.
($rc, $out, $err) = $node->psql('postgres', q{
BEGIN;
SELECT lockext.complete('q', array_agg(id), array_agg(token)) FROM lockext.dequeue('q', 40);
SELECT lockext.complete('q', array_agg(id), array_agg(token)) FROM lockext.dequeue('q', 40);
COMMIT;
});
like($err, qr/lock table is full/, 'a transaction cannot take more jobs than lockext.max_locks');
is( $node->safe_psql('postgres', q{
SELECT ready, running FROM lockext.queue_stats WHERE queue = 'q';
SELECT count(*) FROM lockext.holders}),
	"9931|10\n10",
	'its rollback gave back the jobs it had finished');

$node->stop;
done_testing();
