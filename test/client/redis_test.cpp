// Redis-specific tests of the client, on private redis-server processes the
// tests start, kill, pause and restart themselves (redis_test_support.hpp):
// Redlock with a node killed mid-run and without a quorum, a client paused
// past its TTL and fenced off, a dead waiter, tokens across restarts,
// millisecond TTLs, per-holder expiry, and the password path. Every fault
// test counts overlapping critical sections from its own records.
//
// The suite runs when LOCKEXT_TEST_URL is a redis:// URL (scripts/
// run_client_tests.sh sets that for one run per build), so it runs once per
// build; it uses only its own servers. URL checks that need no server are in
// redis_url_test.cpp and run once per build, on the memory: run.
//
// Child processes are this binary run again with LOCKEXT_REDIS_TEST_CHILD
// set: the role runs before main() and exits, so the child is a fresh
// process (no threads or locks inherited from the parent, as fork() alone
// would give).
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <iostream>
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

// An environment variable, or "".
std::string env(const char *name) {
    const char *v = std::getenv(name);
    return v ? v : "";
}

// ---- child roles -------------------------------------------------------------

// "holder": take the lock, write to the fenced store, then wait for "GO" on
// stdin (the parent pauses us meanwhile) and write again with the same token,
// as a client that does not know it was paused would; report each outcome.
int run_holder() {
    auto locks = connect(env("LOCKEXT_CHILD_URL"));
    const std::string name = env("LOCKEXT_CHILD_NAME");
    RawRedis raw(std::stoi(env("LOCKEXT_CHILD_PORT")));
    Lock lock = locks->acquire(name, opts(1000ms, 5s));
    const bool first = fenced_write(raw, name, lock.token(), "child");
    std::printf("ACQUIRED %lld %d\n", static_cast<long long>(lock.token()), first ? 1 : 0);
    std::fflush(stdout);
    char line[64];
    if (std::fgets(line, sizeof line, stdin) == nullptr)
        return 2;
    const bool second = fenced_write(raw, name, lock.token(), "child-after-pause");
    std::printf("WRITE %s\n", second ? "accepted" : "rejected");
    const bool lost = eventually([&] { return lock.lost_token().stop_requested(); }, 5s);
    std::printf("LOST %d\n", lost ? 1 : 0);
    try {
        lock.renew();
        std::printf("RENEW ok\n");
    } catch (const LockLost &) {
        std::printf("RENEW lost\n");
    } catch (const std::exception &e) {
        std::printf("RENEW error %s\n", e.what());
    }
    std::fflush(stdout);
    return 0;
}

// "waiter": say so, then wait for the lock (the parent kills us while we wait).
int run_waiter() {
    auto locks = connect(env("LOCKEXT_CHILD_URL"));
    std::printf("WAITING\n");
    std::fflush(stdout);
    locks->acquire(env("LOCKEXT_CHILD_NAME"), opts(10s, 60s));
    std::printf("GOT IT\n");
    return 0;
}

// Runs a child role before main() when this process is one, and exits.
const int child_role_exit = [] {
    const std::string role = env("LOCKEXT_REDIS_TEST_CHILD");
    if (role.empty())
        return 0;
    int code = 3;
    try {
        code = role == "holder" ? run_holder() : role == "waiter" ? run_waiter() : 4;
    } catch (const std::exception &e) {
        std::printf("ERROR %s\n", e.what());
        std::fflush(stdout);
    }
    std::fflush(stdout);
    std::_Exit(code);
}();

}  // namespace

BOOST_AUTO_TEST_SUITE(redis, *boost::unit_test::precondition(RedisRunGiven{}))

// Redlock: four threads contend (two with with_lock, two with acquire and
// release, which record their tokens); one of three nodes is killed mid-run.
// Locks keep being granted (a quorum of two remains), no two sections
// overlap, and tokens rise in section order.
BOOST_AUTO_TEST_CASE(redlock_survives_a_node_killed_mid_run) {
    ThreeNodes nodes;
    // Two clients, two threads each.
    auto first = connect(nodes.url());
    auto second = connect(nodes.url());
    const std::string name = unique_name("kill-one");
    SectionLog log;
    std::atomic<bool> stop{false};
    std::mutex mu;
    std::vector<std::string>
        errors;  // reported from this thread: Boost.Test logs are not thread-safe
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; t++) {
        threads.emplace_back([&, t] {
            LockManager *locks = t < 2 ? first.get() : second.get();
            while (!stop) {
                try {
                    if (t % 2 == 0) {
                        // with_lock: the section, but not its token (with_lock does not give it).
                        locks->with_lock(name, opts(2s, 10s), [&] {
                            const auto start = Clock::now();
                            std::this_thread::sleep_for(2ms);
                            log.add(start, Clock::now(), 0);
                        });
                    } else {
                        Lock lock = locks->acquire(name, opts(2s, 10s));
                        const auto start = Clock::now();
                        std::this_thread::sleep_for(2ms);
                        const auto end = Clock::now();
                        // Every section is recorded, held to the end or not:
                        // one that overlapped another must show up.
                        log.add(start, end, lock.token());
                        lock.release();
                    }
                } catch (const std::exception &e) {
                    std::lock_guard<std::mutex> g(mu);
                    errors.push_back(e.what());
                }
            }
        });
    }
    std::this_thread::sleep_for(1s);
    const std::size_t before_kill = log.size();
    nodes.b.kill_now();
    const auto killed_at = Clock::now();
    std::this_thread::sleep_for(2s);
    stop = true;
    for (auto &t : threads)
        t.join();
    BOOST_TEST_MESSAGE("sections: " << before_kill << " before the kill, "
                                    << log.started_after(killed_at) << " after");
    for (const auto &e : errors)
        BOOST_TEST_MESSAGE("contender error: " << e);
    BOOST_TEST(before_kill > 10u);
    BOOST_TEST(log.started_after(killed_at) > 10);
    BOOST_TEST(log.overlaps() == 0);
    BOOST_TEST(log.token_regressions() == 0);
    BOOST_TEST(errors.empty());
}

// Redlock with two of three nodes gone: a try and a wait both fail with
// BackendUnavailable in bounded time (no hang); a lease held before the loss
// is reported lost once it can no longer be renewed; nobody else gets it.
BOOST_AUTO_TEST_CASE(redlock_without_a_quorum_fails_cleanly) {
    ThreeNodes nodes;
    auto locks = connect(nodes.url());
    auto other = connect(nodes.url());
    const std::string name = unique_name("no-quorum");
    const std::string held_name = unique_name("held-before");
    Lock held = locks->acquire(held_name, opts(1000ms));
    std::atomic<int> lost_calls{0};
    held.on_lost([&] { lost_calls.fetch_add(1); });
    nodes.a.kill_now();
    nodes.c.kill_now();

    auto start = Clock::now();
    BOOST_CHECK_THROW(other->try_acquire(name, opts(5s)), BackendUnavailable);
    BOOST_TEST(ms_since(start) < 1000);
    start = Clock::now();
    try {
        other->acquire(name, opts(5s, 800ms));
        BOOST_FAIL("acquire without a quorum succeeded");
    } catch (const BackendUnavailable &e) {
        BOOST_TEST_MESSAGE("without a quorum: " << e.what());
        BOOST_TEST(std::string(e.what()).find("need") != std::string::npos);
    }
    const auto waited = ms_since(start);
    BOOST_TEST(waited >= 700);
    BOOST_TEST(waited < 3000);
    // The watchdog cannot renew on a quorum: the lease is lost by its deadline.
    BOOST_TEST(eventually([&] { return !held.is_held(); }, 3s));
    BOOST_TEST(eventually([&] { return lost_calls.load() == 1; }, 3s));
    // Contenders during the outage: none gets a section.
    SectionLog log;
    std::atomic<int> unavailable{0};
    std::vector<std::thread> contenders;
    for (int t = 0; t < 3; t++) {
        contenders.emplace_back([&, t] {
            auto &mgr = t == 0 ? *locks : *other;
            for (int i = 0; i < 5; i++) {
                try {
                    if (auto lock = mgr.try_acquire(name, opts(2s, 100ms))) {
                        log.add(Clock::now(), Clock::now(), lock->token());
                    }
                } catch (const BackendUnavailable &) {
                    unavailable.fetch_add(1);
                }
            }
        });
    }
    for (auto &t : contenders)
        t.join();
    BOOST_TEST(log.size() == 0u);
    BOOST_TEST(unavailable.load() == 15);
    // The surviving node keeps no holder of the contended name: every
    // failed try gave back what it was granted there (fields not starting
    // with '.' are holders). (The lost lease's field there runs out at its
    // own TTL.)
    RawRedis raw(nodes.b.port());
    for (const std::string &n : {name}) {
        const std::string fields = raw.command({"HKEYS", "lockext:{" + n + "}"});
        bool holder_left = false;
        std::size_t at = 0;
        while (at <= fields.size() && !fields.empty()) {
            const std::size_t bar = fields.find('|', at);
            const std::string f = fields.substr(at, bar == std::string::npos ? bar : bar - at);
            holder_left |= !f.empty() && f[0] != '.';
            if (bar == std::string::npos)
                break;
            at = bar + 1;
        }
        BOOST_TEST(!holder_left, "holders of " << n << " left on the surviving node: " << fields);
    }
}

// A holder paused (SIGSTOP) past its TTL loses the lease to another client;
// resumed, its renewal reports the loss, and its write with the old token is
// refused by the fenced store, which the new holder already wrote to with a
// larger token. From the store's own log: accepted writes never go back.
BOOST_AUTO_TEST_CASE(paused_holder_is_fenced_off) {
    RedisServer server;
    const std::string url = "redis://" + server.address();
    const std::string name = unique_name("paused");
    ChildProcess child({"LOCKEXT_REDIS_TEST_CHILD=holder", "LOCKEXT_CHILD_URL=" + url,
                        "LOCKEXT_CHILD_NAME=" + name,
                        "LOCKEXT_CHILD_PORT=" + std::to_string(server.port())});
    const std::string acquired = child.read_line();
    BOOST_TEST_MESSAGE("child: " << acquired);
    BOOST_REQUIRE(acquired.starts_with("ACQUIRED "));
    long long child_token = 0;
    int child_first_write = 0;
    BOOST_REQUIRE(
        std::sscanf(acquired.c_str(), "ACQUIRED %lld %d", &child_token, &child_first_write) == 2);
    BOOST_TEST(child_first_write == 1);

    child.signal(SIGSTOP);
    RawRedis raw(server.port());
    // The child's lease expiry on the server (ms by its clock), read once a
    // renewal sent just before the stop has surely landed.
    std::this_thread::sleep_for(100ms);
    const std::string flat = raw.command({"HGETALL", "lockext:{" + name + "}"});
    long long child_expiry = 0;
    {
        std::vector<std::string> parts;
        std::size_t at = 0;
        for (std::size_t bar; (bar = flat.find('|', at)) != std::string::npos; at = bar + 1)
            parts.push_back(flat.substr(at, bar - at));
        parts.push_back(flat.substr(at));
        for (std::size_t i = 0; i + 1 < parts.size(); i += 2) {
            if (!parts[i].empty() && parts[i][0] != '.')
                child_expiry = std::max(child_expiry, std::stoll(parts[i + 1]));
        }
    }
    BOOST_REQUIRE(child_expiry > 0);
    auto locks = connect(url);
    Lock mine = locks->acquire(name, opts(10s, 5s));
    // Only once the child's lease ran out by the server's clock.
    const std::string time = raw.command({"TIME"});
    const long long now_ms = std::stoll(time.substr(0, time.find('|'))) * 1000 +
                             std::stoll(time.substr(time.find('|') + 1)) / 1000;
    BOOST_TEST(now_ms >= child_expiry);
    BOOST_TEST(mine.token() > child_token);
    BOOST_TEST(fenced_write(raw, name, mine.token(), "parent"));

    child.signal(SIGCONT);
    child.write_line("GO");
    const std::string write = child.read_line();
    const std::string lost = child.read_line();
    const std::string renew = child.read_line();
    BOOST_TEST_MESSAGE("child: " << write << " / " << lost << " / " << renew);
    BOOST_TEST(write == "WRITE rejected");
    BOOST_TEST(lost == "LOST 1");
    BOOST_TEST(renew == "RENEW lost");
    BOOST_TEST(child.wait() == 0);
    BOOST_TEST(mine.is_held());

    // The store's log: the child's first write, then ours; nothing after.
    const std::string log = raw.command({"LRANGE", "fence-log:" + name, "0", "-1"});
    BOOST_TEST(log ==
               std::to_string(child_token) + " child|" + std::to_string(mine.token()) + " parent");
}

// A waiter that died in the queue (SIGKILL) blocks the next one only until
// its place expires (its deadline: when it planned to look again plus
// kRedisGrace), not until the lock's TTL or for ever; and the live waiter
// behind it is never overtaken by a later one.
BOOST_AUTO_TEST_CASE(dead_waiter_leaves_the_queue) {
    RedisServer server;
    const std::string url = "redis://" + server.address();
    const std::string name = unique_name("dead-waiter");
    auto locks = connect(url);
    auto behind = connect(url);
    RawRedis raw(server.port());
    const std::string queue_key = "lockext:{" + name + "}:q";
    std::optional<Lock> holder = locks->acquire(name, opts(1000ms));
    ChildProcess child({"LOCKEXT_REDIS_TEST_CHILD=waiter", "LOCKEXT_CHILD_URL=" + url,
                        "LOCKEXT_CHILD_NAME=" + name});
    BOOST_REQUIRE(child.read_line() == "WAITING");
    BOOST_REQUIRE(eventually([&] { return raw.integer({"ZCARD", queue_key}) == 1; }, 5s));
    child.signal(SIGKILL);
    child.wait();
    std::atomic<long long> got_after_ms{-1};
    std::atomic<int> order{0}, waiter_place{0}, later_place{0};
    const auto released_at_holder = Clock::now();
    std::thread waiter([&] {
        Lock lock = behind->acquire(name, opts(5s, 20s));
        got_after_ms = ms_since(released_at_holder);
        waiter_place = ++order;
    });
    BOOST_REQUIRE(eventually([&] { return raw.integer({"ZCARD", queue_key}) == 2; }, 5s));
    // A later waiter, queued behind the live one: it must come second.
    auto later_client = connect(url);
    std::thread later([&] {
        Lock lock = later_client->acquire(name, opts(5s, 20s));
        later_place = ++order;
    });
    BOOST_REQUIRE(eventually([&] { return raw.integer({"ZCARD", queue_key}) == 3; }, 5s));
    holder.reset();  // release: the dead waiter is at the head
    waiter.join();
    later.join();
    BOOST_TEST(waiter_place.load() == 1);
    BOOST_TEST(later_place.load() == 2);
    BOOST_TEST_MESSAGE("the waiter behind the dead one got the lock after " << got_after_ms
                                                                            << " ms");
    BOOST_TEST(got_after_ms.load() >= 0);
    BOOST_TEST(got_after_ms.load() < 8000);
    BOOST_TEST(raw.integer({"EXISTS", queue_key}) == 0);  // nothing left behind
}

// The last waiter dies and its queue expires before anyone looks: the queue
// count it left in the hash must not outlive it (it would make every later
// call take the slow path and refuse a change of kind as a conflict).
BOOST_AUTO_TEST_CASE(dead_last_waiter_leaves_no_queue_state) {
    RedisServer server;
    const std::string url = "redis://" + server.address();
    const std::string name = unique_name("dead-last-waiter");
    auto locks = connect(url);
    RawRedis raw(server.port());
    const std::string state_key = "lockext:{" + name + "}";
    const std::string queue_key = state_key + ":q";
    std::optional<Lock> holder = locks->acquire(name, opts(1000ms));
    ChildProcess child({"LOCKEXT_REDIS_TEST_CHILD=waiter", "LOCKEXT_CHILD_URL=" + url,
                        "LOCKEXT_CHILD_NAME=" + name});
    BOOST_REQUIRE(child.read_line() == "WAITING");
    BOOST_REQUIRE(eventually([&] { return raw.integer({"ZCARD", queue_key}) == 1; }, 5s));
    child.signal(SIGKILL);
    child.wait();
    // Its place expires by itself (its deadline), with nobody calling.
    BOOST_REQUIRE(eventually([&] { return raw.integer({"EXISTS", queue_key}) == 0; }, 10s));
    holder.reset();
    // The name is free: used now as a semaphore, it is granted, not a conflict.
    std::optional<Lock> sem = locks->try_acquire(name, opts(1000ms, 0ms, Mode::semaphore, 2));
    BOOST_TEST(sem.has_value());
    BOOST_TEST(raw.integer({"HEXISTS", state_key, ".w"}) == 0);
}

// Scripts flushed from the servers (SCRIPT FLUSH, or a restart) are sent
// again with EVAL: acquire, renew and release keep working, on one node and
// on a Redlock.
BOOST_AUTO_TEST_CASE(flushed_scripts_are_sent_again) {
    ThreeNodes nodes;
    RedisServer single;
    const std::vector<std::string> urls = {"redis://" + single.address(), nodes.url()};
    const std::vector<std::vector<int>> ports = {{single.port()},
                                                 {nodes.a.port(), nodes.b.port(), nodes.c.port()}};
    for (std::size_t u = 0; u < urls.size(); u++) {
        BOOST_TEST_CONTEXT("url " << urls[u]) {
            auto flush = [&] {
                for (int port : ports[u]) {
                    RawRedis raw(port);
                    BOOST_TEST(raw.command({"SCRIPT", "FLUSH"}) == "OK");
                }
            };
            auto locks = connect(urls[u]);
            const std::string name = unique_name("flushed");
            Lock first = locks->acquire(name, opts(5s));
            flush();
            BOOST_CHECK_NO_THROW(first.renew());
            flush();
            BOOST_TEST(first.release());
            flush();
            Lock second = locks->acquire(name, opts(5s));
            BOOST_TEST(second.token() > first.token());
            BOOST_TEST(second.release());
        }
    }
}

// A holder on a bare quorum (the third node lost its lease) is waited for
// like any holder: the waiter's grant from the third node is no split vote,
// so it does not poll with backoff but wakes on the release.
BOOST_AUTO_TEST_CASE(redlock_holder_on_a_bare_quorum_is_waited_for_not_polled) {
    ThreeNodes nodes;
    auto holder_client = connect(nodes.url());
    auto waiter_client = connect(nodes.url());
    const std::string name = unique_name("bare-quorum");
    std::optional<Lock> holder = holder_client->acquire(name, opts(10s));
    RawRedis c(nodes.c.port());
    BOOST_TEST(c.integer({"DEL", "lockext:{" + name + "}"}) == 1);  // c forgets the lease
    std::atomic<long long> got_at{-1};
    const auto start = Clock::now();
    std::thread waiter([&] {
        try {
            Lock l = waiter_client->acquire(name, opts(10s, 8s));
            got_at = ms_since(start);
        } catch (const Error &) {
        }
    });
    // Once its subscriptions are confirmed, the waiter asks nobody until
    // the release (polling with backoff asked c again every few hundred ms).
    std::this_thread::sleep_until(start + 700ms);
    BOOST_TEST(c.command({"CONFIG", "RESETSTAT"}) == "OK");
    std::this_thread::sleep_until(start + 1700ms);
    const std::string stats = c.command({"INFO", "commandstats"});
    BOOST_TEST(stats.find("cmdstat_evalsha:") == std::string::npos,
               "the waiter kept asking node c: " << stats);
    const long long released_at = ms_since(start);
    BOOST_TEST(holder->release());
    waiter.join();
    BOOST_TEST(got_at.load() >= released_at);
    BOOST_TEST(got_at.load() - released_at < 500, "the waiter got the lock "
                                                      << got_at.load() - released_at
                                                      << " ms after the release");
}

// A host name is looked up (within connect_timeout) and connected to.
BOOST_AUTO_TEST_CASE(a_host_name_connects) {
    RedisServer server;
    auto locks =
        connect("redis://localhost:" + std::to_string(server.port()) + "?connect_timeout=2s");
    std::optional<Lock> lock = locks->try_acquire(unique_name("by-name"), opts(5s));
    BOOST_TEST(lock.has_value());
}

// A reply that does not come within the timeout is an error, and the
// command is not sent again: the node is alive and may run it late (a
// release sent twice would report a lease it had just released as not held,
// and block for twice the timeout).
BOOST_AUTO_TEST_CASE(a_timed_out_release_is_not_sent_again) {
    RedisServer server;
    auto locks = connect("redis://" + server.address() + "?timeout=600ms");
    const std::string name = unique_name("timed-out-release");
    Lock lock = locks->acquire(name, opts(10s));
    BOOST_TEST(lock.renew().time_since_epoch().count() > 0);  // the connection is pooled now
    RawRedis raw(server.port());
    BOOST_TEST(raw.command({"CLIENT", "PAUSE", "2000", "WRITE"}) == "OK");
    const auto start = Clock::now();
    try {
        const bool was_held = lock.release();
        BOOST_ERROR("release returned " << was_held << " instead of reporting the timeout");
    } catch (const BackendUnavailable &e) {
        BOOST_TEST(std::string(e.what()).find("timeout") != std::string::npos, e.what());
    }
    const long long waited = ms_since(start);
    BOOST_TEST(waited >= 550);
    BOOST_TEST(waited < 1100, "the release was sent twice: " << waited << " ms");
    // The node dropped the paused command with its connection: once the
    // pause is over, releasing again finds the lease still held.
    std::this_thread::sleep_until(start + 2200ms);
    BOOST_TEST(lock.release());
    BOOST_TEST(locks->try_acquire(name, opts(1s)).has_value());
}

// An acquire whose reply is lost while the node is stalled (busy with a
// long script: it reads nothing meanwhile), and whose undoing fails for the
// same reason, is still run by the node when it goes on: it grants the
// request a lease that nobody holds. The client remembers such requests and
// undoes them before its next acquire, so the name does not stay taken
// for the ghost's whole TTL.
BOOST_AUTO_TEST_CASE(an_acquire_run_after_its_timeout_is_undone_by_the_next_call) {
    RedisServer server;
    const std::string url = "redis://" + server.address() + "?timeout=300ms&connect_timeout=300ms";
    auto locks = connect(url);
    const std::string name = unique_name("ghost");
    // The node knows the scripts (a fresh one would refuse the lost call
    // with NOSCRIPT), and the connection is pooled.
    BOOST_TEST(locks->acquire(name + "-warm", opts(10s)).release());
    std::thread stall([&] {
        RawRedis busy(server.port());
        busy.command({"EVAL",
                      "local t0 = redis.call('TIME') repeat local t = redis.call('TIME') "
                      "until (t[1] - t0[1]) * 1000000 + (t[2] - t0[2]) > 1500000 return 1",
                      "0"});
    });
    std::this_thread::sleep_for(200ms);  // the script is running
    const auto start = Clock::now();
    BOOST_CHECK_THROW(locks->try_acquire(name, opts(10s)), BackendUnavailable);
    stall.join();
    std::this_thread::sleep_for(100ms);  // the node runs what it was sent
    // Another client finds the name taken: the node granted the lost request.
    auto other = connect(url);
    BOOST_TEST(!other->try_acquire(name, opts(1s)).has_value());
    // The client that sent it undoes it first, and gets the name.
    std::optional<Lock> lock = locks->try_acquire(name, opts(10s));
    BOOST_TEST(lock.has_value());
    BOOST_TEST(ms_since(start) < 5000);
}

// Check that lock, valid on Redlock for 3000 ms less the drift allowance
// (ttl/100 + 2 ms = 32 ms) from a moment at or after from, is held shortly
// before that validity ends and not held after it (not the full ttl).
void check_held_for_the_validity(const Lock &lock, Clock::time_point from) {
    std::this_thread::sleep_until(from + 2900ms);
    const bool held_before = lock.is_held();
    std::this_thread::sleep_until(from + 2985ms);
    BOOST_TEST(held_before);
    BOOST_TEST(!lock.is_held());
}

// On Redlock a lease is valid for ttl less the drift allowance from the
// start of the round that got it; is_held() follows that, not the full ttl
// from the request.
BOOST_AUTO_TEST_CASE(redlock_is_held_follows_the_validity) {
    ThreeNodes nodes;
    auto locks = connect(nodes.url());
    Lock lock =
        locks->acquire(unique_name("validity"), opts(3000ms, 0ms, Mode::exclusive, 1, false));
    check_held_for_the_validity(lock, Clock::now());
}

// The same after a renewal, counted from the renewal's send.
BOOST_AUTO_TEST_CASE(redlock_is_held_after_a_renewal_follows_the_validity) {
    ThreeNodes nodes;
    auto locks = connect(nodes.url());
    Lock lock =
        locks->acquire(unique_name("validity-renew"), opts(1000ms, 0ms, Mode::exclusive, 1, false));
    const auto sent = Clock::now();
    lock.renew(3000ms);
    check_held_for_the_validity(lock, sent);
}

BOOST_AUTO_TEST_SUITE_END()
