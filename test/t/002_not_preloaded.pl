# lockext without shared_preload_libraries: the extension installs, but every
# lock function fails cleanly with SQLSTATE 55000 and a hint to preload it.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('nopreload');
$node->init;
$node->start;

is($node->safe_psql('postgres', 'SHOW shared_preload_libraries'),
	'', 'node runs without shared_preload_libraries');

my ($ret, $out, $err) = $node->psql('postgres', 'CREATE EXTENSION lockext');
is($ret, 0, 'CREATE EXTENSION lockext succeeds without preloading')
  or diag("stderr: $err");

# Run `sql` with verbose errors; returns (psql exit code, stderr).
sub run_verbose
{
	my ($sql) = @_;
	my ($rc, $stdout, $stderr) =
	  $node->psql('postgres', "\\set VERBOSITY verbose\n$sql", on_error_stop => 1);
	return ($rc, $stderr);
}

foreach my $sql (
	"SELECT lockext.acquire('x')",
	"SELECT lockext.acquire('x', '5 s', '1 s', 'shared')",
	"SELECT lockext.renew('x', 1)",
	"SELECT lockext.release('x', 1)",
	'SELECT * FROM lockext.holders',
	'SELECT * FROM lockext.waiters',
	'SELECT * FROM lockext.stats')
{
	my ($rc, $stderr) = run_verbose($sql);
	isnt($rc, 0, "$sql: fails");
	like($stderr, qr/ERROR:\s+55000: lockext is not loaded/, "$sql: SQLSTATE 55000");
	like($stderr, qr/HINT:.*shared_preload_libraries/, "$sql: hint names shared_preload_libraries");
}

# Loading the library by hand in a session does not make it usable either:
# the shared memory is only reserved at postmaster start.
my ($rc, $stderr) = run_verbose("LOAD 'lockext';\nSELECT lockext.acquire('x')");
like($stderr, qr/ERROR:\s+55000/, 'after LOAD, acquire still fails with 55000');

# Queues keep their jobs in tables, so enqueue works without shared memory
# (its wakeup goes out with NOTIFY in its own transaction); a running job is
# a lease in the lock table, so dequeue, complete, fail, extend and requeue
# need it: 55000 with the same hint.
is( $node->safe_psql(
		'postgres', q{
SELECT lockext.create_queue('plain');
SELECT lockext.enqueue('plain', '{"n": 1}', 'k') > 0;
SELECT count(*) FROM lockext.enqueue_batch('plain', ARRAY['{}'::jsonb, '{}'::jsonb]);
}),
	"\nt\n2",
	'enqueue works without preloading');
foreach my $sql (
	"SELECT * FROM lockext.dequeue('plain')",
	"SELECT lockext.complete('plain', 1, 1)",
	"SELECT lockext.fail('plain', 1, 1, 'x')",
	"SELECT lockext.extend('plain', 1, 1, '1 min')",
	"SELECT lockext.requeue('plain', 1, 1)")
{
	my ($rc, $stderr) = run_verbose($sql);
	like($stderr, qr/ERROR:\s+55000: lockext is not loaded/, "$sql: SQLSTATE 55000");
}

# The server survived all of that.
is($node->safe_psql('postgres', 'SELECT 1'), '1', 'server still answers');

# And once preloaded, the same call works: the failure was only about preloading.
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'lockext'\n");
$node->restart;
$node->safe_psql('postgres', 'CREATE EXTENSION IF NOT EXISTS lockext');
like($node->safe_psql('postgres', "SELECT lockext.acquire('x', '1 s')"),
	qr/^\d+$/, 'after preloading and a restart, acquire returns a token');

$node->stop;
done_testing();
