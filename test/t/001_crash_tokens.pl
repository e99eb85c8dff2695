# Fencing tokens and leases across crashes and restarts (src/durable_state.cpp).
#
# For each cycle (crash, clean restart, crash, child-process crash-restart):
#  - take leases with short TTLs, record their tokens and expiries;
#  - stop the server (or crash a child process) and bring it back;
#  - (a) a zero-wait acquire of each name returns NULL while the old lease
#    may still be in force;
#  - (b) a waiting acquire is granted, with a token above every token seen;
#  - (d) that grant starts no earlier than the old lease's expiry, nor than
#    the "no lock will be granted before" time logged at start-up;
#  - (c) tokens keep rising from cycle to cycle.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('crash');
$node->init;
# fsync on, so the state file really is made durable as in production;
# restart_after_crash on, for the cycle that kills a child process.
$node->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'lockext'
fsync = on
restart_after_crash = on
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION lockext');

my $max_token = 0;    # highest token seen so far, over all cycles

# Run one query and return its unaligned output (psql -At).
sub q1
{
	my ($sql) = @_;
	return $node->safe_psql('postgres', $sql);
}

# A timestamptz as integer microseconds since the Unix epoch, in SQL.
sub us_expr
{
	my ($expr) = @_;
	return "(extract(epoch FROM $expr) * 1000000)::bigint";
}

# Take lease `name` at once; returns { token, expires_us, expires_ts }.
sub take
{
	my ($name, $ttl) = @_;
	my $token = q1("SELECT lockext.acquire('$name', '$ttl')");
	like($token, qr/^\d+$/, "lease $name ($ttl) granted before the stop");
	my ($exp_us, $exp_ts) = split /\|/,
	  q1(   "SELECT "
		  . us_expr('expires_at')
		  . ", expires_at FROM lockext.holders "
		  . "WHERE name = '$name' AND token = $token");
	return { name => $name, token => $token, expires_us => $exp_us, expires_ts => $exp_ts };
}

# Check that `token` is above every token seen so far, then record it.
sub check_rising
{
	my ($token, $what) = @_;
	cmp_ok($token, '>', $max_token, "$what: token $token is above every earlier token");
	$max_token = $token if $token > $max_token;
	return;
}

# Stop and start the node in the given way, crash or clean.
sub bounce
{
	my ($how, $log_offset) = @_;
	if ($how eq 'immediate')
	{
		$node->stop('immediate');
		$node->start;
	}
	elsif ($how eq 'restart')
	{
		$node->restart;
	}
	elsif ($how eq 'child-kill')
	{
		# SIGKILL of a child makes the postmaster reinitialise shared memory
		# in place (restart_after_crash), re-running lockext's start-up hook.
		my $pid = q1("SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'");
		like($pid, qr/^\d+$/, 'found the checkpointer to kill');
		kill 'KILL', $pid;
		# Wait until the crash is noticed, then until the server is back.
		$node->wait_for_log(qr/terminated by signal 9/, $log_offset);
		$node->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()')
		  or die 'server did not come back after the crash';
	}
	else
	{
		die "unknown way to bounce: $how";
	}
	return;
}

my @cycles = ('immediate', 'restart', 'immediate', 'child-kill');
my $cycle_no = 0;
foreach my $how (@cycles)
{
	$cycle_no++;
	my $tag = "cycle $cycle_no ($how)";

	# Leases with short TTLs; tokens rise in grant order. The first lease of
	# later cycles is longer: a restart on a loaded machine can take several
	# seconds, and check (a) is only meaningful while that lease is in force.
	my @leases = (take("c$cycle_no-a", $cycle_no == 1 ? '5 s' : '12 s'),
		take("c$cycle_no-b", '3 s'), take("c$cycle_no-c", '3 s'));
	check_rising($_->{token}, "$tag: grant of $_->{name}") foreach @leases;

	# In the first cycle, renew one lease past the persisted horizon
	# (first expiry + 10 s = start + 15 s): the renewed expiry (start + 18 s)
	# must survive the crash too.
	if ($cycle_no == 1)
	{
		my $l = $leases[2];
		my $renewed = q1(
			"SELECT " . us_expr("lockext.renew('$l->{name}', $l->{token}, '18 s')"));
		like($renewed, qr/^\d+$/, "$tag: renewed $l->{name} to 18 s");
		cmp_ok($renewed, '>', $l->{expires_us}, "$tag: renewal moved the expiry later");
		$l->{expires_us} = $renewed;
	}

	my $log_offset = -s $node->logfile;
	bounce($how, $log_offset);

	# (a) right after start, no name is granted without waiting.
	foreach my $l (@leases)
	{
		my ($tok, $at_us) = split /\|/,
		  q1(   "SELECT t, "
			  . us_expr('clock_timestamp()')
			  . " FROM (SELECT lockext.acquire('$l->{name}', '3 s', '0') AS t OFFSET 0) s");
		is($tok, '', "$tag: zero-wait acquire of $l->{name} returns NULL after the restart");
		# The restart forgot the old lease: its token can neither renew nor release it.
		is(q1("SELECT lockext.renew('$l->{name}', $l->{token}) IS NULL, "
			  . "lockext.release('$l->{name}', $l->{token})"),
			't|f', "$tag: the pre-restart token of $l->{name} no longer renews or releases");
		if ($l == $leases[0])
		{
			# Makes (a) meaningful: the old lease was still in force then.
			cmp_ok($at_us, '<', $l->{expires_us},
				"$tag: that attempt on $l->{name} came before its old expiry");
		}
	}
	ok( $node->log_contains(qr/lockext: no lock will be granted before/, $log_offset),
		"$tag: start-up logged the grace period");
	my ($grace_ts) = slurp_file($node->logfile, $log_offset) =~
	  /lockext: no lock will be granted before (.+?), when leases/;
	ok(defined $grace_ts, "$tag: grace end parsed from the log");
	$grace_ts //= '-infinity';

	# (b) a waiting acquire is granted once the old leases are over, with a
	# higher token; (d) its grant does not overlap any pre-restart lease.
	my $max_old_expiry = 0;
	foreach (@leases)
	{
		$max_old_expiry = $_->{expires_us} if $_->{expires_us} > $max_old_expiry;
	}
	my @after;
	foreach my $l (@leases)
	{
		my ($tok, $returned_us) = split /\|/,
		  q1(   "SELECT t, "
			  . us_expr('clock_timestamp()')
			  . " FROM (SELECT lockext.acquire('$l->{name}', '5 s', '60 s') AS t OFFSET 0) s");
		like($tok, qr/^\d+$/, "$tag: waiting acquire of $l->{name} is granted after the restart");
		next unless $tok =~ /^\d+$/;
		check_rising($tok, "$tag: first grant of $l->{name} after the restart");
		my ($acq_us, $after_grace) = split /\|/,
		  q1(   "SELECT "
			  . us_expr('acquired_at')
			  . ", acquired_at >= '$grace_ts'::timestamptz FROM lockext.holders "
			  . "WHERE name = '$l->{name}' AND token = $tok");
		like($acq_us, qr/^\d+$/, "$tag: new holder of $l->{name} is listed");
		cmp_ok($acq_us, '>=', $l->{expires_us},
			"$tag: new grant of $l->{name} starts at or after its old expiry");
		cmp_ok($returned_us, '>=', $l->{expires_us},
			"$tag: acquire of $l->{name} returned at or after its old expiry");
		cmp_ok($acq_us, '>=', $max_old_expiry,
			"$tag: new grant of $l->{name} starts after every pre-restart lease ended");
		is($after_grace, 't', "$tag: new grant of $l->{name} is not before the logged grace end");
		push @after, [ $l->{name}, $tok ];
	}

	# Release what the cycle took, so the next cycle starts clean.
	foreach (@after)
	{
		is(q1("SELECT lockext.release('$_->[0]', $_->[1])"),
			't', "$tag: release of $_->[0] succeeds");
	}
	is(q1('SELECT count(*) FROM lockext.holders'), '0', "$tag: no holder left");
}

# After every cycle, an ordinary grant still gets a higher token.
check_rising(q1("SELECT lockext.acquire('final', '1 s')"), 'final grant');

$node->stop;
done_testing();
