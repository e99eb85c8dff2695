# Shared helpers for the developer scripts: dependencies, build, private servers.
# Source it; do not run it.
set -euo pipefail

LOCKEXT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PGBIN=/usr/lib/postgresql/15/bin
export PATH="$PGBIN:$PATH"

# Run a command as root (directly, or through sudo).
as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Install the Debian packages the given groups need, if any are missing.
ensure_packages() {
    local pkgs=(postgresql-15 postgresql-server-dev-15 libpq-dev
                libipc-run-perl g++ make)
    local missing=()
    for p in "${pkgs[@]}" "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "== installing: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Build the extension and install it into the PostgreSQL 15 tree.
build_and_install() {
    echo "== building lockext"
    make -C "$LOCKEXT_ROOT" -s PG_CONFIG="$PGBIN/pg_config" >/dev/null
    as_root make -C "$LOCKEXT_ROOT" -s PG_CONFIG="$PGBIN/pg_config" install >/dev/null
}

# The OS user that runs PostgreSQL: ourselves, or `postgres` when we are root.
pg_os_user() {
    if [ "$(id -u)" = 0 ]; then echo postgres; else id -un; fi
}

# Run a command as the server's OS user.
as_pg_user() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# Start a private server under a new temp dir; sets PGHOST, PGPORT, PGUSER,
# PGDATABASE and LOCKEXT_SERVER_DIR. Extra postgresql.conf lines as arguments.
start_server() {
    LOCKEXT_SERVER_DIR=$(mktemp -d /tmp/lockext-pg.XXXXXX)
    chmod 755 "$LOCKEXT_SERVER_DIR"
    [ "$(id -u)" = 0 ] && chown postgres: "$LOCKEXT_SERVER_DIR"
    local data="$LOCKEXT_SERVER_DIR/data"
    as_pg_user initdb -D "$data" -U postgres --auth=trust --no-sync -E UTF8 --locale=C.UTF-8 \
        >"$LOCKEXT_SERVER_DIR/initdb.log" 2>&1
    local port=$(( 20000 + RANDOM % 20000 ))
    {
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $port"
        echo "unix_socket_directories = '$LOCKEXT_SERVER_DIR'"
        echo "shared_preload_libraries = 'lockext'"
        echo "max_connections = 100"
        echo "fsync = on"
        echo "log_min_messages = warning"
        for line in "$@"; do echo "$line"; done
    } | as_pg_user tee -a "$data/postgresql.conf" >/dev/null
    as_pg_user pg_ctl -D "$data" -l "$LOCKEXT_SERVER_DIR/server.log" -w -t 60 start >/dev/null
    export PGHOST="$LOCKEXT_SERVER_DIR" PGPORT="$port" PGUSER=postgres PGDATABASE=postgres
    export LOCKEXT_SERVER_DIR
    trap stop_server EXIT
}

# Stop the private server and remove its directory.
stop_server() {
    [ -n "${LOCKEXT_SERVER_DIR:-}" ] && [ -d "$LOCKEXT_SERVER_DIR" ] || return 0
    as_pg_user pg_ctl -D "$LOCKEXT_SERVER_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$LOCKEXT_SERVER_DIR"
    LOCKEXT_SERVER_DIR=
}

# a/b formatted as a ratio with two decimals (for benchmark reports).
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }'
}

# "met" or "MISSED" for value $1 compared with target $3 using operator $2 (ge|le).
verdict() {
    awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN {
        ok = (op == "ge") ? (v >= t) : (v <= t)
        printf "%s", ok ? "met" : "MISSED" }'
}

# Print a Markdown report, and write it to $BENCH_OUT too when that is set.
publish_report() {
    printf '\n%s\n' "$1"
    if [ -n "${BENCH_OUT:-}" ]; then
        printf '%s\n' "$1" >"$BENCH_OUT"
        printf '\n(report written to %s)\n' "$BENCH_OUT"
    fi
}
