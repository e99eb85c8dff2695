# A queue notifier (src/queue_notify.cpp) whose database is dropped leaves
# quietly, and does not hold up the DROP DATABASE.
#  - DROP DATABASE right after an enqueue, in the same session: the notifier
#    is then usually still starting. It used to connect anyway and die with
#    FATAL 3D000 (database does not exist), exit code 1. Now it finds the
#    database gone and leaves with exit code 0, and the DROP is quick;
#  - DROP DATABASE once the notifier is connected and idle: the DROP used to
#    wait for the notifier's 2 s idle exit; now it leaves at once;
#  - DROP DATABASE ... WITH (FORCE): the notifier leaves on the SIGTERM
#    without a FATAL;
#  - every notifier left for the drop (each says so at DEBUG1), and none
#    still holds a database lock;
#  - a notifier killed under an open enqueue whose transaction then rolls
#    back, its database dropped: its slot used to stay taken for good;
#  - after more drop cycles than there are notifier slots, a new database
#    still gets a notifier.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use List::Util qw(max);
use Time::HiRes qw(usleep);

use LockextTap;

my $node = lockext_node('dropped_db', "log_min_messages = debug1\n", 'CREATE EXTENSION dblink;');
# The databases of the cycles are copies of this one.
$node->safe_psql('postgres', 'CREATE DATABASE tmpl');
$node->safe_psql('tmpl', q{CREATE EXTENSION lockext; SELECT lockext.create_queue('q');});

my $log_offset = -s $node->logfile;

my $notifiers_of = q{SELECT count(*) FROM pg_stat_activity
                     WHERE backend_type = 'lockext notifier' AND datname = };

# Notifiers seen connected to each database of a cycle that waited for one.
my %seen;

# One cycle on database `db`: create it from tmpl (with `create_options`),
# enqueue one job there through dblink, then (when `wait_connected`) wait
# until its notifier shows in pg_stat_activity; then DROP DATABASE `db`
# (with `drop_options`), from the same session and right after the
# enqueuing connection closed. Returns the DROP's time in ms.
sub cycle
{
	my ($db, $wait_connected, $drop_options, $create_options) = @_;
	$create_options //= '';
	my $connstr = 'host=' . $node->host . ' port=' . $node->port . " dbname=$db";
	my $wait = $wait_connected ? qq{
DO \$\$ BEGIN
    FOR i IN 1..1000 LOOP
        PERFORM pg_stat_clear_snapshot();  -- else read once per transaction
        EXIT WHEN EXISTS (SELECT 1 FROM pg_stat_activity
                          WHERE backend_type = 'lockext notifier' AND datname = '$db');
        PERFORM pg_sleep(0.01);
    END LOOP;
END \$\$;
SELECT 'notifiers=' || count(*) FROM pg_stat_activity
 WHERE backend_type = 'lockext notifier' AND datname = '$db';
} : '';
	my $out = $node->safe_psql('postgres', qq{
CREATE DATABASE $db TEMPLATE tmpl $create_options;
SELECT dblink_connect('e', '$connstr') \\g /dev/null
SELECT * FROM dblink('e', \$\$SELECT lockext.enqueue('q', '{}')\$\$) AS t(id bigint) \\g /dev/null
SELECT dblink_disconnect('e') \\g /dev/null
$wait
\\timing on
DROP DATABASE $db $drop_options;
\\timing off
});
	$seen{$db} = $1 if $out =~ /notifiers=(\d+)/;
	$out =~ /Time: ([\d.]+) ms/ or die "no timing in: $out";
	return $1;
}

my $quick_cycles = 30;
my @quick = map { cycle("quick_$_", 0, '') } 1 .. $quick_cycles;
note sprintf('DROP right after the enqueue: max %.0f ms, %s', max(@quick),
	join(' ', map { sprintf('%.0f', $_) } @quick));
cmp_ok(max(@quick), '<', 1000, 'DROP DATABASE right after an enqueue takes under 1 s');

# The last one in a tablespace of its own: a notifier finds the directory
# of such a database under pg_tblspc/, not base/.
my $ts_dir = $node->basedir . '/ts';
mkdir $ts_dir or die "mkdir $ts_dir: $!";
$node->safe_psql('postgres', "CREATE TABLESPACE ts LOCATION '$ts_dir'");
my @idle = map { cycle("idle_$_", 1, '') } 1 .. 5;
push @idle, cycle('idle_ts', 1, '', 'TABLESPACE ts');
my $idle_cycles = scalar(@idle);
note sprintf('DROP with the notifier connected: max %.0f ms, %s', max(@idle),
	join(' ', map { sprintf('%.0f', $_) } @idle));
is(join(',', map { $seen{"idle_$_"} } (1 .. 5, 'ts')),
	'1,1,1,1,1,1', 'each waiting cycle saw its notifier connected, in a tablespace too');
cmp_ok(max(@idle), '<', 1000,
	'DROP DATABASE with the notifier connected and idle takes under 1 s');

my $forced = cycle('forced', 1, 'WITH (FORCE)');
note sprintf('DROP WITH (FORCE) with the notifier connected: %.0f ms', $forced);

# Each notifier of the cycles says at DEBUG1 why it left; one still waiting
# for its database's lock says so once the DROP has committed.
my $dropped = 0;
my $left = 0;
my $terminated = 0;
my $log = '';
for (1 .. 200)
{
	$log = slurp_file($node->logfile, $log_offset);
	$dropped = () = $log =~ /lockext notifier: database \d+ was dropped, leaving/g;
	$left = () = $log =~ /lockext notifier: database \d+ is wanted by another command, leaving/g;
	$terminated = () = $log =~ /lockext notifier: terminating on request/g;
	last if $dropped + $left + $terminated >= $quick_cycles + $idle_cycles + 1;
	usleep(50_000);
}
note "notifiers that found their database dropped: $dropped; "
  . "that left a connected database for the DROP: $left; terminated: $terminated";
is($dropped + $left, $quick_cycles + $idle_cycles,
	'every notifier of a plainly dropped database left for the drop');
cmp_ok($left, '>=', $idle_cycles, 'the connected ones left for the DROP');
is($terminated, 1, 'the one under DROP ... WITH (FORCE) left on its SIGTERM');

my @fatal = $log =~ /^.*FATAL:.*$/mg;
is(scalar(@fatal), 0, 'no FATAL in the server log') or diag join("\n", @fatal);
my @exits = $log =~ /^.*lockext notifier.*exited with exit code [1-9].*$/mg;
is(scalar(@exits), 0, 'no notifier exited with a non-zero code') or diag join("\n", @exits);

# A notifier holds its database's lock only while it connects.
is( $node->safe_psql(
		'postgres', q{SELECT count(*) FROM pg_locks
                      WHERE locktype = 'object' AND classid = 'pg_database'::regclass}),
	'0',
	'no database lock is left held');

# A notifier killed under an open enqueue whose transaction then rolls back,
# its database dropped: more times than there are slots.
my $killed_cycles = 33;
for my $k (1 .. $killed_cycles)
{
	my $db = "killed_$k";
	my $connstr = 'host=' . $node->host . ' port=' . $node->port . " dbname=$db";
	$node->safe_psql('postgres', qq{
CREATE DATABASE $db TEMPLATE tmpl;
SELECT dblink_connect('w', '$connstr') \\g /dev/null
SELECT dblink_exec('w', 'BEGIN') \\g /dev/null
SELECT * FROM dblink('w', \$\$SELECT lockext.enqueue('q', '{}')\$\$) AS t(id bigint) \\g /dev/null
DO \$\$ BEGIN
    FOR i IN 1..1000 LOOP
        PERFORM pg_stat_clear_snapshot();
        EXIT WHEN EXISTS (SELECT 1 FROM pg_stat_activity
                          WHERE backend_type = 'lockext notifier' AND datname = '$db');
        PERFORM pg_sleep(0.01);
    END LOOP;
END \$\$;
SELECT pg_terminate_backend(pid) FROM pg_stat_activity
 WHERE backend_type = 'lockext notifier' AND datname = '$db' \\g /dev/null
DO \$\$ BEGIN
    FOR i IN 1..1000 LOOP
        PERFORM pg_stat_clear_snapshot();
        EXIT WHEN NOT EXISTS (SELECT 1 FROM pg_stat_activity
                              WHERE backend_type = 'lockext notifier' AND datname = '$db');
        PERFORM pg_sleep(0.01);
    END LOOP;
END \$\$;
SELECT dblink_exec('w', 'ROLLBACK') \\g /dev/null
SELECT dblink_disconnect('w') \\g /dev/null
DROP DATABASE $db;
});
}
$log = slurp_file($node->logfile, $log_offset);
@fatal = $log =~ /^.*FATAL:.*$/mg;
is(scalar(@fatal), 0, 'no FATAL after killed notifiers either') or diag join("\n", @fatal);

# Slots were all freed: a new database still gets its notifier.
$node->safe_psql('postgres', 'CREATE DATABASE last TEMPLATE tmpl');
$node->safe_psql('last', q{SELECT lockext.enqueue('q', '{}')});
my $served = 0;
for (1 .. 100)
{
	last if ($served = $node->safe_psql('last', $notifiers_of . q{'last'}) eq '1');
	usleep(50_000);
}
ok($served, 'after more cycles than notifier slots, a new database gets its notifier');

$node->stop;
done_testing();
