// PartitionProcessor: per-key order with nothing lost, one task per key at a
// time, parallelism across keys (a slow key delays only itself), backpressure,
// error delivery, both shutdown modes and misuse. Each case checks its
// invariant from its own records; waits are bounded so a bug fails, never hangs.
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "lockext/lockext.hpp"
#include "test_support.hpp"
#include "lockext/partition_processor.hpp"

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using lockext::Drain;
using lockext::PartitionOptions;
using lockext::PartitionProcessor;

namespace {

using lockext::test::OverlapCounter;

// A one-shot gate tasks can block on; waits give up after 10 s so a bug cannot hang the suite.
class Gate {
  public:
    // Let every current and future waiter through.
    void open() {
        std::lock_guard lock(mu_);
        open_ = true;
        cv_.notify_all();
    }
    // Block until open (true) or 10 s passed (false).
    bool wait() {
        std::unique_lock lock(mu_);
        return cv_.wait_for(lock, 10s, [&] { return open_; });
    }

  private:
    std::mutex mu_;
    std::condition_variable cv_;
    bool open_ = false;
};

// Poll cond every millisecond for up to 10 s; whether it became true.
template <class F>
bool eventually(F cond) {
    const auto deadline = Clock::now() + 10s;
    while (!cond()) {
        if (Clock::now() > deadline)
            return false;
        std::this_thread::sleep_for(1ms);
    }
    return true;
}

// Milliseconds elapsed since start.
long long ms_since(Clock::time_point start) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

}  // namespace

BOOST_AUTO_TEST_SUITE(partition_processor,
                      *boost::unit_test::precondition(lockext::test::LocalRun{}))

// 100 keys x 200 tasks on 4 workers, submitted interleaved across keys: every
// key's record is exactly 0..199 in order, no two tasks of a key overlap, and
// the total is exact.
BOOST_AUTO_TEST_CASE(per_key_order_and_nothing_lost) {
    constexpr int kKeys = 100;
    constexpr int kTasks = 200;
    std::vector<std::vector<int>> record(kKeys);  // each written only by its key's tasks
    std::vector<OverlapCounter> overlap(kKeys);
    std::atomic<int> ran{0};
    {
        PartitionProcessor processor({.workers = 4, .capacity = 1000});
        for (int seq = 0; seq < kTasks; ++seq) {
            for (int k = 0; k < kKeys; ++k) {
                processor.submit("user:" + std::to_string(k), [&, k, seq] {
                    {
                        auto inside = overlap[k].enter();
                        record[k].push_back(seq);
                    }
                    ++ran;
                });
            }
        }
        BOOST_TEST(processor.shutdown(Drain::all) == 0U);
        const auto stats = processor.stats();
        BOOST_TEST(stats.submitted == std::uint64_t{kKeys * kTasks});
        BOOST_TEST(stats.completed == std::uint64_t{kKeys * kTasks});
        BOOST_TEST(stats.queued == 0U);
        BOOST_TEST(stats.running == 0U);
    }
    BOOST_TEST(ran.load() == kKeys * kTasks);
    int wrong = 0;
    for (int k = 0; k < kKeys; ++k) {
        if (record[k].size() != kTasks)
            ++wrong;
        for (int i = 0; i < static_cast<int>(record[k].size()); ++i) {
            if (record[k][i] != i)
                ++wrong;
        }
        BOOST_TEST(overlap[k].max() == 1);
    }
    BOOST_TEST(wrong == 0);
}

// Tasks that linger (sleep) on 3 keys and 4 workers: never two of one key at
// once, while different keys do run side by side.
BOOST_AUTO_TEST_CASE(same_key_never_concurrent) {
    constexpr int kKeys = 3;
    constexpr int kTasks = 40;
    std::array<OverlapCounter, kKeys> per_key;
    OverlapCounter all;
    {
        PartitionProcessor processor({.workers = 4});
        for (int i = 0; i < kTasks; ++i) {
            for (int k = 0; k < kKeys; ++k) {
                processor.submit("k" + std::to_string(k), [&, k] {
                    auto inside_key = per_key[k].enter();
                    auto inside_all = all.enter();
                    std::this_thread::sleep_for(200us);
                });
            }
        }
    }  // the destructor drains
    for (auto &o : per_key)
        BOOST_TEST(o.max() == 1);
    BOOST_TEST(all.max() > 1);
}

// Two keys whose first tasks each wait for the other to start: both start,
// which needs two workers running at once.
BOOST_AUTO_TEST_CASE(different_keys_run_in_parallel) {
    std::promise<void> a_started, b_started;
    auto a_seen = b_started.get_future().share();
    auto b_seen = a_started.get_future().share();
    std::atomic<int> met{0};
    PartitionProcessor processor({.workers = 2});
    processor.submit("a", [&] {
        a_started.set_value();
        if (a_seen.wait_for(10s) == std::future_status::ready)
            ++met;
    });
    processor.submit("b", [&] {
        b_started.set_value();
        if (b_seen.wait_for(10s) == std::future_status::ready)
            ++met;
    });
    processor.wait_idle();
    BOOST_TEST(met.load() == 2);
}

// One key stuck in a task occupies one worker; the other worker still runs
// 200 tasks of other keys, and the stuck key's next task waits its turn.
BOOST_AUTO_TEST_CASE(slow_key_delays_only_itself) {
    Gate gate;
    std::atomic<int> others{0};
    std::atomic<bool> slow_second_ran{false};
    PartitionProcessor processor({.workers = 2});
    processor.submit("slow", [&] { gate.wait(); });
    processor.submit("slow", [&] { slow_second_ran = true; });
    for (int i = 0; i < 200; ++i)
        processor.submit("fast:" + std::to_string(i), [&] { ++others; });
    BOOST_TEST(eventually([&] { return others.load() == 200; }));
    BOOST_TEST(!slow_second_ran.load());
    gate.open();
    processor.wait_idle();
    BOOST_TEST(slow_second_ran.load());
}

// Capacity 4 with the only worker blocked: four submits fit, try_submit_for
// gives up after about its timeout, submit blocks until the worker frees room.
BOOST_AUTO_TEST_CASE(backpressure_when_full) {
    Gate gate;
    std::atomic<int> ran{0};
    PartitionProcessor processor({.workers = 1, .capacity = 4});
    std::promise<void> started;
    processor.submit("block", [&] {
        started.set_value();
        gate.wait();
    });
    started.get_future().wait();  // the blocking task is running, not queued
    for (int i = 0; i < 4; ++i)
        processor.submit("q" + std::to_string(i), [&] { ++ran; });
    BOOST_TEST(processor.stats().queued == 4U);

    auto start = Clock::now();
    BOOST_TEST(!processor.try_submit_for(
        "late", [&] { ++ran; }, 100ms));
    const auto waited = ms_since(start);
    BOOST_TEST(waited >= 100);
    BOOST_TEST(waited < 1000);
    BOOST_TEST(!processor.try_submit_for(
        "late", [&] { ++ran; }, 0ms));

    std::atomic<bool> returned{false};
    std::thread submitter([&] {
        processor.submit("late", [&] { ++ran; });
        returned = true;
    });
    std::this_thread::sleep_for(100ms);
    BOOST_TEST(!returned.load());  // still blocked: nothing drained
    BOOST_TEST(processor.stats().queued == 4U);
    gate.open();
    submitter.join();
    BOOST_TEST(returned.load());
    processor.wait_idle();
    BOOST_TEST(ran.load() == 5);
    BOOST_TEST(processor.stats().completed == 6U);
}

// A throwing task reaches on_error with its key and exception, and the key's
// later tasks still run, in order.
BOOST_AUTO_TEST_CASE(errors_reach_the_callback) {
    std::mutex mu;
    std::vector<std::pair<std::string, std::string>> errors;  // guarded by mu
    std::vector<int> bad_record;                              // written by key "bad" only
    std::atomic<int> good{0};
    {
        PartitionProcessor processor(
            {.workers = 2, .on_error = [&](std::string_view key, std::exception_ptr error) {
                 try {
                     std::rethrow_exception(error);
                 } catch (const std::exception &e) {
                     std::lock_guard lock(mu);
                     errors.emplace_back(std::string(key), e.what());
                 }
             }});
        for (int i = 0; i < 10; ++i) {
            processor.submit("bad", [&, i] {
                bad_record.push_back(i);
                if (i % 2 == 0)
                    throw std::runtime_error("boom " + std::to_string(i));
            });
            processor.submit("good", [&] { ++good; });
        }
        processor.wait_idle();
        const auto stats = processor.stats();
        BOOST_TEST(stats.failed == 5U);
        BOOST_TEST(stats.unreported == 0U);
        BOOST_TEST(stats.completed == 20U);
    }
    BOOST_TEST(good.load() == 10);
    BOOST_TEST(bad_record == std::vector<int>({0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
    BOOST_TEST_REQUIRE(errors.size() == 5U);
    for (std::size_t i = 0; i < errors.size(); ++i) {
        BOOST_TEST(errors[i].first == "bad");
        BOOST_TEST(errors[i].second == "boom " + std::to_string(2 * i));  // in key order
    }
}

// With no callback, or one that throws, failures are counted as unreported and
// the workers keep going.
BOOST_AUTO_TEST_CASE(unreported_errors_are_counted) {
    std::atomic<int> after{0};
    {
        PartitionProcessor processor({.workers = 1});
        processor.submit("x", [] { throw 7; });  // not even a std::exception
        processor.submit("x", [&] { ++after; });
        processor.wait_idle();
        BOOST_TEST(processor.stats().failed == 1U);
        BOOST_TEST(processor.stats().unreported == 1U);
    }
    {
        PartitionProcessor processor(
            {.workers = 1, .on_error = [](std::string_view, std::exception_ptr e) {
                 std::rethrow_exception(e);
             }});
        processor.submit("y", [] { throw std::logic_error("bad"); });
        processor.submit("y", [&] { ++after; });
        processor.wait_idle();
        BOOST_TEST(processor.stats().failed == 1U);
        BOOST_TEST(processor.stats().unreported == 1U);
    }
    BOOST_TEST(after.load() == 2);
}

// shutdown(Drain::all) runs every accepted task before returning, then refuses more.
BOOST_AUTO_TEST_CASE(shutdown_drain_runs_everything) {
    std::atomic<int> ran{0};
    PartitionProcessor processor({.workers = 2});
    for (int i = 0; i < 1000; ++i)
        processor.submit("k" + std::to_string(i % 10), [&] { ++ran; });
    BOOST_TEST(processor.shutdown(Drain::all) == 0U);
    BOOST_TEST(ran.load() == 1000);
    BOOST_TEST(processor.stats().completed == 1000U);
    BOOST_CHECK_THROW(processor.submit("k", [] {}), lockext::ProcessorStopped);
    BOOST_CHECK_THROW(processor.try_submit_for(
                          "k", [] {}, 10ms),
                      lockext::ProcessorStopped);
    BOOST_TEST(processor.shutdown(Drain::cancel) == 0U);  // again: nothing left
}

// shutdown(Drain::cancel) lets the running task finish, discards the 10 queued
// ones (destroying them: their captures are released), and reports 10.
BOOST_AUTO_TEST_CASE(shutdown_cancel_drops_queued) {
    Gate gate;
    std::atomic<bool> running_finished{false};
    std::atomic<int> queued_ran{0};
    auto token = std::make_shared<int>(0);
    PartitionProcessor processor({.workers = 1});
    std::promise<void> started;
    processor.submit("a", [&] {
        started.set_value();
        gate.wait();
        running_finished = true;
    });
    started.get_future().wait();
    for (int i = 0; i < 10; ++i) {
        processor.submit(i % 2 ? "a" : "b", [&, token] { ++queued_ran; });
    }
    BOOST_TEST(token.use_count() == 11);

    auto cancelled =
        std::async(std::launch::async, [&] { return processor.shutdown(Drain::cancel); });
    BOOST_TEST(eventually([&] { return processor.stats().cancelled == 10U; }));
    BOOST_TEST((cancelled.wait_for(50ms) == std::future_status::timeout));  // waits for "a"
    gate.open();
    BOOST_TEST(cancelled.get() == 10U);
    BOOST_TEST(running_finished.load());
    BOOST_TEST(queued_ran.load() == 0);
    BOOST_TEST(token.use_count() == 1);
    BOOST_TEST(processor.stats().completed == 1U);
    BOOST_CHECK_THROW(processor.submit("a", [] {}), lockext::ProcessorStopped);
}

// A submitter blocked on a full processor is released by shutdown with ProcessorStopped.
BOOST_AUTO_TEST_CASE(shutdown_releases_blocked_submitter) {
    Gate gate;
    PartitionProcessor processor({.workers = 1, .capacity = 1});
    std::promise<void> started;
    processor.submit("a", [&] {
        started.set_value();
        gate.wait();
    });
    started.get_future().wait();
    processor.submit("a", [] {});  // fills the queue
    auto blocked = std::async(std::launch::async, [&] {
        try {
            processor.submit("b", [] {});
            return std::string("accepted");
        } catch (const lockext::ProcessorStopped &) {
            return std::string("stopped");
        }
    });
    BOOST_TEST((blocked.wait_for(50ms) == std::future_status::timeout));
    auto stopping =
        std::async(std::launch::async, [&] { return processor.shutdown(Drain::cancel); });
    BOOST_TEST_REQUIRE((blocked.wait_for(10s) == std::future_status::ready));
    BOOST_TEST(blocked.get() == "stopped");
    gate.open();
    BOOST_TEST(stopping.get() == 1U);
}

// Tasks may submit follow-ups even when full (no self-deadlock); calling
// shutdown or wait_idle from a task is refused with InvalidArgument.
BOOST_AUTO_TEST_CASE(calls_from_inside_a_task) {
    std::vector<int> record;  // written by key "chain" only
    std::mutex mu;
    std::vector<std::string> errors;  // guarded by mu
    PartitionProcessor processor(
        {.workers = 1, .capacity = 1, .on_error = [&](std::string_view, std::exception_ptr e) {
             try {
                 std::rethrow_exception(e);
             } catch (const lockext::InvalidArgument &) {
                 std::lock_guard lock(mu);
                 errors.emplace_back("invalid");
             } catch (...) {
                 std::lock_guard lock(mu);
                 errors.emplace_back("other");
             }
         }});
    processor.submit("chain", [&] {
        record.push_back(0);
        for (int i = 1; i <= 3; ++i)
            processor.submit("chain", [&, i] { record.push_back(i); });
    });
    processor.submit("misuse", [&] { processor.shutdown(); });
    processor.submit("misuse", [&] { processor.wait_idle(); });
    processor.wait_idle();
    BOOST_TEST(record == std::vector<int>({0, 1, 2, 3}));
    BOOST_TEST(errors == std::vector<std::string>({"invalid", "invalid"}));
}

// Bad options and empty tasks are rejected with InvalidArgument.
BOOST_AUTO_TEST_CASE(rejects_bad_input) {
    BOOST_CHECK_THROW(PartitionProcessor({.workers = 0}), lockext::InvalidArgument);
    BOOST_CHECK_THROW(PartitionProcessor({.workers = std::size_t(-1)}), lockext::InvalidArgument);
    BOOST_CHECK_THROW(PartitionProcessor({.workers = 1, .capacity = 0}), lockext::InvalidArgument);
    PartitionProcessor processor({.workers = 1});
    BOOST_CHECK_THROW(processor.submit("k", nullptr), lockext::InvalidArgument);
    BOOST_CHECK_THROW(processor.try_submit_for("k", {}, 1ms), lockext::InvalidArgument);
    BOOST_TEST(processor.stats().submitted == 0U);
}

BOOST_AUTO_TEST_SUITE_END()
