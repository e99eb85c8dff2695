// Pub/sub wakeups for Redis waiters (the protocol is in redis_subscriber.hpp).
#include "redis_subscriber.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <string_view>

#include "lockext/lockext.hpp"

namespace lockext::detail {

namespace {

using std::chrono::milliseconds;

// Reconnect backoff of the subscriber thread.
constexpr milliseconds kFirstRetry{50};
constexpr milliseconds kLastRetry{1000};

// Whether a message payload ("id id id" or "*") names id.
bool names(std::string_view payload, std::string_view id) {
    if (payload == "*")
        return true;
    for (std::size_t at = payload.find(id); at != std::string_view::npos;
         at = payload.find(id, at + 1)) {
        const bool starts = at == 0 || payload[at - 1] == ' ';
        const std::size_t end = at + id.size();
        if (starts && (end == payload.size() || payload[end] == ' '))
            return true;
    }
    return false;
}

// The text of a string element of a reply ("" for anything else).
std::string_view text_of(const redisReply *r) {
    if (r == nullptr || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_STATUS))
        return {};
    return std::string_view(r->str, r->len);
}

}  // namespace

// Keep the wakeup and wake the sleeper, if any.
void WakeSignal::wake() {
    MutexLock lock(mu_);
    woken_ = true;
    cv_.notify_one();
}

// Sleep until woken or t.
bool WakeSignal::wait_until(Steady::time_point t) {
    MutexLock lock(mu_);
    while (!woken_) {
        if (cv_.wait_until(lock.native(), t) == std::cv_status::timeout)
            break;
    }
    const bool woken = woken_;
    woken_ = false;
    return woken;
}

// Nothing runs until the first waiter registers.
RedisSubscriber::RedisSubscriber(RedisNodeSettings settings)
    : settings_(std::move(settings)), wake_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    if (wake_fd_ < 0)
        throw Error("lockext: eventfd failed for the redis subscriber");
}

// Stop the thread (it may be in poll()) and wait for it.
RedisSubscriber::~RedisSubscriber() {
    std::thread thread;
    {
        MutexLock lock(mu_);
        stop_ = true;
        thread = std::move(thread_);
    }
    poke();
    if (thread.joinable())
        thread.join();
    ::close(wake_fd_);
}

// Register a listener; subscribe when it is the channel's first.
void RedisSubscriber::add(const std::string &channel, const std::string &id, WakeSignal *signal) {
    MutexLock lock(mu_);
    if (stop_)
        return;
    if (!thread_.joinable())
        thread_ = std::thread([this] { run(); });
    Channel &ch = channels_[channel];
    ch.listeners.push_back(Listener{id, signal});
    if (!ch.wanted) {
        ch.wanted = true;
        if (connected_) {
            queue(true, channel);
            ch.pending++;
        } else {
            poke();  // the thread connects, then subscribes every wanted channel
        }
    } else if (ch.active && ch.pending == 0) {
        signal->wake();  // already subscribed: nothing can be missed from now on
    }
}

// Unregister; unsubscribe when it was the channel's last listener.
void RedisSubscriber::remove(const std::string &channel, WakeSignal *signal) {
    MutexLock lock(mu_);
    auto it = channels_.find(channel);
    if (it == channels_.end())
        return;
    Channel &ch = it->second;
    std::erase_if(ch.listeners, [signal](const Listener &l) { return l.signal == signal; });
    if (!ch.listeners.empty() || !ch.wanted)
        return;
    ch.wanted = false;
    if (connected_) {
        queue(false, channel);
        ch.pending++;
    } else {
        channels_.erase(it);
    }
}

// Hand a command to the thread.
void RedisSubscriber::queue(bool subscribe, const std::string &channel) {
    commands_.push_back(Command{subscribe, channel});
    poke();
}

// Make the thread's poll() return.
void RedisSubscriber::poke() noexcept {
    const std::uint64_t one = 1;
    [[maybe_unused]] const ssize_t n = ::write(wake_fd_, &one, sizeof one);
}

// The node is gone for now: nothing is subscribed, nothing is pending.
void RedisSubscriber::reset_after_disconnect() {
    connected_ = false;
    commands_.clear();
    for (auto it = channels_.begin(); it != channels_.end();) {
        it->second.active = false;
        it->second.pending = 0;
        if (!it->second.wanted)
            it = channels_.erase(it);
        else
            ++it;
    }
}

// Connect when someone listens, send (un)subscribes, deliver messages.
void RedisSubscriber::run() {
    milliseconds backoff = kFirstRetry;
    // Sleep in poll() on the eventfd (and the connection when there is one).
    auto wait = [this](int timeout_ms) {
        pollfd fds[2] = {{wake_fd_, POLLIN, 0}, {conn_ ? conn_->fd() : -1, POLLIN, 0}};
        const int r = ::poll(fds, conn_ ? 2 : 1, timeout_ms);
        if (r > 0 && (fds[0].revents & POLLIN) != 0) {
            std::uint64_t count;
            [[maybe_unused]] const ssize_t n = ::read(wake_fd_, &count, sizeof count);
        }
        return r > 0 && conn_ && fds[1].revents != 0;
    };
    auto drop = [this] {
        conn_.reset();
        MutexLock lock(mu_);
        reset_after_disconnect();
    };
    for (;;) {
        std::vector<Command> batch;
        bool wanted = false;
        {
            MutexLock lock(mu_);
            if (stop_)
                break;
            for (const auto &[name, ch] : channels_)
                wanted = wanted || ch.wanted;
            batch.swap(commands_);
        }
        if (!conn_) {
            if (!wanted) {
                wait(-1);
                continue;
            }
            std::unique_ptr<RedisConnection> conn;
            try {
                conn = RedisConnection::open(settings_);
            } catch (const Error &) {
                // Unreachable for now: waiters keep their own timers meanwhile.
                wait(static_cast<int>(backoff.count()));
                backoff = std::min(backoff * 2, kLastRetry);
                continue;
            }
            backoff = kFirstRetry;
            conn_ = std::move(conn);
            MutexLock lock(mu_);
            connected_ = true;
            commands_.clear();
            for (auto &[name, ch] : channels_) {
                if (ch.wanted) {
                    commands_.push_back(Command{true, name});
                    ch.pending = 1;
                }
            }
            continue;
        }
        try {
            for (const Command &c : batch)
                conn_->send(RedisCommand{c.subscribe ? "SUBSCRIBE" : "UNSUBSCRIBE", c.channel});
        } catch (const BackendUnavailable &) {
            drop();
            continue;
        }
        if (!wait(-1))
            continue;
        if (!conn_->read_available()) {
            drop();
            continue;
        }
        try {
            while (RedisReply reply = conn_->buffered_reply())
                handle(*reply);
        } catch (const BackendUnavailable &) {
            drop();
        }
    }
    conn_.reset();
}

// A message wakes the listeners it names; a confirmation settles the channel.
void RedisSubscriber::handle(const redisReply &reply) {
    if (reply.type != REDIS_REPLY_ARRAY || reply.elements < 3)
        return;
    const std::string_view kind = text_of(reply.element[0]);
    const std::string channel(text_of(reply.element[1]));
    MutexLock lock(mu_);
    auto it = channels_.find(channel);
    if (it == channels_.end())
        return;
    Channel &ch = it->second;
    if (kind == "message") {
        const std::string_view payload = text_of(reply.element[2]);
        for (const Listener &l : ch.listeners) {
            if (names(payload, l.id))
                l.signal->wake();
        }
        return;
    }
    if (kind != "subscribe" && kind != "unsubscribe")
        return;
    ch.pending = std::max(0, ch.pending - 1);
    ch.active = kind == "subscribe";
    if (ch.pending > 0)
        return;
    if (ch.wanted && ch.active) {
        // Subscribed: from now on nothing is missed, so each listener looks once more.
        for (const Listener &l : ch.listeners)
            l.signal->wake();
    } else if (!ch.wanted) {
        channels_.erase(it);
    }
}

}  // namespace lockext::detail
