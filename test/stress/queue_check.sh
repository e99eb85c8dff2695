#!/usr/bin/env bash
# Queue stress checker: loads the worker logs of a run (LOGDIR/worker-*.log)
# into qstress.log and judges the run with qstress.check_run()
# (test/stress/queue_stress.psql, loaded beforehand). Prints every check, a
# sample of the violations and a counts line; exits 0 only when clean.
#
# Usage: queue_check.sh LOGDIR QUEUE EXPECTED_JOBS LEASE_MS KILLS
# Env: PG* (the server of the run), QUEUE_STRESS_SLACK_MS (default 5): how far
#      a time a worker read from CLOCK_REALTIME may trail a server time
#      before a client-side check calls it a violation (covers clock steps;
#      the server-side checks use no slack).
set -euo pipefail

if [ $# -ne 5 ]; then
    echo "usage: $0 LOGDIR QUEUE EXPECTED_JOBS LEASE_MS KILLS" >&2
    exit 2
fi
LOGDIR=$1 QUEUE=$2 EXPECTED=$3 LEASE_MS=$4 KILLS=$5
SLACK_MS=${QUEUE_STRESS_SLACK_MS:-5}

# psql against the run's server, stopping at the first error.
qpsql() {
    psql -X -q -v ON_ERROR_STOP=1 "$@"
}

# Turn the worker logs into tab-separated qstress.log rows (\N for NULL);
# lines that do not have their event's shape become `malformed` rows, and a
# log with no lines at all one `empty` row.
logs_to_tsv() {
    local f
    for f in "$LOGDIR"/worker-*.log; do
        [ -e "$f" ] || continue
        if [ ! -s "$f" ]; then
            printf '%s\t0\tempty\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\n' "$(basename "$f")"
            continue
        fi
        awk -v w="$(basename "$f")" '
            function num(s) { return s ~ /^-?[0-9]+$/ }
            function row(ev, id, key, seq, att, tok, ok, t, lease, tcall, xid, msg) {
                if (msg != N) gsub(/[\t\\]/, " ", msg)
                printf "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
                       w, FNR, ev, id, key, seq, att, tok, ok, t, lease, tcall, xid, msg
            }
            BEGIN { N = "\\N" }
            $1 == "dequeued" && NF == 9 && num($2) && num($4) && num($5) && num($6) && num($7) && num($8) && num($9) {
                row("dequeued", $2, $3, $4, $5, $6, N, $7, $8, $9, N, N); next }
            $1 == "completing" && NF == 6 && num($2) && num($4) && num($5) && num($6) {
                row("completing", $2, $3, $4, N, $5, N, $6, N, N, N, N); next }
            $1 == "completed" && NF == 8 && num($2) && num($4) && num($5) && ($6 == "t" || $6 == "f") && num($7) && num($8) {
                row("completed", $2, $3, $4, N, $5, $6, $7, N, N, $8, N); next }
            $1 == "start" && NF == 3 && num($3) { row("start", N, N, N, N, N, N, $3, N, N, N, N); next }
            $1 == "stop" && NF == 2 && num($2) { row("stop", N, N, N, N, N, N, $2, N, N, N, N); next }
            $1 == "error" { m = $0; sub(/^error [0-9]+ /, "", m); row("error", N, N, N, N, N, N, N, N, N, N, m); next }
            { row("malformed", N, N, N, N, N, N, N, N, N, N, $0) }
        ' "$f"
    done
}

qpsql -c 'TRUNCATE qstress.log'
logs_to_tsv | qpsql -c '\copy qstress.log (wlog, lineno, ev, id, key, seq, attempt, token, ok, t_us, lease_us, tcall_us, xid, msg) FROM STDIN'

checks=$(qpsql -At -F ' ' -c "SELECT check_name, value, ok FROM qstress.check_run(
             '$QUEUE', $EXPECTED, $LEASE_MS, $SLACK_MS, $KILLS)")
echo "== queue checks (name value ok):"
echo "$checks" | sed 's/^/   /'
bad=0
declare -A val
while read -r name value ok; do
    val[$name]=$value
    [ "$ok" = t ] || bad=1
done <<<"$checks"
if [ "${val[violations]:-1}" != 0 ]; then
    echo "== violations by kind:"
    qpsql -At -F ' ' -c "SELECT kind, count(*) FROM qstress.violations GROUP BY kind ORDER BY kind" |
        sed 's/^/   /'
    echo "== first violations of each kind:"
    qpsql -At -F ' | ' -c "SELECT kind, id, key, detail FROM (
                               SELECT v.*, row_number() OVER (PARTITION BY kind ORDER BY id) AS rn
                                 FROM qstress.violations v) x
                            WHERE rn <= 5 ORDER BY kind, rn" | sed 's/^/   /'
fi
echo "== counts: jobs=${val[enqueued]:-?}" \
     "completed=$(( ${val[jobs_completed_acked]:-0} + ${val[jobs_completed_unacked]:-0} ))" \
     "(unacked=${val[jobs_completed_unacked]:-?})" \
     "deliveries=${val[deliveries]:-?} redeliveries=${val[redeliveries]:-?}" \
     "unlogged_deliveries=${val[unlogged_deliveries]:-?} stale_completes=${val[stale_completes_refused]:-?}" \
     "kills=$KILLS violations=${val[violations]:-?}"
exit "$bad"
