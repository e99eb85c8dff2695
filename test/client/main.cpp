// The one Boost.Test module of the client tests; every other test file adds suites to it.
#define BOOST_TEST_MODULE lockext_client
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>
