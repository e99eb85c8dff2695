#!/usr/bin/env bash
# The main job: lockctl against a private PostgreSQL with lockext and a
# private redis-server, which this script starts and stops.
#   1. three `lockctl run` processes contend for one lock: the handoffs and
#      the rising fencing tokens;
#   2. `lockctl holders` while they run;
#   3. the same contention over Redis, through the same lockctl;
#   4. a queue filled with keyed jobs, worked by `lockctl work` at
#      concurrency 4: per-key order, read back from the jobs' own output.
# Builds lockctl once into /tmp/lockext-client-build-<checkout hash> (reused
# by later runs from the same checkout).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/lib_redis.sh"

BUILD=/tmp/lockext-client-build-$(echo "$LOCKEXT_ROOT" | md5sum | cut -c1-8)
ensure_packages cmake pkg-config libpqxx-dev libhiredis-dev redis-server
echo "== building lockctl (first run only; later runs reuse $BUILD)"
cmake -S "$LOCKEXT_ROOT/client" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DLOCKEXT_BUILD_TESTS=OFF >"$BUILD.log" 2>&1 &&
    cmake --build "$BUILD" -j "$(nproc)" --target lockctl >>"$BUILD.log" 2>&1 ||
    { tail -40 "$BUILD.log"; exit 1; }
build_and_install
start_server
psql -X -q -c "CREATE EXTENSION lockext" || exit 1
export LOCKEXT_URL="postgresql:///postgres?host=$PGHOST&port=$PGPORT&user=postgres"
lockctl() { "$BUILD/lockctl" "$@"; }
OUT=$(mktemp -d /tmp/lockext-demo.XXXXXX)
trap 'stop_server; stop_redis_nodes; rm -rf "$OUT"' EXIT
start_redis_node || exit 1
REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
started=$(date +%s%N)

echo
echo "== 1. Three workers start the nightly report at once; the lock lets one run at a time"
echo "   lockctl run nightly-report --wait 30s -- ./report.sh   (x3)"
runs=()
for w in A B C; do
    lockctl run nightly-report --ttl 10s --wait 30s --owner "worker-$w" -- sh -c '
        echo "$(date +%T.%3N)  worker-'$w' runs the report, fencing token $LOCKEXT_TOKEN"
        sleep 0.8
        echo "$(date +%T.%3N)  worker-'$w' done"' >>"$OUT/run.log" &
    runs+=($!)
done
sleep 0.4

echo
echo "== 2. lockctl holders (one holds the lock; the other two wait)"
lockctl holders | sed 's/^/   /'
wait "${runs[@]}"  # not a bare wait: the redis-server is a background job too
runs=()
echo
echo "   What the three runs printed:"
sed 's/^/   /' "$OUT/run.log"
tokens=$(grep -o 'token [0-9]*' "$OUT/run.log" | awk '{ print $2 }' | paste -sd' ')
echo "   Tokens in run order: $tokens"
echo "   Each handoff gets a higher token, so storage fenced by it can refuse a stale holder."

echo
echo "== 3. The same three workers against Redis: only the URL changes"
echo "   LOCKEXT_URL=$REDIS_URL lockctl run nightly-report --wait 30s -- ./report.sh   (x3)"
for w in A B C; do
    LOCKEXT_URL=$REDIS_URL lockctl run nightly-report --ttl 10s --wait 30s -- sh -c '
        echo "$(date +%T.%3N)  worker-'$w' runs the report, fencing token $LOCKEXT_TOKEN"
        sleep 0.5
        echo "$(date +%T.%3N)  worker-'$w' done"' >>"$OUT/redis.log" &
    runs+=($!)
done
wait "${runs[@]}"  # not a bare wait: the redis-server is a background job too
sed 's/^/   /' "$OUT/redis.log"
echo "   Tokens rise here too (on Redis they start from the server's clock in µs; see the README)."
echo "   lockctl holders has no global view there, and says so:"
LOCKEXT_URL=$REDIS_URL lockctl holders 2>&1 | sed 's/^/   /' || true

echo
echo "== 4. A queue of keyed jobs: 3 customers x 4 steps each, worked by 4 workers"
psql -X -q -c "SELECT lockext.create_queue('orders')" >/dev/null
for step in 1 2 3 4; do
    for customer in alice bob carol; do
        lockctl enqueue orders --key "$customer" "{\"customer\": \"$customer\", \"step\": $step}" >/dev/null
    done
done
echo "   lockctl enqueue orders --key alice '{\"customer\": \"alice\", \"step\": 1}'   (x12)"
echo "   lockctl work orders --concurrency 4 --until-empty -- ./handle-order.sh"
lockctl work orders --concurrency 4 --until-empty -- sh -c '
    payload=$(cat)
    sleep 0.1
    echo "$(date +%T.%3N)  job $LOCKEXT_JOB_ID  key $LOCKEXT_JOB_KEY  $payload"' >"$OUT/work.log"
sed 's/^/   /' "$OUT/work.log"
echo
echo "   Per key, in the order the jobs ran (steps must come 1 2 3 4):"
for customer in alice bob carol; do
    steps=$(grep "key $customer " "$OUT/work.log" | grep -o '"step": [0-9]*' | awk '{ print $2 }' | paste -sd' ')
    verdict=$([ "$steps" = "1 2 3 4" ] && echo "in order" || echo "OUT OF ORDER")
    printf '   %-6s %s  (%s)\n' "$customer" "$steps" "$verdict"
done
echo "   Different customers ran side by side; each customer's steps never did."

elapsed=$(( ($(date +%s%N) - started) / 1000000 ))
echo
echo "== Done in $((elapsed / 1000)).$(printf '%03d' $((elapsed % 1000))) s; the private servers are stopped and removed."
echo "Where to look next:"
echo "   $BUILD/lockctl --help"
echo "       every command, its options and exit statuses"
echo "   README.md: the guarantees, the SQL API, the C++ client, lockctl, the benchmarks"
echo "   bash scripts/test.sh: every test (pg_regress, isolation, TAP, stress, client, lockctl)"
echo "   In psql: lockext.holders, lockext.waiters, lockext.stats, lockext.queue_stats"
