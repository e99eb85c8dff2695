// Benchmark: uncontended acquire + release through the client's Redis
// backend against raw hiredis SET NX PX + DEL round trips, in the same run,
// on one node and on a 3-node Redlock.
//
//   LOCKEXT_BENCH_REDIS_URL=redis://127.0.0.1:6379 \
//   LOCKEXT_BENCH_REDLOCK_URL=redlock://127.0.0.1:6380,127.0.0.1:6381,127.0.0.1:6382 \
//       ./client_redis_bench [seconds-per-run, default 1.5]
//
// client: LockManager::acquire + Lock::release (auto_renew on, ttl 30 s,
//         default pool), every thread on its own lock name, one manager.
// raw:    SET key value NX PX 30000, then DEL key, one hiredis connection per
//         thread (per node and thread for Redlock, where a naive client walks
//         the nodes one after the other: 3 SETs then 3 DELs).
// empty scripts: two EVALSHAs of "return 1" per cycle, with the client's
//         numbers of keys and arguments, against the same raw cycle: what one
//         Lua script per operation costs before the script does anything.
// Runs alternate client/raw five times; the best of each and the median of
// the per-round ratios are reported, so a noisy neighbour hurts both alike.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <hiredis/hiredis.h>

#include "bench_support.hpp"
#include "lockext/lockext.hpp"

namespace {

using Clock = std::chrono::steady_clock;

// Client and raw runs per case (alternating).
constexpr int kRounds = 5;

using lockext::bench::client_cycles;
using lockext::bench::measure;

// The "host:port" entries of a redis:// or redlock:// URL (no password, no options).
std::vector<std::pair<std::string, int>> nodes_of(const std::string &url) {
    std::string rest = url.substr(url.find("://") + 3);
    rest = rest.substr(0, rest.find_first_of("/?"));
    std::vector<std::pair<std::string, int>> out;
    std::size_t start = 0;
    for (;;) {
        const auto comma = rest.find(',', start);
        const std::string item = rest.substr(start, comma - start);
        const auto colon = item.rfind(':');
        out.emplace_back(item.substr(0, colon), std::stoi(item.substr(colon + 1)));
        if (comma == std::string::npos)
            return out;
        start = comma + 1;
    }
}

// One raw hiredis connection.
struct Raw {
    // Connect or throw.
    Raw(const std::string &host, int port) : ctx(redisConnect(host.c_str(), port)) {
        if (ctx == nullptr || ctx->err != 0)
            throw std::runtime_error("raw connect to " + host + " failed");
    }
    // Close the connection.
    ~Raw() {
        redisFree(ctx);
    }
    Raw(const Raw &) = delete;
    Raw &operator=(const Raw &) = delete;

    // SET key value NX PX 30000; whether it was set.
    bool set_nx(const std::string &key) {
        auto *r = static_cast<redisReply *>(redisCommand(
            ctx, "SET %s %s NX PX %d", key.c_str(), "1f3c5a7e9b0d2f4a6c8e0a2b4d6f8a0c", 30000));
        if (r == nullptr)
            throw std::runtime_error("raw SET failed");
        const bool ok = r->type == REDIS_REPLY_STATUS;
        freeReplyObject(r);
        return ok;
    }
    // DEL key.
    void del(const std::string &key) {
        auto *r = static_cast<redisReply *>(redisCommand(ctx, "DEL %s", key.c_str()));
        if (r == nullptr)
            throw std::runtime_error("raw DEL failed");
        freeReplyObject(r);
    }

    redisContext *ctx;
};

// Cycles of two EVALSHAs of an empty script ("return 1") with as many keys
// and arguments as the client's acquire and release scripts: the floor of
// any design that runs one Lua script per operation, as the client does.
std::int64_t empty_script_cycles(Raw &conn, const std::string &sha, int thread,
                                 std::atomic<bool> &stop) {
    const std::string name = "lockext:{bench:empty:" + std::to_string(thread) + "}";
    const std::string q = name + ":q", d = name + ":d", c = name + ":wake";
    const char *id = "x1f3c5a7e9b0d2f4a6c8e0a2b4d6f8a0c";
    std::int64_t n = 0;
    while (!stop.load(std::memory_order_relaxed)) {
        auto *r = static_cast<redisReply *>(redisCommand(
            conn.ctx, "EVALSHA %s 3 %s %s %s %s %s 30000 0 t 1795000000000000 1 1 2000",
            sha.c_str(), name.c_str(), q.c_str(), d.c_str(), c.c_str(), id));
        if (r == nullptr)
            throw std::runtime_error("EVALSHA failed");
        freeReplyObject(r);
        r = static_cast<redisReply *>(redisCommand(conn.ctx, "EVALSHA %s 3 %s %s %s %s %s",
                                                   sha.c_str(), name.c_str(), q.c_str(), d.c_str(),
                                                   c.c_str(), id));
        if (r == nullptr)
            throw std::runtime_error("EVALSHA failed");
        freeReplyObject(r);
        ++n;
    }
    return n;
}

// Load the empty script on conn; its SHA-1.
std::string load_empty_script(Raw &conn) {
    auto *r = static_cast<redisReply *>(redisCommand(conn.ctx, "SCRIPT LOAD %s", "return 1"));
    if (r == nullptr || r->type != REDIS_REPLY_STRING)
        throw std::runtime_error("SCRIPT LOAD failed");
    std::string sha(r->str, r->len);
    freeReplyObject(r);
    return sha;
}

// Cycles of SET NX PX on every node in turn, then DEL on every node, until stop.
std::int64_t raw_cycles(std::vector<std::unique_ptr<Raw>> &conns, int thread,
                        std::atomic<bool> &stop) {
    const std::string key = "bench:raw:" + std::to_string(thread);
    std::int64_t n = 0;
    while (!stop.load(std::memory_order_relaxed)) {
        for (auto &c : conns) {
            if (!c->set_nx(key))
                throw std::runtime_error("raw SET NX found the key taken");
        }
        for (auto &c : conns)
            c->del(key);
        ++n;
    }
    return n;
}

// Measure one URL at 1 and 4 threads; print rows; whether single-thread met target.
bool run_case(const char *label, const std::string &url, double seconds, double target) {
    auto manager = lockext::connect(url);
    const auto nodes = nodes_of(url);
    bool met = true;
    for (int threads : {1, 4}) {
        std::vector<std::vector<std::unique_ptr<Raw>>> raw(threads);
        for (int t = 0; t < threads; ++t)
            for (const auto &[host, port] : nodes)
                raw[t].push_back(std::make_unique<Raw>(host, port));
        // Warm the pool's connections and the node's script cache.
        measure(threads, 0.3,
                [&](int t, std::atomic<bool> &stop) { return client_cycles(*manager, t, stop); });
        std::vector<double> client_runs, raw_runs, ratios;
        for (int round = 0; round < kRounds; ++round) {
            client_runs.push_back(measure(threads, seconds, [&](int t, auto &stop) {
                return client_cycles(*manager, t, stop);
            }));
            raw_runs.push_back(measure(
                threads, seconds, [&](int t, auto &stop) { return raw_cycles(raw[t], t, stop); }));
            ratios.push_back(client_runs.back() / raw_runs.back());
        }
        const double best_client = *std::max_element(client_runs.begin(), client_runs.end());
        const double best_raw = *std::max_element(raw_runs.begin(), raw_runs.end());
        std::sort(ratios.begin(), ratios.end());
        const double ratio = best_client / best_raw;
        if (threads == 1 && target > 0)
            met = ratio >= target;
        std::printf("%-14s %-8d %14.0f %14.0f %8.2f %14.2f\n", label, threads, best_client,
                    best_raw, ratio, ratios[ratios.size() / 2]);
    }
    return met;
}

// One node, one thread: two empty-script EVALSHAs against SET NX PX + DEL,
// alternating; prints the row.
void run_script_floor(const std::string &url, double seconds) {
    const auto nodes = nodes_of(url);
    std::vector<std::unique_ptr<Raw>> raw;
    raw.push_back(std::make_unique<Raw>(nodes[0].first, nodes[0].second));
    Raw evals(nodes[0].first, nodes[0].second);
    const std::string sha = load_empty_script(evals);
    std::vector<double> eval_runs, raw_runs, ratios;
    for (int round = 0; round < kRounds; ++round) {
        eval_runs.push_back(measure(1, seconds, [&](int t, auto &stop) {
            return empty_script_cycles(evals, sha, t, stop);
        }));
        raw_runs.push_back(
            measure(1, seconds, [&](int t, auto &stop) { return raw_cycles(raw, t, stop); }));
        ratios.push_back(eval_runs.back() / raw_runs.back());
    }
    const double best_eval = *std::max_element(eval_runs.begin(), eval_runs.end());
    const double best_raw = *std::max_element(raw_runs.begin(), raw_runs.end());
    std::sort(ratios.begin(), ratios.end());
    std::printf("%-14s %-8d %14.0f %14.0f %8.2f %14.2f\n", "empty scripts", 1, best_eval, best_raw,
                best_eval / best_raw, ratios[ratios.size() / 2]);
}

}  // namespace

// Both cases, then the verdict on the single-node target.
int main(int argc, char **argv) {
    const char *single = std::getenv("LOCKEXT_BENCH_REDIS_URL");
    const char *redlock = std::getenv("LOCKEXT_BENCH_REDLOCK_URL");
    if (single == nullptr || *single == '\0' || redlock == nullptr || *redlock == '\0') {
        std::fprintf(stderr,
                     "set LOCKEXT_BENCH_REDIS_URL (redis://host:port) and "
                     "LOCKEXT_BENCH_REDLOCK_URL (redlock://h1:p1,h2:p2,h3:p3)\n");
        return 2;
    }
    const double seconds = argc > 1 ? std::atof(argv[1]) : 1.5;
    try {
        std::printf("%-14s %-8s %14s %14s %8s %14s\n", "case", "threads", "client ops/s",
                    "raw ops/s", "ratio", "median ratio");
        const bool met = run_case("redis", single, seconds, 0.9);
        run_script_floor(single, seconds);
        run_case("redlock (3)", redlock, seconds, 0);
        std::printf("target single node client/raw >= 0.90 (1 thread): %s\n",
                    met ? "met" : "MISSED");
        return 0;
    } catch (const std::exception &e) {
        std::fprintf(stderr, "benchmark failed: %s\n", e.what());
        return 1;
    }
}
