// The in-memory backend's table under churn: many names of every length
// taken and given back in random order, checked against a plain model. It
// drives every path of the table's bookkeeping (its index growing, entries
// going idle, being evicted and reused, removals shifting neighbours back),
// which the conformance suite, with a few names per test, never reaches.
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "test_support.hpp"

using namespace lockext;
using namespace lockext::test;

BOOST_AUTO_TEST_SUITE(memory_backend, *boost::unit_test::precondition(lockext::test::LocalRun{}))

// Random tries and releases over 3,000 names (every length up to 128, many
// sharing prefixes and lengths): a try succeeds exactly when the model says the name
// is free, a release reports exactly what the model holds, and tokens rise.
BOOST_AUTO_TEST_CASE(table_matches_a_model_under_churn) {
    auto backend = detail::make_memory_backend();
    std::mt19937_64 rng(20240601);
    std::vector<std::string> names;
    // Every length from 1 to 128 with the same bytes: only the length tells them apart.
    for (std::size_t length = 1; length <= 128; length++)
        names.push_back(std::string(length, 'x'));
    // Distinct prefixes padded to random lengths with a shared filler.
    while (names.size() < 3000) {
        std::string name = "n" + std::to_string(names.size()) + ":";
        name.resize(std::max<std::size_t>(name.size(), 1 + rng() % 128), '-');
        names.push_back(name);
    }

    std::map<std::string, detail::Lease> held;  // the model
    std::int64_t last_token = 0;
    int grants = 0, refusals = 0, releases = 0;
    const LockOptions options{.ttl = std::chrono::minutes(10)};
    for (int op = 0; op < 200000; op++) {
        const std::string &name = names[rng() % names.size()];
        const auto it = held.find(name);
        // Release about half of what is held, so names keep going idle and coming back.
        if (it != held.end() && rng() % 2 == 0) {
            BOOST_REQUIRE(backend->release(it->second));
            BOOST_REQUIRE(!backend->release(it->second));  // a repeat finds nothing
            held.erase(it);
            releases++;
            continue;
        }
        std::optional<detail::Lease> lease = backend->acquire(name, options);
        BOOST_REQUIRE_EQUAL(lease.has_value(), it == held.end());
        if (lease) {
            BOOST_REQUIRE_EQUAL(lease->name, name);
            BOOST_REQUIRE_GT(lease->token, last_token);
            last_token = lease->token;
            held.emplace(name, std::move(*lease));
            grants++;
        } else {
            refusals++;
        }
    }
    // Everything still held is held, and renews; then it all goes back.
    for (auto &[name, lease] : held) {
        BOOST_REQUIRE(!backend->acquire(name, options).has_value());
        BOOST_REQUIRE(backend->renew(lease, std::chrono::minutes(10)).has_value());
        BOOST_REQUIRE(backend->release(lease));
    }
    for (const std::string &name : names) {
        std::optional<detail::Lease> lease = backend->acquire(name, options);
        BOOST_REQUIRE(lease.has_value());
        BOOST_REQUIRE(backend->release(*lease));
    }
    BOOST_TEST_MESSAGE(grants << " grants, " << refusals << " refusals, " << releases
                              << " releases");
    BOOST_TEST(grants > 10000);
    BOOST_TEST(refusals > 10000);
}

BOOST_AUTO_TEST_SUITE_END()
