# A state-file write that fails (src/durable_state.cpp): disk full, a
# read-only mount, a bad permission. Here the temp file's name is taken by a
# directory, so creating it fails with EISDIR.
#  - A renewal that needs a longer durable horizon fails with the file
#    error and changes nothing: the holder keeps the lease and the expiry it
#    was promised, and the waiter behind it goes on waiting (the lease was
#    once released here and handed to the waiter, while its holder still
#    counted on it).
#  - The session that hit the error can still be cancelled: the error path
#    released the state lock without restoring the interrupt holdoff count
#    it had raised, which left the backend ignoring cancels and
#    terminations.
#  - Once the file can be written again, the same renewal succeeds.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use LockextTap;
use Time::HiRes qw(time);

my $node = lockext_node('durable');

# Run one query and return its unaligned output (psql -At).
sub q1
{
	my ($sql) = @_;
	return $node->safe_psql('postgres', $sql);
}

my $holder = $node->background_psql('postgres', on_error_stop => 0);
my $token = $holder->query_safe(q{SELECT lockext.acquire('r', '20 s')});
like($token, qr/^\d+$/, 'the holder takes r for 20 s');
my $expiry = q1(q{SELECT expires_at FROM lockext.holders WHERE name = 'r'});
# Another name, held by a session that is gone (its lease stays).
q1(q{SELECT lockext.acquire('x', '5 minutes')});

my $waiter = $node->background_psql('postgres', on_error_stop => 0);
$waiter->query_until(qr/sent/,
	"\\echo sent\nSELECT lockext.acquire('r', '20 s', '2 minutes') IS NOT NULL AS granted;\n");
$node->poll_query_until('postgres',
	q{SELECT count(*) = 1 FROM lockext.waiters WHERE name = 'r'})
  or die 'the waiter never queued';

my $tmp = $node->data_dir . '/lockext.state.tmp';
mkdir($tmp) or die "mkdir $tmp: $!";

my ($out, $failed) = $holder->query(qq{SELECT lockext.renew('r', $token, '1 hour')});
ok($failed, 'a renewal past the durable horizon fails when the state file cannot be written');
like($holder->{stderr}, qr/could not create "lockext\.state\.tmp"/, 'with the file error');
$holder->{stderr} = '';
is( q1(q{SELECT token || ' ' || expires_at FROM lockext.holders WHERE name = 'r'}),
	"$token $expiry",
	'the holder still holds r, with the expiry it had');
is(q1(q{SELECT count(*) FROM lockext.waiters WHERE name = 'r'}),
	'1', 'and the waiter still waits');
is($holder->query_safe(qq{SELECT lockext.renew('r', $token, '15 s') IS NOT NULL}),
	't', 'a renewal the horizon already covers needs no write and succeeds');

# The session whose write failed still honours statement_timeout in a wait.
my $t0 = time;
($out, $failed) = $holder->query(
	q{SET statement_timeout = '300ms'; SELECT lockext.acquire('x', '1 minute', '20 s')});
my $took = time - $t0;
ok($failed && $holder->{stderr} =~ /statement timeout/,
	'statement_timeout still cancels a wait in the session whose write failed')
  or diag("failed=$failed stderr=$holder->{stderr} out=$out");
cmp_ok($took, '<', 10, sprintf('within the timeout, not the wait (%.1f s)', $took));
$holder->{stderr} = '';
$holder->query_safe(q{RESET statement_timeout});

rmdir($tmp) or die "rmdir $tmp: $!";
like(
	$holder->query_safe(qq{SELECT lockext.renew('r', $token, '1 hour')}),
	qr/^\d{4}-/,
	'with the file writable again, the renewal to an hour succeeds');
is($holder->query_safe(qq{SELECT lockext.release('r', $token)}),
	't', 'the holder releases r');
($out, $failed) = $waiter->query(q{SELECT 'after'});
is("$out $failed", "t\nafter 0", 'and only then the waiter gets it')
  or diag($waiter->{stderr});

$holder->quit;
$waiter->quit;
$node->stop;
done_testing();
