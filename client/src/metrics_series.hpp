// The hot-path view of a Metrics registry: every series one lock needs,
// resolved once per (backend, lock class), so recording an acquire, a release
// or a loss is a relaxed atomic add on a series the caller already points to,
// with no label lookup and no lock.
//
// Series are never removed while their registry lives (see metrics.cpp), so
// a LockSeries stays valid as long as the Metrics it came from. Managers keep
// their registry alive (Core holds it), and every Lock keeps its Core.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "lockext/metrics.hpp"

namespace lockext::detail {

// Upper bounds (seconds) of the wait and hold histogram buckets; +Inf is implied.
inline constexpr std::array<double, 16> kBuckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                    0.05,   0.1,   0.25,   0.5,   1.0,  2.5,
                                                    5.0,    10.0,  30.0,   60.0};

// A monotonically increasing count.
struct Counter {
    std::atomic<std::uint64_t> value{0};

    // Count one.
    void inc() noexcept {
        value.fetch_add(1, std::memory_order_relaxed);
    }
};

// Observations per bucket (not cumulative: each lands in exactly one) and their sum.
struct Histogram {
    std::array<std::atomic<std::uint64_t>, kBuckets.size() + 1> buckets{};
    std::atomic<double> sum{0.0};

    // Record one observation.
    void observe(double seconds) noexcept {
        if (!(seconds >= 0.0))
            seconds = 0.0;  // NaN or a clock step backwards: count it as instant
        std::size_t i = 0;
        while (i < kBuckets.size() && seconds > kBuckets[i])
            i++;
        buckets[i].fetch_add(1, std::memory_order_relaxed);
        sum.fetch_add(seconds, std::memory_order_relaxed);
    }
};

// Every series a lock of one (backend, class) records into. The renewal
// counters are per backend only (no class label); the others per class.
struct LockSeries {
    Counter *acquired = nullptr;           // lockext_acquire_total{result="acquired"}
    Counter *not_obtained = nullptr;       // lockext_acquire_total{result="not_obtained"}
    Counter *acquire_error = nullptr;      // lockext_acquire_total{result="error"}
    Histogram *wait = nullptr;             // lockext_wait_seconds
    Histogram *hold = nullptr;             // lockext_hold_seconds
    Counter *lost = nullptr;               // lockext_lost_leases_total
    Counter *released_held = nullptr;      // lockext_releases_total{result="held"}
    Counter *released_not_held = nullptr;  // lockext_releases_total{result="not_held"}
    Counter *release_error = nullptr;      // lockext_releases_total{result="error"}
    Counter *renewed = nullptr;            // lockext_renewals_total{result="ok"}
    Counter *renewal_lost = nullptr;       // lockext_renewals_total{result="lost"}
    Counter *renewal_error = nullptr;      // lockext_renewals_total{result="error"}
};

// The door into Metrics' private registry for the library's hot path.
class MetricsAccess {
  public:
    // The series of (backend, lock_class) in metrics, created (at zero) on
    // first use; valid while metrics lives. Each thread caches the last few
    // it asked for, so a hit takes no lock.
    static const LockSeries &lock_series(Metrics &metrics, std::string_view backend,
                                         std::string_view lock_class);
};

}  // namespace lockext::detail
