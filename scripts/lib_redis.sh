# Private redis-server processes for the client tests and benchmarks: each on
# a loopback port, with its own directory under /tmp, no persistence, in the
# foreground of a background job (so the script owns it). Source it after
# lib.sh; call stop_redis_nodes from the EXIT trap.

LOCKEXT_REDIS_PIDS=()
LOCKEXT_REDIS_DIRS=()

# Start one redis-server on a free port (retrying if the port was taken);
# sets REDIS_PORT. Extra redis-server arguments may follow.
start_redis_node() {
    local dir port pid
    dir=$(mktemp -d /tmp/lockext-redis.XXXXXX)
    LOCKEXT_REDIS_DIRS+=("$dir")
    for _ in 1 2 3 4 5 6 7 8; do
        port=$(( 20000 + RANDOM % 40000 ))
        redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save '' \
            --appendonly no --daemonize no --logfile "$dir/redis.log" "$@" &
        pid=$!
        for _ in $(seq 1 100); do
            if ! kill -0 "$pid" 2>/dev/null; then
                break  # it exited: most likely the port was in use
            fi
            # Ours, not another program's server that took the port first.
            if redis-cli -p "$port" INFO server 2>/dev/null | grep -q "^process_id:$pid"; then
                LOCKEXT_REDIS_PIDS+=("$pid")
                REDIS_PORT=$port
                return 0
            fi
            sleep 0.05
        done
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    echo "could not start redis-server (log: $dir/redis.log)" >&2
    return 1
}

# Stop every redis-server started here and remove their directories.
stop_redis_nodes() {
    local pid dir
    for pid in "${LOCKEXT_REDIS_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    for dir in "${LOCKEXT_REDIS_DIRS[@]}"; do
        rm -rf "$dir"
    done
    LOCKEXT_REDIS_PIDS=()
    LOCKEXT_REDIS_DIRS=()
}

# Start one node and three more; sets REDIS_URL (redis://) and REDLOCK_URL
# (redlock:// over the three).
start_redis_nodes() {
    local ports=()
    start_redis_node || return 1
    REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
    for _ in 1 2 3; do
        start_redis_node || return 1
        ports+=("127.0.0.1:$REDIS_PORT")
    done
    REDLOCK_URL="redlock://$(IFS=,; echo "${ports[*]}")"
}
