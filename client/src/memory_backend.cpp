// The in-memory backend ("memory:"): the extension's lock semantics inside one process.
//
// Semantics (as the extension's src/lock_table.cpp):
//   - A holder counts while its expiry (steady clock) is in the future; an
//     expired lease never blocks anyone, even before it is cleaned up.
//   - exclusive: no other live holder; shared: no live exclusive holder;
//     semaphore: fewer than max_holders live holders. While a name has holders
//     or waiters its kind is fixed: semaphore vs exclusive/shared, and
//     max_holders (mixing them → InvalidArgument).
//   - Fairness: a request is granted at once only when nobody is queued and the
//     live holders allow it; otherwise it joins the tail. Grants go from the
//     head while the head is admitted, so an exclusive waiter is never
//     overtaken by later shared ones.
//   - Memory stays bounded: an entry nobody holds or waits for is parked in
//     its shard's idle list and freed once kMaxIdle newer ones are idle.
//   - Tokens come from one process-wide counter, so they strictly increase
//     across names and across backends; it starts at the wall clock in
//     microseconds so a restarted process continues above the last run.
//
// Locking protocol:
//   The table is split into shards by name; Shard::mu guards that shard's
//   index, every Entry in it, every Waiter queued on them, the idle list and
//   the spare entries. All reads and writes of an entry happen under its shard's mu, so
//   grants, expiry and the queue are consistent without further locks.
//   Waiters sleep on their own condition variable (with their shard's mu)
//   until granted, their deadline, or the next expiry among the holders,
//   whichever is first: expiry is nobody's event, so every waiter wakes for
//   it and the one at the head grants. Nothing polls; the head waiter only
//   spins for a few microseconds (without the mutex, watching its own granted
//   flag) before its first sleep, since a handover between busy threads is
//   usually that quick and a sleep costs two syscalls.
//   Lock order: a single shard mutex at a time.
#include <array>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "backends.hpp"
#include "thread_annotations.hpp"

namespace lockext::detail {

namespace {

using Steady = std::chrono::steady_clock;
using System = std::chrono::system_clock;

// The last token handed out by any in-memory backend of the process.
std::atomic<std::int64_t> last_token{
    std::chrono::duration_cast<std::chrono::microseconds>(System::now().time_since_epoch())
        .count()};

// A granted lease.
struct Holder {
    std::int64_t token;
    Steady::time_point expires;
    Mode mode;
};

// A queued request; lives on the waiting thread's stack.
struct Waiter {
    Mode mode;
    std::chrono::milliseconds ttl;
    // Written under the shard mutex; read without it only while spinning.
    std::atomic<bool> granted{false};
    std::int64_t token = 0;
    Steady::time_point granted_at;  // the grant's moment: the lease runs from it
    Steady::time_point expires;
    std::condition_variable cv;
    Waiter *prev = nullptr;
    Waiter *next = nullptr;
};

// Everything about one name. Allocated on its own, so its address is stable
// for as long as it is in its shard's index (waiters point into it).
struct Entry {
    std::string name;
    std::uint64_t hash = 0;  // name_hash(name)
    bool semaphore = false;
    int max_holders = 1;
    std::vector<Holder> holders;
    Waiter *head = nullptr;
    Waiter *tail = nullptr;
    // Unused entries wait in their shard's idle list (LRU) before they are freed.
    bool idle = false;
    Entry *idle_prev = nullptr;
    Entry *idle_next = nullptr;

    // Nobody holds or waits: the entry may go.
    bool unused() const noexcept {
        return holders.empty() && head == nullptr;
    }
};

// Unaligned little loads for name_hash and same_name.
std::uint64_t load8(const char *p) noexcept {
    std::uint64_t w;
    std::memcpy(&w, p, 8);
    return w;
}
// Four bytes (see load8).
std::uint64_t load4(const char *p) noexcept {
    std::uint32_t w;
    std::memcpy(&w, p, 4);
    return w;
}

// The hash of a name, one per operation: its top bits pick the shard, its low
// bits the index slot. Eight bytes at a time, each folded in with a 64x64 ->
// 128-bit multiply; the tail is read with fixed-size loads that overlap the
// bytes before it (the length is hashed first, so that is safe). About a
// third of std::hash, which is a call, and a generic loop whose tail copy
// stalls the load that follows it.
std::uint64_t name_hash(std::string_view name) noexcept {
    // Fold a and b into 64 well-mixed bits.
    auto mix = [](std::uint64_t a, std::uint64_t b) noexcept {
        __extension__ using U128 = unsigned __int128;
        const U128 r = static_cast<U128>(a) * (b ^ 0x9E3779B97F4A7C15ull);
        return static_cast<std::uint64_t>(r) ^ static_cast<std::uint64_t>(r >> 64);
    };
    const char *p = name.data();
    const std::size_t n = name.size();
    std::uint64_t h = mix(n, 0x2D358DCCAA6C78A5ull);
    std::uint64_t tail;
    if (n >= 8) {
        const char *last = p + n - 8;
        for (; p < last; p += 8)
            h = mix(h ^ load8(p), 0x8BB84B93962EACC9ull);
        tail = load8(last);
    } else if (n >= 4) {
        tail = load4(p) << 32 | load4(p + n - 4);
    } else if (n > 0) {
        tail = static_cast<std::uint64_t>(static_cast<unsigned char>(p[0])) << 16 |
               static_cast<std::uint64_t>(static_cast<unsigned char>(p[n / 2])) << 8 |
               static_cast<unsigned char>(p[n - 1]);
    } else {
        tail = 0;
    }
    return mix(h ^ tail, 0x4B33A62ED433D4A3ull);
}

// Whether a and b are the same name: inline word compares instead of a
// memcmp call (names are short, and this runs twice per acquire + release).
bool same_name(std::string_view a, std::string_view b) noexcept {
    const std::size_t n = a.size();
    if (n != b.size())
        return false;
    if (n < 8)
        return n == 0 || std::memcmp(a.data(), b.data(), n) == 0;
    for (std::size_t i = 0; i + 8 < n; i += 8) {
        if (load8(a.data() + i) != load8(b.data() + i))
            return false;
    }
    return load8(a.data() + n - 8) == load8(b.data() + n - 8);
}

// A shard's entries by name: open addressing with linear probing over a
// power-of-two array of pointers, at most half full. Removal moves later
// members of the probe run back (no tombstones), so a lookup stops at the
// first empty slot. It owns the entries it holds.
class EntryIndex {
  public:
    EntryIndex() : slots_(16, nullptr) {}
    EntryIndex(const EntryIndex &) = delete;
    EntryIndex &operator=(const EntryIndex &) = delete;
    // Frees the entries still in the index.
    ~EntryIndex() {
        for (Entry *e : slots_)
            delete e;
    }

    // The entry of name (hash is name_hash(name)), or null.
    Entry *find(std::string_view name, std::uint64_t hash) const noexcept {
        const std::size_t mask = slots_.size() - 1;
        for (std::size_t i = hash & mask;; i = (i + 1) & mask) {
            Entry *e = slots_[i];
            if (e == nullptr)
                return nullptr;
            if (e->hash == hash && same_name(e->name, name))
                return e;
        }
    }

    // Add e (whose name is not in the index yet); the index owns it from now on.
    void insert(std::unique_ptr<Entry> e) {
        if (2 * (count_ + 1) > slots_.size())
            grow();
        place(e.release());
        count_++;
    }

    // Take e out of the index and give it back to the caller.
    std::unique_ptr<Entry> erase(Entry *e) noexcept {
        const std::size_t mask = slots_.size() - 1;
        std::size_t hole = e->hash & mask;
        while (slots_[hole] != e)
            hole = (hole + 1) & mask;
        // Backward shift: move each later member of the run whose home slot
        // is not between the hole and itself into the hole.
        for (std::size_t i = (hole + 1) & mask; slots_[i] != nullptr; i = (i + 1) & mask) {
            const std::size_t home = slots_[i]->hash & mask;
            if (((i - home) & mask) >= ((i - hole) & mask)) {
                slots_[hole] = slots_[i];
                hole = i;
            }
        }
        slots_[hole] = nullptr;
        count_--;
        return std::unique_ptr<Entry>(e);
    }

  private:
    // Put e in the first free slot of its probe run.
    void place(Entry *e) noexcept {
        const std::size_t mask = slots_.size() - 1;
        std::size_t i = e->hash & mask;
        while (slots_[i] != nullptr)
            i = (i + 1) & mask;
        slots_[i] = e;
    }

    // Double the slots and re-place every entry.
    void grow() {
        std::vector<Entry *> old(slots_.size() * 2, nullptr);
        old.swap(slots_);
        for (Entry *e : old) {
            if (e != nullptr)
                place(e);
        }
    }

    std::vector<Entry *> slots_;
    std::size_t count_ = 0;
};

// One slice of the table.
struct Shard {
    Mutex mu;
    EntryIndex entries GUARDED_BY(mu);
    // Entries nobody holds or waits for, least recently used first. A hot name
    // thus costs one lookup per call instead of a removal and an insertion.
    Entry *idle_head GUARDED_BY(mu) = nullptr;
    Entry *idle_tail GUARDED_BY(mu) = nullptr;
    std::size_t idle_count GUARDED_BY(mu) = 0;
    // Freed entries kept for reuse, so churning names allocates nothing either.
    std::vector<std::unique_ptr<Entry>> spare GUARDED_BY(mu);
};

constexpr std::size_t kShards = 16;
constexpr std::size_t kMaxIdle = 32;   // per shard
constexpr std::size_t kMaxSpare = 32;  // per shard
// How long the head waiter spins before it sleeps.
constexpr std::chrono::microseconds kSpin{20};

// a + d, clamped to the clock's range (wait_forever, huge TTLs).
Steady::time_point plus(Steady::time_point a, std::chrono::milliseconds d) noexcept {
    const auto room =
        std::chrono::duration_cast<std::chrono::milliseconds>(Steady::time_point::max() - a);
    if (d >= room)
        return Steady::time_point::max();
    return a + std::chrono::duration_cast<Steady::duration>(d);
}

// Converts steady expiries to wall-clock time for Lease::expires_at. The
// offset between the clocks is re-read at most every 100 ms (a wall clock
// step shows up that late in expires_at, which is informational only).
class WallClock {
  public:
    // t as wall-clock time; now is a recent steady reading.
    System::time_point to_system(Steady::time_point t, Steady::time_point now) noexcept {
        const std::int64_t now_ns = now.time_since_epoch().count();
        if (now_ns - checked_at_ns_.load(std::memory_order_relaxed) > 100'000'000) {
            const std::int64_t sys_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                            System::now().time_since_epoch())
                                            .count();
            offset_ns_.store(sys_ns - now_ns, std::memory_order_relaxed);
            checked_at_ns_.store(now_ns, std::memory_order_relaxed);
        }
        const auto since_epoch =
            std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch());
        const std::int64_t offset = offset_ns_.load(std::memory_order_relaxed);
        if (since_epoch.count() > std::numeric_limits<std::int64_t>::max() - offset)
            return System::time_point::max();
        return System::time_point(std::chrono::duration_cast<System::duration>(
            std::chrono::nanoseconds(since_epoch.count() + offset)));
    }

  private:
    std::atomic<std::int64_t> offset_ns_{0};
    std::atomic<std::int64_t> checked_at_ns_{std::numeric_limits<std::int64_t>::min() / 2};
};

class MemoryBackend final : public Backend {
  public:
    // The kind label.
    std::string_view kind() const noexcept override {
        return "memory";
    }

    // Grant now, or queue FIFO and sleep until granted or options.wait runs out.
    std::optional<Lease> acquire(std::string_view name, const LockOptions &options) override {
        const std::uint64_t hash = name_hash(name);
        Shard &shard = shard_for(hash);
        auto now = ClockHint::take();
        MutexLock lock(shard.mu);
        const auto deadline = plus(now, options.wait);
        Entry &e = find_or_insert(shard, name, hash);
        if (!e.unused() && reap(e, now) > 0)
            grant_waiters(e, now);
        const bool want_semaphore = options.mode == Mode::semaphore;
        if (e.unused()) {
            e.semaphore = want_semaphore;
            e.max_holders = options.max_holders;
        } else if (e.semaphore != want_semaphore ||
                   (want_semaphore && e.max_holders != options.max_holders)) {
            throw InvalidArgument(conflict_message(name, e, options));
        }
        if (e.head == nullptr && grantable(e, options.mode, now)) {
            const Holder &h = grant(e, options.mode, options.ttl, now);
            return lease_for(name, options, h.token, wall_.to_system(h.expires, now), now);
        }
        if (options.wait <= std::chrono::milliseconds::zero()) {
            release_entry_if_unused(shard, e);
            return std::nullopt;
        }
        Waiter w;
        w.mode = options.mode;
        w.ttl = options.ttl;
        enqueue(e, w);
        bool spun = false;
        for (;;) {
            if (w.granted.load(std::memory_order_relaxed)) {
                return lease_for(name, options, w.token, wall_.to_system(w.expires, Steady::now()),
                                 w.granted_at);
            }
            if (now >= deadline) {
                const bool was_head = e.head == &w;
                dequeue(e, w);
                // A head that blocked compatible requests behind it is gone.
                // The new head looks again even when nothing is granted: it
                // may be sleeping on a wake-up time computed before a
                // renewal shortened a lease (a renewal wakes only the head
                // of the moment).
                if (was_head && !grant_waiters(e, now) && e.head != nullptr)
                    e.head->cv.notify_one();
                release_entry_if_unused(shard, e);
                return std::nullopt;
            }
            // At the head, spin briefly first: a holder on another core often
            // hands over within microseconds, and sleeping costs two syscalls.
            if (!spun && e.head == &w) {
                spun = true;
                lock.unlock();
                spin_until_granted(w, deadline);
                lock.lock();
                continue;
            }
            w.cv.wait_until(lock.native(), std::min(deadline, next_expiry(e, now)));
            if (w.granted.load(std::memory_order_relaxed))
                continue;
            now = Steady::now();
            reap(e, now);
            grant_waiters(e, now);
        }
    }

    // Extend a live lease; empty when it is gone.
    std::optional<System::time_point> renew(const Lease &lease,
                                            std::chrono::milliseconds ttl) override {
        const std::uint64_t hash = name_hash(lease.name);
        Shard &shard = shard_for(hash);
        MutexLock lock(shard.mu);
        const auto now = Steady::now();
        Entry *found = shard.entries.find(lease.name, hash);
        if (found == nullptr)
            return std::nullopt;
        Entry &e = *found;
        for (Holder &h : e.holders) {
            if (h.token != lease.token)
                continue;
            if (h.expires <= now)
                break;
            h.expires = plus(now, ttl);
            // A shorter lease may run out before the head planned to look again.
            if (e.head != nullptr)
                e.head->cv.notify_one();
            return wall_.to_system(h.expires, now);
        }
        if (reap(e, now) > 0)
            grant_waiters(e, now);
        release_entry_if_unused(shard, e);
        return std::nullopt;
    }

    // Give a lease back and hand the lock to the next waiters.
    bool release(const Lease &lease) override {
        const std::uint64_t hash = name_hash(lease.name);
        Shard &shard = shard_for(hash);
        const auto now = ClockHint::take();
        MutexLock lock(shard.mu);
        Entry *found = shard.entries.find(lease.name, hash);
        if (found == nullptr)
            return false;
        Entry &e = *found;
        bool held = false;
        for (std::size_t i = 0; i < e.holders.size(); i++) {
            if (e.holders[i].token == lease.token) {
                held = e.holders[i].expires > now;
                e.holders[i] = e.holders.back();
                e.holders.pop_back();
                break;
            }
        }
        reap(e, now);
        if (e.head != nullptr)
            grant_waiters(e, now);
        release_entry_if_unused(shard, e);
        return held;
    }

  private:
    // The shard of a name, from the top bits of its hash (the index uses the low ones).
    Shard &shard_for(std::uint64_t hash) noexcept {
        static_assert(kShards == 16, "the shift below takes four bits");
        return shards_[hash >> 60];
    }

    // The entry of name, created (from a spare one when there is one) if missing.
    static Entry &find_or_insert(Shard &shard, std::string_view name, std::uint64_t hash)
        REQUIRES(shard.mu) {
        if (Entry *e = shard.entries.find(name, hash)) {
            if (e->idle)
                unlink_idle(shard, *e);
            return *e;
        }
        std::unique_ptr<Entry> e;
        if (shard.spare.empty()) {
            e = std::make_unique<Entry>();
        } else {
            e = std::move(shard.spare.back());
            shard.spare.pop_back();
        }
        e->name.assign(name);
        e->hash = hash;
        Entry &ref = *e;
        shard.entries.insert(std::move(e));
        return ref;
    }

    // Once nobody holds or waits, park the entry in the idle list; free the
    // least recently used idle entry when there are too many.
    static void release_entry_if_unused(Shard &shard, Entry &e) REQUIRES(shard.mu) {
        if (!e.unused() || e.idle)
            return;
        e.idle = true;
        e.idle_prev = shard.idle_tail;
        e.idle_next = nullptr;
        (shard.idle_tail ? shard.idle_tail->idle_next : shard.idle_head) = &e;
        shard.idle_tail = &e;
        if (++shard.idle_count <= kMaxIdle)
            return;
        Entry &victim = *shard.idle_head;
        unlink_idle(shard, victim);
        std::unique_ptr<Entry> freed = shard.entries.erase(&victim);
        if (shard.spare.size() < kMaxSpare)
            shard.spare.push_back(std::move(freed));  // keeps its name's and holders' capacity
    }

    // Take an entry out of the idle list (it is about to be used).
    static void unlink_idle(Shard &shard, Entry &e) REQUIRES(shard.mu) {
        (e.idle_prev ? e.idle_prev->idle_next : shard.idle_head) = e.idle_next;
        (e.idle_next ? e.idle_next->idle_prev : shard.idle_tail) = e.idle_prev;
        e.idle_prev = e.idle_next = nullptr;
        e.idle = false;
        shard.idle_count--;
    }

    // Remove expired holders; how many.
    static std::size_t reap(Entry &e, Steady::time_point now) noexcept {
        const std::size_t before = e.holders.size();
        std::erase_if(e.holders, [now](const Holder &h) { return h.expires <= now; });
        return before - e.holders.size();
    }

    // Spin (without the shard mutex) for up to kSpin while w is not granted.
    // Returns early at the deadline; the caller re-checks everything under the
    // mutex, which it must take anyway before w may go out of scope (the
    // granter may still be signalling w.cv until it lets go of the mutex).
    static void spin_until_granted(const Waiter &w, Steady::time_point deadline) noexcept {
        if (std::thread::hardware_concurrency() < 2)
            return;  // the holder cannot run while we spin
        const auto until = std::min(Steady::now() + kSpin, deadline);
        for (int i = 1;; i++) {
            if (w.granted.load(std::memory_order_acquire))
                return;
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
            if (i % 32 == 0 && Steady::now() >= until)
                return;
        }
    }

    // Whether the live holders admit mode (the queue is not consulted).
    static bool grantable(const Entry &e, Mode mode, Steady::time_point now) noexcept {
        int live = 0;
        bool exclusive_held = false;
        for (const Holder &h : e.holders) {
            if (h.expires <= now)
                continue;
            live++;
            exclusive_held |= h.mode == Mode::exclusive;
        }
        switch (mode) {
            case Mode::exclusive:
                return live == 0;
            case Mode::shared:
                return !exclusive_held;
            case Mode::semaphore:
                return live < e.max_holders;
        }
        return false;
    }

    // Add a holder with the next token.
    static const Holder &grant(Entry &e, Mode mode, std::chrono::milliseconds ttl,
                               Steady::time_point now) {
        e.holders.push_back(Holder{last_token.fetch_add(1) + 1, plus(now, ttl), mode});
        return e.holders.back();
    }

    // Grant from the head while the head is admitted; wake who got it.
    // Returns whether anything was granted.
    static bool grant_waiters(Entry &e, Steady::time_point now) {
        bool granted = false;
        while (e.head != nullptr && grantable(e, e.head->mode, now)) {
            Waiter &w = *e.head;
            const Holder &h = grant(e, w.mode, w.ttl, now);
            dequeue(e, w);
            w.granted.store(true, std::memory_order_release);
            w.token = h.token;
            w.granted_at = now;
            w.expires = h.expires;
            w.cv.notify_one();
            granted = true;
        }
        // The holders changed: the new head must recompute when to look again.
        if (granted && e.head != nullptr)
            e.head->cv.notify_one();
        return granted;
    }

    // The earliest expiry among live holders (max when none).
    static Steady::time_point next_expiry(const Entry &e, Steady::time_point now) noexcept {
        Steady::time_point t = Steady::time_point::max();
        for (const Holder &h : e.holders) {
            if (h.expires > now && h.expires < t)
                t = h.expires;
        }
        return t;
    }

    // Append w to the queue.
    static void enqueue(Entry &e, Waiter &w) noexcept {
        w.prev = e.tail;
        w.next = nullptr;
        if (e.tail != nullptr)
            e.tail->next = &w;
        else
            e.head = &w;
        e.tail = &w;
    }

    // Unlink w from the queue.
    static void dequeue(Entry &e, Waiter &w) noexcept {
        (w.prev ? w.prev->next : e.head) = w.next;
        (w.next ? w.next->prev : e.tail) = w.prev;
        w.prev = w.next = nullptr;
    }

    // The lease returned to the caller; granted_at is the steady reading the
    // grant was made with (or, after a wait, the waiter's first look at it).
    static Lease lease_for(std::string_view name, const LockOptions &options, std::int64_t token,
                           System::time_point expires_at, Steady::time_point granted_at) {
        Lease lease;
        lease.name.assign(name);
        lease.mode = options.mode;
        lease.max_holders = options.max_holders;
        lease.token = token;
        lease.expires_at = expires_at;
        lease.granted_at = granted_at;
        return lease;
    }

    // Why a request cannot join the name's current kind.
    static std::string conflict_message(std::string_view name, const Entry &e,
                                        const LockOptions &options) {
        auto kind = [](bool semaphore, int max_holders) {
            return semaphore ? "semaphore with max_holders " + std::to_string(max_holders)
                             : std::string("exclusive/shared lock");
        };
        return "lock '" + std::string(name) + "' is in use as a " +
               kind(e.semaphore, e.max_holders) + "; cannot take it as " +
               (options.mode == Mode::semaphore ? kind(true, options.max_holders)
                                                : std::string(to_string(options.mode)));
    }

    std::array<Shard, kShards> shards_;
    WallClock wall_;
};

}  // namespace

// A fresh, empty in-memory store.
std::shared_ptr<Backend> make_memory_backend() {
    return std::make_shared<MemoryBackend>();
}

}  // namespace lockext::detail
