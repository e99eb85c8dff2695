// connect() with postgres:// URLs that need no server: a malformed URL is
// InvalidArgument before anything is contacted, and a server that cannot be
// reached is BackendUnavailable. Runs once per build, on the memory: run.
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <string>

#include "lockext/lockext.hpp"
#include "lockext/pg.hpp"
#include "test_support.hpp"

using namespace lockext;
using namespace lockext::test;

namespace {

// A host that drops every packet (reserved, never routed): a connection
// attempt to it would hang for the whole connect_timeout.
constexpr const char *kBlackhole = "10.255.255.1";

// The message of the InvalidArgument connect(url) throws, or "" (a failed check)
// when it throws anything else or nothing.
std::string invalid_argument_message(const std::string &url) {
    try {
        connect(url);
    } catch (const InvalidArgument &e) {
        return e.what();
    } catch (const std::exception &e) {
        BOOST_ERROR("connect('" << url << "') threw something else: " << e.what());
        return "";
    }
    BOOST_ERROR("connect('" << url << "') did not throw");
    return "";
}

}  // namespace

BOOST_AUTO_TEST_SUITE(postgres_url, *boost::unit_test::precondition(lockext::test::LocalRun{}))

// Malformed URLs are rejected by parsing alone: each names its problem, and
// none waits for the unreachable host they point at.
BOOST_AUTO_TEST_CASE(malformed_urls_are_invalid_argument_without_connecting) {
    const std::string host = std::string("postgresql://") + kBlackhole;
    const struct {
        std::string url;
        std::string says;
    } cases[] = {
        {host + "/db?connect_timeout=30&no_such_option=1", "no_such_option"},
        {"postgresql://u:pw@[::1/db?connect_timeout=30", "IPv6"},
        {host + "/db?connect_timeout=30&sslmode=%zz", "percent-encoded"},
        {host + ":notaport/db?connect_timeout=30", "notaport"},
        {host + "/db?connect_timeout=soon", "connect_timeout"},
    };
    for (const auto &c : cases) {
        BOOST_TEST_CONTEXT("url " << c.url) {
            const auto started = Clock::now();
            const std::string message = invalid_argument_message(c.url);
            BOOST_CHECK(Clock::now() - started < 2s);
            BOOST_TEST(message.find(c.says) != std::string::npos, "message: " << message);
            BOOST_TEST(message.find("PostgreSQL URL") != std::string::npos, "message: " << message);
        }
    }
}

// lockext_pooling is the client's own parameter: a bad value is
// InvalidArgument without connecting, and a good one, wherever it stands in
// the query, is taken out before libpq sees the URL (libpq would reject it as
// an unknown option, InvalidArgument): what is left fails to connect.
BOOST_AUTO_TEST_CASE(lockext_pooling_is_checked_and_taken_out) {
    const auto started = Clock::now();
    const std::string message = invalid_argument_message(
        std::string("postgresql://") + kBlackhole + "/db?connect_timeout=30&lockext_pooling=bogus");
    BOOST_CHECK(Clock::now() - started < 2s);
    BOOST_TEST(message.find("'bogus'") != std::string::npos, "message: " << message);
    for (const char *url :
         {"postgresql://127.0.0.1:1/postgres?lockext_pooling=transaction&connect_timeout=3",
          "postgresql://127.0.0.1:1/postgres?connect_timeout=3&lockext_pooling=transaction",
          "postgresql://127.0.0.1:1/postgres?connect_timeout=3&lockext_pooling=transaction"
          "&application_name=x",
          "postgresql://127.0.0.1:1/postgres?lockext_pooling=none"}) {
        BOOST_TEST_CONTEXT("url " << url) {
            BOOST_CHECK_THROW(connect(url), BackendUnavailable);
        }
    }
}

// pg::libpq_url gives the URL for one's own libpq connections: the client's
// parameter taken out, everything else as it was.
BOOST_AUTO_TEST_CASE(libpq_url_takes_out_the_clients_parameter) {
    BOOST_TEST(pg::libpq_url("postgresql://h/db?lockext_pooling=transaction") ==
               "postgresql://h/db");
    BOOST_TEST(pg::libpq_url("postgresql://h/db?lockext_pooling=transaction&sslmode=require") ==
               "postgresql://h/db?sslmode=require");
    BOOST_TEST(pg::libpq_url("postgresql://h/db?sslmode=require&lockext_pooling=none") ==
               "postgresql://h/db?sslmode=require");
    BOOST_TEST(pg::libpq_url("postgresql://h/db?a=1&lockext_pooling=transaction&b=2") ==
               "postgresql://h/db?a=1&b=2");
    BOOST_TEST(pg::libpq_url("postgresql://h/db?sslmode=require") ==
               "postgresql://h/db?sslmode=require");
    BOOST_TEST(pg::libpq_url("postgresql://h/db") == "postgresql://h/db");
    // A '?' in an unencoded password is not the query.
    BOOST_TEST(pg::libpq_url("postgresql://u:p?w@h/db?lockext_pooling=transaction") ==
               "postgresql://u:p?w@h/db");
    BOOST_CHECK_THROW(pg::libpq_url("postgresql://h/db?lockext_pooling=yes"), InvalidArgument);
}

// The password of a malformed URL never reaches the error message.
BOOST_AUTO_TEST_CASE(malformed_url_message_hides_the_password) {
    const std::string message = invalid_argument_message("postgresql://u:secret-pw@[::1/db");
    BOOST_TEST(!message.empty());
    BOOST_TEST(message.find("secret-pw") == std::string::npos, "message: " << message);
}

// A well-formed URL of a server that refuses connections is BackendUnavailable
// (retrying later may work), not InvalidArgument.
BOOST_AUTO_TEST_CASE(unreachable_server_is_backend_unavailable) {
    BOOST_CHECK_EXCEPTION(connect("postgresql://127.0.0.1:1/postgres?connect_timeout=3"),
                          BackendUnavailable, [](const BackendUnavailable &e) {
                              return std::string(e.what()).find("cannot connect") !=
                                     std::string::npos;
                          });
}

BOOST_AUTO_TEST_SUITE_END()
