// Parsing redis:// and redlock:// URLs into the settings the Redis backend needs.
//
//   redis://[[user]:password@]host[:port][/db][?param=value&...]        one node
//   redlock://[[user]:password@]h1[:p1],h2[:p2],...[/db][?param=value]  independent masters
//
// The port defaults to 6379 and db to 0; an IPv6 host goes in brackets
// ([::1]:6379). user and password may be percent-encoded. Parameters:
//   connect_timeout  TCP connect + handshake (AUTH, SELECT) per node   default 1s
//   timeout          one command's reply per node                      default 1s
// A duration is a whole number of milliseconds ("250", "250ms") or seconds
// ("2s"), from 1 ms to 1 hour. Anything else is InvalidArgument.
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

namespace lockext::detail {

// Where one Redis node listens.
struct RedisAddress {
    std::string host;
    int port = 6379;

    // "host:port" (IPv6 in brackets), for messages.
    std::string label() const;
};

// Everything a redis:// or redlock:// URL says.
struct RedisConfig {
    bool redlock = false;
    std::vector<RedisAddress> nodes;
    std::string user;      // empty: the default user
    std::string password;  // empty: no AUTH
    int db = 0;
    std::chrono::milliseconds connect_timeout{1000};
    std::chrono::milliseconds timeout{1000};
};

// Parse url (scheme redis or redlock, any letter case); throws InvalidArgument
// naming what is wrong, never echoing the password.
RedisConfig parse_redis_url(std::string_view url);

}  // namespace lockext::detail
