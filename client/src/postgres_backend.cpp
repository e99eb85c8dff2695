// The postgres backend: leases over the lockext extension's SQL API.
//
// Every call is one round trip of one prepared statement on a pooled
// connection (see connection_pool.hpp): acquire, renew and release, with no
// BEGIN, SET or metadata query around them. Waits happen in the server
// (lockext.acquire sleeps on a condition variable until granted or timed out),
// never as a client-side polling loop; a waiting acquire holds a connection of
// its own for the length of its wait, so it is in the server's FIFO queue from
// the moment it is asked for.
//
// Leases are lease scope, so they belong to no connection: a dropped or killed
// connection fails the call in flight with BackendUnavailable and is replaced,
// and every lease stays held until its TTL runs out.
//
// Errors (SQLSTATE → what the caller sees):
//   22023, 22004, 42622, 55000, 55P03, 22008  InvalidArgument (the server's message)
//   42501 insufficient_privilege              InvalidArgument "permission denied: …"
//                                             (force_release without EXECUTE; renewing
//                                             another role's lock). It is a setup
//                                             problem that retrying cannot fix.
//   42883, 3F000, 42P01 (no lockext schema)   InvalidArgument "lockext extension is not
//                                             installed in <db>"
//   53xxx, incl. 53400 lock table full        BackendUnavailable: the server is out of a
//                                             resource; the request itself is fine and
//                                             may succeed later (LockManager retries it
//                                             like an outage during a wait)
//   08xxx, 57P01-57P03, broken connection     BackendUnavailable; the connection is dropped
//   57014 query_canceled                      BackendUnavailable (an administrator
//                                             cancelled the wait; nothing was granted)
//   anything else                             lockext::Error with the SQLSTATE
// connect() with the extension missing, or the library not preloaded, throws
// InvalidArgument: the server is reachable but cannot serve locks until an
// administrator acts, so retrying as for an outage would only hide it.
//
// Thread safety: the backend's own fields are set before it is shared (in
// make_postgres_backend) and never change after; all mutable state is the
// pool's (connection_pool.hpp).
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "backends.hpp"
#include "connection_pool.hpp"

namespace lockext::detail {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;
using std::chrono::system_clock;

// Prepared statement names and texts. Intervals travel as text in
// microseconds ("30000000 us"), typed as interval parameters: an expression on
// a parameter (such as $2 * interval '1 µs') makes PostgreSQL's plan cache
// prefer re-planning the statement on every call (a custom plan folds the
// expression, so it looks cheaper than the generic one), which costs about
// 3 µs of server CPU per call. Times come back as bigint microseconds since
// the epoch, never as timestamp text.
//
// A try (wait 0) reads no server clock: the lease is granted after the
// client sent the request, so "sent + ttl" by the client's clock is a lower
// bound of its expiry (with the clocks in step), and extract(epoch …) would
// cost another 3 µs. A wait reads clock_timestamp() after the grant; the
// executor evaluates a target list in order. (acquire in FROM would say so in
// SQL, but materializes a tuplestore per call: about 6 µs more.)
//
// Tries come in one statement per mode, with the mode (and max_holders where
// it is always 1) as literals: every parameter costs both sides about 0.3 µs.
constexpr const char *kTryExclusive = "lockext_client_try_exclusive";
constexpr const char *kTryExclusiveSql =
    "SELECT lockext.acquire($1, $2::interval, '0', 'exclusive', 'lease', 1, $3)";
constexpr const char *kTryShared = "lockext_client_try_shared";
constexpr const char *kTrySharedSql =
    "SELECT lockext.acquire($1, $2::interval, '0', 'shared', 'lease', 1, $3)";
constexpr const char *kTrySemaphore = "lockext_client_try_semaphore";
constexpr const char *kTrySemaphoreSql =
    "SELECT lockext.acquire($1, $2::interval, '0', 'semaphore', 'lease', $4::int, $3)";
constexpr const char *kWait = "lockext_client_wait";
constexpr const char *kWaitSql =
    "SELECT lockext.acquire($1, $2::interval, $6::interval, $3, 'lease', $4::int, $5), "
    "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint";
constexpr const char *kRenew = "lockext_client_renew";
constexpr const char *kRenewSql =
    "SELECT e IS NOT NULL, "
    "CASE WHEN isfinite(e) THEN (extract(epoch FROM e) * 1000000)::bigint END "
    "FROM lockext.renew($1, $2::bigint, $3::interval) AS e";
constexpr const char *kRelease = "lockext_client_release";
constexpr const char *kReleaseSql = "SELECT lockext.release($1, $2::bigint)";

constexpr const char *kHoldersSql =
    "SELECT h.name, h.mode, coalesce(h.owner, ''), coalesce(h.token, 0), "
    "(extract(epoch FROM h.acquired_at) * 1000000)::bigint, "
    "CASE WHEN isfinite(h.expires_at) THEN (extract(epoch FROM h.expires_at) * 1000000)::bigint "
    "END, coalesce(w.n, 0) "
    "FROM lockext.holders h "
    "LEFT JOIN (SELECT name, count(*)::int AS n FROM lockext.waiters GROUP BY name) w "
    "ON w.name = h.name ORDER BY h.name, h.token";

// Prepare the backend's statements on a new connection (libpqxx prepares
// them in the server at their first use, once per connection).
void prepare_statements(pqxx::connection &conn) {
    conn.prepare(kTryExclusive, kTryExclusiveSql);
    conn.prepare(kTryShared, kTrySharedSql);
    conn.prepare(kTrySemaphore, kTrySemaphoreSql);
    conn.prepare(kWait, kWaitSql);
    conn.prepare(kRenew, kRenewSql);
    conn.prepare(kRelease, kReleaseSql);
}

// A duration as interval text in microseconds, e.g. "30000000 us".
std::string interval_text(microseconds d) {
    return std::to_string(d.count()) + " us";
}

// A mode as the SQL API spells it (a string libpqxx can send without copying).
const std::string &mode_text(Mode mode) {
    static const std::string exclusive("exclusive"), shared("shared"), semaphore("semaphore");
    switch (mode) {
        case Mode::shared:
            return shared;
        case Mode::semaphore:
            return semaphore;
        default:
            return exclusive;
    }
}

// A server time in microseconds since the epoch, as a time_point.
system_clock::time_point from_epoch_us(std::int64_t us) {
    return system_clock::time_point(
        std::chrono::duration_cast<system_clock::duration>(microseconds(us)));
}

// Mode from the SQL views' spelling.
Mode parse_mode(std::string_view text) {
    if (text == "shared")
        return Mode::shared;
    if (text == "semaphore")
        return Mode::semaphore;
    return Mode::exclusive;
}

class PostgresBackend final : public Backend {
  public:
    // A backend over a pool of size connections to the server conninfo names.
    PostgresBackend(const std::string &conninfo, std::size_t size)
        : pool_(conninfo, size, prepare_statements) {}

    // Open the first connection and check the extension is usable there.
    void verify() {
        ConnectionPool::Handle handle = pool_.checkout(ConnectionPool::Use::quick);
        pqxx::connection &conn = handle.connection();
        db_ = conn.dbname();
        try {
            pqxx::nontransaction tx(conn);
            if (tx.exec("SELECT 1 FROM pg_extension WHERE extname = 'lockext'").empty())
                throw InvalidArgument("lockext extension is not installed in database \"" + db_ +
                                      "\" (run CREATE EXTENSION lockext there)");
            // Fails with 55000 and a hint when the library was not preloaded.
            tx.exec("SELECT slots_total FROM lockext.stats");
        } catch (const pqxx::failure &e) {
            const bool lost = connection_lost(e, conn);
            if (lost)
                handle.discard();
            throw_mapped(e, lost, db_);
        }
    }

    // This backend's name in URLs and metrics.
    std::string_view kind() const noexcept override {
        return "postgres";
    }

    // A try on a quick connection; a wait on a connection of its own, in the
    // server's queue (see connection_pool.hpp for why waits never queue here).
    std::optional<Lease> acquire(std::string_view name, const LockOptions &options) override {
        if (options.wait.count() == 0) {
            ConnectionPool::Handle quick = pool_.checkout(ConnectionPool::Use::quick);
            return acquire_on(quick, name, options, 0);
        }
        std::optional<std::int64_t> wait_us;  // empty: NULL, no limit
        if (options.wait < kForeverish)
            wait_us = microseconds(options.wait).count();
        ConnectionPool::Handle handle = pool_.checkout(ConnectionPool::Use::wait);
        return acquire_on(handle, name, options, wait_us);
    }

    // lockext.renew; the server's new expiry, or empty when no longer held.
    std::optional<system_clock::time_point> renew(const Lease &lease, milliseconds ttl) override {
        const std::string ttl_text = interval_text(ttl);
        pqxx::result r = call(true, [&](pqxx::connection &conn) {
            pqxx::nontransaction tx(conn);
            return tx.exec_prepared(kRenew, lease.name, lease.token, ttl_text);
        });
        if (!r[0][0].as<bool>())
            return std::nullopt;
        if (r[0][1].is_null())  // infinity: no expiry (never for a lease)
            return system_clock::time_point::max();
        return from_epoch_us(r[0][1].as<std::int64_t>());
    }

    // lockext.release; false when no longer held.
    bool release(const Lease &lease) override {
        pqxx::result r = call(true, [&](pqxx::connection &conn) {
            pqxx::nontransaction tx(conn);
            return tx.exec_prepared(kRelease, lease.name, lease.token);
        });
        return r[0][0].as<bool>();
    }

    // lockext.holders with each name's waiter count from lockext.waiters.
    std::vector<HolderInfo> holders() override {
        pqxx::result r = call(true, [&](pqxx::connection &conn) {
            pqxx::nontransaction tx(conn);
            return tx.exec(kHoldersSql);
        });
        std::vector<HolderInfo> out;
        out.reserve(r.size());
        for (const auto &row : r) {
            HolderInfo h;
            h.name = row[0].as<std::string>();
            h.mode = parse_mode(row[1].as<std::string>());
            h.owner = row[2].as<std::string>();
            h.token = row[3].as<std::int64_t>();
            h.acquired_at = from_epoch_us(row[4].as<std::int64_t>());
            h.expires_at = row[5].is_null() ? system_clock::time_point::max()
                                            : from_epoch_us(row[5].as<std::int64_t>());
            h.waiters = row[6].as<int>();
            out.push_back(std::move(h));
        }
        return out;
    }

    // lockext.force_release (needs EXECUTE on it).
    int force_release(std::string_view name) override {
        const std::string key(name);
        // Not retried: a lost reply may hide a release that happened.
        pqxx::result r = call(false, [&](pqxx::connection &conn) {
            pqxx::nontransaction tx(conn);
            return tx.exec_params("SELECT lockext.force_release($1)", key);
        });
        return r[0][0].as<int>();
    }

  private:
    // One lockext.acquire call on handle's connection, waiting up to wait_us
    // in the server (empty: no limit); empty when not obtained.
    std::optional<Lease> acquire_on(ConnectionPool::Handle &handle, std::string_view name,
                                    const LockOptions &options,
                                    std::optional<std::int64_t> wait_us) {
        const bool is_try = wait_us && *wait_us == 0;
        const std::string ttl = interval_text(options.ttl);
        const std::string &owner = options.owner.empty() ? default_owner() : options.owner;
        std::string key(name);
        pqxx::connection &conn = handle.connection();
        const auto sent = system_clock::now();
        pqxx::result r;
        try {
            pqxx::nontransaction tx(conn);
            if (is_try && options.mode == Mode::semaphore) {
                r = tx.exec_prepared(kTrySemaphore, key, ttl, owner, options.max_holders);
            } else if (is_try) {
                r = tx.exec_prepared(options.mode == Mode::shared ? kTryShared : kTryExclusive, key,
                                     ttl, owner);
            } else {
                std::optional<std::string> wait;
                if (wait_us)
                    wait = interval_text(microseconds(*wait_us));
                r = tx.exec_prepared(kWait, key, ttl, mode_text(options.mode), options.max_holders,
                                     owner, wait);
            }
        } catch (const pqxx::failure &e) {
            // Not retried: the server may have granted a lease whose reply was lost.
            const bool lost = connection_lost(e, conn);
            if (lost)
                handle.discard();
            throw_mapped(e, lost, db_);
        }
        if (r[0][0].is_null())
            return std::nullopt;
        Lease lease;
        lease.name = std::move(key);
        lease.mode = options.mode;
        lease.max_holders = options.max_holders;
        lease.token = r[0][0].as<std::int64_t>();
        // A try: granted after `sent`. A wait: the server's clock right after
        // the grant (later than the grant by at most the wake-up latency).
        const auto start = is_try ? sent : from_epoch_us(r[0][1].as<std::int64_t>());
        lease.expires_at = start + options.ttl;
        return lease;
    }

    // Run fn(connection) on a pooled connection, mapping failures to lockext
    // errors. An idempotent call that finds a reused connection broken is
    // retried once on a new one: most likely it died while idle (a killed
    // backend, idle_session_timeout) and the server is fine.
    template <class F>
    pqxx::result call(bool idempotent, F &&fn) {
        for (int attempt = 0;; ++attempt) {
            ConnectionPool::Handle handle = pool_.checkout(ConnectionPool::Use::quick);
            pqxx::connection &conn = handle.connection();
            try {
                return fn(conn);
            } catch (const pqxx::failure &e) {
                const bool lost = connection_lost(e, conn);
                if (!lost)
                    throw_mapped(e, false, db_);
                handle.discard();
                if (!(idempotent && handle.reused() && attempt == 0))
                    throw_mapped(e, true, db_);
            }
        }
    }

    ConnectionPool pool_;
    std::string db_;
};

}  // namespace

// Check the pool size and the URL (without connecting), then connect once and
// verify the extension, so connect() fails early.
std::shared_ptr<Backend> make_postgres_backend(std::string_view url,
                                               const ConnectOptions &options) {
    if (options.pool_size < 1)
        throw InvalidArgument("pool_size must be at least 1");
    std::string conninfo = pool_conninfo(url);
    check_conninfo(conninfo);
    auto backend = std::make_shared<PostgresBackend>(std::move(conninfo), options.pool_size);
    backend->verify();
    return backend;
}

}  // namespace lockext::detail
