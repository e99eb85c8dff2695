#!/usr/bin/env bash
# End-to-end tests of lockctl: drive the real binary as a user would, against
# the private PostgreSQL server whose URL is in $LOCKEXT_URL, a redis-server
# at $LOCKEXT_REDIS_URL and a 3-node Redlock at $LOCKEXT_REDLOCK_URL (all
# started by scripts/run_lockctl_tests.sh), with the binary in $LOCKCTL. Every check
# reads what the commands printed, wrote or returned; the summary line is
# "lockctl tests: N passed, M failed".
set -u

: "${LOCKCTL:?path of the lockctl binary}" "${LOCKEXT_URL:?postgres URL of a server with lockext}"
: "${LOCKEXT_REDIS_URL:?redis:// URL of a redis-server}" "${LOCKEXT_REDLOCK_URL:?redlock:// URL}"
WORK=$(mktemp -d /tmp/lockctl-test.XXXXXX)
PASSED=0
FAILED=0
TMUX_SOCKET="lockctl-test-$$"

# Remove the work dir and any tmux server of ours; the EXIT trap.
cleanup() {
    tmux -L "$TMUX_SOCKET" kill-server 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

# Record check $1 as passed when the rest of the arguments (a command) succeed.
check() {
    local name=$1
    shift
    if "$@"; then
        PASSED=$((PASSED + 1))
        echo "ok - $name"
    else
        FAILED=$((FAILED + 1))
        echo "not ok - $name"
    fi
}

# Whether $1 equals $2 (prints both when not).
same() {
    [ "$1" = "$2" ] && return 0
    echo "    expected: $2" >&2
    echo "    got:      $1" >&2
    return 1
}

# Whether file $1 contains the extended regex $2 (prints the file when not).
contains() {
    grep -qE -- "$2" "$1" && return 0
    echo "    '$2' not found in $1:" >&2
    sed 's/^/    | /' "$1" >&2
    return 1
}

# Run SQL against the test server, unaligned.
sql() {
    psql -X -q -A -t -v ON_ERROR_STOP=1 -d "$LOCKEXT_URL" -c "$1"
}

# Milliseconds since the epoch.
now_ms() {
    date +%s%3N
}

# Wait (up to 10 s) until lock $1 has a holder.
await_holder() {
    for _ in $(seq 200); do
        [ "$(sql "SELECT count(*) FROM lockext.holders WHERE name = '$1'")" -gt 0 ] && return 0
        sleep 0.05
    done
    echo "    no holder of $1 appeared" >&2
    return 1
}

# Wait (up to 10 s) until file $1 holds a pid.
await_pid_file() {
    for _ in $(seq 200); do
        grep -qE '^[0-9]+$' "$1" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "    no pid in $1" >&2
    return 1
}

# Send SIGTERM to process $1 until file $2 has a line matching $3 (at most
# 10 s): signals sent close together may merge into one.
term_until() {
    kill -TERM "$1"
    for _ in $(seq 50); do
        sleep 0.2
        grep -q "$3" "$2" && return 0
        kill -TERM "$1" 2>/dev/null
    done
    return 1
}

# Wait (up to 10 s) until file $1 exists.
await_file() {
    for _ in $(seq 200); do
        [ -e "$1" ] && return 0
        sleep 0.05
    done
    echo "    $1 never appeared" >&2
    return 1
}

# Fetch http://127.0.0.1:$1/metrics into file $2.
fetch_metrics() {
    curl -sf "http://127.0.0.1:$1/metrics" -o "$2"
}

# A TCP port on loopback that nothing listens on now.
free_port() {
    local port
    while :; do
        port=$((20000 + RANDOM % 30000))
        ss -Hltn "sport = :$port" | grep -q . || break
    done
    echo "$port"
}

echo "== lockctl end-to-end tests ($LOCKCTL)"

# --- run -------------------------------------------------------------------

# Two concurrent runs of one lock serialize: their sections never overlap
# (each appends start/end lines), and the second's token is higher.
section='echo "start $LOCKEXT_TOKEN" >> "$0"; sleep 0.4; echo "end $LOCKEXT_TOKEN" >> "$0"'
"$LOCKCTL" run serial --wait 10s -- sh -c "$section" "$WORK/serial.log" &
p1=$!
"$LOCKCTL" run serial --wait 10s -- sh -c "$section" "$WORK/serial.log" &
p2=$!
wait $p1; rc1=$?
wait $p2; rc2=$?
check "two concurrent runs both succeed" same "$rc1 $rc2" "0 0"
overlap_free() {
    awk '$1 == "start" { if (open) exit 1; open = 1; t = $2 }
         $1 == "end" { if (!open || $2 != t) exit 1; open = 0 }
         END { if (NR != 4 || open) exit 1 }' "$WORK/serial.log" && return 0
    sed 's/^/    | /' "$WORK/serial.log" >&2
    return 1
}
check "two concurrent runs serialize (sections never overlap)" overlap_free
tokens_rise() {
    awk '$1 == "start" { if ($2 <= last) exit 1; last = $2 }' "$WORK/serial.log"
}
check "the later run has the higher fencing token" tokens_rise

# The wait timeout gives the documented status 75, after about the wait.
"$LOCKCTL" run busy -- sleep 3 &
holder=$!
await_holder busy
t0=$(now_ms)
"$LOCKCTL" run busy --wait 300ms -- true 2>"$WORK/timeout.err"
rc=$?
elapsed=$(($(now_ms) - t0))
check "a run that times out exits 75" same "$rc" 75
check "it gave up after about --wait (${elapsed} ms)" test "$elapsed" -ge 250 -a "$elapsed" -lt 2500
check "it says so in one line" same "$(wc -l <"$WORK/timeout.err")" 1
"$LOCKCTL" run busy --wait 0 -- true 2>/dev/null
check "--wait 0 tries once and exits 75" same "$?" 75
kill "$holder" 2>/dev/null
wait "$holder" 2>/dev/null

# The command's status passes through; a signal death becomes 128 + N.
"$LOCKCTL" run status -- sh -c 'exit 7'
check "the command's exit status passes through" same "$?" 7
"$LOCKCTL" run status -- sh -c 'kill -KILL $$'
check "a command killed by SIGKILL gives 137" same "$?" 137
"$LOCKCTL" run status -- /nonexistent/command 2>/dev/null
check "a missing command gives 127" same "$?" 127

# The command sees the lock's name and token.
"$LOCKCTL" run envcheck -- sh -c 'echo "$LOCKEXT_NAME $LOCKEXT_TOKEN"' >"$WORK/env.out"
check "the command gets LOCKEXT_NAME and LOCKEXT_TOKEN" contains "$WORK/env.out" '^envcheck [0-9]+$'

# force-release while the command runs: lockctl stops it (SIGTERM, which the
# command records) and exits with the lost-lease status 76.
"$LOCKCTL" run victim --ttl 1500ms -- sh -c \
    "trap 'echo terminated >> $WORK/victim.log; exit 0' TERM; while :; do sleep 0.1; done" \
    2>"$WORK/victim.err" &
victim=$!
await_holder victim
"$LOCKCTL" force-release victim >"$WORK/force.out"
check "force-release reports the holder it released" contains "$WORK/force.out" "released 1 holder of 'victim'"
t0=$(now_ms)
wait "$victim"
rc=$?
check "the run whose lease was force-released exits 76" same "$rc" 76
check "its command got SIGTERM" contains "$WORK/victim.log" '^terminated$'
check "it noticed within a renewal period ($(($(now_ms) - t0)) ms)" test $(($(now_ms) - t0)) -lt 3000
check "it explains the loss on stderr" contains "$WORK/victim.err" 'lease on .victim. was lost'

# The same with stderr a pipe nobody reads any more: writing the message
# must not kill lockctl (SIGPIPE) before it stops the command.
# (The command's own stderr goes elsewhere: sh reports a child killed by a
# signal on stderr, and the closed pipe would kill it before its trap runs.)
"$LOCKCTL" run victim2 --ttl 1500ms -- sh -c \
    "exec 2>/dev/null; trap 'echo terminated >> $WORK/victim2.log; exit 0' TERM; while :; do sleep 0.1; done" \
    2> >(exit 0) &
victim=$!
await_holder victim2
"$LOCKCTL" force-release victim2 >/dev/null
wait "$victim"
rc=$?
check "with stderr a closed pipe, the lost run still exits 76" same "$rc" 76
check "and its command still got SIGTERM" contains "$WORK/victim2.log" '^terminated$'

# A lost lease stops what CMD started too (CMD leads its own process group
# when lockctl is not in a terminal's foreground), even a child that ignores
# SIGTERM: SIGKILL reaches the group after --kill-grace.
"$LOCKCTL" run victim3 --ttl 1500ms --kill-grace 300ms -- sh -c \
    "trap '' TERM; sleep 60 & echo \$! > $WORK/victim3.pid; wait" 2>/dev/null &
victim=$!
await_file "$WORK/victim3.pid"
await_holder victim3
"$LOCKCTL" force-release victim3 >/dev/null
wait "$victim"
rc=$?
check "a lost run whose command ignores SIGTERM exits 76" same "$rc" 76
# Gone, once init has reaped it (a zombie still answers kill -0).
leftover_gone() {
    for _ in $(seq 40); do
        kill -0 "$(cat "$WORK/victim3.pid")" 2>/dev/null || return 0
        sleep 0.05
    done
    return 1
}
check "and the process the command started is gone too" leftover_gone
"$LOCKCTL" force-release victim 2>/dev/null
check "force-release of a free lock exits 1" same "$?" 1

# A SIGTERM sent to lockctl goes to the command, and the lock is released
# once the command has ended.
"$LOCKCTL" run forward -- sh -c \
    "trap 'echo got-term >> $WORK/forward.log; exit 0' TERM; touch $WORK/forward.up; while :; do sleep 0.1; done" &
fwd=$!
await_holder forward
await_file "$WORK/forward.up"  # the trap is set
kill -TERM "$fwd"
wait "$fwd"
rc=$?
check "SIGTERM to lockctl reaches the command" contains "$WORK/forward.log" '^got-term$'
check "lockctl then exits with the command's status" same "$rc" 0
check "and the lock is released" same "$(sql "SELECT count(*) FROM lockext.holders WHERE name = 'forward'")" 0

# lockctl killed with SIGKILL: the kernel kills its command too (nothing
# renews the lease any more, so the command must not run on beside the next
# holder).
"$LOCKCTL" run orphan -- sh -c 'echo $$ > "$0"; while :; do sleep 0.1; done' "$WORK/orphan.pid" &
orphan=$!
await_pid_file "$WORK/orphan.pid"
await_holder orphan
kill -KILL "$orphan"
wait "$orphan" 2>/dev/null
# Whether the process whose pid is in file $1 is gone (or a zombie, which
# init may be slow to reap in a container) within 2 s.
pid_gone() {
    local state
    for _ in $(seq 40); do
        state=$(awk '{ print $3 }' "/proc/$(cat "$1")/stat" 2>/dev/null)
        [ -z "$state" ] || [ "$state" = Z ] && return 0
        sleep 0.05
    done
    echo "    process $(cat "$1") is still running" >&2
    return 1
}
check "a command does not outlive a lockctl killed with SIGKILL" pid_gone "$WORK/orphan.pid"
"$LOCKCTL" force-release orphan >/dev/null  # its lease would only run out in 30 s

# release by token: the wrong token is refused (1), the right one releases.
"$LOCKCTL" run bytoken --ttl 5s -- sh -c 'echo $LOCKEXT_TOKEN > "$0"; sleep 5' "$WORK/bytoken.tok" &
bt=$!
await_holder bytoken
"$LOCKCTL" release bytoken --token 1 2>/dev/null
check "release with a wrong token exits 1" same "$?" 1
"$LOCKCTL" release bytoken --token "$(cat "$WORK/bytoken.tok")" >/dev/null
check "release with the holder's token exits 0" same "$?" 0
kill "$bt" 2>/dev/null
wait "$bt" 2>/dev/null

# Shared and semaphore modes: three semaphore holders at once with
# --max-holders 3, and a fourth does not get in.
for i in 1 2 3; do
    "$LOCKCTL" run pool --mode semaphore --max-holders 3 -- sleep 2 &
done
for _ in $(seq 100); do
    [ "$(sql "SELECT count(*) FROM lockext.holders WHERE name = 'pool'")" = 3 ] && break
    sleep 0.05
done
check "three semaphore holders at once" same "$(sql "SELECT count(*) FROM lockext.holders WHERE name = 'pool'")" 3
"$LOCKCTL" run pool --mode semaphore --max-holders 3 --wait 0 -- true 2>/dev/null
check "a fourth is refused (75)" same "$?" 75
wait

# --- holders ---------------------------------------------------------------

"$LOCKCTL" run shown --owner tester -- sleep 2 &
shown=$!
await_holder shown
"$LOCKCTL" holders >"$WORK/holders.out"
check "holders prints the header" contains "$WORK/holders.out" '^NAME +MODE +OWNER +TOKEN +HELD FOR +EXPIRES IN +WAITERS'
check "holders shows the held lock with its owner" contains "$WORK/holders.out" '^shown +exclusive +tester +[0-9]+ '
LOCKEXT_URL=memory: "$LOCKCTL" holders 2>"$WORK/mem.err"
check "holders on a backend without a global view exits 78" same "$?" 78
check "and says so plainly" contains "$WORK/mem.err" 'memory backend has no global view'
wait "$shown"

# holders --watch in a real terminal (tmux): the screen shows the table,
# redraws when a lock is taken and released, and Ctrl-C ends it.
tmux -L "$TMUX_SOCKET" new-session -d -s watch -x 120 -y 30 \
    "LOCKEXT_URL='$LOCKEXT_URL' '$LOCKCTL' holders --watch --interval 200ms; echo EXITED \$?; sleep 30"
screen() {
    tmux -L "$TMUX_SOCKET" capture-pane -p -t watch
}
# Wait (up to 10 s) until the screen matches regex $1.
await_screen() {
    for _ in $(seq 100); do
        screen | grep -qE -- "$1" && return 0
        sleep 0.1
    done
    echo "    screen never showed '$1':" >&2
    screen | sed 's/^/    | /' >&2
    return 1
}
check "watch draws the header line" await_screen '^lockctl holders \(postgres\) +every 0.2s'
check "watch shows no locks at first" await_screen '^\(no locks held\)'
"$LOCKCTL" run watched --owner on-screen -- sleep 1.5 &
check "watch redraws to show a new holder" await_screen '^watched +exclusive +on-screen +[0-9]+'
wait
check "watch redraws when it is released" await_screen '^\(no locks held\)'
check "the table is drawn in place (one header on screen)" \
    test "$(screen | grep -c '^NAME ')" = 1
tmux -L "$TMUX_SOCKET" send-keys -t watch C-c
check "Ctrl-C ends watch with status 0" await_screen 'EXITED 0$'
tmux -L "$TMUX_SOCKET" kill-server 2>/dev/null

# --- metrics -----------------------------------------------------------------

port=$(free_port)
"$LOCKCTL" run metered --metrics-listen "127.0.0.1:$port" -- sleep 1.5 &
metered=$!
await_holder metered
check "run serves /metrics" fetch_metrics "$port" "$WORK/run.metrics"
check "run's metrics count the acquisition" contains "$WORK/run.metrics" '^lockext_acquire_total\{.*result="acquired".*\} 1'
check "run's metrics pass promtool check metrics" promtool check metrics <"$WORK/run.metrics"
wait "$metered"

# --- queues ------------------------------------------------------------------

sql "SELECT lockext.create_queue('lockctl_jobs')" >/dev/null
# Keyed jobs: 3 keys x 4 jobs; the command fails the first attempt of every
# job whose n is 2, and every attempt of the job 'poison' (2 attempts).
for n in 1 2 3 4; do
    for k in a b c; do
        "$LOCKCTL" enqueue lockctl_jobs --key "$k" "{\"k\": \"$k\", \"n\": $n}" >>"$WORK/ids"
    done
done
# The URL of a client behind a transaction pooler (lockext_pooling, the
# client's own parameter) works for lockctl's own connections too.
LOCKEXT_URL="$LOCKEXT_URL&lockext_pooling=transaction" \
    "$LOCKCTL" enqueue lockctl_jobs --key p --max-attempts 2 '{"poison": true}' >>"$WORK/ids"
check "enqueue prints each job's id" test "$(grep -cE '^[0-9]+$' "$WORK/ids")" = 13
LOCKEXT_URL="$LOCKEXT_URL&lockext_pooling=transaction" "$LOCKCTL" run pooled -- true
check "run works with lockext_pooling=transaction" same "$?" 0
LOCKEXT_URL="$LOCKEXT_URL&lockext_pooling=maybe" "$LOCKCTL" enqueue lockctl_jobs '{}' 2>/dev/null
check "enqueue with a bad lockext_pooling exits 64" same "$?" 64
cat >"$WORK/job.sh" <<'EOF'
#!/bin/sh
# A job: record the payload; fail attempt 1 of n = 2, and every poison attempt.
payload=$(cat)
echo "$LOCKEXT_JOB_KEY $LOCKEXT_JOB_ATTEMPT $payload" >> "$JOB_LOG"
case "$payload" in
    *poison*) exit 3 ;;
    *'"n": 2'*) [ "$LOCKEXT_JOB_ATTEMPT" = 1 ] && exit 1 ;;
esac
exit 0
EOF
chmod +x "$WORK/job.sh"
port=$(free_port)
JOB_LOG=$WORK/jobs.log "$LOCKCTL" work lockctl_jobs --concurrency 4 --until-empty \
    --metrics-listen "127.0.0.1:$port" -- "$WORK/job.sh" 2>"$WORK/work.err" &
worker=$!
for _ in $(seq 100); do fetch_metrics "$port" "$WORK/work.metrics" && break; sleep 0.05; done
check "work's metrics pass promtool check metrics" promtool check metrics <"$WORK/work.metrics"
wait "$worker"
rc=$?
check "work --until-empty exits 0 when the queue is done" same "$rc" 0
check "work stays quiet on stderr when not on a terminal" same "$(wc -c <"$WORK/work.err")" 0
check "every job that can succeed completed" \
    same "$(sql "SELECT ready + scheduled + running + retrying FROM lockext.queue_stats WHERE queue = 'lockctl_jobs'")" 0
check "the poison job is dead after its 2 attempts" \
    same "$(sql "SELECT attempt || ' ' || last_error FROM lockext.dead_jobs WHERE queue = 'lockctl_jobs'")" "2 exit status 3"
check "a failed first attempt was retried" contains "$WORK/jobs.log" '^a 2 \{"k": "a", "n": 2\}$'
# Per key, the successful runs come in enqueue order, and no job of a key
# starts before the previous one of that key has succeeded.
per_key_order() {
    awk '$1 != "p" { key = $1; n = $NF; sub(/}/, "", n)
             if (n < last[key]) { print "    key " key ": n " n " after " last[key] > "/dev/stderr"; bad = 1 }
             last[key] = n }
         END { exit bad }' "$WORK/jobs.log"
}
check "per-key order holds in the command's own log" per_key_order

# --batch: the batch's leases are extended by time, whichever of its jobs
# runs, so a batch that takes longer than a lease is not handed out again to
# another worker (which then ran its last jobs a second time).
sql "SELECT lockext.create_queue('lockctl_batch', 2)" >/dev/null
for i in 1 2 3 4 5 6; do "$LOCKCTL" enqueue lockctl_batch "{\"n\": $i}" >/dev/null; done
"$LOCKCTL" work lockctl_batch --concurrency 2 --batch 6 --lease 1s --until-empty -- \
    sh -c 'echo "$LOCKEXT_JOB_ID" >> "$0"; sleep 0.3' "$WORK/batch.log" 2>"$WORK/batch.err"
check "work --batch exits 0" same "$?" 0
check "work --batch ran each of the 6 jobs exactly once" \
    same "$(sort "$WORK/batch.log" | uniq | wc -l) $(wc -l <"$WORK/batch.log")" "6 6"
check "and completed them all" \
    same "$(sql "SELECT ready + scheduled + running + retrying + dead FROM lockext.queue_stats WHERE queue = 'lockctl_batch'")" 0

# Stopping work. The first SIGTERM: no new job starts, the running one
# finishes and is completed, the rest of its batch goes back to the queue
# with the attempt not counted; exit 0.
sql "SELECT lockext.create_queue('lockctl_stop', 2)" >/dev/null
for i in 1 2 3; do "$LOCKCTL" enqueue lockctl_stop --key "k$i" "{\"n\": $i}" >/dev/null; done
"$LOCKCTL" work lockctl_stop --batch 3 -- sh -c \
    'echo "start $LOCKEXT_JOB_ID" >> "$0"; sleep 1; echo "end $LOCKEXT_JOB_ID" >> "$0"' \
    "$WORK/stop.log" 2>"$WORK/stop.err" &
stopper=$!
for _ in $(seq 200); do [ -s "$WORK/stop.log" ] && break; sleep 0.05; done
kill -TERM "$stopper"
wait "$stopper"
check "work stopped by SIGTERM exits 0" same "$?" 0
check "its running job finished" same "$(cut -d' ' -f1 "$WORK/stop.log" | tr '\n' ' ')" "start end "
check "and was completed; the other two were given back, attempt not counted" \
    same "$(sql "SELECT string_agg(state || ':' || attempt, ' ' ORDER BY id) FROM lockext.jobs WHERE queue = 'lockctl_stop'")" \
    "ready:0 ready:0"
# A second SIGTERM stops the running job (SIGTERM to it) and gives it back.
"$LOCKCTL" work lockctl_stop -- sh -c \
    "trap 'echo terminated >> $WORK/abort.log; exit 0' TERM; echo started >> $WORK/abort.log; while :; do sleep 0.1; done" \
    2>"$WORK/abort.err" &
aborter=$!
await_file "$WORK/abort.log"
term_until "$aborter" "$WORK/abort.log" terminated
wait "$aborter"
check "work stopped by a second SIGTERM exits 0" same "$?" 0
check "its running job got SIGTERM" contains "$WORK/abort.log" '^terminated$'
check "and was given back, not failed" \
    same "$(sql "SELECT string_agg(state || ':' || attempt || ':' || coalesce(last_error, '-'), ' ' ORDER BY id) FROM lockext.jobs WHERE queue = 'lockctl_stop'")" \
    "ready:0:- ready:0:-"
# While an aborted job's command takes its grace to stop, its lease is
# still extended: another worker (here with a lease shorter than the grace)
# gets the job only after the command has ended and the job was given back.
sql "SELECT lockext.create_queue('lockctl_grace', 1)" >/dev/null
"$LOCKCTL" enqueue lockctl_grace --key g '{}' >/dev/null
"$LOCKCTL" work lockctl_grace --lease 600ms --kill-grace 5s -- sh -c \
    "echo start >> $WORK/grace.log; trap 'echo term >> $WORK/grace.log; sleep 1.5; echo end >> $WORK/grace.log; exit 0' TERM; while :; do sleep 0.1; done" \
    2>/dev/null &
slow=$!
await_file "$WORK/grace.log"
"$LOCKCTL" work lockctl_grace --lease 600ms -- sh -c "echo start >> $WORK/grace.log" 2>/dev/null &
other=$!
sleep 0.2
term_until "$slow" "$WORK/grace.log" term
wait "$slow"
for _ in $(seq 100); do
    [ "$(sql "SELECT count(*) FROM lockext.jobs WHERE queue = 'lockctl_grace'")" = 0 ] && break
    sleep 0.1
done
kill -TERM "$other"
wait "$other"
check "a job is not handed to another worker while its aborted command stops" \
    same "$(tr '\n' ' ' <"$WORK/grace.log")" "start term end start "
check "and the other worker then completed it" \
    same "$(sql "SELECT count(*) FROM lockext.jobs WHERE queue = 'lockctl_grace'")" 0
sql "SELECT lockext.drop_queue('lockctl_grace')" >/dev/null

# work killed with SIGKILL: its running job is killed too.
"$LOCKCTL" work lockctl_stop -- sh -c 'echo $$ > "$0"; while :; do sleep 0.1; done' \
    "$WORK/wjob.pid" 2>/dev/null &
killed=$!
await_pid_file "$WORK/wjob.pid"
kill -KILL "$killed"
wait "$killed" 2>/dev/null
check "a job does not outlive a work process killed with SIGKILL" pid_gone "$WORK/wjob.pid"
sql "SELECT lockext.drop_queue('lockctl_stop')" >/dev/null

# Bad input to enqueue: one line, a clear status.
"$LOCKCTL" enqueue lockctl_jobs '{not json' 2>"$WORK/badjson.err"
check "enqueue of bad JSON exits 65" same "$?" 65
check "with one line on stderr" same "$(wc -l <"$WORK/badjson.err")" 1
"$LOCKCTL" enqueue no_such_queue '{}' 2>/dev/null
check "enqueue into an unknown queue exits 65" same "$?" 65
LOCKEXT_URL=memory: "$LOCKCTL" work lockctl_jobs -- true 2>/dev/null
check "work on a backend without queues exits 78" same "$?" 78

# --- usage errors: one clear line on stderr and status 64 ----------------------

usage_case() {
    local label=$1
    shift
    "$LOCKCTL" "$@" >/dev/null 2>"$WORK/usage.err"
    local rc=$?
    check "$label exits 64" same "$rc" 64
    check "$label prints one line" same "$(wc -l <"$WORK/usage.err")" 1
}
usage_case "an unknown command" frobnicate
usage_case "a bad duration" run x --ttl 10parsecs -- true
usage_case "a negative-looking duration" run x --wait -5s -- true
usage_case "an unknown option" run x --frob 1 -- true
usage_case "a bad URL scheme" run x --url bogus://host -- true
usage_case "a URL without a scheme" holders --url not-a-url
usage_case "a bad mode" run x --mode upside-down -- true
usage_case "run without a command" run x
usage_case "a bad --metrics-listen" run x --metrics-listen nowhere -- true
"$LOCKCTL" run x --url "postgresql://127.0.0.1:1/none?connect_timeout=2" -- true 2>"$WORK/unreach.err"
check "an unreachable server exits 69" same "$?" 69
check "with one line on stderr" same "$(wc -l <"$WORK/unreach.err")" 1
# --- Redis and Redlock ----------------------------------------------------------

# The same run semantics on the other backends: concurrent runs serialize
# with rising tokens, and a wait that runs out exits 75.
for url in "$LOCKEXT_REDIS_URL" "$LOCKEXT_REDLOCK_URL"; do
    scheme=${url%%://*}
    rm -f "$WORK/serial.log"
    LOCKEXT_URL=$url "$LOCKCTL" run serial --wait 10s -- sh -c "$section" "$WORK/serial.log" &
    p1=$!
    LOCKEXT_URL=$url "$LOCKCTL" run serial --wait 10s -- sh -c "$section" "$WORK/serial.log" &
    p2=$!
    wait $p1; rc1=$?
    wait $p2; rc2=$?
    check "$scheme: two concurrent runs both succeed" same "$rc1 $rc2" "0 0"
    check "$scheme: they serialize (sections never overlap)" overlap_free
    check "$scheme: the later run has the higher fencing token" tokens_rise
    rm -f "$WORK/busy.$scheme"
    LOCKEXT_URL=$url "$LOCKCTL" run busy -- sh -c 'touch "$0"; sleep 3' "$WORK/busy.$scheme" &
    holder=$!
    await_file "$WORK/busy.$scheme"
    t0=$(now_ms)
    LOCKEXT_URL=$url "$LOCKCTL" run busy --wait 300ms -- true 2>/dev/null
    rc=$?
    elapsed=$(($(now_ms) - t0))
    check "$scheme: a run that times out exits 75" same "$rc" 75
    check "$scheme: it gave up after about --wait (${elapsed} ms)" test "$elapsed" -ge 250 -a "$elapsed" -lt 2500
    kill "$holder" 2>/dev/null
    wait "$holder" 2>/dev/null
    # The command inherits none of the client's connection sockets.
    LOCKEXT_URL=$url "$LOCKCTL" run fds -- sh -c 'ls -l /proc/$$/fd | grep -c socket' \
        >"$WORK/fds.$scheme" 2>/dev/null
    check "$scheme: the command inherits no connection socket" same "$(cat "$WORK/fds.$scheme")" 0
done

# A lease deleted behind the holder's back (as a Redis admin or an eviction
# would) is found lost at the next renewal: the command gets SIGTERM and
# lockctl exits 76.
redis_port=${LOCKEXT_REDIS_URL##*:}
LOCKEXT_URL=$LOCKEXT_REDIS_URL "$LOCKCTL" run rvictim --ttl 1500ms -- sh -c \
    "trap 'echo terminated >> $WORK/rvictim.log; exit 0' TERM; touch $WORK/rvictim.up; while :; do sleep 0.1; done" \
    2>"$WORK/rvictim.err" &
victim=$!
await_file "$WORK/rvictim.up"
redis-cli -p "$redis_port" DEL 'lockext:{rvictim}' >/dev/null
t0=$(now_ms)
wait "$victim"
rc=$?
check "redis: a run whose lease was deleted exits 76" same "$rc" 76
check "redis: its command got SIGTERM" contains "$WORK/rvictim.log" '^terminated$'
check "redis: it noticed within a renewal period ($(($(now_ms) - t0)) ms)" test $(($(now_ms) - t0)) -lt 3000

# A release that fails (the server stops answering as the command ends)
# while the lease is still within its TTL: the section held to its end, so
# lockctl exits with the command's status, says the release failed, and does
# not wait for the server past its timeouts (the release, then the Lock's
# destructor trying it once more on a new connection). The lease stays held
# until its TTL runs out.
t0=$(now_ms)
LOCKEXT_URL="$LOCKEXT_REDIS_URL?timeout=300ms&connect_timeout=300ms" "$LOCKCTL" run rpaused \
    --ttl 5s -- sh -c "redis-cli -p $redis_port CLIENT PAUSE 2500 ALL >/dev/null; exit 3" \
    2>"$WORK/rpaused.err"
rc=$?
elapsed=$(($(now_ms) - t0))
check "redis: a failed release within the TTL exits with the command's status" same "$rc" 3
check "redis: and says the release failed" contains "$WORK/rpaused.err" "could not release 'rpaused'"
check "redis: without waiting for the paused server ($elapsed ms)" test "$elapsed" -lt 2000
# Once the pause is over, a try finds the lease still held.
sleep "$(awk -v ms=$((t0 + 2800 - $(now_ms))) 'BEGIN { print (ms > 0 ? ms / 1000 : 0) }')"
LOCKEXT_URL=$LOCKEXT_REDIS_URL "$LOCKCTL" run rpaused --wait 0 -- true 2>/dev/null
check "redis: the unreleased lease is still held after the pause" same "$?" 75
sleep "$(awk -v ms=$((t0 + 5500 - $(now_ms))) 'BEGIN { print (ms > 0 ? ms / 1000 : 0) }')"
LOCKEXT_URL=$LOCKEXT_REDIS_URL "$LOCKCTL" run rpaused --wait 0 -- true 2>/dev/null
check "redis: and free once its TTL has run out" same "$?" 0

# What Redis cannot do is refused plainly, with status 78.
LOCKEXT_URL=$LOCKEXT_REDIS_URL "$LOCKCTL" holders 2>"$WORK/rholders.err"
check "redis: holders exits 78" same "$?" 78
check "redis: and says there is no global view" contains "$WORK/rholders.err" 'no global view'
LOCKEXT_URL=$LOCKEXT_REDIS_URL "$LOCKCTL" force-release anything 2>"$WORK/rforce.err"
check "redis: force-release exits 78" same "$?" 78
check "redis: with one line on stderr" same "$(wc -l <"$WORK/rforce.err")" 1
LOCKEXT_URL=$LOCKEXT_REDIS_URL "$LOCKCTL" work lockctl_jobs -- true 2>/dev/null
check "redis: work exits 78" same "$?" 78
"$LOCKCTL" run x --url "redis://127.0.0.1:$(free_port)?connect_timeout=500ms" -- true 2>"$WORK/runreach.err"
check "redis: an unreachable node exits 69" same "$?" 69
check "redis: with one line on stderr" same "$(wc -l <"$WORK/runreach.err")" 1
usage_case "redis: a bad port" run x --url "redis://127.0.0.1:notaport" -- true
usage_case "redlock: a host listed twice" run x --url "redlock://127.0.0.1:1,127.0.0.1:1" -- true

"$LOCKCTL" run --help >"$WORK/help.out"
check "run --help shows examples" contains "$WORK/help.out" '^Examples:'
for cmd in holders release force-release enqueue work; do
    "$LOCKCTL" "$cmd" --help >"$WORK/help.out"
    check "$cmd --help shows examples" contains "$WORK/help.out" '^Examples:'
done

echo "lockctl tests: $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
