// Benchmark: uncontended acquire + release through the client's postgres
// backend against raw pg_advisory_lock / pg_advisory_unlock, in the same run.
//
//   LOCKEXT_BENCH_URL="postgresql:///postgres?host=...&port=...&user=postgres" \
//       ./client_postgres_bench [seconds-per-run, default $BENCH_SECONDS, else 1.5]
//
// client: LockManager::acquire + Lock::release (auto_renew on, default pool),
//         every thread on its own lock name, one shared manager.
// raw:    libpqxx prepared statements SELECT pg_advisory_lock($1) and
//         SELECT pg_advisory_unlock($1), one connection per thread.
// stmts:  the client's own two statements (lockext.acquire, lockext.release)
//         as raw libpqxx calls with text parameters, one connection per
//         thread: the server's part of the client's cost, for telling it from
//         the client's own (the client sends them through libpq, with binary
//         parameters, which costs both sides less).
// All are two round trips per cycle. Runs alternate client/raw/stmts 11
// times; the best of each, the median of the per-round client/raw ratios and
// their range are reported, so a noisy neighbour hurts all alike.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <pqxx/pqxx>

#include "bench_support.hpp"
#include "lockext/lockext.hpp"

namespace {

using Clock = std::chrono::steady_clock;

// Client, raw and stmts runs per thread count (alternating).
constexpr int kRounds = 11;

using lockext::bench::client_cycles;
using lockext::bench::measure;

// Cycles of pg_advisory_lock + pg_advisory_unlock on conn until stop.
std::int64_t raw_cycles(pqxx::connection &conn, int thread, std::atomic<bool> &stop) {
    const std::int64_t key = 4200 + thread;
    std::int64_t n = 0;
    while (!stop.load(std::memory_order_relaxed)) {
        {
            pqxx::nontransaction tx(conn);
            tx.exec_prepared("bench_lock", key);
        }
        {
            pqxx::nontransaction tx(conn);
            tx.exec_prepared("bench_unlock", key);
        }
        ++n;
    }
    return n;
}

// Cycles of the client's lockext.acquire (a try) + lockext.release statements on conn.
std::int64_t stmt_cycles(pqxx::connection &conn, int thread, std::atomic<bool> &stop) {
    const std::string name = "bench:stmts:" + std::to_string(thread);
    const std::string ttl = "30000000 us";
    const std::string owner = "bench-host:" + std::to_string(thread);
    std::int64_t n = 0;
    while (!stop.load(std::memory_order_relaxed)) {
        std::int64_t token;
        {
            pqxx::nontransaction tx(conn);
            token = tx.exec_prepared("bench_acquire", name, ttl, owner)[0][0].as<std::int64_t>();
        }
        {
            pqxx::nontransaction tx(conn);
            tx.exec_prepared("bench_release", name, token);
        }
        ++n;
    }
    return n;
}

// A raw connection with the advisory-lock and the lockext statements prepared (and used once).
std::unique_ptr<pqxx::connection> raw_connection(const std::string &url) {
    auto conn = std::make_unique<pqxx::connection>(url);
    conn->prepare("bench_lock", "SELECT pg_advisory_lock($1)");
    conn->prepare("bench_unlock", "SELECT pg_advisory_unlock($1)");
    // The same texts as the client's (postgres_backend.cpp).
    conn->prepare("bench_acquire",
                  "SELECT lockext.acquire($1, $2::interval, '0', 'exclusive', 'lease', 1, $3)");
    conn->prepare("bench_release", "SELECT lockext.release($1, $2::bigint)");
    pqxx::nontransaction tx(*conn);
    tx.exec_prepared("bench_lock", std::int64_t{1});
    tx.exec_prepared("bench_unlock", std::int64_t{1});
    const auto token = tx.exec_prepared("bench_acquire", std::string("bench:warm"),
                                        std::string("1 s"), std::string("bench"))[0][0]
                           .as<std::int64_t>();
    tx.exec_prepared("bench_release", std::string("bench:warm"), token);
    return conn;
}

}  // namespace

// Measure both at 1 and 4 threads and print ops/s and the ratio.
int main(int argc, char **argv) {
    const char *url_env = std::getenv("LOCKEXT_BENCH_URL");
    if (url_env == nullptr || *url_env == '\0') {
        std::fprintf(stderr, "set LOCKEXT_BENCH_URL to a postgres:// URL with lockext installed\n");
        return 2;
    }
    const std::string url = url_env;
    const char *env_secs = std::getenv("BENCH_SECONDS");
    const double seconds = argc > 1 ? std::atof(argv[1]) : env_secs ? std::atof(env_secs) : 1.5;
    try {
        auto manager = lockext::connect(url);
        std::printf("%-8s %12s %12s %12s %7s %7s %12s %12s\n", "threads", "client/s", "raw/s",
                    "stmts/s", "ratio", "median", "range", "stmts/raw");
        bool all_met = true;
        for (int threads : {1, 4}) {
            std::vector<std::unique_ptr<pqxx::connection>> raw;
            for (int t = 0; t < threads; ++t)
                raw.push_back(raw_connection(url));
            // Warm the pool's connections and prepared statements.
            measure(threads, 0.3, [&](int t, std::atomic<bool> &stop) {
                return client_cycles(*manager, t, stop);
            });
            // Alternate the runs; the machine may be shared, so report the
            // best of each (least disturbed) and the per-round ratios.
            std::vector<double> client_runs, raw_runs, stmt_runs, ratios;
            for (int round = 0; round < kRounds; ++round) {
                client_runs.push_back(measure(threads, seconds, [&](int t, auto &stop) {
                    return client_cycles(*manager, t, stop);
                }));
                raw_runs.push_back(measure(threads, seconds, [&](int t, auto &stop) {
                    return raw_cycles(*raw[t], t, stop);
                }));
                stmt_runs.push_back(measure(threads, seconds, [&](int t, auto &stop) {
                    return stmt_cycles(*raw[t], t, stop);
                }));
                ratios.push_back(client_runs.back() / raw_runs.back());
            }
            const double best_client = *std::max_element(client_runs.begin(), client_runs.end());
            const double best_raw = *std::max_element(raw_runs.begin(), raw_runs.end());
            const double best_stmts = *std::max_element(stmt_runs.begin(), stmt_runs.end());
            std::sort(ratios.begin(), ratios.end());
            const double ratio = best_client / best_raw;
            all_met = all_met && ratio >= 0.9;
            char range[32];
            std::snprintf(range, sizeof range, "%.2f-%.2f", ratios.front(), ratios.back());
            std::printf("%-8d %12.0f %12.0f %12.0f %7.2f %7.2f %12s %12.2f\n", threads, best_client,
                        best_raw, best_stmts, ratio, ratios[ratios.size() / 2], range,
                        best_stmts / best_raw);
        }
        std::printf(
            "ratio = best client / best raw; median and range of the per-round client/raw "
            "ratios;\nstmts/raw = the client's statements without the client (the server's "
            "share of the gap).\ntarget client/raw >= 0.90: %s\n",
            all_met ? "met" : "MISSED");
        return 0;
    } catch (const std::exception &e) {
        std::fprintf(stderr, "benchmark failed: %s\n", e.what());
        return 1;
    }
}
