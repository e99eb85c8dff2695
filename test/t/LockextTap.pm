# What the TAP tests in test/t share: a node with lockext preloaded and
# created. scripts/run_tap.sh puts this directory on prove's include path.
package LockextTap;

use strict;
use warnings;

use Exporter 'import';
use PostgreSQL::Test::Cluster;

our @EXPORT = qw(lockext_node);

# A started node named $name with lockext preloaded (plus the settings in
# $conf) and the extension created in database postgres, then $sql run there.
sub lockext_node
{
	my ($name, $conf, $sql) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf',
		"shared_preload_libraries = 'lockext'\n" . ($conf // ''));
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION lockext;' . ($sql // ''));
	return $node;
}

1;
