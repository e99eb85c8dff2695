// Redis-specific semantics on private servers (see redis_test.cpp for when
// they run): fencing tokens across many grants, node restarts and Redlock
// node replacement; millisecond TTLs; per-holder expiry in shared and
// semaphore mode; the semaphore quorum on Redlock; and passwords and
// databases.
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "lockext/lockext.hpp"
#include "redis_test_support.hpp"
#include "test_support.hpp"

using namespace lockext;
using namespace lockext::test;

namespace {

// Two clients, two threads each, take `name` 15 times apiece, recording each
// section (with its token) inside it: no section overlaps another, and in
// grant order the tokens rise.
void check_concurrent_grants(LockManager &one, LockManager &two, const std::string &name) {
    SectionLog log;
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; t++) {
        threads.emplace_back([&, t] {
            LockManager &locks = t % 2 ? one : two;
            for (int i = 0; i < 15; i++) {
                Lock lock = locks.acquire(name, opts(5s, 20s));
                const auto start = Clock::now();
                std::this_thread::sleep_for(1ms);
                log.add(start, Clock::now(), lock.token());
            }
        });
    }
    for (auto &t : threads)
        t.join();
    BOOST_TEST(log.size() == 60u);
    BOOST_TEST(log.overlaps() == 0);
    BOOST_TEST(log.token_regressions() == 0);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(redis_semantics, *boost::unit_test::precondition(RedisRunGiven{}))

// Tokens rise with every grant: across names and clients, through a node
// restart that lost every key (no persistence), and for concurrent grants on
// one name in grant order.
BOOST_AUTO_TEST_CASE(tokens_rise_across_grants_and_restarts) {
    RedisServer server;
    const std::string url = "redis://" + server.address();
    auto one = connect(url);
    auto two = connect(url);
    const std::string names[] = {unique_name("fa"), unique_name("fb"), unique_name("fc")};
    long long last = 0;
    int regressions = 0;
    for (int i = 0; i < 150; i++) {
        LockManager &locks = i % 2 ? *one : *two;
        Lock lock = locks.acquire(names[i % 3], opts(5s, 0ms, Mode::exclusive, 1, false));
        regressions += lock.token() > last ? 0 : 1;
        last = lock.token();
    }
    BOOST_TEST(regressions == 0);
    // A restart loses the counters; the server's clock keeps tokens rising.
    // The pool notices its connections died with the old process and
    // reconnects; a call that raced the restart may fail once.
    server.restart();
    std::optional<Lock> after;
    for (int attempt = 0; attempt < 3 && !after; attempt++) {
        try {
            after = one->acquire(names[0], opts(5s));
        } catch (const BackendUnavailable &e) {
            BOOST_TEST_MESSAGE("right after the restart: " << e.what());
        }
    }
    BOOST_REQUIRE(after.has_value());
    BOOST_TEST(after->token() > last);
    after.reset();

    // Concurrent grants on one name, recorded inside the sections (which do
    // not overlap), so the record order is the grant order.
    const std::string name = unique_name("concurrent-tokens");
    check_concurrent_grants(*one, *two, name);
}

// Redlock tokens rise across names, clients and grants, keep rising after a
// node is replaced by an empty one (its counters are gone), and rise in grant
// order when two clients contend for one name.
BOOST_AUTO_TEST_CASE(redlock_tokens_rise_through_node_replacement) {
    ThreeNodes nodes;
    auto one = connect(nodes.url());
    auto two = connect(nodes.url());
    const std::string names[] = {unique_name("ra"), unique_name("rb")};
    long long last = 0;
    int regressions = 0;
    for (int i = 0; i < 60; i++) {
        if (i == 30)
            nodes.a.restart();  // empty: a node that lost its data
        LockManager &locks = i % 2 ? *one : *two;
        std::optional<Lock> lock;
        for (int attempt = 0; attempt < 3 && !lock; attempt++) {
            try {
                lock = locks.acquire(names[i % 2], opts(5s, 2s, Mode::exclusive, 1, false));
            } catch (const BackendUnavailable &) {
                // Only right after the restart: a pooled connection to the old process.
            }
        }
        BOOST_REQUIRE(lock.has_value());
        regressions += lock->token() > last ? 0 : 1;
        last = lock->token();
    }
    BOOST_TEST(regressions == 0);

    // Two clients, two threads each, on one name: in grant order (recorded
    // inside the non-overlapping sections) tokens rise, though the clients'
    // requests carry floors from their own clocks and race each other.
    const std::string name = unique_name("rl-concurrent");
    check_concurrent_grants(*one, *two, name);
}

// TTLs are milliseconds on the server, not rounded to seconds: a 150 ms lease
// is stored with 150 ms to live, runs out after about that, and the next
// waiter gets it then; renew sets a new millisecond TTL. The name's counter
// outlives the lease (the hash stays for a minute), and the next token is
// above the old one.
BOOST_AUTO_TEST_CASE(sub_second_ttls_are_exact) {
    RedisServer server;
    const std::string url = "redis://" + server.address();
    auto locks = connect(url);
    auto other = connect(url);
    RawRedis raw(server.port());
    const std::string name = unique_name("ms-ttl");
    const std::string key = "lockext:{" + name + "}";
    // Milliseconds the (one) holder has left, by the server's clock.
    auto holder_ms_left = [&] {
        const std::string fields = raw.command({"HGETALL", key});  // "f|v|f|v..."
        std::vector<std::string> parts;
        for (std::size_t at = 0;;) {
            const auto bar = fields.find('|', at);
            parts.push_back(fields.substr(at, bar - at));
            if (bar == std::string::npos)
                break;
            at = bar + 1;
        }
        const std::string time = raw.command({"TIME"});  // "seconds|microseconds"
        const long long now_ms = std::stoll(time.substr(0, time.find('|'))) * 1000 +
                                 std::stoll(time.substr(time.find('|') + 1)) / 1000;
        for (std::size_t i = 0; i + 1 < parts.size(); i += 2) {
            if (!parts[i].starts_with("."))
                return std::stoll(parts[i + 1]) - now_ms;
        }
        return -1LL;
    };
    Lock lock = locks->acquire(name, opts(150ms, 0ms, Mode::exclusive, 1, false));
    const long long left = holder_ms_left();
    BOOST_TEST(left > 0);
    BOOST_TEST(left <= 150);  // not rounded up to a second
    const auto renewed_at = Clock::now();
    lock.renew(400ms);
    const long long renewed = holder_ms_left();
    BOOST_TEST(renewed > 0);
    BOOST_TEST(renewed <= 400);
    Lock next = other->acquire(name, opts(5s, 3s));
    const auto waited = ms_since(renewed_at);
    BOOST_TEST(waited >= 300);  // not before the renewed lease ran out
    BOOST_TEST(waited < 2000);  // but soon after (not a second-granular expiry)
    BOOST_TEST(next.token() > lock.token());
    BOOST_CHECK_THROW(lock.renew(), LockLost);
}

// Per-holder expiry: a semaphore holder that died stops counting after its
// own TTL while a live one keeps its place; in shared mode a dead reader
// does not keep a writer out after its TTL. Expired holders are deleted.
BOOST_AUTO_TEST_CASE(dead_holders_stop_counting_after_their_own_ttl) {
    RedisServer server;
    const std::string url = "redis://" + server.address();
    auto locks = connect(url);
    RawRedis raw(server.port());

    const std::string sem = unique_name("sem-expiry");
    Lock dead = locks->acquire(sem, opts(300ms, 0ms, Mode::semaphore, 2, false));
    Lock live = locks->acquire(sem, opts(10s, 0ms, Mode::semaphore, 2));
    BOOST_TEST(!locks->try_acquire(sem, opts(10s, 0ms, Mode::semaphore, 2)).has_value());
    auto start = Clock::now();
    Lock third = locks->acquire(sem, opts(10s, 3s, Mode::semaphore, 2));
    auto waited = ms_since(start);
    BOOST_TEST(waited >= 200);
    BOOST_TEST(waited < 1500);
    BOOST_TEST(live.is_held());
    BOOST_TEST(!locks->try_acquire(sem, opts(10s, 0ms, Mode::semaphore, 2)).has_value());
    // Two live holders and the metadata; the dead holder's field is gone.
    const long long fields = raw.integer({"HLEN", "lockext:{" + sem + "}"});
    BOOST_TEST(fields == 4);  // live, third, .f, .m

    const std::string rw = unique_name("shared-expiry");
    Lock dead_reader = locks->acquire(rw, opts(300ms, 0ms, Mode::shared, 1, false));
    std::optional<Lock> live_reader = locks->acquire(rw, opts(10s, 0ms, Mode::shared));
    std::thread releaser([&] {
        std::this_thread::sleep_for(600ms);
        live_reader.reset();
    });
    start = Clock::now();
    Lock writer = locks->acquire(rw, opts(10s, 5s));
    waited = ms_since(start);
    releaser.join();
    BOOST_TEST(waited >= 500);  // the live reader kept it until its release
    BOOST_TEST(waited < 2500);  // the dead one did not keep it any longer
    BOOST_TEST(writer.is_held());
}

// On Redlock a semaphore of k ≥ 2 needs floor(k·N/(k+1)) + 1 nodes (all
// three here), so that k+1 holders can never each own a majority; with one
// node down it is refused as unavailable while exclusive locks still work.
BOOST_AUTO_TEST_CASE(redlock_semaphore_needs_its_larger_quorum) {
    ThreeNodes nodes;
    auto locks = connect(nodes.url());
    const std::string sem = unique_name("rl-sem");
    {
        Lock one = locks->acquire(sem, opts(10s, 0ms, Mode::semaphore, 2));
        Lock two = locks->acquire(sem, opts(10s, 0ms, Mode::semaphore, 2));
        BOOST_TEST(!locks->try_acquire(sem, opts(10s, 0ms, Mode::semaphore, 2)).has_value());
    }
    nodes.c.kill_now();
    BOOST_CHECK_THROW(locks->try_acquire(sem, opts(10s, 0ms, Mode::semaphore, 2)),
                      BackendUnavailable);
    BOOST_TEST(locks->try_acquire(unique_name("rl-ex"), opts(10s)).has_value());
    BOOST_TEST(locks->try_acquire(unique_name("rl-sh"), opts(10s, 0ms, Mode::shared)).has_value());
}

// Passwords and databases: the right password works; a wrong one, or none
// where one is required, is BackendUnavailable naming authentication (and
// never echoing the password); a database the server lacks is InvalidArgument.
BOOST_AUTO_TEST_CASE(passwords_and_databases) {
    RedisServer server("right-pass");
    const std::string host = server.address();
    {
        auto locks = connect("redis://:right-pass@" + host + "/3");
        BOOST_TEST(locks->backend() == "redis");
        const std::string name = unique_name("auth");
        Lock lock = locks->acquire(name, opts(5s));
        RawRedis raw(server.port(), "right-pass");
        BOOST_TEST(raw.integer({"EXISTS", "lockext:{" + name + "}"}) == 0);
        BOOST_TEST(raw.command({"SELECT", "3"}) == "OK");
        BOOST_TEST(raw.integer({"EXISTS", "lockext:{" + name + "}"}) == 1);  // in db 3
        BOOST_TEST(lock.release());
    }
    try {
        connect("redis://:wrong-pass@" + host);
        BOOST_FAIL("a wrong password was accepted");
    } catch (const BackendUnavailable &e) {
        const std::string what = e.what();
        BOOST_TEST_MESSAGE("wrong password: " << what);
        BOOST_TEST(what.find("authentication failed") != std::string::npos);
        BOOST_TEST(what.find("wrong-pass") == std::string::npos);
    }
    try {
        connect("redis://" + host);
        BOOST_FAIL("no password was accepted");
    } catch (const BackendUnavailable &e) {
        BOOST_TEST(std::string(e.what()).find("requires a password") != std::string::npos);
    }
    try {
        connect("redlock://:wrong-pass@" + host);
        BOOST_FAIL("a wrong password was accepted on redlock");
    } catch (const BackendUnavailable &e) {
        BOOST_TEST(std::string(e.what()).find("wrong-pass") == std::string::npos);
    }
    BOOST_CHECK_THROW(connect("redis://:right-pass@" + host + "/999"), InvalidArgument);
}

BOOST_AUTO_TEST_SUITE_END()
