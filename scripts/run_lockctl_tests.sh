#!/usr/bin/env bash
# End-to-end tests of lockctl (test/lockctl/lockctl_test.sh): builds the
# client's lockctl (or uses $LOCKCTL if set), installs the extension, starts
# a private PostgreSQL, runs the tests against it, and stops it.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_packages cmake pkg-config libpqxx-dev tmux curl prometheus iproute2
WORK=$(mktemp -d /tmp/lockext-lockctl.XXXXXX)

# Stop the server and remove the build tree; the EXIT trap.
cleanup() {
    stop_server
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
psql -X -q -c "CREATE EXTENSION lockext" || exit 1
LOCKEXT_URL="postgresql:///postgres?host=$PGHOST&port=$PGPORT&user=postgres" LOCKCTL=$LOCKCTL \
    bash "$LOCKEXT_ROOT/test/lockctl/lockctl_test.sh"
