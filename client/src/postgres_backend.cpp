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
//   22021 (a name or owner that is not valid   InvalidArgument
//   text in the database's encoding)
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
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <iterator>
#include <limits>
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

// Type OIDs of the parameters (fixed for built-in types in every PostgreSQL).
constexpr Oid kInt4 = 23, kInt8 = 20, kText = 25, kInterval = 1186;

// Prepared statements. Parameters and results travel in binary: an interval
// as microseconds (no text for the server's interval parser), tokens and
// times as 8-byte integers. Times come back as bigint microseconds since the
// epoch.
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
struct Statement {
    const char *name;
    const char *sql;
    int params;
    Oid types[6];
};
constexpr Statement kTryExclusive{
    "lockext_client_try_exclusive",
    "SELECT lockext.acquire($1, $2, '0', 'exclusive', 'lease', 1, $3)",
    3,
    {kText, kInterval, kText}};
constexpr Statement kTryShared{"lockext_client_try_shared",
                               "SELECT lockext.acquire($1, $2, '0', 'shared', 'lease', 1, $3)",
                               3,
                               {kText, kInterval, kText}};
constexpr Statement kTrySemaphore{
    "lockext_client_try_semaphore",
    "SELECT lockext.acquire($1, $2, '0', 'semaphore', 'lease', $4, $3)",
    4,
    {kText, kInterval, kText, kInt4}};
constexpr Statement kWait{"lockext_client_wait",
                          "SELECT lockext.acquire($1, $2, $6, $3, 'lease', $4, $5), "
                          "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint",
                          6,
                          {kText, kInterval, kText, kInt4, kText, kInterval}};
constexpr Statement kRenew{
    "lockext_client_renew",
    "SELECT e IS NOT NULL, "
    "CASE WHEN isfinite(e) THEN (extract(epoch FROM e) * 1000000)::bigint END "
    "FROM lockext.renew($1, $2, $3) AS e",
    3,
    {kText, kInt8, kInterval}};
constexpr Statement kRelease{
    "lockext_client_release", "SELECT lockext.release($1, $2)", 2, {kText, kInt8}};
constexpr const Statement *kStatements[] = {&kTryExclusive, &kTryShared, &kTrySemaphore,
                                            &kWait,         &kRenew,     &kRelease};

constexpr const char *kHoldersSql =
    "SELECT h.name, h.mode, coalesce(h.owner, ''), coalesce(h.token, 0), "
    "(extract(epoch FROM h.acquired_at) * 1000000)::bigint, "
    "CASE WHEN isfinite(h.expires_at) THEN (extract(epoch FROM h.expires_at) * 1000000)::bigint "
    "END, coalesce(w.n, 0) "
    "FROM lockext.holders h "
    "LEFT JOIN (SELECT name, count(*)::int AS n FROM lockext.waiters GROUP BY name) w "
    "ON w.name = h.name ORDER BY h.name, h.token";

// Prepare the backend's statements on a new connection (direct connections
// only) in one round trip: in libpq's pipeline mode the Parse messages and
// one Sync go out together, so a wait that opens a connection joins the
// server's queue one round trip after connecting, not six.
void prepare_statements(PGconn *conn) {
    if (PQenterPipelineMode(conn) != 1)
        throw pg_failure(conn, nullptr);
    for (const Statement *st : kStatements)
        if (PQsendPrepare(conn, st->name, st->sql, st->params, st->types) != 1)
            throw pg_failure(conn, nullptr);
    if (PQpipelineSync(conn) != 1)
        throw pg_failure(conn, nullptr);
    // Each statement's result, then the null that ends it; after a failure
    // the rest come back aborted. The first failure is the one to report.
    std::optional<PgFailure> failed;
    for (std::size_t i = 0; i < std::size(kStatements); ++i) {
        PgResult r(PQgetResult(conn));
        if (!r) {
            failed = pg_failure(conn, nullptr);
            break;
        }
        if (PQresultStatus(r.get()) != PGRES_COMMAND_OK && !failed)
            failed = pg_failure(conn, r.get());
        PgResult end(PQgetResult(conn));
    }
    if (!failed) {
        PgResult sync(PQgetResult(conn));
        if (!sync || PQresultStatus(sync.get()) != PGRES_PIPELINE_SYNC)
            failed = pg_failure(conn, sync.get());
    }
    // A failed connection is discarded by the caller, pipeline and all.
    if (failed)
        throw *failed;
    if (PQexitPipelineMode(conn) != 1)
        throw pg_failure(conn, nullptr);
}

// Network byte order, for binary parameters.
void put_be64(char *out, std::uint64_t v) {
    for (int i = 7; i >= 0; --i, v >>= 8)
        out[i] = static_cast<char>(v & 0xff);
}
void put_be32(char *out, std::uint32_t v) {
    for (int i = 3; i >= 0; --i, v >>= 8)
        out[i] = static_cast<char>(v & 0xff);
}

// A bigint parameter in binary (8 bytes, big-endian).
struct Int8Param {
    char bytes[8];
    // Encode v.
    explicit Int8Param(std::int64_t v) {
        put_be64(bytes, static_cast<std::uint64_t>(v));
    }
};

// An int parameter in binary.
struct Int4Param {
    char bytes[4];
    // Encode v.
    explicit Int4Param(std::int32_t v) {
        put_be32(bytes, static_cast<std::uint32_t>(v));
    }
};

// An interval parameter in binary: microseconds, days, months.
struct IntervalParam {
    char bytes[16]{};
    // Encode d as microseconds alone (0 days, 0 months: exact, no calendar).
    // Beyond 64-bit microseconds it saturates instead of wrapping, so the
    // server sees a TTL too long for lockext.max_ttl (InvalidArgument), never
    // a small one that would end the lease while the client counts on it.
    explicit IntervalParam(milliseconds d) {
        constexpr std::int64_t kMaxMs = std::numeric_limits<std::int64_t>::max() / 1000;
        const std::int64_t us = d.count() > kMaxMs    ? std::numeric_limits<std::int64_t>::max()
                                : d.count() < -kMaxMs ? std::numeric_limits<std::int64_t>::min()
                                                      : d.count() * 1000;
        put_be64(bytes, static_cast<std::uint64_t>(us));
    }
    // Encode d exactly.
    explicit IntervalParam(microseconds d) {
        put_be64(bytes, static_cast<std::uint64_t>(d.count()));
    }
};

// A binary bigint, bool or int field of a result row.
std::int64_t get_int8(const PGresult *r, int row, int col) {
    const auto *p = reinterpret_cast<const unsigned char *>(PQgetvalue(r, row, col));
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i)
        v = (v << 8) | p[i];
    return static_cast<std::int64_t>(v);
}
bool get_bool(const PGresult *r, int row, int col) {
    return PQgetvalue(r, row, col)[0] != 0;
}

// A text field of a text-format result row.
std::string_view get_text(const PGresult *r, int row, int col) {
    return {PQgetvalue(r, row, col), static_cast<std::size_t>(PQgetlength(r, row, col))};
}

// A text-format integer field; Error if the server sent something else.
std::int64_t text_int(const PGresult *r, int row, int col) {
    const std::string_view t = get_text(r, row, col);
    std::int64_t v = 0;
    const auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
    if (ec != std::errc() || end != t.data() + t.size())
        throw Error("PostgreSQL: expected an integer, got '" + std::string(t) + "'");
    return v;
}

// Wait until conn has read what the next PQgetResult needs, or deadline;
// PgFailure (the connection is to be dropped) when it breaks or time is up.
void await_reply(PGconn *conn, CallDeadline::Steady::time_point deadline) {
    while (PQisBusy(conn) != 0) {
        const auto left = deadline - CallDeadline::Steady::now();
        if (left <= CallDeadline::Steady::duration::zero()) {
            PgFailure f;
            f.lost = true;
            f.timed_out = true;
            f.message = "no reply before the lease's local deadline; the connection is dropped";
            throw f;
        }
        const auto ms = std::chrono::ceil<milliseconds>(left).count();
        pollfd fd{PQsocket(conn), POLLIN, 0};
        const int rc = ::poll(&fd, 1, static_cast<int>(std::min<std::int64_t>(ms, 60000)));
        if ((rc < 0 && errno != EINTR) || (rc > 0 && PQconsumeInput(conn) == 0)) {
            PgFailure f = pg_failure(conn, nullptr);
            f.lost = true;
            throw f;
        }
    }
}

// Run a statement with binary parameters and binary results: the prepared
// one, or through a transaction pooler the unnamed one, parsed with every
// call (a named statement lives on one server connection, and the pooler
// may send the next call to another); throws PgFailure unless it returned rows.
// Under a CallDeadline it waits for the reply only until then.
PgResult exec_statement(PGconn *conn, Pooling pooling, const Statement &st,
                        const char *const *values, const int *lengths) {
    static constexpr int kBinary[6] = {1, 1, 1, 1, 1, 1};
    const auto deadline = CallDeadline::get();
    if (deadline == CallDeadline::Steady::time_point::max()) {
        PGresult *r =
            pooling == Pooling::none
                ? PQexecPrepared(conn, st.name, st.params, values, lengths, kBinary, 1)
                : PQexecParams(conn, st.sql, st.params, st.types, values, lengths, kBinary, 1);
        return pg_checked(conn, r, PGRES_TUPLES_OK);
    }
    const int sent =
        pooling == Pooling::none
            ? PQsendQueryPrepared(conn, st.name, st.params, values, lengths, kBinary, 1)
            : PQsendQueryParams(conn, st.sql, st.params, st.types, values, lengths, kBinary, 1);
    if (sent != 1) {
        PgFailure f = pg_failure(conn, nullptr);
        f.lost = true;
        throw f;
    }
    // As PQexec: read every result, keep the first.
    PgResult first;
    for (;;) {
        await_reply(conn, deadline);
        PGresult *r = PQgetResult(conn);
        if (r == nullptr)
            break;
        if (!first)
            first.reset(r);
        else
            PQclear(r);
    }
    return pg_checked(conn, first.release(), PGRES_TUPLES_OK);
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

// A mode as the SQL API spells it.
std::string_view mode_text(Mode mode) {
    switch (mode) {
        case Mode::shared:
            return "shared";
        case Mode::semaphore:
            return "semaphore";
        default:
            return "exclusive";
    }
}

class PostgresBackend final : public Backend {
  public:
    // A backend over a pool of size connections to the server conninfo names.
    PostgresBackend(const std::string &conninfo, std::size_t size, Pooling pooling)
        : pool_(conninfo, size,
                pooling == Pooling::none ? ConnectionPool::Setup(prepare_statements) : nullptr),
          pooling_(pooling) {}

    // Open the first connection and check the extension is usable there.
    void verify() {
        ConnectionPool::Handle handle = pool_.checkout(ConnectionPool::Use::quick);
        PGconn *conn = handle.connection();
        db_ = PQdb(conn);
        try {
            PgResult r = pg_checked(
                conn, PQexec(conn, "SELECT 1 FROM pg_extension WHERE extname = 'lockext'"),
                PGRES_TUPLES_OK);
            if (PQntuples(r.get()) == 0)
                throw InvalidArgument("lockext extension is not installed in database \"" + db_ +
                                      "\" (run CREATE EXTENSION lockext there)");
            // Fails with 55000 and a hint when the library was not preloaded.
            pg_checked(conn, PQexec(conn, "SELECT slots_total FROM lockext.stats"),
                       PGRES_TUPLES_OK);
        } catch (const PgFailure &f) {
            if (f.lost)
                handle.discard();
            throw_mapped(f, db_);
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
        const Int8Param token(lease.token);
        const IntervalParam ttl_param{ttl};
        const char *values[] = {lease.name.data(), token.bytes, ttl_param.bytes};
        const int lengths[] = {static_cast<int>(lease.name.size()), 8, 16};
        PgResult r = call(true, [&](PGconn *conn) {
            return exec_statement(conn, pooling_, kRenew, values, lengths);
        });
        if (!get_bool(r.get(), 0, 0))
            return std::nullopt;
        if (PQgetisnull(r.get(), 0, 1))  // infinity: no expiry (never for a lease)
            return system_clock::time_point::max();
        return from_epoch_us(get_int8(r.get(), 0, 1));
    }

    // lockext.release; false when no longer held.
    bool release(const Lease &lease) override {
        const Int8Param token(lease.token);
        const char *values[] = {lease.name.data(), token.bytes};
        const int lengths[] = {static_cast<int>(lease.name.size()), 8};
        int tries = 0;
        PgResult r = call(true, [&](PGconn *conn) {
            ++tries;
            return exec_statement(conn, pooling_, kRelease, values, lengths);
        });
        const bool held = get_bool(r.get(), 0, 0);
        // The first try's connection broke, perhaps after the server had
        // released the lease: "not held" from the retry may be our own
        // release, so it says nothing about whether the lease was still ours.
        if (!held && tries > 1)
            throw BackendUnavailable(
                "PostgreSQL connection lost during the release of '" + lease.name +
                "'; the lease is gone now, but whether it was still held is unknown");
        return held;
    }

    // lockext.holders with each name's waiter count from lockext.waiters.
    std::vector<HolderInfo> holders() override {
        PgResult r = call(true, [&](PGconn *conn) {
            return pg_checked(conn, PQexec(conn, kHoldersSql), PGRES_TUPLES_OK);
        });
        const int rows = PQntuples(r.get());
        std::vector<HolderInfo> out;
        out.reserve(static_cast<std::size_t>(rows));
        for (int i = 0; i < rows; ++i) {
            const PGresult *res = r.get();
            HolderInfo h;
            h.name = get_text(res, i, 0);
            h.mode = parse_mode(get_text(res, i, 1));
            h.owner = get_text(res, i, 2);
            h.token = text_int(res, i, 3);
            h.acquired_at = from_epoch_us(text_int(res, i, 4));
            h.expires_at = PQgetisnull(res, i, 5) ? system_clock::time_point::max()
                                                  : from_epoch_us(text_int(res, i, 5));
            h.waiters = static_cast<int>(text_int(res, i, 6));
            out.push_back(std::move(h));
        }
        return out;
    }

    // lockext.force_release (needs EXECUTE on it).
    int force_release(std::string_view name) override {
        const std::string key(name);
        const char *values[] = {key.c_str()};
        // Not retried: a lost reply may hide a release that happened.
        PgResult r = call(false, [&](PGconn *conn) {
            return pg_checked(conn,
                              PQexecParams(conn, "SELECT lockext.force_release($1)", 1, nullptr,
                                           values, nullptr, nullptr, 0),
                              PGRES_TUPLES_OK);
        });
        return static_cast<int>(text_int(r.get(), 0, 0));
    }

  private:
    // One lockext.acquire call on handle's connection, waiting up to wait_us
    // in the server (empty: no limit); empty when not obtained.
    std::optional<Lease> acquire_on(ConnectionPool::Handle &handle, std::string_view name,
                                    const LockOptions &options,
                                    std::optional<std::int64_t> wait_us) {
        const bool is_try = wait_us && *wait_us == 0;
        const std::string &owner = options.owner.empty() ? default_owner() : options.owner;
        const IntervalParam ttl{options.ttl};
        const Int4Param max_holders(options.max_holders);
        const std::string_view mode = mode_text(options.mode);
        const IntervalParam wait{microseconds(wait_us.value_or(0))};
        // $1 name, $2 ttl, $3 owner, $4 max_holders for the tries; the wait's
        // order is that of kWait's parameter list.
        const char *values[6] = {name.data(), ttl.bytes, owner.data(), max_holders.bytes};
        int lengths[6] = {static_cast<int>(name.size()), 16, static_cast<int>(owner.size()), 4};
        const Statement *st = &kTryExclusive;
        if (is_try && options.mode == Mode::semaphore) {
            st = &kTrySemaphore;
        } else if (is_try) {
            st = options.mode == Mode::shared ? &kTryShared : &kTryExclusive;
        } else {
            st = &kWait;
            values[2] = mode.data();
            lengths[2] = static_cast<int>(mode.size());
            values[4] = owner.data();
            lengths[4] = static_cast<int>(owner.size());
            values[5] = wait_us ? wait.bytes : nullptr;  // NULL: no limit
            lengths[5] = 16;
        }
        PGconn *conn = handle.connection();
        const auto sent = system_clock::now();
        PgResult r;
        try {
            r = exec_statement(conn, pooling_, *st, values, lengths);
        } catch (const PgFailure &f) {
            // Not retried: the server may have granted a lease whose reply was lost.
            if (f.lost)
                handle.discard();
            throw_mapped(f, db_);
        }
        if (PQgetisnull(r.get(), 0, 0))
            return std::nullopt;
        Lease lease;
        lease.name.assign(name);
        lease.mode = options.mode;
        lease.max_holders = options.max_holders;
        lease.token = get_int8(r.get(), 0, 0);
        // A try: granted after `sent`. A wait: the server's clock right after
        // the grant (later than the grant by at most the wake-up latency).
        const auto start = is_try ? sent : from_epoch_us(get_int8(r.get(), 0, 1));
        lease.expires_at = start + options.ttl;
        return lease;
    }

    // Run fn(connection) on a pooled connection, mapping failures to lockext
    // errors. An idempotent call that finds a reused connection broken is
    // retried once on a new one: most likely it died while idle (a killed
    // backend, idle_session_timeout) and the server is fine.
    template <class F>
    PgResult call(bool idempotent, F &&fn) {
        for (int attempt = 0;; ++attempt) {
            ConnectionPool::Handle handle = pool_.checkout(ConnectionPool::Use::quick);
            try {
                return fn(handle.connection());
            } catch (const PgFailure &f) {
                if (!f.lost)
                    throw_mapped(f, db_);
                handle.discard();
                // Past the deadline a retry could only time out again.
                if (!(idempotent && handle.reused() && attempt == 0 && !f.timed_out))
                    throw_mapped(f, db_);
            }
        }
    }

    ConnectionPool pool_;
    const Pooling pooling_;
    std::string db_;
};

}  // namespace

// Check the pool size and the URL (without connecting), then connect once and
// verify the extension, so connect() fails early.
std::shared_ptr<Backend> make_postgres_backend(std::string_view url,
                                               const ConnectOptions &options) {
    if (options.pool_size < 1)
        throw InvalidArgument("pool_size must be at least 1");
    std::string user_url(url);
    const Pooling pooling = take_pooling(user_url);
    std::string conninfo = pool_conninfo(user_url, pooling);
    check_conninfo(conninfo);
    auto backend =
        std::make_shared<PostgresBackend>(std::move(conninfo), options.pool_size, pooling);
    backend->verify();
    return backend;
}

}  // namespace lockext::detail
