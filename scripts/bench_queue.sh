#!/usr/bin/env bash
# Benchmark lockext's job queue against a plain SKIP LOCKED queue (and pgmq,
# when PGMQ_SRC points to its source).
#
# Builds and installs the extension, starts a private server, then measures
#   1. jobs/s for the full cycle enqueue -> dequeue -> complete, with 1 and 8
#      workers, single jobs and batches: pgbench, every transaction one full
#      cycle (test/bench/queue_*.sql), lockext with keyed jobs (per-key order
#      enforced), pgmq (if built) and the plain baseline interleaved in every
#      round, each run on freshly created queues;
#   2. bloat: a fixed dequeue+complete workload on a fresh queue, then
#      BENCH_QUEUE_BLOAT_JOBS jobs pushed through the same queue (enqueue_batch,
#      batch dequeue, batch complete; autovacuum as create_queue sets it up),
#      then the same workload again.
# Prints Markdown tables (and writes them to $BENCH_OUT if set). The product
# targets are printed next to the numbers; nothing fails on them. The script
# fails only when a run itself breaks (pgbench abort, SQL error, ...).
#
# Environment:
#   BENCH_SECONDS             duration of each throughput run (default 10)
#   BENCH_ROUNDS              interleaved rounds; the median is reported (default 2)
#   BENCH_QUEUE_KEYS          distinct job keys for lockext (default 1000)
#   BENCH_QUEUE_BATCH         jobs per batch (default 100)
#   BENCH_QUEUE_BLOAT_JOBS    jobs pushed through between the two bloat
#                             measurements (default 1000000; 0 skips part 2)
#   BENCH_QUEUE_PROBE_JOBS    jobs in the bloat measurement, dequeued in
#                             batches (default 20000)
#   BENCH_QUEUE_PROBE_SINGLE  jobs in the bloat measurement, dequeued one by
#                             one (default 10000: at about 4,000 jobs/s, 2,000
#                             jobs lasted half a second, and one scheduler or
#                             autovacuum hiccup moved the result by a third)
#   BENCH_QUEUE_PUSH_CLIENTS  workers pushing the bloat jobs (default 1)
#   BENCH_QUEUE_PUSH_MAX_SECONDS  stop the push after the part running when
#                             this many seconds have passed (default 300); the
#                             report then says how many jobs went through
#   BENCH_QUEUE_SETTLE_SECONDS  if set, also probe again after this many more
#                             seconds of autovacuum alone (default 0: no)
#   BENCH_OUT                 also write the Markdown report to this file
#   PGMQ_SRC                  a pgmq source tree's PGXS directory (the one with
#                             pgmq's Makefile and pgmq.control, pgmq-extension/
#                             in its repository): built and installed with the
#                             same pg_config, and pgmq (pure SQL) runs as one
#                             more kind in part 1. Unset, or when the build
#                             fails, pgmq is skipped with a note
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

BENCH_SECONDS=${BENCH_SECONDS:-10}
BENCH_ROUNDS=${BENCH_ROUNDS:-2}
BENCH_QUEUE_KEYS=${BENCH_QUEUE_KEYS:-1000}
BENCH_QUEUE_BATCH=${BENCH_QUEUE_BATCH:-100}
BENCH_QUEUE_BLOAT_JOBS=${BENCH_QUEUE_BLOAT_JOBS:-1000000}
BENCH_QUEUE_PROBE_JOBS=${BENCH_QUEUE_PROBE_JOBS:-20000}
BENCH_QUEUE_PROBE_SINGLE=${BENCH_QUEUE_PROBE_SINGLE:-10000}
BENCH_QUEUE_PUSH_CLIENTS=${BENCH_QUEUE_PUSH_CLIENTS:-1}
BENCH_QUEUE_PUSH_MAX_SECONDS=${BENCH_QUEUE_PUSH_MAX_SECONDS:-300}
BENCH_QUEUE_SETTLE_SECONDS=${BENCH_QUEUE_SETTLE_SECONDS:-0}
BENCH_OUT=${BENCH_OUT:-}
PGMQ_SRC=${PGMQ_SRC:-}
PGMQ_ON=0                    # 1 once pgmq is built, installed and created
PGMQ_VERSION=                # pgmq's installed extversion, for the report
PGMQ_SKIP_NOTE="pgmq: skipped (set PGMQ_SRC to a pgmq source tree to include it)"
BENCH_DIR="$LOCKEXT_ROOT/test/bench"
QUEUE=bench                  # the queue name the pgbench scripts use
KINDS=(lockext ackfetch plain)
SHAPES=(single batch)
CLIENT_COUNTS=(1 8)
PUSH_CHUNKS=20               # the bloat push runs in this many timed parts
# One job's payload (~90 bytes of JSON), the same for both queues.
PAYLOAD='{"job": "bench", "data": "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}'
PAYLOADS=                    # BENCH_QUEUE_BATCH copies, as a jsonb[] literal

# Print a message on stderr and exit non-zero.
fail() {
    echo "bench_queue: error: $*" >&2
    exit 1
}

# Check the knobs: positive integers (the bloat job count may be 0).
check_settings() {
    local v
    for v in BENCH_SECONDS BENCH_ROUNDS BENCH_QUEUE_KEYS BENCH_QUEUE_BATCH \
             BENCH_QUEUE_PROBE_JOBS BENCH_QUEUE_PROBE_SINGLE BENCH_QUEUE_PUSH_CLIENTS \
             BENCH_QUEUE_PUSH_MAX_SECONDS; do
        [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || fail "$v must be a positive integer, not '${!v}'"
    done
    [[ "$BENCH_QUEUE_SETTLE_SECONDS" =~ ^(0|[1-9][0-9]*)$ ]] ||
        fail "BENCH_QUEUE_SETTLE_SECONDS must be a non-negative integer, not '$BENCH_QUEUE_SETTLE_SECONDS'"
    [[ "$BENCH_QUEUE_BLOAT_JOBS" =~ ^(0|[1-9][0-9]*)$ ]] ||
        fail "BENCH_QUEUE_BLOAT_JOBS must be a non-negative integer, not '$BENCH_QUEUE_BLOAT_JOBS'"
    (( BENCH_QUEUE_PROBE_JOBS >= BENCH_QUEUE_BATCH )) ||
        fail "BENCH_QUEUE_PROBE_JOBS must be at least BENCH_QUEUE_BATCH"
}

# Build the jsonb[] literal of BENCH_QUEUE_BATCH payloads (pgbench -D value).
make_payloads() {
    local elem i
    elem=${PAYLOAD//\"/\\\"}
    PAYLOADS="{\"$elem\""
    for (( i = 1; i < BENCH_QUEUE_BATCH; i++ )); do PAYLOADS+=",\"$elem\""; done
    PAYLOADS+="}"
}

# Run one psql command quietly, stopping on the first error.
sql() {
    psql -X -q -v ON_ERROR_STOP=1 "$@"
}

# Fresh lockext queue and plain table (and pgmq queue when pgmq runs), then a
# checkpoint, before every run.
reset_queues() {
    if [ "$PGMQ_ON" = 1 ]; then
        sql -c "SELECT bench_queue_reset('$QUEUE')" -c "SELECT bench_pgmq_reset('$QUEUE')" \
            -c "CHECKPOINT" >/dev/null
    else
        sql -c "SELECT bench_queue_reset('$QUEUE')" -c "CHECKPOINT" >/dev/null
    fi
}

# Jobs still in the queue of kind $1 (lockext, ackfetch: waiting + running;
# plain: rows; pgmq: messages in its queue table, visible or not).
jobs_left() {
    case $1 in
        plain) sql -At -c "SELECT count(*) FROM plain_queue" ;;
        pgmq)  sql -At -c "SELECT count(*) FROM pgmq.q_$QUEUE" ;;
        *)     sql -At -c "SELECT waiting FROM bench_queue_left('$QUEUE')" ;;
    esac
}

# Build and install pgmq from PGMQ_SRC with the server's pg_config and create
# it in the benchmark database; on success add the pgmq kind (PGMQ_ON=1),
# otherwise print why and the skip note, and go on without it.
setup_pgmq() {
    local out
    if [ -z "$PGMQ_SRC" ]; then
        echo "$PGMQ_SKIP_NOTE"
        return 0
    fi
    echo "== building pgmq from $PGMQ_SRC"
    # Two make runs: the Makefile generates sql/pgmq--<version>.sql in `all`,
    # and its DATA wildcard must see that file when `install` is read.
    if ! [ -f "$PGMQ_SRC/Makefile" ] || ! [ -f "$PGMQ_SRC/pgmq.control" ]; then
        echo "   pgmq: $PGMQ_SRC has no Makefile and pgmq.control"
    elif ! out=$(make -C "$PGMQ_SRC" -s PG_CONFIG="$PGBIN/pg_config" 2>&1 &&
                 as_root make -C "$PGMQ_SRC" -s PG_CONFIG="$PGBIN/pg_config" install 2>&1); then
        printf '%s\n' "$out" | tail -n 20 | sed 's/^/   /'
        echo "   pgmq: the build in $PGMQ_SRC failed"
    elif ! out=$(sql -c "CREATE EXTENSION IF NOT EXISTS pgmq" 2>&1); then
        printf '%s\n' "$out" | sed 's/^/   /'
        echo "   pgmq: CREATE EXTENSION pgmq failed"
    else
        PGMQ_ON=1
        PGMQ_VERSION=$(sql -At -c "SELECT extversion FROM pg_extension WHERE extname = 'pgmq'")
        KINDS+=(pgmq)
        echo "   pgmq $PGMQ_VERSION installed"
        return 0
    fi
    echo "$PGMQ_SKIP_NOTE"
}

# Where the pgmq measured comes from, for the report: its version, the git
# commit of PGMQ_SRC if it is in a git work tree, and the md5 of its SQL.
pgmq_source() {
    local commit sqlf="$PGMQ_SRC/sql/pgmq.sql"
    commit=$(git -C "$PGMQ_SRC" rev-parse --short=12 HEAD 2>/dev/null || true)
    printf 'pgmq %s from %s' "$PGMQ_VERSION" "$PGMQ_SRC"
    [ -n "$commit" ] && printf ' (commit %s)' "$commit"
    [ -f "$sqlf" ] && printf ', sql/pgmq.sql md5 %s' "$(md5sum "$sqlf" | cut -c1-12)"
    return 0
}

# Run pgbench on script $1 with $2 clients and extra pgbench arguments after
# that; print its full output (fails on pgbench errors).
pgbench_run() {
    local script=$1 clients=$2 out
    shift 2
    local threads=$(( clients > 1 ? 2 : 1 ))
    if ! out=$(pgbench -n -M prepared -r -c "$clients" -j "$threads" \
                       -D payload="$PAYLOAD" -D payloads="$PAYLOADS" \
                       -D batch="$BENCH_QUEUE_BATCH" -D keys="$BENCH_QUEUE_KEYS" \
                       -D pid=0 -D ptok=0 -D pids='{}' -D ptoks='{}' \
                       -f "$BENCH_DIR/$script" "$@" 2>&1); then
        printf '%s\n' "$out" >&2
        fail "pgbench $script -c $clients failed"
    fi
    if grep -qiE 'aborted|error' <<<"$out"; then
        printf '%s\n' "$out" >&2
        fail "pgbench $script -c $clients reported errors"
    fi
    printf '%s\n' "$out"
}

# From pgbench output $1: "tps transactions".
pgbench_tps() {
    local tps n
    tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' <<<"$1")
    n=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$1")
    if [ -z "$tps" ] || [ -z "$n" ]; then
        printf '%s\n' "$1" >&2
        fail "no tps in pgbench output"
    fi
    echo "$tps $n"
}

# From pgbench -r output $1: the mean latency (ms) of each SQL statement,
# space-separated, in script order.
pgbench_stmt_ms() {
    awk '/^statement latencies/ { on = 1; next }
         on && $3 ~ /^(SELECT|INSERT|DELETE|UPDATE)$/ { printf "%s ", $1 }' <<<"$1"
}

# Jobs/s of a run: tps * (jobs enqueued - jobs left) / transactions.
jobs_rate() {
    local tps=$1 n=$2 per_tx=$3 left=$4
    awk -v t="$tps" -v n="$n" -v b="$per_tx" -v l="$left" \
        'BEGIN { printf "%.1f", (n > 0) ? t * (n * b - l) / n : 0 }'
}

# Median of the numbers given as arguments.
median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
        END { if (NR % 2) printf "%.1f", v[(NR + 1) / 2];
              else printf "%.1f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# Part 1: every kind and shape at every client count, interleaved; fills
# RATE[kind,shape,clients] (median jobs/s), LEFT[...] (jobs left, last round)
# and STMT[...] (per-statement ms, last round).
declare -A RATE LEFT STMT
run_throughput() {
    local clients round i shape kind out tps n left per_tx rate
    local combos=()
    for shape in "${SHAPES[@]}"; do
        for kind in "${KINDS[@]}"; do combos+=("$kind,$shape"); done
    done
    for clients in "${CLIENT_COUNTS[@]}"; do
        local -A samples=()
        for (( round = 0; round < BENCH_ROUNDS; round++ )); do
            # Rotate the order each round so no combination always runs first.
            for (( i = 0; i < ${#combos[@]}; i++ )); do
                IFS=, read -r kind shape <<<"${combos[$(( (i + round) % ${#combos[@]} ))]}"
                per_tx=1
                [ "$shape" = batch ] && per_tx=$BENCH_QUEUE_BATCH
                reset_queues
                out=$(pgbench_run "queue_${kind}_${shape}.sql" "$clients" -T "$BENCH_SECONDS")
                read -r tps n <<<"$(pgbench_tps "$out")"
                left=$(jobs_left "$kind")
                rate=$(jobs_rate "$tps" "$n" "$per_tx" "$left")
                printf '   %-7s %-6s -c %d  round %d: %9.1f jobs/s  (%s tx, %s jobs left)\n' \
                    "$kind" "$shape" "$clients" $(( round + 1 )) "$rate" "$n" "$left"
                samples[$kind,$shape]+="$rate "
                LEFT[$kind,$shape,$clients]=$left
                STMT[$kind,$shape,$clients]=$(pgbench_stmt_ms "$out")
            done
        done
        for kind in "${KINDS[@]}"; do
            for shape in "${SHAPES[@]}"; do
                # shellcheck disable=SC2086  # word splitting of the sample list is intended
                RATE[$kind,$shape,$clients]=$(median ${samples[$kind,$shape]})
            done
        done
    done
}

# Enqueue $1 keyed jobs into the lockext queue in one statement (untimed):
# job i gets key i mod BENCH_QUEUE_KEYS.
fill_queue() {
    sql -c "SELECT count(*) FROM lockext.enqueue_batch('$QUEUE',
              ARRAY(SELECT '$PAYLOAD'::jsonb FROM generate_series(1, $1)),
              ARRAY(SELECT 'k' || (i % $BENCH_QUEUE_KEYS) FROM generate_series(1, $1) i))" >/dev/null
}

# Dequeue and complete every job left in the lockext queue (untimed).
drain_queue() {
    local left tries=0
    while :; do
        left=$(sql -At -c "SELECT lockext.complete('$QUEUE', coalesce(array_agg(id), '{}'),
                                                   coalesce(array_agg(token), '{}'))
                             FROM lockext.dequeue('$QUEUE', 1000)" \
                       -c "SELECT waiting FROM bench_queue_left('$QUEUE')" | tail -n 1)
        [ "$left" = 0 ] && return 0
        (( ++tries < 10000 )) || fail "could not drain the queue ($left jobs left)"
    done
}

# Size of all tables of the lockext schema with their indexes (MB), their
# dead tuples, and autovacuum runs on them so far: "MB dead vacuums". Only
# the benchmark queue exists, so this is its footprint whatever tables the
# extension keeps it in.
queue_table_state() {
    sql -At -F ' ' -c "
        SELECT round(sum(pg_total_relation_size(s.relid)) / 1048576.0, 1),
               sum(s.n_dead_tup), sum(s.autovacuum_count)
          FROM pg_stat_user_tables s WHERE s.schemaname = 'lockext'"
}

# The timed bloat workload: PROBE_JOBS jobs dequeued in batches by one
# worker, then PROBE_SINGLE jobs one by one. Sets PROBE_BATCH_RATE and
# PROBE_SINGLE_RATE (jobs/s of dequeue + complete).
probe() {
    local out tps n left
    fill_queue "$BENCH_QUEUE_PROBE_JOBS"
    sql -c "CHECKPOINT" >/dev/null
    out=$(pgbench_run queue_drain.sql 1 -t $(( BENCH_QUEUE_PROBE_JOBS / BENCH_QUEUE_BATCH )))
    read -r tps n <<<"$(pgbench_tps "$out")"
    left=$(jobs_left lockext)
    PROBE_BATCH_RATE=$(jobs_rate "$tps" "$n" "$BENCH_QUEUE_BATCH" \
        $(( left - BENCH_QUEUE_PROBE_JOBS % BENCH_QUEUE_BATCH )))
    PROBE_BATCH_STMT=$(pgbench_stmt_ms "$out")
    drain_queue
    fill_queue "$BENCH_QUEUE_PROBE_SINGLE"
    sql -c "CHECKPOINT" >/dev/null
    out=$(pgbench_run queue_drain_single.sql 1 -t "$BENCH_QUEUE_PROBE_SINGLE")
    read -r tps n <<<"$(pgbench_tps "$out")"
    left=$(jobs_left lockext)
    PROBE_SINGLE_RATE=$(jobs_rate "$tps" "$n" 1 "$left")
    PROBE_SINGLE_STMT=$(pgbench_stmt_ms "$out")
    drain_queue
}

# Part 2: probe a fresh queue, push the jobs through, probe again.
declare -A BLOAT
run_bloat() {
    local chunk per_client chunk_jobs out tps n rate pushed=0 start end
    reset_queues
    probe
    BLOAT[before_batch]=$PROBE_BATCH_RATE BLOAT[before_single]=$PROBE_SINGLE_RATE
    BLOAT[before_batch_stmt]=$PROBE_BATCH_STMT BLOAT[before_single_stmt]=$PROBE_SINGLE_STMT
    BLOAT[before_state]=$(queue_table_state)
    printf '   fresh queue:  %9.1f jobs/s in batches, %9.1f jobs/s single\n' \
        "$PROBE_BATCH_RATE" "$PROBE_SINGLE_RATE"
    # Transactions per client per chunk, rounded up to reach the job count.
    per_client=$(( (BENCH_QUEUE_BLOAT_JOBS + BENCH_QUEUE_BATCH * BENCH_QUEUE_PUSH_CLIENTS * PUSH_CHUNKS - 1)
                   / (BENCH_QUEUE_BATCH * BENCH_QUEUE_PUSH_CLIENTS * PUSH_CHUNKS) ))
    chunk_jobs=$(( per_client * BENCH_QUEUE_PUSH_CLIENTS * BENCH_QUEUE_BATCH ))
    BLOAT[chunk_jobs]=$chunk_jobs
    BLOAT[push_rates]=
    start=$(date +%s.%N)
    for (( chunk = 1; chunk <= PUSH_CHUNKS; chunk++ )); do
        out=$(pgbench_run queue_lockext_batch.sql "$BENCH_QUEUE_PUSH_CLIENTS" -t "$per_client")
        read -r tps n <<<"$(pgbench_tps "$out")"
        pushed=$(( pushed + chunk_jobs ))
        rate=$(awk -v t="$tps" -v b="$BENCH_QUEUE_BATCH" 'BEGIN { printf "%.0f", t * b }')
        BLOAT[push_rates]+="$rate "
        printf '   pushed %8d jobs (%d%%): %7s jobs/s enqueued+dequeued+completed in this part\n' \
            "$pushed" $(( 100 * chunk / PUSH_CHUNKS )) "$rate"
        if awk -v a="$start" -v b="$(date +%s.%N)" -v m="$BENCH_QUEUE_PUSH_MAX_SECONDS" \
               'BEGIN { exit !(b - a >= m) }' && (( chunk < PUSH_CHUNKS )); then
            echo "   push stopped after ${BENCH_QUEUE_PUSH_MAX_SECONDS}s (BENCH_QUEUE_PUSH_MAX_SECONDS)"
            break
        fi
    done
    end=$(date +%s.%N)
    BLOAT[pushed]=$pushed
    BLOAT[push_left]=$(jobs_left lockext)
    BLOAT[push_secs]=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.0f", b - a }')
    BLOAT[pushed_state]=$(queue_table_state)
    drain_queue
    probe
    BLOAT[after_batch]=$PROBE_BATCH_RATE BLOAT[after_single]=$PROBE_SINGLE_RATE
    BLOAT[after_batch_stmt]=$PROBE_BATCH_STMT BLOAT[after_single_stmt]=$PROBE_SINGLE_STMT
    BLOAT[after_state]=$(queue_table_state)
    BLOAT[dead_letter]=$(sql -At -c "SELECT dead FROM bench_queue_left('$QUEUE')")
    printf '   after %d jobs: %9.1f jobs/s in batches, %9.1f jobs/s single\n' \
        "$pushed" "$PROBE_BATCH_RATE" "$PROBE_SINGLE_RATE"
    if (( BENCH_QUEUE_SETTLE_SECONDS > 0 )); then
        sleep "$BENCH_QUEUE_SETTLE_SECONDS"
        BLOAT[settle_state]=$(queue_table_state)
        probe
        BLOAT[settled_batch]=$PROBE_BATCH_RATE BLOAT[settled_single]=$PROBE_SINGLE_RATE
        printf '   after %d s more: %9.1f jobs/s in batches, %9.1f jobs/s single\n' \
            "$BENCH_QUEUE_SETTLE_SECONDS" "$PROBE_BATCH_RATE" "$PROBE_SINGLE_RATE"
    fi
}

# Statement latencies "a b c" as "a / b / c" with one decimal.
fmt_ms() {
    awk '{ for (i = 1; i <= NF; i++) printf "%s%.2f", (i > 1 ? " / " : ""), $i }' <<<"$1"
}

# The 1-minute load average.
load_1min() {
    cut -d ' ' -f 1 /proc/loadavg
}

# Jobs/s of pgmq for shape $1 and $2 clients, or "—" when pgmq is skipped.
pgmq_rate() {
    if [ "$PGMQ_ON" = 1 ]; then printf '%.0f' "${RATE[pgmq,$1,$2]}"; else printf '—'; fi
}

# pgmq/plain for shape $1 and $2 clients ("0.93×"), or "—" when pgmq is skipped.
pgmq_ratio() {
    if [ "$PGMQ_ON" = 1 ]; then
        printf '%s×' "$(ratio "${RATE[pgmq,$1,$2]}" "${RATE[plain,$1,$2]}")"
    else
        printf '—'
    fi
}

# The method note's sentence on the pgmq kind, or on its absence.
pgmq_method() {
    if [ "$PGMQ_ON" != 1 ]; then
        echo "**pgmq**: not measured in this run (PGMQ_SRC unset or its build failed);"
        return 0
    fi
    echo "**pgmq single** = \`pgmq.send\` + \`pgmq.read(queue, 30, 1)\` + \`pgmq.delete(queue, msg_id)\`;" \
         "**pgmq batch** = \`pgmq.send_batch\` of ${BENCH_QUEUE_BATCH} + \`pgmq.read(queue, 30, ${BENCH_QUEUE_BATCH})\`" \
         "+ \`pgmq.delete(queue, msg_ids[])\` (pgmq's pure-SQL extension, a non-partitioned queue from \`pgmq.create\`," \
         "30 s visibility timeout; **pgmq has no keys and no per-key ordering**: read takes the oldest visible" \
         "messages with SKIP LOCKED, like the plain baseline, so lockext's keyed columns do more work per job);"
}

# Print the Markdown report on stdout.
report() {
    local clients l p r a ra shape target pgmq_ms pgmq_left
    echo "## lockext queue benchmark"
    echo
    echo "PostgreSQL $(sql -At -c 'SHOW server_version'), $(nproc) CPUs, Unix socket," \
         "synchronous_commit=$(sql -At -c 'SHOW synchronous_commit'), fsync=$(sql -At -c 'SHOW fsync')," \
         "autovacuum=$(sql -At -c 'SHOW autovacuum') (naptime $(sql -At -c 'SHOW autovacuum_naptime');" \
         "the queue partitions carry create_queue's own autovacuum settings)." \
         "Load average (1 min) at start / end: ${LOAD_START} / $(load_1min) (other work on the box skews the numbers)." \
         "Extension: lockext $(sql -At -c "SELECT extversion FROM pg_extension WHERE extname = 'lockext'") (SQL scripts md5 $(cat "$LOCKEXT_ROOT"/sql/lockext--*.sql | md5sum | cut -c1-12))" \
         "$( [ "$PGMQ_ON" = 1 ] && echo "and $(pgmq_source)." || echo "(pgmq not measured).")"
    echo
    echo "### Throughput: full cycle enqueue → dequeue → complete (jobs/s)"
    echo
    echo "Method: pgbench -M prepared, ${BENCH_SECONDS}s per run, median of ${BENCH_ROUNDS}" \
         "interleaved round(s) (order rotated each round), fresh queues before every run;" \
         "1 worker = 1 pgbench client, 8 workers = 8 clients on 2 pgbench threads." \
         "Each pgbench transaction is one full cycle, every statement its own transaction:" \
         "**lockext single** = \`enqueue\` (random key of ${BENCH_QUEUE_KEYS}) + \`dequeue(1)\` + \`complete(id, token)\`;" \
         "**lockext batch** = \`enqueue_batch\` of ${BENCH_QUEUE_BATCH} (random keys of ${BENCH_QUEUE_KEYS})" \
         "+ \`dequeue(${BENCH_QUEUE_BATCH})\` + \`complete(ids[], tokens[])\`;" \
         "**lockext ack+fetch** = the same jobs, but the worker completes the job it fetched last" \
         "and dequeues the next in one call (\`complete_and_dequeue(prev ids, prev tokens, n)\`):" \
         "two commits and two round trips per job like the baseline, and the job still holds its lease between fetch and complete;" \
         "$(pgmq_method)" \
         "**plain single** = \`INSERT\` + \`DELETE … WHERE id = (SELECT … ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING\`;" \
         "**plain batch** = \`INSERT … SELECT unnest(\$1::jsonb[])\` of ${BENCH_QUEUE_BATCH}" \
         "+ \`DELETE … WHERE id IN (SELECT … LIMIT ${BENCH_QUEUE_BATCH} FOR UPDATE SKIP LOCKED) RETURNING\`." \
         "Payloads (~90 B jsonb) go to the server as parameters and come back to the client in every kind." \
         "jobs/s = completed jobs / run time, completed = enqueued − jobs left in the queue at the end" \
         "(a dequeue may find nothing free: taken by another worker or blocked behind its key)." \
         "Why pgbench: every queue is driven by the same C client, with prepared statements," \
         "one connection per worker and the same number of commits a real producer + worker makes" \
         "(lockext needs 3 round trips per cycle because its lease outlives the dequeue transaction," \
         "and so does pgmq, whose visibility timeout outlives the read;" \
         "the plain queue does dequeue and complete in one DELETE)."
    echo
    [ "$PGMQ_ON" = 1 ] || { echo "$PGMQ_SKIP_NOTE: the pgmq columns show —."; echo; }
    echo "| jobs | workers | lockext (keyed, ordered) | lockext ack+fetch | pgmq (no ordering) | plain SKIP LOCKED | lockext/plain | ack+fetch/plain | pgmq/plain | target |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    for shape in "${SHAPES[@]}"; do
        for clients in "${CLIENT_COUNTS[@]}"; do
            l=${RATE[lockext,$shape,$clients]} p=${RATE[plain,$shape,$clients]}
            a=${RATE[ackfetch,$shape,$clients]}
            r=$(ratio "$l" "$p") ra=$(ratio "$a" "$p")
            if [ "$shape" = single ]; then
                target="lockext/plain ≥ 1.0×: $(verdict "$r" ge 1.0) (ack+fetch: $(verdict "$ra" ge 1.0))"
            else
                target="lockext ≥ 20,000 jobs/s: $(verdict "$l" ge 20000) (ack+fetch: $(verdict "$a" ge 20000))"
            fi
            printf '| %s | %d | %.0f | %.0f | %s | %.0f | %s× | %s× | %s | %s |\n' \
                "$( [ "$shape" = single ] && echo single || echo "batch of $BENCH_QUEUE_BATCH")" \
                "$clients" "$l" "$a" "$(pgmq_rate "$shape" "$clients")" "$p" "$r" "$ra" \
                "$(pgmq_ratio "$shape" "$clients")" "$target"
        done
    done
    echo
    echo "Mean latency per statement (ms, last round; pgbench -r), and jobs left at the end of that run:"
    echo
    echo "| jobs | workers | lockext enqueue / dequeue / complete | jobs left | pgmq send / read / delete | jobs left | plain insert / delete | jobs left |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    for shape in "${SHAPES[@]}"; do
        for clients in "${CLIENT_COUNTS[@]}"; do
            pgmq_ms=— pgmq_left=—
            if [ "$PGMQ_ON" = 1 ]; then
                pgmq_ms=$(fmt_ms "${STMT[pgmq,$shape,$clients]}") pgmq_left=${LEFT[pgmq,$shape,$clients]}
            fi
            printf '| %s | %d | %s | %s | %s | %s | %s | %s |\n' "$shape" "$clients" \
                "$(fmt_ms "${STMT[lockext,$shape,$clients]}")" "${LEFT[lockext,$shape,$clients]}" \
                "$pgmq_ms" "$pgmq_left" \
                "$(fmt_ms "${STMT[plain,$shape,$clients]}")" "${LEFT[plain,$shape,$clients]}"
        done
    done
    [ "$BENCH_QUEUE_BLOAT_JOBS" -gt 0 ] || return 0
    local mb dead vac chunk_jobs_report=${BLOAT[chunk_jobs]}
    echo
    echo "### Bloat: dequeue + complete before and after $(printf "%'d" "${BLOAT[pushed]}") jobs (jobs/s)"
    echo
    echo "Method: one worker (pgbench -c 1 -M prepared) dequeues and completes jobs enqueued" \
         "beforehand (untimed, keys round-robin over ${BENCH_QUEUE_KEYS}): $(printf "%'d" "$BENCH_QUEUE_PROBE_JOBS")" \
         "jobs with \`dequeue(${BENCH_QUEUE_BATCH})\` + batch \`complete\`, then" \
         "$(printf "%'d" "$BENCH_QUEUE_PROBE_SINGLE") jobs with \`dequeue(1)\` + \`complete\`." \
         "First on a fresh queue, then after $(printf "%'d" "${BLOAT[pushed]}") jobs went through the same queue" \
         "in ${BLOAT[push_secs]}s (${BENCH_QUEUE_PUSH_CLIENTS} worker(s) running the lockext batch cycle" \
         "as fast as possible, in parts of $(printf "%'d" "$chunk_jobs_report") jobs; ${BLOAT[push_left]} jobs left afterwards were drained" \
         "untimed). No manual VACUUM: only autovacuum, as create_queue configures the partitions."
    if (( BLOAT[pushed] < BENCH_QUEUE_BLOAT_JOBS )); then
        echo
        echo "**The push stopped at the ${BENCH_QUEUE_PUSH_MAX_SECONDS}s cap after $(printf "%'d" "${BLOAT[pushed]}")" \
             "of $(printf "%'d" "$BENCH_QUEUE_BLOAT_JOBS") jobs** (lockext is too slow to push them in the" \
             "time budget; raise BENCH_QUEUE_PUSH_MAX_SECONDS to push them all). The 1,000,000-job target is" \
             "therefore not verified by this run; the ratio below is for the jobs that did go through."
    fi
    echo
    echo "| workload | fresh queue | after $(printf "%'d" "${BLOAT[pushed]}") jobs | after/fresh | target |"
    echo "|---|---:|---:|---:|---|"
    r=$(ratio "${BLOAT[after_batch]}" "${BLOAT[before_batch]}")
    printf '| dequeue(%d) + complete, %s jobs | %.0f | %.0f | %s× | ≥ 0.80×: %s |\n' \
        "$BENCH_QUEUE_BATCH" "$(printf "%'d" "$BENCH_QUEUE_PROBE_JOBS")" \
        "${BLOAT[before_batch]}" "${BLOAT[after_batch]}" "$r" "$(verdict "$r" ge 0.8)"
    r=$(ratio "${BLOAT[after_single]}" "${BLOAT[before_single]}")
    printf '| dequeue(1) + complete, %s jobs | %.0f | %.0f | %s× | ≥ 0.80×: %s |\n' \
        "$(printf "%'d" "$BENCH_QUEUE_PROBE_SINGLE")" \
        "${BLOAT[before_single]}" "${BLOAT[after_single]}" "$r" "$(verdict "$r" ge 0.8)"
    if (( BENCH_QUEUE_SETTLE_SECONDS > 0 )); then
        printf '| the same, %d s of autovacuum later: batch / single | %.0f / %.0f | %.0f / %.0f | %s× / %s× | — |\n' \
            "$BENCH_QUEUE_SETTLE_SECONDS" "${BLOAT[before_batch]}" "${BLOAT[before_single]}" \
            "${BLOAT[settled_batch]}" "${BLOAT[settled_single]}" \
            "$(ratio "${BLOAT[settled_batch]}" "${BLOAT[before_batch]}")" \
            "$(ratio "${BLOAT[settled_single]}" "${BLOAT[before_single]}")"
    fi
    echo
    echo "Dequeue / complete latency (ms): batch $(fmt_ms "${BLOAT[before_batch_stmt]}") fresh," \
         "$(fmt_ms "${BLOAT[after_batch_stmt]}") after; single $(fmt_ms "${BLOAT[before_single_stmt]}") fresh," \
         "$(fmt_ms "${BLOAT[after_single_stmt]}") after."
    echo
    echo "Push rate per part of $(printf "%'d" "$chunk_jobs_report") jobs, in order (jobs/s): $(sed 's/ $//; s/ /, /g' <<<"${BLOAT[push_rates]}")."
    echo
    echo "| lockext schema tables (+ indexes) | size (MB) | dead tuples | autovacuum runs |"
    echo "|---|---:|---:|---:|"
    read -r mb dead vac <<<"${BLOAT[before_state]}"
    printf '| after the fresh measurement | %s | %s | %s |\n' "$mb" "$dead" "$vac"
    read -r mb dead vac <<<"${BLOAT[pushed_state]}"
    printf '| right after the push | %s | %s | %s |\n' "$mb" "$dead" "$vac"
    read -r mb dead vac <<<"${BLOAT[after_state]}"
    printf '| after the second measurement | %s | %s | %s |\n' "$mb" "$dead" "$vac"
    if (( BENCH_QUEUE_SETTLE_SECONDS > 0 )); then
        read -r mb dead vac <<<"${BLOAT[settle_state]}"
        printf '| %d s later, before the third | %s | %s | %s |\n' "$BENCH_QUEUE_SETTLE_SECONDS" "$mb" "$dead" "$vac"
    fi
    echo
    echo "Dead-letter jobs at the end: ${BLOAT[dead_letter]} (expected 0)."
}

# Build, start, measure, report; the server stops on exit.
main() {
    check_settings
    make_payloads
    LOAD_START=$(load_1min)
    cd "$LOCKEXT_ROOT"
    # shellcheck disable=SC2119  # no extra packages needed
    ensure_packages
    build_and_install
    echo "== starting server"
    # Durable defaults (fsync, synchronous_commit) as in production; memory for
    # a small box; stock autovacuum (create_queue sets the queue's own options).
    start_server "shared_buffers = '256MB'" "max_wal_size = '2GB'" \
                 "checkpoint_timeout = '15min'"
    sql -f "$BENCH_DIR/queue_setup.sql" >/dev/null
    setup_pgmq

    echo "== throughput (${BENCH_SECONDS}s per run, ${BENCH_ROUNDS} round(s))"
    run_throughput
    if [ "$BENCH_QUEUE_BLOAT_JOBS" -gt 0 ]; then
        echo "== bloat (${BENCH_QUEUE_BLOAT_JOBS} jobs between two measurements)"
        run_bloat
    fi

    publish_report "$(report)"
    stop_server
}

main "$@"
