#!/usr/bin/env bash
# Client tests: build client/ three times and run its Boost.Test suite
# against every backend it supports, on private servers this script starts.
#   1. g++, optimised: memory:, a private PostgreSQL, a private redis-server
#      (redis://) and three more as a Redlock (redlock://);
#   2. clang with -Wthread-safety (errors) and ThreadSanitizer: the same runs;
#   3. clang with AddressSanitizer and UBSan: the same runs;
# (the Redis fault tests start, kill and pause redis-servers of their own,
# on the redis:// run);
# then installs the library into a temp prefix and builds a consumer against
# it through find_package(lockext) and through pkg-config.
# Exits non-zero on the first failure.
# Env: LOCKEXT_CLIENT_SANITIZERS=0 skips builds 2 and 3 (quick local runs).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/lib_redis.sh"

ensure_packages cmake pkg-config clang libpqxx-dev libboost-test-dev prometheus redis-server \
    libhiredis-dev pgbouncer
WORK=$(mktemp -d /tmp/lockext-client.XXXXXX)
JOBS=$(nproc)

# Stop the servers and remove the build trees; the EXIT trap.
cleanup() {
    stop_pgbouncer
    stop_server
    LOCKEXT_SERVER_DIR=${NOPRELOAD_DIR:-} stop_server
    stop_redis_nodes
    rm -rf "$WORK"
}
trap cleanup EXIT

# A PgBouncer in transaction mode in front of the main server, on a unix
# socket, with two server connections: fewer than the tests' client
# connections, so one client connection's statements land on different
# server connections. Sets LOCKEXT_TEST_PGBOUNCER_URL.
start_pgbouncer() {
    PGBOUNCER_DIR=$(mktemp -d /tmp/lockext-pgbouncer.XXXXXX)
    chmod 755 "$PGBOUNCER_DIR"
    [ "$(id -u)" = 0 ] && chown postgres: "$PGBOUNCER_DIR"
    local port=$(( 20000 + RANDOM % 20000 ))
    as_pg_user tee "$PGBOUNCER_DIR/pgbouncer.ini" >/dev/null <<EOF
[databases]
postgres = host=$PGHOST port=$PGPORT dbname=postgres user=postgres
[pgbouncer]
listen_addr =
listen_port = $port
unix_socket_dir = $PGBOUNCER_DIR
auth_type = trust
auth_file = $PGBOUNCER_DIR/users.txt
pool_mode = transaction
default_pool_size = 2
logfile = $PGBOUNCER_DIR/pgbouncer.log
pidfile = $PGBOUNCER_DIR/pgbouncer.pid
EOF
    echo '"postgres" ""' | as_pg_user tee "$PGBOUNCER_DIR/users.txt" >/dev/null
    # With -d the command returns before the daemon listens: wait for its
    # socket and pid file, so a failure shows here, not as failed tests.
    as_pg_user /usr/sbin/pgbouncer -d "$PGBOUNCER_DIR/pgbouncer.ini" >/dev/null || true
    local _
    for _ in $(seq 100); do
        [ -S "$PGBOUNCER_DIR/.s.PGSQL.$port" ] && [ -s "$PGBOUNCER_DIR/pgbouncer.pid" ] && break
        sleep 0.1
    done
    if ! [ -S "$PGBOUNCER_DIR/.s.PGSQL.$port" ] || ! [ -s "$PGBOUNCER_DIR/pgbouncer.pid" ]; then
        echo "pgbouncer did not start:"
        cat "$PGBOUNCER_DIR/pgbouncer.log" 2>/dev/null
        return 1
    fi
    PGBOUNCER_PID=$(cat "$PGBOUNCER_DIR/pgbouncer.pid")
    export LOCKEXT_TEST_PGBOUNCER_URL="postgresql:///postgres?host=$PGBOUNCER_DIR&port=$port&user=postgres"
}

# Stop our PgBouncer (its pid, checked to be a pgbouncer) and wait for it to go.
stop_pgbouncer() {
    [ -n "${PGBOUNCER_DIR:-}" ] && [ -d "$PGBOUNCER_DIR" ] || return 0
    local pid=${PGBOUNCER_PID:-} _
    [ -z "$pid" ] && [ -s "$PGBOUNCER_DIR/pgbouncer.pid" ] && pid=$(cat "$PGBOUNCER_DIR/pgbouncer.pid")
    if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = pgbouncer ]; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    fi
    rm -rf "$PGBOUNCER_DIR"
}

# Configure and build the client in $WORK/$1 with compiler $2 and flags $3.
build() {
    local dir=$WORK/$1 cxx=$2 flags=$3
    echo "== building client ($1)"
    local started=$SECONDS
    cmake -S "$LOCKEXT_ROOT/client" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_CXX_FLAGS="$flags" >"$dir.log" 2>&1 ||
        { cat "$dir.log"; return 1; }
    cmake --build "$dir" -j "$JOBS" >>"$dir.log" 2>&1 || { tail -60 "$dir.log"; return 1; }
    echo "   ($((SECONDS - started)) s)"
}

# Run build $1's test binary against URL $2.
run_tests() {
    echo "== client tests ($1) against ${2%%\?*}"
    local started=$SECONDS
    LOCKEXT_TEST_URL=$2 "$WORK/$1/lockext_client_tests" --log_level=error --report_level=short \
        --color_output=no || return 1
    echo "   ($((SECONDS - started)) s)"
}

# Build a consumer of the installed package both ways and run it.
check_package() {
    local prefix=$WORK/prefix app=$WORK/consumer
    echo "== install + find_package(lockext) + pkg-config"
    cmake --install "$WORK/release" --prefix "$prefix" >/dev/null
    mkdir -p "$app"
    cat >"$app/main.cpp" <<'EOF'
#include <lockext/lockext.hpp>
#include <iostream>
int main() {
    auto locks = lockext::connect("memory:");
    auto lock = locks->acquire("consumer");
    std::cout << "token " << lock.token() << "\n";
    return lock.release() ? 0 : 1;
}
EOF
    cat >"$app/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.22)
project(consumer CXX)
set(CMAKE_CXX_STANDARD 20)
find_package(lockext REQUIRED)
add_executable(consumer main.cpp)
target_link_libraries(consumer PRIVATE lockext::client)
EOF
    cmake -S "$app" -B "$app/build" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null &&
        cmake --build "$app/build" >/dev/null && "$app/build/consumer" || return 1
    PKG_CONFIG_PATH="$prefix/lib/pkgconfig:$prefix/lib/x86_64-linux-gnu/pkgconfig" \
        g++ -o "$app/consumer-pc" "$app/main.cpp" $(PKG_CONFIG_PATH="$prefix/lib/pkgconfig:$prefix/lib/x86_64-linux-gnu/pkgconfig" pkg-config --cflags --libs lockext) &&
        "$app/consumer-pc" || return 1
}

build release g++ "" || exit 1
if [ "${LOCKEXT_CLIENT_SANITIZERS:-1}" != 0 ]; then
    build tsan clang++ "-fsanitize=thread -O1 -g" || exit 1
    # clang: g++ took four times as long to build this configuration.
    build asan clang++ "-fsanitize=address,undefined -fno-omit-frame-pointer -O1 -g" || exit 1
fi

# A second server with the extension created but the library not preloaded,
# for the test of that error (SQLSTATE 55000); then the main one.
start_server "shared_preload_libraries = ''"
NOPRELOAD_DIR=$LOCKEXT_SERVER_DIR
trap cleanup EXIT
psql -X -q -c "CREATE EXTENSION lockext" || exit 1
export LOCKEXT_TEST_NOPRELOAD_URL="postgresql:///postgres?host=$PGHOST&port=$PGPORT&user=postgres"
LOCKEXT_SERVER_DIR=
start_server
trap cleanup EXIT  # start_server set its own trap; ours stops every server
psql -X -q -c "CREATE EXTENSION lockext" || exit 1
PG_URL="postgresql:///postgres?host=$PGHOST&port=$PGPORT&user=postgres"
start_pgbouncer || exit 1
start_redis_nodes || exit 1

export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1"
export ASAN_OPTIONS="detect_leaks=1 halt_on_error=1"
export UBSAN_OPTIONS="halt_on_error=1 print_stacktrace=1"
builds=(release)
[ "${LOCKEXT_CLIENT_SANITIZERS:-1}" != 0 ] && builds+=(tsan asan)
for b in "${builds[@]}"; do
    run_tests "$b" "memory:" || exit 1
    run_tests "$b" "$PG_URL" || exit 1
    run_tests "$b" "$REDIS_URL" || exit 1
    run_tests "$b" "$REDLOCK_URL" || exit 1
done
check_package || exit 1
# Hand the tested lockctl to the lockctl suite (scripts/test.sh sets the dir).
if [ -n "${LOCKEXT_LOCKCTL_DIR:-}" ] && [ -d "$LOCKEXT_LOCKCTL_DIR" ]; then
    cp "$WORK/release/lockctl" "$LOCKEXT_LOCKCTL_DIR/lockctl"
fi
echo "== client tests passed"
