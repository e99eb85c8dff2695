// lockctl: the queue commands (PostgreSQL only): enqueue, and work, which
// runs a command once per job.
//
// work's threads: C workers, each with its own connection (LISTENing on the
// queue's channel), its own jobs and child processes; the main thread reads
// signals; a reporter thread draws the progress line on a terminal. Shared
// between them: only the atomics in WorkState (counters, the stop and abort
// flags, the count of workers still running), read by the metrics server too.
// A worker alone signals, reaps and reports its own children, so no thread
// ever holds a pointer to another's.
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <iomanip>
#include <iostream>
#include <iterator>
#include <mutex>
#include <optional>
#include <pqxx/pqxx>
#include <sstream>
#include <thread>

#include "child_process.hpp"
#include "lockext/pg.hpp"
#include "cli.hpp"
#include "metrics_server.hpp"
#include "signals.hpp"

namespace lockctl {

namespace {

using namespace std::chrono_literals;
using std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

// The URL, checked to be PostgreSQL (the queues live in the extension), as
// libpq takes it (without the client's own lockext_pooling).
std::string postgres_url(const Args &args, std::string_view command) {
    const std::string url = backend_url(args);
    if (!is_postgres_url(url)) {
        (void)connect_backend(url);  // a malformed URL is still a usage error
        throw Failure(exit_status::unsupported,
                      std::string(command) +
                          " needs the postgres backend (queues live in the "
                          "lockext extension); got '" +
                          url.substr(0, url.find(':')) + ":'");
    }
    try {
        return lockext::pg::libpq_url(url);
    } catch (...) {
        rethrow_as_failure("");
    }
}

// An interval literal PostgreSQL reads exactly ("1500 milliseconds").
std::string interval_text(milliseconds d) {
    return std::to_string(d.count()) + " milliseconds";
}

// One leased job.
struct Job {
    long long id = 0;
    std::optional<std::string> key;
    std::string payload;
    int attempt = 0;
    long long token = 0;
    bool finished = false;
    bool gone = false;         // a heartbeat found its lease taken over: never start it
    bool handed_back = false;  // given back unstarted (work is stopping)
};

// What work's threads share. Counters only rise.
struct WorkState {
    std::string queue;
    std::atomic<bool> stop{false};   // take no new jobs; running ones finish
    std::atomic<bool> abort{false};  // stop running jobs too and give them back
    std::atomic<int> active{0};      // worker threads not yet finished
    std::atomic<long long> completed{0}, retried{0}, dead{0}, lost{0}, requeued{0}, running{0};
    std::mutex error_mutex;
    std::optional<Failure> error;  // the first worker failure (guarded by error_mutex)
};

// Prometheus text for work's counters.
std::string work_metrics(const WorkState &s) {
    std::ostringstream out;
    out << "# HELP lockctl_jobs_total Jobs this lockctl work process finished, by result.\n"
        << "# TYPE lockctl_jobs_total counter\n";
    const std::pair<const char *, long long> results[] = {{"completed", s.completed.load()},
                                                          {"retried", s.retried.load()},
                                                          {"dead", s.dead.load()},
                                                          {"lost", s.lost.load()},
                                                          {"requeued", s.requeued.load()}};
    for (const auto &[result, n] : results)
        out << "lockctl_jobs_total{queue=\"" << s.queue << "\",result=\"" << result << "\"} " << n
            << "\n";
    out << "# HELP lockctl_jobs_running Jobs whose command is running now.\n"
        << "# TYPE lockctl_jobs_running gauge\n"
        << "lockctl_jobs_running{queue=\"" << s.queue << "\"} " << s.running.load() << "\n";
    return out.str();
}

// Wakes its worker when the queue's channel is notified.
class Wakeup : public pqxx::notification_receiver {
  public:
    Wakeup(pqxx::connection_base &conn, const std::string &channel)
        : pqxx::notification_receiver(conn, channel) {}
    // Remember that something was enqueued.
    void operator()(const std::string &, int) override {
        woken = true;
    }
    bool woken = false;
};

// Options of one work run.
struct WorkOptions {
    std::string url;
    std::vector<std::string> command;
    int batch = 1;
    milliseconds lease{30s};
    milliseconds kill_grace{10s};
    milliseconds poll{10s};
    bool until_empty = false;
    std::string worker;
};

// One worker thread's loop: dequeue, run, complete or fail; sleep on LISTEN.
class Worker {
  public:
    Worker(const WorkOptions &options, WorkState &state)
        : options_(options),
          state_(state),
          conn_(options.url),
          wakeup_(conn_, "lockext_queue_" + state.queue) {}

    // Work until stopped, or until the queue is empty with --until-empty.
    void run() {
        while (!state_.stop.load()) {
            wakeup_.woken = false;
            const auto asked = SteadyClock::now();
            std::vector<Job> jobs = dequeue();
            lease_until_ = asked + options_.lease;
            // The batch's leases were set by the dequeue: the next
            // heartbeat is due a third of a lease from now, whichever job
            // is running then (jobs shorter than that never beat alone).
            beat_at_ = std::chrono::steady_clock::now() + beat();
            if (jobs.empty()) {
                if (options_.until_empty && queue_is_empty()) {
                    state_.stop.store(true);
                    return;
                }
                sleep_until_woken();
                continue;
            }
            for (std::size_t i = 0; i < jobs.size(); i++) {
                if (state_.stop.load()) {
                    hand_back(jobs, i);  // stopping: the rest of the batch is not started
                    break;
                }
                run_job(jobs, i);
            }
        }
    }

  private:
    // Lease up to --batch jobs.
    std::vector<Job> dequeue() {
        pqxx::nontransaction tx(conn_);
        auto rows = tx.exec_params(
            "SELECT id, key, payload::text, attempt, token FROM lockext.dequeue($1::text, $2::int, "
            "$3::interval, $4::text)",
            state_.queue, options_.batch, interval_text(options_.lease), options_.worker);
        std::vector<Job> jobs;
        for (const auto &row : rows) {
            Job job;
            job.id = row[0].as<long long>();
            if (!row[1].is_null())
                job.key = row[1].as<std::string>();
            job.payload = row[2].as<std::string>();
            job.attempt = row[3].as<int>();
            job.token = row[4].as<long long>();
            jobs.push_back(std::move(job));
        }
        return jobs;
    }

    // Nothing ready, scheduled, running or retrying (dead jobs do not count).
    bool queue_is_empty() {
        pqxx::nontransaction tx(conn_);
        auto r = tx.exec_params(
            "SELECT coalesce(ready + scheduled + running + retrying, 0) FROM lockext.queue_stats "
            "WHERE queue = $1",
            state_.queue);
        return r.empty() || r[0][0].as<long long>() == 0;
    }

    // How long until a retry comes due or a lease runs out (neither is
    // notified), capped by --poll; --poll when it cannot be read.
    milliseconds next_due() {
        try {
            pqxx::nontransaction tx(conn_);
            auto r = tx.exec_params(
                "SELECT extract(epoch FROM least((SELECT min(run_at) FROM lockext.jobs "
                "WHERE queue = $1 AND state = 'delayed'), (SELECT min(expires_at) "
                "FROM lockext.holders WHERE starts_with(name, 'lockext.q/' || $1 || '/'))) "
                "- now())",
                state_.queue);
            if (!r.empty() && !r[0][0].is_null()) {
                const double s = r[0][0].as<double>();
                return std::clamp(milliseconds(static_cast<long long>(std::ceil(s * 1000)) + 5),
                                  milliseconds(5), options_.poll);
            }
        } catch (const pqxx::sql_error &) {
            // No SELECT on lockext.jobs: fall back to --poll.
        }
        return options_.poll;
    }

    // Sleep on LISTEN until a notification, the next due time, or a stop.
    void sleep_until_woken() {
        const auto until = SteadyClock::now() + next_due();
        while (!state_.stop.load() && !wakeup_.woken && SteadyClock::now() < until) {
            const auto left = std::chrono::duration_cast<milliseconds>(until - SteadyClock::now());
            // Slices of at most 200 ms, only so that a stop is seen promptly.
            const long ms =
                static_cast<long>(std::clamp(left, milliseconds(1), milliseconds(200)).count());
            conn_.await_notification(ms / 1000, (ms % 1000) * 1000);
        }
    }

    // How often the batch's leases are extended: a third of a lease.
    milliseconds beat() const {
        return std::max(options_.lease / 3, milliseconds(50));
    }

    // Extend the lease of every unfinished job of the batch (marking those
    // whose lease is gone) and set the next beat; false when job
    // `current`'s lease is gone.
    bool heartbeat(std::vector<Job> &jobs, std::size_t current) {
        const auto asked = SteadyClock::now();
        pqxx::nontransaction tx(conn_);
        for (std::size_t i = current; i < jobs.size(); i++) {
            if (jobs[i].gone || jobs[i].handed_back)
                continue;
            auto r = tx.exec_params(
                "SELECT lockext.extend($1::text, $2::bigint, $3::bigint, $4::interval)",
                state_.queue, jobs[i].id, jobs[i].token, interval_text(options_.lease));
            jobs[i].gone = r[0][0].is_null();
        }
        beat_at_ = std::chrono::steady_clock::now() + beat();
        lease_until_ = asked + options_.lease;
        return !jobs[current].gone;
    }

    // Give a job that never ran to completion back to the queue, its attempt
    // not counted; false when its lease had already been taken over.
    bool requeue(const Job &job) {
        pqxx::nontransaction tx(conn_);
        return tx
            .exec_params1("SELECT lockext.requeue($1::text, $2::bigint, $3::bigint)", state_.queue,
                          job.id, job.token)[0]
            .as<bool>();
    }

    // Give back jobs[from..] (a batch cut short by a stop), none of them
    // started, each once.
    void hand_back(std::vector<Job> &jobs, std::size_t from) {
        for (std::size_t i = from; i < jobs.size(); i++) {
            if (jobs[i].handed_back)
                continue;
            jobs[i].handed_back = true;
            if (!jobs[i].gone && requeue(jobs[i]))
                state_.requeued++;
            else
                state_.lost++;
        }
    }

    // Stop job i's command: SIGTERM to its group, SIGKILL after --kill-grace.
    // Meanwhile the batch's leases are still extended (when `beat`), so no
    // other worker is handed the job while its command still runs; the
    // SIGKILL comes sooner if the lease is lost, or (without beats) before
    // the lease runs out by the local clock. Returns the command's status;
    // a heartbeat's exception is rethrown once the command is gone.
    int stop_command(Child &child, std::vector<Job> &jobs, std::size_t i, bool beat) {
        child.signal(SIGTERM);
        auto kill_at = SteadyClock::now() + options_.kill_grace;
        if (!beat)
            kill_at = std::min(kill_at, lease_until_);
        std::exception_ptr error;
        // Never a negative timeout: poll() would wait forever.
        auto slice = [&] {
            const auto to_kill = std::chrono::ceil<milliseconds>(kill_at - SteadyClock::now());
            return std::max(
                milliseconds(0),
                std::min({to_kill, beat ? until_beat() : milliseconds(100), milliseconds(100)}));
        };
        while (!child.wait_for(slice())) {
            if (SteadyClock::now() >= kill_at)
                break;
            if (!beat || until_beat() > milliseconds(0))
                continue;
            try {
                if (!heartbeat(jobs, i))
                    break;  // taken over already: no more grace
            } catch (...) {
                error = std::current_exception();
                beat = false;
                kill_at = std::min(kill_at, lease_until_);
            }
        }
        child.signal(SIGKILL);  // nothing if it has exited (not reaped yet: still ours)
        const int status = child.reap();
        child.kill_leftovers();
        if (error)
            std::rethrow_exception(error);
        return status;
    }

    // Time left until the next heartbeat (zero when it is due).
    milliseconds until_beat() const {
        const auto left =
            std::chrono::ceil<milliseconds>(beat_at_ - std::chrono::steady_clock::now());
        return std::max(left, milliseconds(0));
    }

    // Run the command for jobs[i], keeping the batch's leases alive, then
    // complete or fail the job by its exit status.
    void run_job(std::vector<Job> &jobs, std::size_t i) {
        Job &job = jobs[i];
        std::vector<std::pair<std::string, std::string>> env = {
            {"LOCKEXT_QUEUE", state_.queue},
            {"LOCKEXT_JOB_ID", std::to_string(job.id)},
            {"LOCKEXT_JOB_KEY", job.key.value_or("")},
            {"LOCKEXT_JOB_ATTEMPT", std::to_string(job.attempt)},
            {"LOCKEXT_JOB_TOKEN", std::to_string(job.token)}};
        int status;
        bool lost = false;
        bool aborted = false;
        // A job whose lease is gone, or may be by now, is not started: its
        // lease is checked (and the batch's extended) when a beat is due.
        if (!job.gone && until_beat() == milliseconds(0))
            (void)heartbeat(jobs, i);
        if (job.gone) {
            state_.lost++;
            std::cerr << "lockctl: the lease on job " << job.id
                      << " ran out before its turn in the batch; not started\n";
            return;
        }
        std::optional<Child> child;
        try {
            child.emplace(options_.command, env, &job.payload, true);
        } catch (...) {
            hand_back(jobs, i);  // not run (126, 127): work ends, the jobs go back
            throw;
        }
        state_.running++;
        try {
            // Slices of at most 100 ms, only so that a stop or abort is seen promptly.
            while (!child->wait_for(std::min(until_beat(), milliseconds(100)))) {
                if (state_.stop.load())
                    hand_back(jobs, i + 1);  // at once, not after this job
                if (state_.abort.load()) {
                    aborted = !child->wait_for(milliseconds(0));  // it may just have ended
                    break;
                }
                if (until_beat() > milliseconds(0))
                    continue;
                if (!heartbeat(jobs, i)) {
                    lost = true;
                    std::cerr << "lockctl: the lease on job " << job.id
                              << " ran out; stopping its command\n";
                    break;
                }
            }
            if (lost)
                status = child->terminate(options_.kill_grace);
            else if (aborted)
                status = stop_command(*child, jobs, i, true);
            else
                status = child->reap();
        } catch (...) {
            // The lease can no longer be extended (a database error): the
            // other workers stop taking jobs, and this command is stopped
            // before the lease runs out; work then ends with 69.
            state_.stop.store(true);
            if (!child->reaped()) {
                try {
                    (void)stop_command(*child, jobs, i, false);
                } catch (...) {
                    // The first error is the one work reports.
                }
            }
            state_.running--;
            throw;
        }
        state_.running--;
        if (lost) {
            state_.lost++;
            return;
        }
        if (aborted) {
            // Stopped by us, not failed by itself: the attempt does not count.
            if (requeue(job))
                state_.requeued++;
            else
                state_.lost++;
            return;
        }
        pqxx::nontransaction tx(conn_);
        if (status == 0) {
            if (tx.exec_params1("SELECT lockext.complete($1::text, $2::bigint, $3::bigint)",
                                state_.queue, job.id, job.token)[0]
                    .as<bool>()) {
                state_.completed++;
            } else {
                state_.lost++;
                std::cerr << "lockctl: job " << job.id
                          << " finished after its lease was taken over; not completed\n";
            }
            return;
        }
        auto r = tx.exec_params1("SELECT lockext.fail($1::text, $2::bigint, $3::bigint, $4::text)",
                                 state_.queue, job.id, job.token,
                                 "exit status " + std::to_string(status));
        if (r[0].is_null())
            state_.lost++;
        else if (r[0].as<std::string>() == "dead")
            state_.dead++;
        else
            state_.retried++;
    }

    const WorkOptions &options_;
    WorkState &state_;
    // When the current batch's leases are next extended.
    std::chrono::steady_clock::time_point beat_at_;
    // When they run out, by the local clock, unless extended (measured from
    // before the dequeue or heartbeat that set them).
    std::chrono::steady_clock::time_point lease_until_;
    pqxx::connection conn_;
    Wakeup wakeup_;
};

// Draw the progress line on stderr until the work stops.
void report_progress(WorkState &state) {
    const auto start = SteadyClock::now();
    auto draw = [&] {
        const double secs = std::chrono::duration<double>(SteadyClock::now() - start).count();
        const long long finished =
            state.completed + state.retried + state.dead + state.lost + state.requeued;
        std::cerr << "\r\033[K" << state.queue << ": " << state.completed << " done, "
                  << state.retried + state.dead << " failed (" << state.retried << " to retry, "
                  << state.dead << " dead), " << state.lost << " lost, " << state.requeued
                  << " given back, " << state.running << " running, " << std::fixed
                  << std::setprecision(1) << (secs > 0 ? static_cast<double>(finished) / secs : 0.0)
                  << " jobs/s" << std::flush;
    };
    while (state.active.load() > 0) {
        draw();
        std::this_thread::sleep_for(250ms);
    }
    draw();
    std::cerr << "\n";
}

}  // namespace

// lockctl enqueue QUEUE [--key K] [--run-at T] [--priority N] [--max-attempts N] PAYLOAD_JSON
int cmd_enqueue(const Args &args) {
    if (args.positionals.size() != 2)
        throw usage_error("enqueue needs QUEUE and PAYLOAD_JSON (see lockctl enqueue --help)");
    const std::string &queue = args.positionals[0];
    std::string payload = args.positionals[1];
    if (payload == "-")
        payload.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
    std::optional<std::string> run_at_delay, run_at_time;
    if (auto t = args.get("run-at")) {
        // "+5m" or "5m": that long from now; anything else: a timestamp.
        const std::string spec = (*t)[0] == '+' ? t->substr(1) : *t;
        const bool looks_like_duration =
            !spec.empty() && spec.find_first_of("-:T ") == std::string::npos;
        if (looks_like_duration)
            run_at_delay = interval_text(parse_duration(spec, "--run-at"));
        else
            run_at_time = *t;
    }
    const int priority = static_cast<int>(
        parse_count(args.get("priority").value_or("0"), "--priority", -1'000'000, 1'000'000));
    const int max_attempts = static_cast<int>(
        parse_count(args.get("max-attempts").value_or("5"), "--max-attempts", 1, 1'000'000));
    const std::string url = postgres_url(args, "enqueue");
    try {
        pqxx::connection conn(url);
        pqxx::nontransaction tx(conn);
        auto r = tx.exec_params1(
            "SELECT lockext.enqueue($1, $2::jsonb, $3, "
            "coalesce($4::timestamptz, now() + $5::interval, now()), $6, $7)",
            queue, payload, args.get("key"), run_at_time, run_at_delay, priority, max_attempts);
        std::cout << r[0].as<long long>() << "\n";
        return exit_status::ok;
    } catch (...) {
        rethrow_as_failure("enqueue into '" + queue + "'");
    }
}

// lockctl work QUEUE [--batch N] [--concurrency C] [...] -- CMD [ARGS...]
int cmd_work(const Args &args) {
    if (args.positionals.size() != 1)
        throw usage_error("work needs exactly one QUEUE (see lockctl work --help)");
    if (args.command.empty())
        throw usage_error("work needs a command after -- (see lockctl work --help)");
    WorkOptions options;
    options.command = args.command;
    options.batch =
        static_cast<int>(parse_count(args.get("batch").value_or("1"), "--batch", 1, 1000));
    const int concurrency = static_cast<int>(
        parse_count(args.get("concurrency").value_or("1"), "--concurrency", 1, 256));
    options.lease = args.duration("lease", 30s);
    if (options.lease < 100ms)
        throw usage_error("--lease must be at least 100ms");
    options.kill_grace = args.duration("kill-grace", 10s);
    options.poll = args.duration("poll", 10s);
    if (options.poll < 10ms)
        throw usage_error("--poll must be at least 10ms");
    options.until_empty = args.flag("until-empty");
    char host[256] = "";
    gethostname(host, sizeof(host) - 1);
    options.worker =
        args.get("worker").value_or(std::string(host) + ":" + std::to_string(getpid()));
    options.url = postgres_url(args, "work");

    WorkState state;
    state.queue = args.positionals[0];
    HandledSignals signals;  // before any thread starts
    std::optional<MetricsServer> metrics;
    if (auto listen = args.get("metrics-listen"))
        metrics.emplace(*listen, [&state] { return work_metrics(state); });
    // Connect every worker first, so a bad URL or queue fails before any job runs.
    std::vector<std::unique_ptr<Worker>> workers;
    try {
        for (int i = 0; i < concurrency; i++)
            workers.push_back(std::make_unique<Worker>(options, state));
        pqxx::connection check(options.url);
        pqxx::nontransaction tx(check);
        tx.exec_params("SELECT lockext._require_queue($1)", state.queue);
    } catch (...) {
        rethrow_as_failure("work on '" + state.queue + "'");
    }

    std::vector<std::thread> threads;
    state.active.store(static_cast<int>(workers.size()));
    for (auto &w : workers) {
        threads.emplace_back([&state, worker = w.get()] {
            try {
                worker->run();
            } catch (...) {
                try {
                    rethrow_as_failure("work on '" + state.queue + "'");
                } catch (const Failure &f) {
                    std::lock_guard<std::mutex> g(state.error_mutex);
                    if (!state.error)
                        state.error = f;
                }
                state.stop.store(true);
            }
            state.active--;
        });
    }
    std::thread reporter;
    if (isatty(STDERR_FILENO) == 1)
        reporter = std::thread([&state] { report_progress(state); });

    // The first signal stops the taking of jobs (running ones finish and are
    // completed or failed); any later one aborts the running jobs too, which
    // are then given back. Signals are read until every worker is done.
    int received = 0;
    while (state.active.load() > 0) {
        pollfd p{signals.fd(), POLLIN, 0};
        if (poll(&p, 1, 100) <= 0 || !signals.take())
            continue;
        if (++received == 1)
            state.stop.store(true);
        else
            state.abort.store(true);
    }
    for (auto &t : threads)
        t.join();
    if (reporter.joinable())
        reporter.join();
    std::lock_guard<std::mutex> g(state.error_mutex);
    if (state.error)
        throw *state.error;
    return exit_status::ok;
}

}  // namespace lockctl
