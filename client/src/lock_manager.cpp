// LockManager and Core: option checks, outage retries, metrics, acquire_all.
//
// Everything here is the same on every backend; backends only talk to their
// store. Core is immutable after construction (the watchdog synchronizes
// itself), so this file needs no mutex of its own.
#include <unistd.h>

#include <algorithm>
#include <climits>
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

// "<hostname>:<pid>", the owner shown in holder views by default.
std::string make_default_owner() {
    char host[HOST_NAME_MAX + 1] = {};
    if (gethostname(host, sizeof host - 1) != 0 || host[0] == '\0')
        std::snprintf(host, sizeof host, "unknown-host");
    std::string owner = std::string(host) + ":" + std::to_string(getpid());
    if (owner.size() > kMaxNameBytes)
        owner.erase(0, owner.size() - kMaxNameBytes);  // keep the pid
    return owner;
}

}  // namespace

// Bind the backend, metrics and class mapper; the watchdog starts on demand.
Core::Core(std::shared_ptr<Backend> backend, ConnectOptions options)
    : backend_(std::move(backend)),
      kind_(backend_ ? backend_->kind() : std::string_view()),
      metrics_owner_(std::move(options.metrics)),
      metrics_(metrics_owner_ ? metrics_owner_.get() : &default_metrics()),
      lock_class_(std::move(options.lock_class)),
      default_owner_(make_default_owner()) {
    if (!backend_)
        throw InvalidArgument("LockManager needs a backend, got null");
}

// The metrics class of a lock: the mapper's answer, or "default".
std::string Core::lock_class(std::string_view name) const {
    if (!lock_class_)
        return "default";
    std::string cls = lock_class_(name);
    return cls.empty() ? std::string("default") : cls;
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

// A delay drawn uniformly from [d/2, d], so clients that failed together do
// not retry together.
std::chrono::milliseconds jittered(std::chrono::milliseconds d) {
    thread_local std::minstd_rand rng(static_cast<unsigned>(
        std::random_device{}() ^ std::hash<std::thread::id>{}(std::this_thread::get_id())));
    std::uniform_int_distribution<std::chrono::milliseconds::rep> pick(d.count() / 2, d.count());
    return std::chrono::milliseconds(pick(rng));
}

// Milliseconds left until deadline (rounded up so a wait is never cut short), at least 0.
std::chrono::milliseconds remaining(Steady::time_point deadline, Steady::time_point now) {
    if (deadline == Steady::time_point::max())
        return LockOptions::wait_forever;
    if (now >= deadline)
        return std::chrono::milliseconds::zero();
    return std::chrono::ceil<std::chrono::milliseconds>(deadline - now);
}

// Seconds between two steady time points, for histograms.
double seconds_between(Steady::time_point from, Steady::time_point to) noexcept {
    return std::chrono::duration<double>(to - from).count();
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
std::optional<Lock> LockManager::try_acquire(std::string_view name, const LockOptions &options) {
    detail::check_text("lock name", name, false);
    detail::check_options(options);
    detail::Core &core = *core_;
    const std::string lock_class = core.lock_class(name);

    // The backend sees the filled-in owner and, on retries, the wait that is
    // left. One reusable copy per thread keeps the hot path free of
    // allocations; a backend that acquires again from inside acquire() (a
    // decorator over another manager) gets a fresh copy instead.
    thread_local LockOptions scratch;
    thread_local bool scratch_in_use = false;
    std::optional<LockOptions> nested;
    LockOptions &effective = scratch_in_use ? nested.emplace() : scratch;
    struct ScratchGuard {
        bool *flag;
        bool owned;
        // Frees the per-thread copy for the next call.
        ~ScratchGuard() {
            if (owned)
                *flag = false;
        }
    } guard{&scratch_in_use, !scratch_in_use};
    scratch_in_use = true;
    effective.ttl = options.ttl;
    effective.wait = options.wait;
    effective.mode = options.mode;
    effective.max_holders = options.max_holders;
    effective.owner = options.owner.empty() ? core.default_owner() : options.owner;
    effective.retry = options.retry;
    effective.auto_renew = options.auto_renew;

    const auto started = Steady::now();
    const auto deadline = detail::saturating_add(started, options.wait);
    auto delay = options.retry.initial;
    auto sent_at = started;
    std::optional<detail::Lease> lease;
    for (;;) {
        try {
            detail::ClockHint::Offer hint(sent_at);
            lease = core.backend().acquire(name, effective);
            break;
        } catch (const BackendUnavailable &) {
            const auto now = Steady::now();
            if (options.wait == std::chrono::milliseconds::zero() || now >= deadline) {
                core.metrics().count_acquire(core.kind(), lock_class, "error");
                throw;
            }
            const auto pause = std::min(detail::jittered(delay), detail::remaining(deadline, now));
            std::this_thread::sleep_for(pause);
            delay = std::min(delay * 2, options.retry.max);
            sent_at = Steady::now();
            effective.wait = detail::remaining(deadline, sent_at);
        } catch (...) {
            core.metrics().count_acquire(core.kind(), lock_class, "error");
            throw;
        }
    }
    const auto obtained_at = Steady::now();
    core.metrics().observe_wait(core.kind(), lock_class,
                                detail::seconds_between(started, obtained_at));
    if (!lease) {
        core.metrics().count_acquire(core.kind(), lock_class, "not_obtained");
        return std::nullopt;
    }
    core.metrics().count_acquire(core.kind(), lock_class, "acquired");
    auto state =
        std::make_shared<detail::LockState>(core_, std::move(*lease), lock_class, options.ttl,
                                            options.auto_renew, sent_at, obtained_at);
    if (options.auto_renew)
        core.watchdog().watch(state,
                              detail::saturating_add(sent_at, detail::renew_interval(options.ttl)));
    return Lock(std::move(state));
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
