#!/usr/bin/env bash
# Stress run: 16 pgbench clients hammer lockext-guarded fenced resources, then
# the run's own records are checked for mutual-exclusion and fencing
# violations (test/stress/schema.sql, stress_checks()). Exit 0 only when clean.
# Env: STRESS_SECONDS (default 30), STRESS_CLIENTS (16), STRESS_THREADS (2),
#      STRESS_SESSION_CLIENTS (extra reconnecting clients, default 2),
#      STRESS_MIN_SECTIONS (completed exclusive sections required, default 1000).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${STRESS_SECONDS:-30}
CLIENTS=${STRESS_CLIENTS:-16}
THREADS=${STRESS_THREADS:-2}
SESSION_CLIENTS=${STRESS_SESSION_CLIENTS:-2}
MIN_SECTIONS=${STRESS_MIN_SECTIONS:-1000}
STRESS_DIR="$LOCKEXT_ROOT/test/stress"

# psql against the private server, stopping at the first error.
run_psql() {
    psql -X -q -v ON_ERROR_STOP=1 "$@"
}

# Summarise one pgbench run; add to failures if it failed or a client aborted.
check_bench() {
    local label=$1 out=$2 rc=$3 bad=0
    echo "-- pgbench $label:"
    grep -E '^(number of (transactions actually processed|failed transactions)|tps|latency average)' \
        "$out" | sed 's/^/   /' || true
    [ "$rc" = 0 ] || { failures+=("pgbench $label exited with $rc"); bad=1; }
    grep -qiE 'aborted|client [0-9]+ .*error' "$out" &&
        { failures+=("pgbench $label: clients aborted or failed"); bad=1; }
    grep -qE '^number of failed transactions: 0 ' "$out" ||
        { failures+=("pgbench $label: failed transactions"); bad=1; }
    [ "$bad" = 0 ] || cat "$out"
}

# Print why the run failed, with the server log, and exit non-zero.
fail() {
    echo "== STRESS FAILED: $*"
    if [ -n "${LOCKEXT_SERVER_DIR:-}" ] && [ -f "$LOCKEXT_SERVER_DIR/server.log" ]; then
        echo "== server log (last 100 lines):"
        tail -n 100 "$LOCKEXT_SERVER_DIR/server.log"
    fi
    exit 1
}

ensure_packages
build_and_install
start_server
echo "== server at $LOCKEXT_SERVER_DIR, port $PGPORT"

run_psql -c 'CREATE EXTENSION lockext'
for f in "$STRESS_DIR"/*.sql; do
    run_psql -f "$f"
done

echo "== pgbench: $CLIENTS clients, $THREADS threads, $DURATION s" \
     "(+ $SESSION_CLIENTS reconnecting session-lock clients)"
failures=()
main_out="$LOCKEXT_SERVER_DIR/pgbench-main.out"
session_out="$LOCKEXT_SERVER_DIR/pgbench-session.out"
# Session-scope family alongside: -C reconnects per transaction, so every
# lock is released by backend exit.
session_rc=0
pgbench -n -C -M prepared -c "$SESSION_CLIENTS" -j 1 -T "$DURATION" \
    -f "$STRESS_DIR/session.pgbench" >"$session_out" 2>&1 &
session_pid=$!
main_rc=0
pgbench -n -M prepared -c "$CLIENTS" -j "$THREADS" -T "$DURATION" \
    -f "$STRESS_DIR/exclusive.pgbench@8" \
    -f "$STRESS_DIR/impatient.pgbench@2" \
    -f "$STRESS_DIR/xact.pgbench@1" \
    -f "$STRESS_DIR/rw_reader.pgbench@4" \
    -f "$STRESS_DIR/rw_writer.pgbench@1" \
    -f "$STRESS_DIR/semaphore.pgbench@2" \
    -f "$STRESS_DIR/lapse.pgbench@1" \
    >"$main_out" 2>&1 || main_rc=$?
wait "$session_pid" || session_rc=$?
check_bench main "$main_out" "$main_rc"
check_bench session "$session_out" "$session_rc"

# Let the backends of the finished clients exit (session locks go with them)
# and the 5 ms lapse leases run out, then judge the run from its records.
for _ in $(seq 100); do
    others=$(run_psql -At -c "SELECT count(*) FROM pg_stat_activity
                              WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")
    [ "$others" = 0 ] && break
    sleep 0.1
done
sleep 0.1
checks=$(run_psql -At -F ' ' -c "SELECT check_name, value, ok FROM stress_checks($MIN_SECTIONS)")
echo "== checks (name value ok):"
echo "$checks" | sed 's/^/   /'
while read -r name value ok; do
    [ "$ok" = t ] || failures+=("check $name = $value")
done <<<"$checks"

# Anything the server itself complained about is a failure too.
if grep -E 'PANIC|FATAL|TRAP:|terminated by signal|lockext internal error|ERROR:' \
        "$LOCKEXT_SERVER_DIR/server.log" >/dev/null; then
    failures+=("errors in the server log")
fi

if [ ${#failures[@]} -gt 0 ]; then
    run_psql -c 'SELECT * FROM violations ORDER BY id LIMIT 20' || true
    fail "$(IFS=';'; echo "${failures[*]}")"
fi

summary=$(run_psql -At -F ' ' -c "
    SELECT format('sections=%s readers=%s semaphore=%s (max inside %s) lapse=%s rejections=%s violations=%s',
                  (SELECT sum(entries) FROM fenced WHERE is_strict),
                  (SELECT sum(shared_entries) FROM fenced WHERE family = 'rw'),
                  (SELECT sum(shared_entries) FROM fenced WHERE family = 'sem'),
                  (SELECT max(max_inside) FROM fenced WHERE family = 'sem'),
                  (SELECT sum(entries) FROM fenced WHERE family = 'lapse'),
                  (SELECT count(*) FROM fence_rejections),
                  (SELECT count(*) FROM violations))")
echo "== STRESS OK: ${DURATION}s x $CLIENTS clients: $summary"
stop_server
