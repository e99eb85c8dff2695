// Push wakeups for the Redis backend's waiters: one pub/sub connection per
// node, owned by a thread of its own.
//
// A waiting acquire registers (channel, its request id, a WakeSignal); the
// subscriber's thread SUBSCRIBEs to the channel on its dedicated connection
// (a connection in subscribe mode can do nothing else) and, for every
// message, wakes the registered waiters the message names (its payload is a
// space-separated list of request ids, or "*" for everyone). The waiter is
// also woken once its subscription is confirmed, so it tries again right
// after it can no longer miss a message: a release between its first try and
// the subscription is never lost. If the connection drops, the thread
// reconnects (backing off up to a second), subscribes again and wakes every
// waiter, since messages may have been missed meanwhile; waiters never depend
// on a message alone, they also look again when the next lease expires.
//
// Locking protocol: mu_ guards channels_, commands_, thread_ and stop_. The
// thread does all I/O on conn_ (its own) without mu_. A WakeSignal has its
// own mutex; the thread takes it while holding mu_ (lock order: mu_, then a
// signal's mutex), and a waiter never holds its signal's mutex while calling
// into the subscriber, so the order is never reversed.
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "redis_connection.hpp"
#include "thread_annotations.hpp"

namespace lockext::detail {

// What a waiting thread sleeps on until a message names it (or a time passes).
class WakeSignal {
  public:
    // Wake the waiter (it may not be asleep yet: the wakeup is kept).
    void wake() EXCLUDES(mu_);
    // Sleep until woken or until t; whether it was woken. Consumes the wakeup.
    bool wait_until(Steady::time_point t) EXCLUDES(mu_);

  private:
    Mutex mu_;
    std::condition_variable cv_;
    bool woken_ GUARDED_BY(mu_) = false;
};

class RedisSubscriber {
  public:
    // A subscriber for the node settings describes; its thread starts with
    // the first registration.
    explicit RedisSubscriber(RedisNodeSettings settings);
    // Stop and join the thread.
    ~RedisSubscriber();
    RedisSubscriber(const RedisSubscriber &) = delete;
    RedisSubscriber &operator=(const RedisSubscriber &) = delete;

    // Deliver messages on channel that name id (or "*") to signal, until
    // remove(). Wakes signal once the subscription is in place.
    void add(const std::string &channel, const std::string &id, WakeSignal *signal) EXCLUDES(mu_);
    // Stop delivering to signal; when this returns the thread no longer touches it.
    void remove(const std::string &channel, WakeSignal *signal) EXCLUDES(mu_);

  private:
    struct Listener {
        std::string id;
        WakeSignal *signal;
    };
    struct Channel {
        std::vector<Listener> listeners;
        bool wanted = false;  // we want to be subscribed (someone listens)
        bool active = false;  // the node confirmed the last (un)subscribe as a subscribe
        int pending = 0;      // (un)subscribes sent but not yet confirmed
    };
    struct Command {
        bool subscribe;
        std::string channel;
    };

    // The thread: connect, send (un)subscribes, deliver messages; reconnect on failure.
    void run() EXCLUDES(mu_);
    // Handle one reply from the connection (a message or a confirmation).
    void handle(const redisReply &reply) EXCLUDES(mu_);
    // The connection dropped: forget what the node knew; resubscribe on reconnect.
    void reset_after_disconnect() REQUIRES(mu_);
    // Queue an (un)subscribe for the thread and wake it.
    void queue(bool subscribe, const std::string &channel) REQUIRES(mu_);
    // Wake the thread from poll().
    void poke() noexcept;

    const RedisNodeSettings settings_;
    const int wake_fd_;  // eventfd the thread polls beside its connection
    Mutex mu_;
    std::unordered_map<std::string, Channel> channels_ GUARDED_BY(mu_);
    std::vector<Command> commands_ GUARDED_BY(mu_);
    bool stop_ GUARDED_BY(mu_) = false;
    bool connected_ GUARDED_BY(mu_) = false;
    std::thread thread_ GUARDED_BY(mu_);
    std::unique_ptr<RedisConnection> conn_;  // the thread's alone
};

// Registers a waiter with a subscriber for its lifetime.
class RedisSubscription {
  public:
    // Listen on channel for id.
    RedisSubscription(RedisSubscriber &subscriber, const std::string &channel,
                      const std::string &id, WakeSignal &signal)
        : subscriber_(subscriber), channel_(channel), signal_(signal) {
        subscriber_.add(channel_, id, &signal_);
    }
    // Stop listening.
    ~RedisSubscription() {
        subscriber_.remove(channel_, &signal_);
    }
    RedisSubscription(const RedisSubscription &) = delete;
    RedisSubscription &operator=(const RedisSubscription &) = delete;

  private:
    RedisSubscriber &subscriber_;
    const std::string channel_;
    WakeSignal &signal_;
};

}  // namespace lockext::detail
