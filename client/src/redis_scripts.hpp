// The Lua scripts of the Redis backend: acquire, renew, release, cancel (a
// queued waiter gives up) and raise (Redlock agrees on one fencing token).
// Each runs atomically on one node; redis_scripts.cpp documents the data
// layout they share.
#pragma once

#include <string>
#include <string_view>

namespace lockext::detail {

enum class ScriptId { acquire, renew, release, cancel, raise };

// A script's source and its SHA-1 (for EVALSHA).
struct RedisScript {
    std::string_view name;
    std::string text;
    std::string sha1;
};

// The script for id (built, and hashed, on first use).
const RedisScript &redis_script(ScriptId id);

// Hex SHA-1 of data (what Redis names a cached script by).
std::string sha1_hex(std::string_view data);

}  // namespace lockext::detail
