// The shared state behind a Lock: the lease, its renewal bookkeeping and the
// lost-lease notification.
//
// Locking protocol:
//   op_mu serializes the backend calls that change the lease: renewals (user
//     or watchdog) and the release. It is held across the backend call, so the
//     watchdog can never renew after release() returned, and a release racing
//     a renewal never sees the renewal report "not held" for a lease it just
//     released itself (no false "lost"). The watchdog only try_locks it, so a
//     slow user call never stalls the renewals of other locks.
//   mu guards the fields below it and is held only briefly (never across a
//     backend call or a user callback), so is_held(), expires_at() and
//     on_lost() never wait for the network. Order: op_mu before mu.
//   released_ is written only under op_mu, so every backend call (they all
//     run under op_mu) sees it exactly; it is atomic so that is_held() and
//     on_lost() can read it under mu alone, and release() need not take mu.
//   watch is the watchdog's bookkeeping, guarded by the watchdog's mutex
//     (see watchdog.cpp).
//
// Lifetime: the state counts its own references (refs_): one for the Lock
// that owns it, and one more while the watchdog renews it. The watchdog's
// queue holds plain pointers; it takes a reference with try_ref() under its
// mutex while the state is still queued, and a state whose count reached zero
// leaves the queue in its destructor, under that same mutex (see
// watchdog.cpp). No std::shared_ptr: its control block costs two more atomic
// operations per lock, and the memory comes from a small per-thread cache of
// freed states, so an uncontended acquire + release allocates nothing.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <vector>

#include "core.hpp"
#include "lockext/backend.hpp"
#include "thread_annotations.hpp"

namespace lockext::detail {

struct LockState {
    using Steady = std::chrono::steady_clock;

    // A freshly granted lease; sent_at is when the acquire request was sent.
    LockState(std::shared_ptr<Core> core, Lease lease, const LockSeries &series,
              std::chrono::milliseconds ttl, bool auto_renew, Steady::time_point sent_at,
              Steady::time_point acquired_at);

    // Renew now (user call) by ttl, or by the current ttl when empty; the new
    // expiry. Throws LockLost when not held.
    std::chrono::system_clock::time_point renew(std::optional<std::chrono::milliseconds> ttl)
        EXCLUDES(op_mu, mu);

    // Release (idempotent); whether the backend still had the lease.
    bool release() EXCLUDES(op_mu, mu);

    // One watchdog renewal; when to renew next, or empty to stop. Never throws.
    std::optional<Steady::time_point> watchdog_renew() noexcept EXCLUDES(op_mu, mu);

    // Not released, not found lost, and within the lease as timed locally.
    bool is_held() const EXCLUDES(mu);

    // Last expiry the backend reported.
    std::chrono::system_clock::time_point expires_at() const EXCLUDES(mu);

    // Run callback when found lost (now, on this thread, if already lost).
    void on_lost(std::function<void()> callback) EXCLUDES(mu);

    // A token that fires when the lease is found lost.
    std::stop_token lost_token() EXCLUDES(mu);

    const std::shared_ptr<Core> core;
    const Lease lease;         // lease.expires_at is the grant's; see expires_at_ for the latest
    const LockSeries &series;  // metrics of the lock's class (in core's registry)
    const Steady::time_point acquired_at;  // start of the hold, for metrics
    const bool auto_renew;

    // Stops the watchdog from referring to this state.
    ~LockState();
    LockState(const LockState &) = delete;
    LockState &operator=(const LockState &) = delete;

    // Drop a reference; the last one destroys the state.
    static void unref(LockState *state) noexcept {
        if (state->refs_.fetch_sub(1, std::memory_order_acq_rel) == 1)
            delete state;
    }
    // Take a reference unless the count already reached zero (the state is
    // being destroyed). Only for the watchdog, on a state that is still queued.
    bool try_ref() noexcept {
        int n = refs_.load(std::memory_order_relaxed);
        while (n > 0) {
            if (refs_.compare_exchange_weak(n, n + 1, std::memory_order_acquire,
                                            std::memory_order_relaxed))
                return true;
        }
        return false;
    }

    // Storage from the calling thread's cache of freed states, or the heap.
    static void *operator new(std::size_t size);
    // Back to the calling thread's cache (bounded), or the heap.
    static void operator delete(void *p) noexcept;

    // The watchdog's bookkeeping (see watchdog.cpp for its lock).
    WatchSlot watch;

  private:
    // What must happen, outside every lock, when a lease was just found lost.
    struct LostNotice {
        std::vector<std::function<void()>> callbacks;
        std::optional<std::stop_source> stop;
        bool fire = false;
    };

    // Flag the lease lost and collect who to tell; empty if released or already lost.
    LostNotice mark_lost() REQUIRES(mu);
    // Tell them: metrics, the stop token, the callbacks.
    void deliver(LostNotice notice) noexcept EXCLUDES(mu);

    std::atomic<int> refs_{1};

    mutable Mutex op_mu ACQUIRED_BEFORE(mu);
    bool release_failed_ GUARDED_BY(op_mu) = false;  // retry the backend on the next release()
    std::atomic<bool> released_{false};              // written under op_mu only

    mutable Mutex mu;
    std::chrono::milliseconds ttl_ GUARDED_BY(mu);
    std::chrono::system_clock::time_point expires_at_ GUARDED_BY(mu);
    // When the lease runs out by our own clock: the send time of the last
    // successful acquire/renew plus its ttl. Conservative whatever the latency.
    Steady::time_point local_deadline_ GUARDED_BY(mu);
    bool lost_ GUARDED_BY(mu) = false;
    std::vector<std::function<void()>> callbacks_ GUARDED_BY(mu);
    // Created on first lost_token(): most locks never need one.
    std::optional<std::stop_source> stop_ GUARDED_BY(mu);
};

// How often the watchdog renews a lease of this ttl.
std::chrono::milliseconds renew_interval(std::chrono::milliseconds ttl) noexcept;

// a + d without overflowing (wait_forever and huge TTLs saturate).
std::chrono::steady_clock::time_point saturating_add(std::chrono::steady_clock::time_point a,
                                                     std::chrono::milliseconds d) noexcept;

}  // namespace lockext::detail
