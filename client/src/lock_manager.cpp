// LockManager and Core: option checks, outage retries, metrics, acquire_all.
//
// Everything here is the same on every backend; backends only talk to their
// store. Core is immutable after construction (the watchdog synchronizes
// itself), so this file needs no mutex of its own.
#include <algorithm>
#include <memory>
#include <random>
#include <thread>
#include <utility>

#include "backends.hpp"
#include "core.hpp"
#include "lock_state.hpp"

namespace lockext {

namespace detail {

namespace {

using Steady = std::chrono::steady_clock;

// Longest name or owner, in bytes (as the extension enforces).
constexpr std::size_t kMaxNameBytes = 128;

}  // namespace

// Bind the backend, metrics and class mapper; the watchdog starts on demand.
Core::Core(std::shared_ptr<Backend> backend, ConnectOptions options)
    : backend_(std::move(backend)),
      kind_(backend_ ? backend_->kind() : std::string_view()),
      metrics_owner_(std::move(options.metrics)),
      metrics_(metrics_owner_ ? metrics_owner_.get() : &default_metrics()),
      lock_class_(std::move(options.lock_class)),
      default_series_(backend_ ? &MetricsAccess::lock_series(*metrics_, kind_, "default")
                               : nullptr) {
    if (!backend_)
        throw InvalidArgument("LockManager needs a backend, got null");
}

// The series of the mapper's class for name ("default" when it answers "").
const LockSeries &Core::mapped_series(std::string_view name) const {
    const std::string cls = lock_class_(name);
    return cls.empty() ? *default_series_ : MetricsAccess::lock_series(*metrics_, kind_, cls);
}

// A delay drawn uniformly from [d/2, d], so clients that failed together do
// not retry together.
std::chrono::milliseconds jittered(std::chrono::milliseconds d) {
    thread_local std::minstd_rand rng(static_cast<unsigned>(
        std::random_device{}() ^ std::hash<std::thread::id>{}(std::this_thread::get_id())));
    std::uniform_int_distribution<std::chrono::milliseconds::rep> pick(d.count() / 2, d.count());
    return std::chrono::milliseconds(pick(rng));
}

namespace {

// Throw InvalidArgument unless text is a usable name or owner.
void check_text(std::string_view what, std::string_view text, bool allow_empty) {
    if (text.empty() && !allow_empty)
        throw InvalidArgument(std::string(what) + " must not be empty");
    if (text.size() > kMaxNameBytes)
        throw InvalidArgument(std::string(what) + " is " + std::to_string(text.size()) +
                              " bytes; the limit is " + std::to_string(kMaxNameBytes));
    if (text.find('\0') != std::string_view::npos)
        throw InvalidArgument(std::string(what) + " must not contain a NUL byte");
}

// Throw InvalidArgument for options no backend accepts.
void check_options(const LockOptions &o) {
    if (o.ttl <= std::chrono::milliseconds::zero())
        throw InvalidArgument("ttl must be positive, got " + std::to_string(o.ttl.count()) + " ms");
    if (o.wait < std::chrono::milliseconds::zero())
        throw InvalidArgument("wait must not be negative, got " + std::to_string(o.wait.count()) +
                              " ms");
    if (o.mode != Mode::exclusive && o.mode != Mode::shared && o.mode != Mode::semaphore)
        throw InvalidArgument("unknown mode " + std::to_string(static_cast<int>(o.mode)));
    if (o.max_holders < 1)
        throw InvalidArgument("max_holders must be at least 1, got " +
                              std::to_string(o.max_holders));
    if (o.mode != Mode::semaphore && o.max_holders != 1)
        throw InvalidArgument("max_holders must be 1 in " + std::string(to_string(o.mode)) +
                              " mode (got " + std::to_string(o.max_holders) +
                              "); use Mode::semaphore for several holders");
    if (o.retry.initial <= std::chrono::milliseconds::zero())
        throw InvalidArgument("retry.initial must be positive");
    if (o.retry.max < o.retry.initial)
        throw InvalidArgument("retry.max must not be below retry.initial");
    check_text("owner", o.owner, true);
}

// Milliseconds left until deadline (rounded up so a wait is never cut short), at least 0.
std::chrono::milliseconds remaining(Steady::time_point deadline, Steady::time_point now) {
    if (deadline == Steady::time_point::max())
        return LockOptions::wait_forever;
    if (now >= deadline)
        return std::chrono::milliseconds::zero();
    return std::chrono::ceil<std::chrono::milliseconds>(deadline - now);
}

// Seconds between two steady time points, for histograms (a multiply: a
// division costs more than the rest of the histogram update).
double seconds_between(Steady::time_point from, Steady::time_point to) noexcept {
    return static_cast<double>(std::chrono::nanoseconds(to - from).count()) * 1e-9;
}

// The backend's answer to acquire, trying again (with jittered backoff) while
// it is unreachable and options.wait has time left. sent_at is when the first
// attempt was sent; it becomes the send time of the attempt that answered.
// Returns the backend's optional directly, so it is never default-built and
// then assigned (that zeroes and copies about 100 bytes per call). The first
// attempt passes the caller's options untouched (an empty owner is the
// backend's to fill, see backend.hpp); retries send a copy with the wait that
// is left.
std::optional<Lease> acquire_with_retries(Core &core, const LockSeries &series,
                                          std::string_view name, const LockOptions &options,
                                          Steady::time_point &sent_at) {
    const auto deadline = saturating_add(sent_at, options.wait);
    auto delay = options.retry.initial;
    std::unique_ptr<LockOptions> retry;  // not std::optional: that zeroes 88 bytes per call
    for (;;) {
        try {
            ClockHint::Offer hint(sent_at);
            return core.backend().acquire(name, retry ? *retry : options);
        } catch (const BackendUnavailable &) {
            const auto now = Steady::now();
            if (options.wait == std::chrono::milliseconds::zero() || now >= deadline) {
                series.acquire_error->inc();
                throw;
            }
            const auto pause = std::min(jittered(delay), remaining(deadline, now));
            std::this_thread::sleep_for(pause);
            // Doubled without overflow, whatever retry.max is.
            delay = delay > options.retry.max / 2 ? options.retry.max : delay * 2;
            sent_at = Steady::now();
            if (!retry)
                retry = std::make_unique<LockOptions>(options);
            retry->wait = remaining(deadline, sent_at);
        } catch (...) {
            series.acquire_error->inc();
            throw;
        }
    }
}

}  // namespace

}  // namespace detail

using detail::Steady;

// A manager over backend; see ConnectOptions.
LockManager::LockManager(std::shared_ptr<detail::Backend> backend, ConnectOptions options)
    : core_(std::make_shared<detail::Core>(std::move(backend), std::move(options))) {}

// Locks handed out keep the Core (and so the backend and watchdog) alive.
LockManager::~LockManager() = default;

// One acquire with outage retries; empty when not obtained within options.wait.
//
// Hot path (an uncontended in-process acquire): one steady clock reading,
// taken before the call, is the start of the wait, the backend's "now" (via
// ClockHint), the lease's local deadline and, when the backend says it granted
// at that reading, the start of the hold. Metrics go to series resolved once.
std::optional<Lock> LockManager::try_acquire(std::string_view name, const LockOptions &options) {
    detail::check_text("lock name", name, false);
    detail::check_options(options);
    detail::Core &core = *core_;
    const detail::LockSeries &series = core.series_for(name);

    const auto started = Steady::now();
    auto sent_at = started;  // of the attempt that answered
    std::optional<detail::Lease> lease =
        detail::acquire_with_retries(core, series, name, options, sent_at);
    // A backend that knows when it granted saves a clock reading (about as
    // much as the whole in-memory lookup costs).
    const bool grant_time_known = lease && lease->granted_at != Steady::time_point{};
    // (Redlock's count starts before its round, by the drift allowance: a wait
    // is never shorter than nothing.)
    const auto obtained_at =
        grant_time_known ? std::max(lease->granted_at, started) : Steady::now();
    series.wait->observe(detail::seconds_between(started, obtained_at));
    if (!lease) {
        series.not_obtained->inc();
        return std::nullopt;
    }
    series.acquired->inc();
    // The lease's local clock starts at the grant when the backend knows it,
    // else at the send of the request that got it.
    const auto counted_from = grant_time_known ? lease->granted_at : sent_at;
    Lock lock(new detail::LockState(core_, std::move(*lease), series, options.ttl,
                                    options.auto_renew, counted_from, obtained_at));
    if (options.auto_renew)
        core.watchdog().watch(*lock.state_, detail::saturating_add(
                                                counted_from, detail::renew_interval(options.ttl)));
    // After a wait inside the backend the grant may have come long after the
    // request was sent, so the local deadline (counted from the send, the
    // only moment known to precede the grant) would end the lease early, or
    // at once when the wait outlasted the TTL. One renewal restarts the count
    // from a moment known to follow the grant. (The in-memory backend says
    // when it granted, so it never needs this.)
    if (!grant_time_known && obtained_at - sent_at >= detail::renew_interval(options.ttl)) {
        try {
            lock.renew();
        } catch (const LockLost &) {
            return std::nullopt;  // it lapsed before the caller could use it
        } catch (const BackendUnavailable &) {
            // Keep it: the watchdog retries until the (early) local deadline.
        }
    }
    return lock;
}

// The lock, or NotObtained.
Lock LockManager::acquire(std::string_view name, const LockOptions &options) {
    std::optional<Lock> lock = try_acquire(name, options);
    if (!lock)
        throw NotObtained("lock '" + std::string(name) + "' was not obtained within " +
                          std::to_string(options.wait.count()) + " ms");
    return std::move(*lock);
}

// All named locks in canonical order, or none.
std::vector<Lock> LockManager::acquire_all(std::vector<std::string> names,
                                           const LockOptions &options) {
    for (const auto &name : names)
        detail::check_text("lock name", name, false);
    detail::check_options(options);
    std::sort(names.begin(), names.end());
    names.erase(std::unique(names.begin(), names.end()), names.end());

    const auto deadline = detail::saturating_add(Steady::now(), options.wait);
    std::vector<Lock> taken;
    taken.reserve(names.size());
    // On any failure give back what was taken, newest first; a release that
    // fails leaves that lease to run out by its TTL.
    auto give_back = [&taken] {
        while (!taken.empty()) {
            try {
                taken.back().release();
            } catch (...) {
                taken.back().state_->core->count_release_error();
            }
            taken.pop_back();
        }
    };
    LockOptions each = options;
    try {
        for (const auto &name : names) {
            each.wait = detail::remaining(deadline, Steady::now());
            std::optional<Lock> lock = try_acquire(name, each);
            if (!lock) {
                give_back();
                throw NotObtained("lock '" + name + "' (of " + std::to_string(names.size()) +
                                  ") was not obtained within " +
                                  std::to_string(options.wait.count()) + " ms; none are held");
            }
            taken.push_back(std::move(*lock));
        }
    } catch (...) {
        give_back();
        throw;
    }
    return taken;
}

// The backend's kind.
std::string_view LockManager::backend() const {
    return core_->kind();
}

// The backend's global holder view.
std::vector<HolderInfo> LockManager::holders() {
    return core_->backend().holders();
}

// Release every holder of name.
int LockManager::force_release(std::string_view name) {
    detail::check_text("lock name", name, false);
    return core_->backend().force_release(name);
}

// The registry this manager records into.
Metrics &LockManager::metrics() {
    return core_->metrics();
}

}  // namespace lockext
