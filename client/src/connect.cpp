// connect(): pick a backend by URL scheme. Also the small shared definitions
// (to_string(Mode), Backend's default holders()/force_release()).
#include <cstdlib>
#include <string>

#include "backends.hpp"

namespace lockext {

// The name used in URLs, SQL and metrics.
std::string_view to_string(Mode mode) noexcept {
    switch (mode) {
        case Mode::exclusive:
            return "exclusive";
        case Mode::shared:
            return "shared";
        case Mode::semaphore:
            return "semaphore";
    }
    return "unknown";
}

namespace detail {

// Backends without a global view say so.
std::vector<HolderInfo> Backend::holders() {
    throw InvalidArgument("the " + std::string(kind()) +
                          " backend has no global view of holders; only postgres has one");
}

// Backends without a global view cannot release other holders.
int Backend::force_release(std::string_view) {
    throw InvalidArgument("the " + std::string(kind()) +
                          " backend has no global view, so it cannot force_release; only "
                          "postgres can");
}

namespace {

// The process-wide in-memory store behind "memory:", so every manager of the
// process sees the same locks. Never destroyed: locks may be released during
// static destruction.
std::shared_ptr<Backend> process_memory_backend() {
    static auto *backend = new std::shared_ptr<Backend>(make_memory_backend());
    return *backend;
}

// The URL's scheme (before the first ':'), or empty when it has none.
std::string_view scheme_of(std::string_view url) {
    const auto colon = url.find(':');
    if (colon == std::string_view::npos || colon == 0)
        return {};
    const std::string_view scheme = url.substr(0, colon);
    auto alpha = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
    if (!alpha(scheme[0]))
        return {};
    for (char c : scheme) {
        if (!alpha(c) && !(c >= '0' && c <= '9') && c != '+' && c != '-' && c != '.')
            return {};
    }
    return scheme;
}

// Printable form of a URL for error messages, without any password.
std::string describe(std::string_view url) {
    std::string shown(url.substr(0, 200));
    const auto at = shown.find('@');
    const auto scheme_end = shown.find("://");
    if (at != std::string::npos && scheme_end != std::string::npos && at > scheme_end) {
        const auto colon = shown.find(':', scheme_end + 3);
        if (colon != std::string::npos && colon < at)
            shown.replace(colon + 1, at - colon - 1, "***");
    }
    return shown;
}

}  // namespace

}  // namespace detail

// Dispatch on the URL's scheme.
std::unique_ptr<LockManager> connect(std::string_view url, ConnectOptions options) {
    if (url.empty())
        throw InvalidArgument(
            "empty lock backend URL; use memory:, postgres://…, redis://… or redlock://…");
    const std::string_view scheme = detail::scheme_of(url);
    if (scheme.empty())
        throw InvalidArgument("lock backend URL '" + detail::describe(url) +
                              "' has no scheme; expected memory:, postgres://…, redis://… or "
                              "redlock://…");
    std::string lower(scheme);
    for (char &c : lower)
        c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    if (lower == "memory") {
        const std::string_view rest = url.substr(scheme.size() + 1);
        if (!rest.empty() && rest != "//")
            throw InvalidArgument("memory: URLs take no host or options, got '" +
                                  detail::describe(url) + "'");
        return std::make_unique<LockManager>(detail::process_memory_backend(), std::move(options));
    }
    if (lower == "postgres" || lower == "postgresql") {
        auto backend = detail::make_postgres_backend(url, options);
        return std::make_unique<LockManager>(std::move(backend), std::move(options));
    }
    if (lower == "redis" || lower == "redlock") {
        auto backend = detail::make_redis_backend(url, options);
        return std::make_unique<LockManager>(std::move(backend), std::move(options));
    }
    if (lower == "rediss")
        throw InvalidArgument(
            "rediss:// (Redis over TLS) is not available: this build's hiredis (0.14) has no "
            "TLS support; use redis:// on a trusted network or through a TLS tunnel");
    throw InvalidArgument("unknown lock backend URL scheme '" + std::string(scheme) +
                          "'; expected memory:, postgres://, postgresql://, redis:// or "
                          "redlock://");
}

// connect($LOCKEXT_URL), or the in-memory backend when it is unset or empty.
std::unique_ptr<LockManager> connect() {
    const char *url = std::getenv("LOCKEXT_URL");
    return connect(url && *url ? std::string_view(url) : std::string_view("memory:"));
}

}  // namespace lockext
