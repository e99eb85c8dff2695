// What the client benchmarks share: a fixed-time throughput measurement.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

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

}  // namespace lockext::bench
