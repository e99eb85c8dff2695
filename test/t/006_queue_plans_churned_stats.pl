# Queue statements keep their index lookups under churned statistics
# (src/queue_ops.cpp, stmt_sql): a leaf analysed after a churn, when it held
# a few live rows in many pages, can make the planner read a whole partial
# index (dead entries and all) to find one job by id, so that every complete
# slows down tenfold until the next analyze. The plans are read from
# auto_explain, which logs the statements run inside the queue functions.
# Dequeue runs no statement on its common path (it reads the leaf's ready
# and (key, id) indexes directly, src/queue_scan.cpp): the log must show
# none of it, and the dequeue must still hand out each key's head.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('plans');
$node->init;
$node->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'lockext'
autovacuum = off
});
$node->start;
# A churned queue: 20,000 jobs through it (1,000 keys per transaction),
# then analysed nearly empty.
my $churn = q{
SELECT count(*) FROM lockext.enqueue_batch('q',
    ARRAY(SELECT '{}'::jsonb FROM generate_series(1, 1000)),
    ARRAY(SELECT 'k' || g FROM generate_series(1, 1000) g));
SELECT lockext.complete('q', array_agg(id), array_agg(token)) FROM lockext.dequeue('q', 1000);
} x 20;
$node->safe_psql('postgres', qq{
CREATE EXTENSION lockext;
SELECT lockext.create_queue('q', 2);
$churn
SELECT count(*) FROM lockext.enqueue_batch('q',
    ARRAY(SELECT '{}'::jsonb FROM generate_series(1, 6)),
    ARRAY['a', 'a', 'b', 'b', 'c', 'c']);
ANALYZE lockext.queue_q;
});

my $log_start = -s $node->logfile;
my ($rc, $out, $err) = $node->psql('postgres', q{
LOAD 'auto_explain';
SET auto_explain.log_min_duration = 0;
SET auto_explain.log_nested_statements = on;
SET client_min_messages = warning;
CREATE TEMP TABLE t AS SELECT id, key, token FROM lockext.dequeue('q', 3, '1 minute');
SELECT 'dequeued: ' || string_agg(key, ',' ORDER BY key) FROM t;
SELECT 'heads: ' || count(*) FROM t
 WHERE id = (SELECT min(j.id) FROM lockext.jobs j WHERE j.queue = 'q' AND j.key = t.key);
SELECT lockext.complete('q', id, token) FROM t WHERE key = 'a';
SELECT lockext.complete('q', array_agg(id), array_agg(token)) FROM t WHERE key = 'b';
SELECT lockext.extend('q', id, token, '1 minute') IS NOT NULL FROM t WHERE key = 'c';
SELECT lockext.fail('q', id, token, 'x') FROM t WHERE key = 'c';
});
is($rc, 0, 'the queue calls ran') or diag($err);
like($out, qr/dequeued: a,b,c/, 'the dequeue on the churned queue took one job of each key');
like($out, qr/heads: 3/, "each is its key's head");
my $log = slurp_file($node->logfile, $log_start);

# Each logged plan, as "query text" => "plan", for the statements that
# find jobs by id.
my @plans = split /LOG:  duration: [0-9.]+ ms  plan:\n/, $log;
my %seen;
for my $p (@plans)
{
	next unless $p =~ /Query Text: ([^\n]*(?:\n\s+(?:SET|WHERE|AND)[^\n]*)*)/;
	my $q = $1;
	my $what =
	    $q =~ /^DELETE .* j\.id = \$1/               ? 'complete: delete by id'
	  : $q =~ /^DELETE .* j\.id = ANY/               ? 'batch complete: delete by ids'
	  : $q =~ /^SELECT j\.key, j\.attempt/           ? 'fail: find by id'
	  : $q =~ /^UPDATE .*SET state = 'delayed'/s     ? 'fail: retry'
	  :                                                undef;
	next unless $what;
	$seen{$what} = 1;
	unlike($p, qr/Seq Scan|Bitmap/, "$what: no sequential or bitmap scan");
	unlike($p, qr/priority_id_idx|key_id_idx/, "$what: no partial index");
	like($p, qr/Index Cond: \(id = /, "$what: looks the job up by id");
}
unlike($log, qr/ORDER BY j\.priority|SELECT h\.id/, 'dequeue ran no SQL scan of the leaves');
is(scalar(keys %seen), 4, 'every statement was seen in the log')
  or diag(join(', ', sort keys %seen));

$node->stop;
done_testing();
