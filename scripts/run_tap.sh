#!/usr/bin/env bash
# Build, install, then run the TAP tests in test/t/ (PostgreSQL::Test::Cluster).
# Usage: scripts/run_tap.sh [test/t/NNN_name.pl ...]   (default: all of test/t/*.pl)
# Env: PROVE_FLAGS (default -v), KEEP_TAP_DIR=1 keeps the work dir on success.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PERL_TEST_LIB=/usr/lib/postgresql/15/lib/pgxs/src/test/perl
PG_REGRESS_BIN=/usr/lib/postgresql/15/lib/pgxs/src/test/regress/pg_regress

# Print every log the tests left under the work dir (on failure).
dump_logs() {
    local f
    for f in $(find "$TAP_DIR/tmp_check/log" -type f 2>/dev/null | sort); do
        echo "==================== $f"
        cat "$f"
    done
}

ensure_packages
build_and_install

# Tests to run: the arguments, or every test/t/*.pl.
tests=("$@")
[ ${#tests[@]} -eq 0 ] && tests=("$LOCKEXT_ROOT"/test/t/*.pl)

# A fresh work dir the server's OS user owns: TESTDIR/tmp_check and a copy of
# the tests live there, since the repository may not be writable (or even
# readable) by that user.
TAP_DIR=$(mktemp -d /tmp/lockext-tap.XXXXXX)
chmod 755 "$TAP_DIR"
mkdir "$TAP_DIR/t"
cp "${tests[@]}" "$LOCKEXT_ROOT"/test/t/*.pm "$TAP_DIR/t/"
rel=()
for t in "${tests[@]}"; do rel+=("t/$(basename "$t")"); done
[ "$(id -u)" = 0 ] && chown -R "$(pg_os_user)": "$TAP_DIR"

echo "== running TAP tests in $TAP_DIR"
rc=0
( cd "$TAP_DIR" && as_pg_user env \
    PATH="$PGBIN:$PATH" \
    TESTDIR="$TAP_DIR" \
    PG_REGRESS="$PG_REGRESS_BIN" \
    prove ${PROVE_FLAGS--v} -I "$PERL_TEST_LIB" -I t "${rel[@]}" ) || rc=$?

if [ "$rc" != 0 ]; then
    dump_logs
    echo "== TAP tests FAILED (exit $rc); work dir kept: $TAP_DIR"
    exit 1
fi
echo "== TAP tests passed"
if [ "${KEEP_TAP_DIR:-0}" = 1 ]; then
    echo "== work dir kept: $TAP_DIR"
else
    rm -rf "$TAP_DIR"
fi
