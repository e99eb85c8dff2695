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

// Seconds between two steady time points, for histograms (a multiply: a
// division costs more than the rest of the histogram update).
double seconds_between(Steady::time_point from, Steady::time_point to) noexcept {
    return static_cast<double>(std::chrono::nanoseconds(to - from).count()) * 1e-9;
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
LockState::LockState(std::shared_ptr<Core> core_, Lease lease_, const LockSeries &series_,
                     std::chrono::milliseconds ttl, bool auto_renew_, Steady::time_point sent_at,
                     Steady::time_point acquired_at_)
    : core(std::move(core_)),
      lease(std::move(lease_)),
      series(series_),
      acquired_at(acquired_at_),
      auto_renew(auto_renew_),
      ttl_(ttl),
      expires_at_(lease.expires_at),
      local_deadline_(saturating_add(sent_at, ttl)) {}

// A state still queued at the watchdog (never released) must leave the queue.
LockState::~LockState() {
    if (watch.queued.load(std::memory_order_acquire))
        core->watchdog().unwatch(*this);
}

namespace {

// Freed LockState storage kept per thread for the next acquire. Trivially
// destructible, so reaching it costs no initialization check, and it can
// still be reached (and found closed) while the thread's other thread_local
// objects are being destroyed.
struct StateCache {
    static constexpr int kSize = 16;
    void *blocks[kSize];
    int count = 0;
    bool closed = false;  // the thread is exiting: use the heap
};
thread_local StateCache state_cache;

// Empties the thread's cache when the thread ends. It is created by the
// first block the cache keeps (a thread_local with a destructor is created on
// first use), so it exists whenever the cache holds anything.
struct StateCacheCloser {
    // Make sure this thread's closer exists.
    void arm() noexcept {}
    // Free the cached blocks and send later frees to the heap.
    ~StateCacheCloser() {
        state_cache.closed = true;
        while (state_cache.count > 0)
            ::operator delete(state_cache.blocks[--state_cache.count]);
    }
};
thread_local StateCacheCloser state_cache_closer;

}  // namespace

// AddressSanitizer cannot see a use after free of a recycled block, so its
// builds send every state to the heap.
#if defined(__SANITIZE_ADDRESS__)
#define LOCKEXT_STATE_CACHE 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LOCKEXT_STATE_CACHE 0
#endif
#endif
#ifndef LOCKEXT_STATE_CACHE
#define LOCKEXT_STATE_CACHE 1
#endif

// A cached block of this thread, or a new one.
void *LockState::operator new(std::size_t size) {
    StateCache &cache = state_cache;
    if (LOCKEXT_STATE_CACHE && size == sizeof(LockState) && cache.count > 0)
        return cache.blocks[--cache.count];
    return ::operator new(size);
}

// Keep the block for this thread's next acquire while there is room. (Any
// thread may free a state: the watchdog, or one a Lock was moved to.)
void LockState::operator delete(void *p) noexcept {
    StateCache &cache = state_cache;
    if (LOCKEXT_STATE_CACHE && !cache.closed && cache.count < StateCache::kSize) {
        if (cache.count == 0)
            state_cache_closer.arm();
        cache.blocks[cache.count++] = p;
        return;
    }
    ::operator delete(p);
}

// Flag the lease lost; returns who to tell (nothing if released or already lost).
LockState::LostNotice LockState::mark_lost() {
    LostNotice notice;
    if (released_.load(std::memory_order_relaxed) || lost_)
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
    series.renewal_lost->inc();
    series.lost->inc();
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
        if (released_.load(std::memory_order_relaxed))
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
        series.renewal_error->inc();
        throw;
    }
    if (!expiry) {
        LostNotice notice;
        {
            MutexLock lock(mu);
            notice = mark_lost();
        }
        op.unlock();
        // Built first: an on_lost callback may destroy the Lock, and this state with it.
        LockLost lost("lease on '" + lease.name + "' is no longer held");
        deliver(std::move(notice));
        throw lost;
    }
    {
        MutexLock lock(mu);
        ttl_ = ttl;
        expires_at_ = *expiry;
        local_deadline_ = saturating_add(sent_at, ttl - core->backend().renew_margin(ttl));
    }
    series.renewed->inc();
    // The next watchdog renewal must follow the new ttl, not the old schedule.
    if (auto_renew)
        core->watchdog().watch(*this, saturating_add(sent_at, renew_interval(ttl)));
    return *expiry;
}

// Release once; later calls retry only if the backend call failed. Every
// backend call is counted by its outcome; the hold ends at the first call.
bool LockState::release() {
    MutexLock op(op_mu);
    const bool first = !released_.load(std::memory_order_relaxed);
    if (!first && !release_failed_)
        return false;
    released_.store(true, std::memory_order_relaxed);
    Steady::time_point now{};
    if (first) {
        if (auto_renew)
            core->watchdog().unwatch(*this);
        now = Steady::now();
        series.hold->observe(seconds_between(acquired_at, now));
    }
    bool held;
    try {
        ClockHint::Offer hint(now);  // none on a retry: the backend reads the clock
        held = core->backend().release(lease);
    } catch (...) {
        release_failed_ = true;
        series.release_error->inc();
        throw;
    }
    release_failed_ = false;
    (held ? series.released_held : series.released_not_held)->inc();
    return held;
}

// One watchdog renewal. Outcomes: renewed → due again after renew_interval;
// not held → lost; backend error → retry soon, unless the local deadline has
// passed (then nobody can say the lease is still ours) → lost.
std::optional<Steady::time_point> LockState::watchdog_renew() noexcept {
    if (!op_mu.try_lock()) {
        // A user renew or the release is running; look again shortly (not at
        // the deadline: that may have passed, and we must not spin).
        MutexLock lock(mu);
        if (released_.load(std::memory_order_relaxed) || lost_)
            return std::nullopt;
        return Steady::now() + retry_delay(ttl_);
    }
    std::chrono::milliseconds ttl;
    Steady::time_point deadline;
    {
        MutexLock lock(mu);
        if (released_.load(std::memory_order_relaxed) || lost_) {
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
    if (sent_at >= deadline) {
        // Nobody can say the lease is still ours, and a reply could not
        // arrive in time: no call.
        {
            MutexLock lock(mu);
            notice = mark_lost();
        }
        op_mu.unlock();
        deliver(std::move(notice));
        return std::nullopt;
    }
    try {
        // Past the deadline the loss must be reported, not wait on the network.
        const CallDeadline::Scope bound(deadline);
        const auto expiry = core->backend().renew(lease, ttl);
        MutexLock lock(mu);
        if (expiry) {
            expires_at_ = *expiry;
            local_deadline_ = saturating_add(sent_at, ttl - core->backend().renew_margin(ttl));
            next = saturating_add(sent_at, renew_interval(ttl));
        } else {
            notice = mark_lost();
        }
    } catch (...) {
        failed = true;
        const auto now = Steady::now();
        MutexLock lock(mu);
        // Retries every retry_delay; the last one half a delay before the
        // deadline, so that its reply has time to come (a call cut off at
        // the deadline would discard a renewal the server made).
        const auto last = deadline - retry_delay(ttl) / 2;
        if (now >= deadline)
            notice = mark_lost();
        else if (now + retry_delay(ttl) <= last)
            next = now + retry_delay(ttl);
        else
            next = now < last ? last : deadline;
    }
    op_mu.unlock();
    if (next)
        (failed ? series.renewal_error : series.renewed)->inc();
    deliver(std::move(notice));
    return next;
}

// Held as far as this process knows.
bool LockState::is_held() const {
    MutexLock lock(mu);
    return !released_.load(std::memory_order_relaxed) && !lost_ && Steady::now() < local_deadline_;
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
            if (!released_.load(std::memory_order_relaxed))
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
Lock::Lock(detail::LockState *state) noexcept : state_(state) {}

// Take over other's lease; other becomes inert.
Lock::Lock(Lock &&other) noexcept : state_(std::exchange(other.state_, nullptr)) {}

// Release the current lease (never throwing), then take over other's.
Lock &Lock::operator=(Lock &&other) noexcept {
    if (this != &other) {
        if (state_) {
            try {
                state_->release();
            } catch (...) {
                state_->core->count_release_error();
            }
            detail::LockState::unref(state_);
        }
        state_ = std::exchange(other.state_, nullptr);
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
    detail::LockState::unref(state_);
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
