// What the client benchmarks share: a fixed-time throughput measurement.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <string>
#include <vector>

#include "lockext/lockext.hpp"

namespace lockext::bench {

// Run body(thread index, stop flag) on threads threads for seconds; cycles/s.
// body returns how many cycles it completed before it saw the flag.
template <class Body>
double measure(int threads, double seconds, Body body) {
    using Clock = std::chrono::steady_clock;
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

// Cycles of uncontended acquire + release through the client (30 s TTL,
// one name per thread) until stop.
inline std::int64_t client_cycles(LockManager &manager, int thread, std::atomic<bool> &stop) {
    const std::string name = "bench:client:" + std::to_string(thread);
    LockOptions options;
    options.ttl = std::chrono::seconds(30);
    std::int64_t n = 0;
    while (!stop.load(std::memory_order_relaxed)) {
        Lock lock = manager.acquire(name, options);
        lock.release();
        ++n;
    }
    return n;
}

}  // namespace lockext::bench
