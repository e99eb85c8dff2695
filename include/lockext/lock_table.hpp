// The lock table: named leases, their holders and FIFO wait queues.
//
// This is the pure C++ core of the extension. It lives in one block of
// PostgreSQL shared memory but knows nothing of PostgreSQL: it takes no
// locks, allocates nothing, throws nothing and calls no PostgreSQL function.
// The caller (src/lock_shmem.cpp) owns the synchronisation; its header
// comment states the locking protocol every method here relies on.
//
// Layout: a fixed header followed by arrays sized at server start:
//   buckets[nbuckets]   hash chains of entries, keyed by (database, name)
//   entries[nentries]   one per name that has a holder or a waiter
//   holders[capacity]   one per granted lease ("slot"), lockext.max_locks
//   waiters[nwaiters]   one per PGPROC; a backend waits for one lock at a time
//   slot_heads[nwaiters] per backend: its scoped and pending holders
//   job_buckets[njob_buckets] hash chains of job leases, keyed by (database, job)
// All links are int32 indexes into these arrays, never pointers, so the
// block may be mapped at different addresses in different processes.
#pragma once

#include <cstddef>
#include <cstdint>

namespace lockext {

// Microseconds since 2000-01-01 UTC, PostgreSQL's TimestampTz.
using Timestamp = std::int64_t;
constexpr Timestamp kNever = INT64_MAX;

constexpr int kMaxNameLen = 128;   // bytes of a lock name
constexpr int kMaxOwnerLen = 128;  // bytes of an owner label
constexpr int kAppNameLen = 64;    // NAMEDATALEN, as pg_stat_activity keeps it
constexpr int kAddrLen = 64;       // a numeric IPv6 address with scope fits

enum class Mode : std::uint8_t { exclusive, shared, semaphore };
enum class Scope : std::uint8_t { lease, session, transaction };

// What the end of the holder's transaction does to a lease (job leases of
// the queues, src/queue_ops.cpp). A pending holder is linked to the slot of
// the backend whose transaction decides it.
enum class Pending : std::uint8_t {
    none,
    granted,            // taken by an open transaction: kept at commit, released at abort
    finishing,          // finished by an open transaction: released at commit, restored at abort
    granted_finishing,  // both in one transaction: released either way
};

// Who asks for a lock and how; copied into the holder slot on grant.
struct Request {
    std::uint32_t dboid;
    std::uint32_t roleid;
    std::int32_t pid;
    std::int32_t slot;  // the backend's waiter slot (its procno): lists its scoped holders
    Mode mode;
    Scope scope;
    std::int32_t max_holders;  // 1 unless mode is semaphore
    std::int64_t ttl_us;       // < 0: never expires (session/transaction only)
    std::int64_t job;          // the queue job a lease runs, or 0 (a plain lock)
    bool pending;              // a lease that the transaction's abort releases
    bool has_owner;
    char owner[kMaxOwnerLen + 1];
    char app_name[kAppNameLen];
    char client_addr[kAddrLen];  // empty for unix sockets and background workers
};

// One granted lease.
struct Holder {
    bool in_use;
    std::int32_t next;   // next holder of the same entry, or next free slot
    std::int32_t entry;  // owning entry
    std::int64_t token;
    Timestamp acquired_at;
    Timestamp renewed_at;  // 0 until the first renewal
    Timestamp expires_at;  // kNever for locks without a TTL
    // Session and transaction holders are also linked per backend (by
    // req.slot), so a commit or a backend exit visits only its own.
    std::int32_t slot_prev;
    std::int32_t slot_next;
    bool slot_linked;
    Pending pending;
    Timestamp saved_expiry;  // while finishing: the expiry an abort restores
    std::int32_t job_next;   // next job lease in the same job bucket
    Request req;
};

// One name with at least one holder or waiter.
struct Entry {
    bool in_use;
    bool semaphore;            // the kind is fixed while the entry exists
    std::int32_t max_holders;  // for semaphores
    std::uint32_t dboid;
    std::uint32_t hash;
    std::int32_t next;  // bucket chain, or next free entry
    std::int32_t holders;
    std::int32_t nholders;  // including expired ones not yet reaped
    std::int32_t queue_head;
    std::int32_t queue_tail;
    std::int32_t nwaiters;
    std::uint16_t name_len;
    char name[kMaxNameLen + 1];
};

// `failed`: dequeued because no holder slot was free when its turn came.
enum class WaitState : std::uint8_t { idle, waiting, granted, failed };

// One backend's pending request; indexed by its PGPROC number.
struct Waiter {
    WaitState state;
    std::int32_t entry;
    std::int32_t prev;
    std::int32_t next;
    Timestamp since;
    std::int32_t holder;   // set when granted
    std::int64_t token;    // set when granted
    Timestamp expires_at;  // set when granted
    Request req;
};

struct Stats {
    std::uint64_t acquired;
    std::uint64_t released;
    std::uint64_t expired;
    std::uint64_t renewed;
    std::uint64_t timed_out;
    std::uint64_t cancelled;
    std::uint64_t contended;
};

// A lock name within one database.
struct Key {
    std::uint32_t dboid;
    const char *name;
    int len;
};

enum class Outcome : std::uint8_t {
    granted,        // token and expires_at are set
    busy,           // not grantable now and the caller does not wait
    waiting,        // queued; the caller sleeps and polls
    timed_out,      // (poll) not granted by the deadline; dequeued
    kind_conflict,  // the name is held in an incompatible kind or max_holders
    capacity_full,  // no free slot even after reaping expired leases
    self_deadlock,  // the caller's own session/transaction lock blocks it
    not_held,       // (renew/release) the token no longer holds the lock
    not_permitted,  // (renew/release) the caller lacks the holder's role
    not_durable,    // (renew) the new expiry (in expires_at) is past the horizon given
};

struct Result {
    Outcome outcome;
    std::int64_t token;
    Timestamp expires_at;
    std::uint32_t holder_role;  // for not_permitted
    bool entry_semaphore;       // for kind_conflict
    std::int32_t entry_max_holders;
    // (acquire) a job whose lease on this name ran out unfinished and was
    // freed by this call, or 0: its delivery must still be counted.
    std::int64_t lapsed_job;
};

// Called for each waiter that a grant hands the lock to, so the PostgreSQL
// side can signal that backend's condition variable.
using WakeFn = void (*)(std::int32_t waiter, void *ctx);

// A snapshot row of a holder or waiter for the views.
struct HolderRow {
    Holder holder;
    char name[kMaxNameLen + 1];
};
struct WaiterRow {
    Waiter waiter;
    std::int32_t position;  // 1-based place in the queue
    char name[kMaxNameLen + 1];
};

class LockTable {
  public:
    // Bytes of shared memory for a table with these limits.
    static std::size_t bytes_needed(std::int32_t capacity, std::int32_t nwaiters) noexcept;
    // Lay out an empty table in `mem`; called once by the postmaster.
    static LockTable *create(void *mem, std::int32_t capacity, std::int32_t nwaiters) noexcept;

    // Grant now, or queue `waiter` if `may_wait`; wakes others via `wake`.
    Result acquire(const Key &key, const Request &req, Timestamp now, bool may_wait,
                   std::int32_t waiter, WakeFn wake, void *ctx) noexcept;
    // Check a queued waiter: granted, or still waiting until `*wake_at`.
    Result poll(std::int32_t waiter, Timestamp now, Timestamp deadline, Timestamp *wake_at,
                WakeFn wake, void *ctx) noexcept;
    // Leave the queue (cancel or error); a grant that raced in is released.
    void abandon(std::int32_t waiter, Timestamp now, WakeFn wake, void *ctx) noexcept;
    // Whether `waiter` is queued or holds an unconsumed grant.
    bool is_waiting(std::int32_t waiter) const noexcept;

    // Extend a live lease; ttl_us < 0 keeps the granted TTL, capped at max_ttl_us.
    // A new expiry past `horizon` changes nothing and comes back as not_durable.
    Result renew(const Key &key, std::int64_t token, std::int64_t ttl_us, std::int64_t max_ttl_us,
                 Timestamp now, Timestamp horizon, std::uint32_t caller_role, bool privileged,
                 WakeFn wake, void *ctx) noexcept;
    // Release a live lease and hand the lock to the next waiters.
    Result release(const Key &key, std::int64_t token, Timestamp now, std::uint32_t caller_role,
                   bool privileged, WakeFn wake, void *ctx) noexcept;
    // Mark every job lease of `dboid` named `prefix`... (`len` bytes) as
    // finished by the transaction of backend `pid` (see finish_job); expired
    // ones are freed. Returns how many were marked.
    std::int32_t finish_all(std::uint32_t dboid, const char *prefix, int len, Timestamp now,
                            std::int32_t pid, std::int32_t slot) noexcept;
    // Mark the live lease of job `job` (in `dboid`) with `token` as finished
    // by the transaction of backend `pid` (waiter slot `slot`): it cannot
    // expire before that transaction ends, which releases it at commit and
    // restores it at abort (release_backend). not_held unless its name starts
    // with `prefix` (`len` bytes), or when another open transaction decides
    // it. *keyed says whether the lease is a key's (not the job id's).
    Result finish_job(std::uint32_t dboid, std::int64_t job, std::int64_t token, const char *prefix,
                      int len, Timestamp now, std::int32_t pid, std::int32_t slot,
                      bool *keyed) noexcept;
    // Extend the live lease of job `job` with `token`, as renew() does.
    Result renew_job(std::uint32_t dboid, std::int64_t job, std::int64_t token, const char *prefix,
                     int len, std::int64_t ttl_us, Timestamp now, Timestamp horizon) noexcept;
    // The job that the live lease `token` of `key` runs, or 0 (none, or a plain lock).
    std::int64_t job_of(const Key &key, std::int64_t token, Timestamp now) const noexcept;
    // Make the live lease `token` of `key` run job `job`.
    void set_job(const Key &key, std::int64_t token, std::int64_t job) noexcept;
    // Release every holder of `key` regardless of token; returns the count.
    std::int32_t force_release(const Key &key, Timestamp now, WakeFn wake, void *ctx) noexcept;
    // WAL replay on a standby: install the lease a primary granted, held by
    // `token` from `acquired_at` until `expires_at` (lease scope, no
    // backend); false when the table is full. Tokens resume above `token`.
    bool replay_grant(const Key &key, const Request &req, std::int64_t token, Timestamp acquired_at,
                      Timestamp expires_at, Timestamp now) noexcept;
    // WAL replay: lease `token` of `key` was renewed at `renewed_at` until
    // `expires_at`; nothing when it is not held here.
    void replay_renew(const Key &key, std::int64_t token, Timestamp renewed_at,
                      Timestamp expires_at) noexcept;
    // Release the session and/or transaction holders of backend `pid`, whose
    // waiter slot is `slot`; with `transaction`, settle its pending leases
    // as a commit (`commit`) or an abort does.
    std::int32_t release_backend(std::int32_t pid, std::int32_t slot, bool session,
                                 bool transaction, bool commit, Timestamp now, WakeFn wake,
                                 void *ctx) noexcept;
    // Free every expired holder; returns the count. Unless `jobs_too`, an
    // expired job lease stays until its name is next acquired, which then
    // reports it (Result::lapsed_job).
    std::int32_t reap_all(Timestamp now, WakeFn wake, void *ctx, bool jobs_too = true) noexcept;

    // Copy live holders of `dboid` into `out`; returns the count.
    std::int32_t snapshot_holders(std::uint32_t dboid, Timestamp now, HolderRow *out,
                                  std::int32_t max) const noexcept;
    // The jobs of the live job leases of `dboid` whose names start with
    // `prefix` (`len` bytes), into `out`; returns the count.
    std::int32_t job_leases(std::uint32_t dboid, const char *prefix, int len, Timestamp now,
                            std::int64_t *out, std::int32_t max) const noexcept;
    // Copy queued waiters of `dboid` into `out`; returns the count.
    std::int32_t snapshot_waiters(std::uint32_t dboid, WaiterRow *out,
                                  std::int32_t max) const noexcept;
    // Holder slots currently allocated (live or expired, not yet reaped).
    std::int32_t slots_used() const noexcept {
        return holders_used_;
    }
    std::int32_t capacity() const noexcept {
        return capacity_;
    }
    std::int32_t max_waiters() const noexcept {
        return nwaiters_;
    }
    const Stats &stats() const noexcept {
        return stats_;
    }
    Stats &stats() noexcept {
        return stats_;
    }

    // Last fencing token handed out; the durable-state module moves it
    // forward at start-up so tokens never repeat across restarts.
    std::int64_t last_token;
    // No lease is granted before this time (after a restart, see README).
    Timestamp grace_until;

  private:
    std::int32_t *buckets() noexcept;
    Entry *entries() noexcept;
    Holder *holders() noexcept;
    Waiter *waiters() noexcept;
    const std::int32_t *buckets() const noexcept;
    const Entry *entries() const noexcept;
    const Holder *holders() const noexcept;
    const Waiter *waiters() const noexcept;
    std::int32_t *slot_heads() noexcept;  // per waiter slot: its first scoped holder

    std::int32_t find_entry(const Key &key, std::uint32_t hash) const noexcept;
    std::int32_t insert_entry(const Key &key, std::uint32_t hash) noexcept;
    void free_entry_if_unused(std::int32_t e) noexcept;
    std::int32_t reap_entry(std::int32_t e, Timestamp now, bool jobs_too = true) noexcept;
    void link_slot(std::int32_t h, std::int32_t slot) noexcept;
    std::int32_t *job_buckets() noexcept;
    const std::int32_t *job_buckets() const noexcept;
    void link_job(std::int32_t h) noexcept;
    void unlink_job(std::int32_t h) noexcept;
    std::int32_t find_job(std::uint32_t dboid, std::int64_t job, std::int64_t token,
                          const char *prefix, int len, Timestamp now) const noexcept;
    Result finish_holder(std::int32_t h, std::int32_t pid, std::int32_t slot) noexcept;
    bool extend_holder(std::int32_t h, std::int64_t ttl_us, Timestamp now, Timestamp horizon,
                       Result *r) noexcept;
    void unlink_slot(std::int32_t h) noexcept;
    std::int32_t reap_all_but(std::int32_t skip, Timestamp now) noexcept;
    bool grantable(const Entry &entry, const Request &req, Timestamp now) const noexcept;
    bool holds_scoped(const Entry &entry, std::int32_t pid) const noexcept;
    std::int32_t grant(std::int32_t e, const Request &req, Timestamp now) noexcept;
    void unlink_holder(std::int32_t h) noexcept;
    bool grant_waiters(std::int32_t e, Timestamp now, WakeFn wake, void *ctx) noexcept;
    void enqueue(std::int32_t e, std::int32_t w) noexcept;
    void dequeue(std::int32_t w) noexcept;
    std::int32_t find_holder(std::int32_t e, std::int64_t token) const noexcept;
    std::int32_t held_by(const Key &key, std::int64_t token, Timestamp now,
                         std::uint32_t caller_role, bool privileged, std::int32_t *entry,
                         Result *r) const noexcept;
    Timestamp next_expiry(const Entry &entry, Timestamp now) const noexcept;

    std::int32_t capacity_;
    std::int32_t nentries_;
    std::int32_t nwaiters_;
    std::int32_t nbuckets_;      // a power of two
    std::int32_t njob_buckets_;  // a power of two
    std::int32_t free_entries_;
    std::int32_t free_holders_;
    std::int32_t holders_used_;
    // An entry acquire() is filling, which reap_all_but() must not free even
    // though it has no holders or waiters yet; -1 when none.
    std::int32_t pinned_entry_;
    // The last job lease reap_entry freed unfinished (see Result::lapsed_job).
    std::int64_t reaped_job_;
    Stats stats_;
};

// Hash of a key, FNV-1a over the database oid and the name bytes.
std::uint32_t hash_key(const Key &key) noexcept;

}  // namespace lockext
