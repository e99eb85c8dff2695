// The behaviour every backend must share, run against $LOCKEXT_TEST_URL
// (memory: when unset). Each concurrency test checks its invariant from its
// own records: sections never overlap, tokens only rise, nobody is lost.
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <latch>
#include <mutex>
#include <stdexcept>
#include <optional>
#include <thread>
#include <vector>

#include "test_support.hpp"

using namespace lockext;
using namespace lockext::test;

namespace {

// Whether the backend under test promises FIFO-fair waits (Redlock does
// not: its waiters are not queued, see the README).
bool backend_is_fifo(LockManager &locks) {
    return locks.backend() == "memory" || locks.backend() == "postgres" ||
           locks.backend() == "redis";
}

// A precondition: the backend under test promises FIFO-fair waits (the
// cases that need it are reported as skipped on Redlock, not as passed).
struct FifoBackend {
    // Whether the URL under test is not a Redlock one.
    boost::test_tools::assertion_result operator()(boost::unit_test::test_unit_id) const {
        boost::test_tools::assertion_result ok(!url().starts_with("redlock:"));
        ok.message() << "the backend under test does not promise FIFO waits";
        return ok;
    }
};

// Milliseconds since start.
long long ms_since(Clock::time_point start) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

}  // namespace

BOOST_AUTO_TEST_SUITE(conformance)

// Seed test 1, corrected: with a wait every thread gets the lock in turn, and
// a non-atomic read-sleep-write counter ends exactly at the thread count.
BOOST_AUTO_TEST_CASE(with_lock_serializes_waiters) {
    auto locks = manager();
    BOOST_TEST_MESSAGE("conformance: backend " << locks->backend());
    const std::string name = unique_name("serialize");
    constexpr int kThreads = 10;
    int counter = 0;  // deliberately not atomic: only the lock protects it
    OverlapCounter overlap;
    std::atomic<int> succeeded{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < kThreads; i++) {
        threads.emplace_back([&] {
            locks->with_lock(name, {.ttl = 10s, .wait = 20s}, [&] {
                auto inside = overlap.enter();
                const int seen = counter;
                std::this_thread::sleep_for(10ms);
                counter = seen + 1;
            });
            succeeded.fetch_add(1);
        });
    }
    for (auto &t : threads)
        t.join();
    BOOST_TEST(succeeded.load() == kThreads);
    BOOST_TEST(counter == kThreads);
    BOOST_TEST(overlap.max() == 1);
}

// Seed test 1, second half: without a wait exactly one of the threads gets
// it. The winner holds until every other thread has tried, so this does not
// depend on timing.
BOOST_AUTO_TEST_CASE(without_wait_exactly_one_wins) {
    auto locks = manager();
    const std::string name = unique_name("one-wins");
    constexpr int kThreads = 10;
    std::latch start(kThreads);
    std::latch others_done(kThreads - 1);
    std::atomic<int> won{0};
    std::atomic<int> refused{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < kThreads; i++) {
        threads.emplace_back([&] {
            start.arrive_and_wait();
            try {
                locks->with_lock(name, {.ttl = 10s}, [&] {
                    won.fetch_add(1);
                    others_done.wait();
                });
            } catch (const NotObtained &) {
                refused.fetch_add(1);
                others_done.count_down();
            }
        });
    }
    for (auto &t : threads)
        t.join();
    BOOST_TEST(won.load() == 1);
    BOOST_TEST(refused.load() == kThreads - 1);
}

// Seed test 2, corrected: the watchdog keeps a 2 s lease for 5 s, so it is
// still ours (is_held), still exclusive (a second try fails), and its token
// still releases it.
BOOST_AUTO_TEST_CASE(auto_renewal_keeps_the_lease) {
    auto locks = manager();
    auto other = manager();
    const std::string name = unique_name("renewal");
    Lock lock = locks->acquire(name, {.ttl = 2s});
    const auto first_expiry = lock.expires_at();
    std::this_thread::sleep_for(5s);
    BOOST_TEST(lock.is_held());
    BOOST_TEST((lock.expires_at() > first_expiry));
    BOOST_TEST(!other->try_acquire(name, {.ttl = 2s}).has_value());
    BOOST_TEST(lock.release());
}

// Seed test 3, corrected: the second acquirer gives up after its wait, not
// before and not much later.
BOOST_AUTO_TEST_CASE(acquire_gives_up_after_wait) {
    auto locks = manager();
    auto other = manager();
    const std::string name = unique_name("timeout");
    Lock held = locks->acquire(name, {.ttl = 10s});
    const auto start = Clock::now();
    BOOST_CHECK_THROW(other->acquire(name, {.ttl = 10s, .wait = 800ms}), NotObtained);
    const auto elapsed = ms_since(start);
    BOOST_TEST(elapsed >= 800);
    BOOST_TEST(elapsed < 1800);
    BOOST_TEST(held.is_held());
}

// Fencing tokens rise with every grant, on one name and across names.
BOOST_AUTO_TEST_CASE(tokens_strictly_increase) {
    auto locks = manager();
    const std::string names[] = {unique_name("tok-a"), unique_name("tok-b"), unique_name("tok-c")};
    std::int64_t last = 0;
    for (int i = 0; i < 30; i++) {
        Lock lock = locks->acquire(names[i % 3], {.ttl = 5s, .auto_renew = false});
        BOOST_TEST(lock.token() > last);
        last = lock.token();
    }
    // Concurrent grants on one name: in grant order (sections do not overlap,
    // so the order they are recorded in is the grant order).
    const std::string name = unique_name("tok-concurrent");
    std::mutex mu;
    std::vector<std::int64_t> seen;
    OverlapCounter overlap;
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; t++) {
        threads.emplace_back([&] {
            for (int i = 0; i < 10; i++) {
                Lock lock = locks->acquire(name, {.ttl = 5s, .wait = 20s});
                auto inside = overlap.enter();
                std::lock_guard<std::mutex> g(mu);
                seen.push_back(lock.token());
            }
        });
    }
    for (auto &t : threads)
        t.join();
    BOOST_TEST(overlap.max() == 1);
    BOOST_TEST(seen.size() == 40u);
    for (std::size_t i = 1; i < seen.size(); i++)
        BOOST_TEST(seen[i] > seen[i - 1]);
    BOOST_TEST(seen.front() > last);
}

// A lease that is not renewed runs out: another acquirer gets the lock with a
// larger token, and the old holder finds out it lost it.
BOOST_AUTO_TEST_CASE(expired_lease_is_taken_over) {
    auto locks = manager();
    auto other = manager();
    const std::string name = unique_name("takeover");
    Lock old = locks->acquire(name, {.ttl = 300ms, .auto_renew = false});
    const auto start = Clock::now();
    Lock next = other->acquire(name, {.ttl = 10s, .wait = 5s});
    BOOST_TEST(ms_since(start) >= 200);  // only after the old lease ran out
    BOOST_TEST(next.token() > old.token());
    BOOST_CHECK_THROW(old.renew(), LockLost);
    BOOST_TEST(!old.is_held());
    BOOST_TEST(!old.release());
    BOOST_TEST(next.is_held());
    BOOST_TEST(next.release());
}

// A lease obtained after a wait longer than its TTL is held on return, and
// for about its TTL from then: its local deadline counts from the grant, not
// from the request that waited for it (with and without the watchdog).
BOOST_AUTO_TEST_CASE(lease_after_a_long_wait_is_held) {
    for (const bool renew : {false, true}) {
        BOOST_TEST_CONTEXT("auto_renew " << renew) {
            auto locks = manager();
            auto other = manager();
            const std::string name = unique_name("long-wait");
            std::optional<Lock> first = locks->acquire(name, {.ttl = 10s});
            std::thread releaser([&] {
                std::this_thread::sleep_for(900ms);
                first.reset();
            });
            Lock second = other->acquire(name, {.ttl = 400ms, .wait = 5s, .auto_renew = renew});
            const auto got_at = Clock::now();
            releaser.join();
            BOOST_TEST(second.is_held());
            std::this_thread::sleep_for(150ms);
            BOOST_TEST(second.is_held());
            BOOST_TEST(ms_since(got_at) < 400);  // (the checks above ran within its TTL)
            BOOST_TEST(second.release());
        }
    }
}

// A lost lease is loud: renew throws, is_held is false, on_lost runs once and
// the lost token fires.
BOOST_AUTO_TEST_CASE(lost_lease_is_reported) {
    auto locks = manager();
    auto other = manager();
    const std::string name = unique_name("lost");
    Lock lock = locks->acquire(name, {.ttl = 300ms, .auto_renew = false});
    std::atomic<int> fired{0};
    lock.on_lost([&] { fired.fetch_add(1); });
    std::stop_token lost = lock.lost_token();
    BOOST_TEST(!lost.stop_requested());
    Lock taker = other->acquire(name, {.ttl = 10s, .wait = 5s});
    BOOST_CHECK_THROW(lock.renew(), LockLost);
    BOOST_TEST(!lock.is_held());
    BOOST_TEST(fired.load() == 1);
    BOOST_TEST(lost.stop_requested());
    BOOST_CHECK_THROW(lock.renew(), LockLost);
    BOOST_TEST(fired.load() == 1);  // once, not per discovery
    // A callback added after the loss runs at once.
    std::atomic<int> late{0};
    lock.on_lost([&] { late.fetch_add(1); });
    BOOST_TEST(late.load() == 1);
    BOOST_TEST(lock.lost_token().stop_requested());
    BOOST_TEST(taker.is_held());
}

// An on_lost callback may destroy the Lock it watches, even while the
// renew() that found the loss is still running; renew() still reports the
// loss with the lock's name (the state must not be read after the callback).
BOOST_AUTO_TEST_CASE(on_lost_may_destroy_the_lock_during_renew) {
    auto locks = manager();
    auto other = manager();
    const std::string name = unique_name("destroyed-by-callback-with-a-long-name");
    std::optional<Lock> holder = locks->acquire(name, {.ttl = 300ms, .auto_renew = false});
    Lock &lock = *holder;
    holder->on_lost([&] { holder.reset(); });
    Lock taker = other->acquire(name, {.ttl = 10s, .wait = 5s});
    try {
        lock.renew();
        BOOST_FAIL("renew() of a lost lease did not throw");
    } catch (const LockLost &e) {
        BOOST_TEST(std::string(e.what()).find(name) != std::string::npos, e.what());
    }
    BOOST_TEST(!holder.has_value());
    BOOST_TEST(taker.is_held());
}

// A TTL too long for the backend is refused with InvalidArgument; a backend
// that accepts it keeps the lease that long. Never a TTL that wraps into a
// short one (the client would count on a lease the backend dropped).
BOOST_AUTO_TEST_CASE(huge_ttls_are_refused_or_kept) {
    auto locks = manager();
    auto other = manager();
    const std::string name = unique_name("huge-ttl");
    for (const std::chrono::milliseconds ttl :
         {std::chrono::milliseconds::max(), std::chrono::milliseconds(18446744073709552LL),
          std::chrono::milliseconds(std::chrono::hours(24 * 365 * 300))}) {
        BOOST_TEST_CONTEXT("ttl " << ttl.count() << " ms") {
            std::optional<Lock> lock;
            try {
                lock = locks->try_acquire(name, {.ttl = ttl, .auto_renew = false});
            } catch (const InvalidArgument &) {
                continue;  // refused, and nothing taken: checked below
            }
            BOOST_REQUIRE(lock.has_value());
            std::this_thread::sleep_for(50ms);
            BOOST_TEST(!other->try_acquire(name, {.ttl = 10s}).has_value());
            BOOST_TEST(lock->is_held());
            BOOST_TEST((lock->expires_at() > std::chrono::system_clock::now() + 24h));
            BOOST_TEST(lock->release());
        }
    }
    Lock lock = locks->acquire(name, {.ttl = 10s, .auto_renew = false});  // nothing was left held
    try {
        lock.renew(std::chrono::milliseconds::max());
        BOOST_TEST((lock.expires_at() > std::chrono::system_clock::now() + 24h));
    } catch (const InvalidArgument &) {
    }
    BOOST_TEST(lock.is_held());
    BOOST_TEST(!other->try_acquire(name, {.ttl = 10s}).has_value());
}

// Shared holders coexist and exclude an exclusive one; a queued exclusive
// request is not overtaken by later shared ones.
BOOST_AUTO_TEST_CASE(shared_mode) {
    auto locks = manager();
    auto other = manager();
    const std::string name = unique_name("shared");
    const LockOptions shared{.ttl = 10s, .mode = Mode::shared};
    std::vector<Lock> readers;
    for (int i = 0; i < 3; i++) {
        auto lock = other->try_acquire(name, shared);
        BOOST_REQUIRE(lock.has_value());
        BOOST_TEST(lock->mode() == Mode::shared);
        readers.push_back(std::move(*lock));
    }
    BOOST_TEST(!locks->try_acquire(name, {.ttl = 10s}).has_value());
    if (backend_is_fifo(*locks)) {
        std::atomic<bool> writer_got{false};
        std::thread writer([&] {
            Lock w = locks->acquire(name, {.ttl = 10s, .wait = 10s});
            writer_got = true;
        });
        std::this_thread::sleep_for(300ms);  // let the writer queue
        BOOST_TEST(!other->try_acquire(name, shared).has_value());
        BOOST_TEST(!writer_got.load());
        readers.clear();
        writer.join();
        BOOST_TEST(writer_got.load());
    } else {
        readers.clear();
    }
    BOOST_TEST(locks->try_acquire(name, {.ttl = 10s}).has_value());
}

// When a queued exclusive request gives up, the shared requests queued behind
// it are let in at once (they were only waiting for their turn).
BOOST_AUTO_TEST_CASE(timed_out_head_lets_compatible_waiters_in,
                     *boost::unit_test::precondition(FifoBackend{})) {
    auto locks = manager();
    auto writer_client = manager();
    auto reader_client = manager();
    const std::string name = unique_name("head-timeout");
    Lock first_reader = locks->acquire(name, {.ttl = 10s, .mode = Mode::shared});
    const auto start = Clock::now();
    std::atomic<bool> writer_refused{false};  // Boost.Test asserts only on this thread
    std::thread writer([&] {
        try {
            writer_client->acquire(name, {.ttl = 10s, .wait = 400ms});
        } catch (const NotObtained &) {
            writer_refused = true;
        }
    });
    std::this_thread::sleep_for(150ms);  // the writer is queued first
    Lock second_reader =
        reader_client->acquire(name, {.ttl = 10s, .wait = 5s, .mode = Mode::shared});
    const auto waited = ms_since(start);
    writer.join();
    BOOST_TEST(writer_refused.load());
    BOOST_TEST(waited >= 350);  // not before the writer gave up (FIFO)
    BOOST_TEST(waited < 2000);  // but right after, while the first reader still holds
    BOOST_TEST(first_reader.is_held());
    BOOST_TEST(second_reader.is_held());
}

// When the head of the queue gives up, the waiter behind it looks again:
// it may be sleeping until an expiry that a renewal has since brought
// forward (a renewal wakes only the head of the moment).
BOOST_AUTO_TEST_CASE(the_next_waiter_sees_a_shortened_lease_after_the_head_gives_up,
                     *boost::unit_test::precondition(FifoBackend{})) {
    auto holder_client = manager();
    auto head_client = manager();
    auto next_client = manager();
    const std::string name = unique_name("head-gives-up");
    const auto start = Clock::now();
    Lock holder = holder_client->acquire(name, {.ttl = 8s, .auto_renew = false});
    std::atomic<bool> head_refused{false};
    std::thread head([&] {
        try {
            head_client->acquire(name, {.ttl = 10s, .wait = 500ms});
        } catch (const NotObtained &) {
            head_refused = true;
        }
    });
    std::this_thread::sleep_for(150ms);  // the head is queued first
    std::atomic<long long> got_at{-1};
    std::thread next([&] {
        try {
            Lock l = next_client->acquire(name, {.ttl = 10s, .wait = 15s});
            got_at = ms_since(start);
        } catch (const Error &) {
        }
    });
    std::this_thread::sleep_for(150ms);  // queued behind the head, asleep until 8 s
    holder.renew(700ms);                 // now ends about 1 s after start
    head.join();
    next.join();
    BOOST_TEST(head_refused.load());
    BOOST_TEST(got_at.load() >= 900);
    BOOST_TEST(got_at.load() < 4000,
               "the next waiter slept until the old expiry: " << got_at.load() << " ms");
}

// Readers and writers hammering one name: a writer is always alone, readers
// never see a writer, and nothing is lost.
BOOST_AUTO_TEST_CASE(readers_and_writers_never_overlap) {
    auto locks = manager();
    const std::string name = unique_name("rw");
    std::atomic<int> readers{0}, writers{0}, violations{0}, done{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; t++) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < 40; i++) {
                const bool write = (i + t) % 3 == 0;
                const LockOptions opts{
                    .ttl = 10s, .wait = 30s, .mode = write ? Mode::exclusive : Mode::shared};
                locks->with_lock(name, opts, [&] {
                    if (write) {
                        if (writers.fetch_add(1) != 0 || readers.load() != 0)
                            violations.fetch_add(1);
                        std::this_thread::sleep_for(200us);
                        writers.fetch_sub(1);
                    } else {
                        readers.fetch_add(1);
                        if (writers.load() != 0)
                            violations.fetch_add(1);
                        std::this_thread::sleep_for(200us);
                        readers.fetch_sub(1);
                    }
                });
                done.fetch_add(1);
            }
        });
    }
    for (auto &t : threads)
        t.join();
    BOOST_TEST(done.load() == 160);
    BOOST_TEST(violations.load() == 0);
}

// A semaphore admits max_holders at once and not one more; concurrently, never
// more than max_holders are inside.
BOOST_AUTO_TEST_CASE(semaphore_mode) {
    auto locks = manager();
    const std::string name = unique_name("semaphore");
    const LockOptions sem{.ttl = 10s, .mode = Mode::semaphore, .max_holders = 3};
    std::vector<Lock> held;
    for (int i = 0; i < 3; i++) {
        auto lock = locks->try_acquire(name, sem);
        BOOST_REQUIRE(lock.has_value());
        held.push_back(std::move(*lock));
    }
    BOOST_TEST(!locks->try_acquire(name, sem).has_value());
    held.front().release();
    BOOST_TEST(locks->try_acquire(name, sem).has_value());
    held.clear();

    const std::string busy = unique_name("semaphore-busy");
    LockOptions two{.ttl = 10s, .wait = 20s, .mode = Mode::semaphore, .max_holders = 2};
    OverlapCounter overlap;
    std::vector<std::thread> threads;
    for (int t = 0; t < 6; t++) {
        threads.emplace_back([&] {
            for (int i = 0; i < 3; i++) {
                locks->with_lock(busy, two, [&] {
                    auto inside = overlap.enter();
                    std::this_thread::sleep_for(5ms);
                });
            }
        });
    }
    for (auto &t : threads)
        t.join();
    BOOST_TEST(overlap.entries() == 18);
    BOOST_TEST(overlap.max() <= 2);
}

// While a name is in use its kind is fixed: semaphore vs exclusive/shared,
// and the semaphore's max_holders. Once free it can be anything.
BOOST_AUTO_TEST_CASE(mixing_kinds_is_rejected) {
    auto locks = manager();
    const std::string name = unique_name("mix");
    {
        Lock ex = locks->acquire(name, {.ttl = 10s});
        BOOST_CHECK_THROW(
            locks->try_acquire(name, {.ttl = 10s, .mode = Mode::semaphore, .max_holders = 2}),
            InvalidArgument);
    }
    {
        const LockOptions sem2{.ttl = 10s, .mode = Mode::semaphore, .max_holders = 2};
        Lock s = locks->acquire(name, sem2);
        BOOST_CHECK_THROW(
            locks->try_acquire(name, {.ttl = 10s, .mode = Mode::semaphore, .max_holders = 3}),
            InvalidArgument);
        BOOST_CHECK_THROW(locks->try_acquire(name, {.ttl = 10s}), InvalidArgument);
        BOOST_CHECK_THROW(locks->try_acquire(name, {.ttl = 10s, .mode = Mode::shared}),
                          InvalidArgument);
    }
    // Free again: any kind goes.
    BOOST_TEST(locks->try_acquire(name, {.ttl = 10s, .mode = Mode::shared}).has_value());
}

// release() is idempotent and never throws for a lease already gone.
BOOST_AUTO_TEST_CASE(release_is_idempotent) {
    auto locks = manager();
    const std::string name = unique_name("release");
    Lock lock = locks->acquire(name, {.ttl = 10s});
    BOOST_TEST(lock.is_held());
    BOOST_TEST(lock.release());
    BOOST_TEST(!lock.is_held());
    BOOST_TEST(!lock.release());
    BOOST_CHECK_THROW(lock.renew(), LockLost);
    BOOST_TEST(locks->try_acquire(name, {.ttl = 10s}).has_value());
}

// The destructor releases.
BOOST_AUTO_TEST_CASE(destructor_releases) {
    auto locks = manager();
    auto other = manager();
    const std::string name = unique_name("destructor");
    {
        Lock lock = locks->acquire(name, {.ttl = 30s});
        BOOST_TEST(!other->try_acquire(name, {.ttl = 10s}).has_value());
    }
    BOOST_TEST(other->try_acquire(name, {.ttl = 10s}).has_value());
}

// A moved-from Lock is inert; move-assignment releases the lease it replaces.
BOOST_AUTO_TEST_CASE(moved_from_lock_is_inert) {
    auto locks = manager();
    auto other = manager();
    const std::string a_name = unique_name("move-a");
    const std::string b_name = unique_name("move-b");
    Lock a = locks->acquire(a_name, {.ttl = 10s});
    const std::int64_t token = a.token();
    Lock moved = std::move(a);
    BOOST_TEST(!a.is_held());  // NOLINT(bugprone-use-after-move): that is the point
    BOOST_TEST(!a.release());
    BOOST_TEST(a.token() == 0);
    BOOST_TEST(a.name().empty());
    BOOST_CHECK_THROW(a.renew(), LockLost);
    a.on_lost([] {});
    BOOST_TEST(!a.lost_token().stop_possible());
    BOOST_TEST(moved.is_held());
    BOOST_TEST(moved.token() == token);
    BOOST_TEST(moved.name() == a_name);

    Lock b = locks->acquire(b_name, {.ttl = 10s});
    b = std::move(moved);  // releases b_name
    BOOST_TEST(other->try_acquire(b_name, {.ttl = 10s}).has_value());
    BOOST_TEST(b.name() == a_name);
    BOOST_TEST(b.is_held());
    BOOST_TEST(!other->try_acquire(a_name, {.ttl = 10s}).has_value());
    BOOST_TEST(b.release());
}

// with_lock hands fn a stop token (not fired on a healthy lease), returns
// fn's value and releases afterwards.
BOOST_AUTO_TEST_CASE(with_lock_passes_stop_token) {
    auto locks = manager();
    const std::string name = unique_name("with-lock");
    const int result = locks->with_lock(name, {.ttl = 10s}, [&](std::stop_token lost) {
        BOOST_TEST(lost.stop_possible());
        BOOST_TEST(!lost.stop_requested());
        BOOST_TEST(!locks->try_acquire(name, {.ttl = 10s}).has_value());
        return 42;
    });
    BOOST_TEST(result == 42);
    BOOST_TEST(locks->try_acquire(name, {.ttl = 10s}).has_value());
}

// If the lease ran out while fn ran, the section was not protected to its
// end: with_lock says so with LockLost.
BOOST_AUTO_TEST_CASE(with_lock_throws_when_lost_during_fn) {
    auto locks = manager();
    auto other = manager();
    const std::string name = unique_name("with-lock-lost");
    std::int64_t taker_token = 0;
    BOOST_CHECK_THROW(locks->with_lock(name, {.ttl = 300ms, .auto_renew = false},
                                       [&] {
                                           Lock taker =
                                               other->acquire(name, {.ttl = 10s, .wait = 5s});
                                           taker_token = taker.token();
                                       }),
                      LockLost);
    BOOST_TEST(taker_token > 0);
}

// with_lock releases when fn throws, and lets the exception through.
BOOST_AUTO_TEST_CASE(with_lock_releases_on_exception) {
    auto locks = manager();
    const std::string name = unique_name("with-lock-throw");
    BOOST_CHECK_THROW(
        locks->with_lock(name, {.ttl = 10s}, [] { throw std::runtime_error("section failed"); }),
        std::runtime_error);
    BOOST_TEST(locks->try_acquire(name, {.ttl = 10s}).has_value());
}

// acquire_all takes every lock, sorted and de-duplicated, or none.
BOOST_AUTO_TEST_CASE(acquire_all_is_all_or_none) {
    auto locks = manager();
    auto other = manager();
    const std::string a = unique_name("all-a"), b = unique_name("all-b"), c = unique_name("all-c");
    {
        auto all = locks->acquire_all({c, a, b, a}, {.ttl = 10s});
        BOOST_REQUIRE(all.size() == 3u);
        BOOST_TEST(all[0].name() == a);
        BOOST_TEST(all[1].name() == b);
        BOOST_TEST(all[2].name() == c);
        for (auto &l : all)
            BOOST_TEST(l.is_held());
    }
    Lock blocker = other->acquire(b, {.ttl = 10s});
    const auto start = Clock::now();
    BOOST_CHECK_THROW(locks->acquire_all({c, a, b}, {.ttl = 10s, .wait = 300ms}), NotObtained);
    BOOST_TEST(ms_since(start) >= 250);
    // None is left held: the other client can take the two that were free.
    BOOST_TEST(other->try_acquire(a, {.ttl = 10s}).has_value());
    BOOST_TEST(other->try_acquire(c, {.ttl = 10s}).has_value());
}

// Two threads taking the same names listed in opposite orders never deadlock,
// because acquire_all takes them in one canonical order.
BOOST_AUTO_TEST_CASE(acquire_all_canonical_order) {
    auto locks = manager();
    const std::vector<std::string> names = {unique_name("order-x"), unique_name("order-y"),
                                            unique_name("order-z")};
    std::vector<std::string> reversed(names.rbegin(), names.rend());
    OverlapCounter overlap;
    auto worker = [&](std::vector<std::string> list) {
        for (int i = 0; i < 20; i++) {
            auto all = locks->acquire_all(list, {.ttl = 10s, .wait = 20s});
            auto inside = overlap.enter();
            std::this_thread::sleep_for(1ms);
        }
    };
    std::thread t1(worker, names);
    std::thread t2(worker, reversed);
    t1.join();
    t2.join();
    BOOST_TEST(overlap.entries() == 40);
    BOOST_TEST(overlap.max() == 1);
}

namespace {

// Queue five waiters one after another behind a holder and return the order
// in which they got the lock. shared_client: all waiters use the holder's
// manager (on postgres: one connection pool, more waiters than connections);
// otherwise each waiter is its own client.
std::vector<int> fifo_order(bool shared_client) {
    auto locks = manager();
    const std::string name = unique_name("fifo");
    Lock holder = locks->acquire(name, {.ttl = 10s});
    constexpr int kWaiters = 5;
    std::vector<std::unique_ptr<LockManager>> clients;
    for (int i = 0; i < kWaiters && !shared_client; i++)
        clients.push_back(manager());
    std::mutex mu;
    std::vector<int> order;
    std::vector<std::thread> waiters;
    for (int i = 0; i < kWaiters; i++) {
        LockManager &client = shared_client ? *locks : *clients[i];
        waiters.emplace_back([&, i] {
            Lock lock = client.acquire(name, {.ttl = 10s, .wait = 20s});
            std::lock_guard<std::mutex> g(mu);
            order.push_back(i);
        });
        std::this_thread::sleep_for(150ms);  // queue them one after another
    }
    holder.release();
    for (auto &t : waiters)
        t.join();
    return order;
}

}  // namespace

// Waiters from different clients get the lock in the order they queued
// (memory and postgres).
BOOST_AUTO_TEST_CASE(fifo_fairness_across_clients, *boost::unit_test::precondition(FifoBackend{})) {
    BOOST_TEST(fifo_order(false) == (std::vector<int>{0, 1, 2, 3, 4}),
               boost::test_tools::per_element());
}

// The same through one shared manager: its waits must reach the store in the
// order they were asked for, even with more waiters than pooled connections.
BOOST_AUTO_TEST_CASE(fifo_fairness_one_client, *boost::unit_test::precondition(FifoBackend{})) {
    BOOST_TEST(fifo_order(true) == (std::vector<int>{0, 1, 2, 3, 4}),
               boost::test_tools::per_element());
}

// Every option check throws InvalidArgument (and nothing is acquired).
BOOST_AUTO_TEST_CASE(bad_input_is_rejected) {
    auto locks = manager();
    const std::string name = unique_name("bad");
    const std::string long_name(129, 'x');
    BOOST_CHECK_THROW(locks->try_acquire("", {}), InvalidArgument);
    BOOST_CHECK_THROW(locks->try_acquire(long_name, {}), InvalidArgument);
    BOOST_CHECK_THROW(locks->try_acquire(std::string("a\0b", 3), {}), InvalidArgument);
    BOOST_CHECK_THROW(locks->try_acquire(name, {.owner = std::string(129, 'o')}), InvalidArgument);
    BOOST_CHECK_THROW(locks->try_acquire(name, {.ttl = 0ms}), InvalidArgument);
    BOOST_CHECK_THROW(locks->try_acquire(name, {.ttl = -1ms}), InvalidArgument);
    BOOST_CHECK_THROW(locks->try_acquire(name, {.wait = -1ms}), InvalidArgument);
    BOOST_CHECK_THROW(locks->try_acquire(name, {.mode = Mode::semaphore, .max_holders = 0}),
                      InvalidArgument);
    BOOST_CHECK_THROW(locks->try_acquire(name, {.max_holders = 2}), InvalidArgument);
    BOOST_CHECK_THROW(locks->try_acquire(name, {.mode = Mode::shared, .max_holders = 2}),
                      InvalidArgument);
    BOOST_CHECK_THROW(locks->try_acquire(name, {.mode = static_cast<Mode>(7)}), InvalidArgument);
    BOOST_CHECK_THROW(locks->try_acquire(name, {.retry = {.initial = 0ms}}), InvalidArgument);
    BOOST_CHECK_THROW(locks->try_acquire(name, {.retry = {.initial = 100ms, .max = 10ms}}),
                      InvalidArgument);
    BOOST_CHECK_THROW(locks->acquire(name, {.ttl = 0ms}), InvalidArgument);
    BOOST_CHECK_THROW(locks->with_lock(name, {.ttl = 0ms}, [] {}), InvalidArgument);
    BOOST_CHECK_THROW(locks->acquire_all({name, ""}, {}), InvalidArgument);
    BOOST_CHECK_THROW(locks->acquire_all({name}, {.wait = -5ms}), InvalidArgument);
    // Nothing was taken by the failed calls.
    Lock lock = locks->acquire(name, {.ttl = 10s});
    BOOST_CHECK_THROW(lock.renew(0ms), InvalidArgument);
    BOOST_CHECK_THROW(lock.renew(-5ms), InvalidArgument);
    BOOST_TEST(lock.is_held());
    // The limits themselves are fine.
    BOOST_TEST(
        locks->try_acquire(std::string(128, 'n') + "", {.ttl = 10s, .owner = std::string(128, 'o')})
            .has_value());
}

// connect() rejects malformed and unknown URLs with InvalidArgument.
BOOST_AUTO_TEST_CASE(connect_rejects_bad_urls) {
    for (const char *bad :
         {"", "foo://x", "postgres", "memory:extra", "://x", "1abc://x", "not a url", ":"}) {
        BOOST_TEST_CONTEXT("url '" << bad << "'") {
            BOOST_CHECK_THROW(connect(bad), InvalidArgument);
        }
    }
}

// connect() without a URL reads LOCKEXT_URL and falls back to memory:.
BOOST_AUTO_TEST_CASE(connect_falls_back_to_memory) {
    const char *saved = std::getenv("LOCKEXT_URL");
    const std::string saved_value = saved ? saved : "";
    unsetenv("LOCKEXT_URL");
    BOOST_TEST(connect()->backend() == "memory");
    setenv("LOCKEXT_URL", "", 1);
    BOOST_TEST(connect()->backend() == "memory");
    setenv("LOCKEXT_URL", "memory:", 1);
    BOOST_TEST(connect()->backend() == "memory");
    setenv("LOCKEXT_URL", "foo://nowhere", 1);
    BOOST_CHECK_THROW(connect(), InvalidArgument);
    if (saved)
        setenv("LOCKEXT_URL", saved_value.c_str(), 1);
    else
        unsetenv("LOCKEXT_URL");
    // Every memory: manager of the process shares one store.
    auto a = connect("memory:");
    auto b = connect("memory:");
    const std::string name = unique_name("shared-store");
    Lock lock = a->acquire(name, {.ttl = 10s});
    BOOST_TEST(!b->try_acquire(name, {.ttl = 10s}).has_value());
}

// A Lock outlives its manager: it is still renewed and still releases.
BOOST_AUTO_TEST_CASE(lock_outlives_manager) {
    auto other = manager();
    const std::string name = unique_name("outlives");
    std::optional<Lock> lock;
    {
        auto locks = manager();
        lock.emplace(locks->acquire(name, {.ttl = 300ms}));
    }
    std::this_thread::sleep_for(800ms);
    BOOST_TEST(lock->is_held());
    BOOST_TEST(!other->try_acquire(name, {.ttl = 10s}).has_value());
    BOOST_TEST(lock->release());
}

BOOST_AUTO_TEST_SUITE_END()
