// Factories for the backends built into the library; connect() picks one by URL.
#pragma once

#include <chrono>
#include <memory>
#include <string_view>

#include "lockext/backend.hpp"
#include "lockext/lockext.hpp"

namespace lockext::detail {

// A backend that keeps its locks in this process ("memory:").
std::shared_ptr<Backend> make_memory_backend();

// A backend over the lockext PostgreSQL extension; url is a libpq URI.
std::shared_ptr<Backend> make_postgres_backend(std::string_view url, const ConnectOptions &options);

// A backend over one Redis node (redis://) or independent masters with a
// quorum (redlock://); the URL grammar is in redis_url.hpp.
std::shared_ptr<Backend> make_redis_backend(std::string_view url, const ConnectOptions &options);

// A steady_clock reading the caller took just before calling an in-process
// backend on this thread. Reading the clock costs as much as the whole
// in-memory lookup (about 35 ns on a VM), and the manager reads it anyway for
// its local deadline and metrics, so the memory backend reuses it. take()
// clears it, so a hint is never used for a later call. Only ever earlier than
// the real time: expiries computed from it are conservative.
class ClockHint {
  public:
    using Steady = std::chrono::steady_clock;

    // Offer now to the next backend call on this thread.
    static void set(Steady::time_point now) noexcept {
        hint_ = now;
    }
    // The offered reading (cleared), or a fresh one when none was offered.
    static Steady::time_point take() noexcept {
        const Steady::time_point t = hint_;
        if (t == Steady::time_point{})
            return Steady::now();
        hint_ = Steady::time_point{};
        return t;
    }

    // Offers a reading for the backend call made during its lifetime only.
    class Offer {
      public:
        // Offer now.
        explicit Offer(Steady::time_point now) noexcept {
            set(now);
        }
        // Withdraw it, used or not (a backend that ignores hints must not leave one behind).
        ~Offer() {
            set(Steady::time_point{});
        }
        Offer(const Offer &) = delete;
        Offer &operator=(const Offer &) = delete;
    };

  private:
    static inline thread_local Steady::time_point hint_{};
};

// The time by which a backend call made on this thread must have returned,
// set by the watchdog to the lease's local deadline for a renewal. A backend
// that waits for the network gives up then (BackendUnavailable, not retried)
// rather than block the watchdog, with every other lease's renewal behind
// it, past the moment the lease may have ended: a renewal stuck on a dead
// peer or a stalled server would otherwise keep a lost lease from being
// reported until TCP gave up, minutes later.
class CallDeadline {
  public:
    using Steady = std::chrono::steady_clock;

    // The deadline set on this thread (max when none).
    static Steady::time_point get() noexcept {
        return deadline_;
    }

    // Sets the deadline for the backend calls made during its lifetime.
    class Scope {
      public:
        // Set deadline, remembering the one it replaces.
        explicit Scope(Steady::time_point deadline) noexcept : saved_(deadline_) {
            deadline_ = deadline;
        }
        // Put back the previous deadline.
        ~Scope() {
            deadline_ = saved_;
        }
        Scope(const Scope &) = delete;
        Scope &operator=(const Scope &) = delete;

      private:
        Steady::time_point saved_;
    };

  private:
    static inline thread_local Steady::time_point deadline_ = Steady::time_point::max();
};

}  // namespace lockext::detail
