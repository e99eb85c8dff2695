// What a LockManager and every Lock it handed out share: the backend, metrics,
// the lock-class mapper and the watchdog. A Lock keeps its Core alive, so a
// Lock that outlives its manager still renews and releases.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "lockext/backend.hpp"
#include "lockext/lockext.hpp"
#include "lockext/metrics.hpp"
#include "watchdog.hpp"

namespace lockext::detail {

// Immutable after construction except the watchdog (internally synchronized)
// and the release_errors counter (atomic), so it needs no lock of its own.
class Core {
  public:
    Core(std::shared_ptr<Backend> backend, ConnectOptions options);
    Core(const Core &) = delete;
    Core &operator=(const Core &) = delete;

    // The store.
    Backend &backend() const noexcept {
        return *backend_;
    }
    // The backend's kind(), for metrics labels.
    std::string_view kind() const noexcept {
        return kind_;
    }
    // Where the counts and timings go.
    Metrics &metrics() const noexcept {
        return *metrics_;
    }
    // The bounded metrics label for a lock name.
    std::string lock_class(std::string_view name) const;
    // "<hostname>:<pid>", used when LockOptions::owner is empty.
    const std::string &default_owner() const noexcept {
        return default_owner_;
    }
    // Renews auto-renewed leases.
    Watchdog &watchdog() noexcept {
        return watchdog_;
    }

    // Count a release that failed where nobody could be told (a destructor).
    void count_release_error() noexcept {
        release_errors_.fetch_add(1, std::memory_order_relaxed);
    }
    // Releases that failed in destructors so far.
    std::uint64_t release_errors() const noexcept {
        return release_errors_.load(std::memory_order_relaxed);
    }

  private:
    const std::shared_ptr<Backend> backend_;
    const std::string_view kind_;
    const std::shared_ptr<Metrics> metrics_owner_;  // null when using default_metrics()
    Metrics *const metrics_;
    const std::function<std::string(std::string_view)> lock_class_;
    const std::string default_owner_;
    std::atomic<std::uint64_t> release_errors_{0};
    // Last, so it is destroyed (its thread stopped) before anything it could use.
    Watchdog watchdog_;
};

}  // namespace lockext::detail
