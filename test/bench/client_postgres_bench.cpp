// Benchmark: uncontended acquire + release through the client's postgres
// backend against raw pg_advisory_lock / pg_advisory_unlock, in the same run.
//
//   LOCKEXT_BENCH_URL="postgresql:///postgres?host=...&port=...&user=postgres" \
//       ./client_postgres_bench [seconds-per-run, default 1.5]
//
// client: LockManager::acquire + Lock::release (auto_renew on, default pool),
//         every thread on its own lock name, one shared manager.
// raw:    libpqxx prepared statements SELECT pg_advisory_lock($1) and
//         SELECT pg_advisory_unlock($1), one connection per thread.
// Both are two round trips per cycle. Runs alternate client/raw five times;
// the best of each and the median of the per-round ratios are reported, so a
// noisy neighbour hurts both alike.
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

#include "lockext/lockext.hpp"

namespace {

using Clock = std::chrono::steady_clock;

// Client and raw runs per thread count (alternating).
constexpr int kRounds = 5;

// Run body(thread index, stop flag) on threads threads for seconds; cycles/s.
template <class Body>
double measure(int threads, double seconds, Body body) {
    std::atomic<bool> stop{false};
    std::atomic<std::int64_t> total{0};
    std::vector<std::thread> pool;
    const auto started = Clock::now();
    for (int t = 0; t < threads; ++t)
        pool.emplace_back([&, t] { total += body(t, stop); });
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    stop = true;
    for (std::thread &th : pool)
        th.join();
    const double elapsed = std::chrono::duration<double>(Clock::now() - started).count();
    return static_cast<double>(total.load()) / elapsed;
}

// Cycles of acquire + release through the client until stop.
std::int64_t client_cycles(lockext::LockManager &manager, int thread, std::atomic<bool> &stop) {
    const std::string name = "bench:client:" + std::to_string(thread);
    lockext::LockOptions options;
    options.ttl = std::chrono::seconds(30);
    std::int64_t n = 0;
    while (!stop.load(std::memory_order_relaxed)) {
        lockext::Lock lock = manager.acquire(name, options);
        lock.release();
        ++n;
    }
    return n;
}

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

// A raw connection with the two advisory-lock statements prepared (and used once).
std::unique_ptr<pqxx::connection> raw_connection(const std::string &url) {
    auto conn = std::make_unique<pqxx::connection>(url);
    conn->prepare("bench_lock", "SELECT pg_advisory_lock($1)");
    conn->prepare("bench_unlock", "SELECT pg_advisory_unlock($1)");
    pqxx::nontransaction tx(*conn);
    tx.exec_prepared("bench_lock", std::int64_t{1});
    tx.exec_prepared("bench_unlock", std::int64_t{1});
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
    const double seconds = argc > 1 ? std::atof(argv[1]) : 1.5;
    try {
        auto manager = lockext::connect(url);
        std::printf("%-8s %14s %14s %8s %14s\n", "threads", "client ops/s", "raw ops/s", "ratio",
                    "median ratio");
        bool all_met = true;
        for (int threads : {1, 4}) {
            std::vector<std::unique_ptr<pqxx::connection>> raw;
            for (int t = 0; t < threads; ++t)
                raw.push_back(raw_connection(url));
            // Warm the pool's connections and prepared statements.
            measure(threads, 0.3, [&](int t, std::atomic<bool> &stop) {
                return client_cycles(*manager, t, stop);
            });
            // Alternate client and raw runs; the machine may be shared, so
            // report the best of each (least disturbed) and the median ratio.
            std::vector<double> client_runs;
            std::vector<double> raw_runs;
            std::vector<double> ratios;
            for (int round = 0; round < kRounds; ++round) {
                client_runs.push_back(measure(threads, seconds, [&](int t, auto &stop) {
                    return client_cycles(*manager, t, stop);
                }));
                raw_runs.push_back(measure(threads, seconds, [&](int t, auto &stop) {
                    return raw_cycles(*raw[t], t, stop);
                }));
                ratios.push_back(client_runs.back() / raw_runs.back());
            }
            const double best_client = *std::max_element(client_runs.begin(), client_runs.end());
            const double best_raw = *std::max_element(raw_runs.begin(), raw_runs.end());
            std::sort(ratios.begin(), ratios.end());
            const double ratio = best_client / best_raw;
            all_met = all_met && ratio >= 0.9;
            std::printf("%-8d %14.0f %14.0f %8.2f %14.2f\n", threads, best_client, best_raw, ratio,
                        ratios[ratios.size() / 2]);
        }
        std::printf("target client/raw >= 0.90: %s\n", all_met ? "met" : "MISSED");
        return 0;
    } catch (const std::exception &e) {
        std::fprintf(stderr, "benchmark failed: %s\n", e.what());
        return 1;
    }
}
