// Redis node connections, their pool, and commands to several nodes at once.
// The rules (threads, errors, reconnects) are in redis_connection.hpp.
#include "redis_connection.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include "idle_socket.hpp"
#include "lockext/lockext.hpp"

namespace lockext::detail {

namespace {

using std::chrono::milliseconds;

// How long a Redlock node that could not be connected to is left alone.
constexpr milliseconds kHoldOff{1000};

// A millisecond duration as a timeval (hiredis' timeouts).
timeval to_timeval(milliseconds d) {
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(d.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>((d.count() % 1000) * 1000);
    return tv;
}

// Whether message starts with the error code code (e.g. "NOAUTH").
bool has_code(std::string_view message, std::string_view code) {
    return message.starts_with(code) &&
           (message.size() == code.size() || message[code.size()] == ' ');
}

// Append arg's RESP bulk string header and body to out.
void append_bulk(std::string &out, std::string_view arg) {
    char digits[24];
    const auto end = std::to_chars(digits, digits + sizeof digits, arg.size()).ptr;
    out += '$';
    out.append(digits, end);
    out += "\r\n";
    out.append(arg);
    out += "\r\n";
}

// The text of an error reply (or of any string-like reply).
std::string_view reply_text(const redisReply *reply) {
    return std::string_view(reply->str, reply->len);
}

}  // namespace

// A command from its words.
RedisCommand::RedisCommand(std::initializer_list<std::string_view> words) {
    args_.reserve(words.size() + 8);
    for (std::string_view w : words)
        args_.emplace_back(w);
}

// Append an argument.
RedisCommand &RedisCommand::add(std::string_view arg) {
    args_.emplace_back(arg);
    return *this;
}

// Append an integer argument in decimal.
RedisCommand &RedisCommand::add(long long arg) {
    char digits[24];
    const auto end = std::to_chars(digits, digits + sizeof digits, arg).ptr;
    args_.emplace_back(digits, end);
    return *this;
}

// Take ownership of a connected context.
RedisConnection::RedisConnection(redisContext *context, std::string label, milliseconds timeout)
    : context_(context), label_(std::move(label)), timeout_(timeout) {}

// Close the socket.
RedisConnection::~RedisConnection() {
    redisFree(context_);
}

// Look host up on a thread of its own; see the header.
std::vector<std::string> resolve_host(const std::string &host, const std::string &label,
                                      milliseconds timeout, AddressLookup lookup) {
    in6_addr numeric{};
    if (inet_pton(AF_INET, host.c_str(), &numeric) == 1 ||
        inet_pton(AF_INET6, host.c_str(), &numeric) == 1)
        return {host};
    // Shared with the lookup thread, which may outlive this call.
    struct Lookup {
        std::mutex mu;
        std::condition_variable cv;
        bool done = false;
        int rc = 0;
        std::vector<std::string> addresses;
    };
    auto state = std::make_shared<Lookup>();
    const AddressLookup fn = lookup != nullptr ? lookup : ::getaddrinfo;
    std::thread([state, host, fn] {
        addrinfo hints{};
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        addrinfo *found = nullptr;
        const int rc = fn(host.c_str(), nullptr, &hints, &found);
        std::vector<std::string> addresses;
        for (addrinfo *a = rc == 0 ? found : nullptr; a != nullptr; a = a->ai_next) {
            char text[INET6_ADDRSTRLEN];
            if (getnameinfo(a->ai_addr, a->ai_addrlen, text, sizeof text, nullptr, 0,
                            NI_NUMERICHOST) == 0 &&
                std::find(addresses.begin(), addresses.end(), text) == addresses.end())
                addresses.emplace_back(text);
        }
        if (found != nullptr)
            freeaddrinfo(found);
        std::lock_guard<std::mutex> guard(state->mu);
        state->rc = rc;
        state->addresses = std::move(addresses);
        state->done = true;
        state->cv.notify_all();
    }).detach();
    std::unique_lock<std::mutex> wait(state->mu);
    if (!state->cv.wait_for(wait, timeout, [&] { return state->done; }))
        throw BackendUnavailable("redis node " + label + " is unreachable: the name " + host +
                                 " did not resolve within connect_timeout (" +
                                 std::to_string(timeout.count()) + " ms)");
    if (state->rc != 0 || state->addresses.empty())
        throw BackendUnavailable("redis node " + label + " is unreachable: cannot resolve " + host +
                                 ": " + (state->rc != 0 ? gai_strerror(state->rc) : "no address"));
    return state->addresses;
}

// Connect, then AUTH / SELECT / PING in one round trip; see the header.
std::unique_ptr<RedisConnection> RedisConnection::open(const RedisNodeSettings &settings) {
    const std::string label = settings.address.label();
    // The lookup gets connect_timeout, then each address in turn does.
    redisContext *context = nullptr;
    std::string why;
    for (const std::string &address :
         resolve_host(settings.address.host, label, settings.connect_timeout)) {
        context = redisConnectWithTimeout(address.c_str(), settings.address.port,
                                          to_timeval(settings.connect_timeout));
        if (context == nullptr)
            throw BackendUnavailable("redis node " + label + ": out of memory while connecting");
        if (context->err == 0)
            break;
        why = context->errstr;
        redisFree(context);
        context = nullptr;
    }
    if (context == nullptr)
        throw BackendUnavailable("redis node " + label + " is unreachable: " + why +
                                 " (connect_timeout " +
                                 std::to_string(settings.connect_timeout.count()) + " ms)");
    // hiredis opens its socket without close-on-exec: keep it out of any
    // program the application starts (lockctl's commands, for one).
    (void)fcntl(context->fd, F_SETFD, FD_CLOEXEC);
    // The handshake is part of connecting: it gets the connect timeout.
    redisSetTimeout(context, to_timeval(settings.connect_timeout));
    redisEnableKeepAlive(context);
    std::unique_ptr<RedisConnection> conn(
        new RedisConnection(context, label, settings.connect_timeout));

    enum class Step { auth, select, ping };
    std::vector<Step> steps;
    if (!settings.password.empty()) {
        RedisCommand auth{"AUTH"};
        if (!settings.user.empty())
            auth.add(settings.user);
        auth.add(settings.password);
        conn->send(auth);
        steps.push_back(Step::auth);
    }
    if (settings.db != 0) {
        conn->send(RedisCommand{"SELECT"}.add(static_cast<long long>(settings.db)));
        steps.push_back(Step::select);
    }
    conn->send(RedisCommand{"PING"});
    steps.push_back(Step::ping);
    for (Step step : steps) {
        RedisReply reply = conn->receive();
        if (reply->type != REDIS_REPLY_ERROR)
            continue;
        const std::string_view message = reply_text(reply.get());
        if (has_code(message, "NOAUTH"))
            throw BackendUnavailable("redis node " + label +
                                     " requires a password (NOAUTH); give it in the URL as "
                                     "redis://:password@" +
                                     label);
        if (step == Step::auth)
            throw BackendUnavailable("redis node " + label +
                                     ": authentication failed, the password (or user) was "
                                     "rejected: " +
                                     std::string(message));
        if (step == Step::select)
            throw InvalidArgument("redis node " + label + " has no database " +
                                  std::to_string(settings.db) + ": " + std::string(message));
        throw_redis_error(label, message);
    }
    redisSetTimeout(context, to_timeval(settings.timeout));
    conn->timeout_ = settings.timeout;
    return conn;
}

// Write the command, then wait for its reply.
RedisReply RedisConnection::call(const RedisCommand &command) {
    send(command);
    return receive();
}

// Encode the command as RESP and write all of it without risking SIGPIPE.
void RedisConnection::send(const RedisCommand &command) {
    if (broken_)
        fail("sending on a broken connection");
    const auto &args = command.args();
    out_.clear();
    char digits[24];
    const auto end = std::to_chars(digits, digits + sizeof digits, args.size()).ptr;
    out_ += '*';
    out_.append(digits, end);
    out_ += "\r\n";
    for (const std::string &arg : args)
        append_bulk(out_, arg);
    const char *p = out_.data();
    std::size_t left = out_.size();
    while (left > 0) {
        const ssize_t n = ::send(context_->fd, p, left, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            context_->err = REDIS_ERR_IO;
            std::snprintf(context_->errstr, sizeof context_->errstr, "%s", std::strerror(errno));
            fail("sending a command");
        }
        p += n;
        left -= static_cast<std::size_t>(n);
    }
}

// Wait for the next reply (hiredis reads with the socket's receive timeout).
RedisReply RedisConnection::receive() {
    void *raw = nullptr;
    if (redisGetReply(context_, &raw) != REDIS_OK || raw == nullptr)
        fail("waiting for a reply");
    return RedisReply(static_cast<redisReply *>(raw));
}

// One read() into hiredis' buffer.
bool RedisConnection::read_available() noexcept {
    if (redisBufferRead(context_) != REDIS_OK) {
        broken_ = true;
        return false;
    }
    return true;
}

// The next complete buffered reply, or null.
RedisReply RedisConnection::buffered_reply() {
    void *raw = nullptr;
    if (redisGetReplyFromReader(context_, &raw) != REDIS_OK)
        fail("parsing a reply");
    return RedisReply(static_cast<redisReply *>(raw));
}

// Nothing readable on an idle connection means no EOF or reset is pending.
bool RedisConnection::idle_and_healthy() const noexcept {
    return !broken_ && idle_socket_is_quiet(context_->fd);
}

// The socket.
int RedisConnection::fd() const noexcept {
    return context_->fd;
}

// Mark the connection unusable and say why, never with the password.
void RedisConnection::fail(std::string_view doing) {
    broken_ = true;
    std::string why = context_->err != 0 ? context_->errstr : "connection lost";
    if (why == std::strerror(EAGAIN) || why == std::strerror(EWOULDBLOCK)) {
        timed_out_ = true;
        why = "no reply within " + std::to_string(timeout_.count()) + " ms (timeout)";
    }
    throw BackendUnavailable("redis node " + label_ + ": " + why + " while " + std::string(doing));
}

// Errors retrying may cure are BackendUnavailable; setup problems InvalidArgument.
void throw_redis_error(const std::string &label, std::string_view message) {
    const std::string text(message);
    if (has_code(message, "NOAUTH") || has_code(message, "WRONGPASS"))
        throw BackendUnavailable("redis node " + label + ": authentication failed: " + text);
    for (std::string_view code : {"LOADING", "BUSY", "MASTERDOWN", "READONLY", "OOM", "TRYAGAIN",
                                  "CLUSTERDOWN", "MISCONF", "NOREPLICAS"}) {
        if (has_code(message, code))
            throw BackendUnavailable("redis node " + label + " cannot serve locks now: " + text);
    }
    for (std::string_view code : {"MOVED", "ASK", "CROSSSLOT"}) {
        if (has_code(message, code))
            throw InvalidArgument("redis node " + label +
                                  " is part of a Redis Cluster, which lockext does not support "
                                  "(use standalone masters): " +
                                  text);
    }
    if (has_code(message, "NOPERM"))
        throw InvalidArgument("redis node " + label +
                              ": the user may not run what lockext needs (EVALSHA, EVAL, "
                              "PUBLISH, SUBSCRIBE): " +
                              text);
    throw Error("redis node " + label + ": " + text);
}

// NOSCRIPT: the node lost (or never had) the script; EVAL it instead.
bool is_noscript(const redisReply *reply) noexcept {
    return reply != nullptr && reply->type == REDIS_REPLY_ERROR &&
           has_code(reply_text(reply), "NOSCRIPT");
}

// ---- RedisNodePool ---------------------------------------------------------

// A checked-out connection.
RedisNodePool::Handle::Handle(RedisNodePool *pool, std::unique_ptr<RedisConnection> conn,
                              bool reused)
    : pool_(pool), conn_(std::move(conn)), reused_(reused) {}

// Moves the checkout; the source gives nothing back.
RedisNodePool::Handle::Handle(Handle &&other) noexcept
    : pool_(std::exchange(other.pool_, nullptr)),
      conn_(std::move(other.conn_)),
      reused_(other.reused_) {}

// Return the connection (dropped when broken or discarded).
RedisNodePool::Handle::~Handle() {
    if (pool_ != nullptr)
        pool_->give_back(std::move(conn_));
}

// Forget the connection: it is closed when the handle goes.
void RedisNodePool::Handle::discard() noexcept {
    conn_.reset();
}

// An empty pool; connections are opened on demand.
RedisNodePool::RedisNodePool(RedisNodeSettings settings, std::size_t size, bool hold_off)
    : settings_(std::move(settings)),
      label_(settings_.address.label()),
      size_(size < 1 ? 1 : size),
      hold_off_(hold_off) {}

// Reuse the most recently returned healthy connection, or open one.
RedisNodePool::Handle RedisNodePool::checkout() {
    std::unique_ptr<RedisConnection> conn;
    {
        MutexLock lock(mu_);
        while (out_ >= size_)
            cv_.wait(lock.native());
        out_++;
        if (!idle_.empty()) {
            conn = std::move(idle_.back());
            idle_.pop_back();
        }
    }
    if (conn && conn->idle_and_healthy())
        return Handle(this, std::move(conn), true);
    conn.reset();  // it went stale (the node restarted or closed it): reconnect
    try {
        {
            MutexLock lock(mu_);
            if (hold_off_ && Steady::now() < down_until_)
                throw BackendUnavailable(last_error_ + "; not tried again for up to " +
                                         std::to_string(kHoldOff.count()) + " ms");
        }
        conn = RedisConnection::open(settings_);
    } catch (const BackendUnavailable &e) {
        MutexLock lock(mu_);
        if (hold_off_ && Steady::now() >= down_until_) {
            down_until_ = Steady::now() + kHoldOff;
            last_error_ = e.what();
        }
        out_--;
        cv_.notify_one();
        throw;
    } catch (...) {
        MutexLock lock(mu_);
        out_--;
        cv_.notify_one();
        throw;
    }
    return Handle(this, std::move(conn), false);
}

// Keep a healthy connection for reuse; close a broken one outside the mutex.
void RedisNodePool::give_back(std::unique_ptr<RedisConnection> conn) noexcept {
    if (conn && conn->broken())
        conn.reset();
    MutexLock lock(mu_);
    out_--;
    if (conn) {
        try {
            idle_.push_back(std::move(conn));
        } catch (...) {
            // Out of memory: close the connection instead of keeping it.
        }
    }
    cv_.notify_one();
}

// ---- several nodes at once -------------------------------------------------

// Check out, send everywhere, then poll() all sockets until every node
// answered or the timeout passed.
std::vector<RedisOutcome> redis_call_all(std::span<RedisNodePool *const> pools,
                                         std::span<const RedisCommand *const> commands,
                                         milliseconds timeout, Steady::time_point *sent_at) {
    const std::size_t n = pools.size();
    std::vector<RedisOutcome> out(n);
    std::vector<std::optional<RedisNodePool::Handle>> handles(n);
    for (std::size_t i = 0; i < n; i++) {
        try {
            handles[i].emplace(pools[i]->checkout());
        } catch (const BackendUnavailable &e) {
            out[i].message = e.what();
        } catch (const InvalidArgument &e) {
            out[i].kind = RedisOutcome::Kind::invalid;
            out[i].message = e.what();
        }
    }
    *sent_at = Steady::now();
    const auto deadline = *sent_at + timeout;
    std::vector<std::size_t> waiting;
    for (std::size_t i = 0; i < n; i++) {
        if (!handles[i])
            continue;
        try {
            (*handles[i])->send(*commands[i]);
            waiting.push_back(i);
        } catch (const BackendUnavailable &e) {
            out[i].message = e.what();
        }
    }
    std::vector<pollfd> fds;
    while (!waiting.empty()) {
        const auto now = Steady::now();
        if (now >= deadline)
            break;
        fds.clear();
        for (std::size_t i : waiting)
            fds.push_back(pollfd{(*handles[i])->fd(), POLLIN, 0});
        const auto left = std::chrono::ceil<milliseconds>(deadline - now);
        const int r = ::poll(fds.data(), fds.size(), static_cast<int>(left.count()));
        if (r < 0 && errno != EINTR)
            break;
        std::vector<std::size_t> still;
        for (std::size_t k = 0; k < waiting.size(); k++) {
            const std::size_t i = waiting[k];
            if (r <= 0 || fds[k].revents == 0) {
                still.push_back(i);
                continue;
            }
            RedisConnection &conn = **handles[i];
            try {
                if (!conn.read_available()) {
                    out[i].message = "redis node " + conn.label() + ": connection lost";
                    continue;
                }
                if (RedisReply reply = conn.buffered_reply()) {
                    out[i].kind = RedisOutcome::Kind::reply;
                    out[i].reply = std::move(reply);
                } else {
                    still.push_back(i);  // only part of the reply has arrived
                }
            } catch (const BackendUnavailable &e) {
                out[i].message = e.what();
            }
        }
        waiting.swap(still);
    }
    for (std::size_t i : waiting) {
        out[i].message = "redis node " + pools[i]->label() + ": no reply within " +
                         std::to_string(timeout.count()) + " ms";
        handles[i]->discard();  // a late reply would arrive on the next command
    }
    return out;
}

}  // namespace lockext::detail
