# ALTER EXTENSION lockext UPDATE from 0.1.0 keeps every queued and dead job
# (sql/lockext--0.1.0--0.2.0.sql). The queue is filled on 0.1.0 in every
# state its engine wrote (ready, delayed, a key's later jobs 'waiting', a
# job 'running' under a 0.1.0 lease, and a dead job), then updated and
# drained: per-key order holds, the running job comes back with its next
# attempt, and the dead job can be redriven.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('update');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'lockext'\n");
$node->start;

# 0.1.0's schema. The installed library serves 0.2.0's engine, so the jobs
# are enqueued through it (their ids name their leaf, as 0.1.0's did) and
# then given the states 0.1.0's engine wrote.
$node->safe_psql('postgres', q{
CREATE EXTENSION lockext VERSION '0.1.0';
SELECT lockext.create_queue('q', 2);
SELECT lockext.enqueue('q', jsonb_build_object('n', g), 'k') FROM generate_series(1, 3) g;
UPDATE lockext.jobs SET state = 'waiting' WHERE key = 'k' AND payload->>'n' <> '1';
SELECT lockext.enqueue('q', '{"n": "running"}');
UPDATE lockext.jobs SET state = 'running', attempt = 1, token = 42, worker = 'w1',
       lease_expires_at = now() + interval '1 minute'
 WHERE payload->>'n' = 'running';
SELECT lockext.enqueue('q', '{"n": "later"}', 'z', run_at => now() + interval '1 hour');
INSERT INTO lockext.dead_jobs (queue, id, key, payload, priority, attempt, max_attempts,
                               last_error, enqueued_at)
VALUES ('q', 7, 'k', '{"n": "dead"}', 0, 5, 5, 'boom', now());
});
is($node->safe_psql('postgres', q{SELECT extversion FROM pg_extension WHERE extname = 'lockext'}),
	'0.1.0', 'installed at 0.1.0');
is( $node->safe_psql('postgres', q{SELECT state, count(*) FROM lockext.jobs GROUP BY 1 ORDER BY 1}),
	"delayed|1\nready|1\nrunning|1\nwaiting|2", 'jobs in every 0.1.0 state');

my ($rc, $out, $err) = $node->psql('postgres', 'ALTER EXTENSION lockext UPDATE');
is($rc, 0, 'ALTER EXTENSION lockext UPDATE succeeds') or diag($err);
is($node->safe_psql('postgres', q{SELECT extversion FROM pg_extension WHERE extname = 'lockext'}),
	'0.2.0', 'now at 0.2.0');
is( $node->safe_psql('postgres', q{
SELECT count(*) FROM lockext.jobs;
SELECT count(*) FROM lockext.dead_jobs;
SELECT ready, scheduled, running, retrying, dead FROM lockext.queue_stats}),
	"5\n1\n4|1|0|0|1", 'every job is kept: four ready (waiting and running ones too), one scheduled, one dead');
is( $node->safe_psql('postgres', q{
SELECT column_name FROM information_schema.columns
 WHERE table_schema = 'lockext' AND table_name = 'jobs' AND column_name IN ('token', 'lease_expires_at', 'worker')}),
	'', 'the lease columns are gone');

# Drain: key k in order, the running job again with its next attempt.
my @order;
for my $round (1 .. 4)
{
	my $got = $node->safe_psql('postgres', q{
SELECT string_agg(format('%s:%s', payload->>'n', attempt), ',' ORDER BY id)
  FROM (SELECT d.*, lockext.complete('q', d.id, d.token) AS done FROM lockext.dequeue('q', 10) d) x
 WHERE done});
	push @order, $got;
}
is($order[0], '1:1,running:2', 'first round: the head of k, and the running job with attempt 2');
is($order[1], '2:1', 'then the second job of k');
is($order[2], '3:1', 'then the third');
is($order[3] // '', '', 'and nothing else is ready');

is( $node->safe_psql('postgres', q{
SELECT lockext.redrive('q');
SELECT string_agg(payload->>'n', ',') FROM lockext.dequeue('q', 10)}),
	"1\ndead", 'the dead job is redriven and runs');
is( $node->safe_psql('postgres', q{SELECT ready + running + retrying + dead, scheduled FROM lockext.queue_stats}),
	'1|1', 'left: the redriven job (running) and the scheduled one');

$node->stop;
done_testing();
