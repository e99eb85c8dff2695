// lockctl: run commands under a distributed lock, watch holders, and work a
// queue from the shell. Dispatches to the commands; every error ends as one
// line on stderr and a documented exit status (cli.hpp, README).
#include <csignal>
#include <cstring>
#include <iostream>

#include "cli.hpp"

namespace lockctl {

namespace {

constexpr const char *kOverview = R"(lockctl: locks and queues from the shell (lockext)

Usage: lockctl COMMAND [OPTIONS] [ARGS]

Commands:
  run NAME -- CMD [ARGS...]    run CMD while holding lock NAME (renewed in the background)
  holders [--watch]            show who holds which lock, and who waits
  release NAME --token T       release one holder's lease by its fencing token
  force-release NAME           release every holder of NAME (administrators)
  enqueue QUEUE PAYLOAD_JSON   add a job to a queue; prints its id
  work QUEUE -- CMD [ARGS...]  run CMD once per job: exit 0 completes it, else it fails

The backend is --url URL, else $LOCKEXT_URL, else memory: (this process only).
URLs: postgres://… (the lockext extension), redis://…, redlock://…, memory:.
Durations: 500ms, 30s, 5m, 1h.  `lockctl COMMAND --help` shows a command's options.

Exit statuses: CMD's own status under run and work's CMD; 1 nothing was held;
64 usage; 65 bad input; 69 backend unavailable; 70 internal error; 75 lock not
obtained within --wait; 76 lease lost while CMD ran; 77 permission denied;
78 not supported by this backend; 126/127 CMD not executable / not found.
)";

constexpr const char *kRunHelp = R"(Usage: lockctl run NAME [OPTIONS] -- CMD [ARGS...]

Acquire lock NAME, run CMD while a watchdog renews the lease (every TTL/3),
release the lock when CMD exits, and exit with CMD's status.

CMD gets LOCKEXT_NAME and LOCKEXT_TOKEN (the fencing token) in its environment.
If the lease is lost, CMD gets SIGTERM, then SIGKILL after --kill-grace, and
lockctl exits 76. SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to lockctl are passed
on to CMD; the lock is released after CMD ends.

Options:
  --ttl D               lease length (default 30s)
  --wait D              give up after D and exit 75 (default: wait forever;
                        0 tries once, like flock -n)
  --mode M              exclusive (default), shared or semaphore
  --max-holders N       holders at once in semaphore mode
  --owner TEXT          shown by `lockctl holders` (default HOST:PID)
  --kill-grace D        time between SIGTERM and SIGKILL when the lease is lost (default 10s)
  --metrics-listen H:P  serve Prometheus metrics at http://H:P/metrics
  --url URL             the backend (default $LOCKEXT_URL, else memory:)

Examples:
  lockctl run nightly-report --wait 0 -- ./report.sh
  lockctl run db-migrate --ttl 2m --wait 10m -- make migrate
  lockctl run api-quota --mode semaphore --max-holders 3 -- curl -s https://api.example/x
)";

constexpr const char *kHoldersHelp = R"(Usage: lockctl holders [--watch] [--interval D]

A table of the locks held: name, mode, owner, token, held for, expires in, and
how many wait. Only the postgres backend has a global view; memory and redis
say so and exit 78.

Options:
  --watch         redraw the table in place until Ctrl-C (like watch or top)
  --interval D    redraw period for --watch (default 1s)
  --url URL       the backend (default $LOCKEXT_URL)

Examples:
  lockctl holders --url postgres://app@db/app
  LOCKEXT_URL=postgres:///app lockctl holders --watch --interval 500ms
)";

constexpr const char *kReleaseHelp = R"(Usage: lockctl release NAME --token T

Release the lease on NAME held with fencing token T (postgres backend: any
session may end a lease it knows the token of). Exit 1 when that token does
not hold NAME.

Examples:
  lockctl release nightly-report --token 1700000000123456 --url postgres:///app
  LOCKEXT_URL=postgres:///app lockctl release db-migrate --token "$TOKEN"
)";

constexpr const char *kForceReleaseHelp = R"(Usage: lockctl force-release NAME

Release every holder of NAME, whatever its token (needs EXECUTE on
lockext.force_release; exit 77 without it). A `lockctl run` whose lease this
ends stops its command and exits 76. Exit 1 when NAME had no holders.

Examples:
  lockctl force-release stuck-job --url postgres:///app
  lockctl holders && lockctl force-release nightly-report
)";

constexpr const char *kEnqueueHelp = R"(Usage: lockctl enqueue QUEUE [OPTIONS] PAYLOAD_JSON

Add a job to QUEUE (postgres backend) and print its id. PAYLOAD_JSON "-"
reads the payload from stdin. Jobs with the same --key run one at a time, in
enqueue order.

Options:
  --key K            the ordering key (default: none, unordered)
  --run-at T         not before T: a timestamp, or a delay such as 5m or +30s
  --priority N       higher runs first among jobs free to run (default 0)
  --max-attempts N   attempts before the job goes dead (default 5)
  --url URL          the backend (default $LOCKEXT_URL)

Examples:
  lockctl enqueue emails --key user-42 '{"template": "welcome"}'
  echo '{"n": 1}' | lockctl enqueue reports --run-at 10m -
)";

constexpr const char *kWorkHelp = R"(Usage: lockctl work QUEUE [OPTIONS] -- CMD [ARGS...]

Run CMD once per job of QUEUE (postgres backend): the payload on stdin, and
LOCKEXT_QUEUE, LOCKEXT_JOB_ID, LOCKEXT_JOB_KEY, LOCKEXT_JOB_ATTEMPT and
LOCKEXT_JOB_TOKEN in the environment. Exit 0 completes the job; any other
status fails it, and the queue retries it with backoff or moves it to its
dead letters after max attempts. Leases are extended while CMD runs. Workers
sleep on LISTEN/NOTIFY between jobs (and wake when a retry comes due).
On a terminal a progress line shows done, failed and the rate.
SIGINT or SIGTERM: stop taking jobs, let running ones finish, exit 0.

Options:
  --concurrency C       jobs run at once, one connection each (default 1)
  --batch N             jobs leased per dequeue (default 1)
  --lease D             lease per job, extended every D/3 (default 30s)
  --kill-grace D        SIGTERM to SIGKILL when a job's lease is lost (default 10s)
  --until-empty         exit when nothing is ready, scheduled, running or retrying
  --poll D              longest sleep without a notification (default 10s)
  --worker NAME         shown in the job rows (default HOST:PID)
  --metrics-listen H:P  serve Prometheus metrics at http://H:P/metrics
  --url URL             the backend (default $LOCKEXT_URL)

Examples:
  lockctl work emails --concurrency 4 -- ./send-email.sh
  lockctl work reports --until-empty -- sh -c 'jq -r .n | ./report'
)";

// Run `command` with its arguments; returns the exit status.
int dispatch(const std::string &command, int argc, char **argv) {
    Spec spec;
    int (*run)(const Args &) = nullptr;
    const char *help = nullptr;
    if (command == "run") {
        spec = {
            {"ttl", "wait", "mode", "max-holders", "owner", "kill-grace", "metrics-listen", "url"},
            {},
            true};
        run = cmd_run;
        help = kRunHelp;
    } else if (command == "holders") {
        spec = {{"interval", "url"}, {"watch"}, false};
        run = cmd_holders;
        help = kHoldersHelp;
    } else if (command == "release") {
        spec = {{"token", "url"}, {}, false};
        run = cmd_release;
        help = kReleaseHelp;
    } else if (command == "force-release") {
        spec = {{"url"}, {}, false};
        run = cmd_force_release;
        help = kForceReleaseHelp;
    } else if (command == "enqueue") {
        spec = {{"key", "run-at", "priority", "max-attempts", "url"}, {}, false};
        run = cmd_enqueue;
        help = kEnqueueHelp;
    } else if (command == "work") {
        spec = {{"concurrency", "batch", "lease", "kill-grace", "poll", "worker", "metrics-listen",
                 "url"},
                {"until-empty"},
                true};
        run = cmd_work;
        help = kWorkHelp;
    } else {
        throw usage_error("unknown command '" + command + "' (see lockctl --help)");
    }
    const Args args = parse_args(argc, argv, 2, spec);
    if (args.help) {
        std::cout << help;
        return exit_status::ok;
    }
    return run(args);
}

}  // namespace

}  // namespace lockctl

// Entry point: print usage, or run a command and map its failure.
int main(int argc, char **argv) {
    using namespace lockctl;
    // A closed stdout or stderr pipe is an error on a write, not death: lockctl
    // must still stop its command and release. Commands get SIGPIPE back.
    std::signal(SIGPIPE, SIG_IGN);
    if (argc < 2) {
        std::cerr << kOverview;
        return exit_status::usage;
    }
    const std::string command = argv[1];
    if (command == "-h" || command == "--help" || command == "help") {
        std::cout << kOverview;
        return exit_status::ok;
    }
    try {
        try {
            return dispatch(command, argc, argv);
        } catch (...) {
            rethrow_as_failure("");
        }
    } catch (const Failure &f) {
        std::cerr << "lockctl: " << f.what() << "\n";
        return f.status();
    }
}
