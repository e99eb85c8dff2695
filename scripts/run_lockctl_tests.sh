#!/usr/bin/env bash
# End-to-end tests of lockctl (test/lockctl/lockctl_test.sh): builds the
# client's lockctl (or uses $LOCKCTL if set), installs the extension, starts
# a private PostgreSQL, a redis-server and a 3-node Redlock, runs the tests
# against them, and stops them.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/lib_redis.sh"

ensure_packages cmake pkg-config libpqxx-dev libhiredis-dev redis-server tmux curl prometheus \
    iproute2
WORK=$(mktemp -d /tmp/lockext-lockctl.XXXXXX)

# Stop the servers and remove the build tree; the EXIT trap.
cleanup() {
    stop_server
    stop_redis_nodes
    rm -rf "$WORK"
}
trap cleanup EXIT

if [ -z "${LOCKCTL:-}" ]; then
    echo "== building lockctl"
    cmake -S "$LOCKEXT_ROOT/client" -B "$WORK/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DLOCKEXT_BUILD_TESTS=OFF >"$WORK/build.log" 2>&1 &&
        cmake --build "$WORK/build" -j "$(nproc)" --target lockctl >>"$WORK/build.log" 2>&1 ||
        { tail -40 "$WORK/build.log"; exit 1; }
    LOCKCTL=$WORK/build/lockctl
fi
build_and_install
start_server
trap cleanup EXIT  # start_server set its own trap; ours stops every server
psql -X -q -c "CREATE EXTENSION lockext" || exit 1
start_redis_nodes || exit 1
LOCKEXT_URL="postgresql:///postgres?host=$PGHOST&port=$PGPORT&user=postgres" LOCKCTL=$LOCKCTL \
    LOCKEXT_REDIS_URL=$REDIS_URL LOCKEXT_REDLOCK_URL=$REDLOCK_URL bash "$LOCKEXT_ROOT/test/lockctl/lockctl_test.sh"
