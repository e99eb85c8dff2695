// A small pool of PostgreSQL connections for the postgres backend.
//
// The pool holds libpq connections (PGconn) directly, not libpqxx ones: the
// backend's three statements are its hot path, and libpq lets them travel
// with binary parameters and results (no interval text for the server to
// parse, no number formatting or parsing on either side) and without
// libpqxx's per-call transaction object, result copy and encoding lookups.
// A PGconn is not thread-safe, so every call checks one out, uses it
// alone and hands it back. There are two kinds of checkout:
//   - Use::quick (tries, renewals, releases, views): at most `size` at once;
//     more block on a condition variable (never polling) until one is given
//     back. They never wait behind a lock wait.
//   - Use::wait (an acquire that waits in the server): never queues in the
//     client. It takes an idle connection or opens a new one, so a waiting
//     acquire joins the server's FIFO queue the moment it is asked for.
//     Queueing it here instead would hand its place to other clients' later
//     waiters, and could let this client's own waiters reach the server out
//     of order. The price is one server connection per concurrent wait, as
//     with waits on pg_advisory_lock.
// Idle connections are reused, most recently used first. Surplus ones (more
// than `size` idle) are closed, oldest first, once no wait is in flight: a
// burst of waits leaves nothing behind, and sustained contention does not
// reconnect on every wait.
// A connection that turns out broken is discarded instead of returned; a
// later checkout opens a new one (that is the reconnect).
//
// Locking protocol: mu_ guards idle_, quick_busy_ and waits_. Connecting,
// closing, health checks and statements run outside mu_, on a connection
// that only the thread that checked it out can reach. quick_cv_ is signalled
// (notify_one) whenever a quick checkout ends, the only event that can let a
// blocked quick checkout go.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <libpq-fe.h>
#include <pqxx/pqxx>

#include "thread_annotations.hpp"

namespace lockext::detail {

struct PooledSlot;

class ConnectionPool {
  public:
    // What a connection is checked out for (see the rules above).
    enum class Use { quick, wait };

    // Prepares the statements a backend needs on each new connection; throws
    // PgFailure when the server refuses.
    using Setup = std::function<void(PGconn *)>;

    // A checked-out connection; returns it to the pool when destroyed.
    class Handle {
      public:
        Handle(Handle &&other) noexcept;
        Handle &operator=(Handle &&) = delete;
        Handle(const Handle &) = delete;
        Handle &operator=(const Handle &) = delete;
        ~Handle();

        // The connection, for this thread alone until the handle is gone.
        PGconn *connection();
        // Drop the connection instead of returning it (it is broken).
        void discard() noexcept;
        // Whether the connection served earlier checkouts: such a one may have
        // died while idle, so a failure on it does not mean the server is down.
        bool reused() const noexcept {
            return reused_;
        }

      private:
        friend class ConnectionPool;
        Handle(ConnectionPool *pool, std::unique_ptr<PooledSlot> slot, Use use, bool reused);

        ConnectionPool *pool_;
        std::unique_ptr<PooledSlot> slot_;
        Use use_;
        bool reused_;
    };

    // A pool keeping up to size idle connections and running up to size quick
    // calls at once (size >= 1). Connects nothing yet: checkout() opens them.
    ConnectionPool(std::string conninfo, std::size_t size, Setup setup);
    ~ConnectionPool();
    ConnectionPool(const ConnectionPool &) = delete;
    ConnectionPool &operator=(const ConnectionPool &) = delete;

    // A connection for use (blocking while size quick calls are running, for
    // Use::quick). Throws BackendUnavailable (or InvalidArgument for a
    // malformed URL) when a new connection cannot be opened.
    Handle checkout(Use use) EXCLUDES(mu_);

  private:
    // Open a connection and run setup on it; throws the mapped error.
    std::unique_ptr<PooledSlot> open_connection();
    // End a checkout: keep the connection (unless slot is null, i.e.
    // discarded), close the surplus, wake a blocked quick checkout.
    void give_back(std::unique_ptr<PooledSlot> slot, Use use) noexcept EXCLUDES(mu_);

    const std::string conninfo_;
    const std::size_t size_;
    const Setup setup_;

    Mutex mu_;
    std::condition_variable quick_cv_;
    // Connected and free, most recently used at the back. A vector, not a
    // deque: checkouts and returns only touch the back, and a deque allocates
    // or frees a block whenever its one element crosses a block boundary.
    std::vector<std::unique_ptr<PooledSlot>> idle_ GUARDED_BY(mu_);
    // Quick checkouts running (or connecting); at most size_.
    std::size_t quick_busy_ GUARDED_BY(mu_) = 0;
    // Wait checkouts running (or connecting).
    std::size_t waits_ GUARDED_BY(mu_) = 0;
};

// How the server at the URL hands out its connections: directly (none), or
// through a pooler in transaction mode (PgBouncer's pool_mode = transaction),
// where consecutive statements of one client connection may run on
// different server connections.
enum class Pooling { none, transaction };

// Remove the client's own `lockext_pooling` query parameter from url (libpq
// would reject it) and return its value: `transaction`, or `none` (also when
// absent). Throws InvalidArgument for any other value.
Pooling take_pooling(std::string &url);

// The conninfo the pool connects with: the user's libpq URI plus defaults for
// what the user did not set (connect_timeout, keepalives, application name,
// and, unless the URL sets `options` or goes through a transaction pooler,
// which refuses that startup parameter, statement_timeout = 0 so lock waits
// are bounded by LockOptions::wait alone).
std::string pool_conninfo(std::string_view url, Pooling pooling);

// Throw InvalidArgument, naming what is wrong, when libpq cannot parse
// conninfo (bad URI syntax, an unknown option); nothing is contacted. Values
// libpq only checks when connecting (a port or timeout that is not a number)
// still fail in checkout(), before any network traffic, as InvalidArgument.
void check_conninfo(const std::string &conninfo);

// Throw the lockext error for a failed connection attempt to conninfo:
// InvalidArgument when libpq rejected the URI itself, BackendUnavailable
// otherwise. The URI (which may hold a password) is cut out of the message.
[[noreturn]] void throw_connect_error(const std::string &libpq_message,
                                      const std::string &conninfo);

// A libpq/server message without its "ERROR:  " prefix and trailing newline.
std::string clean_message(std::string_view message);

// A failed libpq call, before it is mapped to a lockext error: the SQLSTATE
// (empty when there is none), the message, and whether the connection is gone.
struct PgFailure {
    std::string sqlstate;
    std::string message;
    bool lost = false;
    bool timed_out = false;  // no reply by the call's deadline (the connection is unusable)
};

// Frees a PGresult.
struct PgResultFree {
    // Release the result (PQclear accepts nullptr).
    void operator()(PGresult *r) const noexcept {
        PQclear(r);
    }
};
using PgResult = std::unique_ptr<PGresult, PgResultFree>;

// The failure a libpq call left: its result's SQLSTATE and message (or the
// connection's, when there is no result), and whether the connection broke.
PgFailure pg_failure(PGconn *conn, const PGresult *result);

// Take a libpq result, or throw the PgFailure it (or its absence) describes
// when its status is not `expected`.
PgResult pg_checked(PGconn *conn, PGresult *result, ExecStatusType expected);

// Throw the lockext error for a failed libpq call (the SQLSTATE table at the
// top of postgres_backend.cpp); db names the database in "not installed" messages.
[[noreturn]] void throw_mapped(const PgFailure &failure, const std::string &db);

// ---- Shared by postgres_backend.cpp and pg_transaction.cpp ------------------

// Waits this long or longer are sent as wait_forever (NULL): they would
// overflow the microsecond arithmetic and outlast any process anyway.
inline constexpr std::chrono::milliseconds kForeverish = std::chrono::hours(24 * 365 * 100);

// The owner shown in holder views when the caller gave none: "<hostname>:<pid>".
const std::string &default_owner();

// The SQLSTATE of a libpqxx failure, or empty when it has none.
std::string sqlstate_of(const pqxx::failure &e);

// Whether a libpqxx failure means the connection is gone (so it must be dropped).
bool connection_lost(const pqxx::failure &e, pqxx::connection_base &conn);

// Throw the lockext error for a failed statement (the SQLSTATE table at the
// top of postgres_backend.cpp); lost: connection_lost() said so; db names the
// database in "not installed" messages.
[[noreturn]] void throw_mapped(const pqxx::failure &e, bool lost, const std::string &db);

}  // namespace lockext::detail
