# A waiter whose client goes away (the process killed, the connection
# dropped) leaves the queue within about a second: its backend looks at the
# connection while it waits. Before, it stayed queued until its wait ran
# out and, if its turn came first, was granted a lease nobody would use,
# which then kept the lock from everyone for its whole TTL.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use LockextTap;
use Time::HiRes qw(time);

my $node = lockext_node('gone');

# Run one query and return its unaligned output (psql -At).
sub q1
{
	my ($sql) = @_;
	return $node->safe_psql('postgres', $sql);
}

my $token = q1(q{SELECT lockext.acquire('g', '10 minutes')});
like($token, qr/^\d+$/, 'a holder takes g');

# Two clients wait for g, in FIFO order; the first is then killed.
my @clients;
for my $n (1 .. 2)
{
	my ($out, $err) = ('', '');
	push @clients,
	  IPC::Run::start(
		[
			'psql', '-X', '-At', '-d', $node->connstr('postgres'),
			'-c', "SELECT lockext.acquire('g', '10 minutes', '5 minutes') IS NOT NULL"
		],
		'>', \$out, '2>', \$err);
	$node->poll_query_until('postgres',
		"SELECT count(*) = $n FROM lockext.waiters WHERE name = 'g'")
	  or die "waiter $n never queued";
}
my $first_pid = q1(q{SELECT pid FROM lockext.waiters WHERE name = 'g' ORDER BY "position" LIMIT 1});
my $t0 = time;
$clients[0]->kill_kill;
$node->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM lockext.waiters WHERE name = 'g' AND pid = $first_pid")
  or die 'the dead client\'s waiter never left';
my $took = time - $t0;
cmp_ok($took, '<', 5, sprintf('the killed client\'s waiter left the queue (%.1f s)', $took));
is(q1(q{SELECT count(*) FROM lockext.waiters WHERE name = 'g'}), '1', 'the other one still waits');
ok( $node->poll_query_until('postgres',
		"SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $first_pid)"),
	'and its backend ended');
like(
	slurp_file($node->logfile),
	qr/connection to client lost/,
	'the server log says the client was lost');

# The release now goes to the live waiter, not to the dead one.
is(q1(qq{SELECT lockext.release('g', $token)}), 't', 'the holder releases g');
$clients[1]->finish;
is(q1(q{SELECT count(*) FROM lockext.holders WHERE name = 'g' AND pid = } . $first_pid),
	'0', 'the dead client was not granted g');
is(q1(q{SELECT count(*) FROM lockext.holders WHERE name = 'g'}),
	'1', 'the live waiter was');

$node->stop;
done_testing();
