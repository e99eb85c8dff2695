// The watchdog's failure paths, with faults injected between the client and
// the real in-memory backend: a renewal that finds the lease gone, a transient
// outage, an outage longer than the TTL, releases racing renewals, and
// sub-second TTLs.
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <latch>
#include <random>
#include <thread>

#include "test_support.hpp"

using namespace lockext;
using namespace lockext::test;

namespace {

// A manager over a fault-injecting wrapper of a fresh in-memory store, with
// its own metrics registry.
struct Fixture {
    std::shared_ptr<FaultInjectingBackend> faults =
        std::make_shared<FaultInjectingBackend>(detail::make_memory_backend());
    std::shared_ptr<Metrics> metrics = std::make_shared<Metrics>();
    std::unique_ptr<LockManager> locks =
        std::make_unique<LockManager>(faults, ConnectOptions{.metrics = metrics});

    // Whether the exposition has this exact sample line.
    bool has_sample(const std::string &line) const {
        const std::string text = metrics->expose();
        return text.find(line + "\n") != std::string::npos;
    }
};

// Milliseconds from a to b.
long long ms_between(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(b - a).count();
}

}  // namespace

BOOST_AUTO_TEST_SUITE(watchdog, *boost::unit_test::precondition(lockext::test::LocalRun{}))

// A renewal that reports "not held" makes the loss loud: on_lost once, the
// stop token, is_held false, and the lost-lease metric.
BOOST_FIXTURE_TEST_CASE(renewal_not_held_marks_lost, Fixture) {
    Lock lock = locks->acquire("wd-not-held", {.ttl = 300ms});
    std::atomic<int> fired{0};
    lock.on_lost([&] { fired.fetch_add(1); });
    std::stop_token lost = lock.lost_token();
    faults->renew_not_held = true;
    BOOST_TEST(eventually([&] { return fired.load() > 0; }, 2s));
    BOOST_TEST(lost.stop_requested());
    BOOST_TEST(!lock.is_held());
    std::this_thread::sleep_for(300ms);  // no second report, no more renewals
    const int calls = faults->renew_calls.load();
    std::this_thread::sleep_for(300ms);
    BOOST_TEST(fired.load() == 1);
    BOOST_TEST(faults->renew_calls.load() == calls);
    BOOST_TEST(has_sample(R"(lockext_lost_leases_total{backend="memory",class="default"} 1)"));
    BOOST_TEST(has_sample(R"(lockext_renewals_total{backend="memory",result="lost"} 1)"));
}

// One failed renewal is retried soon; the lease is kept and never reported lost.
BOOST_FIXTURE_TEST_CASE(transient_error_is_retried, Fixture) {
    Lock lock = locks->acquire("wd-transient", {.ttl = 300ms});
    std::atomic<int> fired{0};
    lock.on_lost([&] { fired.fetch_add(1); });
    faults->renew_failures = 1;
    std::this_thread::sleep_for(1s);
    BOOST_TEST(lock.is_held());
    BOOST_TEST(fired.load() == 0);
    BOOST_TEST(faults->renew_failures.load() == 0);
    BOOST_TEST(faults->renew_calls.load() >= 5);
    BOOST_TEST(!locks->try_acquire("wd-transient", {.ttl = 1s}).has_value());
    BOOST_TEST(has_sample(R"(lockext_renewals_total{backend="memory",result="error"} 1)"));
    BOOST_TEST(lock.release());
}

// During an outage longer than the TTL the lease is declared lost once the
// local deadline (send time of the last good request + ttl) passes, not before.
BOOST_FIXTURE_TEST_CASE(outage_longer_than_ttl_loses_at_deadline, Fixture) {
    constexpr auto kTtl = 600ms;
    faults->renew_outage = true;
    const auto before = Clock::now();
    Lock lock = locks->acquire("wd-outage", {.ttl = kTtl});
    const auto after = Clock::now();
    std::atomic<long long> lost_at_ms{-1};
    lock.on_lost([&] { lost_at_ms = ms_between(before, Clock::now()); });

    std::this_thread::sleep_until(after + kTtl - 150ms);
    BOOST_TEST(lock.is_held());
    BOOST_TEST(lost_at_ms.load() == -1);
    BOOST_TEST(faults->renew_calls.load() >= 2);  // it kept retrying

    BOOST_TEST(eventually([&] { return lost_at_ms.load() >= 0; }, 2s));
    BOOST_TEST(lost_at_ms.load() >= 600);
    BOOST_TEST(lost_at_ms.load() <= ms_between(before, after) + 600 + 400);
    BOOST_TEST(!lock.is_held());
    BOOST_TEST(lock.lost_token().stop_requested());
}

// A release racing an in-flight (slow) renewal is never reported as a loss,
// and no renewal reaches the backend after release() returned.
BOOST_FIXTURE_TEST_CASE(release_racing_renewal_is_not_a_loss, Fixture) {
    faults->renew_delay_ms = 40;
    std::atomic<int> fired{0};
    std::mt19937 rng(12345);
    for (int i = 0; i < 12; i++) {
        Lock lock = locks->acquire("wd-race", {.ttl = 300ms});
        lock.on_lost([&] { fired.fetch_add(1); });
        if (i % 2 == 0) {
            // Deterministic race: release while a renewal is inside the backend.
            faults->reset_renew_started();
            BOOST_REQUIRE(faults->wait_renew_started(2s));
        } else {
            std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 150));
        }
        BOOST_TEST(lock.release());
        const int calls = faults->renew_calls.load();
        std::this_thread::sleep_for(i == 11 ? 300ms : 0ms);
        if (i == 11)
            BOOST_TEST(faults->renew_calls.load() == calls);
    }
    BOOST_TEST(fired.load() == 0);
    BOOST_TEST(faults->renew_after_release.load() == 0);
    BOOST_TEST(!has_sample(R"(lockext_lost_leases_total{backend="memory",class="default"} 1)"));
}

// After release nothing is renewed any more.
BOOST_FIXTURE_TEST_CASE(renewal_stops_after_release, Fixture) {
    Lock lock = locks->acquire("wd-stop", {.ttl = 90ms});
    BOOST_TEST(eventually([&] { return faults->renew_calls.load() >= 2; }, 2s));
    BOOST_TEST(lock.release());
    const int calls = faults->renew_calls.load();
    std::this_thread::sleep_for(300ms);
    BOOST_TEST(faults->renew_calls.load() == calls);
    BOOST_TEST(faults->renew_after_release.load() == 0);
}

// A 300 ms TTL is renewed at 100 ms, not truncated to whole seconds: held 1.5 s.
BOOST_FIXTURE_TEST_CASE(sub_second_ttl_is_renewed, Fixture) {
    Lock lock = locks->acquire("wd-short", {.ttl = 300ms});
    const auto first_expiry = lock.expires_at();
    std::this_thread::sleep_for(1500ms);
    BOOST_TEST(lock.is_held());
    BOOST_TEST((lock.expires_at() > first_expiry));
    BOOST_TEST(faults->renew_calls.load() >= 8);
    // The real store agrees that it is still held.
    BOOST_TEST(!locks->try_acquire("wd-short", {.ttl = 1s}).has_value());
    BOOST_TEST(lock.release());
}

// Outage during acquire: retried with backoff within the wait, then given up.
BOOST_FIXTURE_TEST_CASE(acquire_retries_through_outage, Fixture) {
    faults->acquire_failures = 3;
    const LockOptions opts{.ttl = 1s, .wait = 2s, .retry = {.initial = 20ms, .max = 40ms}};
    Lock lock = locks->acquire("wd-acquire-outage", opts);
    BOOST_TEST(lock.is_held());
    BOOST_TEST(faults->acquire_failures.load() == 0);

    faults->acquire_failures = 1000;
    const auto start = Clock::now();
    BOOST_CHECK_THROW(locks->acquire("wd-acquire-outage-2", {.ttl = 1s, .wait = 300ms}),
                      BackendUnavailable);
    const auto elapsed = ms_between(start, Clock::now());
    BOOST_TEST(elapsed >= 250);
    BOOST_TEST(elapsed < 1500);
    // wait = 0: a single attempt.
    const int left = faults->acquire_failures.load();
    BOOST_CHECK_THROW(locks->try_acquire("wd-acquire-outage-3", {.ttl = 1s}), BackendUnavailable);
    BOOST_TEST(faults->acquire_failures.load() == left - 1);
    faults->acquire_failures = 0;
    BOOST_TEST(
        has_sample(R"(lockext_acquire_total{backend="memory",class="default",result="error"} 2)"));
}

// The last reference to the manager's core may be dropped on the watchdog
// thread itself (inside an on_lost callback): that must neither deadlock nor crash.
BOOST_AUTO_TEST_CASE(core_dropped_on_watchdog_thread) {
    auto faults = std::make_shared<FaultInjectingBackend>(detail::make_memory_backend());
    auto locks = std::make_unique<LockManager>(faults);
    std::optional<Lock> lock = locks->acquire("wd-last-ref", {.ttl = 150ms});
    std::latch dropped(1);
    std::atomic<bool> in_callback{false};
    lock->on_lost([&] {
        in_callback = true;
        dropped.wait();  // the main thread lets go of everything meanwhile
    });
    faults->renew_not_held = true;
    BOOST_REQUIRE(eventually([&] { return in_callback.load(); }, 2s));
    lock.reset();
    locks.reset();
    faults.reset();
    dropped.count_down();
    // The watchdog thread now drops the last reference and detaches itself.
    std::this_thread::sleep_for(200ms);
    BOOST_TEST(true);
}

BOOST_AUTO_TEST_SUITE_END()
