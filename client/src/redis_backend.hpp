// The Redis backend ("redis://" one node, "redlock://" independent masters).
// redis_backend.cpp has the single-node operations and what both share;
// redis_redlock.cpp the quorum operations. The scripts and the data layout
// are in redis_scripts.cpp.
//
// Thread safety: everything set in the constructor is immutable; the pools
// and subscribers synchronize themselves, and last_token_ is atomic. The one
// mutable list, ghosts_, is guarded by ghosts_mu_ (held only to move entries
// in or out, never during a call to a node; has_ghosts_ mirrors whether it
// is empty so the hot path need not take the mutex). So the backend may be
// called from any thread, including the watchdog's.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "lockext/backend.hpp"
#include "redis_connection.hpp"
#include "redis_scripts.hpp"
#include "redis_subscriber.hpp"
#include "redis_url.hpp"
#include "thread_annotations.hpp"

namespace lockext::detail {

// A queued waiter looks again at least this often, refreshing its place.
constexpr std::chrono::milliseconds kRedisSleepCap{4000};
// How long a waiter's place (or watch) outlives the moment it planned to look
// again: a client stalled longer than this loses its place (it queues again
// at the tail), and a dead one blocks the queue at most cap + grace.
constexpr std::chrono::milliseconds kRedisGrace{2000};

// now + d, or the end of time (wait_forever).
Steady::time_point redis_deadline_after(std::chrono::milliseconds d);

// The most a waiter sleeps before it looks again: kRedisSleepCap, or less
// when its deadline is nearer (at least 1 ms).
std::int64_t redis_sleep_cap_ms(Steady::time_point deadline);

// One node: its command pool and its pub/sub subscriber.
struct RedisNode {
    // A pool of up to pool_size connections and an idle subscriber.
    RedisNode(const RedisNodeSettings &settings, std::size_t pool_size, bool hold_off)
        : pool(settings, pool_size, hold_off), subscriber(settings) {}
    RedisNodePool pool;
    RedisSubscriber subscriber;
};

// The keys and the channel of one lock name (they share the hash tag {name}).
struct RedisKeys {
    // Keys for name.
    explicit RedisKeys(std::string_view name);
    std::string state, queue, deadlines, channel;
};

// What an acquire script answered.
struct AcquireReply {
    enum class Outcome { granted, refused, conflict };
    Outcome outcome = Outcome::refused;
    std::int64_t token = 0;      // granted
    std::int64_t expiry_ms = 0;  // granted: by the node's clock
    std::int64_t retry_ms = 0;   // refused: when to look again at the latest
    std::string first_holder;    // refused: the smallest live holder id, or empty
    int conflict_max = 0;        // conflict: max_holders in use (0: exclusive/shared)
};

class RedisBackend final : public Backend {
  public:
    // A backend over config's nodes, with pool_size connections per node.
    RedisBackend(const RedisConfig &config, std::size_t pool_size);

    // Connect to the nodes now, so connect() fails early: every node for
    // redis://, a quorum for redlock:// (the others may come back later).
    void verify();

    // "redis" or "redlock".
    std::string_view kind() const noexcept override;
    std::optional<Lease> acquire(std::string_view name, const LockOptions &options) override;
    std::optional<std::chrono::system_clock::time_point> renew(
        const Lease &lease, std::chrono::milliseconds ttl) override;
    std::chrono::milliseconds renew_margin(std::chrono::milliseconds ttl) const noexcept override;
    bool release(const Lease &lease) override;

  private:
    // ---- redis_backend.cpp: one node, FIFO queue ----
    std::optional<Lease> acquire_one(std::string_view name, const LockOptions &options);
    std::optional<std::chrono::system_clock::time_point> renew_one(const Lease &lease,
                                                                   std::chrono::milliseconds ttl);
    bool release_one(const Lease &lease);
    // Run a script on the single node; error replies are thrown. idempotent:
    // may be sent again on a fresh connection when a pooled one was stale.
    RedisReply eval_one(ScriptId script, RedisCommand &command, bool idempotent);

    // ---- redis_redlock.cpp: every node, quorum ----
    struct Attempt;
    std::optional<Lease> acquire_quorum(std::string_view name, const LockOptions &options);
    Attempt attempt_quorum(const RedisKeys &keys, std::string_view name, const std::string &id,
                           const LockOptions &options, char policy, std::int64_t cap_ms);
    std::optional<std::chrono::system_clock::time_point> renew_quorum(
        const Lease &lease, std::chrono::milliseconds ttl);
    bool release_quorum(const Lease &lease);
    // Run commands[i] (null: skip node i) on every node at once, with EVAL
    // for nodes that lost the script; per-node outcomes.
    std::vector<RedisOutcome> eval_all(ScriptId script, std::span<RedisCommand *const> commands,
                                       std::chrono::milliseconds timeout,
                                       Steady::time_point *sent_at);
    // Release id on the nodes flagged in on (best effort: errors are ignored).
    void release_on(const RedisKeys &keys, const std::string &id, const std::vector<bool> &on);
    // Nodes that must grant (or renew) a lease of this mode.
    std::size_t quorum(Mode mode, int max_holders) const noexcept;
    // The per-node reply timeout for a lease of ttl: much smaller than the ttl.
    std::chrono::milliseconds node_timeout(std::chrono::milliseconds ttl) const noexcept;

    // ---- shared ----
    // The next token floor this client asks for (see redis_scripts.cpp).
    std::int64_t token_floor(bool with_clock) const noexcept;
    // Remember a token handed out, so later floors are above it.
    void note_token(std::int64_t token) noexcept;
    // The acquire script's command for a request.
    static RedisCommand acquire_command(const RedisKeys &keys, const std::string &id,
                                        const LockOptions &options, char policy, std::int64_t floor,
                                        bool use_clock, std::int64_t cap_ms);
    // A script's EVALSHA command for keys, with the channel as ARGV[1].
    static RedisCommand script_command(ScriptId script, const RedisKeys &keys);
    // Parse an acquire script's reply from node label.
    static AcquireReply parse_acquire(const std::string &label, const redisReply &reply);
    // Why a request cannot join the kind of lock name is in use as.
    static std::string conflict_message(std::string_view name, int max_in_use,
                                        const LockOptions &options);
    // A new random request id: the mode's letter and 32 hex digits (128 bits).
    static std::string new_request_id(Mode mode);
    // Remember request id on name, whose reply was lost and whose undoing
    // failed too, until `until`: a stalled node runs what it was sent once
    // it goes on, and may then grant it a lease that nobody holds.
    void add_ghost(std::string_view name, const std::string &id, Steady::time_point until);
    // Undo the ghosts (release and leave the queue); keep those that fail.
    void clear_ghosts() noexcept;

    // A request the node may still run for nobody (see add_ghost).
    struct Ghost {
        std::string name;
        std::string id;
        Steady::time_point until;
    };

    const bool redlock_;
    const std::chrono::milliseconds timeout_;
    std::vector<std::unique_ptr<RedisNode>> nodes_;
    std::vector<RedisNodePool *> pools_;  // nodes_[i]->pool, for redis_call_all
    std::atomic<std::int64_t> last_token_{0};
    Mutex ghosts_mu_;
    std::vector<Ghost> ghosts_ GUARDED_BY(ghosts_mu_);
    std::atomic<bool> has_ghosts_{false};
};

}  // namespace lockext::detail
