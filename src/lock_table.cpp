// The lock table's algorithms: grant, queue, renew, release, expiry.
//
// Every method assumes the caller holds the table's LWLock exclusively,
// except the const snapshot methods, which need it at least shared
// (see the protocol in src/lock_shmem.cpp). Nothing here blocks or fails
// halfway: each method leaves the table consistent before it returns.
//
// Fairness: a request is granted at once only when the queue is empty and
// the live holders allow it; otherwise it joins the tail. grant_waiters()
// grants from the head while the head is compatible, so a waiting exclusive
// request is never overtaken by later shared ones, and a stream of newcomers
// never starves an earlier waiter.
#include "lockext/lock_table.hpp"

#include <cstring>

#include "lockext/pure_cpp.hpp"

namespace lockext {

namespace {

// Round up to a power of two, at least 16.
std::int32_t pow2_at_least(std::int64_t n) {
    std::int64_t p = 16;
    while (p < n)
        p <<= 1;
    return static_cast<std::int32_t>(p);
}

// Bytes rounded up to keep each array 8-byte aligned.
std::size_t align8(std::size_t n) {
    return (n + 7) & ~static_cast<std::size_t>(7);
}

// Whether a holder's lease is still in force at `now`.
bool live(const Holder &h, Timestamp now) {
    return h.expires_at > now;
}

// Expiry of a lease granted or renewed at `now` for `ttl_us`.
Timestamp expiry(Timestamp now, std::int64_t ttl_us) {
    if (ttl_us < 0)
        return kNever;
    if (ttl_us > kNever - now)
        return kNever;
    return now + ttl_us;
}

}  // namespace

// Hash of a key, FNV-1a over the database oid and the name bytes.
std::uint32_t hash_key(const Key &key) noexcept {
    std::uint32_t h = 2166136261u;
    for (int i = 0; i < 4; i++) {
        h ^= (key.dboid >> (8 * i)) & 0xffu;
        h *= 16777619u;
    }
    for (int i = 0; i < key.len; i++) {
        h ^= static_cast<unsigned char>(key.name[i]);
        h *= 16777619u;
    }
    return h;
}

// Bytes of shared memory for a table with these limits.
std::size_t LockTable::bytes_needed(std::int32_t capacity, std::int32_t nwaiters) noexcept {
    const std::int64_t nentries = static_cast<std::int64_t>(capacity) + nwaiters;
    return align8(sizeof(LockTable)) +
           align8(sizeof(std::int32_t) * static_cast<std::size_t>(pow2_at_least(nentries * 2))) +
           align8(sizeof(Entry) * static_cast<std::size_t>(nentries)) +
           align8(sizeof(Holder) * static_cast<std::size_t>(capacity)) +
           align8(sizeof(Waiter) * static_cast<std::size_t>(nwaiters)) +
           align8(sizeof(std::int32_t) * static_cast<std::size_t>(nwaiters)) +
           align8(sizeof(std::int32_t) * static_cast<std::size_t>(pow2_at_least(capacity)));
}

// Lay out an empty table in `mem`; called once by the postmaster.
LockTable *LockTable::create(void *mem, std::int32_t capacity, std::int32_t nwaiters) noexcept {
    std::memset(mem, 0, bytes_needed(capacity, nwaiters));
    auto *t = static_cast<LockTable *>(mem);
    t->capacity_ = capacity;
    t->nwaiters_ = nwaiters;
    t->nentries_ = capacity + nwaiters;
    t->nbuckets_ = pow2_at_least(static_cast<std::int64_t>(t->nentries_) * 2);
    t->njob_buckets_ = pow2_at_least(capacity);
    t->last_token = 0;
    t->grace_until = 0;
    t->pinned_entry_ = -1;
    t->reaped_job_ = 0;
    for (std::int32_t i = 0; i < t->nbuckets_; i++)
        t->buckets()[i] = -1;
    for (std::int32_t i = 0; i < t->nentries_; i++)
        t->entries()[i].next = (i + 1 < t->nentries_) ? i + 1 : -1;
    t->free_entries_ = 0;
    for (std::int32_t i = 0; i < capacity; i++)
        t->holders()[i].next = (i + 1 < capacity) ? i + 1 : -1;
    t->free_holders_ = capacity > 0 ? 0 : -1;
    for (std::int32_t i = 0; i < nwaiters; i++) {
        t->waiters()[i].state = WaitState::idle;
        t->waiters()[i].entry = -1;
        t->waiters()[i].prev = t->waiters()[i].next = -1;
        t->slot_heads()[i] = -1;
    }
    for (std::int32_t i = 0; i < t->njob_buckets_; i++)
        t->job_buckets()[i] = -1;
    return t;
}

std::int32_t *LockTable::buckets() noexcept {
    return reinterpret_cast<std::int32_t *>(reinterpret_cast<char *>(this) +
                                            align8(sizeof(LockTable)));
}
Entry *LockTable::entries() noexcept {
    return reinterpret_cast<Entry *>(reinterpret_cast<char *>(buckets()) +
                                     align8(sizeof(std::int32_t) * nbuckets_));
}
Holder *LockTable::holders() noexcept {
    return reinterpret_cast<Holder *>(reinterpret_cast<char *>(entries()) +
                                      align8(sizeof(Entry) * nentries_));
}
Waiter *LockTable::waiters() noexcept {
    return reinterpret_cast<Waiter *>(reinterpret_cast<char *>(holders()) +
                                      align8(sizeof(Holder) * capacity_));
}
std::int32_t *LockTable::slot_heads() noexcept {
    return reinterpret_cast<std::int32_t *>(reinterpret_cast<char *>(waiters()) +
                                            align8(sizeof(Waiter) * nwaiters_));
}
std::int32_t *LockTable::job_buckets() noexcept {
    return reinterpret_cast<std::int32_t *>(reinterpret_cast<char *>(slot_heads()) +
                                            align8(sizeof(std::int32_t) * nwaiters_));
}
const std::int32_t *LockTable::job_buckets() const noexcept {
    return const_cast<LockTable *>(this)->job_buckets();
}
const std::int32_t *LockTable::buckets() const noexcept {
    return const_cast<LockTable *>(this)->buckets();
}
const Entry *LockTable::entries() const noexcept {
    return const_cast<LockTable *>(this)->entries();
}
const Holder *LockTable::holders() const noexcept {
    return const_cast<LockTable *>(this)->holders();
}
const Waiter *LockTable::waiters() const noexcept {
    return const_cast<LockTable *>(this)->waiters();
}

// Index of the entry for `key`, or -1.
std::int32_t LockTable::find_entry(const Key &key, std::uint32_t hash) const noexcept {
    for (std::int32_t e = buckets()[hash & (nbuckets_ - 1)]; e >= 0; e = entries()[e].next) {
        const Entry &en = entries()[e];
        if (en.hash == hash && en.dboid == key.dboid && en.name_len == key.len &&
            std::memcmp(en.name, key.name, static_cast<std::size_t>(key.len)) == 0)
            return e;
    }
    return -1;
}

// Take a free entry for `key` and link it into its bucket; -1 when none.
std::int32_t LockTable::insert_entry(const Key &key, std::uint32_t hash) noexcept {
    const std::int32_t e = free_entries_;
    if (e < 0)
        return -1;
    Entry &en = entries()[e];
    free_entries_ = en.next;
    std::memset(&en, 0, sizeof(en));
    en.in_use = true;
    en.dboid = key.dboid;
    en.hash = hash;
    en.name_len = static_cast<std::uint16_t>(key.len);
    std::memcpy(en.name, key.name, static_cast<std::size_t>(key.len));
    en.holders = en.queue_head = en.queue_tail = -1;
    std::int32_t &head = buckets()[hash & (nbuckets_ - 1)];
    en.next = head;
    head = e;
    return e;
}

// Return an entry with no holders and no waiters to the free list.
void LockTable::free_entry_if_unused(std::int32_t e) noexcept {
    Entry &en = entries()[e];
    if (en.nholders > 0 || en.nwaiters > 0)
        return;
    std::int32_t *link = &buckets()[en.hash & (nbuckets_ - 1)];
    while (*link != e)
        link = &entries()[*link].next;
    *link = en.next;
    en.in_use = false;
    en.next = free_entries_;
    free_entries_ = e;
}

// Unlink holder `h` from its entry and return the slot to the free list.
void LockTable::unlink_holder(std::int32_t h) noexcept {
    Holder &ho = holders()[h];
    Entry &en = entries()[ho.entry];
    std::int32_t *link = &en.holders;
    while (*link != h)
        link = &holders()[*link].next;
    *link = ho.next;
    en.nholders--;
    unlink_slot(h);
    unlink_job(h);
    ho.pending = Pending::none;
    ho.in_use = false;
    ho.next = free_holders_;
    free_holders_ = h;
    holders_used_--;
}

// The job bucket of (dboid, job).
static std::uint32_t job_hash(std::uint32_t dboid, std::int64_t job) {
    std::uint64_t x = static_cast<std::uint64_t>(job) * 0x9e3779b97f4a7c15ull ^ dboid;
    return static_cast<std::uint32_t>(x ^ (x >> 29));
}

// Link job lease `h` into its job bucket.
void LockTable::link_job(std::int32_t h) noexcept {
    Holder &ho = holders()[h];
    std::int32_t &head = job_buckets()[job_hash(ho.req.dboid, ho.req.job) & (njob_buckets_ - 1)];
    ho.job_next = head;
    head = h;
}

// Unlink holder `h` from its job bucket, if it is a job lease.
void LockTable::unlink_job(std::int32_t h) noexcept {
    Holder &ho = holders()[h];
    if (ho.req.job == 0)
        return;
    std::int32_t *link = &job_buckets()[job_hash(ho.req.dboid, ho.req.job) & (njob_buckets_ - 1)];
    while (*link >= 0 && *link != h)
        link = &holders()[*link].job_next;
    if (*link == h)
        *link = ho.job_next;
    ho.job_next = -1;
}

// The live lease of job `job` held by `token` whose name starts with
// `prefix`, or -1.
std::int32_t LockTable::find_job(std::uint32_t dboid, std::int64_t job, std::int64_t token,
                                 const char *prefix, int len, Timestamp now) const noexcept {
    if (job == 0)
        return -1;
    for (std::int32_t h = job_buckets()[job_hash(dboid, job) & (njob_buckets_ - 1)]; h >= 0;
         h = holders()[h].job_next) {
        const Holder &ho = holders()[h];
        if (ho.req.job != job || ho.req.dboid != dboid || ho.token != token || !live(ho, now))
            continue;
        const Entry &en = entries()[ho.entry];
        if (en.name_len < len || std::memcmp(en.name, prefix, static_cast<std::size_t>(len)) != 0)
            return -1;
        return h;
    }
    return -1;
}

// Link holder `h` into the list of waiter slot `slot` (its backend's scoped
// and pending holders).
void LockTable::link_slot(std::int32_t h, std::int32_t slot) noexcept {
    Holder &ho = holders()[h];
    ho.req.slot = slot;
    ho.slot_linked = true;
    std::int32_t &head = slot_heads()[slot];
    ho.slot_prev = -1;
    ho.slot_next = head;
    if (head >= 0)
        holders()[head].slot_prev = h;
    head = h;
}

// Unlink holder `h` from its slot's list, if it is on one.
void LockTable::unlink_slot(std::int32_t h) noexcept {
    Holder &ho = holders()[h];
    if (!ho.slot_linked)
        return;
    if (ho.slot_prev >= 0)
        holders()[ho.slot_prev].slot_next = ho.slot_next;
    else
        slot_heads()[ho.req.slot] = ho.slot_next;
    if (ho.slot_next >= 0)
        holders()[ho.slot_next].slot_prev = ho.slot_prev;
    ho.slot_linked = false;
}

// Free the expired holders of entry `e`; returns how many. A job lease
// freed here is remembered in reaped_job_; unless `jobs_too`, expired job
// leases stay (their lapse is reported when the name is next acquired).
std::int32_t LockTable::reap_entry(std::int32_t e, Timestamp now, bool jobs_too) noexcept {
    std::int32_t n = 0;
    std::int32_t h = entries()[e].holders;
    while (h >= 0) {
        const std::int32_t next = holders()[h].next;
        if (!live(holders()[h], now) && (jobs_too || holders()[h].req.job == 0)) {
            if (holders()[h].req.job != 0)
                reaped_job_ = holders()[h].req.job;
            unlink_holder(h);
            n++;
        }
        h = next;
    }
    stats_.expired += static_cast<std::uint64_t>(n);
    return n;
}

// Whether the live holders of `entry` admit `req` (the queue is not consulted).
bool LockTable::grantable(const Entry &entry, const Request &req, Timestamp now) const noexcept {
    if (now < grace_until)
        return false;
    std::int32_t nlive = 0;
    bool exclusive_held = false;
    for (std::int32_t h = entry.holders; h >= 0; h = holders()[h].next) {
        const Holder &ho = holders()[h];
        if (!live(ho, now))
            continue;
        nlive++;
        if (ho.req.mode == Mode::exclusive)
            exclusive_held = true;
    }
    switch (req.mode) {
        case Mode::exclusive:
            return nlive == 0;
        case Mode::shared:
            return !exclusive_held;
        case Mode::semaphore:
            return nlive < entry.max_holders;
    }
    return false;
}

// Whether backend `pid` holds `entry` in session or transaction scope.
bool LockTable::holds_scoped(const Entry &entry, std::int32_t pid) const noexcept {
    for (std::int32_t h = entry.holders; h >= 0; h = holders()[h].next) {
        const Holder &ho = holders()[h];
        if (ho.req.pid == pid && ho.req.scope != Scope::lease)
            return true;
    }
    return false;
}

// Fill a free holder slot of entry `e` for `req`; -1 when none is free.
std::int32_t LockTable::grant(std::int32_t e, const Request &req, Timestamp now) noexcept {
    const std::int32_t h = free_holders_;
    if (h < 0)
        return -1;
    Holder &ho = holders()[h];
    free_holders_ = ho.next;
    holders_used_++;
    Entry &en = entries()[e];
    ho.in_use = true;
    ho.entry = e;
    ho.token = ++last_token;
    ho.acquired_at = now;
    ho.renewed_at = 0;
    ho.expires_at = expiry(now, req.ttl_us);
    ho.req = req;
    ho.next = en.holders;
    en.holders = h;
    en.nholders++;
    ho.slot_linked = false;
    ho.pending = Pending::none;
    ho.saved_expiry = 0;
    ho.job_next = -1;
    if (req.job != 0)
        link_job(h);
    const bool pending = req.scope == Scope::lease && req.pending;
    if ((req.scope != Scope::lease || pending) && req.slot >= 0 && req.slot < nwaiters_) {
        link_slot(h, req.slot);
        if (pending)
            ho.pending = Pending::granted;
    }
    stats_.acquired++;
    return h;
}

// Append waiter `w` to the queue of entry `e`.
void LockTable::enqueue(std::int32_t e, std::int32_t w) noexcept {
    Entry &en = entries()[e];
    Waiter &wa = waiters()[w];
    wa.entry = e;
    wa.next = -1;
    wa.prev = en.queue_tail;
    if (en.queue_tail >= 0)
        waiters()[en.queue_tail].next = w;
    else
        en.queue_head = w;
    en.queue_tail = w;
    en.nwaiters++;
}

// Remove waiter `w` from its entry's queue (the entry stays allocated).
void LockTable::dequeue(std::int32_t w) noexcept {
    Waiter &wa = waiters()[w];
    Entry &en = entries()[wa.entry];
    if (wa.prev >= 0)
        waiters()[wa.prev].next = wa.next;
    else
        en.queue_head = wa.next;
    if (wa.next >= 0)
        waiters()[wa.next].prev = wa.prev;
    else
        en.queue_tail = wa.prev;
    wa.prev = wa.next = -1;
    en.nwaiters--;
}

// Grant from the head of the queue of `e` while the head is admitted;
// returns whether anything was granted.
//
// Waiters sleep until the earliest expiry they saw when they last looked.
// When the holders change under them (a grant here, a renewal), the new head
// is signalled so it looks again: otherwise a short lease handed to the
// waiter ahead of it would expire unnoticed. Only the head needs to look,
// because whoever polls grants from the head.
bool LockTable::grant_waiters(std::int32_t e, Timestamp now, WakeFn wake, void *ctx) noexcept {
    Entry &en = entries()[e];
    bool granted = false;
    bool moved = false;  // the head changed: a grant, or a failure
    while (en.queue_head >= 0) {
        const std::int32_t w = en.queue_head;
        Waiter &wa = waiters()[w];
        if (!grantable(en, wa.req, now))
            break;
        std::int32_t h = grant(e, wa.req, now);
        if (h < 0 && reap_all_but(e, now) > 0)
            h = grant(e, wa.req, now);
        dequeue(w);
        moved = true;
        if (h < 0) {
            // Its turn came but the table is full: fail it rather than let it
            // sleep with nobody bound to wake it when a slot frees elsewhere.
            wa.state = WaitState::failed;
            wake(w, ctx);
            continue;
        }
        wa.state = WaitState::granted;
        wa.holder = h;
        wa.token = holders()[h].token;
        wa.expires_at = holders()[h].expires_at;
        wake(w, ctx);
        granted = true;
    }
    if (moved && en.queue_head >= 0)
        wake(en.queue_head, ctx);
    return granted;
}

// Holder of entry `e` with `token`, or -1.
std::int32_t LockTable::find_holder(std::int32_t e, std::int64_t token) const noexcept {
    for (std::int32_t h = entries()[e].holders; h >= 0; h = holders()[h].next)
        if (holders()[h].token == token)
            return h;
    return -1;
}

// Earliest expiry among the live holders of `entry`, or kNever.
Timestamp LockTable::next_expiry(const Entry &entry, Timestamp now) const noexcept {
    Timestamp t = kNever;
    for (std::int32_t h = entry.holders; h >= 0; h = holders()[h].next) {
        const Holder &ho = holders()[h];
        if (live(ho, now) && ho.expires_at < t)
            t = ho.expires_at;
    }
    return t;
}

// Grant now, or queue `waiter` if `may_wait`; wakes others via `wake`.
Result LockTable::acquire(const Key &key, const Request &req, Timestamp now, bool may_wait,
                          std::int32_t waiter, WakeFn wake, void *ctx) noexcept {
    Result r{};
    // A slot left busy by a backend that died before cleaning up must not be
    // linked twice. Cleared before the entry is looked up: abandoning it may
    // free the entry it waited on, which may be the one this call uses.
    if (may_wait && waiters()[waiter].state != WaitState::idle)
        abandon(waiter, now, wake, ctx);
    const std::uint32_t hash = hash_key(key);
    std::int32_t e = find_entry(key, hash);
    if (e >= 0) {
        // Expired holders are freed first so they neither block nor count.
        reaped_job_ = 0;
        if (reap_entry(e, now) > 0)
            grant_waiters(e, now, wake, ctx);
        r.lapsed_job = reaped_job_;
        const Entry &en = entries()[e];
        const bool want_sem = req.mode == Mode::semaphore;
        if (en.semaphore != want_sem || (want_sem && en.max_holders != req.max_holders)) {
            if (en.nholders > 0 || en.nwaiters > 0) {
                r.outcome = Outcome::kind_conflict;
                r.entry_semaphore = en.semaphore;
                r.entry_max_holders = en.max_holders;
                return r;
            }
        }
    } else {
        e = insert_entry(key, hash);
        if (e < 0 && reap_all(now, wake, ctx) > 0)
            e = insert_entry(key, hash);
        if (e < 0) {
            r.outcome = Outcome::capacity_full;
            return r;
        }
    }
    Entry &en = entries()[e];
    if (en.nholders == 0 && en.nwaiters == 0) {
        en.semaphore = req.mode == Mode::semaphore;
        en.max_holders = req.max_holders;
    }
    if (en.queue_head < 0 && grantable(en, req, now)) {
        std::int32_t h = grant(e, req, now);
        if (h < 0) {
            // e may have no holders or waiters yet: pinned, so that the
            // waiters reap_all grants elsewhere cannot free it under us.
            pinned_entry_ = e;
            if (reap_all(now, wake, ctx) > 0)
                h = grant(e, req, now);
            pinned_entry_ = -1;
        }
        if (h < 0) {
            free_entry_if_unused(e);
            r.outcome = Outcome::capacity_full;
            return r;
        }
        r.outcome = Outcome::granted;
        r.token = holders()[h].token;
        r.expires_at = holders()[h].expires_at;
        return r;
    }
    stats_.contended++;
    if (!may_wait) {
        stats_.timed_out++;
        free_entry_if_unused(e);
        r.outcome = Outcome::busy;
        return r;
    }
    if (holds_scoped(en, req.pid)) {
        free_entry_if_unused(e);
        r.outcome = Outcome::self_deadlock;
        return r;
    }
    Waiter &wa = waiters()[waiter];
    wa.state = WaitState::waiting;
    wa.since = now;
    wa.token = 0;
    wa.expires_at = 0;
    wa.req = req;
    enqueue(e, waiter);
    r.outcome = Outcome::waiting;
    return r;
}

// Check a queued waiter: granted, or still waiting until `*wake_at`.
Result LockTable::poll(std::int32_t waiter, Timestamp now, Timestamp deadline, Timestamp *wake_at,
                       WakeFn wake, void *ctx) noexcept {
    Result r{};
    Waiter &wa = waiters()[waiter];
    if (wa.state == WaitState::idle) {
        r.outcome = Outcome::timed_out;  // not queued: nothing to wait for
        return r;
    }
    if (wa.state == WaitState::failed) {
        wa.state = WaitState::idle;
        wa.entry = -1;
        r.outcome = Outcome::capacity_full;
        return r;
    }
    if (wa.state == WaitState::waiting) {
        // A holder may have expired since we slept: nobody signals expiry,
        // so every waiter sleeps exactly until the next one and grants here.
        const std::int32_t e = wa.entry;
        reap_entry(e, now);
        grant_waiters(e, now, wake, ctx);
        if (wa.state != WaitState::waiting)
            free_entry_if_unused(e);
        if (wa.state == WaitState::failed) {
            // Its turn came in this very poll, with no slot to take.
            wa.state = WaitState::idle;
            wa.entry = -1;
            r.outcome = Outcome::capacity_full;
            return r;
        }
    }
    if (wa.state == WaitState::granted) {
        wa.state = WaitState::idle;
        wa.entry = -1;
        r.outcome = Outcome::granted;
        r.token = wa.token;
        r.expires_at = wa.expires_at;
        return r;
    }
    if (now >= deadline) {
        abandon(waiter, now, wake, ctx);
        stats_.timed_out++;
        r.outcome = Outcome::timed_out;
        return r;
    }
    const Entry &en = entries()[wa.entry];
    Timestamp t = next_expiry(en, now);
    if (grace_until > now && grace_until < t)
        t = grace_until;
    *wake_at = t < deadline ? t : deadline;
    r.outcome = Outcome::waiting;
    return r;
}

// Leave the queue (cancel or error); a grant that raced in is released.
void LockTable::abandon(std::int32_t waiter, Timestamp now, WakeFn wake, void *ctx) noexcept {
    Waiter &wa = waiters()[waiter];
    if (wa.state == WaitState::waiting) {
        const std::int32_t e = wa.entry;
        const bool was_head = entries()[e].queue_head == waiter;
        dequeue(waiter);
        // The head may have blocked compatible requests behind it. The new
        // head looks again even when nothing is granted: it may be sleeping
        // on a wake-up time computed before a renewal shortened a lease,
        // since a renewal signals only the head of the moment.
        if (was_head && !grant_waiters(e, now, wake, ctx) && entries()[e].queue_head >= 0)
            wake(entries()[e].queue_head, ctx);
        free_entry_if_unused(e);
    } else if (wa.state == WaitState::granted) {
        // The grant was made for us but never returned: undo it.
        const std::int32_t h = wa.holder;
        if (holders()[h].in_use && holders()[h].token == wa.token) {
            const std::int32_t e = holders()[h].entry;
            unlink_holder(h);
            stats_.released++;
            grant_waiters(e, now, wake, ctx);
            free_entry_if_unused(e);
        }
    }
    wa.state = WaitState::idle;
    wa.entry = -1;
}

// Whether `waiter` is queued or holds an unconsumed grant.
bool LockTable::is_waiting(std::int32_t waiter) const noexcept {
    return waiters()[waiter].state != WaitState::idle;
}

// The live holder of `key` with `token` that the caller may act on, or -1
// with r->outcome saying why not; *entry is the name's entry (or -1).
std::int32_t LockTable::held_by(const Key &key, std::int64_t token, Timestamp now,
                                std::uint32_t caller_role, bool privileged, std::int32_t *entry,
                                Result *r) const noexcept {
    r->outcome = Outcome::not_held;
    *entry = find_entry(key, hash_key(key));
    if (*entry < 0)
        return -1;
    const std::int32_t h = find_holder(*entry, token);
    if (h < 0 || !live(holders()[h], now))
        return -1;
    if (!privileged && holders()[h].req.roleid != caller_role) {
        r->outcome = Outcome::not_permitted;
        r->holder_role = holders()[h].req.roleid;
        return -1;
    }
    r->outcome = Outcome::granted;
    r->token = token;
    return h;
}

// Extend a live lease; ttl_us < 0 keeps the granted TTL, capped at max_ttl_us
// (the limit may have been lowered since the grant). An expiry past
// `horizon` (what the state file covers) is refused unchanged: the caller
// makes it durable first, so a failed write leaves the lease as it was
// rather than ending a lease its holder was already promised.
Result LockTable::renew(const Key &key, std::int64_t token, std::int64_t ttl_us,
                        std::int64_t max_ttl_us, Timestamp now, Timestamp horizon,
                        std::uint32_t caller_role, bool privileged, WakeFn wake,
                        void *ctx) noexcept {
    Result r{};
    std::int32_t e;
    const std::int32_t h = held_by(key, token, now, caller_role, privileged, &e, &r);
    if (h < 0)
        return r;
    Holder &ho = holders()[h];
    std::int64_t new_ttl = ho.req.ttl_us;
    if (ttl_us >= 0)
        new_ttl = ttl_us;
    else if (new_ttl > max_ttl_us)
        new_ttl = max_ttl_us;
    if (!extend_holder(h, new_ttl, now, horizon, &r))
        return r;
    // A shorter lease may now expire before the head planned to look again.
    if (entries()[e].queue_head >= 0)
        wake(entries()[e].queue_head, ctx);
    return r;
}

// Give holder `h` the expiry now + ttl_us unless that is past `horizon`
// (then r says not_durable and nothing changes); false if refused.
bool LockTable::extend_holder(std::int32_t h, std::int64_t ttl_us, Timestamp now, Timestamp horizon,
                              Result *r) noexcept {
    Holder &ho = holders()[h];
    const Timestamp new_expiry = expiry(now, ttl_us);
    r->token = ho.token;
    r->expires_at = new_expiry;
    if (new_expiry != kNever && new_expiry > horizon) {
        r->outcome = Outcome::not_durable;
        return false;
    }
    ho.req.ttl_us = ttl_us;
    ho.expires_at = new_expiry;
    ho.renewed_at = now;
    stats_.renewed++;
    r->outcome = Outcome::granted;
    return true;
}

// Release a live lease and hand the lock to the next waiters.
Result LockTable::release(const Key &key, std::int64_t token, Timestamp now,
                          std::uint32_t caller_role, bool privileged, WakeFn wake,
                          void *ctx) noexcept {
    Result r{};
    std::int32_t e;
    const std::int32_t h = held_by(key, token, now, caller_role, privileged, &e, &r);
    if (h >= 0) {
        unlink_holder(h);
        stats_.released++;
    } else if (e < 0 || r.outcome != Outcome::not_held) {
        return r;
    } else {
        reap_entry(e, now);  // the token may have expired: free it now
    }
    grant_waiters(e, now, wake, ctx);
    free_entry_if_unused(e);
    return r;
}

// Mark live holder `h` finishing in the transaction of backend `pid`.
Result LockTable::finish_holder(std::int32_t h, std::int32_t pid, std::int32_t slot) noexcept {
    Result r{};
    Holder &ho = holders()[h];
    r.outcome = Outcome::granted;
    r.token = ho.token;
    switch (ho.pending) {
        case Pending::none:
            ho.saved_expiry = ho.expires_at;
            ho.expires_at = kNever;
            ho.req.pid = pid;
            link_slot(h, slot);
            ho.pending = Pending::finishing;
            break;
        case Pending::granted:
            // Taken by a transaction that has not ended: only that one may finish it.
            if (ho.req.pid != pid || ho.req.slot != slot) {
                r.outcome = Outcome::not_held;
                return r;
            }
            ho.pending = Pending::granted_finishing;
            break;
        case Pending::finishing:
        case Pending::granted_finishing:
            if (ho.req.pid != pid || ho.req.slot != slot) {
                r.outcome = Outcome::not_held;
                return r;
            }
            break;
    }
    r.expires_at = ho.expires_at;
    return r;
}

// Mark the live lease of job `job` finishing; see the header.
Result LockTable::finish_job(std::uint32_t dboid, std::int64_t job, std::int64_t token,
                             const char *prefix, int len, Timestamp now, std::int32_t pid,
                             std::int32_t slot, bool *keyed) noexcept {
    Result r{};
    r.outcome = Outcome::not_held;
    const std::int32_t h = find_job(dboid, job, token, prefix, len, now);
    if (h < 0 || slot < 0 || slot >= nwaiters_)
        return r;
    const Entry &en = entries()[holders()[h].entry];
    // Names are <prefix>k/<key>, <prefix>h/<hash> or <prefix>j/<id>.
    *keyed = en.name_len > len && en.name[len] != 'j';
    return finish_holder(h, pid, slot);
}

// Extend the live lease of job `job`; see the header.
Result LockTable::renew_job(std::uint32_t dboid, std::int64_t job, std::int64_t token,
                            const char *prefix, int len, std::int64_t ttl_us, Timestamp now,
                            Timestamp horizon) noexcept {
    Result r{};
    r.outcome = Outcome::not_held;
    const std::int32_t h = find_job(dboid, job, token, prefix, len, now);
    if (h < 0 || holders()[h].pending == Pending::finishing ||
        holders()[h].pending == Pending::granted_finishing)
        return r;
    (void)extend_holder(h, ttl_us, now, horizon, &r);
    return r;
}

// Mark every job lease of `dboid` named `prefix`... finishing; see the header.
std::int32_t LockTable::finish_all(std::uint32_t dboid, const char *prefix, int len, Timestamp now,
                                   std::int32_t pid, std::int32_t slot) noexcept {
    std::int32_t n = 0;
    if (slot < 0 || slot >= nwaiters_)
        return 0;
    for (std::int32_t h = 0; h < capacity_; h++) {
        Holder &ho = holders()[h];
        if (!ho.in_use || ho.req.job == 0 || ho.req.dboid != dboid)
            continue;
        const std::int32_t e = ho.entry;
        const Entry &en = entries()[e];
        if (en.name_len < len || std::memcmp(en.name, prefix, static_cast<std::size_t>(len)) != 0)
            continue;
        if (!live(ho, now)) {
            unlink_holder(h);
            stats_.expired++;
            free_entry_if_unused(e);
        } else if (ho.pending == Pending::none) {
            (void)finish_holder(h, pid, slot);
            n++;
        }
    }
    return n;
}

// The job that the live lease `token` of `key` runs, or 0.
std::int64_t LockTable::job_of(const Key &key, std::int64_t token, Timestamp now) const noexcept {
    const std::int32_t e = find_entry(key, hash_key(key));
    if (e < 0)
        return 0;
    const std::int32_t h = find_holder(e, token);
    if (h < 0 || !live(holders()[h], now))
        return 0;
    return holders()[h].req.job;
}

// Make the live lease `token` of `key` run job `job`.
void LockTable::set_job(const Key &key, std::int64_t token, std::int64_t job) noexcept {
    const std::int32_t e = find_entry(key, hash_key(key));
    if (e < 0)
        return;
    const std::int32_t h = find_holder(e, token);
    if (h < 0)
        return;
    unlink_job(h);
    holders()[h].req.job = job;
    if (job != 0)
        link_job(h);
}

// A WakeFn for replay: a standby has no waiters to wake.
static void wake_nobody(std::int32_t, void *) noexcept {}

// Install a replayed lease; see lock_table.hpp.
bool LockTable::replay_grant(const Key &key, const Request &req, std::int64_t token,
                             Timestamp acquired_at, Timestamp expires_at, Timestamp now) noexcept {
    const std::uint32_t hash = hash_key(key);
    std::int32_t e = find_entry(key, hash);
    if (e >= 0) {
        reap_entry(e, now);
    } else {
        e = insert_entry(key, hash);
        if (e < 0 && reap_all(now, wake_nobody, nullptr) > 0)
            e = insert_entry(key, hash);
        if (e < 0)
            return false;
    }
    Entry &en = entries()[e];
    if (en.nholders == 0 && en.nwaiters == 0) {
        en.semaphore = req.mode == Mode::semaphore;
        en.max_holders = req.max_holders;
    }
    Request r = req;
    r.scope = Scope::lease;
    r.pending = false;
    r.job = 0;
    r.slot = -1;  // no backend here holds it
    const std::int64_t before = last_token;
    std::int32_t h = grant(e, r, acquired_at);
    if (h < 0 && reap_all(now, wake_nobody, nullptr) > 0)
        h = grant(e, r, acquired_at);
    if (h < 0) {
        last_token = before;
        free_entry_if_unused(e);
        return false;
    }
    holders()[h].token = token;
    holders()[h].expires_at = expires_at;
    last_token = before > token ? before : token;
    return true;
}

// Apply a replayed renewal; see lock_table.hpp.
void LockTable::replay_renew(const Key &key, std::int64_t token, Timestamp renewed_at,
                             Timestamp expires_at) noexcept {
    const std::int32_t e = find_entry(key, hash_key(key));
    if (e < 0)
        return;
    for (std::int32_t h = entries()[e].holders; h >= 0; h = holders()[h].next)
        if (holders()[h].token == token) {
            holders()[h].renewed_at = renewed_at;
            holders()[h].expires_at = expires_at;
            return;
        }
}

// Release every holder of `key` regardless of token; returns the count.
std::int32_t LockTable::force_release(const Key &key, Timestamp now, WakeFn wake,
                                      void *ctx) noexcept {
    const std::int32_t e = find_entry(key, hash_key(key));
    if (e < 0)
        return 0;
    reap_entry(e, now);
    std::int32_t n = 0;
    while (entries()[e].holders >= 0) {
        unlink_holder(entries()[e].holders);
        n++;
    }
    stats_.released += static_cast<std::uint64_t>(n);
    grant_waiters(e, now, wake, ctx);
    free_entry_if_unused(e);
    return n;
}

// Release holders of backend `pid` in session and/or transaction scope.
std::int32_t LockTable::release_backend(std::int32_t pid, std::int32_t slot, bool session,
                                        bool transaction, bool commit, Timestamp now, WakeFn wake,
                                        void *ctx) noexcept {
    std::int32_t n = 0;
    if (slot < 0 || slot >= nwaiters_)
        return 0;
    // Whether h is still a holder of this slot's list.
    auto in_list = [&](std::int32_t h) {
        const Holder &ho = holders()[h];
        return ho.in_use && ho.slot_linked && ho.req.slot == slot;
    };
    std::int32_t next = -1;
    for (std::int32_t h = slot_heads()[slot]; h >= 0; h = next) {
        Holder &ho = holders()[h];
        next = ho.slot_next;
        if (ho.req.pid != pid)  // left by an earlier backend in this slot
            continue;
        if (transaction && ho.pending != Pending::none) {
            // A job lease this transaction took or finished.
            const bool keep =
                commit ? ho.pending == Pending::granted : ho.pending == Pending::finishing;
            if (keep) {
                if (ho.pending == Pending::finishing)
                    ho.expires_at = ho.saved_expiry;
                ho.pending = Pending::none;
                unlink_slot(h);
                continue;
            }
        } else if (!((session && ho.req.scope == Scope::session) ||
                     (transaction && ho.req.scope == Scope::transaction))) {
            continue;
        }
        const std::int32_t e = ho.entry;
        unlink_holder(h);
        n++;
        stats_.released++;
        grant_waiters(e, now, wake, ctx);
        free_entry_if_unused(e);
        // Granting on a full table reaps expired holders anywhere, perhaps
        // `next`: then start over from the head (the released are gone).
        if (next >= 0 && !in_list(next))
            next = slot_heads()[slot];
    }
    return n;
}

// Free expired holders of every entry but `skip` without granting (so it is
// safe inside grant_waiters); returns the count.
std::int32_t LockTable::reap_all_but(std::int32_t skip, Timestamp now) noexcept {
    std::int32_t n = 0;
    for (std::int32_t e = 0; e < nentries_; e++) {
        if (e == skip || e == pinned_entry_ || !entries()[e].in_use || entries()[e].nwaiters > 0)
            continue;
        n += reap_entry(e, now);
        free_entry_if_unused(e);
    }
    return n;
}

// Free every expired holder; returns the count.
std::int32_t LockTable::reap_all(Timestamp now, WakeFn wake, void *ctx, bool jobs_too) noexcept {
    std::int32_t n = 0;
    for (std::int32_t e = 0; e < nentries_; e++) {
        if (!entries()[e].in_use)
            continue;
        const std::int32_t k = reap_entry(e, now, jobs_too);
        if (k == 0)
            continue;
        n += k;
        grant_waiters(e, now, wake, ctx);
        free_entry_if_unused(e);
    }
    return n;
}

// Copy live holders of `dboid` into `out`; returns the count.
std::int32_t LockTable::snapshot_holders(std::uint32_t dboid, Timestamp now, HolderRow *out,
                                         std::int32_t max) const noexcept {
    std::int32_t n = 0;
    for (std::int32_t h = 0; h < capacity_ && n < max; h++) {
        const Holder &ho = holders()[h];
        if (!ho.in_use || !live(ho, now) || ho.req.dboid != dboid)
            continue;
        const Entry &en = entries()[ho.entry];
        out[n].holder = ho;
        std::memcpy(out[n].name, en.name, en.name_len);
        out[n].name[en.name_len] = '\0';
        n++;
    }
    return n;
}

// The jobs of the live job leases of `dboid` named `prefix`..., into `out`.
std::int32_t LockTable::job_leases(std::uint32_t dboid, const char *prefix, int len, Timestamp now,
                                   std::int64_t *out, std::int32_t max) const noexcept {
    std::int32_t n = 0;
    for (std::int32_t h = 0; h < capacity_ && n < max; h++) {
        const Holder &ho = holders()[h];
        if (!ho.in_use || ho.req.job == 0 || !live(ho, now) || ho.req.dboid != dboid)
            continue;
        const Entry &en = entries()[ho.entry];
        if (en.name_len >= len && std::memcmp(en.name, prefix, static_cast<std::size_t>(len)) == 0)
            out[n++] = ho.req.job;
    }
    return n;
}

// Copy queued waiters of `dboid` into `out`; returns the count.
std::int32_t LockTable::snapshot_waiters(std::uint32_t dboid, WaiterRow *out,
                                         std::int32_t max) const noexcept {
    std::int32_t n = 0;
    for (std::int32_t e = 0; e < nentries_; e++) {
        const Entry &en = entries()[e];
        if (!en.in_use || en.dboid != dboid)
            continue;
        std::int32_t pos = 1;
        for (std::int32_t w = en.queue_head; w >= 0 && n < max; w = waiters()[w].next) {
            out[n].waiter = waiters()[w];
            out[n].position = pos++;
            std::memcpy(out[n].name, en.name, en.name_len);
            out[n].name[en.name_len] = '\0';
            n++;
        }
    }
    return n;
}

}  // namespace lockext
