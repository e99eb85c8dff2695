#!/usr/bin/env bash
# Queue stress driver: enqueues the jobs (qstress.enqueue_all, in the
# background) while WORKERS queue_worker processes work the queue, and every
# KILL_MIN_MS..KILL_MAX_MS kill -9s a random worker and starts a replacement
# with a new log file, until the enqueuer is done and the queue table is
# empty. Then stops the workers with SIGTERM and waits for them.
#
# Usage: queue_driver.sh WORKER_BIN LOGDIR QUEUE
# Env (all optional): QUEUE_STRESS_JOBS (100000), QUEUE_STRESS_KEYS (1000),
#   QUEUE_STRESS_WORKERS (8), QUEUE_STRESS_BATCH (5), QUEUE_STRESS_LEASE_MS
#   (2000), QUEUE_STRESS_CHUNK (1000 jobs per enqueue_batch),
#   QUEUE_STRESS_KILL_MIN_MS / _MAX_MS (1000 / 3000), QUEUE_STRESS_TIMEOUT
#   (seconds, 180), QUEUE_STRESS_WORKER_ARGS (extra queue_worker options),
#   QUEUE_STRESS_RESTART_CMD (a command that restarts the server with an
#   immediate stop: run once, after the enqueuer is done and while jobs are
#   left, with every worker kill -9ed first and restarted after).
# Writes LOGDIR/worker-<slot>-<generation>.log (one per worker process),
# LOGDIR/kills.log (one line per kill) and LOGDIR/driver.env (KILLS=,
# ELAPSED_S=). Exits 0 when the queue drained in time and no worker or the
# enqueuer failed.
set -euo pipefail

if [ $# -ne 3 ]; then
    echo "usage: $0 WORKER_BIN LOGDIR QUEUE" >&2
    exit 2
fi
WORKER_BIN=$1 LOGDIR=$2 QUEUE=$3
JOBS=${QUEUE_STRESS_JOBS:-100000}
KEYS=${QUEUE_STRESS_KEYS:-1000}
WORKERS=${QUEUE_STRESS_WORKERS:-8}
BATCH=${QUEUE_STRESS_BATCH:-5}
LEASE_MS=${QUEUE_STRESS_LEASE_MS:-2000}
CHUNK=${QUEUE_STRESS_CHUNK:-1000}
KILL_MIN_MS=${QUEUE_STRESS_KILL_MIN_MS:-1000}
KILL_MAX_MS=${QUEUE_STRESS_KILL_MAX_MS:-3000}
TIMEOUT=${QUEUE_STRESS_TIMEOUT:-180}
RESTART_CMD=${QUEUE_STRESS_RESTART_CMD:-}
restarted=0
read -r -a WORKER_ARGS <<<"${QUEUE_STRESS_WORKER_ARGS:-}"

declare -a pids gens
kills=0
failures=()
enq_pid=

# Milliseconds since the epoch.
now_ms() {
    local t=$EPOCHREALTIME
    echo $(( ${t%.*} * 1000 + 10#${t#*.} / 1000 ))
}

# psql against the run's server, stopping at the first error.
qpsql() {
    psql -X -q -v ON_ERROR_STOP=1 "$@"
}

# Start (or restart) the worker of slot $1 with the next log generation.
start_worker() {
    local slot=$1
    gens[$slot]=$(( ${gens[$slot]:--1} + 1 ))
    local log
    log=$(printf '%s/worker-%02d-%03d.log' "$LOGDIR" "$slot" "${gens[$slot]}")
    "$WORKER_BIN" "$QUEUE" "$log" --batch "$BATCH" --lease-ms "$LEASE_MS" \
        --seed $(( RANDOM * 32768 + RANDOM )) "${WORKER_ARGS[@]}" \
        >>"$LOGDIR/workers.stderr" 2>&1 &
    pids[$slot]=$!
}

# True when process $1 has exited (gone, or a zombie not yet waited for).
has_exited() {
    local state
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 0
    [ -z "$state" ] || [ "$state" = Z ]
}

# Reap every worker that exited on its own (a failure), restarting its slot.
reap_unexpected() {
    local slot rc
    for slot in "${!pids[@]}"; do
        has_exited "${pids[$slot]}" || continue
        rc=0; wait "${pids[$slot]}" || rc=$?
        failures+=("worker slot $slot (pid ${pids[$slot]}) exited by itself with status $rc")
        start_worker "$slot"
    done
}

# kill -9 the worker of a random slot, record it, and start a replacement.
kill_one() {
    local slot=$(( RANDOM % WORKERS )) rc=0
    local pid=${pids[$slot]}
    kill -9 "$pid" 2>/dev/null || true
    { wait "$pid"; } 2>/dev/null || rc=$?
    if [ "$rc" = 137 ]; then
        kills=$(( kills + 1 ))
        echo "kill slot=$slot pid=$pid gen=${gens[$slot]} t_ms=$(now_ms)" >>"$LOGDIR/kills.log"
    else
        failures+=("worker slot $slot (pid $pid) had exited with status $rc before the kill")
    fi
    start_worker "$slot"
}

# kill -9 every worker (each a kill), restart the server with an immediate
# stop, and start every worker again once it accepts connections.
restart_server() {
    local slot pid rc
    for slot in "${!pids[@]}"; do
        pid=${pids[$slot]}
        kill -9 "$pid" 2>/dev/null || true
        rc=0; { wait "$pid"; } 2>/dev/null || rc=$?
        [ "$rc" = 137 ] || failures+=("worker slot $slot (pid $pid) had exited with status $rc before the restart")
        kills=$(( kills + 1 ))
        echo "kill slot=$slot pid=$pid gen=${gens[$slot]} t_ms=$(now_ms) restart" >>"$LOGDIR/kills.log"
    done
    echo "   $(( ($(now_ms) - t0) / 1000 )) s: restarting the server (immediate stop)"
    bash -c "$RESTART_CMD" >>"$LOGDIR/restart.out" 2>&1 || failures+=("server restart failed: $(tail -3 "$LOGDIR/restart.out")")
    for slot in "${!pids[@]}"; do
        start_worker "$slot"
    done
    restarted=1
}

# Stop everything we started (on any exit path).
cleanup() {
    local pid
    for pid in "${pids[@]}" $enq_pid; do
        kill -9 "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT

# True when the queue's jobs table has no rows left.
queue_empty() {
    [ "$(qpsql -At -c "SELECT NOT EXISTS (SELECT 1 FROM lockext.\"queue_$QUEUE\")")" = t ]
}

mkdir -p "$LOGDIR"
: >"$LOGDIR/kills.log"
echo "== driver: $JOBS jobs over $KEYS keys, $WORKERS workers (batch $BATCH, lease ${LEASE_MS} ms)," \
     "kill -9 every ${KILL_MIN_MS}-${KILL_MAX_MS} ms, timeout ${TIMEOUT} s"
t0=$(now_ms)
qpsql -c "CALL qstress.enqueue_all('$QUEUE', $JOBS, $KEYS, $CHUNK)" >"$LOGDIR/enqueuer.out" 2>&1 &
enq_pid=$!
for (( s = 0; s < WORKERS; s++ )); do
    start_worker "$s"
done

enq_done=0
next_kill=$(( t0 + KILL_MIN_MS + RANDOM % (KILL_MAX_MS - KILL_MIN_MS + 1) ))
next_report=$(( t0 + 10000 ))
drained=0
while :; do
    sleep 0.1
    now=$(now_ms)
    if [ "$enq_done" = 0 ] && has_exited "$enq_pid"; then
        rc=0; wait "$enq_pid" || rc=$?
        enq_done=1
        echo "   enqueuer finished after $(( (now - t0) / 1000 )) s (status $rc)"
        [ "$rc" = 0 ] || { failures+=("enqueuer failed: $(cat "$LOGDIR/enqueuer.out")"); break; }
    fi
    reap_unexpected
    [ ${#failures[@]} -eq 0 ] || break
    if [ "$enq_done" = 1 ] && queue_empty; then
        drained=1
        break
    fi
    if (( now - t0 > TIMEOUT * 1000 )); then
        failures+=("timeout: queue not drained after $TIMEOUT s")
        break
    fi
    if [ -n "$RESTART_CMD" ] && [ "$restarted" = 0 ] && [ "$enq_done" = 1 ] &&
            (( now - t0 > 5000 )); then
        restart_server
        continue
    fi
    if (( now >= next_kill )); then
        kill_one
        next_kill=$(( now + KILL_MIN_MS + RANDOM % (KILL_MAX_MS - KILL_MIN_MS + 1) ))
    fi
    if (( now >= next_report )); then
        left=$(qpsql -At -c "SELECT count(*) FROM lockext.\"queue_$QUEUE\"")
        echo "   $(( (now - t0) / 1000 )) s: $left jobs in the queue, $kills kills"
        next_report=$(( now + 10000 ))
    fi
done
elapsed_ms=$(( $(now_ms) - t0 ))

# Stop the workers cleanly: each finishes its current batch and logs `stop`.
for slot in "${!pids[@]}"; do
    kill -TERM "${pids[$slot]}" 2>/dev/null || true
done
for slot in "${!pids[@]}"; do
    rc=0; wait "${pids[$slot]}" || rc=$?
    [ "$rc" = 0 ] || failures+=("worker slot $slot (pid ${pids[$slot]}) exited with status $rc on SIGTERM")
done
pids=()
[ "$enq_done" = 1 ] || { kill -9 "$enq_pid" 2>/dev/null || true; wait "$enq_pid" || true; }
enq_pid=

[ -z "$RESTART_CMD" ] || [ "$restarted" = 1 ] || failures+=("the queue drained before the server restart")
printf 'KILLS=%s\nELAPSED_MS=%s\n' "$kills" "$elapsed_ms" >"$LOGDIR/driver.env"
echo "== driver: drained=$drained in $(( elapsed_ms / 1000 )).$(( elapsed_ms % 1000 / 100 )) s," \
     "$kills kills, $(ls "$LOGDIR"/worker-*.log | wc -l) worker logs"
if [ -s "$LOGDIR/workers.stderr" ]; then
    echo "== worker stderr:"
    sed 's/^/   /' "$LOGDIR/workers.stderr" | head -20
fi
if [ ${#failures[@]} -gt 0 ]; then
    printf '== driver failure: %s\n' "${failures[@]}"
    exit 1
fi
