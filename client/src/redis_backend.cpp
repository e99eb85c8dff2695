// The Redis backend: construction, the single-node (redis://) operations, and
// what they share with Redlock (redis_redlock.cpp).
//
// Single node: acquire, renew and release are one EVALSHA round trip each
// (EVAL once after the node lost its script cache). A request that is not
// granted at once and may wait joins the name's FIFO queue on the node in the
// same script, subscribes to the name's channel (on the node's subscriber
// connection, only now), tries once more when the subscription is confirmed,
// and then sleeps until a release (or a waiter giving up, or an expiry found
// by another client) publishes its id, or until the first lease that blocks
// it expires, whichever is first. It never polls on a fixed period: the
// script says when to look again, and a waiter refreshes its place at least
// every kRedisSleepCap.
#include "redis_backend.hpp"

#include <sys/random.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "backends.hpp"
#include "core.hpp"

namespace lockext::detail {

namespace {

using std::chrono::milliseconds;
using std::chrono::system_clock;

// A time by a node's clock, in ms since the epoch, as a system_clock time.
system_clock::time_point from_epoch_ms(std::int64_t ms) {
    return system_clock::time_point(
        std::chrono::duration_cast<system_clock::duration>(milliseconds(ms)));
}

// The longest TTL the scripts can store: a node's time plus it (and the
// counter's minute) must stay an exact Lua number, below 2^53 ms, and a
// system_clock time point; 100 years keeps both with room to spare.
constexpr milliseconds kMaxTtl = std::chrono::hours(24 * 365 * 100);

// Refuse a TTL the scripts cannot store (it would wrap, and the key vanish).
void check_ttl(milliseconds ttl) {
    if (ttl > kMaxTtl)
        throw InvalidArgument("ttl of " + std::to_string(ttl.count()) +
                              " ms is longer than the redis backend supports (100 years, " +
                              std::to_string(kMaxTtl.count()) + " ms)");
}

// The integer element i of an array reply, or throw.
std::int64_t integer_at(const std::string &label, const redisReply &reply, std::size_t i) {
    if (reply.type != REDIS_REPLY_ARRAY || reply.elements <= i ||
        reply.element[i]->type != REDIS_REPLY_INTEGER)
        throw Error("redis node " + label + ": unexpected reply from a lockext script");
    return reply.element[i]->integer;
}

}  // namespace

// now + d, or the end of time (wait_forever).
Steady::time_point redis_deadline_after(milliseconds d) {
    const auto now = Steady::now();
    const auto room = std::chrono::duration_cast<milliseconds>(Steady::time_point::max() - now);
    return d >= room ? Steady::time_point::max() : now + d;
}

// kRedisSleepCap, or less when the deadline is nearer (at least 1 ms).
std::int64_t redis_sleep_cap_ms(Steady::time_point deadline) {
    if (deadline == Steady::time_point::max())
        return kRedisSleepCap.count();
    const auto left = std::chrono::ceil<milliseconds>(deadline - Steady::now());
    return std::clamp<std::int64_t>(left.count(), 1, kRedisSleepCap.count());
}

// Keys sharing the hash tag {name}, so a script touches one slot.
RedisKeys::RedisKeys(std::string_view name) {
    state.reserve(name.size() + 10);
    state.append("lockext:{").append(name).append("}");
    queue = state + ":q";
    deadlines = state + ":d";
    channel = state + ":wake";
}

// Settings per node; Redlock pools leave an unreachable node alone for a while.
RedisBackend::RedisBackend(const RedisConfig &config, std::size_t pool_size)
    : redlock_(config.redlock), timeout_(config.timeout) {
    for (const RedisAddress &address : config.nodes) {
        RedisNodeSettings settings;
        settings.address = address;
        settings.user = config.user;
        settings.password = config.password;
        settings.db = config.db;
        settings.connect_timeout = config.connect_timeout;
        settings.timeout = config.timeout;
        nodes_.push_back(std::make_unique<RedisNode>(settings, pool_size, redlock_));
        pools_.push_back(&nodes_.back()->pool);
    }
}

// Open one connection per node now (it stays pooled for the first call).
void RedisBackend::verify() {
    std::size_t reachable = 0;
    std::string errors;
    for (auto &node : nodes_) {
        try {
            RedisNodePool::Handle handle = node->pool.checkout();
            reachable++;
        } catch (const BackendUnavailable &e) {
            if (!redlock_)
                throw;
            errors += errors.empty() ? "" : "; ";
            errors += e.what();
        }
    }
    const std::size_t need = nodes_.size() / 2 + 1;
    if (reachable < need)
        throw BackendUnavailable(
            "only " + std::to_string(reachable) + " of " + std::to_string(nodes_.size()) +
            " redis nodes are reachable; a lock needs " + std::to_string(need) + ": " + errors);
}

// The URL scheme this backend serves.
std::string_view RedisBackend::kind() const noexcept {
    return redlock_ ? "redlock" : "redis";
}

// One node: FIFO; several: quorum.
std::optional<Lease> RedisBackend::acquire(std::string_view name, const LockOptions &options) {
    check_ttl(options.ttl);
    return redlock_ ? acquire_quorum(name, options) : acquire_one(name, options);
}

// Extend on one node or a quorum.
std::optional<system_clock::time_point> RedisBackend::renew(const Lease &lease, milliseconds ttl) {
    check_ttl(ttl);
    return redlock_ ? renew_quorum(lease, ttl) : renew_one(lease, ttl);
}

// Release on one node or everywhere.
bool RedisBackend::release(const Lease &lease) {
    return redlock_ ? release_quorum(lease) : release_one(lease);
}

// Try; if that fails and we may wait, queue, subscribe and wait for our turn.
std::optional<Lease> RedisBackend::acquire_one(std::string_view name, const LockOptions &options) {
    if (has_ghosts_.load(std::memory_order_relaxed))
        clear_ghosts();
    RedisNode &node = *nodes_[0];
    const RedisKeys keys(name);
    const std::string id = new_request_id(options.mode);
    const bool waits = options.wait > milliseconds::zero();
    const Steady::time_point deadline = redis_deadline_after(options.wait);
    // One acquire script call; 'q' joins (or refreshes our place in) the queue.
    // When the latest attempt was sent: a grant it brings came after it.
    Steady::time_point attempt_sent;
    auto attempt = [&](char policy) {
        RedisCommand command = acquire_command(keys, id, options, policy, token_floor(false), true,
                                               redis_sleep_cap_ms(deadline));
        attempt_sent = Steady::now();
        RedisReply reply = eval_one(ScriptId::acquire, command, false);
        return parse_acquire(node.pool.label(), *reply);
    };
    // The lease for a grant.
    auto lease_for = [&](const AcquireReply &r) {
        note_token(r.token);
        Lease lease;
        lease.name.assign(name);
        lease.mode = options.mode;
        lease.max_holders = options.max_holders;
        lease.token = r.token;
        lease.handle = id;
        lease.expires_at = from_epoch_ms(r.expiry_ms);
        // The lease's local clock starts at the send of the attempt that got
        // it (not at the first one, which may be long before after a wait).
        lease.granted_at = attempt_sent;
        return lease;
    };
    // Leave the queue; a failure is harmless (the place expires by itself).
    auto cancel = [&]() noexcept {
        try {
            RedisCommand command = script_command(ScriptId::cancel, keys);
            command.add(id);
            eval_one(ScriptId::cancel, command, true);
        } catch (...) {
        }
    };

    // After a failed call the script may still have run (the reply was lost):
    // drop the holder or queue place it may have left, so that the
    // manager's retry (with a new id) does not wait behind our own ghost.
    auto abandon = [&]() noexcept {
        bool undone = false;
        try {
            Lease ghost;
            ghost.name.assign(name);
            ghost.handle = id;
            release_one(ghost);
            undone = true;
        } catch (...) {
        }
        cancel();
        // The node did not answer the undo either (stalled, not gone): what
        // it was sent may still run there. Undo it again before later calls,
        // for as long as a grant made when the node goes on could last.
        if (!undone)
            add_ghost(name, id, redis_deadline_after(options.ttl * 2 + milliseconds(60000)));
    };

    try {
        AcquireReply r = attempt(waits ? 'q' : 't');
        if (r.outcome == AcquireReply::Outcome::granted)
            return lease_for(r);
        if (r.outcome == AcquireReply::Outcome::conflict)
            throw InvalidArgument(conflict_message(name, r.conflict_max, options));
        if (!waits)
            return std::nullopt;
        WakeSignal signal;
        RedisSubscription subscription(node.subscriber, keys.channel, id, signal);
        for (;;) {
            const auto now = Steady::now();
            if (now >= deadline)
                break;
            // The server says when the lease blocking us runs out; waiters
            // told the same moment spread over up to an eighth of it more.
            const milliseconds retry(r.retry_ms);
            const auto wake_at = std::min(deadline, now + retry + jittered(retry / 8));
            if (!signal.wait_until(wake_at) && Steady::now() >= deadline)
                break;
            r = attempt('q');
            if (r.outcome == AcquireReply::Outcome::granted)
                return lease_for(r);
            if (r.outcome == AcquireReply::Outcome::conflict) {
                cancel();
                throw InvalidArgument(conflict_message(name, r.conflict_max, options));
            }
        }
    } catch (const InvalidArgument &) {
        throw;
    } catch (...) {
        abandon();
        throw;
    }
    cancel();
    return std::nullopt;
}

// Remember a request that may still run for nobody; see the header.
void RedisBackend::add_ghost(std::string_view name, const std::string &id,
                             Steady::time_point until) {
    try {
        MutexLock lock(ghosts_mu_);
        ghosts_.push_back(Ghost{std::string(name), id, until});
        has_ghosts_.store(true, std::memory_order_relaxed);
    } catch (...) {
        // Out of memory: the ghost's lease, if any, ends by its TTL.
    }
}

// Release (and dequeue) every ghost; keep those the node did not confirm.
void RedisBackend::clear_ghosts() noexcept {
    std::vector<Ghost> pending;
    {
        MutexLock lock(ghosts_mu_);
        pending.swap(ghosts_);
        has_ghosts_.store(false, std::memory_order_relaxed);
    }
    const auto now = Steady::now();
    bool node_down = false;
    for (Ghost &g : pending) {
        if (now >= g.until)
            continue;
        if (node_down) {
            // One failure is enough to know: keep the rest for later calls
            // rather than make this one wait a timeout per ghost.
            add_ghost(g.name, g.id, g.until);
            continue;
        }
        try {
            Lease ghost;
            ghost.name = g.name;
            ghost.handle = g.id;
            release_one(ghost);
            const RedisKeys keys(g.name);
            RedisCommand command = script_command(ScriptId::cancel, keys);
            command.add(g.id);
            eval_one(ScriptId::cancel, command, true);
        } catch (...) {
            add_ghost(g.name, g.id, g.until);
            node_down = true;
        }
    }
}

// The renew script: the new expiry, or empty when the lease is gone.
std::optional<system_clock::time_point> RedisBackend::renew_one(const Lease &lease,
                                                                milliseconds ttl) {
    const RedisKeys keys(lease.name);
    RedisCommand command = script_command(ScriptId::renew, keys);
    command.add(lease.handle).add(static_cast<long long>(ttl.count())).add(0LL);
    RedisReply reply = eval_one(ScriptId::renew, command, true);
    const std::string &label = nodes_[0]->pool.label();
    if (integer_at(label, *reply, 0) != 1)
        return std::nullopt;
    return from_epoch_ms(integer_at(label, *reply, 1));
}

// The release script: whether the lease was still live.
bool RedisBackend::release_one(const Lease &lease) {
    const RedisKeys keys(lease.name);
    RedisCommand command = script_command(ScriptId::release, keys);
    command.add(lease.handle);
    RedisReply reply = eval_one(ScriptId::release, command, true);
    if (reply->type != REDIS_REPLY_INTEGER)
        throw Error("redis node " + nodes_[0]->pool.label() +
                    ": unexpected reply from the release script");
    return reply->integer == 1;
}

// EVALSHA; EVAL when the node does not have the script; errors thrown.
RedisReply RedisBackend::eval_one(ScriptId script, RedisCommand &command, bool idempotent) {
    RedisNodePool &pool = nodes_[0]->pool;
    for (int attempt = 0;; attempt++) {
        RedisNodePool::Handle handle = pool.checkout();
        try {
            RedisReply reply = handle->call(command);
            if (is_noscript(reply.get())) {
                const RedisScript &s = redis_script(script);
                command.set(0, "EVAL");
                command.set(1, s.text);
                reply = handle->call(command);
                command.set(0, "EVALSHA");
                command.set(1, s.sha1);
            }
            if (reply->type == REDIS_REPLY_ERROR)
                throw_redis_error(pool.label(), std::string_view(reply->str, reply->len));
            return reply;
        } catch (const BackendUnavailable &) {
            // A pooled connection that died while idle passes the health
            // check only in a narrow race; an idempotent call goes once more
            // on a fresh connection. Others are not repeated: the node may
            // have run the script before the connection broke. Nor is a
            // timeout: the node is alive and may have run it (a release
            // sent again would report a lease it just released as not held).
            if (!(idempotent && handle.reused() && handle->broken() && !handle->timed_out() &&
                  attempt == 0))
                throw;
        }
    }
}

// The acquire script's arguments (see kAcquire in redis_scripts.cpp).
RedisCommand RedisBackend::acquire_command(const RedisKeys &keys, const std::string &id,
                                           const LockOptions &options, char policy,
                                           std::int64_t floor, bool use_clock,
                                           std::int64_t cap_ms) {
    RedisCommand command = script_command(ScriptId::acquire, keys);
    command.add(id)
        .add(static_cast<long long>(options.ttl.count()))
        .add(static_cast<long long>(options.mode == Mode::semaphore ? options.max_holders : 0))
        .add(std::string_view(&policy, 1))
        .add(static_cast<long long>(floor))
        .add(use_clock ? "1" : "0")
        .add(static_cast<long long>(cap_ms))
        .add(static_cast<long long>(kRedisGrace.count()));
    return command;
}

// EVALSHA <sha> 3 <state> <queue> <deadlines> <channel> ...
RedisCommand RedisBackend::script_command(ScriptId script, const RedisKeys &keys) {
    RedisCommand command{"EVALSHA", redis_script(script).sha1, "3"};
    command.add(keys.state).add(keys.queue).add(keys.deadlines).add(keys.channel);
    return command;
}

// {1, token, expiry} | {0, retry ms, first holder} | {-1, max in use}.
AcquireReply RedisBackend::parse_acquire(const std::string &label, const redisReply &reply) {
    AcquireReply r;
    const std::int64_t code = integer_at(label, reply, 0);
    if (code == 1) {
        r.outcome = AcquireReply::Outcome::granted;
        r.token = integer_at(label, reply, 1);
        r.expiry_ms = integer_at(label, reply, 2);
    } else if (code == 0) {
        r.outcome = AcquireReply::Outcome::refused;
        r.retry_ms = std::max<std::int64_t>(1, integer_at(label, reply, 1));
        if (reply.elements > 2 && reply.element[2]->type == REDIS_REPLY_STRING)
            r.first_holder.assign(reply.element[2]->str, reply.element[2]->len);
    } else {
        r.outcome = AcquireReply::Outcome::conflict;
        r.conflict_max = static_cast<int>(integer_at(label, reply, 1));
    }
    return r;
}

// As the memory backend words it.
std::string RedisBackend::conflict_message(std::string_view name, int max_in_use,
                                           const LockOptions &options) {
    auto kind = [](bool semaphore, int max_holders) {
        return semaphore ? "semaphore with max_holders " + std::to_string(max_holders)
                         : std::string("exclusive/shared lock");
    };
    return "lock '" + std::string(name) + "' is in use as a " + kind(max_in_use > 0, max_in_use) +
           "; cannot take it as " +
           (options.mode == Mode::semaphore ? kind(true, options.max_holders)
                                            : std::string(to_string(options.mode)));
}

// 128 bits from the kernel's CSPRNG: unique across threads, processes and
// forks (a user-space generator copied by fork() would repeat itself).
std::string RedisBackend::new_request_id(Mode mode) {
    unsigned char bytes[16];
    std::size_t got = 0;
    while (got < sizeof bytes) {
        const ssize_t n = ::getrandom(bytes + got, sizeof bytes - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            throw Error("lockext: getrandom failed for a redis request id");
        }
        got += static_cast<std::size_t>(n);
    }
    static constexpr char kHex[] = "0123456789abcdef";
    std::string id(33, '\0');
    id[0] = mode == Mode::exclusive ? 'x' : mode == Mode::shared ? 's' : 'n';
    for (std::size_t i = 0; i < sizeof bytes; i++) {
        id[1 + i * 2] = kHex[bytes[i] >> 4];
        id[2 + i * 2] = kHex[bytes[i] & 15];
    }
    return id;
}

// Above every token this client saw; with_clock (Redlock): also at least the
// client's clock in µs, the same for every node so they usually agree.
std::int64_t RedisBackend::token_floor(bool with_clock) const noexcept {
    const std::int64_t next = last_token_.load(std::memory_order_relaxed) + 1;
    if (!with_clock)
        return next;
    const std::int64_t now_us = std::chrono::duration_cast<std::chrono::microseconds>(
                                    system_clock::now().time_since_epoch())
                                    .count();
    return std::max(next, now_us);
}

// Raise last_token_ to token.
void RedisBackend::note_token(std::int64_t token) noexcept {
    std::int64_t seen = last_token_.load(std::memory_order_relaxed);
    while (token > seen && !last_token_.compare_exchange_weak(seen, token)) {
    }
}

// Parse the URL, connect (so connect() fails early) and hand the backend over.
std::shared_ptr<Backend> make_redis_backend(std::string_view url, const ConnectOptions &options) {
    if (options.pool_size < 1)
        throw InvalidArgument("pool_size must be at least 1");
    const RedisConfig config = parse_redis_url(url);
    auto backend = std::make_shared<RedisBackend>(config, options.pool_size);
    backend->verify();
    return backend;
}

}  // namespace lockext::detail
