#!/usr/bin/env bash
# The main job: a short demo of lockext against a private PostgreSQL server
# that this script starts (and stops). Two sessions contend for one lease,
# the lock is handed over, and the views show who holds and who waits.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Run SQL quietly and print the result rows only.
q() {
    psql -X -q -A -t -v ON_ERROR_STOP=1 -c "$1"
}

# Run SQL and print a table.
show() {
    psql -X -q -v ON_ERROR_STOP=1 -P null='-' -c "$1"
}

ensure_packages
build_and_install
start_server
q "CREATE EXTENSION lockext" >/dev/null

echo
echo "== Session A takes the lease 'nightly-report' for 30 s"
token_a=$(PGAPPNAME=worker-a q "SELECT lockext.acquire('nightly-report', '30 s', owner => 'worker-a')")
echo "   A holds it with fencing token $token_a"

echo "== Session B asks for it, ready to wait up to 10 s (the wait is server-side)"
b_out=$(mktemp)
(PGAPPNAME=worker-b q "SELECT lockext.acquire('nightly-report', '30 s', '10 s', owner => 'worker-b'), extract(epoch FROM clock_timestamp())" >"$b_out") &
b_pid=$!
for _ in $(seq 200); do
    [ "$(q "SELECT count(*) FROM lockext.waiters")" = 1 ] && break
    sleep 0.01
done
show "SELECT name, owner, mode, scope, application_name, expires_at - now() AS time_left FROM lockext.holders"
show "SELECT name, owner, position, now() - waiting_since AS waiting_for FROM lockext.waiters"

echo "== A finishes and releases; the lock is handed to B at once"
released_at=$(q "SELECT extract(epoch FROM clock_timestamp()) FROM (SELECT lockext.release('nightly-report', $token_a)) r")
wait "$b_pid"
IFS='|' read -r token_b granted_at <"$b_out"
rm -f "$b_out"
echo "   B holds it with token $token_b (higher than A's $token_a)," \
     "$(awk -v a="$released_at" -v b="$granted_at" 'BEGIN { printf "%.2f", (b - a) * 1000 }') ms after the release"

echo "== A's token is now stale: a fenced resource would reject it"
echo "   renew with A's token:   $(q "SELECT coalesce(lockext.renew('nightly-report', $token_a)::text, 'NULL (not held)')")"
echo "   release with A's token: $(q "SELECT lockext.release('nightly-report', $token_a)")"

echo "== B renews its lease for another minute"
q "SELECT lockext.renew('nightly-report', $token_b, '1 minute')" >/dev/null
show "SELECT name, owner, token = $token_b AS is_b, expires_at - now() AS time_left, renewed_at IS NOT NULL AS renewed FROM lockext.holders"

echo "== A short lease that nobody releases frees itself"
q "SELECT lockext.acquire('cache-warmup', '200 ms')" >/dev/null
sleep 0.3
echo "   holders of cache-warmup after 300 ms: $(q "SELECT count(*) FROM lockext.holders WHERE name = 'cache-warmup'")"

q "SELECT lockext.release('nightly-report', $token_b)" >/dev/null
echo "== Counters"
show "SELECT * FROM lockext.stats"
echo "Demo done; the private server is stopped and removed."
