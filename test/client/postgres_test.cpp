// PostgreSQL-specific tests of the client: waits happen in the server, tokens
// match lockext.holders, leases survive killed connections, outages surface
// as BackendUnavailable (and the watchdog tells lost leases from renewed
// ones), connect errors, with_transaction, and the connection pool.
//
// They need a real server with the extension, reached as a superuser (they
// create a role, a database and a table, and terminate backends):
//   LOCKEXT_TEST_URL="postgresql:///postgres?host=$PGHOST&port=$PGPORT&user=postgres"
// Without a postgres:// URL the suite is skipped, and Boost.Test says why.
// The not-preloaded case needs a second server, with CREATE EXTENSION lockext
// run but lockext not in shared_preload_libraries:
//   LOCKEXT_TEST_NOPRELOAD_URL="postgresql:///postgres?host=...&port=...&user=postgres"
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <pqxx/pqxx>

#include "lockext/lockext.hpp"
#include "lockext/pg.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using lockext::test::Clock;

// The URL under test: $LOCKEXT_TEST_URL.
std::string test_url() {
    return lockext::test::url();
}

// A lock name no other test, thread or earlier run uses.
std::string fresh_name(std::string_view tag) {
    return lockext::test::unique_name("pg-" + std::string(tag));
}

// Whether url names a PostgreSQL server.
bool is_postgres_url(std::string_view url) {
    return url.starts_with("postgres://") || url.starts_with("postgresql://");
}

// Enables the suite only against PostgreSQL, and says why it is skipped otherwise.
struct PostgresUrlGiven {
    boost::test_tools::assertion_result operator()(boost::unit_test::test_unit_id) const {
        boost::test_tools::assertion_result ok(is_postgres_url(test_url()));
        if (!ok)
            ok.message() << "LOCKEXT_TEST_URL is not a postgres:// URL; set it to a superuser "
                            "URL of a server with the lockext extension to run these tests";
        return ok;
    }
};

// url with extra libpq query parameters; a later parameter overrides an earlier one.
std::string with_params(const std::string &url, std::string_view params) {
    std::string out = url;
    if (out.find('?') == std::string::npos)
        out += '?';
    else if (out.back() != '?' && out.back() != '&')
        out += '&';
    out += params;
    return out;
}

// Microseconds since the epoch of a client time point (to compare with the server's).
std::int64_t epoch_us(std::chrono::system_clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

// Options with a ttl, a wait and a mode (designated initializers need every earlier field).
lockext::LockOptions opts(std::chrono::milliseconds ttl, std::chrono::milliseconds wait = 0ms,
                          lockext::Mode mode = lockext::Mode::exclusive, int max_holders = 1) {
    lockext::LockOptions o;
    o.ttl = ttl;
    o.wait = wait;
    o.mode = mode;
    o.max_holders = max_holders;
    return o;
}

// Counts a lock's on_lost calls; `first` is ready at the first.
struct LossWatch {
    std::promise<void> first;
    std::atomic<int> calls{0};

    // Watch lock (which must not outlive this).
    explicit LossWatch(lockext::Lock &lock) {
        lock.on_lost([this] {
            if (calls.fetch_add(1) == 0)
                first.set_value();
        });
    }
};

// The role whose logins the outage tests switch off.
constexpr const char *kRole = "lockext_client_test";
constexpr const char *kRolePassword = "lockext_client_test_pw";

// Per test: a superuser connection that looks at the server from outside the client.
struct PgFixture {
    PgFixture() : admin(std::make_unique<pqxx::connection>(test_url())) {}

    // Run query on the superuser connection.
    pqxx::result sql(const std::string &query) {
        pqxx::nontransaction tx(*admin);
        return tx.exec(query);
    }

    // A quoted SQL literal.
    std::string lit(const std::string &text) {
        return admin->quote(text);
    }

    // Number of rows of lockext.holders (or waiters) for name.
    int count_in(const char *view, const std::string &name) {
        return sql(std::string("SELECT count(*) FROM lockext.") + view +
                   " WHERE name = " + lit(name))[0][0]
            .as<int>();
    }

    // Whether pred holds within timeout (the test watching the server from
    // outside; the client itself never polls).
    template <class Pred>
    bool eventually(Pred pred, std::chrono::milliseconds timeout = 5s) {
        return lockext::test::eventually(pred, timeout);
    }

    // The URL of kRole (created here, able to log in), with its own application_name.
    std::string role_url() {
        sql(std::string("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '") +
            kRole + "') THEN CREATE ROLE " + kRole + "; END IF; END $$");
        sql(std::string("ALTER ROLE ") + kRole + " LOGIN PASSWORD '" + kRolePassword + "'");
        return with_params(test_url(), std::string("user=") + kRole + "&password=" + kRolePassword +
                                           "&application_name=" + kRole);
    }

    // Number of sessions kRole has open.
    int role_sessions() {
        return sql(std::string("SELECT count(*) FROM pg_stat_activity WHERE usename = '") + kRole +
                   "'")[0][0]
            .as<int>();
    }

    std::unique_ptr<pqxx::connection> admin;
};

// An outage of kRole for its lifetime: no new logins, its sessions terminated.
class Outage {
  public:
    // Start the outage.
    explicit Outage(PgFixture &fx) : fx_(fx) {
        fx_.sql(std::string("ALTER ROLE ") + kRole + " NOLOGIN");
        fx_.sql(std::string("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE usename = '") +
                kRole + "'");
        BOOST_REQUIRE(fx_.eventually([&] { return fx_.role_sessions() == 0; }));
    }
    // End it, so a failing test does not leave the role locked out.
    ~Outage() {
        end();
    }
    // End it early.
    void end() {
        if (!ended_)
            fx_.sql(std::string("ALTER ROLE ") + kRole + " LOGIN");
        ended_ = true;
    }

  private:
    PgFixture &fx_;
    bool ended_ = false;
};

}  // namespace

BOOST_FIXTURE_TEST_SUITE(postgres, PgFixture, *boost::unit_test::precondition(PostgresUrlGiven{}))

// A waiting acquire sits in the server's queue (lockext.waiters shows it),
// and the client does not poll: no extra tries are counted while it waits.
BOOST_AUTO_TEST_CASE(wait_happens_in_the_server) {
    auto manager = lockext::connect(with_params(test_url(), "application_name=lockext_wait_test"));
    const std::string name = fresh_name("server-wait");
    lockext::Lock holder = manager->acquire(name, opts(20s));

    const pqxx::row before = sql("SELECT timed_out, contended FROM lockext.stats")[0];
    auto waiter =
        std::async(std::launch::async, [&] { return manager->try_acquire(name, opts(20s, 10s)); });
    BOOST_REQUIRE(eventually([&] { return count_in("waiters", name) == 1; }));
    // The waiting session is one of the client's pooled connections.
    const pqxx::result who =
        sql("SELECT a.application_name FROM lockext.waiters w JOIN pg_stat_activity a "
            "ON a.pid = w.pid WHERE w.name = " +
            lit(name));
    BOOST_REQUIRE_EQUAL(who.size(), 1u);
    BOOST_CHECK_EQUAL(who[0][0].as<std::string>(), "lockext_wait_test");
    std::this_thread::sleep_for(300ms);  // a polling client would try several times here
    const pqxx::row during = sql("SELECT timed_out, contended FROM lockext.stats")[0];
    BOOST_CHECK_EQUAL(during[0].as<std::int64_t>(), before[0].as<std::int64_t>());
    BOOST_CHECK_EQUAL(during[1].as<std::int64_t>(), before[1].as<std::int64_t>() + 1);
    BOOST_CHECK(waiter.wait_for(0s) == std::future_status::timeout);

    BOOST_CHECK(holder.release());
    std::optional<lockext::Lock> got = waiter.get();
    BOOST_REQUIRE(got.has_value());
    BOOST_CHECK_GT(got->token(), holder.token());
    const pqxx::row after = sql("SELECT timed_out FROM lockext.stats")[0];
    BOOST_CHECK_EQUAL(after[0].as<std::int64_t>(), before[0].as<std::int64_t>());
    BOOST_CHECK(got->release());
}

// Tokens, modes, owners, expiries and waiter counts from the client agree
// with lockext.holders; expiries agree to the microsecond.
BOOST_AUTO_TEST_CASE(tokens_and_expiries_match_the_holders_view) {
    auto manager = lockext::connect(test_url());
    const std::string ex_name = fresh_name("holders-ex");
    const std::string sh_name = fresh_name("holders-sh");
    const std::string sem_name = fresh_name("holders-sem");
    std::vector<lockext::Lock> locks;
    locks.push_back(manager->acquire(ex_name, opts(20s)));
    locks.push_back(manager->acquire(sh_name, opts(20s, 0ms, lockext::Mode::shared)));
    locks.push_back(manager->acquire(sh_name, opts(20s, 0ms, lockext::Mode::shared)));
    locks.push_back(manager->acquire(sem_name, opts(20s, 0ms, lockext::Mode::semaphore, 3)));
    auto waiter = std::async(std::launch::async,
                             [&] { return manager->try_acquire(ex_name, opts(20s, 10s)); });
    BOOST_REQUIRE(eventually([&] { return count_in("waiters", ex_name) == 1; }));

    // The server's clock is ours when it runs here (unix socket or loopback);
    // otherwise allow a second of skew.
    const bool local = sql("SELECT coalesce(host(inet_server_addr()) IN ('127.0.0.1', '::1'), "
                           "true)")[0][0]
                           .as<bool>();
    const std::int64_t skew_us = local ? 0 : 1000000;
    const std::vector<lockext::HolderInfo> client_view = manager->holders();
    for (const lockext::Lock &lock : locks) {
        const pqxx::result server =
            sql("SELECT name, mode, (extract(epoch FROM expires_at) * 1000000)::bigint "
                "FROM lockext.holders WHERE token = " +
                std::to_string(lock.token()));
        BOOST_REQUIRE_EQUAL(server.size(), 1u);
        BOOST_CHECK_EQUAL(server[0][0].as<std::string>(), lock.name());
        BOOST_CHECK_EQUAL(server[0][1].as<std::string>(), lockext::to_string(lock.mode()));
        const std::int64_t server_expiry = server[0][2].as<std::int64_t>();
        // A try's expiry is the client's send time + ttl: at most the round
        // trip before the server's, never after (on one machine: one clock).
        const std::int64_t early = server_expiry - epoch_us(lock.expires_at());
        BOOST_CHECK_GE(early, -skew_us);
        BOOST_CHECK_LT(early, 50000 + skew_us);

        int found = 0;
        for (const lockext::HolderInfo &h : client_view) {
            if (h.token != lock.token())
                continue;
            ++found;
            BOOST_CHECK_EQUAL(h.name, lock.name());
            BOOST_CHECK(h.mode == lock.mode());
            BOOST_CHECK(!h.owner.empty());
            BOOST_CHECK_EQUAL(epoch_us(h.expires_at), server_expiry);
            BOOST_CHECK(h.acquired_at <= h.expires_at);
            BOOST_CHECK_EQUAL(h.waiters, lock.name() == ex_name ? 1 : 0);
        }
        BOOST_CHECK_EQUAL(found, 1);
    }

    BOOST_CHECK(locks[0].release());
    std::optional<lockext::Lock> next = waiter.get();
    BOOST_REQUIRE(next.has_value());
    for (const lockext::Lock &lock : locks)
        BOOST_CHECK_GT(next->token(), lock.token());
}

// Names and owners travel as bytes and TTLs as exact microseconds (the
// backend sends binary parameters): multibyte UTF-8 up to the 128-byte limit
// round-trips unchanged, and the server's expiry is its grant time plus the
// TTL to the microsecond, for a try, a wait and a renewal.
BOOST_AUTO_TEST_CASE(names_owners_and_ttls_round_trip_exactly) {
    auto manager = lockext::connect(test_url());
    // Multibyte characters, padded with "é" (2 bytes) to exactly 128 bytes.
    std::string name = "ключ-ü-🔒-" + fresh_name("x");
    while (name.size() + 2 <= 128)
        name += "é";
    if (name.size() < 128)
        name += "x";
    BOOST_REQUIRE_EQUAL(name.size(), 128u);
    const std::string owner = "wörker-🔒-1";
    lockext::LockOptions options = opts(std::chrono::milliseconds(12345));
    options.owner = owner;
    lockext::Lock lock = manager->acquire(name, options);
    const pqxx::result row =
        sql("SELECT name, owner, (extract(epoch FROM expires_at - acquired_at) * 1000000)::bigint "
            "FROM lockext.holders WHERE token = " +
            std::to_string(lock.token()));
    BOOST_REQUIRE_EQUAL(row.size(), 1u);
    BOOST_CHECK_EQUAL(row[0][0].as<std::string>(), name);
    BOOST_CHECK_EQUAL(row[0][1].as<std::string>(), owner);
    BOOST_CHECK_EQUAL(row[0][2].as<std::int64_t>(), 12345000);
    bool listed = false;
    for (const lockext::HolderInfo &h : manager->holders())
        listed = listed || (h.token == lock.token() && h.name == name && h.owner == owner);
    BOOST_CHECK(listed);

    // A renewal for 7.001 s: the new expiry is the server's clock + 7001 ms.
    const auto before =
        sql("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint")[0][0]
            .as<std::int64_t>();
    lock.renew(std::chrono::milliseconds(7001));
    const std::int64_t expiry = epoch_us(lock.expires_at());
    BOOST_CHECK_GE(expiry, before + 7001000);
    BOOST_CHECK_LT(expiry, before + 7001000 + 2000000);
    BOOST_CHECK(lock.release());

    // A wait (a server-side statement with the wait as a binary interval)
    // that times out after 250 ms, behind a holder of the same name.
    lockext::Lock holder = manager->acquire(name, opts(std::chrono::seconds(20)));
    const auto started = std::chrono::steady_clock::now();
    BOOST_CHECK(!manager->try_acquire(name, opts(std::chrono::seconds(20), 250ms)).has_value());
    const auto waited = std::chrono::steady_clock::now() - started;
    BOOST_CHECK(waited >= 250ms);
    BOOST_CHECK(waited < 5s);
    BOOST_CHECK(holder.release());
}

// A name or owner that is not valid UTF-8 (the test database's encoding) is
// bad input, refused by the server: InvalidArgument, and nothing is held.
BOOST_AUTO_TEST_CASE(names_not_in_the_database_encoding_are_invalid_argument) {
    auto manager = lockext::connect(test_url());
    const std::string name = fresh_name("bad-utf8") + "\xff\xfe";
    BOOST_CHECK_THROW(manager->try_acquire(name, opts(5s)), lockext::InvalidArgument);
    lockext::LockOptions bad_owner = opts(5s);
    bad_owner.owner = "owner-\xc3";
    BOOST_CHECK_THROW(manager->try_acquire(fresh_name("bad-owner"), bad_owner),
                      lockext::InvalidArgument);
    BOOST_CHECK_EQUAL(sql("SELECT count(*) FROM lockext.holders WHERE name LIKE "
                          "'lockext-test:pg-bad-%'")[0][0]
                          .as<int>(),
                      0);
}

// A lease belongs to no connection: killing every connection of the client
// leaves it held, and it renews (same token) once the pool reconnects.
BOOST_AUTO_TEST_CASE(lease_survives_killed_connections) {
    auto manager = lockext::connect(with_params(test_url(), "application_name=lockext_kill_test"));
    const std::string name = fresh_name("kill");
    lockext::LockOptions o = opts(10s);
    o.auto_renew = false;
    lockext::Lock lock = manager->acquire(name, o);
    const std::int64_t token = lock.token();
    const auto expiry_before = lock.expires_at();

    const int killed = sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                           "WHERE application_name = 'lockext_kill_test'")[0][0]
                           .as<int>();
    BOOST_CHECK_GE(killed, 1);
    BOOST_REQUIRE(eventually([&] {
        return sql("SELECT count(*) FROM pg_stat_activity "
                   "WHERE application_name = 'lockext_kill_test'")[0][0]
                   .as<int>() == 0;
    }));
    BOOST_CHECK_EQUAL(
        sql("SELECT token FROM lockext.holders WHERE name = " + lit(name))[0][0].as<std::int64_t>(),
        token);

    const auto renewed = lock.renew();
    BOOST_CHECK_EQUAL(lock.token(), token);
    BOOST_CHECK(renewed >= expiry_before);
    const pqxx::result server =
        sql("SELECT token, (extract(epoch FROM expires_at) * 1000000)::bigint "
            "FROM lockext.holders WHERE name = " +
            lit(name));
    BOOST_REQUIRE_EQUAL(server.size(), 1u);
    BOOST_CHECK_EQUAL(server[0][0].as<std::int64_t>(), token);
    BOOST_CHECK_EQUAL(server[0][1].as<std::int64_t>(), epoch_us(renewed));
    BOOST_CHECK(lock.release());
    BOOST_CHECK_EQUAL(count_in("holders", name), 0);
}

// A release whose connection breaks during the call is sent again on a new
// one; if that finds the lease gone, the first may have released it before
// the break, so release() cannot say whether it was still held: it throws
// BackendUnavailable rather than report "not held" (which lockctl turns into
// "the lease had run out"). Here the server process is stopped with the
// release in its socket, the lease is force-released, and the process is
// terminated as it resumes (before it reads the release).
BOOST_AUTO_TEST_CASE(a_retried_release_that_finds_nothing_is_unknown) {
    auto manager = lockext::connect(with_params(test_url(), "application_name=lockext_relretry"));
    const std::string name = fresh_name("relretry");
    lockext::LockOptions o = opts(10s);
    o.auto_renew = false;
    lockext::Lock lock = manager->acquire(name, o);
    const pqxx::result pids =
        sql("SELECT pid FROM pg_stat_activity WHERE application_name = 'lockext_relretry'");
    BOOST_REQUIRE_EQUAL(pids.size(), 1u);
    const int pid = pids[0][0].as<int>();
    BOOST_REQUIRE(::kill(pid, SIGSTOP) == 0);
    auto release = std::async(std::launch::async, [&] { return lock.release(); });
    std::this_thread::sleep_for(300ms);  // the release is in the stopped process's socket
    sql("SELECT lockext.force_release(" + lit(name) + ")");
    sql("SELECT pg_terminate_backend(" + std::to_string(pid) + ")");
    BOOST_REQUIRE(::kill(pid, SIGCONT) == 0);
    BOOST_CHECK_EXCEPTION(release.get(), lockext::BackendUnavailable,
                          [](const lockext::BackendUnavailable &e) {
                              return std::string(e.what()).find("unknown") != std::string::npos;
                          });
    BOOST_CHECK(!lock.release());
    // With the connection intact, "not held" is an answer.
    lockext::Lock other = manager->acquire(name, o);
    sql("SELECT lockext.force_release(" + lit(name) + ")");
    BOOST_CHECK(!other.release());
}

// While the server refuses the client, calls fail with BackendUnavailable
// (a try at once, a wait when its wait runs out); afterwards all is well.
BOOST_AUTO_TEST_CASE(outage_surfaces_as_backend_unavailable) {
    const std::string url = role_url();
    auto manager = lockext::connect(url);
    const std::string name = fresh_name("outage");
    BOOST_REQUIRE(manager->try_acquire(name, opts(5s)).has_value());  // connected, then released
    {
        Outage outage(*this);
        BOOST_CHECK_THROW(manager->try_acquire(name, opts(5s)), lockext::BackendUnavailable);
        const auto started = Clock::now();
        BOOST_CHECK_THROW(manager->try_acquire(name, opts(5s, 300ms)), lockext::BackendUnavailable);
        BOOST_CHECK(Clock::now() - started < 2s);
        BOOST_CHECK_THROW(lockext::connect(url), lockext::BackendUnavailable);
    }
    std::optional<lockext::Lock> lock = manager->try_acquire(name, opts(5s));
    BOOST_REQUIRE(lock.has_value());
    BOOST_CHECK(lock->release());
}

// A backend outage longer than the TTL: the watchdog cannot renew, reports
// the lease lost (on_lost fires, is_held turns false), and the server let
// it expire.
BOOST_AUTO_TEST_CASE(outage_longer_than_ttl_loses_the_lease) {
    auto manager = lockext::connect(role_url());
    const std::string name = fresh_name("outage-lost");
    lockext::Lock lock = manager->acquire(name, opts(1500ms));
    LossWatch watch(lock);
    const auto started = Clock::now();
    {
        Outage outage(*this);
        BOOST_CHECK(watch.first.get_future().wait_until(started + 3s) == std::future_status::ready);
        BOOST_CHECK(!lock.is_held());
        BOOST_CHECK(lock.lost_token().stop_requested());
        std::this_thread::sleep_until(started + 3s);
    }
    BOOST_CHECK_EQUAL(watch.calls.load(), 1);
    BOOST_CHECK_EQUAL(count_in("holders", name), 0);
    BOOST_CHECK_THROW(lock.renew(), lockext::LockLost);
    // The name is free again for everyone.
    std::optional<lockext::Lock> again = manager->try_acquire(name, opts(5s));
    BOOST_REQUIRE(again.has_value());
    BOOST_CHECK_GT(again->token(), lock.token());
}

// An outage shorter than the TTL: a renewal fails during it, the watchdog
// retries, and the lease is renewed after recovery, never reported lost.
BOOST_AUTO_TEST_CASE(outage_shorter_than_ttl_keeps_the_lease) {
    auto manager = lockext::connect(role_url());
    const std::string name = fresh_name("outage-kept");
    lockext::Lock lock = manager->acquire(name, opts(5s));
    std::atomic<bool> lost{false};
    lock.on_lost([&] { lost = true; });
    const auto initial = lock.expires_at();
    std::this_thread::sleep_for(1s);
    {
        Outage outage(*this);  // spans the first renewal (due at ttl/3)
        std::this_thread::sleep_for(1s);
        BOOST_CHECK(lock.is_held());
    }
    BOOST_CHECK(eventually([&] { return lock.expires_at() > initial; }, 4s));
    BOOST_CHECK(lock.is_held());
    BOOST_CHECK(!lost.load());
    const pqxx::result server =
        sql("SELECT token, (extract(epoch FROM expires_at) * 1000000)::bigint "
            "FROM lockext.holders WHERE name = " +
            lit(name));
    BOOST_REQUIRE_EQUAL(server.size(), 1u);
    BOOST_CHECK_EQUAL(server[0][0].as<std::int64_t>(), lock.token());
    BOOST_CHECK_GT(server[0][1].as<std::int64_t>(), epoch_us(initial));
    BOOST_CHECK(lock.release());
}

// A renewal that gets no reply (the server processes serving the client
// are stopped, as a stalled server or a network that drops packets would
// leave them) is cut off at the lease's local deadline: the watchdog reports
// the lease lost in time instead of waiting for TCP to give up.
BOOST_AUTO_TEST_CASE(a_renewal_without_reply_is_reported_lost_at_the_deadline) {
    auto manager = lockext::connect(role_url());
    const std::string name = fresh_name("stalled");
    lockext::Lock lock = manager->acquire(name, opts(1500ms));
    LossWatch watch(lock);
    std::vector<int> stopped;
    // Let the stopped server processes go on, whatever the checks say.
    struct Resume {
        std::vector<int> &pids;
        // Send SIGCONT to every stopped process.
        ~Resume() {
            for (int pid : pids)
                (void)::kill(pid, SIGCONT);
        }
    } resume{stopped};
    const auto started = Clock::now();
    for (const auto &row :
         sql(std::string("SELECT pid FROM pg_stat_activity WHERE usename = '") + kRole + "'")) {
        const int pid = row[0].as<int>();
        BOOST_REQUIRE_MESSAGE(::kill(pid, SIGSTOP) == 0, "could not stop server process " << pid);
        stopped.push_back(pid);
    }
    BOOST_REQUIRE(!stopped.empty());
    // The first renewal is due at ttl/3 (0.5 s); the local deadline is a
    // little under the ttl (1.5 s).
    BOOST_CHECK(watch.first.get_future().wait_until(started + 3s) == std::future_status::ready);
    BOOST_CHECK(!lock.is_held());
    BOOST_CHECK(lock.lost_token().stop_requested());
    BOOST_CHECK_EQUAL(watch.calls.load(), 1);
}

// connect() fails with BackendUnavailable when the server cannot be reached
// or refuses us, and with InvalidArgument for what no server could accept.
BOOST_AUTO_TEST_CASE(connect_errors) {
    // Whether e's message contains text.
    auto says = [](std::string text) {
        return [text](const lockext::Error &e) {
            return std::string(e.what()).find(text) != std::string::npos;
        };
    };
    BOOST_CHECK_EXCEPTION(lockext::connect("postgresql://127.0.0.1:1/postgres?connect_timeout=3"),
                          lockext::BackendUnavailable, says("cannot connect"));
    BOOST_CHECK_EXCEPTION(lockext::connect(with_params(test_url(), "dbname=lockext_no_such_db")),
                          lockext::BackendUnavailable, says("does not exist"));
    BOOST_CHECK_EXCEPTION(lockext::connect(with_params(test_url(), "user=lockext_no_such_role")),
                          lockext::BackendUnavailable, says("cannot connect"));
    BOOST_CHECK_EXCEPTION(lockext::connect("postgresql://localhost/postgres?no_such_option=1"),
                          lockext::InvalidArgument, says("no_such_option"));
    BOOST_CHECK_EXCEPTION(lockext::connect(with_params(test_url(), "connect_timeout=soon")),
                          lockext::InvalidArgument, says("connect_timeout"));
    // A password in a malformed URL must not end up in the message.
    BOOST_CHECK_EXCEPTION(lockext::connect("postgresql://u:secret-pw@[::1/db"),
                          lockext::InvalidArgument, [](const lockext::InvalidArgument &e) {
                              return std::string(e.what()).find("secret-pw") == std::string::npos;
                          });
    lockext::ConnectOptions none;
    none.pool_size = 0;
    BOOST_CHECK_THROW(lockext::connect(test_url(), none), lockext::InvalidArgument);

    // A wrong password, where the server checks passwords at all.
    role_url();
    const std::string wrong =
        with_params(test_url(), std::string("user=") + kRole + "&password=not-the-password");
    bool server_checks_passwords = false;
    try {
        pqxx::connection probe(wrong);
    } catch (const pqxx::broken_connection &) {
        server_checks_passwords = true;
    }
    if (server_checks_passwords)
        BOOST_CHECK_EXCEPTION(lockext::connect(wrong), lockext::BackendUnavailable,
                              says("password"));
    else
        BOOST_TEST_MESSAGE(
            "server trusts this connection (no password check); "
            "wrong-password case not exercised");
}

// A database without the extension: InvalidArgument naming the database.
BOOST_AUTO_TEST_CASE(database_without_the_extension) {
    const std::string db = "lockext_client_noext";
    if (sql("SELECT 1 FROM pg_database WHERE datname = " + lit(db)).empty())
        sql("CREATE DATABASE " + db);
    BOOST_CHECK_EXCEPTION(
        lockext::connect(with_params(test_url(), "dbname=" + db)), lockext::InvalidArgument,
        [&](const lockext::InvalidArgument &e) {
            return std::string(e.what()).find("lockext extension is not installed in database \"" +
                                              db + "\"") != std::string::npos;
        });
    sql("DROP DATABASE " + db + " WITH (FORCE)");
}

// with_transaction: commit on success, rollback on an exception (which
// propagates), and the lock ends with the transaction either way.
BOOST_AUTO_TEST_CASE(with_transaction_commits_and_rolls_back) {
    sql("CREATE TABLE IF NOT EXISTS lockext_client_tx_test (note text NOT NULL)");
    auto manager = lockext::connect(test_url());
    pqxx::connection conn(test_url());
    const std::string name = fresh_name("tx");
    const std::string committed = fresh_name("committed-row");
    const std::string rolled_back = fresh_name("rolled-back-row");
    auto rows = [&](const std::string &note) {
        return sql("SELECT count(*) FROM lockext_client_tx_test WHERE note = " + lit(note))[0][0]
            .as<int>();
    };

    const std::int64_t token =
        lockext::pg::with_transaction(conn, name, [&](pqxx::work &tx, std::int64_t tok) {
            tx.exec("INSERT INTO lockext_client_tx_test VALUES (" + tx.quote(committed) + ")");
            const pqxx::result held =
                sql("SELECT token, scope, expires_at IS NULL FROM lockext.holders "
                    "WHERE name = " +
                    lit(name));
            BOOST_CHECK_EQUAL(held.size(), 1u);
            if (held.size() == 1) {
                BOOST_CHECK_EQUAL(held[0][0].as<std::int64_t>(), tok);
                BOOST_CHECK_EQUAL(held[0][1].as<std::string>(), "transaction");
                BOOST_CHECK(held[0][2].as<bool>());
            }
            BOOST_CHECK(!manager->try_acquire(name, opts(5s)).has_value());
            return tok;
        });
    BOOST_CHECK_GT(token, 0);
    BOOST_CHECK_EQUAL(rows(committed), 1);
    BOOST_CHECK_EQUAL(count_in("holders", name), 0);
    BOOST_CHECK(manager->try_acquire(name, opts(5s)).has_value());  // free at once

    bool ran = false;
    BOOST_CHECK_EXCEPTION(lockext::pg::with_transaction(conn, name,
                                                        [&](pqxx::work &tx) {
                                                            ran = true;
                                                            tx.exec(
                                                                "INSERT INTO "
                                                                "lockext_client_tx_test VALUES (" +
                                                                tx.quote(rolled_back) + ")");
                                                            throw std::runtime_error("boom");
                                                        }),
                          std::runtime_error, [](const std::runtime_error &e) {
                              return std::string(e.what()) == "boom";
                          });
    BOOST_CHECK(ran);
    BOOST_CHECK_EQUAL(rows(rolled_back), 0);
    BOOST_CHECK_EQUAL(count_in("holders", name), 0);
    BOOST_CHECK(manager->try_acquire(name, opts(5s)).has_value());
    // The connection is usable again: no transaction was left open.
    pqxx::nontransaction check(conn);
    BOOST_CHECK_EQUAL(check.exec("SELECT 1")[0][0].as<int>(), 1);
}

// with_transaction throws NotObtained when the lock is held elsewhere for
// the whole wait, without running fn; it succeeds once the lock is free.
BOOST_AUTO_TEST_CASE(with_transaction_not_obtained_when_held_elsewhere) {
    auto manager = lockext::connect(test_url());
    pqxx::connection conn(test_url());
    const std::string name = fresh_name("tx-held");
    lockext::Lock held = manager->acquire(name, opts(20s));
    bool ran = false;
    const auto started = Clock::now();
    BOOST_CHECK_THROW(lockext::pg::with_transaction(
                          conn, name, [&](pqxx::work &) { ran = true; }, opts(20s, 200ms)),
                      lockext::NotObtained);
    BOOST_CHECK(Clock::now() - started >= 190ms);
    BOOST_CHECK(!ran);
    BOOST_CHECK(held.release());
    BOOST_CHECK_EQUAL(lockext::pg::with_transaction(conn, name, [](pqxx::work &) { return 7; }), 7);
}

// 16 threads share one manager with pool_size 4: 50 exclusive cycles each,
// no errors, tokens only rise (per thread and in grant order), and never
// two holders at once.
BOOST_AUTO_TEST_CASE(pool_under_contention) {
    lockext::ConnectOptions copts;
    copts.pool_size = 4;
    auto manager = lockext::connect(test_url(), copts);
    const std::string name = fresh_name("pool");
    constexpr int kThreads = 16;
    constexpr int kCycles = 50;
    lockext::test::OverlapCounter overlap;
    std::atomic<int> errors{0};
    std::atomic<int> not_rising{0};
    std::atomic<int> not_released{0};
    std::mutex record_mu;
    std::vector<std::int64_t> grant_order;  // guarded by record_mu
    std::string first_error;                // guarded by record_mu

    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&] {
            std::int64_t last = 0;
            for (int i = 0; i < kCycles; ++i) {
                try {
                    lockext::Lock lock = manager->acquire(name, opts(10s, 30s));
                    {
                        auto in_section = overlap.enter();
                        std::lock_guard<std::mutex> g(record_mu);
                        grant_order.push_back(lock.token());
                    }
                    if (lock.token() <= last)
                        not_rising.fetch_add(1);
                    last = lock.token();
                    if (!lock.release())
                        not_released.fetch_add(1);
                } catch (const std::exception &e) {
                    errors.fetch_add(1);
                    std::lock_guard<std::mutex> g(record_mu);
                    if (first_error.empty())
                        first_error = e.what();
                }
            }
        });
    }
    for (std::thread &t : threads)
        t.join();

    BOOST_CHECK_MESSAGE(errors.load() == 0, errors.load() << " errors, first: " << first_error);
    BOOST_CHECK_EQUAL(overlap.max(), 1);
    BOOST_CHECK_EQUAL(overlap.entries(), kThreads * kCycles);
    BOOST_CHECK_EQUAL(not_rising.load(), 0);
    BOOST_CHECK_EQUAL(not_released.load(), 0);
    BOOST_CHECK_EQUAL(grant_order.size(), static_cast<std::size_t>(kThreads * kCycles));
    for (std::size_t i = 1; i < grant_order.size(); ++i)
        BOOST_CHECK_GT(grant_order[i], grant_order[i - 1]);
}

// A wait never takes the pool's place (pool_size 1 here): while one waits,
// a free lock is granted at once, a short wait ends on time, and renew and
// release go through.
BOOST_AUTO_TEST_CASE(waits_do_not_block_the_pool) {
    lockext::ConnectOptions copts;
    copts.pool_size = 1;
    auto manager = lockext::connect(test_url(), copts);
    const std::string busy = fresh_name("busy");
    lockext::Lock held = manager->acquire(busy, opts(20s));
    auto waiter =
        std::async(std::launch::async, [&] { return manager->try_acquire(busy, opts(20s, 10s)); });
    BOOST_REQUIRE(eventually([&] { return count_in("waiters", busy) == 1; }));

    auto started = Clock::now();
    std::optional<lockext::Lock> free_lock = manager->try_acquire(fresh_name("free"), opts(5s, 5s));
    BOOST_CHECK(free_lock.has_value());
    BOOST_CHECK(Clock::now() - started < 1s);

    started = Clock::now();
    BOOST_CHECK(!manager->try_acquire(busy, opts(5s, 300ms)).has_value());
    BOOST_CHECK(Clock::now() - started >= 290ms);
    BOOST_CHECK(Clock::now() - started < 2s);

    started = Clock::now();
    held.renew();
    BOOST_CHECK(held.release());
    BOOST_CHECK(Clock::now() - started < 1s);
    std::optional<lockext::Lock> next = waiter.get();
    BOOST_REQUIRE(next.has_value());
    BOOST_CHECK_GT(next->token(), held.token());
}

// force_release: a role without EXECUTE on it gets InvalidArgument
// ("permission denied"); a superuser releases every holder, and the holder
// finds its lease gone.
BOOST_AUTO_TEST_CASE(force_release_needs_the_privilege) {
    auto unprivileged = lockext::connect(role_url());
    auto admin_manager = lockext::connect(test_url());
    const std::string name = fresh_name("force");
    lockext::LockOptions o = opts(20s);
    o.auto_renew = false;
    lockext::Lock lock = unprivileged->acquire(name, o);
    BOOST_CHECK_EXCEPTION(unprivileged->force_release(name), lockext::InvalidArgument,
                          [](const lockext::InvalidArgument &e) {
                              return std::string(e.what()).find("permission denied") !=
                                     std::string::npos;
                          });
    BOOST_CHECK_EQUAL(count_in("holders", name), 1);
    BOOST_CHECK_EQUAL(admin_manager->force_release(name), 1);
    BOOST_CHECK_EQUAL(count_in("holders", name), 0);
    BOOST_CHECK_THROW(lock.renew(), lockext::LockLost);
}

// A full lock table (53400) is BackendUnavailable: the server is out of a
// resource, the request is fine. Leases already held are not affected.
BOOST_AUTO_TEST_CASE(full_lock_table_is_backend_unavailable) {
    auto manager = lockext::connect(test_url());
    const std::string held_name = fresh_name("full-held");
    lockext::Lock held = manager->acquire(held_name, opts(20s));
    const std::string prefix = fresh_name("fill") + ":";
    const int slots = sql("SELECT slots_total FROM lockext.stats")[0][0].as<int>();
    // Fill every slot from outside (the statement fails at the first slot too many).
    struct Unfill {
        PgFixture &fx;
        std::string prefix;
        int slots;
        ~Unfill() {
            fx.sql("SELECT lockext.force_release(" + fx.lit(prefix) + " || g) " +
                   "FROM generate_series(1, " + std::to_string(slots + 1) + ") g");
        }
    } unfill{*this, prefix, slots};
    BOOST_CHECK_THROW(sql("SELECT lockext.acquire(" + lit(prefix) + " || g, '60 s') " +
                          "FROM generate_series(1, " + std::to_string(slots + 1) + ") g"),
                      pqxx::sql_error);
    BOOST_CHECK_EXCEPTION(manager->try_acquire(fresh_name("full"), opts(5s)),
                          lockext::BackendUnavailable, [](const lockext::BackendUnavailable &e) {
                              return std::string(e.what()).find("full") != std::string::npos;
                          });
    held.renew();  // renewals need no new slot
    BOOST_CHECK(held.is_held());
}

// More waits than pool_size (1 here) from one manager: every one is in the
// server's queue at once, they are granted in the order asked, and the extra
// connections are closed once the waits are over.
BOOST_AUTO_TEST_CASE(waits_beyond_pool_size_queue_in_the_server) {
    lockext::ConnectOptions copts;
    copts.pool_size = 1;
    auto manager =
        lockext::connect(with_params(test_url(), "application_name=lockext_burst_test"), copts);
    const std::string name = fresh_name("burst");
    lockext::Lock holder = manager->acquire(name, opts(20s));
    constexpr int kWaiters = 4;
    std::mutex order_mu;
    std::vector<int> order;  // guarded by order_mu
    std::atomic<int> errors{0};
    std::vector<std::thread> waiters;
    for (int i = 0; i < kWaiters; ++i) {
        waiters.emplace_back([&, i] {
            try {
                lockext::Lock lock = manager->acquire(name, opts(20s, 10s));
                std::lock_guard<std::mutex> g(order_mu);
                order.push_back(i);
            } catch (const std::exception &) {
                errors.fetch_add(1);
            }
        });
        // Each is queued in the server before the next is asked for.
        BOOST_CHECK(eventually([&] { return count_in("waiters", name) == i + 1; }));
    }
    BOOST_CHECK(holder.release());
    for (std::thread &t : waiters)
        t.join();
    BOOST_CHECK_EQUAL(errors.load(), 0);
    BOOST_TEST(order == (std::vector<int>{0, 1, 2, 3}), boost::test_tools::per_element());
    BOOST_CHECK(eventually([&] {
        return sql("SELECT count(*) FROM pg_stat_activity "
                   "WHERE application_name = 'lockext_burst_test'")[0][0]
                   .as<int>() <= 1;
    }));
}

// A wait that runs out in the server is "not obtained", never an error:
// lockext.acquire returns NULL (it raises 55P03 only for a wait on a lock
// the session itself holds, below), so try_acquire is empty and acquire
// throws NotObtained, each after its whole wait; the waiter has left the
// server's queue and the holder is untouched.
BOOST_AUTO_TEST_CASE(wait_timeout_in_the_server_is_not_obtained) {
    auto holder = lockext::connect(test_url());
    auto other = lockext::connect(test_url());
    const std::string name = fresh_name("wait-timeout");
    lockext::Lock held = holder->acquire(name, opts(20s));
    const std::int64_t timed_out_before =
        sql("SELECT timed_out FROM lockext.stats")[0][0].as<std::int64_t>();

    auto started = Clock::now();
    BOOST_CHECK(!other->try_acquire(name, opts(20s, 300ms)).has_value());
    BOOST_CHECK(Clock::now() - started >= 290ms);
    started = Clock::now();
    BOOST_CHECK_THROW(other->acquire(name, opts(20s, 200ms)), lockext::NotObtained);
    BOOST_CHECK(Clock::now() - started >= 190ms);

    BOOST_CHECK_EQUAL(sql("SELECT timed_out FROM lockext.stats")[0][0].as<std::int64_t>(),
                      timed_out_before + 2);
    BOOST_CHECK_EQUAL(count_in("waiters", name), 0);
    BOOST_CHECK(held.is_held());
    BOOST_CHECK(held.release());
}

// SQLSTATE 55P03: with_transaction on a connection that already holds the
// name in session scope would wait on itself forever, so the server refuses
// at once and the client says so with InvalidArgument (a programming error
// that retrying cannot fix, unlike NotObtained). fn does not run, and the
// connection is usable afterwards.
BOOST_AUTO_TEST_CASE(waiting_on_own_session_lock_is_invalid_argument) {
    pqxx::connection conn(test_url());
    const std::string name = fresh_name("own-session");
    std::int64_t token = 0;
    {
        pqxx::nontransaction tx(conn);
        token = tx.exec("SELECT lockext.acquire(" + conn.quote(name) +
                        ", NULL, '0', 'exclusive', 'session')")[0][0]
                    .as<std::int64_t>();
    }
    bool ran = false;
    const auto started = Clock::now();
    BOOST_CHECK_EXCEPTION(lockext::pg::with_transaction(
                              conn, name, [&](pqxx::work &) { ran = true; }, opts(20s, 5s)),
                          lockext::InvalidArgument, [](const lockext::InvalidArgument &e) {
                              return std::string(e.what()).find("already held by this session") !=
                                     std::string::npos;
                          });
    BOOST_CHECK(Clock::now() - started < 2s);  // refused, not waited out
    BOOST_CHECK(!ran);
    BOOST_CHECK_EQUAL(count_in("holders", name), 1);
    pqxx::nontransaction tx(conn);
    BOOST_CHECK(tx.exec("SELECT lockext.release(" + conn.quote(name) + ", " +
                        std::to_string(token) + ")")[0][0]
                    .as<bool>());
}

BOOST_AUTO_TEST_SUITE_END()

namespace {

// The URL of a server where the extension is created but the library is not
// in shared_preload_libraries: $LOCKEXT_TEST_NOPRELOAD_URL.
std::string nopreload_url() {
    const char *u = std::getenv("LOCKEXT_TEST_NOPRELOAD_URL");
    return u && *u ? std::string(u) : std::string();
}

// Enables the not-preloaded test only when such a server is given.
struct NoPreloadUrlGiven {
    boost::test_tools::assertion_result operator()(boost::unit_test::test_unit_id) const {
        boost::test_tools::assertion_result ok(is_postgres_url(nopreload_url()));
        if (!ok)
            ok.message() << "LOCKEXT_TEST_NOPRELOAD_URL is not set; set it to a server that has "
                            "CREATE EXTENSION lockext but not lockext in shared_preload_libraries";
        return ok;
    }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(postgres_not_preloaded, *boost::unit_test::precondition(NoPreloadUrlGiven{}))

// Extension created, library not preloaded (SQLSTATE 55000): connect() fails
// at once with InvalidArgument carrying the server's message and its hint.
// The server is reachable, so it is not BackendUnavailable: retrying cannot
// help until an administrator changes the configuration and restarts.
BOOST_AUTO_TEST_CASE(connect_says_the_library_is_not_loaded) {
    BOOST_CHECK_EXCEPTION(lockext::connect(nopreload_url()), lockext::InvalidArgument,
                          [](const lockext::InvalidArgument &e) {
                              const std::string what = e.what();
                              BOOST_TEST_MESSAGE("connect: " << what);
                              return what.find("lockext is not loaded") != std::string::npos &&
                                     what.find("shared_preload_libraries") != std::string::npos;
                          });
}

BOOST_AUTO_TEST_SUITE_END()
