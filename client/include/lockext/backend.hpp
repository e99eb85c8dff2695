// The interface a lock backend implements. Applications use LockManager; this
// header is for backends (and tests that need to inject faults).
//
// A backend only talks to its store. LockManager does everything that must be
// the same on every backend: option checks, outage retries, the watchdog,
// lost-lease reporting, acquire_all and metrics.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "lockext/lockext.hpp"

namespace lockext::detail {

// What a backend returns for a granted lease, and needs back to renew or release it.
struct Lease {
    std::string name;
    Mode mode = Mode::exclusive;
    int max_holders = 1;
    std::int64_t token = 0;
    // Backend-private holder identity (the random holder value on Redis); may be empty.
    std::string handle;
    std::chrono::system_clock::time_point expires_at;
    // A steady-clock moment at or before the grant from which the lease's TTL
    // may be counted locally (is_held(), the watchdog's deadline), and where
    // the wait ends for the metrics: the grant itself (memory), the send of
    // the request that got it (Redis), the start of the quorum round less the
    // clock drift allowance (Redlock). The default (zero) means unknown: the
    // manager counts from the send of its own request, and renews once after
    // a long wait inside the backend.
    std::chrono::steady_clock::time_point granted_at{};
};

class Backend {
  public:
    virtual ~Backend() = default;

    // "memory", "postgres", "redis" or "redlock".
    virtual std::string_view kind() const noexcept = 0;

    // Try for up to options.wait (already validated), FIFO-fair where the store
    // allows, waiting without polling. Empty when not obtained in time. Throws
    // BackendUnavailable when the store cannot be reached, InvalidArgument for
    // what this backend cannot do. options.owner is passed as the caller gave
    // it: empty means "<hostname>:<pid>", for a backend that records owners.
    virtual std::optional<Lease> acquire(std::string_view name, const LockOptions &options) = 0;

    // Extend a lease by ttl; the new expiry, or empty when it is no longer held.
    virtual std::optional<std::chrono::system_clock::time_point> renew(
        const Lease &lease, std::chrono::milliseconds ttl) = 0;

    // How much sooner than "renew sent + ttl" a renewed lease must count as
    // gone locally (is_held(), the watchdog's deadline): the clock drift
    // allowance where validity is less than the ttl (Redlock), else zero.
    virtual std::chrono::milliseconds renew_margin(std::chrono::milliseconds ttl) const noexcept {
        (void)ttl;
        return std::chrono::milliseconds::zero();
    }

    // Release a lease; false when it was no longer held. Safe to repeat.
    virtual bool release(const Lease &lease) = 0;

    // Every holder, where the backend has a global view.
    virtual std::vector<HolderInfo> holders();

    // Release every holder of name, where the backend can.
    virtual int force_release(std::string_view name);
};

}  // namespace lockext::detail
