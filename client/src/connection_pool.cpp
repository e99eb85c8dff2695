// The postgres backend's connection pool; the rules and the locking protocol
// are at the top of connection_pool.hpp.
#include "connection_pool.hpp"

#include <libpq-fe.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <iterator>
#include <new>
#include <set>
#include <string_view>
#include <utility>
#include <vector>

#include "idle_socket.hpp"
#include "lockext/lockext.hpp"

namespace lockext::detail {

// Closes a PGconn.
struct PgConnFinish {
    // Close the connection (PQfinish accepts nullptr).
    void operator()(PGconn *c) const noexcept {
        PQfinish(c);
    }
};

// A pooled connection.
struct PooledSlot {
    std::unique_ptr<PGconn, PgConnFinish> conn;
    // When it was last given back (only its holder touches it).
    std::chrono::steady_clock::time_point returned_at{};
};

namespace {

// The health check of an idle connection. Nothing arrives unasked on an idle
// connection of ours (we never LISTEN), so anything readable is the server's
// goodbye: a FATAL (pg_terminate_backend, idle_session_timeout, shutdown) or
// the end of the stream. The check costs one poll() and buys that no call
// fails on a connection that died while idle.
//
// A connection given back less than kFreshFor ago skips the check. In a busy
// caller (an acquire, its release, the next acquire) the poll was one of six
// system calls per statement, and a connection that dies in so short an idle
// gap is the same risk as one that dies between the poll and the call, which
// the check never covered: an idempotent call (renew, release) is retried
// once on a new connection, an acquire reports BackendUnavailable (and a wait
// retries it).
constexpr std::chrono::microseconds kFreshFor{200};

// Whether an idle connection may still be used: poll() finds nothing to read.
bool looks_alive(PGconn *conn) {
    return PQstatus(conn) == CONNECTION_OK && idle_socket_is_quiet(PQsocket(conn));
}

// A notice processor that drops server notices (they would go to stderr).
void ignore_notice(void *, const char *) {}

// Where a URI's query string starts (its '?'), or npos. As libpq reads a
// URI, user info ends at an '@' met before any '/', and may hold an
// unencoded '?' (a password): that one does not count.
std::size_t query_start(std::string_view url) {
    const auto scheme = url.find("://");
    std::size_t from = scheme == std::string_view::npos ? 0 : scheme + 3;
    const auto mark = url.find_first_of("@/", from);
    if (mark != std::string_view::npos && url[mark] == '@')
        from = mark + 1;
    return url.find('?', from);
}

// The keys of a URI's query string ("?a=1&b=2" gives {a, b}).
std::set<std::string, std::less<>> query_keys(std::string_view url) {
    std::set<std::string, std::less<>> keys;
    const auto q = query_start(url);
    if (q == std::string_view::npos)
        return keys;
    std::string_view rest = url.substr(q + 1);
    while (!rest.empty()) {
        const auto amp = rest.find('&');
        std::string_view pair = rest.substr(0, amp);
        keys.emplace(pair.substr(0, pair.find('=')));
        if (amp == std::string_view::npos)
            break;
        rest.remove_prefix(amp + 1);
    }
    return keys;
}

}  // namespace

// Cut lockext_pooling=VALUE out of the query string.
Pooling take_pooling(std::string &url) {
    constexpr std::string_view kKey = "lockext_pooling=";
    const auto q = query_start(url);
    if (q == std::string::npos)
        return Pooling::none;
    std::string value;
    bool found = false;
    std::size_t at = q + 1;
    while (at < url.size()) {
        const auto amp = url.find('&', at);
        const std::size_t end = amp == std::string::npos ? url.size() : amp;
        if (std::string_view(url).substr(at, end - at).starts_with(kKey)) {
            value = url.substr(at + kKey.size(), end - at - kKey.size());
            found = true;
            // Drop the pair with the '&' after it (or before it, when last).
            if (amp != std::string::npos)
                url.erase(at, end + 1 - at);
            else
                url.erase(at - 1, end - (at - 1));
            continue;
        }
        at = end + 1;
    }
    if (!found || value == "none")
        return Pooling::none;
    if (value == "transaction")
        return Pooling::transaction;
    throw InvalidArgument("lockext_pooling must be 'transaction' or 'none', not '" + value + "'");
}

// The user's URI plus our defaults for what it leaves unset.
std::string pool_conninfo(std::string_view url, Pooling pooling) {
    const auto keys = query_keys(url);
    std::string out(url);
    bool has_query = query_start(out) != std::string::npos;
    // Append key=value unless the user set key (their choice wins).
    auto add_default = [&](std::string_view key, std::string_view value) {
        if (keys.contains(key))
            return;
        if (!has_query) {
            out += '?';
            has_query = true;
        } else if (out.back() != '?' && out.back() != '&') {
            out += '&';
        }
        out.append(key).append("=").append(value);
    };
    // A blackholed host must fail connect(), not hang it.
    add_default("connect_timeout", "10");
    // A lock wait on a dead peer must end in about a minute, not in hours.
    if (!keys.contains("keepalives_idle") && !keys.contains("keepalives_interval") &&
        !keys.contains("keepalives_count")) {
        add_default("keepalives_idle", "30");
        add_default("keepalives_interval", "10");
        add_default("keepalives_count", "3");
    }
    // Sent data that the server's host does not acknowledge (a dropped
    // network, a vanished host) fails the call in 30 s, not after the
    // kernel's retransmissions, which take about a quarter of an hour.
    add_default("tcp_user_timeout", "30000");
    add_default("fallback_application_name", "lockext");
    // Lock waits are bounded by LockOptions::wait; a server-wide
    // statement_timeout would cut them short with a confusing cancel.
    // Poolers refuse the `options` startup parameter (PgBouncer: "unsupported
    // startup parameter"); there a cut wait is retried (57014, see
    // postgres_backend.cpp).
    if (pooling == Pooling::none)
        add_default("options", "-c%20statement_timeout%3D0");
    return out;
}

// Strip the severity prefix and fold the lines into one.
std::string clean_message(std::string_view message) {
    for (std::string_view prefix : {"ERROR:  ", "FATAL:  "}) {
        if (message.starts_with(prefix))
            message.remove_prefix(prefix.size());
    }
    std::string out;
    bool space = false;
    for (char c : message) {
        const bool ws = c == '\n' || c == '\t' || c == ' ' || c == '\r';
        if (ws) {
            space = !out.empty();
            continue;
        }
        if (space)
            out += ' ';
        space = false;
        out += c;
    }
    return out;
}

namespace {

// message with every copy of conninfo (which may hold a password) replaced by <url>.
std::string without_conninfo(std::string message, const std::string &conninfo) {
    for (auto at = message.find(conninfo); !conninfo.empty() && at != std::string::npos;
         at = message.find(conninfo, at))
        message.replace(at, conninfo.size(), "<url>");
    return message;
}

}  // namespace

// Parse conninfo as libpq will, and reject what it cannot parse. Unlike the
// message shapes in throw_connect_error(), this does not depend on libpq's
// (translated) wording.
void check_conninfo(const std::string &conninfo) {
    char *error = nullptr;
    PQconninfoOption *options = PQconninfoParse(conninfo.c_str(), &error);
    if (options) {
        PQconninfoFree(options);
        return;
    }
    std::string why = error ? error : "out of memory while parsing it";
    if (error)
        PQfreemem(error);
    throw InvalidArgument("invalid PostgreSQL URL: " +
                          clean_message(without_conninfo(why, conninfo)));
}

// Classify a failed connect as a bad URL or an unreachable server.
void throw_connect_error(const std::string &libpq_message, const std::string &conninfo) {
    const std::string message = clean_message(without_conninfo(libpq_message, conninfo));
    // libpq rejects a malformed URI or option before connecting, with
    // messages of these shapes (since PostgreSQL 14 after a "connection to
    // server ... failed: " prefix); everything else (refused, timeouts,
    // authentication, unknown database) comes from trying to reach the server.
    std::string_view detail = message;
    if (detail.starts_with("connection to server")) {
        const auto failed = detail.find(" failed: ");
        if (failed != std::string_view::npos)
            detail.remove_prefix(failed + 9);
    }
    if (detail.find("unsupported startup parameter") != std::string_view::npos)
        throw InvalidArgument("cannot connect to PostgreSQL: " + message +
                              " (a connection pooler in transaction mode? add "
                              "lockext_pooling=transaction to the URL)");
    for (std::string_view shape :
         {"invalid URI", "invalid connection option", "invalid percent-encoded", "missing \"=\"",
          "forbidden value", "unexpected spaces", "unterminated quoted", "end of string reached",
          "extra key/value separator", "invalid integer value", "invalid port number",
          "invalid sslmode", "invalid target_session_attrs", "invalid channel_binding",
          "invalid gssencmode", "invalid load_balance_hosts"}) {
        if (detail.starts_with(shape))
            throw InvalidArgument("invalid PostgreSQL URL: " + std::string(detail));
    }
    throw BackendUnavailable("cannot connect to PostgreSQL: " + message);
}

// ---- Handle ---------------------------------------------------------------

// Wrap a connection checked out of pool.
ConnectionPool::Handle::Handle(ConnectionPool *pool, std::unique_ptr<PooledSlot> slot, Use use,
                               bool reused)
    : pool_(pool), slot_(std::move(slot)), use_(use), reused_(reused) {}

// Take over other's connection; other gives nothing back.
ConnectionPool::Handle::Handle(Handle &&other) noexcept
    : pool_(std::exchange(other.pool_, nullptr)),
      slot_(std::move(other.slot_)),
      use_(other.use_),
      reused_(other.reused_) {}

// Give the connection (or, once discarded, its checkout) back.
ConnectionPool::Handle::~Handle() {
    if (pool_ != nullptr)
        pool_->give_back(std::move(slot_), use_);
}

// The checked-out connection.
PGconn *ConnectionPool::Handle::connection() {
    if (!slot_)
        throw std::logic_error("lockext: use of a discarded pooled connection");
    return slot_->conn.get();
}

// Close the connection now; a later checkout opens a new one.
void ConnectionPool::Handle::discard() noexcept {
    slot_.reset();
}

// ---- ConnectionPool -------------------------------------------------------

// An empty pool; connections are opened on demand.
ConnectionPool::ConnectionPool(std::string conninfo, std::size_t size, Setup setup)
    : conninfo_(std::move(conninfo)), size_(size), setup_(std::move(setup)) {}

// Close the idle connections (none may be checked out by then).
ConnectionPool::~ConnectionPool() = default;

// Count the checkout (a quick one waits for a free place), then reuse the most
// recently used idle connection that is still alive, or open one.
ConnectionPool::Handle ConnectionPool::checkout(Use use) {
    std::unique_ptr<PooledSlot> slot;
    {
        MutexLock lock(mu_);
        if (use == Use::quick) {
            while (quick_busy_ >= size_)
                quick_cv_.wait(lock.native());
            ++quick_busy_;
        } else {
            ++waits_;
        }
        if (!idle_.empty()) {
            slot = std::move(idle_.back());
            idle_.pop_back();
        }
    }
    if (slot && (std::chrono::steady_clock::now() - slot->returned_at < kFreshFor ||
                 looks_alive(slot->conn.get())))
        return Handle(this, std::move(slot), use, true);
    // Died while idle: close it (outside the mutex) and open a new one.
    slot.reset();
    try {
        return Handle(this, open_connection(), use, false);
    } catch (...) {
        give_back(nullptr, use);
        throw;
    }
}

// Connect, silence notices, prepare.
std::unique_ptr<PooledSlot> ConnectionPool::open_connection() {
    auto slot = std::make_unique<PooledSlot>();
    slot->conn.reset(PQconnectdb(conninfo_.c_str()));
    if (!slot->conn)
        throw std::bad_alloc();
    if (PQstatus(slot->conn.get()) != CONNECTION_OK)
        throw_connect_error(PQerrorMessage(slot->conn.get()), conninfo_);
    PQsetNoticeProcessor(slot->conn.get(), ignore_notice, nullptr);
    if (setup_) {
        try {
            setup_(slot->conn.get());
        } catch (const PgFailure &f) {
            throw_mapped(f, PQdb(slot->conn.get()));
        }
    }
    return slot;
}

// Keep the connection, trim the idle surplus once no wait is in flight, and
// let a blocked quick checkout go.
void ConnectionPool::give_back(std::unique_ptr<PooledSlot> slot, Use use) noexcept {
    // Closed after unlocking. Empty on every return but a burst's end, and an
    // empty vector allocates nothing (an empty deque would, twice per call).
    std::vector<std::unique_ptr<PooledSlot>> surplus;
    if (slot)
        slot->returned_at = std::chrono::steady_clock::now();
    {
        MutexLock lock(mu_);
        if (use == Use::quick)
            --quick_busy_;
        else
            --waits_;
        try {
            if (slot)
                idle_.push_back(std::move(slot));
            if (waits_ == 0 && idle_.size() > size_) {
                // The oldest (front) go; the most recently used stay.
                const auto extra = static_cast<std::ptrdiff_t>(idle_.size() - size_);
                surplus.assign(std::make_move_iterator(idle_.begin()),
                               std::make_move_iterator(idle_.begin() + extra));
                idle_.erase(idle_.begin(), idle_.begin() + extra);
            }
        } catch (...) {
            // Out of memory: a slot not kept is closed below, and a surplus
            // not trimmed now is trimmed at a later return.
        }
    }
    if (use == Use::quick)
        quick_cv_.notify_one();
}

// ---- libpq failures ----------------------------------------------------------

// The SQLSTATE and message of result (or of conn, with no result), and
// whether conn is gone.
PgFailure pg_failure(PGconn *conn, const PGresult *result) {
    PgFailure f;
    if (result != nullptr) {
        if (const char *state = PQresultErrorField(result, PG_DIAG_SQLSTATE))
            f.sqlstate = state;
        f.message = PQresultErrorMessage(result);
    }
    if (f.message.empty())
        f.message = PQerrorMessage(conn);
    if (f.message.empty())
        f.message = "no result from the server";
    f.message = clean_message(f.message);
    f.lost = PQstatus(conn) != CONNECTION_OK || f.sqlstate.starts_with("08") ||
             f.sqlstate == "57P01" || f.sqlstate == "57P02" || f.sqlstate == "57P03";
    return f;
}

// Own result, or throw its failure.
PgResult pg_checked(PGconn *conn, PGresult *result, ExecStatusType expected) {
    PgResult r(result);
    if (!r || PQresultStatus(r.get()) != expected)
        throw pg_failure(conn, r.get());
    return r;
}

namespace {

// SQLSTATE to lockext error (the table in postgres_backend.cpp).
[[noreturn]] void throw_for_sqlstate(const std::string &state, const std::string &message,
                                     bool lost, const std::string &db) {
    if (lost)
        throw BackendUnavailable("PostgreSQL connection lost: " + message);
    if (state == "22023" || state == "22004" || state == "42622" || state == "55000" ||
        state == "55P03" || state == "22008" || state == "22021")
        throw InvalidArgument(message);
    if (state == "42501")
        throw InvalidArgument("permission denied: " + message);
    // Our prepared statements missing, or there already, on a connection we
    // prepared ourselves: a transaction pooler between us and the server.
    if (state == "26000" || state == "42P05")
        throw InvalidArgument(message +
                              " (a connection pooler in transaction mode? add "
                              "lockext_pooling=transaction to the URL)");
    if (state == "42883" || state == "3F000" || state == "42P01")
        throw InvalidArgument("lockext extension is not installed in database \"" + db +
                              "\" (run CREATE EXTENSION lockext there): " + message);
    if (state.starts_with("53") || state == "57014")
        throw BackendUnavailable("PostgreSQL: " + message);
    throw Error("PostgreSQL error" + (state.empty() ? std::string() : " " + state) + ": " +
                message);
}

}  // namespace

// A libpq failure as a lockext error.
void throw_mapped(const PgFailure &failure, const std::string &db) {
    if (failure.timed_out)
        throw BackendUnavailable("PostgreSQL: " + failure.message);
    throw_for_sqlstate(failure.sqlstate, failure.message, failure.lost, db);
}

// ---- Shared by postgres_backend.cpp and pg_transaction.cpp ------------------

// The SQLSTATE of a failure; libpqxx 6 leaves it empty on some of its
// exception classes, so those are mapped back from the class.
std::string sqlstate_of(const pqxx::failure &e) {
    if (const auto *sql = dynamic_cast<const pqxx::sql_error *>(&e);
        sql && !sql->sqlstate().empty())
        return sql->sqlstate();
    if (dynamic_cast<const pqxx::insufficient_privilege *>(&e) != nullptr)
        return "42501";
    if (dynamic_cast<const pqxx::undefined_function *>(&e) != nullptr)
        return "42883";
    if (dynamic_cast<const pqxx::undefined_table *>(&e) != nullptr)
        return "42P01";
    return {};
}

// "<hostname>:<pid>", computed once; cut from the front to the extension's
// 128-byte limit (the pid, the part that tells processes apart, stays).
const std::string &default_owner() {
    static const std::string owner = [] {
        std::array<char, 256> host{};
        if (gethostname(host.data(), host.size() - 1) != 0 || host[0] == '\0')
            std::snprintf(host.data(), host.size(), "unknown-host");
        std::string o = std::string(host.data()) + ":" + std::to_string(getpid());
        constexpr std::size_t kMaxOwnerBytes = 128;
        if (o.size() > kMaxOwnerBytes)
            o.erase(0, o.size() - kMaxOwnerBytes);
        return o;
    }();
    return owner;
}

// Broken connection, unknown commit outcome, class 08 or an administrator shutdown.
bool connection_lost(const pqxx::failure &e, pqxx::connection_base &conn) {
    if (dynamic_cast<const pqxx::broken_connection *>(&e) != nullptr ||
        dynamic_cast<const pqxx::in_doubt_error *>(&e) != nullptr ||
        dynamic_cast<const pqxx::statement_completion_unknown *>(&e) != nullptr)
        return true;
    const std::string state = sqlstate_of(e);
    if (state.starts_with("08") || state == "57P01" || state == "57P02" || state == "57P03")
        return true;
    return !conn.is_open();
}

// A libpqxx failure as a lockext error (see postgres_backend.cpp).
void throw_mapped(const pqxx::failure &e, bool lost, const std::string &db) {
    throw_for_sqlstate(sqlstate_of(e), clean_message(e.what()), lost, db);
}

}  // namespace lockext::detail
