# Failover with synchronous replication, then a switchover back to a
# rebuilt old primary (src/durable_wal.cpp).
#
#  - synchronous_standby_names names the standby: a lease granted on the
#    primary, then an immediate stop with no wait for the standby to catch
#    up, then promotion: the name is refused on the new primary until the
#    lease's expiry, and the next token is above the old one;
#  - the old primary is rebuilt from a base backup of the new one and
#    streams from it; a lease is granted on the new primary, which is then
#    stopped; after promoting the rebuilt node the same holds there.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# A timestamptz as integer microseconds since the Unix epoch, in SQL.
sub us_expr
{
	my ($expr) = @_;
	return "(extract(epoch FROM $expr) * 1000000)::bigint";
}

# Grant lease $name on $node; returns (token, expiry in µs).
sub take
{
	my ($node, $name) = @_;
	my ($token, $exp) = split /\|/,
	  $node->safe_psql('postgres',
		"SELECT t, (SELECT "
		  . us_expr('expires_at')
		  . " FROM lockext.holders WHERE name = '$name' AND token = t) "
		  . "FROM lockext.acquire('$name', '8 s', '90 s') t");
	like($token, qr/^\d+$/, $node->name . ": $name granted");
	return ($token, $exp);
}

# On $node, freshly promoted: $name refused before $exp (µs), then granted
# after it with a token above $token.
sub check_promoted
{
	my ($node, $name, $token, $exp) = @_;
	my $who = $node->name;
	my $now = $node->safe_psql('postgres', 'SELECT ' . us_expr('clock_timestamp()'));
	if ($now < $exp)
	{
		is($node->safe_psql('postgres', "SELECT lockext.acquire('$name', '5 s') IS NULL"),
			't', "$who: $name refused while the old lease may hold");
	}
	else
	{
		pass("$who: the old lease expired before the check");
	}
	my ($new, $at) = split /\|/,
	  $node->safe_psql('postgres',
		"SELECT lockext.acquire('$name', '5 s', '90 s'), " . us_expr('clock_timestamp()'));
	cmp_ok($new, '>', $token, "$who: the next token of $name is above the old one");
	cmp_ok($at, '>=', $exp, "$who: granted no earlier than the old expiry");
	return $new;
}

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf',
	"shared_preload_libraries = 'lockext'\nfsync = on\n");
$primary->start;
$primary->safe_psql('postgres', 'CREATE EXTENSION lockext');
$primary->backup('base');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'base', has_streaming => 1);
$standby->start;
$primary->append_conf('postgresql.conf', "synchronous_standby_names = 'standby'\n");
$primary->reload;
$primary->poll_query_until('postgres',
	"SELECT sync_state = 'sync' FROM pg_stat_replication WHERE application_name = 'standby'")
  or die 'the standby did not become synchronous';

# Synchronous: no catch-up wait before the stop.
my ($t1, $e1) = take($primary, 'sy.a');
$primary->stop('immediate');
$standby->promote;
my $t2 = check_promoted($standby, 'sy.a', $t1, $e1);

# Switchover back: rebuild the old primary from the new one.
$standby->backup('base2');
my $rebuilt = PostgreSQL::Test::Cluster->new('rebuilt');
$rebuilt->init_from_backup($standby, 'base2', has_streaming => 1);
$rebuilt->start;
my ($t3, $e3) = take($standby, 'sw.b');
cmp_ok($t3, '>', $t2, 'tokens keep rising on the new primary');
$standby->wait_for_catchup($rebuilt, 'replay', $standby->lsn('flush'));
$standby->stop('immediate');
$rebuilt->promote;
check_promoted($rebuilt, 'sw.b', $t3, $e3);
my $t4 = $rebuilt->safe_psql('postgres', "SELECT lockext.acquire('sy.a', '5 s', '90 s')");
cmp_ok($t4, '>', $t2, 'sy.a after the switchover back: above every earlier token');

$rebuilt->stop;
done_testing();
