// handoff: how long a released lock takes to reach a waiter blocked on it.
//
// Two connections, used by two threads. Each round, the holder connection
// owns the lock; a waiter thread sends a blocking acquire on the other
// connection; the holder polls until the server shows the waiter queued,
// takes t0 and releases; the waiter thread takes t1 as soon as its acquire
// returns. latency = t1 - t0. The roles then swap (the waiter now holds the
// lock), so no round needs an extra acquire.
//
// Modes: lockext (lockext.acquire/release on a lease, waiting detected in
// lockext.waiters) and advisory (pg_advisory_lock/unlock(42), waiting
// detected in pg_locks where granted = false).
//
// Connection parameters come from the libpq environment (PGHOST, PGPORT, ...).
// Usage: handoff <lockext|advisory|both> [rounds] [warmup]
// Output: one line per mode:
//   RESULT <mode> <p50_us> <p99_us> <rounds> <mean_us> <max_us>
// Exit status 0 on success; non-zero (with a message on stderr) on any
// failed query, NULL or non-increasing fencing token, or timeout.
#include <libpq-fe.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

constexpr const char *kLockName = "bench:handoff";
constexpr int kAdvisoryKey = 42;
constexpr auto kPollTimeout = std::chrono::seconds(10);

// Print an error and end the whole process at once (safe from any thread).
[[noreturn]] void die(const std::string &msg) {
    std::fprintf(stderr, "handoff: error: %s\n", msg.c_str());
    std::fflush(stderr);
    _exit(2);
}

// Owns a PGresult and clears it on scope exit.
struct Result {
    PGresult *res;
    explicit Result(PGresult *r) : res(r) {}
    Result(const Result &) = delete;
    Result &operator=(const Result &) = delete;
    ~Result() {
        PQclear(res);
    }
    // Whether column 0 of row 0 is NULL.
    bool null0() const {
        return PQgetisnull(res, 0, 0);
    }
    // Column 0 of row 0 as text.
    std::string text0() const {
        return PQgetvalue(res, 0, 0);
    }
};

// Open a connection from the environment and fail on error.
PGconn *connect_or_die() {
    PGconn *c = PQconnectdb("application_name=lockext-handoff");
    if (PQstatus(c) != CONNECTION_OK)
        die(std::string("connection failed: ") + PQerrorMessage(c));
    return c;
}

// Prepare statement `name` on `c` with `nparams` untyped parameters.
void prepare_or_die(PGconn *c, const char *name, const char *sql, int nparams) {
    Result r(PQprepare(c, name, sql, nparams, nullptr));
    if (PQresultStatus(r.res) != PGRES_COMMAND_OK)
        die(std::string("prepare ") + name + " failed: " + PQerrorMessage(c));
}

// Run prepared statement `name`; fail unless it returns exactly one row.
PGresult *exec_or_die(PGconn *c, const char *name, std::vector<std::string> params) {
    std::vector<const char *> values;
    for (const auto &p : params)
        values.push_back(p.c_str());
    PGresult *r = PQexecPrepared(c, name, static_cast<int>(values.size()), values.data(), nullptr,
                                 nullptr, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        std::string msg = std::string(name) + " failed: " + PQerrorMessage(c);
        PQclear(r);
        die(msg);
    }
    return r;
}

// One lock implementation under test: its statements, by role.
struct Mode {
    const char *label;
    const char *lock_sql;     // holder's first acquire: must succeed at once
    const char *wait_sql;     // waiter's acquire: blocks until handed the lock
    const char *unlock_sql;   // holder's release: returns true
    const char *waiting_sql;  // 1 when backend $1 is queued for the lock, else 0
    bool has_token;           // whether lock/wait return a fencing token
};

const Mode kLockext = {
    "lockext",
    "SELECT lockext.acquire($1, '30 s')",
    "SELECT lockext.acquire($1, '30 s', '10 s')",
    "SELECT lockext.release($1, $2::bigint)",
    "SELECT count(*) FROM lockext.waiters WHERE name = $1 AND pid = $2::int",
    true,
};

const Mode kAdvisory = {
    "advisory",
    "SELECT pg_advisory_lock($1::int)",
    "SELECT pg_advisory_lock($1::int)",
    "SELECT pg_advisory_unlock($1::int)",
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
    "AND pid = $2::int AND objid = $1::int",
    false,
};

// The parameter that names the lock in `mode`'s statements.
std::string lock_param(const Mode &mode) {
    return mode.has_token ? kLockName : std::to_string(kAdvisoryKey);
}

// Prepare every statement of `mode` on `c`.
void prepare_mode(PGconn *c, const Mode &mode) {
    prepare_or_die(c, "lock", mode.lock_sql, 1);
    prepare_or_die(c, "wait", mode.wait_sql, 1);
    prepare_or_die(c, "unlock", mode.unlock_sql, mode.has_token ? 2 : 1);
    prepare_or_die(c, "waiting", mode.waiting_sql, 2);
}

// Check a token returned by an acquire: non-NULL and above the previous one.
long long check_token(const Mode &mode, const Result &r, long long last, const char *who) {
    if (!mode.has_token)
        return last;
    if (r.null0())
        die(std::string(mode.label) + ": " + who + " acquire returned NULL (lock not obtained)");
    const long long tok = std::strtoll(r.text0().c_str(), nullptr, 10);
    if (tok <= last)
        die(std::string(mode.label) + ": " + who + " got token " + std::to_string(tok) +
            ", not above the previous token " + std::to_string(last));
    return tok;
}

// Value at quantile q (nearest rank) of sorted samples.
double quantile(const std::vector<double> &sorted, double q) {
    std::size_t rank = static_cast<std::size_t>(q * static_cast<double>(sorted.size()) + 0.999999);
    rank = std::clamp<std::size_t>(rank, 1, sorted.size());
    return sorted[rank - 1];
}

// Measure `rounds` handoffs (after `warmup` unrecorded ones); print a RESULT line.
void run_mode(const Mode &mode, int rounds, int warmup) {
    PGconn *conns[2] = {connect_or_die(), connect_or_die()};
    for (PGconn *c : conns) {
        prepare_mode(c, mode);
        Result r(PQexec(c, "SET lock_timeout = '15s'"));  // advisory waits never hang the bench
    }
    const std::string lock = lock_param(mode);
    long long last_token = 0;
    long long held_token = 0;
    int h = 0;  // index of the connection holding the lock
    {
        Result r(exec_or_die(conns[h], "lock", {lock}));
        held_token = last_token = check_token(mode, r, last_token, "first");
    }

    std::vector<double> samples;
    samples.reserve(static_cast<std::size_t>(rounds));
    for (int i = 0; i < warmup + rounds; i++) {
        const int w = 1 - h;
        const std::string waiter_pid = std::to_string(PQbackendPID(conns[w]));
        PGresult *wait_res = nullptr;
        Clock::time_point t1;
        std::thread waiter([&] {
            wait_res = exec_or_die(conns[w], "wait", {lock});
            t1 = Clock::now();
        });

        // Poll until the server has the waiter queued behind us.
        const Clock::time_point give_up = Clock::now() + kPollTimeout;
        for (;;) {
            Result r(exec_or_die(conns[h], "waiting", {lock, waiter_pid}));
            if (r.text0() != "0")
                break;
            if (Clock::now() > give_up)
                die(std::string(mode.label) + ": waiter never showed up as waiting");
        }

        const Clock::time_point t0 = Clock::now();
        std::vector<std::string> unlock_params = {lock};
        if (mode.has_token)
            unlock_params.push_back(std::to_string(held_token));
        {
            Result r(exec_or_die(conns[h], "unlock", unlock_params));
            if (r.text0() != "t")
                die(std::string(mode.label) + ": release returned " + r.text0() + ", not true");
        }
        waiter.join();

        Result got(wait_res);
        held_token = last_token = check_token(mode, got, last_token, "waiter");
        if (i >= warmup)
            samples.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
        h = w;  // the waiter holds the lock now
    }

    // Let go of the lock held after the last round.
    std::vector<std::string> unlock_params = {lock};
    if (mode.has_token)
        unlock_params.push_back(std::to_string(held_token));
    {
        Result r(exec_or_die(conns[h], "unlock", unlock_params));
        if (r.text0() != "t")
            die(std::string(mode.label) + ": final release returned " + r.text0());
    }
    for (PGconn *c : conns)
        PQfinish(c);

    std::sort(samples.begin(), samples.end());
    double sum = 0;
    for (double s : samples)
        sum += s;
    std::printf("RESULT %s %.1f %.1f %zu %.1f %.1f\n", mode.label, quantile(samples, 0.50),
                quantile(samples, 0.99), samples.size(), sum / static_cast<double>(samples.size()),
                samples.back());
    std::fflush(stdout);
}

}  // namespace

// Parse the arguments and run the requested modes.
int main(int argc, char **argv) {
    if (argc < 2 || argc > 4) {
        std::fprintf(stderr, "usage: %s <lockext|advisory|both> [rounds] [warmup]\n", argv[0]);
        return 64;
    }
    const std::string which = argv[1];
    const int rounds = argc > 2 ? std::atoi(argv[2]) : 500;
    const int warmup = argc > 3 ? std::atoi(argv[3]) : 20;
    if (rounds < 1 || warmup < 0)
        die("rounds must be >= 1 and warmup >= 0");
    if (which != "lockext" && which != "advisory" && which != "both")
        die("unknown mode " + which);
    if (which == "lockext" || which == "both")
        run_mode(kLockext, rounds, warmup);
    if (which == "advisory" || which == "both")
        run_mode(kAdvisory, rounds, warmup);
    return 0;
}
