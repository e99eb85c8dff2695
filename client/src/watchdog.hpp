// The watchdog: one background thread per Core that keeps auto-renewed leases alive.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <limits>
#include <memory>
#include <thread>

#include "thread_annotations.hpp"

namespace lockext::detail {

struct LockState;

// A LockState's place in its watchdog's queue. Only watchdog.cpp touches it,
// and only under the watchdog's mutex (Watchdog::Shared::mu), except `queued`,
// which ~LockState reads without it (acquire; it is stored with release under
// the mutex). The analysis cannot name that mutex from here, so the rule is
// stated rather than annotated.
struct WatchSlot {
    static constexpr std::size_t npos = std::numeric_limits<std::size_t>::max();
    std::chrono::steady_clock::time_point due{};
    std::size_t index = npos;         // position in the queue, npos when not queued
    bool registered = false;          // between watch() and unwatch()
    std::atomic<bool> queued{false};  // index != npos
};

// Renews every watched lease when it falls due (ttl/3 after the last renewal
// was sent). The thread starts on the first watch() and sleeps until the
// earliest due time; it never polls.
class Watchdog {
  public:
    Watchdog();
    ~Watchdog();
    Watchdog(const Watchdog &) = delete;
    Watchdog &operator=(const Watchdog &) = delete;

    // Renew state at due, and from then on as LockState::watchdog_renew says.
    // Calling it again for the same state reschedules it.
    // The caller holds a reference to state.
    void watch(LockState &state, std::chrono::steady_clock::time_point due);

    // Stop renewing state; after it returns the watchdog no longer refers to it.
    void unwatch(LockState &state) noexcept;

  private:
    struct Shared;
    // The thread body; it owns a reference to Shared so it may outlive the Watchdog.
    static void run(std::shared_ptr<Shared> shared);

    const std::shared_ptr<Shared> shared_;
};

}  // namespace lockext::detail
