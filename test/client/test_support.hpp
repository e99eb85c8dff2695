// Shared helpers for the client tests: which backend to test, unique lock
// names, an overlap counter, and a fault-injecting backend decorator.
#pragma once

#include <unistd.h>

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <ostream>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <thread>

#include "lockext/backend.hpp"
#include "lockext/lockext.hpp"

namespace lockext::detail {
// Defined in the library (client/src/memory_backend.cpp); declared here
// because the tests cannot include the library's private headers.
std::shared_ptr<Backend> make_memory_backend();
}  // namespace lockext::detail

namespace lockext {
// How Boost.Test prints a Mode in failure messages.
inline std::ostream &boost_test_print_type(std::ostream &out, Mode mode) {
    return out << to_string(mode);
}
}  // namespace lockext

namespace lockext::test {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// The backend under test: $LOCKEXT_TEST_URL, or the in-memory one.
inline std::string url() {
    const char *u = std::getenv("LOCKEXT_TEST_URL");
    return u && *u ? std::string(u) : std::string("memory:");
}

// A precondition for the suites that do not use the backend under test
// (KeyedMutex, PartitionProcessor, the memory store, the watchdog, metrics,
// URL parsing): they run once per build, on the memory: run, not once per
// backend.
struct LocalRun {
    // Whether this is the memory: run.
    boost::test_tools::assertion_result operator()(boost::unit_test::test_unit_id) const {
        boost::test_tools::assertion_result ok(url().starts_with("memory:"));
        ok.message() << "backend-independent; runs once per build, on the memory: run";
        return ok;
    }
};

// A manager on the backend under test (a separate client each call on servers).
inline std::unique_ptr<LockManager> manager(ConnectOptions options = {}) {
    return connect(url(), std::move(options));
}

// A lock name no other test, run or concurrent process uses.
inline std::string unique_name(std::string_view what) {
    static std::atomic<int> counter{0};
    static const auto run = std::random_device{}();
    return "lockext-test:" + std::string(what) + ":" + std::to_string(getpid()) + ":" +
           std::to_string(run) + ":" + std::to_string(counter.fetch_add(1));
}

// Counts threads inside a critical section; max() > 1 means sections overlapped.
class OverlapCounter {
  public:
    // Marks one thread inside for its lifetime.
    class Inside {
      public:
        // Enter.
        explicit Inside(OverlapCounter &c) : c_(c) {
            const int now = c_.inside_.fetch_add(1) + 1;
            int seen = c_.max_.load();
            while (now > seen && !c_.max_.compare_exchange_weak(seen, now)) {
            }
            c_.entries_.fetch_add(1);
        }
        // Leave.
        ~Inside() {
            c_.inside_.fetch_sub(1);
        }
        Inside(const Inside &) = delete;
        Inside &operator=(const Inside &) = delete;

      private:
        OverlapCounter &c_;
    };

    // Enter the section until the returned guard dies.
    Inside enter() {
        return Inside(*this);
    }
    // Most threads ever inside at once.
    int max() const {
        return max_.load();
    }
    // How many times the section was entered.
    int entries() const {
        return entries_.load();
    }

  private:
    std::atomic<int> inside_{0};
    std::atomic<int> max_{0};
    std::atomic<int> entries_{0};
};

// Wait until pred() holds or timeout passes; whether it held.
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout) {
    const auto until = Clock::now() + timeout;
    while (!pred()) {
        if (Clock::now() >= until)
            return false;
        std::this_thread::sleep_for(5ms);
    }
    return true;
}

// Wraps a real backend and injects the faults the watchdog must survive.
// Not a mock: every call that is not failed goes to the real backend.
class FaultInjectingBackend final : public detail::Backend {
  public:
    // Decorate inner.
    explicit FaultInjectingBackend(std::shared_ptr<detail::Backend> inner)
        : inner_(std::move(inner)) {}

    // The wrapped backend's kind (so metrics labels are the real ones).
    std::string_view kind() const noexcept override {
        return inner_->kind();
    }

    // Pass through (or fail during an acquire outage).
    std::optional<detail::Lease> acquire(std::string_view name,
                                         const LockOptions &options) override {
        if (acquire_failures.load() > 0) {
            acquire_failures.fetch_sub(1);
            throw BackendUnavailable("injected: acquire unreachable");
        }
        acquire_calls.fetch_add(1);
        return inner_->acquire(name, options);
    }

    // Count, check it is not after a release, then fail, lie, delay or pass through.
    std::optional<std::chrono::system_clock::time_point> renew(
        const detail::Lease &lease, std::chrono::milliseconds ttl) override {
        {
            std::lock_guard<std::mutex> g(mu_);
            if (releasing_.count(lease.token) != 0)
                renew_after_release.fetch_add(1);
            renew_started_ = true;
        }
        cv_.notify_all();
        renew_calls.fetch_add(1);
        if (const int ms = renew_delay_ms.load(); ms > 0)
            std::this_thread::sleep_for(std::chrono::milliseconds(ms));
        if (renew_outage.load())
            throw BackendUnavailable("injected: renew unreachable");
        if (renew_failures.load() > 0) {
            renew_failures.fetch_sub(1);
            throw BackendUnavailable("injected: renew unreachable once");
        }
        if (renew_not_held.load())
            return std::nullopt;
        return inner_->renew(lease, ttl);
    }

    // Record the release (for renew_after_release), then pass through.
    bool release(const detail::Lease &lease) override {
        {
            std::lock_guard<std::mutex> g(mu_);
            releasing_.insert(lease.token);
        }
        release_calls.fetch_add(1);
        return inner_->release(lease);
    }

    // Forget earlier renew starts; wait_renew_started() then waits for a new one.
    void reset_renew_started() {
        std::lock_guard<std::mutex> g(mu_);
        renew_started_ = false;
    }

    // Block until a renewal has reached the backend since the last reset.
    bool wait_renew_started(std::chrono::milliseconds timeout) {
        std::unique_lock<std::mutex> g(mu_);
        return cv_.wait_for(g, timeout, [this] { return renew_started_; });
    }

    // The real backend, for checks that bypass the faults.
    detail::Backend &inner() {
        return *inner_;
    }

    std::atomic<int> acquire_failures{0};     // fail the next N acquires
    std::atomic<int> renew_failures{0};       // fail the next N renewals
    std::atomic<bool> renew_outage{false};    // fail every renewal
    std::atomic<bool> renew_not_held{false};  // report every renewal as "not held"
    std::atomic<int> renew_delay_ms{0};       // slow renewals down
    std::atomic<int> acquire_calls{0};
    std::atomic<int> renew_calls{0};
    std::atomic<int> release_calls{0};
    std::atomic<int> renew_after_release{0};  // must stay 0

  private:
    std::shared_ptr<detail::Backend> inner_;
    std::mutex mu_;
    std::condition_variable cv_;
    std::set<std::int64_t> releasing_;
    bool renew_started_ = false;
};

}  // namespace lockext::test
