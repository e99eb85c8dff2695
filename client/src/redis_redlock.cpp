// Redlock over independent Redis masters (redlock://h1:p1,h2:p2,h3:p3).
//
// Acquire: the acquire script goes to every node at once, each with a reply
// timeout much smaller than the TTL (node_timeout). The lease is ours when a
// quorum granted it and validity = ttl − elapsed − drift is still positive,
// with elapsed measured from just before the first request went out and
// drift = ttl/100 + 2 ms. Otherwise it is released on every node that may
// have granted it (including those that did not answer in time).
//
// Quorum: N/2+1 for exclusive and shared leases (two majorities overlap, so
// an exclusive holder and anyone else always meet on some node). For a
// semaphore of k holders, majorities are not enough: k+1 holders could each
// hold a different majority without any node seeing more than k. A semaphore
// lease needs floor(k·N/(k+1)) + 1 nodes, so that k+1 of them cannot fit in
// N nodes of k places each; with N = 3 and k ≥ 2 that is every node.
//
// Split votes: when several clients try at once, each may get some nodes and
// none a quorum. The client whose request id is smallest among the partial
// holders it can see keeps its grants and asks the refusing nodes again a
// few times, a few ms apart, while the others release at once; so a try
// under contention normally has one winner instead of none. Grants refused
// elsewhere by one holder on a quorum are no split: that holder holds the
// name (a node restarted empty, or was down when it acquired), so the
// waiter gives its grants back and waits for the release message or the
// expiry, as when no node granted.
//
// Tokens: every node answers max(its counter + 1, floor), where floor is the
// client's clock in µs (and above every token this client saw), so nodes
// usually answer the same number. The lease's token is the largest answer;
// nodes that answered less are raised to it (raise script) before acquire
// returns, and it fails unless a quorum ends up at the token. Since any two
// quorums overlap, the next holder's quorum includes a node whose counter is
// at least this token, so tokens for one name rise while the nodes keep their
// counters; the README says what happens when they do not.
//
// Waiting is not FIFO: a waiter is not queued; it asks each node to publish
// "*" on release (the '.v' watch field), subscribes on every node, and tries
// again on a message or when the earliest blocking lease expires. After a
// split vote it backs off with jitter (options.retry) before trying again.
#include <algorithm>
#include <thread>

#include "core.hpp"
#include "redis_backend.hpp"

namespace lockext::detail {

namespace {

using std::chrono::milliseconds;
using std::chrono::system_clock;

// How often a split-vote winner asks the refusing nodes again, and the pause
// before the k-th time (k × this): the losers need about two round trips to
// give their nodes back.
constexpr int kSplitRounds = 4;
constexpr milliseconds kSplitPause{1};

// Clock drift allowance for a lease of ttl (the Redlock spec's 1% + 2 ms).
milliseconds drift_for(milliseconds ttl) {
    return ttl / 100 + milliseconds(2);
}

// What one node said to an acquire.
enum class Vote { none, granted, refused, down };

// Fold an error reply into the outcome kind it means.
void classify_error_reply(RedisOutcome &outcome, const std::string &label) {
    if (outcome.kind != RedisOutcome::Kind::reply || outcome.reply->type != REDIS_REPLY_ERROR)
        return;
    try {
        throw_redis_error(label, std::string_view(outcome.reply->str, outcome.reply->len));
    } catch (const BackendUnavailable &e) {
        outcome.kind = RedisOutcome::Kind::unavailable;
        outcome.message = e.what();
    } catch (const InvalidArgument &e) {
        outcome.kind = RedisOutcome::Kind::invalid;
        outcome.message = e.what();
    } catch (const Error &e) {
        outcome.kind = RedisOutcome::Kind::failed;
        outcome.message = e.what();
    }
    outcome.reply.reset();
}

// Throw what a node's hard failure means (after the caller cleaned up).
[[noreturn]] void throw_hard(const RedisOutcome &outcome) {
    if (outcome.kind == RedisOutcome::Kind::invalid)
        throw InvalidArgument(outcome.message);
    throw Error(outcome.message);
}

}  // namespace

// The result of one round of asking every node.
struct RedisBackend::Attempt {
    std::optional<Lease> lease;
    bool split = false;  // some nodes granted but too few: back off before the next try
    std::int64_t retry_ms = kRedisSleepCap.count();
};

// Majority, or more for a semaphore (see the top of the file).
std::size_t RedisBackend::quorum(Mode mode, int max_holders) const noexcept {
    const std::size_t n = nodes_.size();
    if (mode == Mode::semaphore && max_holders > 1) {
        const auto k = static_cast<std::size_t>(max_holders);
        return k * n / (k + 1) + 1;
    }
    return n / 2 + 1;
}

// A tenth of the ttl (at least 10 ms), never more than the URL's timeout.
milliseconds RedisBackend::node_timeout(milliseconds ttl) const noexcept {
    return std::min(timeout_, std::max(ttl / 10, milliseconds(10)));
}

// Try now; when we may wait, watch every node and try again on wakeups.
std::optional<Lease> RedisBackend::acquire_quorum(std::string_view name,
                                                  const LockOptions &options) {
    const RedisKeys keys(name);
    const std::string id = new_request_id(options.mode);
    const bool waits = options.wait > milliseconds::zero();
    const Steady::time_point deadline = redis_deadline_after(options.wait);
    Attempt a =
        attempt_quorum(keys, name, id, options, waits ? 'w' : 't', redis_sleep_cap_ms(deadline));
    if (a.lease || !waits)
        return std::move(a.lease);
    WakeSignal signal;
    std::vector<std::unique_ptr<RedisSubscription>> subscriptions;
    for (auto &node : nodes_)
        subscriptions.push_back(
            std::make_unique<RedisSubscription>(node->subscriber, keys.channel, id, signal));
    milliseconds backoff = options.retry.initial;
    for (;;) {
        const auto t = Steady::now();
        if (t >= deadline)
            return std::nullopt;
        if (a.split) {
            // Contention, not a holder: wait out the others' retries, not for a message.
            std::this_thread::sleep_until(std::min(deadline, t + jittered(backoff)));
            backoff = backoff > options.retry.max / 2 ? options.retry.max : backoff * 2;
            if (Steady::now() >= deadline)
                return std::nullopt;
        } else {
            backoff = options.retry.initial;
            // Spread waiters told the same expiry over an eighth of it more.
            const milliseconds retry(a.retry_ms);
            const auto wake_at = std::min(deadline, t + retry + jittered(retry / 8));
            if (!signal.wait_until(wake_at) && Steady::now() >= deadline)
                return std::nullopt;
        }
        a = attempt_quorum(keys, name, id, options, 'w', redis_sleep_cap_ms(deadline));
        if (a.lease)
            return std::move(a.lease);
    }
}

// One Redlock round: ask every node, settle split votes, agree on the token.
RedisBackend::Attempt RedisBackend::attempt_quorum(const RedisKeys &keys, std::string_view name,
                                                   const std::string &id,
                                                   const LockOptions &options, char policy,
                                                   std::int64_t cap_ms) {
    const std::size_t n = nodes_.size();
    const std::size_t need = quorum(options.mode, options.max_holders);
    const milliseconds drift = drift_for(options.ttl);
    RedisCommand command =
        acquire_command(keys, id, options, policy, token_floor(true), false, cap_ms);
    std::vector<Vote> votes(n, Vote::none);
    std::vector<std::int64_t> tokens(n, 0);
    std::vector<std::string> firsts(n);
    std::optional<RedisOutcome> hard;  // an error retrying cannot fix
    int conflict_max = -1;
    std::string down_reason;
    Attempt result;

    // Ask the nodes flagged in ask; record their votes.
    auto ask = [&](const std::vector<bool> &ask_node, Steady::time_point *sent_at) {
        std::vector<RedisCommand *> commands(n, nullptr);
        for (std::size_t i = 0; i < n; i++)
            commands[i] = ask_node[i] ? &command : nullptr;
        std::vector<RedisOutcome> outcomes =
            eval_all(ScriptId::acquire, commands, node_timeout(options.ttl), sent_at);
        for (std::size_t i = 0; i < n; i++) {
            if (!ask_node[i])
                continue;
            RedisOutcome &o = outcomes[i];
            if (o.kind != RedisOutcome::Kind::reply) {
                if (o.kind == RedisOutcome::Kind::unavailable) {
                    votes[i] = Vote::down;
                    down_reason = o.message;
                } else {
                    votes[i] = Vote::down;
                    hard = std::move(o);
                }
                continue;
            }
            const AcquireReply r = parse_acquire(nodes_[i]->pool.label(), *o.reply);
            if (r.outcome == AcquireReply::Outcome::granted) {
                votes[i] = Vote::granted;
                tokens[i] = r.token;
            } else if (r.outcome == AcquireReply::Outcome::refused) {
                votes[i] = Vote::refused;
                firsts[i] = r.first_holder;
                result.retry_ms = std::min(result.retry_ms, r.retry_ms);
            } else {
                votes[i] = Vote::refused;
                conflict_max = r.conflict_max;
            }
        }
    };
    // How many nodes voted v.
    auto count = [&votes](Vote v) {
        return static_cast<std::size_t>(std::count(votes.begin(), votes.end(), v));
    };
    // Whether one holder refused us on a quorum of nodes: it holds the name
    // (our grants come from nodes that lost or never had its lease), so this
    // is no split vote to settle but a lease to wait for.
    auto held_elsewhere = [&] {
        for (std::size_t i = 0; i < n; i++) {
            if (votes[i] != Vote::refused || firsts[i].empty())
                continue;
            std::size_t same = 0;
            for (std::size_t j = 0; j < n; j++)
                same += votes[j] == Vote::refused && firsts[j] == firsts[i];
            if (same >= need)
                return true;
        }
        return false;
    };

    const auto start_sys = system_clock::now();
    Steady::time_point start;
    // A throw from here on (a reply that does not parse, a pool that cannot
    // connect) must not leave the grants already made behind until their TTL.
    try {
        ask(std::vector<bool>(n, true), &start);

        // A split vote: keep our nodes and ask the others again only while we
        // are the smallest partial holder in sight.
        for (int round = 1; round <= kSplitRounds; round++) {
            const std::size_t granted = count(Vote::granted);
            if (granted == 0 || granted >= need || hard || conflict_max >= 0)
                break;
            if (granted + count(Vote::refused) < need || held_elsewhere())
                break;  // too many nodes are down for a quorum, or someone holds one
            bool smallest = true;
            for (std::size_t i = 0; i < n; i++) {
                if (votes[i] == Vote::refused &&
                    (firsts[i].empty() || firsts[i].compare(1, std::string::npos, id, 1) < 0))
                    smallest = false;  // a holder we must yield to (or one we cannot see)
            }
            if (!smallest || Steady::now() - start + drift >= options.ttl)
                break;
            std::this_thread::sleep_for(kSplitPause * round);
            std::vector<bool> again(n, false);
            for (std::size_t i = 0; i < n; i++)
                again[i] = votes[i] == Vote::refused;
            Steady::time_point ignored;
            ask(again, &ignored);
        }

        std::size_t granted = count(Vote::granted);
        if (!hard && conflict_max < 0 && granted >= need &&
            Steady::now() - start + drift < options.ttl) {
            // Agree on one token: raise the nodes that answered less.
            const std::int64_t token = *std::max_element(tokens.begin(), tokens.end());
            RedisCommand raise = script_command(ScriptId::raise, keys);
            raise.add(id).add(static_cast<long long>(token));
            std::vector<RedisCommand *> raises(n, nullptr);
            std::size_t at_token = 0;
            for (std::size_t i = 0; i < n; i++) {
                if (votes[i] != Vote::granted)
                    continue;
                if (tokens[i] == token)
                    at_token++;
                else
                    raises[i] = &raise;
            }
            if (at_token < need) {
                Steady::time_point ignored;
                std::vector<RedisOutcome> outcomes =
                    eval_all(ScriptId::raise, raises, node_timeout(options.ttl), &ignored);
                for (std::size_t i = 0; i < n; i++) {
                    if (raises[i] != nullptr && outcomes[i].kind == RedisOutcome::Kind::reply &&
                        outcomes[i].reply->type == REDIS_REPLY_INTEGER &&
                        outcomes[i].reply->integer == 1)
                        at_token++;
                }
            }
            if (at_token >= need && Steady::now() - start + drift < options.ttl) {
                note_token(token);
                Lease lease;
                lease.name.assign(name);
                lease.mode = options.mode;
                lease.max_holders = options.max_holders;
                lease.token = token;
                lease.handle = id;
                lease.expires_at = start_sys + options.ttl - drift;
                // Counted from here, the local deadline (ttl later) is the
                // end of the validity: is_held() turns false with it.
                lease.granted_at = start - drift;
                result.lease = std::move(lease);
                return result;
            }
            down_reason = "the fencing token could not be stored on a quorum";
        }
    } catch (...) {
        try {
            release_on(keys, id, std::vector<bool>(n, true));
        } catch (...) {
        }
        throw;
    }

    // Not ours: give back whatever may have been granted, including on nodes
    // that did not answer in time.
    std::vector<bool> release_nodes(n, false);
    for (std::size_t i = 0; i < n; i++)
        release_nodes[i] = votes[i] == Vote::granted || votes[i] == Vote::down;
    release_on(keys, id, release_nodes);
    if (hard)
        throw_hard(*hard);
    if (conflict_max >= 0)
        throw InvalidArgument(conflict_message(name, conflict_max, options));
    if (count(Vote::granted) + count(Vote::refused) < need)
        throw BackendUnavailable("only " + std::to_string(n - count(Vote::down)) + " of " +
                                 std::to_string(n) + " redis nodes answered; a lease in " +
                                 std::string(to_string(options.mode)) + " mode needs " +
                                 std::to_string(need) + " (" + down_reason + ")");
    result.split = count(Vote::granted) > 0 && !held_elsewhere();
    return result;
}

// Redlock's validity after a renewal ends the drift allowance before ttl;
// one node's lease lasts the full ttl.
milliseconds RedisBackend::renew_margin(milliseconds ttl) const noexcept {
    return redlock_ ? drift_for(ttl) : milliseconds::zero();
}

// Renew on every node; ours while a quorum renewed within the validity.
std::optional<system_clock::time_point> RedisBackend::renew_quorum(const Lease &lease,
                                                                   milliseconds ttl) {
    const std::size_t n = nodes_.size();
    const std::size_t need = quorum(lease.mode, lease.max_holders);
    const RedisKeys keys(lease.name);
    RedisCommand command = script_command(ScriptId::renew, keys);
    command.add(lease.handle)
        .add(static_cast<long long>(ttl.count()))
        .add(static_cast<long long>(lease.token));
    std::vector<RedisCommand *> commands(n, &command);
    const auto start_sys = system_clock::now();
    Steady::time_point start;
    std::vector<RedisOutcome> outcomes =
        eval_all(ScriptId::renew, commands, node_timeout(ttl), &start);
    std::size_t renewed = 0, gone = 0;
    std::string reason;
    for (std::size_t i = 0; i < n; i++) {
        RedisOutcome &o = outcomes[i];
        if (o.kind == RedisOutcome::Kind::reply && o.reply->type == REDIS_REPLY_ARRAY &&
            o.reply->elements >= 1 && o.reply->element[0]->type == REDIS_REPLY_INTEGER) {
            (o.reply->element[0]->integer == 1 ? renewed : gone)++;
        } else if (o.kind == RedisOutcome::Kind::invalid || o.kind == RedisOutcome::Kind::failed) {
            throw_hard(o);
        } else {
            reason = o.message;
        }
    }
    const milliseconds drift = drift_for(ttl);
    if (renewed >= need && Steady::now() - start + drift < ttl)
        return start_sys + ttl - drift;
    if (gone > n - need)
        return std::nullopt;  // too few nodes still have it for a quorum ever again
    throw BackendUnavailable("lease on '" + lease.name + "' was renewed on " +
                             std::to_string(renewed) + " of " + std::to_string(n) +
                             " redis nodes in time; it needs " + std::to_string(need) +
                             (reason.empty() ? std::string() : " (" + reason + ")"));
}

// Release everywhere; held when a quorum still had it.
bool RedisBackend::release_quorum(const Lease &lease) {
    const std::size_t n = nodes_.size();
    const RedisKeys keys(lease.name);
    RedisCommand command = script_command(ScriptId::release, keys);
    command.add(lease.handle);
    std::vector<RedisCommand *> commands(n, &command);
    Steady::time_point start;
    std::vector<RedisOutcome> outcomes = eval_all(ScriptId::release, commands, timeout_, &start);
    std::size_t held = 0, answered = 0;
    std::string reason;
    for (std::size_t i = 0; i < n; i++) {
        RedisOutcome &o = outcomes[i];
        if (o.kind == RedisOutcome::Kind::reply && o.reply->type == REDIS_REPLY_INTEGER) {
            answered++;
            held += o.reply->integer == 1 ? 1 : 0;
        } else if (o.kind == RedisOutcome::Kind::invalid || o.kind == RedisOutcome::Kind::failed) {
            throw_hard(o);
        } else {
            reason = o.message;
        }
    }
    // With fewer than a majority answering, nothing can be said: let the caller retry.
    if (answered < n / 2 + 1)
        throw BackendUnavailable("release of '" + lease.name + "' reached only " +
                                 std::to_string(answered) + " of " + std::to_string(n) +
                                 " redis nodes (" + reason + ")");
    return held >= quorum(lease.mode, lease.max_holders);
}

// Best-effort release of id on some nodes (after a failed attempt).
void RedisBackend::release_on(const RedisKeys &keys, const std::string &id,
                              const std::vector<bool> &on) {
    if (std::find(on.begin(), on.end(), true) == on.end())
        return;
    RedisCommand command = script_command(ScriptId::release, keys);
    command.add(id);
    std::vector<RedisCommand *> commands(nodes_.size(), nullptr);
    for (std::size_t i = 0; i < nodes_.size(); i++)
        commands[i] = on[i] ? &command : nullptr;
    Steady::time_point ignored;
    eval_all(ScriptId::release, commands, timeout_, &ignored);
}

// redis_call_all on the asked nodes, then EVAL where a node lost the script,
// then error replies folded into outcome kinds.
std::vector<RedisOutcome> RedisBackend::eval_all(ScriptId script,
                                                 std::span<RedisCommand *const> commands,
                                                 milliseconds timeout,
                                                 Steady::time_point *sent_at) {
    const std::size_t n = nodes_.size();
    std::vector<RedisNodePool *> pools;
    std::vector<const RedisCommand *> asked;
    std::vector<std::size_t> index;
    for (std::size_t i = 0; i < n; i++) {
        if (commands[i] == nullptr)
            continue;
        pools.push_back(pools_[i]);
        asked.push_back(commands[i]);
        index.push_back(i);
    }
    std::vector<RedisOutcome> out(n);
    if (index.empty()) {
        *sent_at = Steady::now();
        return out;
    }
    std::vector<RedisOutcome> got = redis_call_all(pools, asked, timeout, sent_at);
    // Rare (a restarted node or SCRIPT FLUSH): EVAL caches the script again,
    // on all such nodes at once and within the same per-node timeout.
    std::vector<RedisNodePool *> again_pools;
    std::vector<RedisCommand> evals;
    std::vector<std::size_t> again;
    for (std::size_t k = 0; k < index.size(); k++) {
        if (got[k].kind == RedisOutcome::Kind::reply && is_noscript(got[k].reply.get())) {
            RedisCommand eval = *asked[k];
            eval.set(0, "EVAL");
            eval.set(1, redis_script(script).text);
            evals.push_back(std::move(eval));
            again_pools.push_back(pools[k]);
            again.push_back(k);
        }
    }
    if (!again.empty()) {
        std::vector<const RedisCommand *> eval_ptrs;
        for (const RedisCommand &c : evals)
            eval_ptrs.push_back(&c);
        Steady::time_point ignored;
        std::vector<RedisOutcome> retried =
            redis_call_all(again_pools, eval_ptrs, timeout, &ignored);
        for (std::size_t j = 0; j < again.size(); j++)
            got[again[j]] = std::move(retried[j]);
    }
    for (std::size_t k = 0; k < index.size(); k++) {
        const std::size_t i = index[k];
        out[i] = std::move(got[k]);
        classify_error_reply(out[i], pools_[i]->label());
    }
    return out;
}

}  // namespace lockext::detail
