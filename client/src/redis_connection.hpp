// Connections to one Redis node: a guarded hiredis connection, a small pool of
// them, and a way to run one command on several nodes at once (Redlock).
//
// A hiredis context is not thread-safe, so a RedisConnection belongs to one
// thread at a time: a pool hands it out and takes it back. Commands are
// written with send(MSG_NOSIGNAL) (hiredis 0.14 would write(), and a node
// that went away would kill the process with SIGPIPE) and read by hiredis'
// reader. Every read has the node's command timeout; a connection that fails
// or times out is discarded, and the next checkout opens a new one (that is
// the reconnect). Errors are BackendUnavailable unless retrying cannot help
// (a database number the node does not have, Redis Cluster): InvalidArgument.
//
// Locking protocol: RedisNodePool::mu_ guards idle_, out_, down_until_ and
// last_error_. Connecting, health checks and commands run outside mu_, on a
// connection only the thread that checked it out can reach. cv_ is signalled
// whenever a checkout ends, the only event that can let a blocked one go.
#pragma once

#include <netdb.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <hiredis/hiredis.h>

#include "redis_url.hpp"
#include "thread_annotations.hpp"

namespace lockext::detail {

using Steady = std::chrono::steady_clock;

// How to reach and log in to one node.
struct RedisNodeSettings {
    RedisAddress address;
    std::string user;
    std::string password;
    int db = 0;
    std::chrono::milliseconds connect_timeout{1000};
    std::chrono::milliseconds timeout{1000};
};

// A getaddrinfo-shaped function (tests pass a slow one).
using AddressLookup = int (*)(const char *, const char *, const ::addrinfo *, ::addrinfo **);

// The numeric addresses of host, looked up within timeout: hiredis' own
// lookup has no time limit, so a resolver that does not answer would hold
// connect() far past connect_timeout. A numeric host is returned as it is.
// Throws BackendUnavailable (naming label) when the name does not resolve
// in time or at all. A lookup that times out finishes on its own thread.
std::vector<std::string> resolve_host(const std::string &host, const std::string &label,
                                      std::chrono::milliseconds timeout,
                                      AddressLookup lookup = nullptr);

// Frees a hiredis reply.
struct RedisReplyDeleter {
    // Hand the reply back to hiredis.
    void operator()(redisReply *reply) const noexcept {
        freeReplyObject(reply);
    }
};
using RedisReply = std::unique_ptr<redisReply, RedisReplyDeleter>;

// One command's arguments (owned, binary-safe).
class RedisCommand {
  public:
    RedisCommand() = default;
    // A command from its words.
    RedisCommand(std::initializer_list<std::string_view> words);

    // Append an argument.
    RedisCommand &add(std::string_view arg);
    // Append an integer argument.
    RedisCommand &add(long long arg);

    // The arguments.
    const std::vector<std::string> &args() const noexcept {
        return args_;
    }
    // Replace argument i (used to turn EVALSHA into EVAL).
    void set(std::size_t i, std::string_view arg) {
        args_.at(i).assign(arg);
    }

  private:
    std::vector<std::string> args_;
};

// A connection to one node; used by one thread at a time.
class RedisConnection {
  public:
    // Connect, log in (AUTH), select the database and check with PING, in
    // one round trip after the TCP handshake. Throws BackendUnavailable
    // (unreachable, timed out, authentication failed) or InvalidArgument (no
    // such database).
    static std::unique_ptr<RedisConnection> open(const RedisNodeSettings &settings);

    ~RedisConnection();
    RedisConnection(const RedisConnection &) = delete;
    RedisConnection &operator=(const RedisConnection &) = delete;

    // Send a command and wait (up to the node's timeout) for its reply.
    // Error replies are returned, not thrown; I/O failures throw
    // BackendUnavailable and leave the connection broken.
    RedisReply call(const RedisCommand &command);

    // Write a command without waiting for the reply (pipelines, pub/sub).
    void send(const RedisCommand &command);
    // Block (up to the timeout) for the next reply.
    RedisReply receive();
    // Read once from the socket into the reply buffer (call when poll() says
    // the socket is readable); false on EOF or error (then broken()).
    bool read_available() noexcept;
    // A complete reply from the buffer, or null.
    RedisReply buffered_reply();

    // Whether an idle connection still looks usable: nothing (no EOF, no
    // reset) is waiting to be read on it. Costs one poll().
    bool idle_and_healthy() const noexcept;

    // The socket, for poll().
    int fd() const noexcept;
    // Whether an I/O error or timeout made the connection unusable.
    bool broken() const noexcept {
        return broken_;
    }
    // Whether it broke because no reply came within the timeout: the node
    // may still be running the command, so it must not be sent again.
    bool timed_out() const noexcept {
        return timed_out_;
    }
    // "host:port" of the node.
    const std::string &label() const noexcept {
        return label_;
    }

  private:
    RedisConnection(redisContext *context, std::string label, std::chrono::milliseconds timeout);
    // Mark broken and throw BackendUnavailable describing the I/O failure.
    [[noreturn]] void fail(std::string_view doing);

    redisContext *context_;
    std::string label_;
    std::chrono::milliseconds timeout_;
    std::string out_;  // RESP encoding buffer, reused
    bool broken_ = false;
    bool timed_out_ = false;
};

// Map an error reply from node label to the error it means: NOSCRIPT is not
// mapped (callers fall back to EVAL); this throws for everything else.
[[noreturn]] void throw_redis_error(const std::string &label, std::string_view message);

// Whether reply is the error "NOSCRIPT …" (the node has not cached a script).
bool is_noscript(const redisReply *reply) noexcept;

// A bounded pool of connections to one node.
class RedisNodePool {
  public:
    // A checked-out connection; returns it to the pool when destroyed (or
    // drops it when it broke or was discarded).
    class Handle {
      public:
        Handle(Handle &&other) noexcept;
        Handle &operator=(Handle &&) = delete;
        Handle(const Handle &) = delete;
        Handle &operator=(const Handle &) = delete;
        ~Handle();

        // The connection.
        RedisConnection &operator*() const noexcept {
            return *conn_;
        }
        RedisConnection *operator->() const noexcept {
            return conn_.get();
        }
        // Close it instead of returning it (its state is unknown).
        void discard() noexcept;
        // Whether it was used before (so a failure may just mean it went stale).
        bool reused() const noexcept {
            return reused_;
        }

      private:
        friend class RedisNodePool;
        Handle(RedisNodePool *pool, std::unique_ptr<RedisConnection> conn, bool reused);

        RedisNodePool *pool_;
        std::unique_ptr<RedisConnection> conn_;
        bool reused_;
    };

    // At most size connections out at once. With hold_off, a node that
    // could not be connected to is not tried again for a second (Redlock:
    // a dead node must not cost a connect timeout on every call).
    RedisNodePool(RedisNodeSettings settings, std::size_t size, bool hold_off);
    RedisNodePool(const RedisNodePool &) = delete;
    RedisNodePool &operator=(const RedisNodePool &) = delete;

    // A healthy connection; blocks while size are out; opens one if none is
    // idle. Throws what RedisConnection::open throws.
    Handle checkout() EXCLUDES(mu_);

    // How to reach the node.
    const RedisNodeSettings &settings() const noexcept {
        return settings_;
    }
    // "host:port".
    const std::string &label() const noexcept {
        return label_;
    }

  private:
    // Take a connection back (null: it was dropped).
    void give_back(std::unique_ptr<RedisConnection> conn) noexcept EXCLUDES(mu_);

    const RedisNodeSettings settings_;
    const std::string label_;
    const std::size_t size_;
    const bool hold_off_;
    Mutex mu_;
    std::condition_variable cv_;
    std::vector<std::unique_ptr<RedisConnection>> idle_ GUARDED_BY(mu_);
    std::size_t out_ GUARDED_BY(mu_) = 0;
    Steady::time_point down_until_ GUARDED_BY(mu_){};
    std::string last_error_ GUARDED_BY(mu_);
};

// What one node did with a command sent to several at once.
struct RedisOutcome {
    enum class Kind {
        reply,        // a reply came (possibly an error reply, e.g. NOSCRIPT)
        unavailable,  // unreachable, timed out, dropped
        invalid,      // the node cannot serve us, retrying will not help (InvalidArgument)
        failed,       // any other error reply (lockext::Error)
    };
    Kind kind = Kind::unavailable;
    RedisReply reply;
    std::string message;
};

// Send commands[i] to pools[i] for every i at once, then collect the replies
// for up to timeout (a node that has not answered by then counts as
// unavailable). Connections are checked out (and opened if needed) before
// anything is sent; *sent_at is set to just before the first command went out.
std::vector<RedisOutcome> redis_call_all(std::span<RedisNodePool *const> pools,
                                         std::span<const RedisCommand *const> commands,
                                         std::chrono::milliseconds timeout,
                                         Steady::time_point *sent_at);

}  // namespace lockext::detail
