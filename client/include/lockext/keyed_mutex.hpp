// lockext::KeyedMutex: a mutex per name, inside one process.
//
//   lockext::KeyedMutex users;
//   users.with_lock("user:42", [&] { update_profile(42); });
//
//   if (auto guard = users.try_lock_for("user:42", 50ms)) { ... }  // held until guard dies
//
// Guarantees:
// - At most one Guard holds a given key at any time, for the whole life of the
//   KeyedMutex. There is no window in which a second holder can appear (the seed
//   design freed a key's mutex while others still waited on it; here an entry
//   lives exactly as long as someone holds or waits for it).
// - Memory is bounded by the keys currently held or waited for, not by the keys
//   ever seen: size() is 0 once every guard is gone.
// - Keys hash to independent shards, so threads working on different keys rarely
//   touch the same internal mutex. Waiting threads sleep; nothing polls.
//
// Not promised:
// - Fairness. Like std::mutex, a thread arriving at the moment of an unlock may
//   take the key before a thread that was already waiting.
// - Recursion. Locking a key the calling thread already holds blocks forever,
//   exactly as std::mutex does (try_lock returns empty instead).
// - Anything across processes: see lockext::LockManager for that.
//
// Destroying a KeyedMutex while a Guard of it is alive is undefined behaviour
// (as for std::mutex); debug builds assert.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string_view>
#include <utility>

namespace lockext {

namespace detail {
struct KeyedEntry;
struct KeyedShard;
}  // namespace detail

// A set of named mutexes created on first use and freed when no longer used.
// Thread-safe; not copyable or movable (guards point into it).
class KeyedMutex {
  public:
    // Proof of holding one key. Movable (also to another thread), not copyable;
    // the destructor unlocks the key.
    class Guard {
      public:
        // A guard that holds nothing (what a moved-from guard becomes).
        Guard() noexcept = default;
        // Take over other's key; other then holds nothing.
        Guard(Guard &&other) noexcept;
        // Unlock the key this guard holds (if any), then take over other's.
        Guard &operator=(Guard &&other) noexcept;
        Guard(const Guard &) = delete;
        Guard &operator=(const Guard &) = delete;
        // Unlock the key, if still held.
        ~Guard();

        // The key held; empty when the guard holds nothing. Valid until unlock.
        std::string_view key() const noexcept;
        // Whether this guard still holds its key.
        bool owns_lock() const noexcept {
            return entry_ != nullptr;
        }
        // Same as owns_lock().
        explicit operator bool() const noexcept {
            return owns_lock();
        }
        // Unlock before the guard goes out of scope. Idempotent.
        void unlock() noexcept;

      private:
        friend class KeyedMutex;
        // Wrap a key the caller has just locked in shard.
        Guard(detail::KeyedShard *shard, detail::KeyedEntry *entry) noexcept
            : shard_(shard), entry_(entry) {}

        detail::KeyedShard *shard_ = nullptr;
        detail::KeyedEntry *entry_ = nullptr;
    };

    // shards: how many independent partitions keys are spread over; rounded up
    // to a power of two. More shards mean less contention between different keys
    // (64 suits a few dozen threads). Throws InvalidArgument for 0 or > 65536.
    explicit KeyedMutex(std::size_t shards = 64);
    // Frees every entry. No Guard of this mutex may still be alive.
    ~KeyedMutex();
    KeyedMutex(const KeyedMutex &) = delete;
    KeyedMutex &operator=(const KeyedMutex &) = delete;

    // Block until key is ours. Any string, including the empty one, is a key.
    [[nodiscard]] Guard lock(std::string_view key);

    // Take key only if no one holds it right now.
    [[nodiscard]] std::optional<Guard> try_lock(std::string_view key);

    // Take key, waiting until deadline at most; empty if it stayed held.
    [[nodiscard]] std::optional<Guard> try_lock_until(
        std::string_view key, std::chrono::steady_clock::time_point deadline);

    // Take key, waiting timeout at most (<= 0: try once; a timeout too large
    // for the clock waits forever); empty if it stayed held.
    template <class Rep, class Period>
    [[nodiscard]] std::optional<Guard> try_lock_for(
        std::string_view key, const std::chrono::duration<Rep, Period> &timeout);

    // Lock key, run fn() and return its result; unlocks on every exit path,
    // including an exception from fn.
    template <class F>
    decltype(auto) with_lock(std::string_view key, F &&fn);

    // Keys currently held or waited for (a snapshot; it may change at once).
    std::size_t size() const;

  private:
    // The shard responsible for a key hash.
    detail::KeyedShard &shard_for(std::size_t hash) const noexcept;

    std::unique_ptr<detail::KeyedShard[]> shards_;
    std::size_t shard_count_;  // a power of two
};

// ---- template definitions -------------------------------------------------

template <class Rep, class Period>
std::optional<KeyedMutex::Guard> KeyedMutex::try_lock_for(
    std::string_view key, const std::chrono::duration<Rep, Period> &timeout) {
    using Clock = std::chrono::steady_clock;
    if (timeout <= timeout.zero())
        return try_lock(key);
    const auto now = Clock::now();
    // Compared in floating point: the integer common type of two durations can overflow.
    if (std::chrono::duration<double>(timeout) >=
        std::chrono::duration<double>(Clock::time_point::max() - now)) {
        return lock(key);
    }
    return try_lock_until(key, now + std::chrono::ceil<Clock::duration>(timeout));
}

template <class F>
decltype(auto) KeyedMutex::with_lock(std::string_view key, F &&fn) {
    Guard guard = lock(key);
    return std::invoke(std::forward<F>(fn));
}

}  // namespace lockext
