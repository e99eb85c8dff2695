// KeyedMutex: named mutexes in sharded, reference-counted hash tables.
//
// Locking protocol
// ----------------
// Keys are spread over shards by hash. Each KeyedShard has one Mutex `mu`, and
// `mu` guards everything in that shard:
//   - the shard's table (buckets, bucket_count, live) and its spare list;
//   - every field of every KeyedEntry linked into the table: key, hash, next,
//     refs, held, and the waits/notifies on its cv.
// No code path holds two shard mutexes at once, and no user code runs under one.
//
// An entry stands for one key that someone holds or waits for:
//   refs = (held ? 1 : 0) + number of threads waiting for the key.
// Every lock attempt adds its reference under `mu` before it may wait, and an
// entry is unlinked and recycled only when refs drops to 0, also under `mu`.
// So an entry is never freed while a thread holds it or waits on its cv — the
// defect of the seed design, where Unlock deleted the map entry while others
// waited on the mutex, and a newcomer created a second mutex for the same key.
//
// Handing over: unlock clears `held` and, if refs is still > 0, notify_one()s
// the entry's cv while still holding `mu` (after `mu` is released a waiter could
// take the key, release it and recycle the entry before we touched the cv).
// A woken waiter loops on `held`, so a thread that barges in first merely sends
// it back to sleep, and that thread's own unlock notifies again. A timed waiter
// gives up only while `held` is true: if it was the one notified, the key is
// free and it takes it, so a timeout can never swallow the wakeup another
// waiter needed.
//
// A Guard reads entry->key without `mu`: the key is written before the entry is
// handed to the Guard (under `mu`, which orders it) and not again until the
// entry is recycled, which cannot happen while the Guard holds it.
#include "lockext/keyed_mutex.hpp"

#include <cassert>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <new>
#include <string>

#include "lockext/lockext.hpp"
#include "thread_annotations.hpp"

namespace lockext {
namespace detail {

namespace {

// Buckets a shard starts with and never shrinks below.
constexpr std::size_t kMinBuckets = 8;
// Freed entries a shard keeps for reuse, so lock/unlock churn does not malloc.
constexpr std::size_t kMaxSpare = 16;
// Key capacity kept in a recycled entry; longer keys give their memory back.
constexpr std::size_t kMaxSpareKeyCapacity = 256;
// Most shards a KeyedMutex may have.
constexpr std::size_t kMaxShards = 65536;

// The hash of a key, used for both the shard and the bucket.
std::size_t hash_key(std::string_view key) noexcept {
    return std::hash<std::string_view>{}(key);
}

}  // namespace

// One key that is held or waited for.
struct KeyedEntry {
    KeyedEntry *next = nullptr;  // next entry in the bucket chain, or in the spare list
    std::size_t hash = 0;
    std::string key;
    std::uint32_t refs = 0;  // holder (0 or 1) + waiters
    bool held = false;
    std::condition_variable cv;  // waiters for this key sleep here
};

// One partition of the key space: a chained hash table of live entries.
struct alignas(64) KeyedShard {
    Mutex mu;
    std::unique_ptr<KeyedEntry *[]> buckets GUARDED_BY(mu);
    std::size_t bucket_count GUARDED_BY(mu) = 0;  // 0 or a power of two
    std::size_t live GUARDED_BY(mu) = 0;          // entries in the table
    KeyedEntry *spare GUARDED_BY(mu) = nullptr;   // recycled entries, linked by next
    std::size_t spare_count GUARDED_BY(mu) = 0;

    // Free every entry; the table must be empty (no Guard alive).
    ~KeyedShard() NO_THREAD_SAFETY_ANALYSIS;

    // The live entry for key, or null.
    KeyedEntry *find(std::string_view key, std::size_t hash) REQUIRES(mu);
    // Link a new entry for key (refs 0, not held). Throws std::bad_alloc and
    // then leaves the table unchanged.
    KeyedEntry *insert(std::string_view key, std::size_t hash) REQUIRES(mu);
    // The entry for key, created if needed, with the caller counted in its
    // refs (so it outlives the caller's wait).
    KeyedEntry *join(std::string_view key, std::size_t hash) REQUIRES(mu);
    // Unlink an entry whose refs reached 0 and recycle it.
    void remove(KeyedEntry *entry) REQUIRES(mu);
    // Move every entry into a table of new_count buckets (a power of two).
    // Returns false, changing nothing, when the memory is not there.
    bool rehash(std::size_t new_count) REQUIRES(mu);
};

KeyedShard::~KeyedShard() {
    assert(live == 0 && "KeyedMutex destroyed while a Guard still holds or waits for a key");
    for (std::size_t i = 0; i < bucket_count; ++i) {
        for (KeyedEntry *e = buckets[i]; e != nullptr;)
            delete std::exchange(e, e->next);
    }
    for (KeyedEntry *e = spare; e != nullptr;)
        delete std::exchange(e, e->next);
}

KeyedEntry *KeyedShard::find(std::string_view key, std::size_t hash) {
    if (bucket_count == 0)
        return nullptr;
    for (KeyedEntry *e = buckets[hash & (bucket_count - 1)]; e != nullptr; e = e->next) {
        if (e->hash == hash && e->key == key)
            return e;
    }
    return nullptr;
}

// Find or create key's entry and count the caller in.
KeyedEntry *KeyedShard::join(std::string_view key, std::size_t hash) {
    KeyedEntry *entry = find(key, hash);
    if (entry == nullptr)
        entry = insert(key, hash);
    ++entry->refs;
    return entry;
}

KeyedEntry *KeyedShard::insert(std::string_view key, std::size_t hash) {
    // Everything that can throw happens before the table changes.
    std::unique_ptr<KeyedEntry> entry;
    if (spare != nullptr) {
        entry.reset(std::exchange(spare, spare->next));
        --spare_count;
    } else {
        entry = std::make_unique<KeyedEntry>();
    }
    try {
        entry->key.assign(key);
    } catch (...) {
        // Keep the entry for the next insert if there is room; else unique_ptr frees it.
        if (spare_count < kMaxSpare) {
            entry->next = spare;
            spare = entry.release();
            ++spare_count;
        }
        throw;
    }
    if (live + 1 > bucket_count && !rehash(bucket_count == 0 ? kMinBuckets : bucket_count * 2)) {
        throw std::bad_alloc();
    }
    entry->hash = hash;
    entry->refs = 0;
    entry->held = false;
    KeyedEntry *&head = buckets[hash & (bucket_count - 1)];
    entry->next = head;
    head = entry.get();
    ++live;
    return entry.release();
}

void KeyedShard::remove(KeyedEntry *entry) {
    KeyedEntry **link = &buckets[entry->hash & (bucket_count - 1)];
    while (*link != entry)
        link = &(*link)->next;
    *link = entry->next;
    --live;
    if (spare_count < kMaxSpare) {
        if (entry->key.capacity() > kMaxSpareKeyCapacity)
            std::string().swap(entry->key);
        entry->next = spare;
        spare = entry;
        ++spare_count;
    } else {
        delete entry;
    }
    // Give back the bucket array after a burst of keys; failing to is harmless.
    if (bucket_count > kMinBuckets && live < bucket_count / 8)
        rehash(bucket_count / 2);
}

bool KeyedShard::rehash(std::size_t new_count) {
    std::unique_ptr<KeyedEntry *[]> fresh(new (std::nothrow) KeyedEntry *[new_count]());
    if (!fresh)
        return false;
    for (std::size_t i = 0; i < bucket_count; ++i) {
        for (KeyedEntry *e = buckets[i]; e != nullptr;) {
            KeyedEntry *next = e->next;
            KeyedEntry *&head = fresh[e->hash & (new_count - 1)];
            e->next = head;
            head = e;
            e = next;
        }
    }
    buckets = std::move(fresh);
    bucket_count = new_count;
    return true;
}

}  // namespace detail

using detail::KeyedEntry;
using detail::KeyedShard;
using detail::MutexLock;

// ---- Guard ----------------------------------------------------------------

KeyedMutex::Guard::Guard(Guard &&other) noexcept
    : shard_(std::exchange(other.shard_, nullptr)), entry_(std::exchange(other.entry_, nullptr)) {}

KeyedMutex::Guard &KeyedMutex::Guard::operator=(Guard &&other) noexcept {
    if (this != &other) {
        unlock();
        shard_ = std::exchange(other.shard_, nullptr);
        entry_ = std::exchange(other.entry_, nullptr);
    }
    return *this;
}

KeyedMutex::Guard::~Guard() {
    unlock();
}

std::string_view KeyedMutex::Guard::key() const noexcept {
    return entry_ != nullptr ? std::string_view(entry_->key) : std::string_view();
}

void KeyedMutex::Guard::unlock() noexcept {
    if (entry_ == nullptr)
        return;
    KeyedShard &shard = *shard_;
    KeyedEntry *entry = std::exchange(entry_, nullptr);
    shard_ = nullptr;
    MutexLock lock(shard.mu);
    entry->held = false;
    if (--entry->refs == 0) {
        shard.remove(entry);
    } else {
        entry->cv.notify_one();  // under mu: see the protocol at the top
    }
}

// ---- KeyedMutex -----------------------------------------------------------

KeyedMutex::KeyedMutex(std::size_t shards) {
    if (shards == 0 || shards > detail::kMaxShards) {
        throw InvalidArgument("KeyedMutex: shards must be between 1 and " +
                              std::to_string(detail::kMaxShards) + ", got " +
                              std::to_string(shards));
    }
    shard_count_ = 1;
    while (shard_count_ < shards)
        shard_count_ *= 2;
    shards_ = std::make_unique<KeyedShard[]>(shard_count_);
}

KeyedMutex::~KeyedMutex() = default;

KeyedShard &KeyedMutex::shard_for(std::size_t hash) const noexcept {
    // Fibonacci mixing: the shard comes from different hash bits than the bucket
    // (low bits), so the keys of one shard still spread over its buckets.
    const std::uint64_t mixed = static_cast<std::uint64_t>(hash) * 0x9E3779B97F4A7C15ULL;
    return shards_[(mixed >> 32) & (shard_count_ - 1)];
}

// Block until key is free, then hold it.
KeyedMutex::Guard KeyedMutex::lock(std::string_view key) {
    const std::size_t hash = detail::hash_key(key);
    KeyedShard &shard = shard_for(hash);
    MutexLock lock(shard.mu);
    KeyedEntry *entry = shard.join(key, hash);
    while (entry->held)
        entry->cv.wait(lock.native());
    entry->held = true;
    return Guard(&shard, entry);
}

// Hold key if it is free now; empty otherwise.
std::optional<KeyedMutex::Guard> KeyedMutex::try_lock(std::string_view key) {
    const std::size_t hash = detail::hash_key(key);
    KeyedShard &shard = shard_for(hash);
    MutexLock lock(shard.mu);
    KeyedEntry *entry = shard.find(key, hash);
    if (entry != nullptr && entry->held)
        return std::nullopt;
    if (entry == nullptr)
        entry = shard.insert(key, hash);
    ++entry->refs;
    entry->held = true;
    return Guard(&shard, entry);
}

// Wait for key until deadline; empty if it is still held then.
std::optional<KeyedMutex::Guard> KeyedMutex::try_lock_until(
    std::string_view key, std::chrono::steady_clock::time_point deadline) {
    const std::size_t hash = detail::hash_key(key);
    KeyedShard &shard = shard_for(hash);
    MutexLock lock(shard.mu);
    KeyedEntry *entry = shard.join(key, hash);
    while (entry->held) {
        if (entry->cv.wait_until(lock.native(), deadline) == std::cv_status::timeout &&
            entry->held) {
            // Someone else holds it, so refs stays > 0 and the entry stays; their
            // unlock will wake the next waiter.
            --entry->refs;
            return std::nullopt;
        }
    }
    entry->held = true;
    return Guard(&shard, entry);
}

// Live entries over all shards (held or waited for).
std::size_t KeyedMutex::size() const {
    std::size_t total = 0;
    for (std::size_t i = 0; i < shard_count_; ++i) {
        MutexLock lock(shards_[i].mu);
        total += shards_[i].live;
    }
    return total;
}

}  // namespace lockext
