# Lapsed last attempts are buried a bounded number at a time (sql/lockext--0.1.0.sql,
# _dequeue_expired): burying locks each job's key, and thousands of keys in
# one transaction would fill the server's lock table (53200 "out of shared
# memory", for every session) and make every dequeue fail. Run on a server
# with a small lock table.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use LockextTap;

# A lock table of max_locks_per_transaction x backends: a few hundred entries.
my $node = lockext_node('keylocks', "max_locks_per_transaction = 10\nmax_connections = 10\n",
	q{SELECT lockext.create_queue('q')});

my ($rc, $out, $err);
# 3,000 last attempts whose leases lapse together (their workers died).
# (Enqueued 100 keys per transaction: a transaction takes one lock per key.)
$node->safe_psql('postgres', q{
DO $$
BEGIN
    FOR b IN 0 .. 29 LOOP
        PERFORM lockext.enqueue_batch('q',
            ARRAY(SELECT '{}'::jsonb FROM generate_series(1, 100)),
            ARRAY(SELECT 'd' || (b * 100 + g) FROM generate_series(1, 100) g));
        COMMIT;
    END LOOP;
END $$;
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
