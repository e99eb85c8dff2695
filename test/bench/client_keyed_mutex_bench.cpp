// client_keyed_mutex_bench: lockext::KeyedMutex against the naive keyed mutex
// (one global std::mutex around an unordered_map<std::string, std::mutex>), in
// the same run, plus PartitionProcessor throughput.
//
// Cases (each run 3 times; the median is reported):
//   uncontended  1 thread locking and unlocking 1,000 keys in turn
//   disjoint     2 threads, each on its own 1,000 keys
//   same-key     2 threads on one key
//   partition    PartitionProcessor, 2 workers, 1,000 keys, tasks submitted by
//                one thread (submit -> run -> done, measured to the drain)
//
// The naive map never erases an entry (erasing is what made the seed design
// unsafe), so its memory grows with every key ever seen; KeyedMutex frees each
// entry when its last holder or waiter leaves. Both keep a plain counter per
// key under the key's lock, and the run fails if a count comes out wrong.
//
// Usage: client_keyed_mutex_bench [scale]   (scale multiplies the op counts; default 1)
// Output: a Markdown table (ops/s, ns/op, and ratio = KeyedMutex ops/s over
// naive ops/s, so above 1 means KeyedMutex is faster), then the
// PartitionProcessor line. Exit status 0, or 1 (with a message on stderr)
// when a count came out wrong.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "lockext/keyed_mutex.hpp"
#include "lockext/partition_processor.hpp"

namespace {

using Clock = std::chrono::steady_clock;

// Print an error and exit with status 1.
[[noreturn]] void fail(const std::string &msg) {
    std::fprintf(stderr, "client_keyed_mutex_bench: error: %s\n", msg.c_str());
    std::exit(1);
}

// The naive approach: a global mutex around a map of per-key mutexes that is never pruned.
class NaiveKeyedMutex {
  public:
    // Lock key's mutex (created on first use) and return it for the unlock.
    std::mutex &lock(std::string_view key) {
        std::mutex *m;
        {
            std::lock_guard guard(map_mu_);
            m = &map_.try_emplace(std::string(key)).first->second;
        }
        m->lock();
        return *m;
    }

  private:
    std::mutex map_mu_;
    std::unordered_map<std::string, std::mutex> map_;
};

// One lock/unlock with a counter bump inside, through KeyedMutex.
void keyed_op(lockext::KeyedMutex &m, std::string_view key, long &counter) {
    auto guard = m.lock(key);
    ++counter;
}

// One lock/unlock with a counter bump inside, through the naive map.
void naive_op(NaiveKeyedMutex &m, std::string_view key, long &counter) {
    std::mutex &mu = m.lock(key);
    ++counter;
    mu.unlock();
}

// Keys "<prefix><i>" for i in [0, n).
std::vector<std::string> make_keys(const std::string &prefix, int n) {
    std::vector<std::string> keys;
    keys.reserve(n);
    for (int i = 0; i < n; ++i)
        keys.push_back(prefix + std::to_string(i));
    return keys;
}

// Run per_thread ops on each of `threads` threads, thread t cycling over
// keys[t]; return total ops per second. counters[t][i] belongs to keys[t][i].
template <class Op>
double run_case(int threads, long per_thread, const std::vector<std::vector<std::string>> &keys,
                std::vector<std::vector<long>> &counters, Op op) {
    std::atomic<int> ready{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            const auto &mine = keys[t];
            auto &count = counters[t];
            ++ready;
            while (!go.load()) {
            }
            std::size_t k = 0;
            for (long i = 0; i < per_thread; ++i) {
                op(mine[k], count[k]);
                if (++k == mine.size())
                    k = 0;
            }
        });
    }
    while (ready.load() != threads) {
    }
    const auto start = Clock::now();
    go = true;
    for (auto &th : pool)
        th.join();
    const double secs = std::chrono::duration<double>(Clock::now() - start).count();
    return static_cast<double>(per_thread) * threads / secs;
}

// The middle of three measurements.
double median3(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[1];
}

struct CaseSpec {
    const char *name;
    int threads;
    long per_thread;
    bool shared_key;  // all threads on one key
};

// Measure one case for both implementations and print its row.
void run_keyed_case(const CaseSpec &spec) {
    std::vector<std::vector<std::string>> keys;
    for (int t = 0; t < spec.threads; ++t) {
        keys.push_back(spec.shared_key ? std::vector<std::string>{"hot"}
                                       : make_keys("t" + std::to_string(t) + ":key:", 1000));
    }
    std::vector<double> keyed_runs, naive_runs;
    for (int run = 0; run < 3; ++run) {
        for (int impl = 0; impl < 2; ++impl) {
            // One counter per distinct key: threads on the shared key share it.
            std::vector<std::vector<long>> counters(spec.threads);
            std::vector<long> shared(1, 0);
            for (int t = 0; t < spec.threads; ++t)
                counters[t].assign(keys[t].size(), 0);
            double rate;
            if (impl == 0) {
                lockext::KeyedMutex m;
                rate = run_case(spec.threads, spec.per_thread, keys, counters,
                                [&](std::string_view key, long &c) {
                                    keyed_op(m, key, spec.shared_key ? shared[0] : c);
                                });
                if (m.size() != 0)
                    fail("KeyedMutex kept entries after the run");
                keyed_runs.push_back(rate);
            } else {
                NaiveKeyedMutex m;
                rate = run_case(spec.threads, spec.per_thread, keys, counters,
                                [&](std::string_view key, long &c) {
                                    naive_op(m, key, spec.shared_key ? shared[0] : c);
                                });
                naive_runs.push_back(rate);
            }
            long total = shared[0];
            for (auto &per : counters) {
                for (long c : per)
                    total += c;
            }
            if (total != spec.per_thread * spec.threads) {
                fail(std::string(spec.name) + ": lost increments (" + std::to_string(total) +
                     " of " + std::to_string(spec.per_thread * spec.threads) + ")");
            }
        }
    }
    const double keyed = median3(keyed_runs), naive = median3(naive_runs);
    std::printf("| %-28s | %7d | %13.0f | %6.1f | %13.0f | %6.1f | %6.2fx |\n", spec.name,
                spec.threads, keyed, 1e9 / keyed * spec.threads, naive, 1e9 / naive * spec.threads,
                keyed / naive);
}

// Submit `tasks` tasks over 1,000 keys to 2 workers; check per-key order; return tasks/s.
double run_partition(long tasks) {
    constexpr int kKeys = 1000;
    const auto keys = make_keys("user:", kKeys);
    std::vector<long> seen(kKeys, 0);  // per key: tasks run, checked against each task's sequence
    std::atomic<long> out_of_order{0};
    const auto start = Clock::now();
    {
        lockext::PartitionProcessor processor({.workers = 2, .capacity = 10000});
        for (long i = 0; i < tasks; ++i) {
            const int k = static_cast<int>(i % kKeys);
            const long seq = i / kKeys;
            processor.submit(keys[k], [&seen, &out_of_order, k, seq] {
                if (seen[k] != seq)
                    ++out_of_order;
                ++seen[k];
            });
        }
        processor.shutdown(lockext::Drain::all);
    }
    const double secs = std::chrono::duration<double>(Clock::now() - start).count();
    long total = 0;
    for (long c : seen)
        total += c;
    if (total != tasks)
        fail("partition: lost tasks");
    if (out_of_order.load() != 0)
        fail("partition: per-key order broken");
    return static_cast<double>(tasks) / secs;
}

}  // namespace

// Run every case and print the table.
int main(int argc, char **argv) {
    const double scale = argc > 1 ? std::atof(argv[1]) : 1.0;
    if (!(scale > 0))
        fail("scale must be a positive number");
    const auto n = [scale](long base) { return std::max(1L, static_cast<long>(base * scale)); };

    std::printf(
        "KeyedMutex vs one global std::mutex over unordered_map<string, mutex> "
        "(%u hardware threads, median of 3)\n\n",
        std::thread::hardware_concurrency());
    std::printf("| %-28s | %7s | %13s | %6s | %13s | %6s | %7s |\n", "case (lock+unlock = 1 op)",
                "threads", "KeyedMutex/s", "ns/op", "naive/s", "ns/op", "ratio");
    std::printf(
        "|------------------------------|---------|---------------|--------|"
        "---------------|--------|---------|\n");
    run_keyed_case({"uncontended, 1,000 keys", 1, n(2'000'000), false});
    run_keyed_case({"disjoint keys", 2, n(1'000'000), false});
    run_keyed_case({"same key", 2, n(500'000), true});

    std::vector<double> rates;
    for (int run = 0; run < 3; ++run)
        rates.push_back(run_partition(n(500'000)));
    std::printf(
        "\nPartitionProcessor: %.0f tasks/s (2 workers, 1,000 keys, one submitter, "
        "submit to drained)\n",
        median3(rates));
    std::printf(
        "ns/op is per thread (wall time x threads / ops); the naive map never frees "
        "an entry, KeyedMutex ends each run empty\n");
    return 0;
}
