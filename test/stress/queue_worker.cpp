// Queue stress worker: dequeues jobs from a lockext queue, "processes" them
// and completes them, logging every event to its own file so that a checker
// (test/stress/queue_check.sh) can judge the run afterwards. Meant to be
// killed with SIGKILL at any moment; SIGTERM/SIGINT make it stop cleanly at
// the top of its loop.
//
// Usage: queue_worker QUEUE LOGFILE [options]   (connects with the PG* env)
//   --batch N         jobs per dequeue (default 5)
//   --lease-ms MS     lease asked for (default 2000)
//   --seed S          random seed (default: pid ^ time)
//   --slow-pct P      percent of jobs that take 5-30 ms (default 1)
//   --overrun-pct P   percent of jobs that take lease + 500 ms, so their lease
//                     runs out while they are still held (default 0.02)
//   --idle-ms MS      sleep when nothing was free (default 10)
//
// Log lines (one write(2) each, space separated, times are CLOCK_REALTIME µs):
//   start <pid> <t_us>
//   dequeued <id> <key> <seq> <attempt> <token> <t_us> <lease_expires_us> <t_call_us>
//       t_us: after dequeue returned; t_call_us: before it was called;
//       lease_expires_us: the job's lease_expires_at as epoch µs (server clock)
//   completing <id> <key> <seq> <token> <t_us>          (before complete is called)
//   completed <id> <key> <seq> <token> <ok> <t_us> <xid> (after it returned; ok t/f;
//       xid: the complete transaction's pg_current_xact_id())
//   error <t_us> <message...>                            (then exit 3)
//   stop <t_us>
#include <libpq-fe.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <random>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

volatile sig_atomic_t g_stop = 0;
int g_log_fd = -1;

// Mark that the worker should stop at the top of its loop.
void on_stop_signal(int) {
    g_stop = 1;
}

// Wall-clock time in microseconds since the epoch (comparable across processes).
long long now_us() {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<long long>(ts.tv_sec) * 1000000LL + ts.tv_nsec / 1000;
}

// Append one line to the log with a single write(2), retrying short writes.
void log_line(const std::string &line) {
    std::string s = line + "\n";
    const char *p = s.data();
    size_t left = s.size();
    while (left > 0) {
        ssize_t n = write(g_log_fd, p, left);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("queue_worker: write log");
            _exit(4);
        }
        p += n;
        left -= static_cast<size_t>(n);
    }
}

// Log an error, close the connection and exit with status 3.
[[noreturn]] void die(PGconn *conn, const std::string &what) {
    std::string msg = what;
    if (conn)
        msg += ": " + std::string(PQerrorMessage(conn));
    for (char &c : msg)
        if (c == '\n')
            c = ' ';
    log_line("error " + std::to_string(now_us()) + " " + msg);
    fprintf(stderr, "queue_worker: %s\n", msg.c_str());
    if (conn)
        PQfinish(conn);
    exit(3);
}

// Sleep for the given number of microseconds, resuming after signals.
void sleep_us(long long us) {
    struct timespec ts;
    ts.tv_sec = us / 1000000;
    ts.tv_nsec = (us % 1000000) * 1000;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

// Parse a double-valued option argument or exit with usage.
double parse_num(const char *s, const char *opt) {
    char *end = nullptr;
    double v = strtod(s, &end);
    if (!end || *end != '\0') {
        fprintf(stderr, "queue_worker: bad value for %s: %s\n", opt, s);
        exit(2);
    }
    return v;
}

// Prepare a statement or die.
void prepare(PGconn *conn, const char *name, const char *sql, int nparams) {
    PGresult *r = PQprepare(conn, name, sql, nparams, nullptr);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        PQclear(r);
        die(conn, std::string("prepare ") + name);
    }
    PQclear(r);
}

struct Job {
    std::string id, key, seq, attempt, token, lease_us;
};

}  // namespace

// Run the dequeue / process / complete loop until signalled.
int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr,
                "usage: queue_worker QUEUE LOGFILE [--batch N] [--lease-ms MS] "
                "[--seed S] [--slow-pct P] [--overrun-pct P] [--idle-ms MS]\n");
        return 2;
    }
    std::string queue = argv[1];
    const char *log_path = argv[2];
    int batch = 5;
    long long lease_ms = 2000, idle_ms = 10;
    double slow_pct = 1.0, overrun_pct = 0.02;
    unsigned long long seed =
        static_cast<unsigned long long>(getpid()) ^ static_cast<unsigned long long>(now_us());
    for (int i = 3; i < argc; i++) {
        std::string opt = argv[i];
        if (i + 1 >= argc) {
            fprintf(stderr, "queue_worker: %s needs a value\n", opt.c_str());
            return 2;
        }
        double v = parse_num(argv[++i], opt.c_str());
        if (opt == "--batch")
            batch = static_cast<int>(v);
        else if (opt == "--lease-ms")
            lease_ms = static_cast<long long>(v);
        else if (opt == "--seed")
            seed = static_cast<unsigned long long>(v);
        else if (opt == "--slow-pct")
            slow_pct = v;
        else if (opt == "--overrun-pct")
            overrun_pct = v;
        else if (opt == "--idle-ms")
            idle_ms = static_cast<long long>(v);
        else {
            fprintf(stderr, "queue_worker: unknown option %s\n", opt.c_str());
            return 2;
        }
    }

    g_log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (g_log_fd < 0) {
        perror("queue_worker: open log");
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);

    log_line("start " + std::to_string(getpid()) + " " + std::to_string(now_us()));
    PGconn *conn = PQconnectdb("");
    if (PQstatus(conn) != CONNECTION_OK)
        die(conn, "connect");

    std::string worker_name = "w" + std::to_string(getpid());
    std::string lease = std::to_string(lease_ms) + " milliseconds";
    std::string batch_s = std::to_string(batch);
    prepare(conn, "deq",
            "SELECT id, key, payload->>'seq', attempt, token, "
            "       (extract(epoch FROM lease_expires_at) * 1000000)::bigint, payload->>'k' "
            "  FROM lockext.dequeue($1, $2::int, $3::interval, $4)",
            4);
    prepare(conn, "done",
            "SELECT lockext.complete($1, $2::bigint, $3::bigint), pg_current_xact_id()", 3);

    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> pct(0.0, 100.0);
    std::uniform_int_distribution<long long> tiny(0, 200), slow(5000, 30000);

    while (!g_stop) {
        const char *dq[4] = {queue.c_str(), batch_s.c_str(), lease.c_str(), worker_name.c_str()};
        long long t_call = now_us();
        PGresult *r = PQexecPrepared(conn, "deq", 4, dq, nullptr, nullptr, 0);
        long long t_got = now_us();
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            PQclear(r);
            die(conn, "dequeue");
        }
        std::vector<Job> jobs;
        for (int i = 0; i < PQntuples(r); i++) {
            Job j{PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2),
                  PQgetvalue(r, i, 3), PQgetvalue(r, i, 4), PQgetvalue(r, i, 5)};
            // The payload must belong to the row's key: log the mismatch as an error.
            if (j.key != PQgetvalue(r, i, 6)) {
                std::string other = PQgetvalue(r, i, 6);
                PQclear(r);
                die(nullptr, "job " + j.id + " has key " + j.key + " but payload k " + other);
            }
            log_line("dequeued " + j.id + " " + j.key + " " + j.seq + " " + j.attempt + " " +
                     j.token + " " + std::to_string(t_got) + " " + j.lease_us + " " +
                     std::to_string(t_call));
            jobs.push_back(std::move(j));
        }
        PQclear(r);
        if (jobs.empty()) {
            sleep_us(idle_ms * 1000);
            continue;
        }
        for (const Job &j : jobs) {
            // "Process" the job: mostly a few µs, sometimes longer, rarely past the lease.
            double p = pct(rng);
            if (p < overrun_pct)
                sleep_us((lease_ms + 500) * 1000);
            else if (p < overrun_pct + slow_pct)
                sleep_us(slow(rng));
            else
                sleep_us(tiny(rng));

            log_line("completing " + j.id + " " + j.key + " " + j.seq + " " + j.token + " " +
                     std::to_string(now_us()));
            const char *cp[3] = {queue.c_str(), j.id.c_str(), j.token.c_str()};
            PGresult *c = PQexecPrepared(conn, "done", 3, cp, nullptr, nullptr, 0);
            long long t_done = now_us();
            if (PQresultStatus(c) != PGRES_TUPLES_OK || PQntuples(c) != 1) {
                PQclear(c);
                die(conn, "complete " + j.id);
            }
            log_line("completed " + j.id + " " + j.key + " " + j.seq + " " + j.token + " " +
                     PQgetvalue(c, 0, 0) + " " + std::to_string(t_done) + " " +
                     PQgetvalue(c, 0, 1));
            PQclear(c);
        }
    }
    log_line("stop " + std::to_string(now_us()));
    PQfinish(conn);
    return 0;
}
