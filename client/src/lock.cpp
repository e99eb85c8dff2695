// Lock and its shared LockState: renew, release, loss detection and notification.
// The locking protocol (op_mu, mu) is described in lock_state.hpp.
#include <algorithm>
#include <exception>
#include <utility>

#include "backends.hpp"
#include "lock_state.hpp"

namespace lockext {

namespace detail {

namespace {

using Steady = std::chrono::steady_clock;

// Delay before retrying a renewal that failed (store unreachable, or a user call in progress).
std::chrono::milliseconds retry_delay(std::chrono::milliseconds ttl) noexcept {
    using std::chrono::milliseconds;
    return std::max(std::min(ttl / 10, milliseconds(1000)), milliseconds(10));
}

// Seconds between two steady time points, for histograms.
double seconds_between(Steady::time_point from, Steady::time_point to) noexcept {
    return std::chrono::duration<double>(to - from).count();
}

}  // namespace

// How often the watchdog renews a lease of this ttl: a third of it, so two
// renewals can fail before the lease runs out.
std::chrono::milliseconds renew_interval(std::chrono::milliseconds ttl) noexcept {
    return std::max(ttl / 3, std::chrono::milliseconds(1));
}

// a + d, clamped to the clock's range.
Steady::time_point saturating_add(Steady::time_point a, std::chrono::milliseconds d) noexcept {
    const auto max_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(Steady::time_point::max() - a);
    if (d >= max_ms)
        return Steady::time_point::max();
    return a + std::chrono::duration_cast<Steady::duration>(d);
}

// A freshly granted lease; by our clock it runs out at sent_at + ttl.
LockState::LockState(std::shared_ptr<Core> core_, Lease lease_, std::string lock_class_,
                     std::chrono::milliseconds ttl, bool auto_renew_, Steady::time_point sent_at,
                     Steady::time_point acquired_at_)
    : core(std::move(core_)),
      lease(std::move(lease_)),
      lock_class(std::move(lock_class_)),
      acquired_at(acquired_at_),
      auto_renew(auto_renew_),
      ttl_(ttl),
      expires_at_(lease.expires_at),
      local_deadline_(saturating_add(sent_at, ttl)) {}

// A state still queued at the watchdog (never released) must leave the queue.
LockState::~LockState() {
    if (watch.queued.load(std::memory_order_relaxed))
        core->watchdog().unwatch(*this);
}

// Flag the lease lost; returns who to tell (nothing if released or already lost).
LockState::LostNotice LockState::mark_lost() {
    LostNotice notice;
    if (released_ || lost_)
        return notice;
    lost_ = true;
    notice.fire = true;
    notice.callbacks = std::move(callbacks_);
    callbacks_.clear();
    notice.stop = stop_;
    return notice;
}

// Tell metrics, the stop token and the callbacks that the lease is gone.
void LockState::deliver(LostNotice notice) noexcept {
    if (!notice.fire)
        return;
    try {
        core->metrics().count_renewal(core->kind(), "lost");
        core->metrics().count_lost(core->kind(), lock_class);
    } catch (...) {
        // Metrics must never turn a loss report into a crash.
    }
    if (notice.stop)
        notice.stop->request_stop();
    for (auto &callback : notice.callbacks) {
        try {
            callback();
        } catch (...) {
            // A throwing callback must not stop the others from running.
        }
    }
}

// Renew now on the caller's thread; no ttl means the current one.
std::chrono::system_clock::time_point LockState::renew(
    std::optional<std::chrono::milliseconds> new_ttl) {
    if (new_ttl && *new_ttl <= std::chrono::milliseconds::zero())
        throw InvalidArgument("ttl must be positive, got " + std::to_string(new_ttl->count()) +
                              " ms");
    MutexLock op(op_mu);
    std::chrono::milliseconds ttl;
    {
        MutexLock lock(mu);
        if (released_)
            throw LockLost("lock '" + lease.name + "' was released");
        if (lost_)
            throw LockLost("lease on '" + lease.name + "' was lost");
        ttl = new_ttl.value_or(ttl_);
    }
    const auto sent_at = Steady::now();
    std::optional<std::chrono::system_clock::time_point> expiry;
    try {
        expiry = core->backend().renew(lease, ttl);
    } catch (...) {
        core->metrics().count_renewal(core->kind(), "error");
        throw;
    }
    if (!expiry) {
        LostNotice notice;
        {
            MutexLock lock(mu);
            notice = mark_lost();
        }
        op.unlock();
        deliver(std::move(notice));
        throw LockLost("lease on '" + lease.name + "' is no longer held");
    }
    {
        MutexLock lock(mu);
        ttl_ = ttl;
        expires_at_ = *expiry;
        local_deadline_ = saturating_add(sent_at, ttl);
    }
    core->metrics().count_renewal(core->kind(), "ok");
    // The next watchdog renewal must follow the new ttl, not the old schedule.
    if (auto_renew)
        core->watchdog().watch(shared_from_this(), saturating_add(sent_at, renew_interval(ttl)));
    return *expiry;
}

// Release once; later calls retry only if the backend call failed.
bool LockState::release() {
    MutexLock op(op_mu);
    bool first;
    {
        MutexLock lock(mu);
        if (released_ && !release_failed_)
            return false;
        first = !released_;
        released_ = true;
    }
    Steady::time_point now{};
    if (first) {
        if (auto_renew)
            core->watchdog().unwatch(*this);
        now = Steady::now();
        core->metrics().observe_hold(core->kind(), lock_class, seconds_between(acquired_at, now));
    }
    try {
        ClockHint::Offer hint(now);  // none on a retry: the backend reads the clock
        const bool held = core->backend().release(lease);
        release_failed_ = false;
        return held;
    } catch (...) {
        release_failed_ = true;
        throw;
    }
}

// One watchdog renewal. Outcomes: renewed → due again after renew_interval;
// not held → lost; backend error → retry soon, unless the local deadline has
// passed (then nobody can say the lease is still ours) → lost.
std::optional<Steady::time_point> LockState::watchdog_renew() noexcept {
    if (!op_mu.try_lock()) {
        // A user renew or the release is running; look again shortly (not at
        // the deadline: that may have passed, and we must not spin).
        MutexLock lock(mu);
        if (released_ || lost_)
            return std::nullopt;
        return Steady::now() + retry_delay(ttl_);
    }
    std::chrono::milliseconds ttl;
    Steady::time_point deadline;
    {
        MutexLock lock(mu);
        if (released_ || lost_) {
            op_mu.unlock();
            return std::nullopt;
        }
        ttl = ttl_;
        deadline = local_deadline_;
    }
    const auto sent_at = Steady::now();
    std::optional<Steady::time_point> next;
    LostNotice notice;
    bool failed = false;
    try {
        const auto expiry = core->backend().renew(lease, ttl);
        MutexLock lock(mu);
        if (expiry) {
            expires_at_ = *expiry;
            local_deadline_ = saturating_add(sent_at, ttl);
            next = saturating_add(sent_at, renew_interval(ttl));
        } else {
            notice = mark_lost();
        }
    } catch (...) {
        failed = true;
        const auto now = Steady::now();
        MutexLock lock(mu);
        if (now >= deadline)
            notice = mark_lost();
        else
            next = std::min(now + retry_delay(ttl), deadline);
    }
    op_mu.unlock();
    if (next) {
        try {
            core->metrics().count_renewal(core->kind(), failed ? "error" : "ok");
        } catch (...) {
            // Metrics must never stop the renewals.
        }
    }
    deliver(std::move(notice));
    return next;
}

// Held as far as this process knows.
bool LockState::is_held() const {
    MutexLock lock(mu);
    return !released_ && !lost_ && Steady::now() < local_deadline_;
}

// The latest expiry the backend reported.
std::chrono::system_clock::time_point LockState::expires_at() const {
    MutexLock lock(mu);
    return expires_at_;
}

// Register a loss callback, or run it now if the loss already happened.
void LockState::on_lost(std::function<void()> callback) {
    {
        MutexLock lock(mu);
        if (!lost_) {
            // After a release it can never fire; keeping it is harmless.
            if (!released_)
                callbacks_.push_back(std::move(callback));
            return;
        }
    }
    callback();
}

// The stop token of the loss, created on first use.
std::stop_token LockState::lost_token() {
    MutexLock lock(mu);
    if (!stop_) {
        stop_.emplace();
        if (lost_)
            stop_->request_stop();  // nobody can have registered a callback yet
    }
    return stop_->get_token();
}

}  // namespace detail

namespace {

// What name() returns for a moved-from Lock.
const std::string empty_name;

}  // namespace

// Wrap a granted lease.
Lock::Lock(std::shared_ptr<detail::LockState> state) : state_(std::move(state)) {}

// Take over other's lease; other becomes inert.
Lock::Lock(Lock &&other) noexcept = default;

// Release the current lease (never throwing), then take over other's.
Lock &Lock::operator=(Lock &&other) noexcept {
    if (this != &other) {
        if (state_) {
            try {
                state_->release();
            } catch (...) {
                state_->core->count_release_error();
            }
        }
        state_ = std::move(other.state_);
    }
    return *this;
}

// Release; errors are counted, never thrown (the lease then runs out by its TTL).
Lock::~Lock() {
    if (!state_)
        return;
    try {
        state_->release();
    } catch (...) {
        state_->core->count_release_error();
    }
}

// The lock's name ("" when moved from).
const std::string &Lock::name() const {
    return state_ ? state_->lease.name : empty_name;
}

// The mode it was acquired in.
Mode Lock::mode() const {
    return state_ ? state_->lease.mode : Mode::exclusive;
}

// The fencing token (0 when moved from).
std::int64_t Lock::token() const {
    return state_ ? state_->lease.token : 0;
}

// The last expiry the backend reported.
std::chrono::system_clock::time_point Lock::expires_at() const {
    return state_ ? state_->expires_at() : std::chrono::system_clock::time_point{};
}

// Renew by the current ttl.
std::chrono::system_clock::time_point Lock::renew() {
    if (!state_)
        throw LockLost("renew on a moved-from Lock");
    return state_->renew(std::nullopt);
}

// Renew by ttl.
std::chrono::system_clock::time_point Lock::renew(std::chrono::milliseconds ttl) {
    if (!state_)
        throw LockLost("renew on a moved-from Lock");
    return state_->renew(ttl);
}

// Release; whether it was still held.
bool Lock::release() {
    return state_ ? state_->release() : false;
}

// Held as far as this process knows.
bool Lock::is_held() const {
    return state_ && state_->is_held();
}

// Run callback once when the lease is found lost.
void Lock::on_lost(std::function<void()> callback) {
    if (state_ && callback)
        state_->on_lost(std::move(callback));
}

// Fires when the lease is found lost.
std::stop_token Lock::lost_token() const {
    return state_ ? state_->lost_token() : std::stop_token{};
}

}  // namespace lockext
