#!/usr/bin/env bash
# Queue stress run: 8 worker processes (test/stress/queue_worker.cpp) drain
# 100,000 jobs over 1,000 keys from a lockext queue while a driver
# (test/stress/queue_driver.sh) kill -9s a random worker every 1-3 s and
# starts a replacement; then a checker (test/stress/queue_check.sh with
# test/stress/queue_stress.psql) judges the run from the workers' logs:
# every job completed exactly once, per-key order held, re-deliveries only
# after lease expiry, queue empty at the end. Exit 0 only when clean.
# Env: QUEUE_STRESS_JOBS (100000), QUEUE_STRESS_KEYS (1000), and the driver's
#      QUEUE_STRESS_* knobs (workers, batch, lease, kill interval, timeout; see
#      test/stress/queue_driver.sh); QUEUE_STRESS_SLACK_MS (checker, 5);
#      QUEUE_STRESS_KEEP_LOGS=DIR copies the logs there; QUEUE_STRESS_RESTART=1
#      also restarts the server once mid-run with an immediate stop (with
#      synchronous_commit on: an asynchronous commit may be lost by a crash,
#      which PostgreSQL allows, and the checker would rightly count it).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

STRESS_DIR="$LOCKEXT_ROOT/test/stress"
QUEUE=stress
export QUEUE_STRESS_JOBS=${QUEUE_STRESS_JOBS:-100000}
export QUEUE_STRESS_KEYS=${QUEUE_STRESS_KEYS:-1000}
export QUEUE_STRESS_LEASE_MS=${QUEUE_STRESS_LEASE_MS:-2000}

# psql against the private server, stopping at the first error.
run_psql() {
    psql -X -q -v ON_ERROR_STOP=1 "$@"
}

# Print why the run failed, with the server log, and exit non-zero.
fail() {
    echo "== QUEUE STRESS FAILED: $*"
    if [ -n "${LOCKEXT_SERVER_DIR:-}" ] && [ -f "$LOCKEXT_SERVER_DIR/server.log" ]; then
        echo "== server log (last 50 lines):"
        tail -n 50 "$LOCKEXT_SERVER_DIR/server.log"
    fi
    keep_logs
    exit 1
}

# Copy the run's logs to QUEUE_STRESS_KEEP_LOGS, if set.
keep_logs() {
    [ -n "${QUEUE_STRESS_KEEP_LOGS:-}" ] && [ -n "${WORK_DIR:-}" ] || return 0
    mkdir -p "$QUEUE_STRESS_KEEP_LOGS"
    cp -r "$WORK_DIR/logs/." "$QUEUE_STRESS_KEEP_LOGS/"
    echo "== logs kept in $QUEUE_STRESS_KEEP_LOGS"
}

# Stop the server and remove the work dir (EXIT trap).
cleanup() {
    stop_server
    [ -n "${WORK_DIR:-}" ] && rm -rf "$WORK_DIR"
}

t_start=$SECONDS
ensure_packages
build_and_install
WORK_DIR=$(mktemp -d /tmp/lockext-queue-stress.XXXXXX)
trap cleanup EXIT
echo "== compiling queue_worker"
g++ -O2 -std=c++17 -Wall -Wextra -I"$(pg_config --includedir)" \
    "$STRESS_DIR/queue_worker.cpp" -o "$WORK_DIR/queue_worker" -L"$(pg_config --libdir)" -lpq
# Commit timestamps let the checker order completions by commit time.
if [ "${QUEUE_STRESS_RESTART:-0}" = 1 ]; then
    start_server "track_commit_timestamp = on"
    # -l again: a restart does not remember where the log went.
    if [ "$(id -u)" = 0 ]; then as=(runuser -u postgres --); else as=(); fi
    export QUEUE_STRESS_RESTART_CMD="${as[*]} pg_ctl -D '$LOCKEXT_SERVER_DIR/data' -m immediate -w -t 120 -l '$LOCKEXT_SERVER_DIR/server.log' restart"
else
    start_server "track_commit_timestamp = on" "synchronous_commit = off"
fi
trap cleanup EXIT   # start_server set its own trap: keep stopping it, and clean up too
echo "== server at $LOCKEXT_SERVER_DIR, port $PGPORT"

run_psql -c 'CREATE EXTENSION lockext'
run_psql -c "SELECT lockext.create_queue('$QUEUE')"
run_psql -f "$STRESS_DIR/queue_stress.psql"

t_drive=$SECONDS
driver_rc=0
"$STRESS_DIR/queue_driver.sh" "$WORK_DIR/queue_worker" "$WORK_DIR/logs" "$QUEUE" || driver_rc=$?
KILLS=0 ELAPSED_MS=0
[ -f "$WORK_DIR/logs/driver.env" ] && source "$WORK_DIR/logs/driver.env"

t_check=$SECONDS
check_rc=0
check_out=$("$STRESS_DIR/queue_check.sh" "$WORK_DIR/logs" "$QUEUE" "$QUEUE_STRESS_JOBS" \
                "$QUEUE_STRESS_LEASE_MS" "$KILLS" 2>&1) || check_rc=$?
echo "$check_out"
t_end=$SECONDS

failures=()
[ "$driver_rc" = 0 ] || failures+=("driver exited with $driver_rc")
[ "$check_rc" = 0 ] || failures+=("checker found violations (exit $check_rc)")
if grep -E 'PANIC|FATAL|TRAP:|terminated by signal|ERROR:' "$LOCKEXT_SERVER_DIR/server.log" |
        grep -vE 'FATAL:  terminating connection due to administrator command|could not receive data from client|connection to client lost|could not send data to client' \
        >"$WORK_DIR/server-errors.txt"; then
    failures+=("errors in the server log: $(head -3 "$WORK_DIR/server-errors.txt" | tr '\n' ' ')")
fi
[ ${#failures[@]} -eq 0 ] || fail "$(IFS=';'; echo "${failures[*]}")"

counts=$(grep '^== counts:' <<<"$check_out" | sed 's/^== counts: //')
echo "== QUEUE STRESS OK: $counts; drain $(( ELAPSED_MS / 1000 )).$(( ELAPSED_MS % 1000 / 100 )) s," \
     "check $(( t_end - t_check )) s, total $(( t_end - t_start )) s (setup $(( t_drive - t_start )) s)"
keep_logs
