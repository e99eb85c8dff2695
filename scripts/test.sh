#!/usr/bin/env bash
# Run every test: the lock table's unit tests, pg_regress and isolation
# specs against a private server,
# the TAP crash tests, the 16-client lock stress run, the queue stress run,
# the C++ client's tests (plain, ThreadSanitizer, AddressSanitizer;
# in-memory, PostgreSQL, Redis and Redlock backends), and lockctl's end-to-end tests.
# Installs what is missing.
# Ends with one "N passed, N failed" line; exits non-zero on any failure.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

passed=0
failed=0
failed_names=()

# Run one suite (a command); count it as passed or failed.
suite() {
    local name=$1
    shift
    echo
    echo "######## $name"
    local started=$SECONDS
    if "$@"; then
        passed=$((passed + 1))
        echo "######## $name: passed in $((SECONDS - started)) s"
    else
        failed=$((failed + 1))
        failed_names+=("$name")
        echo "######## $name: FAILED after $((SECONDS - started)) s"
    fi
}

# pg_regress (test/sql) and isolation specs (test/specs) on a private server.
regress_and_isolation() {
    local results
    results=$(mktemp -d /tmp/lockext-results.XXXXXX)
    (
        start_server
        make -C "$LOCKEXT_ROOT" -s installcheck PG_CONFIG="$PGBIN/pg_config" \
            LOCKEXT_RESULTS="$results"
    ) && { rm -rf "$results"; return 0; }
    find "$results" -name regression.diffs -exec cat {} \;
    echo "(results kept in $results)"
    return 1
}

# The lock table's algorithms alone (test/core), under AddressSanitizer and UBSan.
lock_table_unit() {
    local bin
    bin=$(mktemp /tmp/lockext-lock-table-test.XXXXXX)
    g++ -std=c++20 -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined \
        -I"$LOCKEXT_ROOT/include" "$LOCKEXT_ROOT/src/lock_table.cpp" \
        "$LOCKEXT_ROOT/test/core/lock_table_test.cpp" -lboost_unit_test_framework -o "$bin" &&
        "$bin" --log_level=test_suite
    local rc=$?
    rm -f "$bin"
    return $rc
}

ensure_packages libboost-test-dev
build_and_install
# The client suite leaves its optimised lockext build here for the lockctl
# suite, which then need not build lockctl again.
LOCKEXT_LOCKCTL_DIR=$(mktemp -d /tmp/lockext-lockctl-bin.XXXXXX)
export LOCKEXT_LOCKCTL_DIR
trap 'rm -rf "$LOCKEXT_LOCKCTL_DIR"' EXIT
suite "lock table unit tests (ASan, UBSan)" lock_table_unit
suite "pg_regress + isolation" regress_and_isolation
suite "TAP (crash tokens, not preloaded, notifier, lapsed burial, bulk and full lock table, plans, state-file write failure, dead waiter client, dropped database, crash with running jobs, update from 0.1.0, failover to a streaming standby, synchronous failover and switchover back)" bash "$LOCKEXT_ROOT/scripts/run_tap.sh"
suite "stress (16 clients)" bash "$LOCKEXT_ROOT/scripts/run_stress.sh"
suite "queue stress (8 workers, kill -9)" bash "$LOCKEXT_ROOT/scripts/run_queue_stress.sh"
suite "client (plain, TSan, ASan; memory, PostgreSQL, Redis, Redlock)" bash "$LOCKEXT_ROOT/scripts/run_client_tests.sh"
[ -x "$LOCKEXT_LOCKCTL_DIR/lockctl" ] && export LOCKCTL=$LOCKEXT_LOCKCTL_DIR/lockctl
suite "lockctl end to end (PostgreSQL, Redis, Redlock, tmux)" bash "$LOCKEXT_ROOT/scripts/run_lockctl_tests.sh"

echo
[ "$failed" = 0 ] || echo "failed suites: ${failed_names[*]}"
echo "$passed passed, $failed failed (in $SECONDS s)"
[ "$failed" = 0 ]
