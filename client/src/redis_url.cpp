// redis:// and redlock:// URL parsing (the grammar is in redis_url.hpp).
#include "redis_url.hpp"

#include <algorithm>
#include <charconv>
#include <cctype>
#include <set>

#include "lockext/lockext.hpp"

namespace lockext::detail {

namespace {

using std::chrono::milliseconds;

constexpr milliseconds kMaxTimeout = std::chrono::hours(1);

// Lower-case ASCII copy of text.
std::string lower(std::string_view text) {
    std::string out(text);
    for (char &c : out)
        c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    return out;
}

// A whole decimal number in [min, max] made of digits only, or -1.
long long parse_number(std::string_view text, long long min, long long max) {
    if (text.empty() || text.size() > 18)
        return -1;
    long long value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || end != text.data() + text.size() || text[0] == '-' || text[0] == '+')
        return -1;
    return value < min || value > max ? -1 : value;
}

// Value of a hex digit, or -1.
int hex_value(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

// Percent-decode a URL part; what names the part in the error.
std::string percent_decode(std::string_view text, std::string_view what) {
    std::string out;
    out.reserve(text.size());
    for (std::size_t i = 0; i < text.size(); i++) {
        if (text[i] != '%') {
            out += text[i];
            continue;
        }
        const int hi = i + 2 < text.size() ? hex_value(text[i + 1]) : -1;
        const int lo = i + 2 < text.size() ? hex_value(text[i + 2]) : -1;
        if (hi < 0 || lo < 0)
            throw InvalidArgument("bad percent-encoding in the " + std::string(what) +
                                  " of a redis URL");
        out += static_cast<char>(hi * 16 + lo);
        i += 2;
    }
    return out;
}

// A "250", "250ms" or "2s" duration of parameter name.
milliseconds parse_duration(std::string_view name, std::string_view value) {
    long long scale = 1;
    std::string_view digits = value;
    if (digits.ends_with("ms")) {
        digits.remove_suffix(2);
    } else if (digits.ends_with("s")) {
        digits.remove_suffix(1);
        scale = 1000;
    }
    const long long n = parse_number(digits, 1, kMaxTimeout.count());
    if (n < 0 || n * scale > kMaxTimeout.count())
        throw InvalidArgument("redis URL parameter " + std::string(name) + "='" +
                              std::string(value) +
                              "' is not a duration between 1ms and 1 hour (e.g. 250ms or 2s)");
    return milliseconds(n * scale);
}

// One "host[:port]" or "[v6][:port]" entry of the host list.
RedisAddress parse_address(std::string_view text, std::string_view scheme) {
    RedisAddress address;
    std::string_view port;
    if (text.starts_with('[')) {
        const auto close = text.find(']');
        if (close == std::string_view::npos || close == 1)
            throw InvalidArgument("bad IPv6 host '" + std::string(text) + "' in a " +
                                  std::string(scheme) + ":// URL");
        address.host = std::string(text.substr(1, close - 1));
        std::string_view rest = text.substr(close + 1);
        if (!rest.empty()) {
            if (rest[0] != ':')
                throw InvalidArgument("expected ':port' after ']' in '" + std::string(text) + "'");
            port = rest.substr(1);
            if (port.empty())
                throw InvalidArgument("empty port in '" + std::string(text) + "'");
        }
    } else {
        const auto colon = text.find(':');
        address.host = std::string(text.substr(0, colon));
        if (colon != std::string_view::npos) {
            port = text.substr(colon + 1);
            if (port.empty())
                throw InvalidArgument("empty port in '" + std::string(text) + "'");
        }
    }
    if (address.host.empty())
        throw InvalidArgument("empty host in the host list of a " + std::string(scheme) +
                              ":// URL");
    if (address.host.find_first_of("/?#@ ") != std::string::npos)
        throw InvalidArgument("bad host '" + address.host + "' in a " + std::string(scheme) +
                              ":// URL");
    if (!port.empty()) {
        const long long p = parse_number(port, 1, 65535);
        if (p < 0)
            throw InvalidArgument("bad port '" + std::string(port) + "' for host '" + address.host +
                                  "': expected 1-65535");
        address.port = static_cast<int>(p);
    }
    return address;
}

}  // namespace

// "host:port", IPv6 in brackets.
std::string RedisAddress::label() const {
    const bool v6 = host.find(':') != std::string::npos;
    return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

// Split the URL into scheme, userinfo, host list, db and parameters, and check each.
RedisConfig parse_redis_url(std::string_view url) {
    const auto sep = url.find("://");
    if (sep == std::string_view::npos)
        throw InvalidArgument(
            "a redis URL must look like redis://host:port or "
            "redlock://h1:p1,h2:p2,h3:p3");
    const std::string scheme = lower(url.substr(0, sep));
    RedisConfig config;
    if (scheme == "redlock")
        config.redlock = true;
    else if (scheme != "redis")
        throw InvalidArgument("not a redis URL scheme: '" + scheme + "'");
    std::string_view rest = url.substr(sep + 3);

    std::string_view query;
    // The query starts at the first '?' after the userinfo: a password may
    // hold an unencoded '?', which must not be shown as a host or parameter.
    const auto userinfo_end = rest.rfind('@');
    if (const auto q = rest.find('?', userinfo_end == std::string_view::npos ? 0 : userinfo_end);
        q != std::string_view::npos) {
        query = rest.substr(q + 1);
        rest = rest.substr(0, q);
    }
    if (const auto hash = rest.find('#'); hash != std::string_view::npos)
        throw InvalidArgument("a " + scheme + ":// URL takes no #fragment");
    // The userinfo ends at the last '@' (a percent-encoded password has none).
    std::string_view authority = rest;
    std::string_view path;
    const auto at = rest.rfind('@');
    const auto slash = rest.find('/', at == std::string_view::npos ? 0 : at);
    if (slash != std::string_view::npos) {
        authority = rest.substr(0, slash);
        path = rest.substr(slash + 1);
    }
    if (at != std::string_view::npos && at < authority.size()) {
        const std::string_view userinfo = authority.substr(0, at);
        authority = authority.substr(at + 1);
        const auto colon = userinfo.find(':');
        if (colon == std::string_view::npos)
            throw InvalidArgument("the password in a " + scheme +
                                  ":// URL goes after a ':' (redis://:password@host or "
                                  "redis://user:password@host)");
        config.user = percent_decode(userinfo.substr(0, colon), "user");
        config.password = percent_decode(userinfo.substr(colon + 1), "password");
    }

    if (authority.empty())
        throw InvalidArgument("empty host list in a " + scheme + ":// URL");
    std::set<std::string> seen;
    std::size_t start = 0;
    for (;;) {
        const auto comma = authority.find(',', start);
        const std::string_view item = authority.substr(start, comma - start);
        if (item.empty())
            throw InvalidArgument("empty entry in the host list of a " + scheme + ":// URL");
        RedisAddress address = parse_address(item, scheme);
        // Host names are case-insensitive: R1 and r1 are one node, one vote.
        std::string folded = address.label();
        for (char &c : folded)
            c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        if (!seen.insert(folded).second)
            throw InvalidArgument("node " + address.label() + " is listed twice in a " + scheme +
                                  ":// URL; each node may count once towards a quorum");
        config.nodes.push_back(std::move(address));
        if (comma == std::string_view::npos)
            break;
        start = comma + 1;
    }
    if (!config.redlock && config.nodes.size() > 1)
        throw InvalidArgument(
            "redis:// takes one host; use redlock://h1:p1,h2:p2,h3:p3 for "
            "several independent masters");

    if (!path.empty()) {
        const long long db = parse_number(path, 0, 1'000'000);
        if (db < 0)
            throw InvalidArgument("bad database '" + std::string(path) + "' in a " + scheme +
                                  ":// URL: expected a number (redis://host:port/0)");
        config.db = static_cast<int>(db);
    }

    std::set<std::string> given;
    while (!query.empty()) {
        const auto amp = query.find('&');
        const std::string_view pair = query.substr(0, amp);
        query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
        if (pair.empty())
            continue;
        const auto eq = pair.find('=');
        const std::string key(pair.substr(0, eq));
        const std::string_view value =
            eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
        if (!given.insert(key).second)
            throw InvalidArgument("redis URL parameter " + key + " is given twice");
        if (key == "connect_timeout")
            config.connect_timeout = parse_duration(key, value);
        else if (key == "timeout")
            config.timeout = parse_duration(key, value);
        else
            throw InvalidArgument("unknown redis URL parameter '" + key +
                                  "'; known: connect_timeout, timeout");
    }
    return config;
}

}  // namespace lockext::detail
