# Key locks stay bounded (src/queue_ops.cpp, the per-key locking protocol):
# a transaction that touches thousands of keys holds at most one lock per
# key bucket, never one per key, so it cannot exhaust the server's lock
# table (53200 "out of shared memory") on a server with a small one:
#  - thousands of enqueue() calls with distinct keys in one transaction;
#  - enqueue_batch with thousands of distinct keys;
#  - thousands of lapsed last attempts buried by later dequeues;
#  - and per-key order still holds afterwards.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('keylocks');
$node->init;
# A lock table of max_locks_per_transaction x backends: a few hundred entries.
$node->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'lockext'
max_locks_per_transaction = 10
max_connections = 10
});
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION lockext;
SELECT lockext.create_queue('q');
});

my ($rc, $out, $err) = $node->psql('postgres', q{
BEGIN;
SELECT count(lockext.enqueue('q', jsonb_build_object('n', g), 'k' || g))
  FROM generate_series(1, 5000) g;
SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 19537;
COMMIT;
});
is($rc, 0, 'one transaction enqueues 5000 distinct keys') or diag($err);
my ($jobs, $held) = split /\n/, $out;
is($jobs, 5000, 'every job was enqueued');
cmp_ok($held, '<=', 64, "it held $held key locks, at most one per bucket");

($rc, $out, $err) = $node->psql('postgres', q{
SELECT count(*) FROM lockext.enqueue_batch('q',
    ARRAY(SELECT jsonb_build_object('n', g) FROM generate_series(1, 5000) g),
    ARRAY(SELECT 'b' || g FROM generate_series(1, 5000) g));
});
is($rc, 0, 'enqueue_batch of 5000 distinct keys') or diag($err);
is($out, 5000, 'every batch job was enqueued');

# Per-key order across the bulk: a second job for key k1 waits behind the first.
$node->safe_psql('postgres', q{SELECT lockext.enqueue('q', '{"n": "second"}', 'k1')});
is( $node->safe_psql(
		'postgres', q{SELECT count(*) FROM lockext.queue_q WHERE key = 'k1' AND state = 'waiting'}),
	1,
	'the later job of a key still waits behind its head');
$node->safe_psql('postgres', q{DELETE FROM lockext.queue_q});

# Thousands of last attempts whose leases lapse together are buried by
# later dequeues, a bounded number at a time, without 53200.
$node->safe_psql('postgres', q{
SELECT count(*) FROM lockext.enqueue_batch('q',
    ARRAY(SELECT '{}'::jsonb FROM generate_series(1, 3000)),
    ARRAY(SELECT 'd' || g FROM generate_series(1, 3000) g));
UPDATE lockext.queue_q SET max_attempts = 1;
SELECT count(*) FROM lockext.dequeue('q', 3000, '1 ms');
});
my $dead = 0;
my $errors = '';
for (1 .. 100)
{
	select(undef, undef, undef, 0.01);
	($rc, $out, $err) = $node->psql('postgres', q{SELECT count(*) FROM lockext.dequeue('q')});
	$errors .= $err if $rc != 0;
	$dead = $node->safe_psql('postgres',
		q{SELECT dead FROM lockext.queue_stats WHERE queue = 'q'});
	last if $dead == 3000;
}
is($errors, '', 'dequeue never failed while burying lapsed jobs');
is($dead, 3000, 'every lapsed last attempt went to the dead letters');

$node->stop;
done_testing();
