// Prometheus metrics: counters and histograms keyed by bounded label sets.
//
// Locking protocol:
//   Impl::mu guards the series maps and the LockSeries map (insertions and
//   the walk in expose()). Series objects are never removed while their Impl
//   lives and their values are atomics, so once a thread has a pointer to one
//   it updates it without any lock.
//
// Hot path: every acquire records a count and a wait, every release a count
// and a hold. The library resolves all of a lock's series once per (backend,
// lock class) into a LockSeries (metrics_series.hpp); a manager without a
// class mapper resolves its one class when it is made, so an operation then
// records with a few atomic adds and no lookup at all. The public count_*
// and observe_* calls, and class mappers, go through a tiny per-thread cache
// from label values to series pointers, tagged with the registry's unique id
// (ids are never reused, so an entry for a destroyed registry can never match
// a live one). A hit costs a few short string compares; only a miss takes
// Impl::mu.
#include "lockext/metrics.hpp"

#include <array>
#include <atomic>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>

#include "metrics_series.hpp"
#include "thread_annotations.hpp"

namespace lockext {

namespace {

using detail::Counter;
using detail::Histogram;
using detail::kBuckets;
using detail::LockSeries;

using Key2 = std::array<std::string, 2>;
using Key3 = std::array<std::string, 3>;

// Source of registry ids for the per-thread caches.
std::atomic<std::uint64_t> next_registry_id{1};

// One per-thread cache slot: label values → series of one registry.
template <std::size_t N>
struct CacheSlot {
    std::uint64_t registry = 0;
    std::array<std::string, N> labels;
    void *series = nullptr;
};

// A few slots per kind of series, replaced round-robin.
template <std::size_t N>
struct ThreadCache {
    std::array<CacheSlot<N>, 4> slots;
    std::size_t next = 0;

    // The cached series for these labels in registry id, or null.
    void *find(std::uint64_t id, const std::array<std::string_view, N> &labels) const {
        for (const auto &s : slots) {
            if (s.registry != id)
                continue;
            bool same = true;
            for (std::size_t i = 0; i < N && same; i++)
                same = s.labels[i] == labels[i];
            if (same)
                return s.series;
        }
        return nullptr;
    }

    // Remember series for these labels in registry id.
    void put(std::uint64_t id, const std::array<std::string_view, N> &labels, void *series) {
        auto &s = slots[next];
        next = (next + 1) % slots.size();
        s.registry = id;
        for (std::size_t i = 0; i < N; i++)
            s.labels[i].assign(labels[i]);
        s.series = series;
    }
};

// Append a label value with the exposition format's escapes (\\, \", \n).
void append_escaped(std::string &out, std::string_view value) {
    for (char c : value) {
        switch (c) {
            case '\\':
                out += "\\\\";
                break;
            case '"':
                out += "\\\"";
                break;
            case '\n':
                out += "\\n";
                break;
            default:
                out += c;
        }
    }
}

// Append a number the way Prometheus parses it (shortest round-trip form).
void append_number(std::string &out, double v) {
    if (std::isinf(v)) {
        out += v > 0 ? "+Inf" : "-Inf";
        return;
    }
    if (std::isnan(v)) {
        out += "NaN";
        return;
    }
    // Plain decimals where they stay short ("0.0005", not "5e-04"), as people write le values.
    const double mag = std::fabs(v);
    const auto format = (mag == 0.0 || (mag >= 1e-6 && mag < 1e15)) ? std::chars_format::fixed
                                                                    : std::chars_format::general;
    char buf[400];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v, format);
    out.append(buf, ec == std::errc() ? end : buf);
}

// Append an integer sample value.
void append_number(std::string &out, std::uint64_t v) {
    out += std::to_string(v);
}

// Append `{a="x",b="y"` (no closing brace, so callers can add more labels).
void append_labels(std::string &out, std::initializer_list<std::string_view> names,
                   std::initializer_list<std::string_view> values) {
    out += '{';
    auto v = values.begin();
    bool first = true;
    for (auto n : names) {
        if (!first)
            out += ',';
        first = false;
        out += n;
        out += "=\"";
        append_escaped(out, *v++);
        out += '"';
    }
}

// Append the HELP and TYPE lines of a metric family.
void append_header(std::string &out, std::string_view name, std::string_view type,
                   std::string_view help) {
    out += "# HELP ";
    out += name;
    out += ' ';
    out += help;
    out += "\n# TYPE ";
    out += name;
    out += ' ';
    out += type;
    out += '\n';
}

}  // namespace

struct Metrics::Impl {
    const std::uint64_t id = next_registry_id.fetch_add(1);
    mutable detail::Mutex mu;
    std::map<Key3, Counter, std::less<>> acquires GUARDED_BY(mu);  // backend, class, result
    std::map<Key2, Counter, std::less<>> renewals GUARDED_BY(mu);  // backend, result
    std::map<Key2, Counter, std::less<>> lost GUARDED_BY(mu);      // backend, class
    std::map<Key2, Histogram, std::less<>> waits GUARDED_BY(mu);   // backend, class
    std::map<Key2, Histogram, std::less<>> holds GUARDED_BY(mu);   // backend, class
    std::map<Key2, Counter, std::less<>> releases GUARDED_BY(mu);  // backend, result
    // Pointers into the maps above, per (backend, class).
    std::map<Key2, LockSeries, std::less<>> lock_series GUARDED_BY(mu);

    // The series for labels in map, created on first use (through the thread's cache).
    template <class Series, class Map, std::size_t N>
    Series &series(Map Impl::*map, ThreadCache<N> &cache,
                   const std::array<std::string_view, N> &labels) EXCLUDES(mu) {
        if (void *hit = cache.find(id, labels))
            return *static_cast<Series *>(hit);
        Series *s;
        {
            detail::MutexLock lock(mu);
            s = &lookup<Series>(this->*map, labels);
        }
        cache.put(id, labels, s);
        return *s;
    }

    // Find or insert the entry for labels; the caller holds mu (only on a cache miss).
    template <class Series, class Map, std::size_t N>
    static Series &lookup(Map &map, const std::array<std::string_view, N> &labels) {
        typename Map::key_type key;
        for (std::size_t i = 0; i < N; i++)
            key[i].assign(labels[i]);
        return map.try_emplace(std::move(key)).first->second;
    }

    // Every series of (backend, lock_class), created at zero on first use.
    // Creating them all at once also exposes each at 0 from the start, as
    // Prometheus advises, so rate() sees the first event.
    const LockSeries &resolve(std::string_view backend, std::string_view lock_class) EXCLUDES(mu) {
        detail::MutexLock lock(mu);
        const std::array<std::string_view, 2> key{backend, lock_class};
        LockSeries &s = lookup<LockSeries>(lock_series, key);
        if (s.acquired != nullptr)
            return s;
        // Filled aside and stored whole, so a lookup that throws (out of
        // memory) leaves no half-resolved entry behind for the next caller.
        LockSeries r;
        r.acquired = &lookup<Counter>(acquires, std::array{backend, lock_class, kAcquired});
        r.not_obtained = &lookup<Counter>(acquires, std::array{backend, lock_class, kNotObtained});
        r.acquire_error = &lookup<Counter>(acquires, std::array{backend, lock_class, kError});
        r.wait = &lookup<Histogram>(waits, key);
        r.hold = &lookup<Histogram>(holds, key);
        r.lost = &lookup<Counter>(lost, key);
        r.released_held = &lookup<Counter>(releases, std::array{backend, kHeld});
        r.released_not_held = &lookup<Counter>(releases, std::array{backend, kNotHeld});
        r.release_error = &lookup<Counter>(releases, std::array{backend, kError});
        r.renewed = &lookup<Counter>(renewals, std::array{backend, kOk});
        r.renewal_lost = &lookup<Counter>(renewals, std::array{backend, kLost});
        r.renewal_error = &lookup<Counter>(renewals, std::array{backend, kError});
        s = r;
        return s;
    }

    static constexpr std::string_view kAcquired = "acquired", kNotObtained = "not_obtained",
                                      kError = "error", kHeld = "held", kNotHeld = "not_held",
                                      kOk = "ok", kLost = "lost";
};

namespace {

// Per-thread caches, one per series kind.
thread_local ThreadCache<3> acquire_cache;
thread_local ThreadCache<2> renewal_cache;
thread_local ThreadCache<2> lost_cache;
thread_local ThreadCache<2> wait_cache;
thread_local ThreadCache<2> hold_cache;
thread_local ThreadCache<2> release_cache;
thread_local ThreadCache<2> lock_series_cache;

}  // namespace

// An empty registry.
Metrics::Metrics() : impl_(std::make_unique<Impl>()) {}

// Out of line because Impl is only complete here.
Metrics::~Metrics() = default;

// Count one acquire attempt by its outcome.
void Metrics::count_acquire(std::string_view backend, std::string_view lock_class,
                            std::string_view result) {
    impl_->series<Counter>(&Impl::acquires, acquire_cache, {backend, lock_class, result})
        .value.fetch_add(1, std::memory_order_relaxed);
}

// Count one renewal by its outcome.
void Metrics::count_renewal(std::string_view backend, std::string_view result) {
    impl_->series<Counter>(&Impl::renewals, renewal_cache, {backend, result})
        .value.fetch_add(1, std::memory_order_relaxed);
}

// Count one lease found lost.
void Metrics::count_lost(std::string_view backend, std::string_view lock_class) {
    impl_->series<Counter>(&Impl::lost, lost_cache, {backend, lock_class})
        .value.fetch_add(1, std::memory_order_relaxed);
}

// Count one release by its outcome.
void Metrics::count_release(std::string_view backend, std::string_view result) {
    impl_->series<Counter>(&Impl::releases, release_cache, {backend, result})
        .value.fetch_add(1, std::memory_order_relaxed);
}

// Record how long an acquire waited.
void Metrics::observe_wait(std::string_view backend, std::string_view lock_class, double seconds) {
    impl_->series<Histogram>(&Impl::waits, wait_cache, {backend, lock_class}).observe(seconds);
}

// Record how long a lease was held.
void Metrics::observe_hold(std::string_view backend, std::string_view lock_class, double seconds) {
    impl_->series<Histogram>(&Impl::holds, hold_cache, {backend, lock_class}).observe(seconds);
}

// The series of one (backend, class), through the thread's cache.
const LockSeries &detail::MetricsAccess::lock_series(Metrics &metrics, std::string_view backend,
                                                     std::string_view lock_class) {
    Metrics::Impl &impl = *metrics.impl_;
    const std::array<std::string_view, 2> labels{backend, lock_class};
    if (void *hit = lock_series_cache.find(impl.id, labels))
        return *static_cast<const LockSeries *>(hit);
    const LockSeries &s = impl.resolve(backend, lock_class);
    lock_series_cache.put(impl.id, labels, const_cast<LockSeries *>(&s));
    return s;
}

namespace {

// Append one counter family.
template <class Map>
void expose_counters(std::string &out, std::string_view name, std::string_view help, const Map &map,
                     std::initializer_list<std::string_view> label_names) {
    append_header(out, name, "counter", help);
    for (const auto &[key, counter] : map) {
        out += name;
        std::apply([&](const auto &...v) { append_labels(out, label_names, {v...}); }, key);
        out += "} ";
        append_number(out, counter.value.load(std::memory_order_relaxed));
        out += '\n';
    }
}

// Append one histogram family: cumulative buckets, +Inf, _sum and _count.
void expose_histograms(std::string &out, std::string_view name, std::string_view help,
                       const std::map<Key2, Histogram, std::less<>> &map) {
    append_header(out, name, "histogram", help);
    for (const auto &[key, h] : map) {
        const auto &[backend, lock_class] = key;
        std::uint64_t cumulative = 0;
        for (std::size_t i = 0; i <= kBuckets.size(); i++) {
            cumulative += h.buckets[i].load(std::memory_order_relaxed);
            out += name;
            out += "_bucket";
            append_labels(out, {"backend", "class"}, {backend, lock_class});
            out += ",le=\"";
            append_number(out, i < kBuckets.size() ? kBuckets[i] : INFINITY);
            out += "\"} ";
            append_number(out, cumulative);
            out += '\n';
        }
        out += name;
        out += "_sum";
        append_labels(out, {"backend", "class"}, {backend, lock_class});
        out += "} ";
        append_number(out, h.sum.load(std::memory_order_relaxed));
        out += '\n';
        out += name;
        out += "_count";
        append_labels(out, {"backend", "class"}, {backend, lock_class});
        out += "} ";
        // The +Inf bucket, so _count always equals it even while others record.
        append_number(out, cumulative);
        out += '\n';
    }
}

}  // namespace

// The text exposition format 0.0.4 of everything recorded so far.
std::string Metrics::expose() const {
    std::string out;
    detail::MutexLock lock(impl_->mu);
    expose_counters(out, "lockext_acquire_total",
                    "Lock acquire attempts by outcome (acquired, not_obtained, error).",
                    impl_->acquires, {"backend", "class", "result"});
    expose_counters(out, "lockext_renewals_total", "Lease renewals by outcome (ok, lost, error).",
                    impl_->renewals, {"backend", "result"});
    expose_counters(out, "lockext_lost_leases_total",
                    "Leases found lost while the process believed it held them.", impl_->lost,
                    {"backend", "class"});
    expose_counters(out, "lockext_releases_total",
                    "Lease releases by outcome (held, not_held: it had run out or been taken, "
                    "error: the backend call failed).",
                    impl_->releases, {"backend", "result"});
    expose_histograms(out, "lockext_wait_seconds", "Time spent waiting to acquire a lock.",
                      impl_->waits);
    expose_histograms(out, "lockext_hold_seconds", "Time a lock was held, acquire to release.",
                      impl_->holds);
    return out;
}

// The process-wide registry; never destroyed, so locks released during static
// destruction can still record.
Metrics &default_metrics() {
    static Metrics *metrics = new Metrics();
    return *metrics;
}

}  // namespace lockext
