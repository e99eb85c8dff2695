// KeyedMutex: mutual exclusion per key, independence of keys, the seed's
// freed-while-waited-on defect, bounded memory, timed locking and Guard moves.
// Every concurrency case checks its invariant from its own records: an atomic
// in-section counter whose maximum must be 1, and plain counters that must end exact.
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <deque>
#include <future>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "lockext/keyed_mutex.hpp"
#include "lockext/lockext.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

using lockext::test::OverlapCounter;

// Milliseconds elapsed since start.
long long ms_since(Clock::time_point start) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

}  // namespace

BOOST_AUTO_TEST_SUITE(keyed_mutex, *boost::unit_test::precondition(lockext::test::LocalRun{}))

// 8 threads hammer 4 keys: no two holders of a key ever overlap and no
// increment of the unprotected per-key counters is lost.
BOOST_AUTO_TEST_CASE(mutual_exclusion_per_key) {
    constexpr int kThreads = 8;
    constexpr int kIterations = 5000;
    constexpr int kKeys = 4;
    lockext::KeyedMutex mutex;
    std::array<OverlapCounter, kKeys> overlap;
    std::array<long, kKeys> counter{};  // deliberately not atomic: the key lock protects it
    std::array<std::array<long, kKeys>, kThreads> mine{};
    const std::array<std::string, kKeys> keys{"order:1", "order:2", "order:3", "order:4"};

    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < kIterations; ++i) {
                const int k = (t + i) % kKeys;
                auto guard = mutex.lock(keys[k]);
                {
                    auto inside = overlap[k].enter();
                    counter[k] = counter[k] + 1;
                }
                ++mine[t][k];
            }
        });
    }
    for (auto &t : threads)
        t.join();

    long total = 0;
    for (int k = 0; k < kKeys; ++k) {
        long expected = 0;
        for (int t = 0; t < kThreads; ++t)
            expected += mine[t][k];
        BOOST_TEST(overlap[k].max() == 1);
        BOOST_TEST(counter[k] == expected);
        total += counter[k];
    }
    BOOST_TEST(total == long{kThreads} * kIterations);
    BOOST_TEST(mutex.size() == 0U);
}

// Holding one key never delays another, even when both live in the same shard.
BOOST_AUTO_TEST_CASE(different_keys_do_not_block) {
    for (std::size_t shards : {std::size_t{1}, std::size_t{64}}) {
        lockext::KeyedMutex mutex(shards);
        auto held = mutex.lock("account:A");
        auto other = std::async(std::launch::async, [&] {
            const auto start = Clock::now();
            auto guard = mutex.lock("account:B");
            const bool busy = mutex.try_lock("account:A").has_value();
            return std::pair{ms_since(start), busy};
        });
        BOOST_TEST_REQUIRE((other.wait_for(5s) == std::future_status::ready));
        const auto [waited_ms, took_held_key] = other.get();
        BOOST_TEST(waited_ms < 1000);
        BOOST_TEST(!took_held_key);
        BOOST_TEST(mutex.size() == 1U);
    }
}

// The seed's defect: an entry freed while others wait on it lets a newcomer
// create a second mutex for the same key, and two holders coexist. Here 12
// threads contend on one key with blocking and timed attempts (timed waiters
// drop their reference mid-wait); inside the section there must always be
// exactly one holder and exactly one entry.
BOOST_AUTO_TEST_CASE(entry_never_freed_while_waited_on) {
    constexpr int kThreads = 12;
    constexpr int kIterations = 2000;
    lockext::KeyedMutex mutex;
    OverlapCounter overlap;
    long counter = 0;  // protected by the key
    std::atomic<long> wrong_size{0};
    std::atomic<long> acquired{0};
    std::atomic<long> timed_out{0};

    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < kIterations; ++i) {
                std::optional<lockext::KeyedMutex::Guard> guard;
                if (t % 3 == 0) {
                    guard = mutex.try_lock_for("hot", std::chrono::microseconds(50));
                    if (!guard) {
                        ++timed_out;
                        continue;
                    }
                } else {
                    guard = mutex.lock("hot");
                }
                {
                    auto inside = overlap.enter();
                    ++counter;
                    if (mutex.size() != 1)
                        ++wrong_size;
                    if (i % 64 == 0)
                        std::this_thread::yield();  // let waiters pile up
                }
                ++acquired;
            }
        });
    }
    for (auto &t : threads)
        t.join();

    BOOST_TEST(overlap.max() == 1);
    BOOST_TEST(wrong_size.load() == 0);
    BOOST_TEST(counter == acquired.load());
    BOOST_TEST(acquired.load() + timed_out.load() == long{kThreads} * kIterations);
    BOOST_TEST(mutex.size() == 0U);
}

// A million distinct keys pass through with at most 8 held at a time: the
// table never holds more entries than live guards, and ends empty.
BOOST_AUTO_TEST_CASE(memory_bounded_by_live_keys) {
    constexpr int kKeys = 1'000'000;
    constexpr std::size_t kWindow = 8;
    lockext::KeyedMutex mutex;
    std::deque<lockext::KeyedMutex::Guard> live;
    std::size_t peak = 0;
    bool over = false;
    std::string key;
    for (int i = 0; i < kKeys; ++i) {
        key.assign("session:");
        key.append(std::to_string(i));
        live.push_back(mutex.lock(key));
        if (live.size() > kWindow)
            live.pop_front();
        if (i % 4096 == 0) {
            const std::size_t now = mutex.size();
            peak = std::max(peak, now);
            if (now > live.size())
                over = true;
        }
    }
    BOOST_TEST(!over);
    BOOST_TEST(peak <= kWindow);
    BOOST_TEST(mutex.size() == kWindow);
    live.clear();
    BOOST_TEST(mutex.size() == 0U);
}

// try_lock never waits; try_lock_for waits about its timeout on a held key,
// and returns promptly once the holder lets go.
BOOST_AUTO_TEST_CASE(try_lock_and_timeouts) {
    lockext::KeyedMutex mutex;
    BOOST_TEST(mutex.try_lock_for("free", 100ms).has_value());  // free: at once

    auto held = mutex.lock("job:7");
    auto start = Clock::now();
    BOOST_TEST(!mutex.try_lock("job:7").has_value());
    BOOST_TEST(!mutex.try_lock_for("job:7", 0ms).has_value());
    BOOST_TEST(ms_since(start) < 50);

    start = Clock::now();
    BOOST_TEST(!mutex.try_lock_for("job:7", 100ms).has_value());
    const auto waited = ms_since(start);
    BOOST_TEST(waited >= 100);
    BOOST_TEST(waited < 1000);
    BOOST_TEST(mutex.size() == 1U);  // the timed-out waiter left no trace

    auto waiter = std::async(std::launch::async, [&] {
        const auto begin = Clock::now();
        auto guard = mutex.try_lock_for("job:7", std::chrono::hours(1000000));  // = forever
        return std::pair{guard.has_value(), ms_since(begin)};
    });
    std::this_thread::sleep_for(50ms);
    held.unlock();
    BOOST_TEST_REQUIRE((waiter.wait_for(5s) == std::future_status::ready));
    const auto [got, waited_ms] = waiter.get();
    BOOST_TEST(got);
    BOOST_TEST(waited_ms < 1000);
    BOOST_TEST(mutex.size() == 0U);
}

// Guards move like unique_ptr: the lock travels, assignment releases the old
// key, self-assignment is harmless, and a guard can be released on another thread.
BOOST_AUTO_TEST_CASE(guard_move_semantics) {
    lockext::KeyedMutex mutex;
    auto a = mutex.lock("a");
    BOOST_TEST(a.owns_lock());
    BOOST_TEST(a.key() == "a");

    lockext::KeyedMutex::Guard moved(std::move(a));
    BOOST_TEST(!a.owns_lock());  // NOLINT(bugprone-use-after-move): checking the moved-from state
    BOOST_TEST(a.key().empty());
    BOOST_TEST(moved.owns_lock());
    BOOST_TEST(moved.key() == "a");
    BOOST_TEST(!mutex.try_lock("a").has_value());

    auto b = mutex.lock("b");
    b = std::move(moved);  // releases "b", now holds "a"
    BOOST_TEST(b.key() == "a");
    BOOST_TEST(mutex.try_lock("b").has_value());
    BOOST_TEST(!mutex.try_lock("a").has_value());

    auto &alias = b;
    b = std::move(alias);  // self-move keeps the lock
    BOOST_TEST(b.owns_lock());
    BOOST_TEST(!mutex.try_lock("a").has_value());

    b.unlock();
    b.unlock();  // idempotent
    BOOST_TEST(!b.owns_lock());
    BOOST_TEST(mutex.size() == 0U);

    auto c = mutex.lock("c");
    std::thread([guard = std::move(c)]() mutable { guard.unlock(); }).join();
    BOOST_TEST(mutex.try_lock("c").has_value());
    BOOST_TEST(mutex.size() == 0U);
}

// with_lock returns fn's result and unlocks on both exits, including a throw.
BOOST_AUTO_TEST_CASE(with_lock_unlocks_on_every_path) {
    lockext::KeyedMutex mutex;
    const int answer = mutex.with_lock("k", [&] {
        BOOST_TEST(!mutex.try_lock("k").has_value());
        return 42;
    });
    BOOST_TEST(answer == 42);
    BOOST_CHECK_THROW(mutex.with_lock("k", [] { throw std::runtime_error("boom"); }),
                      std::runtime_error);
    BOOST_TEST(mutex.try_lock("k").has_value());
    BOOST_TEST(mutex.size() == 0U);
}

// Shard counts outside 1..65536 are rejected; odd counts work (rounded up).
BOOST_AUTO_TEST_CASE(rejects_bad_shard_count) {
    BOOST_CHECK_THROW(lockext::KeyedMutex(0), lockext::InvalidArgument);
    BOOST_CHECK_THROW(lockext::KeyedMutex(65537), lockext::InvalidArgument);
    lockext::KeyedMutex odd(3);
    auto guard = odd.lock("");  // the empty string is a key like any other
    BOOST_TEST(!odd.try_lock("").has_value());
    BOOST_TEST(odd.size() == 1U);
}

BOOST_AUTO_TEST_SUITE_END()
