// A lockext lock held for exactly one database transaction.
//
//   pqxx::connection conn("postgresql:///app");
//   lockext::pg::with_transaction(conn, "invoice:42", [&](pqxx::work &tx) {
//       tx.exec("UPDATE invoices SET state = 'sent' WHERE id = 42");
//   }, {.wait = 5s});
//
// The lock is taken inside the transaction in transaction scope, so the
// server releases it at COMMIT or ROLLBACK: it cannot outlive the work it
// protects, and no release call is needed on any path. This is the
// transactional pattern the LockManager's leases cannot give.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include <pqxx/pqxx>

#include "lockext/lockext.hpp"

namespace lockext::pg {

namespace detail {
// Take name in transaction scope inside tx (lockext.acquire with ttl NULL);
// returns the fencing token. Throws NotObtained when not obtained within
// options.wait, InvalidArgument for bad options (and for a name this
// connection already holds in session or transaction scope: waiting on
// ourselves would never end), BackendUnavailable when the connection fails.
std::int64_t acquire_in_transaction(pqxx::transaction_base &tx, std::string_view name,
                                    const LockOptions &options);
}  // namespace detail

// url without the client's own query parameters (lockext_pooling), for
// libpq or libpqxx connections of your own made from the same URL as
// connect()'s: libpq rejects parameters it does not know. Throws
// InvalidArgument for a bad lockext_pooling value.
std::string libpq_url(std::string_view url);

// Open a pqxx::work on conn, take lock_name in it, run fn, and commit.
//
// fn is called as fn(work) or, if it accepts one, fn(work, token) with the
// fencing token. Its result is returned after the commit. On any exception
// from fn the transaction is rolled back and the exception rethrown
// unchanged; a failing commit throws libpqxx's exception. Either way the lock
// ends with the transaction.
//
// Uses options.wait, mode, max_holders and owner. options.ttl and auto_renew
// are ignored: the lock has no TTL and lives exactly as long as the
// transaction (a transaction-scope lock without TTL dies with its backend and
// is not waited out after a server restart; keep work outside the database
// out of fn, or use LockManager leases for it).
//
// Throws NotObtained when the lock is held elsewhere for all of options.wait.
template <class F>
auto with_transaction(pqxx::connection_base &conn, std::string_view lock_name, F &&fn,
                      const LockOptions &options = {}) {
    pqxx::work tx(conn);
    try {
        const std::int64_t token = detail::acquire_in_transaction(tx, lock_name, options);
        if constexpr (std::is_invocable_v<F, pqxx::work &, std::int64_t>) {
            using R = std::invoke_result_t<F, pqxx::work &, std::int64_t>;
            if constexpr (std::is_void_v<R>) {
                std::forward<F>(fn)(tx, token);
                tx.commit();
            } else {
                R result = std::forward<F>(fn)(tx, token);
                tx.commit();
                return result;
            }
        } else {
            using R = std::invoke_result_t<F, pqxx::work &>;
            if constexpr (std::is_void_v<R>) {
                std::forward<F>(fn)(tx);
                tx.commit();
            } else {
                R result = std::forward<F>(fn)(tx);
                tx.commit();
                return result;
            }
        }
    } catch (...) {
        // abort() reports its own failure only through the connection, which
        // is broken then anyway; the caller needs the original exception.
        try {
            tx.abort();
        } catch (...) {
        }
        throw;
    }
}

}  // namespace lockext::pg
