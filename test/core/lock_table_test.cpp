// Unit tests of the shared-memory lock table's algorithms (src/lock_table.cpp),
// which is plain C++ and so runs here without a server. These cover the
// corners a SQL test cannot reach on demand: a full table while waiters are
// asleep, and the order in which waiters are woken. Built with
// AddressSanitizer and UBSan by scripts/test.sh.
#define BOOST_TEST_MODULE lockext_lock_table
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "lockext/lock_table.hpp"

using namespace lockext;

namespace {

// A table in ordinary memory, and the waiters woken since the last check.
struct Table {
    std::vector<std::max_align_t> mem;
    LockTable *t;
    std::set<std::int32_t> woken;

    // A table of `capacity` holder slots and `nwaiters` waiter slots.
    Table(std::int32_t capacity, std::int32_t nwaiters)
        : mem(LockTable::bytes_needed(capacity, nwaiters) / sizeof(std::max_align_t) + 1),
          t(LockTable::create(mem.data(), capacity, nwaiters)) {}

    // The wake callback: remember who was signalled.
    static void wake(std::int32_t w, void *ctx) {
        static_cast<Table *>(ctx)->woken.insert(w);
    }

    // acquire() for backend `pid`; `waiter` is its waiter slot.
    Result acquire(const std::string &name, Mode mode, Scope scope, std::int64_t ttl, Timestamp now,
                   bool may_wait, std::int32_t waiter, std::int32_t pid) {
        Request r;
        std::memset(&r, 0, sizeof r);
        r.dboid = 1;
        r.pid = pid;
        r.slot = waiter;
        r.mode = mode;
        r.scope = scope;
        r.max_holders = 1;
        r.ttl_us = ttl;
        return t->acquire(key(name), r, now, may_wait, waiter, wake, this);
    }

    // poll() for waiter slot `w`.
    Result poll(std::int32_t w, Timestamp now, Timestamp deadline, Timestamp *wake_at) {
        return t->poll(w, now, deadline, wake_at, wake, this);
    }

    // release() as a superuser.
    bool release(const std::string &name, std::int64_t token, Timestamp now) {
        return t->release(key(name), token, now, 0, true, wake, this).outcome == Outcome::granted;
    }

    // The key of `name` in database 1 (the string must outlive the call).
    static Key key(const std::string &name) {
        return Key{1, name.data(), static_cast<int>(name.size())};
    }
};

}  // namespace

// A new name on a full table frees expired leases elsewhere; the waiters
// that frees must not free the new name's entry, which has no holders yet.
// (It did: the name was then granted twice, and a later free looped.)
BOOST_AUTO_TEST_CASE(a_full_table_never_frees_the_entry_being_granted) {
    Table tb(16, 8);
    const Timestamp t0 = 1000;
    // F: an exclusive lease that expires at t0 + 10, with two shared
    // waiters asleep behind it (they have not polled since).
    BOOST_REQUIRE(tb.acquire("F", Mode::exclusive, Scope::lease, 10, t0, false, 0, 100).outcome ==
                  Outcome::granted);
    // G: shared leases that expire too, with nobody waiting.
    for (int pid = 101; pid <= 103; pid++)
        BOOST_REQUIRE(tb.acquire("G", Mode::shared, Scope::lease, 10, t0, false, 1, pid).outcome ==
                      Outcome::granted);
    BOOST_REQUIRE(tb.acquire("F", Mode::shared, Scope::lease, 1000000, t0, true, 3, 104).outcome ==
                  Outcome::waiting);
    BOOST_REQUIRE(tb.acquire("F", Mode::shared, Scope::lease, 1000000, t0, true, 4, 105).outcome ==
                  Outcome::waiting);
    // Every other slot: a long lease.
    for (int i = 0; tb.t->slots_used() < tb.t->capacity(); i++)
        BOOST_REQUIRE(tb.acquire("L" + std::to_string(i), Mode::exclusive, Scope::lease, 1000000,
                                 t0, false, 5, 200 + i)
                          .outcome == Outcome::granted);

    const Timestamp t1 = t0 + 1000;  // F's and G's leases have run out
    const Result a = tb.acquire("N", Mode::exclusive, Scope::lease, 1000000, t1, false, 6, 300);
    BOOST_REQUIRE(a.outcome == Outcome::granted);
    const Result b = tb.acquire("N", Mode::exclusive, Scope::lease, 1000000, t1, false, 7, 301);
    BOOST_TEST((b.outcome == Outcome::busy), "a second exclusive holder of N was granted");
    BOOST_TEST(tb.release("N", a.token, t1), "N's holder could not release it");
    // Every slot is accounted for: once the waiters have taken their turn
    // and every name is freed, nothing is left allocated.
    Timestamp wake_at = 0;
    for (std::int32_t w : {3, 4})
        tb.poll(w, t1, kNever, &wake_at);
    tb.t->force_release(Table::key("F"), t1, Table::wake, &tb);
    for (int i = 0; i < 32; i++)
        tb.t->force_release(Table::key("L" + std::to_string(i)), t1, Table::wake, &tb);
    BOOST_TEST(tb.t->slots_used() == 0);
}

// When the head of a queue times out without anything being granted, the
// new head is woken: it may be sleeping on a wake-up time computed before a
// renewal shortened the lease (a renewal signals only the head of the moment).
BOOST_AUTO_TEST_CASE(the_new_head_is_woken_when_the_head_gives_up) {
    Table tb(16, 8);
    const Result h = tb.acquire("n", Mode::exclusive, Scope::session, -1, 1000, false, 1, 100);
    BOOST_REQUIRE(h.outcome == Outcome::granted);
    BOOST_REQUIRE(
        tb.acquire("n", Mode::exclusive, Scope::lease, 1000, 1000, true, 2, 102).outcome ==
        Outcome::waiting);
    BOOST_REQUIRE(
        tb.acquire("n", Mode::exclusive, Scope::lease, 1000, 1000, true, 3, 103).outcome ==
        Outcome::waiting);
    Timestamp w2 = 0, w3 = 0;
    tb.poll(2, 1000, 1150, &w2);
    tb.poll(3, 1000, kNever, &w3);
    BOOST_REQUIRE(w3 == kNever);  // the holder has no TTL: sleep until signalled
    // The holder now gets a TTL that ends at 1200.
    BOOST_REQUIRE(
        tb.t->renew(Table::key("n"), h.token, 100, kNever, 1100, kNever, 0, true, Table::wake, &tb)
            .outcome == Outcome::granted);
    tb.woken.clear();
    BOOST_REQUIRE(tb.poll(2, 1150, 1150, &w2).outcome == Outcome::timed_out);
    BOOST_TEST(tb.woken.count(3) == 1, "the waiter behind the one that gave up was not woken");
    // Woken, it sleeps only until the new expiry, and then gets the lock.
    BOOST_REQUIRE(tb.poll(3, 1150, kNever, &w3).outcome == Outcome::waiting);
    BOOST_TEST(w3 == 1200);
    BOOST_TEST((tb.poll(3, 1200, kNever, &w3).outcome == Outcome::granted));
}

// A waiter whose turn comes in its own last poll, when no slot is free,
// reports the full table (53400), not a timeout.
BOOST_AUTO_TEST_CASE(a_waiter_failed_in_its_last_poll_reports_the_full_table) {
    Table tb(4, 8);
    BOOST_REQUIRE(tb.acquire("F", Mode::exclusive, Scope::lease, 10, 1000, false, 0, 100).outcome ==
                  Outcome::granted);
    BOOST_REQUIRE(
        tb.acquire("F", Mode::shared, Scope::lease, 1000000, 1000, true, 1, 101).outcome ==
        Outcome::waiting);
    BOOST_REQUIRE(
        tb.acquire("F", Mode::shared, Scope::lease, 1000000, 1000, true, 2, 102).outcome ==
        Outcome::waiting);
    for (int i = 0; tb.t->slots_used() < tb.t->capacity(); i++)
        BOOST_REQUIRE(tb.acquire("L" + std::to_string(i), Mode::exclusive, Scope::lease, 1000000,
                                 1000, false, 5, 200 + i)
                          .outcome == Outcome::granted);
    // At 2000, F's lease is over: its one slot goes to the first shared
    // waiter, and none is left for the second, polling at its deadline.
    Timestamp wake_at = 0;
    const Result r = tb.poll(2, 2000, 2000, &wake_at);
    BOOST_TEST((r.outcome == Outcome::capacity_full));
    BOOST_TEST((tb.poll(1, 2000, kNever, &wake_at).outcome == Outcome::granted));
    BOOST_TEST(!tb.t->is_waiting(2));
}

// Renewing without a TTL keeps the granted one, but never beyond the
// current maximum (lockext.max_ttl may have been lowered since the grant).
BOOST_AUTO_TEST_CASE(a_renewal_keeping_its_ttl_respects_a_lowered_maximum) {
    Table tb(4, 4);
    const Result h = tb.acquire("m", Mode::exclusive, Scope::lease, 3600, 1000, false, 0, 100);
    BOOST_REQUIRE(h.outcome == Outcome::granted);
    Result r =
        tb.t->renew(Table::key("m"), h.token, -1, 7200, 2000, kNever, 0, true, Table::wake, &tb);
    BOOST_TEST(r.expires_at == 2000 + 3600);
    r = tb.t->renew(Table::key("m"), h.token, -1, 60, 3000, kNever, 0, true, Table::wake, &tb);
    BOOST_TEST(r.expires_at == 3000 + 60);
}

// A renewal whose new expiry is past the durable horizon changes nothing
// (the lease keeps its expiry and TTL, no waiter gets the lock) until it is
// asked again with a horizon that covers it.
BOOST_AUTO_TEST_CASE(a_renewal_past_the_durable_horizon_changes_nothing) {
    Table tb(4, 4);
    const Result h = tb.acquire("d", Mode::exclusive, Scope::lease, 100, 1000, false, 0, 100);
    BOOST_REQUIRE(h.outcome == Outcome::granted);
    BOOST_REQUIRE(tb.acquire("d", Mode::exclusive, Scope::lease, 100, 1000, true, 1, 101).outcome ==
                  Outcome::waiting);
    Result r =
        tb.t->renew(Table::key("d"), h.token, 5000, kNever, 1050, 2000, 0, true, Table::wake, &tb);
    BOOST_TEST((r.outcome == Outcome::not_durable));
    BOOST_TEST(r.token == h.token);
    BOOST_TEST(r.expires_at == 1050 + 5000);
    // Still held until 1100, its old expiry: the waiter gets it only then.
    Timestamp wake_at = 0;
    BOOST_TEST((tb.poll(1, 1099, kNever, &wake_at).outcome == Outcome::waiting));
    BOOST_TEST(wake_at == 1100);
    r = tb.t->renew(Table::key("d"), h.token, -1, kNever, 1060, 2000, 0, true, Table::wake, &tb);
    BOOST_TEST((r.outcome == Outcome::granted));
    BOOST_TEST(r.expires_at == 1060 + 100);  // the TTL was not changed by the refused call
    r = tb.t->renew(Table::key("d"), h.token, 5000, kNever, 1070, 7000, 0, true, Table::wake, &tb);
    BOOST_TEST((r.outcome == Outcome::granted));
    BOOST_TEST(r.expires_at == 1070 + 5000);
}

// A waiter slot left busy by a backend that died before cleaning up (its
// procno then reused): the new request clears it before it looks up the
// name. Cleared later, the stale wait, granted by the reap of an expired
// holder, was undone after the name's entry had been chosen, which freed
// that entry, and the new request was queued on the freed entry.
BOOST_AUTO_TEST_CASE(a_stale_waiter_slot_is_cleared_before_the_entry_is_used) {
    Table tb(4, 4);
    const Result h = tb.acquire("X", Mode::exclusive, Scope::lease, 100, 1000, false, 0, 100);
    BOOST_REQUIRE(h.outcome == Outcome::granted);
    BOOST_REQUIRE(tb.acquire("X", Mode::exclusive, Scope::lease, 100, 1000, true, 1, 101).outcome ==
                  Outcome::waiting);
    // Backend 101 is gone; backend 102 has its waiter slot. X's lease ran out at 1100.
    const Result r = tb.acquire("X", Mode::exclusive, Scope::lease, 100, 2000, true, 1, 102);
    BOOST_TEST((r.outcome == Outcome::granted));
    BOOST_TEST(!tb.t->is_waiting(1));
    BOOST_TEST(tb.t->slots_used() == 1);
    // The table is sound: another name gets a slot, and X is released.
    BOOST_TEST((tb.acquire("Y", Mode::exclusive, Scope::lease, 100, 2000, false, 2, 103).outcome ==
                Outcome::granted));
    BOOST_TEST(tb.release("X", r.token, 2001));
    BOOST_TEST(tb.t->slots_used() == 1);
}

// Session and transaction holders are listed per backend slot: a commit
// releases exactly that backend's transaction holders, its exit the
// session ones too, and the next waiter gets the lock; holders freed
// meanwhile by others (release by token, expiry) leave the lists intact.
BOOST_AUTO_TEST_CASE(a_backend_releases_only_its_own_scoped_holders) {
    Table tb(16, 4);
    auto take = [&](const std::string &name, Scope scope, std::int32_t slot, std::int32_t pid,
                    std::int64_t ttl = -1) {
        const Result r = tb.acquire(name, Mode::exclusive, scope, ttl, 1000, false, slot, pid);
        BOOST_REQUIRE(r.outcome == Outcome::granted);
        return r;
    };
    take("t1", Scope::transaction, 1, 101);
    take("t2", Scope::transaction, 1, 101);
    const Result s1 = take("s1", Scope::session, 1, 101);
    take("l1", Scope::lease, 1, 101, 1000000);
    take("t3", Scope::transaction, 2, 102);
    const Result s2 = take("s2", Scope::session, 2, 102, 50);  // expires at 1050
    take("t4", Scope::transaction, 1, 101);
    // Backend 102 waits for t1.
    BOOST_REQUIRE(
        tb.acquire("t1", Mode::exclusive, Scope::session, -1, 1000, true, 2, 102).outcome ==
        Outcome::waiting);
    BOOST_REQUIRE(tb.t->slots_used() == 7);
    // s1 goes by token, s2 by expiry (reaped by the next acquire of s2).
    BOOST_TEST(tb.release("s1", s1.token, 1001));
    BOOST_TEST((tb.acquire("s2", Mode::exclusive, Scope::lease, 100, 2000, false, 3, 103).outcome ==
                Outcome::granted));
    // Backend 101 commits: t1, t2 and t4 go, t1 to its waiter; l1 stays.
    tb.woken.clear();
    BOOST_TEST(tb.t->release_backend(101, 1, false, true, false, 2000, Table::wake, &tb) == 3);
    BOOST_TEST(tb.woken.count(2) == 1);
    Timestamp wake_at = 0;
    BOOST_TEST((tb.poll(2, 2000, kNever, &wake_at).outcome == Outcome::granted));
    // Backend 101 exits: nothing scoped is left (l1 is a lease).
    BOOST_TEST(tb.t->release_backend(101, 1, true, true, false, 2001, Table::wake, &tb) == 0);
    // Backend 102 exits: t3 and its session lock on t1.
    BOOST_TEST(tb.t->release_backend(102, 2, true, true, false, 2002, Table::wake, &tb) == 2);
    BOOST_TEST(tb.t->slots_used() == 2);  // l1 and s2 (a lease now, of backend 103)
    // A backend that later gets slot 1 does not release what 101 left.
    take("t5", Scope::transaction, 1, 104);
    BOOST_TEST(tb.t->release_backend(105, 1, true, true, false, 2003, Table::wake, &tb) == 0);
    BOOST_TEST(tb.t->release_backend(104, 1, false, true, false, 2003, Table::wake, &tb) == 1);
}

namespace {

// A job lease request of backend `pid` (waiter slot `slot`) for job `job`.
Request job_request(std::int64_t job, std::int32_t pid, std::int32_t slot, std::int64_t ttl,
                    bool pending) {
    Request r;
    std::memset(&r, 0, sizeof r);
    r.dboid = 1;
    r.pid = pid;
    r.slot = slot;
    r.mode = Mode::exclusive;
    r.scope = Scope::lease;
    r.max_holders = 1;
    r.ttl_us = ttl;
    r.job = job;
    r.pending = pending;
    return r;
}

const std::string kPrefix = "lockext.q/q/";

}  // namespace

// A job lease taken in a transaction is kept by its commit and released by
// its abort (a dequeue that rolls back gives its jobs back).
BOOST_AUTO_TEST_CASE(a_pending_job_lease_is_kept_at_commit_and_released_at_abort) {
    Table tb(16, 8);
    const std::string a = kPrefix + "k/a", b = kPrefix + "k/b";
    const Result ra = tb.t->acquire(Table::key(a), job_request(1, 100, 1, 1000, true), 10, false, 1,
                                    Table::wake, &tb);
    BOOST_REQUIRE(ra.outcome == Outcome::granted);
    tb.t->release_backend(100, 1, false, true, true, 20, Table::wake, &tb);  // commit
    BOOST_TEST(tb.t->job_of(Table::key(a), ra.token, 30) == 1);
    const Result rb = tb.t->acquire(Table::key(b), job_request(2, 100, 1, 1000, true), 40, false, 1,
                                    Table::wake, &tb);
    BOOST_REQUIRE(rb.outcome == Outcome::granted);
    tb.t->release_backend(100, 1, false, true, false, 50, Table::wake, &tb);  // abort
    BOOST_TEST(tb.t->job_of(Table::key(b), rb.token, 60) == 0);
    BOOST_TEST(tb.t->job_of(Table::key(a), ra.token, 60) == 1);  // the committed one stays
}

// A finishing lease cannot expire before its transaction ends; the commit
// releases it, the abort restores its expiry; only its own token and job
// and queue finish it.
BOOST_AUTO_TEST_CASE(a_finishing_job_lease_waits_for_its_transaction) {
    Table tb(16, 8);
    const std::string a = kPrefix + "k/a";
    const Result r = tb.t->acquire(Table::key(a), job_request(7, 100, 1, 100, false), 10, false, 1,
                                   Table::wake, &tb);
    BOOST_REQUIRE(r.outcome == Outcome::granted);
    bool keyed = false;
    const std::string other = "lockext.q/other/";
    BOOST_TEST((tb.t->finish_job(1, 7, r.token, other.data(), static_cast<int>(other.size()), 20,
                                 200, 2, &keyed)
                    .outcome == Outcome::not_held));
    BOOST_TEST((tb.t->finish_job(1, 7, r.token + 1, kPrefix.data(),
                                 static_cast<int>(kPrefix.size()), 20, 200, 2, &keyed)
                    .outcome == Outcome::not_held));
    BOOST_TEST((tb.t->finish_job(1, 8, r.token, kPrefix.data(), static_cast<int>(kPrefix.size()),
                                 20, 200, 2, &keyed)
                    .outcome == Outcome::not_held));
    BOOST_REQUIRE((tb.t->finish_job(1, 7, r.token, kPrefix.data(), static_cast<int>(kPrefix.size()),
                                    20, 200, 2, &keyed)
                       .outcome == Outcome::granted));
    BOOST_TEST(keyed);
    // Past its old expiry (110) it is still held: nobody else gets the key.
    BOOST_TEST((tb.t->acquire(Table::key(a), job_request(9, 300, 3, 100, false), 500, false, 3,
                              Table::wake, &tb)
                    .outcome == Outcome::busy));
    // Abort: the old expiry comes back, so the lease has lapsed by now.
    tb.t->release_backend(200, 2, false, true, false, 510, Table::wake, &tb);
    const Result again = tb.t->acquire(Table::key(a), job_request(7, 300, 3, 100, false), 520,
                                       false, 3, Table::wake, &tb);
    BOOST_TEST((again.outcome == Outcome::granted));
    BOOST_TEST(again.lapsed_job == 7);  // the lapsed delivery is reported
    // Finished and committed: released, and the next acquire reports no lapse.
    BOOST_REQUIRE((tb.t->finish_job(1, 7, again.token, kPrefix.data(),
                                    static_cast<int>(kPrefix.size()), 530, 200, 2, &keyed)
                       .outcome == Outcome::granted));
    tb.t->release_backend(200, 2, false, true, true, 540, Table::wake, &tb);
    const Result next = tb.t->acquire(Table::key(a), job_request(8, 300, 3, 100, false), 550, false,
                                      3, Table::wake, &tb);
    BOOST_TEST((next.outcome == Outcome::granted));
    BOOST_TEST(next.lapsed_job == 0);
}

// An expired job lease stays through the views' reap (so its lapse is
// still reported to the next acquire of its name), but a full table frees it.
BOOST_AUTO_TEST_CASE(an_expired_job_lease_is_reported_to_its_next_taker) {
    Table tb(4, 8);
    const std::string a = kPrefix + "j/1";
    BOOST_REQUIRE((tb.t->acquire(Table::key(a), job_request(1, 100, 1, 10, false), 10, false, 1,
                                 Table::wake, &tb)
                       .outcome == Outcome::granted));
    BOOST_TEST(tb.t->reap_all(100, Table::wake, &tb, false) == 0);
    BOOST_TEST(tb.t->slots_used() == 1);
    const Result r = tb.t->acquire(Table::key(a), job_request(1, 100, 1, 10, false), 110, false, 1,
                                   Table::wake, &tb);
    BOOST_TEST((r.outcome == Outcome::granted));
    BOOST_TEST(r.lapsed_job == 1);
    // set_job moves the lease to another job of the same name.
    tb.t->set_job(Table::key(a), r.token, 5);
    BOOST_TEST(tb.t->job_of(Table::key(a), r.token, 111) == 5);
    bool keyed = true;
    BOOST_TEST((tb.t->finish_job(1, 5, r.token, kPrefix.data(), static_cast<int>(kPrefix.size()),
                                 112, 100, 1, &keyed)
                    .outcome == Outcome::granted));
    BOOST_TEST(!keyed);
}

// finish_all (drop_queue) marks every live job lease of a queue and frees
// the expired ones; other queues' leases stay.
BOOST_AUTO_TEST_CASE(finish_all_ends_one_queues_job_leases) {
    Table tb(16, 8);
    const std::string a = kPrefix + "k/a", b = kPrefix + "k/b", c = "lockext.q/qq/k/a";
    BOOST_REQUIRE((tb.t->acquire(Table::key(a), job_request(1, 100, 1, 1000, false), 10, false, 1,
                                 Table::wake, &tb)
                       .outcome == Outcome::granted));
    BOOST_REQUIRE((tb.t->acquire(Table::key(b), job_request(2, 100, 1, 5, false), 10, false, 1,
                                 Table::wake, &tb)
                       .outcome == Outcome::granted));
    BOOST_REQUIRE((tb.t->acquire(Table::key(c), job_request(3, 100, 1, 1000, false), 10, false, 1,
                                 Table::wake, &tb)
                       .outcome == Outcome::granted));
    BOOST_TEST(tb.t->finish_all(1, kPrefix.data(), static_cast<int>(kPrefix.size()), 20, 200, 2) ==
               1);
    BOOST_TEST(tb.t->slots_used() == 2);  // b had expired: freed
    tb.t->release_backend(200, 2, false, true, true, 30, Table::wake, &tb);
    BOOST_TEST(tb.t->slots_used() == 1);  // only the other queue's lease
}

// A standby's copy of its primary's leases: a replayed grant holds the name
// with the primary's token and expiry (a newcomer is refused, later tokens
// are higher), a replayed renewal moves the expiry, and the holder's token
// releases it; a replayed grant on a full table reports it instead of
// overwriting another holder.
BOOST_AUTO_TEST_CASE(replayed_leases_hold_with_the_primarys_token_and_expiry) {
    Table tb(2, 4);
    const std::string a = "a", b = "b", c = "c";
    Request r;
    std::memset(&r, 0, sizeof r);
    r.dboid = 1;
    r.pid = 77;
    r.slot = 3;
    r.mode = Mode::exclusive;
    r.scope = Scope::lease;
    r.max_holders = 1;
    r.ttl_us = 10;
    BOOST_TEST(tb.t->replay_grant(Table::key(a), r, 5000, 100, 110, 101));
    Result busy = tb.acquire(a, Mode::exclusive, Scope::lease, 10, 105, false, 0, 1);
    BOOST_TEST(static_cast<int>(busy.outcome) == static_cast<int>(Outcome::busy));
    tb.t->replay_renew(Table::key(a), 5000, 106, 130);
    busy = tb.acquire(a, Mode::exclusive, Scope::lease, 10, 120, false, 0, 1);
    BOOST_TEST(static_cast<int>(busy.outcome) == static_cast<int>(Outcome::busy));
    const Result other = tb.acquire(b, Mode::exclusive, Scope::lease, 100, 120, false, 0, 1);
    BOOST_TEST(static_cast<int>(other.outcome) == static_cast<int>(Outcome::granted));
    BOOST_TEST(other.token > 5000);
    BOOST_TEST(!tb.t->replay_grant(Table::key(c), r, 6000, 121, 200, 121));
    BOOST_TEST(tb.release(a, 5000, 121));
    const Result again = tb.acquire(a, Mode::exclusive, Scope::lease, 10, 122, false, 0, 1);
    BOOST_TEST(static_cast<int>(again.outcome) == static_cast<int>(Outcome::granted));
    BOOST_TEST(again.token > other.token);
}
