# Key locks stay bounded (src/queue_ops.cpp, the per-key locking protocol):
# past its budget a transaction locks the whole queue instead of more keys,
# so one that touches thousands of keys cannot fill the server's lock table
# (53200 "out of shared memory") on a server with a small one, while the
# queue lock still keeps other writers of the queue's keys out. Covered:
# thousands of enqueue() calls with distinct keys in one transaction,
# enqueue_batch, a batch complete and redrive of thousands of distinct keys;
# and per-key order afterwards.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use LockextTap;

# A lock table of max_locks_per_transaction x backends: a few hundred entries.
my $node = lockext_node('escalation', "max_locks_per_transaction = 10\nmax_connections = 10\n",
	q{SELECT lockext.create_queue('q')});

# Locks of this transaction: key locks, and the queue lock's mode.
my $locks = q{
SELECT count(*) FILTER (WHERE objsubid = 19537),
       coalesce(string_agg(mode, ',') FILTER (WHERE objsubid = 19538), '-')
  FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()};

my ($rc, $out, $err) = $node->psql('postgres', qq{
BEGIN;
SELECT count(lockext.enqueue('q', jsonb_build_object('n', g), 'k' || g))
  FROM generate_series(1, 5000) g;
$locks;
COMMIT;
});
is($rc, 0, 'one transaction enqueues 5000 distinct keys, one call each') or diag($err);
my ($jobs, $held) = split /\n/, $out;
is($jobs, 5000, 'every job was enqueued');
my ($keys, $mode) = split /\|/, $held;
cmp_ok($keys, '<=', 64, "it held $keys key locks, within the budget");
is($mode, 'ShareLock,ExclusiveLock', 'and then the queue lock, exclusively');

# While a bulk transaction holds the queue lock, no other transaction
# changes a key's line in that queue; unkeyed jobs and other queues go on.
$node->safe_psql('postgres', q{SELECT lockext.create_queue('other')});
my $bulk = $node->background_psql('postgres');
$bulk->query_safe('BEGIN');
$bulk->query_safe(q{
SELECT count(*) FROM lockext.enqueue_batch('q',
    ARRAY(SELECT jsonb_build_object('n', g) FROM generate_series(1, 5000) g),
    ARRAY(SELECT 'b' || g FROM generate_series(1, 5000) g))});
($rc, $out, $err) = $node->psql('postgres', q{
SET lock_timeout = '300ms';
SELECT lockext.enqueue('q', '{"n": "blocked"}', 'fresh-key')});
like($err, qr/lock timeout/, 'a keyed enqueue into the queue waits for the bulk transaction');
($rc, $out, $err) = $node->psql('postgres', q{
SET lock_timeout = '300ms';
SELECT lockext.enqueue('q', '{"n": "unkeyed"}') > 0, lockext.enqueue('other', '{}', 'b1') > 0});
is($out, 't|t', 'unkeyed jobs and other queues are not held up') or diag($err);
$bulk->query_safe('COMMIT');
$bulk->quit;
is($node->safe_psql('postgres', q{SELECT count(*) FROM lockext.queue_q WHERE key LIKE 'b%'}),
	5000, 'enqueue_batch of 5000 distinct keys committed');

# Per-key order across the bulk: a second job for key k1 waits behind the first.
$node->safe_psql('postgres', q{SELECT lockext.enqueue('q', '{"n": "second"}', 'k1')});
is( $node->safe_psql(
		'postgres', q{SELECT count(*) FROM lockext.queue_q WHERE key = 'k1' AND state = 'waiting'}),
	1,
	'the later job of a key still waits behind its head');

# A batch complete of thousands of distinct keys, promoting each key's next
# job, in one transaction.
($rc, $out, $err) = $node->psql('postgres', q{
BEGIN;
CREATE TEMP TABLE taken AS SELECT id, token FROM lockext.dequeue('q', 20000, '5 minutes');
SELECT count(*) FROM taken;
SELECT lockext.complete('q', array_agg(id), array_agg(token)) FROM taken;
COMMIT;
SELECT count(*) FROM lockext.queue_q WHERE key = 'k1' AND state = 'ready';
});
is($rc, 0, 'a batch complete of 10,000 distinct keys') or diag($err);
is($out, "10001\n10001\n1", 'completed them all, and promoted the next job of k1');

# Thousands of jobs failing for good in one transaction (each burial frees
# its key), then one redrive of them all.
($rc, $out, $err) = $node->psql('postgres', q{
SELECT count(*) FROM lockext.enqueue_batch('q',
    ARRAY(SELECT '{}'::jsonb FROM generate_series(1, 3000)),
    ARRAY(SELECT 'd' || g FROM generate_series(1, 3000) g));
UPDATE lockext.queue_q SET max_attempts = 1 WHERE key LIKE 'd%';
BEGIN;
CREATE TEMP TABLE failing AS SELECT id, token FROM lockext.dequeue('q', 5000, '5 minutes');
SELECT count(*) FILTER (WHERE lockext.fail('q', id, token, 'gone') = 'dead') FROM failing;
COMMIT;
SELECT lockext.redrive('q');
SELECT count(*) FROM lockext.queue_q WHERE key LIKE 'd%' AND state = 'ready';
});
is($rc, 0, '3000 distinct keys fail for good in one transaction, and are redriven') or diag($err);
is($out, "3000\n3000\n3000\n3000", 'every one died, came back and is ready');

# A transaction that holds key locks and passes the budget while another
# writer holding the queue's ShareLock waits for one of its keys: waiting
# for the ExclusiveLock would be a deadlock (40P01 for one of them). It
# takes more key locks instead, and both finish.
$node->safe_psql('postgres', q{SELECT lockext.create_queue('dl')});
$node->safe_psql('postgres', q{SELECT lockext.enqueue('dl', '{}', 'shared-key')});
my ($dl_id, $dl_token) = split /\|/,
  $node->safe_psql('postgres', q{SELECT id, token FROM lockext.dequeue('dl')});
my $holder = $node->background_psql('postgres');
$holder->query_safe('BEGIN');
$holder->query_safe(q{SELECT lockext.enqueue('dl', '{}', 'shared-key')});
my $waiter = $node->background_psql('postgres', on_error_stop => 0);
$waiter->query_until(qr/sent/, "\\echo sent\nSELECT lockext.complete('dl', $dl_id, $dl_token);\n");
$node->poll_query_until('postgres', q{
SELECT count(*) > 0 FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 19537 AND NOT granted})
  or die 'the completing transaction never waited for the key';
my $failed;
($out, $failed) = $holder->query(q{
SELECT count(lockext.enqueue('dl', '{}', 'many' || g)) FROM generate_series(1, 1000) g});
is("$out $failed", '1000 0', 'the holder went past its budget without a deadlock')
  or diag($holder->{stderr});
$holder->query_safe('COMMIT');
$holder->quit;
($out, $failed) = $waiter->query(q{SELECT 'after'});
is("$out $failed", "t\nafter 0", 'and the waiting complete went through once it committed')
  or diag($waiter->{stderr});
$waiter->quit;

# Below the budget nothing escalates: a worker's usual transaction takes
# only its keys' locks, under the queue lock in ShareLock mode.
($rc, $out, $err) = $node->psql('postgres', qq{
BEGIN;
SELECT count(lockext.enqueue('q', '{}', 'small' || g)) FROM generate_series(1, 10) g;
$locks;
COMMIT;
});
is($out, "10\n10|ShareLock", 'ten keys: ten key locks and a shared queue lock') or diag($err);

$node->stop;
done_testing();
