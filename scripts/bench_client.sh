#!/usr/bin/env bash
# Benchmark the C++ client (test/bench/client_*.cpp), each against its
# baseline in the same run:
#   - in-memory backend vs std::mutex + std::unordered_map;
#   - KeyedMutex vs one global mutex over a map of mutexes;
#   - PostgreSQL backend vs raw libpqxx pg_advisory_lock/unlock, on a
#     private server this script starts;
#   - Redis backend vs raw hiredis SET NX PX + DEL, on one private
#     redis-server and on a Redlock of three more.
# Builds client/ optimised (Release) in a temp dir. Each program prints its
# own Markdown table; this script collects them (and writes them to
# $BENCH_OUT if set). Targets are printed, not enforced.
# Env: BENCH_SECONDS (per measurement, default 2), BENCH_OUT.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/lib_redis.sh"

ensure_packages cmake pkg-config libpqxx-dev libboost-test-dev redis-server libhiredis-dev
export BENCH_SECONDS=${BENCH_SECONDS:-2}
WORK=$(mktemp -d /tmp/lockext-client-bench.XXXXXX)

# Stop the servers and remove the build tree; the EXIT trap.
cleanup() {
    stop_server
    stop_redis_nodes
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "== building client (Release)"
cmake -S "$LOCKEXT_ROOT/client" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release >"$WORK/build.log" 2>&1 &&
    cmake --build "$WORK/build" -j "$(nproc)" >>"$WORK/build.log" 2>&1 ||
    { tail -40 "$WORK/build.log"; exit 1; }

build_and_install
start_server
trap cleanup EXIT  # start_server set its own trap; ours stops every server
psql -X -q -c "CREATE EXTENSION lockext"
export LOCKEXT_BENCH_URL="postgresql:///postgres?host=$PGHOST&port=$PGPORT&user=postgres"
start_redis_nodes
export LOCKEXT_BENCH_REDIS_URL="$REDIS_URL" LOCKEXT_BENCH_REDLOCK_URL="$REDLOCK_URL"

report="## Client benchmarks ($(date -u +%Y-%m-%d), $(nproc) cores)"
for bench in "$WORK"/build/client_*_bench; do
    echo "== $(basename "$bench")"
    out=$("$bench") || { echo "$out"; echo "bench_client: $(basename "$bench") failed" >&2; exit 1; }
    echo "$out"
    report+=$'\n\n'"### $(basename "$bench")"$'\n\n'"$out"
done
publish_report "$report"
