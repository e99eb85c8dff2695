// The postgres backend through a real PgBouncer in transaction mode
// ($LOCKEXT_TEST_PGBOUNCER_URL, started by scripts/run_client_tests.sh with
// two server connections), where consecutive statements of one client
// connection may run on different server connections. Runs once per build,
// on the memory: run.
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <cstdlib>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "lockext/lockext.hpp"
#include "test_support.hpp"

using namespace lockext;
using namespace lockext::test;

namespace {

// The pooler's URL as the test command gives it (no lockext_pooling).
std::string pooler_url() {
    const char *u = std::getenv("LOCKEXT_TEST_PGBOUNCER_URL");
    return u ? std::string(u) : std::string();
}

// The same with the client told about the pooler.
std::string pooled_url() {
    return pooler_url() + "&lockext_pooling=transaction";
}

// A precondition: a pooler was started for this run, and this is the
// memory: run (the suite tests the postgres backend on its own URL).
struct PoolerRun {
    // Whether $LOCKEXT_TEST_PGBOUNCER_URL is set on the memory: run.
    boost::test_tools::assertion_result operator()(boost::unit_test::test_unit_id) const {
        boost::test_tools::assertion_result ok(!pooler_url().empty() &&
                                               url().starts_with("memory:"));
        ok.message() << "needs LOCKEXT_TEST_PGBOUNCER_URL; runs once per build";
        return ok;
    }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(pgbouncer, *boost::unit_test::precondition(PoolerRun{}))

// Without lockext_pooling the pooler refuses the client's startup options;
// the error says what to add to the URL.
BOOST_AUTO_TEST_CASE(without_the_parameter_connect_says_what_to_add) {
    std::string message;
    try {
        connect(pooler_url());
    } catch (const InvalidArgument &e) {
        message = e.what();
    }
    BOOST_TEST(message.find("lockext_pooling=transaction") != std::string::npos,
               "message: " << message);
}

// Four client connections over two server connections: every try, renewal
// and release may run on either server connection. Sections never overlap,
// each token is higher than the one before it, and a counter incremented
// non-atomically inside ends exact.
BOOST_AUTO_TEST_CASE(locks_hold_through_a_transaction_pooler) {
    auto locks = connect(pooled_url(), {.pool_size = 4});
    const std::string name = unique_name("pgbouncer");
    constexpr int kThreads = 4, kRounds = 40;
    OverlapCounter overlap;
    std::mutex log_mu;
    std::vector<std::int64_t> tokens;  // in section order
    long counter = 0;
    std::atomic<int> failures{0};  // releases that found the lease gone, errors
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&] {
            try {
                for (int done = 0; done < kRounds;) {
                    std::optional<Lock> lock = locks->try_acquire(name, {.ttl = 10s});
                    if (!lock) {
                        std::this_thread::sleep_for(1ms);
                        continue;
                    }
                    {
                        auto inside = overlap.enter();
                        {
                            std::lock_guard<std::mutex> g(log_mu);
                            tokens.push_back(lock->token());
                        }
                        const long seen = counter;
                        lock->renew();
                        counter = seen + 1;
                    }
                    if (!lock->release())
                        ++failures;
                    ++done;
                }
            } catch (const std::exception &) {
                ++failures;
            }
        });
    }
    for (auto &t : threads)
        t.join();
    BOOST_TEST(failures.load() == 0);
    BOOST_TEST(overlap.max() == 1);
    BOOST_TEST(counter == kThreads * kRounds);
    BOOST_REQUIRE_EQUAL(tokens.size(), static_cast<std::size_t>(kThreads * kRounds));
    for (std::size_t i = 1; i < tokens.size(); ++i)
        BOOST_TEST(tokens[i] > tokens[i - 1]);
}

// A wait in the server through the pooler: the waiter keeps one server
// connection for its wait, the holder releases on the other, and the waiter
// gets the lock then, with a higher token.
BOOST_AUTO_TEST_CASE(a_wait_through_the_pooler_gets_the_lock_on_release) {
    auto locks = connect(pooled_url());
    const std::string name = unique_name("pgbouncer-wait");
    Lock holder = locks->acquire(name, {.ttl = 20s});
    auto waiter = std::async(std::launch::async,
                             [&] { return locks->try_acquire(name, {.ttl = 20s, .wait = 15s}); });
    BOOST_TEST((waiter.wait_for(300ms) == std::future_status::timeout));
    BOOST_TEST(holder.release());
    std::optional<Lock> got = waiter.get();
    BOOST_REQUIRE(got.has_value());
    BOOST_TEST(got->token() > holder.token());
    BOOST_TEST(got->release());
}

BOOST_AUTO_TEST_SUITE_END()
