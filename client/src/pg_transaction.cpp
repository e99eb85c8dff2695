// The non-template parts of include/lockext/pg.hpp: with_transaction's
// acquire, and libpq_url.
#include <chrono>
#include <optional>
#include <string>

#include "connection_pool.hpp"
#include "lockext/pg.hpp"

namespace lockext::pg::detail {

// lockext.acquire in transaction scope with no TTL; NotObtained when NULL.
std::int64_t acquire_in_transaction(pqxx::transaction_base &tx, std::string_view name,
                                    const LockOptions &options) {
    // NULL wait: no limit. The statement is not prepared: the connection is the
    // caller's, and a statement name of ours could collide with theirs.
    std::optional<std::string> wait;
    if (options.wait < lockext::detail::kForeverish)
        wait = std::to_string(std::chrono::microseconds(options.wait).count()) + " us";
    const std::string &owner =
        options.owner.empty() ? lockext::detail::default_owner() : options.owner;
    const std::string key(name);
    pqxx::result r;
    try {
        r = tx.exec_params(
            "SELECT lockext.acquire($1, NULL, $2::interval, $3, "
            "'transaction', $4::int, $5)",
            key, wait, std::string(to_string(options.mode)), options.max_holders, owner);
    } catch (const pqxx::failure &e) {
        pqxx::connection_base &conn = tx.conn();
        lockext::detail::throw_mapped(e, lockext::detail::connection_lost(e, conn), conn.dbname());
    }
    if (r[0][0].is_null())
        throw NotObtained("lock '" + key + "' was not obtained within " +
                          std::to_string(options.wait.count()) + " ms");
    return r[0][0].as<std::int64_t>();
}

}  // namespace lockext::pg::detail

namespace lockext::pg {

// The URL with lockext_pooling taken out.
std::string libpq_url(std::string_view url) {
    std::string out(url);
    (void)lockext::detail::take_pooling(out);
    return out;
}

}  // namespace lockext::pg
