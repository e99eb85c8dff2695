# A server crash while jobs run (src/queue_ops.cpp: a running job is a lease
# in the lock table, which the crash forgets). After an immediate stop and a
# restart: no job is handed out again before the old leases' expiry (the
# lock table grants nothing before the durable horizon), the old tokens are
# refused, new tokens are higher than every old one, no job is lost, and a
# job that was running is delivered again with the same attempt number (the
# restart forgets the delivery in flight; documented).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

use LockextTap;

my $node = lockext_node('crash_jobs', '', q{SELECT lockext.create_queue('q', 2)});
$node->safe_psql('postgres', q{
SELECT lockext.enqueue('q', '{"n": 1}', 'a');
SELECT lockext.enqueue('q', '{"n": 2}', 'a');
SELECT lockext.enqueue('q', '{"n": 3}', 'b');
SELECT lockext.enqueue('q', '{"n": 4}');
CREATE TABLE before_crash AS SELECT * FROM lockext.dequeue('q', 10, '4 seconds');
});
is($node->safe_psql('postgres', 'SELECT count(*) FROM before_crash'),
	'3', 'three jobs run (the second job of key a waits behind the first)');
my $max_token = $node->safe_psql('postgres', 'SELECT max(token) FROM before_crash');
my $max_expiry = $node->safe_psql('postgres',
	q{SELECT extract(epoch FROM max(lease_expires_at)) FROM before_crash});

$node->stop('immediate');
$node->start;

# Poll until something is handed out again; note when (server clock).
$node->safe_psql('postgres', q{
CREATE TABLE after_crash AS SELECT *, now() AS got_at FROM before_crash WHERE false});
my ($first, $waited) = ('', 0);
while ($waited < 60_000)
{
	$first = $node->safe_psql('postgres', q{
WITH got AS (SELECT * FROM lockext.dequeue('q', 10, '1 minute'))
INSERT INTO after_crash SELECT *, clock_timestamp() FROM got RETURNING 1});
	last if $first ne '';
	usleep(200_000);
	$waited += 200;
}
ok($first ne '', 'the jobs are handed out again after the restart');
my ($redelivered, $too_early) = split /\|/, $node->safe_psql('postgres', qq{
SELECT count(*), count(*) FILTER (WHERE got_at < to_timestamp($max_expiry)) FROM after_crash});
is($redelivered, '3', 'the three running jobs (and nothing else) come back');
is($too_early, '0', 'none before its old lease expired');
is( $node->safe_psql('postgres', qq{
SELECT bool_and(a.token > $max_token), bool_and(a.attempt = b.attempt), bool_and(a.id = b.id)
  FROM after_crash a JOIN before_crash b USING (id)}),
	't|t|t',
	'new tokens are higher than every old one; same jobs, same attempt numbers');
is( $node->safe_psql('postgres', q{
SELECT count(*) FILTER (WHERE lockext.complete('q', id, token)) FROM before_crash}),
	'0', 'the old tokens are refused');
is( $node->safe_psql('postgres', q{
SELECT count(*) FILTER (WHERE lockext.complete('q', id, token)) FROM after_crash;
SELECT payload->>'n' FROM lockext.dequeue('q', 10);}),
	"3\n2", 'the new tokens complete them, and key a goes on in order');
is($node->safe_psql('postgres', q{SELECT ready + running + retrying + dead FROM lockext.queue_stats}),
	'1', 'no job lost: only the running one is left');

$node->stop;
done_testing();
