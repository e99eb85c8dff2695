// The Redis backend's Lua scripts, and SHA-1 for EVALSHA.
//
// Data layout, per lock name N (the three keys share the hash tag {N}, so a
// script only ever touches one slot):
//   lockext:{N}      hash: one field per live holder, "<id>" = its expiry in ms
//                    by this server's clock, and metadata fields starting with '.':
//                      .f  the last fencing token handed out for N here
//                      .m  max_holders while N is used as a semaphore
//                      .w  how many requests are queued (only while some are)
//                      .s  the last arrival number given to a queued request
//                      .v  until when (ms) unqueued Redlock waiters want wakeups
//   lockext:{N}:q    zset: queued request id -> arrival number (FIFO order)
//   lockext:{N}:d    zset: queued request id -> deadline (ms); a waiter whose
//                    deadline passes (it stopped refreshing: crashed, stalled)
//                    is dropped, so a dead waiter never blocks the queue for long
//   channel lockext:{N}:wake  carries the ids of the queued requests that may
//                    go now, space-separated, or "*" (everyone look again)
// An id is a kind letter ('x' exclusive, 's' shared, 'n' semaphore) followed by
// 32 random hex digits; the letter tells the scripts the mode of every holder
// and waiter without another lookup.
//
// Every key expires no earlier than the last expiry or deadline stored in it;
// the hash lives `keep` (60 s) longer, so a name's fencing counter outlives
// its last lease by a minute (then a name whose clients all left or died
// disappears by itself). A release that leaves nobody holding or waiting
// removes the holder and the mode, and leaves the counter.
//
// Tokens: token = max(.f + 1, floor[, this server's clock in µs]). .f makes
// them strictly increase for N while the hash exists; the floor (from the
// client) and the clock keep them increasing after the hash expired or was
// lost (see the README for exactly what is promised).
//
// All numbers stay below 2^53, so Lua's doubles hold them exactly; they are
// passed to redis.call as numbers, never through tostring (which would round
// them), except expiry times: those go as string.format('%d') text, because
// some Redis versions format a round number in exponent form, which
// PEXPIRE/PEXPIREAT reject.
#include "redis_scripts.hpp"

#include <array>
#include <cstdint>
#include <cstdio>

namespace lockext::detail {

namespace {

// Every script starts with this: the keys, and this server's time as ms and
// µs since the epoch (every expiry stored on a node is measured by that
// node's one clock, never by a client's).
constexpr std::string_view kHeader = R"lua(
local state, queue, deadlines, channel = KEYS[1], KEYS[2], KEYS[3], ARGV[1]
-- How long (ms) the hash, and so the name's fencing counter, outlives the
-- last lease, waiter or watch stored in it.
local keep = 60000
local clock = redis.call('TIME')
local now = clock[1] * 1000 + math.floor(clock[2] / 1000)
local now_us = clock[1] * 1000000 + clock[2]
)lua";

// The helpers of the slower paths. A script's fast path comes before them
// and returns early: a `local function` statement allocates a closure each
// time it runs, which costs about as much as a redis.call.
constexpr std::string_view kHelpers = R"lua(
-- Keep key alive until at least ms; never shorten it (other entries may need longer).
local function keep_until(key, ms, now)
    local left = redis.call('PTTL', key)
    if left < 0 or now + left < ms then
        redis.call('PEXPIREAT', key, string.format('%d', ms))
    end
end

-- Read the hash (flat: its HGETALL): live holders (count, whether one is exclusive, the earliest
-- expiry, the smallest id) and the metadata. Expired holders are deleted on
-- the way, so a dead holder never blocks anyone past its own TTL.
local function load(now, flat)
    local s = {n = 0, exclusive = false, fence = 0, waiters = 0, pruned = 0}
    local dead = {}
    for i = 1, #flat, 2 do
        local f, v = flat[i], flat[i + 1]
        local kind = string.byte(f, 1)
        if kind == 46 then -- '.': metadata
            if f == '.f' then s.fence = tonumber(v)
            elseif f == '.m' then s.max = tonumber(v)
            elseif f == '.w' then s.waiters = tonumber(v)
            elseif f == '.v' then s.watch = tonumber(v) end
        else
            local e = tonumber(v)
            if e <= now then
                dead[#dead + 1] = f
            else
                s.n = s.n + 1
                if kind == 120 then s.exclusive = true end -- 'x'
                if not s.earliest or e < s.earliest then s.earliest = e end
                if not s.first or f:sub(2) < s.first:sub(2) then s.first = f end
            end
        end
    end
    if #dead > 0 then
        redis.call('HDEL', state, unpack(dead))
        s.pruned = #dead
    end
    return s
end

-- Store the queue length; .w and .s exist only while someone is queued.
local function set_waiters(s, n)
    s.waiters = n
    if n > 0 then
        redis.call('HSET', state, '.w', n)
    else
        redis.call('HDEL', state, '.w', '.s')
    end
end

-- Drop queued requests whose deadline passed; how many.
local function prune_waiters(s, now)
    if s.waiters == 0 then return 0 end
    local dead = redis.call('ZRANGEBYSCORE', deadlines, '-inf', now)
    if #dead == 0 then
        -- The sets expire at their last deadline, before the hash does: when
        -- the last waiters died unseen, .w outlived them; clear it.
        if redis.call('EXISTS', queue) == 0 then
            set_waiters(s, 0)
            return 1
        end
        return 0
    end
    redis.call('ZREM', queue, unpack(dead))
    redis.call('ZREM', deadlines, unpack(dead))
    set_waiters(s, redis.call('ZCARD', queue))
    return #dead
end

-- Whether a request of this kind fits beside n live holders (ex: one of them
-- is exclusive): the same rules as the PostgreSQL extension and memory:.
local function fits(kind, n, ex, max)
    if kind == 120 then return n == 0 end  -- 'x': alone
    if kind == 115 then return not ex end  -- 's': beside other shared holders
    return n < max                         -- 'n': up to max holders
end

-- Walk the queue from its head, admitting each request that fits beside the
-- holders and the requests admitted before it, and stop admitting at the
-- first that does not: nobody overtakes it (FIFO). Returns the admitted ids
-- ahead of me (all of them when me is nil), whether me is admitted (a me that
-- is not queued stands at the tail), and whether me is queued.
local function admit(s, me, max)
    local n, ex, run, open, mine, queued = s.n, s.exclusive, {}, true, false, false
    if s.waiters > 0 then
        for _, w in ipairs(redis.call('ZRANGE', queue, 0, -1)) do
            local kind = string.byte(w, 1)
            open = open and fits(kind, n, ex, max)
            if w == me then
                queued, mine = true, open
                break
            end
            if open then
                n = n + 1
                ex = ex or kind == 120
                run[#run + 1] = w
            end
        end
    end
    if me and not queued then
        mine = open and fits(string.byte(me, 1), n, ex, max)
    end
    return run, mine, queued
end

-- Tell the queued requests that may go now (and only them) to try again.
local function notify(s, max)
    if s.waiters == 0 then return end
    local run = admit(s, nil, max)
    if #run > 0 then
        redis.call('PUBLISH', channel, table.concat(run, ' '))
    end
end
)lua";

// ARGV: channel, id, ttl ms, max holders (0 unless semaphore), policy ('t'
// try once, 'q' join the FIFO queue, 'w' watch: an unqueued Redlock waiter),
// token floor, '1' to also floor the token at this server's clock in µs,
// sleep cap ms, grace ms.
// Returns {1, token, expiry ms} when granted, {0, retry in ms, smallest live
// holder id or ''} when not, {-1, max holders in use (0: exclusive/shared)}
// when the name is in use as another kind of lock.
constexpr std::string_view kAcquireFast = R"lua(
local me, ttl, max, policy = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local floor, use_clock = tonumber(ARGV[6]), ARGV[7] == '1'
local flat = redis.call('HGETALL', state)
if #flat == 0 or (#flat == 2 and flat[1] == '.f') then
    -- Nobody holds, waits for or watches the name here (at most its counter
    -- is left): grant at once.
    local exp = now + ttl
    local token = math.max((tonumber(flat[2]) or 0) + 1, floor)
    if use_clock then token = math.max(token, now_us) end
    if max > 0 then
        redis.call('HSET', state, me, exp, '.f', token, '.m', max)
    else
        redis.call('HSET', state, me, exp, '.f', token)
    end
    redis.call('PEXPIRE', state, string.format('%d', ttl + keep))
    return {1, token, exp}
end
)lua";

constexpr std::string_view kAcquire = R"lua(
local cap, grace = tonumber(ARGV[8]), tonumber(ARGV[9])
local s = load(now, flat)
local changed = s.pruned > 0
if prune_waiters(s, now) > 0 then changed = true end

-- While holders or waiters exist the kind is fixed: semaphore (and its max)
-- or exclusive/shared. Mixing them is the caller's error, as on postgres.
if (s.n > 0 or s.waiters > 0) and (s.max or 0) ~= max then
    return {-1, s.max or 0}
end

local run, mine, queued = admit(s, me, max)
if mine then
    local exp = now + ttl
    local token = math.max(s.fence + 1, floor)
    if use_clock then token = math.max(token, now_us) end
    if max > 0 then
        redis.call('HSET', state, me, exp, '.f', token, '.m', max)
    else
        redis.call('HSET', state, me, exp, '.f', token)
        if s.max then redis.call('HDEL', state, '.m') end -- left from an earlier use
    end
    keep_until(state, exp + keep, now)
    if queued then
        redis.call('ZREM', queue, me)
        redis.call('ZREM', deadlines, me)
        set_waiters(s, redis.call('ZCARD', queue))
    end
    if changed then
        -- Expired holders or dead waiters were just removed: whoever that let in may go.
        s.n = s.n + 1
        s.exclusive = s.exclusive or string.byte(me, 1) == 120
        notify(s, max)
    end
    return {1, token, exp}
end

if changed then notify(s, max) end

-- Not now. Look again when the first holder (or a waiter whose deadline
-- would free the queue) expires, or after cap, whichever is first.
local wait = s.earliest
if s.waiters > 0 then
    local d = redis.call('ZRANGE', deadlines, 0, 1, 'WITHSCORES')
    for i = 1, #d, 2 do
        if d[i] ~= me then
            local e = tonumber(d[i + 1])
            if not wait or e < wait then wait = e end
            break
        end
    end
end
wait = wait and math.max(1, math.min(cap, wait - now + 1)) or cap

if policy == 'q' then
    -- Join the queue (or keep our place) until a little after we plan to look again.
    local deadline = now + wait + grace
    if not queued then
        local seq = redis.call('HINCRBY', state, '.s', 1)
        redis.call('ZADD', queue, seq, me)
        set_waiters(s, s.waiters + 1)
    end
    redis.call('ZADD', deadlines, deadline, me)
    keep_until(state, deadline + keep, now)
    keep_until(queue, deadline, now)
    keep_until(deadlines, deadline, now)
elseif policy == 'w' then
    -- Ask releases to publish "*" until a little after we plan to look again.
    local till = now + wait + grace
    if not s.watch or s.watch < till then
        redis.call('HSET', state, '.v', till)
        keep_until(state, till + keep, now)
    end
end
return {0, wait, s.first or ''}
)lua";

// ARGV: channel, id, ttl ms, token to raise .f to (0: none).
// Returns {1, new expiry ms}, or {0} when id holds no live lease here.
constexpr std::string_view kRenew = R"lua(
local me, ttl, raise = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local v = redis.call('HMGET', state, me, '.f', '.w', '.v')
if not v[1] then return {0} end
local old = tonumber(v[1])
if old <= now then
    -- Expired: it is nobody's any more, whether or not someone took it since.
    redis.call('HDEL', state, me)
    return {0}
end
local exp = now + ttl
if raise > (tonumber(v[2]) or 0) then
    redis.call('HSET', state, me, exp, '.f', raise)
else
    redis.call('HSET', state, me, exp)
end
-- Keep the hash (and its counter) alive until keep after exp at least;
-- never shorten it (others may need longer).
local left = redis.call('PTTL', state)
if left < 0 or now + left < exp + keep then
    redis.call('PEXPIREAT', state, string.format('%d', exp + keep))
end
-- A shortened lease runs out before the waiters planned to look: tell them.
if exp < old and (v[3] or (v[4] and tonumber(v[4]) > now)) then
    redis.call('PUBLISH', channel, '*')
end
return {1, exp}
)lua";

// ARGV: channel, id. Returns 1 when id held a live lease, else 0 (also when
// it was released before: release is idempotent).
constexpr std::string_view kReleaseFast = R"lua(
local me = ARGV[2]
local v = redis.call('HMGET', state, me, '.m', '.w', '.v', '.s')
if not v[1] then return 0 end
local held = tonumber(v[1]) > now and 1 or 0
local watched = v[4] and tonumber(v[4]) > now
local meta = 1 -- .f exists wherever a holder does
for i = 2, 5 do
    if v[i] then meta = meta + 1 end
end
if not v[3] and not watched and redis.call('HLEN', state) - meta <= 1 then
    -- Nobody else holds, waits or watches: the name is free. Its counter
    -- stays until the hash expires (keep after our lease would have).
    redis.call('HDEL', state, me, '.m', '.v')
    return held
end
redis.call('HDEL', state, me)
if watched then redis.call('PUBLISH', channel, '*') end
if not v[3] then return held end
)lua";

constexpr std::string_view kRelease = R"lua(
-- Others are queued: tell the ones that may go now.
local s = load(now, redis.call('HGETALL', state))
prune_waiters(s, now)
notify(s, s.max or 0)
return held
)lua";

// ARGV: channel, id. A queued request gives up: it leaves the queue, and the
// requests it was holding up are told to go. Returns 1 if it was queued.
constexpr std::string_view kCancel = R"lua(
local me = ARGV[2]
if redis.call('ZREM', queue, me) == 0 then return 0 end
redis.call('ZREM', deadlines, me)
local s = load(now, redis.call('HGETALL', state))
set_waiters(s, redis.call('ZCARD', queue))
prune_waiters(s, now)
if s.waiters > 0 then
    notify(s, s.max or 0)
elseif s.n == 0 and not (s.watch and s.watch > now) then
    redis.call('HDEL', state, '.m', '.v') -- free again; the counter stays until the hash expires
end
return 1
)lua";

// ARGV: channel, id, token. Redlock: after a quorum granted id, make every
// granting node's counter reach the largest token any of them gave, so the
// next holder's quorum (which overlaps this one) gives a larger token.
// Returns 1 when id is (or was) a holder here.
constexpr std::string_view kRaise = R"lua(
local v = redis.call('HMGET', state, ARGV[2], '.f')
if not v[1] then return 0 end
if tonumber(ARGV[3]) > (tonumber(v[2]) or 0) then
    redis.call('HSET', state, '.f', tonumber(ARGV[3]))
end
return 1
)lua";

// SHA-1 (FIPS 180-4), only to name scripts for EVALSHA.
class Sha1 {
  public:
    // Digest of data as 40 lower-case hex digits.
    static std::string hex(std::string_view data) {
        std::array<std::uint32_t, 5> h = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476,
                                          0xC3D2E1F0};
        std::string msg(data);
        const std::uint64_t bits = static_cast<std::uint64_t>(data.size()) * 8;
        msg += static_cast<char>(0x80);
        while (msg.size() % 64 != 56)
            msg += '\0';
        for (int i = 7; i >= 0; i--)
            msg += static_cast<char>((bits >> (i * 8)) & 0xff);
        for (std::size_t chunk = 0; chunk < msg.size(); chunk += 64)
            block(h, reinterpret_cast<const unsigned char *>(msg.data() + chunk));
        char out[41];
        for (int i = 0; i < 5; i++)
            std::snprintf(out + i * 8, 9, "%08x", h[i]);
        return std::string(out, 40);
    }

  private:
    // Rotate x left by n bits.
    static std::uint32_t rotl(std::uint32_t x, int n) {
        return (x << n) | (x >> (32 - n));
    }

    // Fold one 64-byte block into h.
    static void block(std::array<std::uint32_t, 5> &h, const unsigned char *p) {
        std::uint32_t w[80];
        for (int i = 0; i < 16; i++)
            w[i] = (std::uint32_t(p[i * 4]) << 24) | (std::uint32_t(p[i * 4 + 1]) << 16) |
                   (std::uint32_t(p[i * 4 + 2]) << 8) | std::uint32_t(p[i * 4 + 3]);
        for (int i = 16; i < 80; i++)
            w[i] = rotl(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
        std::uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
        for (int i = 0; i < 80; i++) {
            std::uint32_t f, k;
            if (i < 20) {
                f = (b & c) | (~b & d);
                k = 0x5A827999;
            } else if (i < 40) {
                f = b ^ c ^ d;
                k = 0x6ED9EBA1;
            } else if (i < 60) {
                f = (b & c) | (b & d) | (c & d);
                k = 0x8F1BBCDC;
            } else {
                f = b ^ c ^ d;
                k = 0xCA62C1D6;
            }
            const std::uint32_t t = rotl(a, 5) + f + e + k + w[i];
            e = d;
            d = c;
            c = rotl(b, 30);
            b = a;
            a = t;
        }
        h[0] += a;
        h[1] += b;
        h[2] += c;
        h[3] += d;
        h[4] += e;
    }
};

// A script: the header, its fast path, then (when it has a slower path) the
// helpers and that path.
RedisScript make_script(std::string_view name, std::string_view fast, std::string_view slow) {
    RedisScript script;
    script.name = name;
    script.text = std::string(kHeader) + std::string(fast);
    if (!slow.empty())
        script.text += std::string(kHelpers) + std::string(slow);
    script.sha1 = Sha1::hex(script.text);
    return script;
}

}  // namespace

// Built once, on first use (thread-safe static initialization).
const RedisScript &redis_script(ScriptId id) {
    static const std::array<RedisScript, 5> scripts = {
        make_script("acquire", kAcquireFast, kAcquire), make_script("renew", kRenew, ""),
        make_script("release", kReleaseFast, kRelease), make_script("cancel", "", kCancel),
        make_script("raise", kRaise, "")};
    return scripts[static_cast<std::size_t>(id)];
}

// Hex SHA-1 of data.
std::string sha1_hex(std::string_view data) {
    return Sha1::hex(data);
}

}  // namespace lockext::detail
