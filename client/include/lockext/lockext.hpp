// lockext client: one lock interface over the in-memory, PostgreSQL and Redis backends.
//
//   auto locks = lockext::connect("postgres://app@db/app");
//   locks->with_lock("nightly-report", {.ttl = 30s, .wait = 5s}, [&](std::stop_token lost) {
//       run_report(lost);  // the watchdog renews the lease; `lost` fires if it is gone
//   });
//
// Every backend gives the same semantics: modes, fencing tokens, TTL expiry and
// FIFO-fair waits where the backend allows it. A backend that cannot do
// something throws InvalidArgument naming it; it never silently does something
// else.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "lockext/metrics.hpp"

namespace lockext {

// ---- errors ---------------------------------------------------------------

// Base of every error the library throws.
class Error : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

// The lock was not obtained within LockOptions::wait (from acquire and with_lock).
class NotObtained : public Error {
  public:
    using Error::Error;
};

// The lease is no longer held: it expired, was force-released, or renewal failed
// until its expiry passed.
class LockLost : public Error {
  public:
    using Error::Error;
};

// The backend could not be reached (refused, timed out, connection dropped).
// Leases already granted are not released by this; they run out by their TTL.
class BackendUnavailable : public Error {
  public:
    using Error::Error;
};

// Bad input, or something this backend cannot do.
class InvalidArgument : public Error {
  public:
    using Error::Error;
};

// ---- options --------------------------------------------------------------

enum class Mode { exclusive, shared, semaphore };

// The name used in URLs, SQL and metrics: "exclusive", "shared", "semaphore".
std::string_view to_string(Mode mode) noexcept;

// Backoff between attempts when the backend is unreachable during a wait (and,
// on Redlock, after a split vote, when several clients each got some nodes).
// Jitter is always applied: each delay is drawn uniformly from [delay/2, delay].
struct RetryPolicy {
    std::chrono::milliseconds initial{50};
    std::chrono::milliseconds max{2000};
};

struct LockOptions {
    // Lease length. Renewed at ttl/3 by the watchdog unless auto_renew is off.
    std::chrono::milliseconds ttl{30000};
    // How long to wait for the lock: 0 tries once; wait_forever never gives up.
    std::chrono::milliseconds wait{0};
    Mode mode = Mode::exclusive;
    // Holders allowed at once in semaphore mode; must be 1 in the other modes.
    int max_holders = 1;
    // Shown in holder views; empty means "<hostname>:<pid>".
    std::string owner;
    RetryPolicy retry;
    // Keep the lease renewed in the background until release.
    bool auto_renew = true;

    static constexpr std::chrono::milliseconds wait_forever = std::chrono::milliseconds::max();
};

// One row of a backend's global holder view (PostgreSQL only).
struct HolderInfo {
    std::string name;
    Mode mode = Mode::exclusive;
    std::string owner;
    std::int64_t token = 0;
    std::chrono::system_clock::time_point acquired_at;
    std::chrono::system_clock::time_point expires_at;
    int waiters = 0;
};

namespace detail {
struct LockState;
class Core;
}  // namespace detail

// ---- Lock -----------------------------------------------------------------

// A held lease. Movable, not copyable; the destructor releases it and never throws.
class Lock {
  public:
    Lock(Lock &&other) noexcept;
    Lock &operator=(Lock &&other) noexcept;
    Lock(const Lock &) = delete;
    Lock &operator=(const Lock &) = delete;
    ~Lock();

    const std::string &name() const;
    Mode mode() const;
    // The fencing token: strictly increasing per backend (see the README for Redlock).
    std::int64_t token() const;
    // When the lease runs out unless renewed, as last reported by the backend.
    std::chrono::system_clock::time_point expires_at() const;

    // Extend the lease by ttl (default: the ttl it was acquired with) and return
    // the new expiry. Throws LockLost when it is no longer held.
    std::chrono::system_clock::time_point renew();
    std::chrono::system_clock::time_point renew(std::chrono::milliseconds ttl);

    // Release the lease. Idempotent: returns whether it was still held.
    bool release();

    // Held as far as this process knows: not released and not found lost.
    bool is_held() const;

    // Run callback once when the lease is found lost (at once if it already is).
    // It runs on the watchdog thread or the caller's thread; keep it short.
    void on_lost(std::function<void()> callback);

    // Fires when the lease is found lost (not on release).
    std::stop_token lost_token() const;

  private:
    friend class LockManager;
    // Adopts one reference to state (LockState counts its own references).
    explicit Lock(detail::LockState *state) noexcept;
    detail::LockState *state_ = nullptr;
};

// ---- LockManager -----------------------------------------------------------

struct ConnectOptions {
    // Where metrics go; null means the process-wide default_metrics().
    std::shared_ptr<Metrics> metrics;
    // Maps a lock name to a bounded metrics label ("class"). Unset: every lock
    // is counted under the class "default". Raw names never become labels.
    std::function<std::string(std::string_view name)> lock_class;
    // PostgreSQL: connections kept for tries, renewals and releases (at most
    // this many run at once). An acquire that waits in the server takes a
    // connection of its own for the wait, so it joins the server's FIFO queue
    // at once and never holds up a renewal or release.
    // Redis: connections per node for every script call; waiters hold none
    // while they sleep (they listen on one pub/sub connection per node).
    std::size_t pool_size = 4;
};

namespace detail {
class Backend;
}

// The one lock interface. Thread-safe: share one manager across threads.
class LockManager {
  public:
    LockManager(std::shared_ptr<detail::Backend> backend, ConnectOptions options = {});
    ~LockManager();
    LockManager(const LockManager &) = delete;
    LockManager &operator=(const LockManager &) = delete;

    // The lock, or empty when it was not obtained within options.wait.
    std::optional<Lock> try_acquire(std::string_view name, const LockOptions &options = {});

    // The lock; throws NotObtained when options.wait runs out.
    Lock acquire(std::string_view name, const LockOptions &options = {});

    // Acquire, run fn while the lease is kept renewed, release on every exit path.
    // fn may take a std::stop_token that fires when the lease is lost. If the
    // lease was lost while fn ran, with_lock throws LockLost after fn returns:
    // the critical section was not protected to its end.
    template <class F>
    decltype(auto) with_lock(std::string_view name, const LockOptions &options, F &&fn);

    // Take every named lock in one canonical order (sorted, duplicates merged),
    // all or none within options.wait; throws NotObtained and holds none on failure.
    std::vector<Lock> acquire_all(std::vector<std::string> names, const LockOptions &options);

    // "memory", "postgres", "redis" or "redlock".
    std::string_view backend() const;

    // Every holder the backend knows of. InvalidArgument where there is no global view.
    std::vector<HolderInfo> holders();

    // Release every holder of name, token or not (administrators). InvalidArgument
    // where the backend cannot.
    int force_release(std::string_view name);

    Metrics &metrics();

  private:
    std::shared_ptr<detail::Core> core_;
};

// Connect to the backend a URL names:
//   memory:                         this process only
//   postgres://… / postgresql://…   any libpq URI; the lockext extension must be installed
//   redis://[:password@]host:port[/db][?connect_timeout=1s&timeout=1s]
//                                   one Redis node (FIFO waits, fencing tokens)
//   redlock://[:password@]h1:p1,h2:p2,h3:p3[/db][?…]
//                                   independent Redis masters, quorum N/2+1 (see the README)
// Throws InvalidArgument for a malformed or unknown URL and BackendUnavailable
// when the backend cannot be reached.
std::unique_ptr<LockManager> connect(std::string_view url, ConnectOptions options = {});

// connect($LOCKEXT_URL), or connect("memory:") when it is unset or empty.
std::unique_ptr<LockManager> connect();

// ---- template definitions -------------------------------------------------

template <class F>
decltype(auto) LockManager::with_lock(std::string_view name, const LockOptions &options, F &&fn) {
    Lock lock = acquire(name, options);
    auto finish = [&lock] {
        // Lost while fn ran: the protected section did not hold to its end.
        bool lost = !lock.is_held();
        lock.release();
        if (lost)
            throw LockLost("lease on '" + lock.name() + "' was lost while the section ran");
    };
    if constexpr (std::is_invocable_v<F, std::stop_token>) {
        if constexpr (std::is_void_v<std::invoke_result_t<F, std::stop_token>>) {
            std::forward<F>(fn)(lock.lost_token());
            finish();
        } else {
            auto result = std::forward<F>(fn)(lock.lost_token());
            finish();
            return result;
        }
    } else {
        if constexpr (std::is_void_v<std::invoke_result_t<F>>) {
            std::forward<F>(fn)();
            finish();
        } else {
            auto result = std::forward<F>(fn)();
            finish();
            return result;
        }
    }
}

}  // namespace lockext
