#!/usr/bin/env bash
# Benchmark lockext against PostgreSQL advisory locks and a table-based lease.
#
# Builds and installs the extension, starts a private server, then measures
#   1. acquire+release throughput (pgbench, 1,000 names, 1 and 8 clients),
#      the three implementations interleaved in every round, and a
#      transaction-scope acquire released at commit against
#      pg_try_advisory_xact_lock, in the same rounds;
#   2. handoff latency: release by a holder -> grant to a blocked waiter.
# Prints Markdown tables (and writes them to $BENCH_OUT if set). The product
# targets are printed next to the numbers; nothing fails on them. The script
# fails only when a run itself breaks (pgbench abort, bad token, ...).
#
# Environment:
#   BENCH_SECONDS         duration of each pgbench run (default 10)
#   BENCH_ROUNDS          interleaved rounds per client count; the median tps
#                         is reported (default 2)
#   BENCH_HANDOFF_ROUNDS  measured handoffs per lock kind (default 500)
#   BENCH_OUT             also write the Markdown report to this file
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

BENCH_SECONDS=${BENCH_SECONDS:-10}
BENCH_ROUNDS=${BENCH_ROUNDS:-2}
BENCH_HANDOFF_ROUNDS=${BENCH_HANDOFF_ROUNDS:-500}
BENCH_OUT=${BENCH_OUT:-}
BENCH_DIR="$LOCKEXT_ROOT/test/bench"
KINDS=(lockext advisory table_lease lockext_xact advisory_xact)
CLIENT_COUNTS=(1 8)
BENCH_WORK=

# Stop the server and remove our temp dir; the EXIT trap.
cleanup() {
    stop_server
    [ -n "$BENCH_WORK" ] && rm -rf "$BENCH_WORK"
    return 0
}

# Print a message on stderr and exit non-zero.
fail() {
    echo "bench: error: $*" >&2
    exit 1
}

# Check that the knobs are positive integers.
check_settings() {
    local v
    for v in BENCH_SECONDS BENCH_ROUNDS BENCH_HANDOFF_ROUNDS; do
        [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || fail "$v must be a positive integer, not '${!v}'"
    done
}

# Compile the handoff program into the temp dir (never into the repo).
build_handoff() {
    echo "== compiling handoff"
    g++ -O2 -std=c++17 -pthread -Wall -Wextra -o "$BENCH_WORK/handoff" \
        "$BENCH_DIR/handoff.cpp" -I"$(pg_config --includedir)" \
        -L"$(pg_config --libdir)" -lpq
}

# Run one psql command quietly, stopping on the first error.
sql() {
    psql -X -q -v ON_ERROR_STOP=1 "$@"
}

# Put the database in the same state before every pgbench run.
reset_before_run() {
    sql -c "TRUNCATE bench_lease" -c "CHECKPOINT" >/dev/null
}

# Run pgbench script $1 with $2 clients and $3 threads; print its tps.
run_pgbench() {
    local kind=$1 clients=$2 threads=$3 out
    reset_before_run
    if ! out=$(pgbench -n -M prepared -c "$clients" -j "$threads" -T "$BENCH_SECONDS" \
                       -f "$BENCH_DIR/$kind.sql" 2>&1); then
        printf '%s\n' "$out" >&2
        fail "pgbench $kind -c $clients failed"
    fi
    if grep -qiE 'aborted|error' <<<"$out"; then
        printf '%s\n' "$out" >&2
        fail "pgbench $kind -c $clients reported errors"
    fi
    local tps
    tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' <<<"$out")
    [ -n "$tps" ] || { printf '%s\n' "$out" >&2; fail "no tps in pgbench output for $kind"; }
    echo "$tps"
}

# Median of the numbers given as arguments.
median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
        END { if (NR % 2) printf "%.1f", v[(NR + 1) / 2];
              else printf "%.1f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# Lock requests lockext refused as busy so far (acquire with wait 0 on a held name).
lockext_busy_count() {
    sql -At -c "SELECT timed_out FROM lockext.stats"
}

# Run every kind at every client count, interleaved; fill the TPS array.
declare -A TPS
run_throughput() {
    local clients threads round i kind tps busy_before
    busy_before=$(lockext_busy_count)
    for clients in "${CLIENT_COUNTS[@]}"; do
        threads=$(( clients > 1 ? 2 : 1 ))
        local -A samples=()
        for (( round = 0; round < BENCH_ROUNDS; round++ )); do
            # Rotate the order each round so no kind always runs first.
            for (( i = 0; i < ${#KINDS[@]}; i++ )); do
                kind=${KINDS[$(( (i + round) % ${#KINDS[@]} ))]}
                tps=$(run_pgbench "$kind" "$clients" "$threads")
                printf '   %-12s -c %d  round %d: %10.1f tps\n' "$kind" "$clients" \
                    $(( round + 1 )) "$tps"
                samples[$kind]+="$tps "
            done
        done
        for kind in "${KINDS[@]}"; do
            # shellcheck disable=SC2086  # word splitting of the sample list is intended
            TPS[$kind,$clients]=$(median ${samples[$kind]})
        done
    done
    LOCKEXT_BUSY=$(( $(lockext_busy_count) - busy_before ))
}

# Run the handoff program for both lock kinds; fill the HANDOFF array.
declare -A HANDOFF
run_handoff() {
    local out line mode p50 p99 n mean max
    if ! out=$("$BENCH_WORK/handoff" both "$BENCH_HANDOFF_ROUNDS" 20); then
        fail "handoff benchmark failed"
    fi
    while read -r line; do
        [[ "$line" == RESULT\ * ]] || continue
        read -r _ mode p50 p99 n mean max <<<"$line"
        HANDOFF[$mode]="$p50 $p99 $n $mean $max"
        printf '   %-9s p50 %8.1f us  p99 %8.1f us  mean %8.1f us  max %8.1f us  (n=%d)\n' \
            "$mode" "$p50" "$p99" "$mean" "$max" "$n"
    done <<<"$out"
    if [ -z "${HANDOFF[lockext]:-}" ] || [ -z "${HANDOFF[advisory]:-}" ]; then
        fail "handoff printed no results: $out"
    fi
}

# Print the Markdown report on stdout.
report() {
    local clients la lt l a t
    echo "## lockext benchmark"
    echo
    echo "PostgreSQL $(sql -At -c 'SHOW server_version'), $(nproc) CPUs," \
         "${BENCH_SECONDS}s per pgbench run, median of ${BENCH_ROUNDS} interleaved round(s)," \
         "-M prepared, 1,000 names, Unix socket," \
         "synchronous_commit=$(sql -At -c 'SHOW synchronous_commit')."
    echo
    echo "### Throughput: acquire + release (transactions/s, 2 round trips each)"
    echo
    echo "| benchmark | clients | lockext | advisory | table lease | lockext/advisory | lockext/table |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    for clients in "${CLIENT_COUNTS[@]}"; do
        l=${TPS[lockext,$clients]} a=${TPS[advisory,$clients]} t=${TPS[table_lease,$clients]}
        la=$(ratio "$l" "$a") lt=$(ratio "$l" "$t")
        printf '| acquire+release | %d | %.0f | %.0f | %.0f | %s× (target ≥ 0.9×: %s) | %s× (target ≥ 10×: %s) |\n' \
            "$clients" "$l" "$a" "$t" \
            "$la" "$(verdict "$la" ge 0.9)" "$lt" "$(verdict "$lt" ge 10)"
    done
    echo
    echo "### Throughput: transaction scope, acquire released at commit (transactions/s, 1 round trip)"
    echo
    echo "| benchmark | clients | lockext | advisory (try, xact) | lockext/advisory |"
    echo "|---|---:|---:|---:|---:|"
    for clients in "${CLIENT_COUNTS[@]}"; do
        l=${TPS[lockext_xact,$clients]} a=${TPS[advisory_xact,$clients]}
        printf '| acquire, commit | %d | %.0f | %.0f | %s× |\n' "$clients" "$l" "$a" "$(ratio "$l" "$a")"
    done
    echo
    echo "lockext acquires refused as busy (name held by another client; a lease's token 0 was then released): ${LOCKEXT_BUSY}."
    echo
    echo "### Handoff latency: holder releases -> blocked waiter returns (µs)"
    echo
    echo "| lock | p50 | p99 | mean | max | rounds | target |"
    echo "|---|---:|---:|---:|---:|---:|---|"
    local mode p50 p99 n mean max target
    for mode in lockext advisory; do
        read -r p50 p99 n mean max <<<"${HANDOFF[$mode]}"
        target="—"
        [ "$mode" = lockext ] && target="p50 ≤ 1000 µs: $(verdict "$p50" le 1000)"
        printf '| %s | %.0f | %.0f | %.0f | %.0f | %d | %s |\n' \
            "$mode" "$p50" "$p99" "$mean" "$max" "$n" "$target"
    done
}

# Build, start, measure, report; the server stops on exit.
main() {
    check_settings
    cd "$LOCKEXT_ROOT"
    # shellcheck disable=SC2119  # no extra packages needed
    ensure_packages
    build_and_install
    BENCH_WORK=$(mktemp -d /tmp/lockext-bench.XXXXXX)
    trap cleanup EXIT
    build_handoff
    echo "== starting server"
    # Durable defaults (fsync, synchronous_commit) as in production; memory for
    # a small box; no autovacuum delay so the lease table stays small.
    start_server "shared_buffers = '256MB'" "max_wal_size = '2GB'" \
                 "checkpoint_timeout = '15min'" "autovacuum_vacuum_cost_delay = 0" \
                 "autovacuum_naptime = '10s'"
    trap cleanup EXIT  # start_server set its own trap; keep ours (it stops the server too)
    sql -f "$BENCH_DIR/setup.sql" >/dev/null

    echo "== throughput (${BENCH_SECONDS}s per run, ${BENCH_ROUNDS} round(s))"
    run_throughput
    echo "== handoff latency (${BENCH_HANDOFF_ROUNDS} rounds per lock kind)"
    run_handoff

    publish_report "$(report)"
    stop_server
}

main "$@"
