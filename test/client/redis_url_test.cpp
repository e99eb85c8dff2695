// redis:// and redlock:// URLs that need no server: malformed ones are
// InvalidArgument (never echoing a password), rediss:// names the missing TLS,
// and a node nobody listens on is BackendUnavailable within the connect
// timeout. These run once per build, on the memory: run.
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <netdb.h>

#include <string>
#include <thread>

#include "lockext/lockext.hpp"
#include "redis_connection.hpp"
#include "redis_test_support.hpp"
#include "test_support.hpp"

using namespace lockext;
using namespace lockext::test;

BOOST_AUTO_TEST_SUITE(redis_urls, *boost::unit_test::precondition(lockext::test::LocalRun{}))

// Every malformed form is InvalidArgument, and its message never shows the password.
BOOST_AUTO_TEST_CASE(malformed_urls_are_invalid_argument) {
    const char *bad[] = {
        "redis://",                                      // no host
        "redis://:6379",                                 // empty host
        "redis://localhost:0",                           // port out of range
        "redis://localhost:65536",                       // port out of range
        "redis://localhost:63a9",                        // port not a number
        "redis://localhost:",                            // empty port
        "redis://localhost:6379/x",                      // db not a number
        "redis://localhost:6379/-1",                     // negative db
        "redis://localhost:6379?foo=1",                  // unknown parameter
        "redis://localhost:6379?timeout=0",              // zero timeout
        "redis://localhost:6379?timeout=soon",           // not a duration
        "redis://localhost:6379?timeout=2h",             // unknown unit
        "redis://localhost:6379?timeout=1s&timeout=2s",  // given twice
        "redis://localhost:6379?connect_timeout=7200s",  // over an hour
        "redis://a:1,b:2",                               // several hosts need redlock://
        "redlock://",                                    // empty host list
        "redlock://a:1,,b:2",                            // empty entry
        "redlock://a:1,a:1",                             // a node counted twice
        "redlock://Node1:1,node1:1,b:2",                 // the same node, other case
        "redis://user:s3cret?x@localhost:1?x=1",         // unencoded '?' in the password
        "redlock://[::1:1",                              // unclosed IPv6 bracket
        "redis://s3cret@localhost:1",                    // password without ':'
        "redis://:s3cret@localhost:99999",               // bad port after a password
        "redis://:s3cret@localhost:1?x=1",               // bad parameter after a password
        "redis://:s3%zzcret@localhost:1",                // bad percent-encoding
        "redis://localhost:6379#frag",                   // fragment
    };
    for (const char *url : bad) {
        BOOST_TEST_CONTEXT("url '" << url << "'") {
            try {
                connect(url);
                BOOST_ERROR("accepted");
            } catch (const InvalidArgument &e) {
                BOOST_TEST(std::string(e.what()).find("s3cret") == std::string::npos);
            } catch (const std::exception &e) {
                BOOST_ERROR("wrong error type: " << e.what());
            }
        }
    }
}

// rediss:// is refused up front, naming TLS, whatever the host.
BOOST_AUTO_TEST_CASE(rediss_names_missing_tls) {
    try {
        connect("rediss://:pw@127.0.0.1:6380");
        BOOST_ERROR("rediss:// was accepted");
    } catch (const InvalidArgument &e) {
        BOOST_TEST(std::string(e.what()).find("TLS") != std::string::npos);
    }
}

// Nobody listening: BackendUnavailable naming the node, at once for a refused
// connection and within connect_timeout for an address that does not answer.
BOOST_AUTO_TEST_CASE(unreachable_nodes_are_backend_unavailable) {
    const int port = free_port();
    const std::string node = "127.0.0.1:" + std::to_string(port);
    auto start = Clock::now();
    try {
        connect("redis://" + node + "?connect_timeout=500ms");
        BOOST_ERROR("connected to nothing");
    } catch (const BackendUnavailable &e) {
        BOOST_TEST(std::string(e.what()).find(node) != std::string::npos);
        BOOST_TEST(std::string(e.what()).find("unreachable") != std::string::npos);
    }
    BOOST_TEST(ms_since(start) < 2000);
    // An unencoded '?' in the password is part of the password, not a query.
    try {
        connect("redis://user:pa?ss@" + node + "?connect_timeout=500ms");
        BOOST_ERROR("connected to nothing");
    } catch (const BackendUnavailable &e) {
        BOOST_TEST(std::string(e.what()).find(node) != std::string::npos);
        BOOST_TEST(std::string(e.what()).find("pa?ss") == std::string::npos);
    }
    // Redlock needs a quorum reachable at connect.
    const std::string two = "127.0.0.1:" + std::to_string(free_port());
    BOOST_CHECK_THROW(connect("redlock://" + node + "," + two + ",127.0.0.1:" +
                              std::to_string(free_port()) + "?connect_timeout=500ms"),
                      BackendUnavailable);
    // A non-routable address: the connect timeout bounds the wait.
    start = Clock::now();
    BOOST_CHECK_THROW(connect("redis://10.255.255.1:6379?connect_timeout=300ms"),
                      BackendUnavailable);
    BOOST_TEST(ms_since(start) < 3000);
}

// A name lookup that does not answer is bounded by connect_timeout (hiredis'
// own lookup is not): BackendUnavailable naming the node, in about that time.
BOOST_AUTO_TEST_CASE(a_name_that_does_not_resolve_in_time_is_backend_unavailable) {
    // A resolver that answers only after 2 s.
    const lockext::detail::AddressLookup slow = [](const char *host, const char *service,
                                                   const addrinfo *hints, addrinfo **out) {
        std::this_thread::sleep_for(2s);
        return ::getaddrinfo(host, service, hints, out);
    };
    const auto start = Clock::now();
    try {
        lockext::detail::resolve_host("localhost", "localhost:6379", 200ms, slow);
        BOOST_ERROR("a lookup slower than the timeout returned");
    } catch (const BackendUnavailable &e) {
        BOOST_TEST(std::string(e.what()).find("localhost:6379") != std::string::npos);
        BOOST_TEST(std::string(e.what()).find("did not resolve") != std::string::npos);
    }
    BOOST_TEST(ms_since(start) < 1000);
    // Numeric hosts need no lookup; names resolve; unknown names fail cleanly.
    BOOST_TEST(lockext::detail::resolve_host("127.0.0.1", "n", 1ms, slow).at(0) == "127.0.0.1");
    BOOST_TEST(lockext::detail::resolve_host("::1", "n", 1ms, slow).at(0) == "::1");
    BOOST_TEST(!lockext::detail::resolve_host("localhost", "n", 2s).empty());
    BOOST_CHECK_THROW(lockext::detail::resolve_host("lockext-no-such-host.invalid", "n", 5s),
                      BackendUnavailable);
}

BOOST_AUTO_TEST_SUITE_END()
