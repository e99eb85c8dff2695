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
#include "metrics_series.hpp"
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
    // The metrics series of a lock name's class: the mapper's class, or
    // "default" (resolved once, when the manager was made) when there is none.
    const LockSeries &series_for(std::string_view name) const {
        return lock_class_ ? mapped_series(name) : *default_series_;
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
    // series_for() through the class mapper.
    const LockSeries &mapped_series(std::string_view name) const;

    const std::shared_ptr<Backend> backend_;
    const std::string_view kind_;
    const std::shared_ptr<Metrics> metrics_owner_;  // null when using default_metrics()
    Metrics *const metrics_;
    const std::function<std::string(std::string_view)> lock_class_;
    const LockSeries *const default_series_;  // class "default"
    std::atomic<std::uint64_t> release_errors_{0};
    // Last, so it is destroyed (its thread stopped) before anything it could use.
    Watchdog watchdog_;
};

// A delay drawn uniformly from [d/2, d], so clients that failed together do
// not retry together.
std::chrono::milliseconds jittered(std::chrono::milliseconds d);

}  // namespace lockext::detail
