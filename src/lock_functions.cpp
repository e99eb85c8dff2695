// SQL functions that take, renew and release locks.
//
// Each body parses and checks its arguments (bad input raises an ERROR with
// a SQLSTATE before any shared state is touched), calls the lock table under
// table_lock (protocol in src/lock_shmem.cpp), then reports the outcome.
// Bodies keep only plain data on the stack: see include/lockext/pg_guard.hpp.
#include <sys/socket.h>

extern "C" {
#include "postgres.h"

#include "common/int.h"
#include "common/ip.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/acl.h"
#include "utils/backend_status.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

// From libpq/libpq.h (PostgreSQL 14 and later), declared here because that
// header includes libpq-be.h, which needs the GSSAPI headers the server was
// built with: a build dependency for one prototype.
extern bool pq_check_connection(void);
}

#include "lockext/lock_shmem.hpp"
#include "lockext/pg_guard.hpp"

using lockext::Key;
using lockext::LockTable;
using lockext::Outcome;
using lockext::Request;
using lockext::Result;
using lockext::Scope;
using lockext::Timestamp;

namespace {

// Argument `n` as a lock key in the current database; NULL and size checked.
Key key_arg(FunctionCallInfo fcinfo, int n) {
    if (PG_ARGISNULL(n))
        ereport(ERROR,
                (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("lock name must not be NULL")));
    text *t = PG_GETARG_TEXT_PP(n);
    Key key;
    key.dboid = MyDatabaseId;
    key.name = VARDATA_ANY(t);
    key.len = static_cast<int>(VARSIZE_ANY_EXHDR(t));
    if (key.len == 0)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("lock name must not be empty")));
    if (key.len > lockext::kMaxNameLen)
        ereport(ERROR, (errcode(ERRCODE_NAME_TOO_LONG),
                        errmsg("lock name is %d bytes long, over the limit of %d", key.len,
                               lockext::kMaxNameLen)));
    return key;
}

// Microseconds in an interval; months count as 30 days, as in SQL's
// interval comparison.
// Saturates at the int64 range, keeping the sign: a huge negative interval
// must still read as negative.
std::int64_t interval_us(const Interval *iv) {
    // Exact in 128 bits: |month| * 30 days of µs is below 2^73.
    const __int128 sum = static_cast<__int128>(iv->time) +
                         static_cast<__int128>(iv->day) * USECS_PER_DAY +
                         static_cast<__int128>(iv->month) * DAYS_PER_MONTH * USECS_PER_DAY;
    if (sum > INT64_MAX)
        return INT64_MAX;
    if (sum < INT64_MIN)
        return INT64_MIN;
    return static_cast<std::int64_t>(sum);
}

// lockext.max_ttl in microseconds.
std::int64_t max_ttl_us() {
    return static_cast<std::int64_t>(lockext_max_ttl_s) * USECS_PER_SEC;
}

// A TTL argument in microseconds: > 0 and <= lockext.max_ttl; -1 when NULL.
std::int64_t ttl_arg(FunctionCallInfo fcinfo, int n) {
    if (PG_ARGISNULL(n))
        return -1;
    const std::int64_t us = interval_us(PG_GETARG_INTERVAL_P(n));
    if (us <= 0)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("ttl must be positive")));
    if (us > max_ttl_us())
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("ttl must not exceed lockext.max_ttl (%d s)", lockext_max_ttl_s)));
    return us;
}

// A wait argument in microseconds: >= 0; -1 (forever) when NULL.
std::int64_t wait_arg(FunctionCallInfo fcinfo, int n) {
    if (PG_ARGISNULL(n))
        return -1;
    const std::int64_t us = interval_us(PG_GETARG_INTERVAL_P(n));  // INT64_MAX: beyond any deadline
    if (us < 0)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("wait must not be negative")));
    return us;
}

// Whether text `t` equals the C string `s`, without copying it (hot path).
bool text_is(const text *t, const char *s) {
    const std::size_t len = VARSIZE_ANY_EXHDR(t);
    return len == strlen(s) && memcmp(VARDATA_ANY(t), s, len) == 0;
}

// The `mode` argument.
lockext::Mode mode_arg(FunctionCallInfo fcinfo, int n) {
    if (PG_ARGISNULL(n))
        ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("mode must not be NULL")));
    text *t = PG_GETARG_TEXT_PP(n);
    if (text_is(t, "exclusive"))
        return lockext::Mode::exclusive;
    if (text_is(t, "shared"))
        return lockext::Mode::shared;
    if (text_is(t, "semaphore"))
        return lockext::Mode::semaphore;
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("unknown mode \"%s\"", text_to_cstring(t)),
                    errhint("Use exclusive, shared or semaphore.")));
    pg_unreachable();
}

// The `scope` argument.
Scope scope_arg(FunctionCallInfo fcinfo, int n) {
    if (PG_ARGISNULL(n))
        ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("scope must not be NULL")));
    text *t = PG_GETARG_TEXT_PP(n);
    if (text_is(t, "lease"))
        return Scope::lease;
    if (text_is(t, "session"))
        return Scope::session;
    if (text_is(t, "transaction"))
        return Scope::transaction;
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("unknown scope \"%s\"", text_to_cstring(t)),
                    errhint("Use lease, session or transaction.")));
    pg_unreachable();
}

// Copy at most `size - 1` bytes of `src` into `dst`, NUL-terminated.
void copy_str(char *dst, const char *src, std::size_t size) {
    if (src == nullptr) {
        dst[0] = '\0';
        return;
    }
    strlcpy(dst, src, size);
    // Never leave a truncated multibyte character behind.
    dst[pg_mbcliplen(dst, static_cast<int>(strlen(dst)), static_cast<int>(size) - 1)] = '\0';
}

// The client's address as pg_stat_activity shows it; empty for unix sockets.
void client_addr(char *out, std::size_t size) {
    // A backend's peer never changes, so format it once, not per acquire.
    static bool cached = false;
    static char addr_text[lockext::kAddrLen];
    if (!cached) {
        addr_text[0] = '\0';
        if (MyBEEntry != nullptr) {
            const SockAddr *addr = &MyBEEntry->st_clientaddr;
            const int family = addr->addr.ss_family;
            if ((family == AF_INET || family == AF_INET6) &&
                pg_getnameinfo_all(&addr->addr, addr->salen, addr_text, sizeof(addr_text), nullptr,
                                   0, NI_NUMERICHOST | NI_NUMERICSERV) != 0)
                addr_text[0] = '\0';
            // As pg_stat_activity does: drop an IPv6 zone ("%eth0"), which inet rejects.
            clean_ipv6_addr(family, addr_text);
        }
        cached = true;
    }
    strlcpy(out, addr_text, size);
}

// Ask `who` is (role) to be at least the holder's role; raise otherwise.
void check_holder_role(const char *verb, std::uint32_t holder_role) {
    if (!has_privs_of_role(GetUserId(), holder_role))
        ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
                        errmsg("permission denied to %s a lock held by role \"%s\"", verb,
                               GetUserNameFromId(holder_role, true)),
                        errdetail("Only roles with the privileges of the holder's role may %s it.",
                                  verb)));
}

// Leave the wait queue after an error or cancel, then let the error go on.
void abandon_wait(int waiter) {
    LWLockAcquire(lockext_shared->table_lock, LW_EXCLUSIVE);
    LockTable *t = lockext_shared->table;
    if (t->is_waiting(waiter)) {
        t->abandon(waiter, GetCurrentTimestamp(), lockext_wake_waiter, nullptr);
        t->stats().cancelled++;
    }
    LWLockRelease(lockext_shared->table_lock);
}

// How often a waiting backend looks whether its client is still there.
constexpr long kClientCheckMs = 1000;

// End the backend (FATAL, as client_connection_check_interval does) when its
// client has closed the connection: a waiter nobody will hear from must
// leave the queue now, not be granted a lease that then lasts its TTL.
void exit_if_client_gone() {
    if (MyProcPort == nullptr)
        return;  // a background worker: no client to lose
    if (!pq_check_connection()) {
        ClientConnectionLost = true;
        InterruptPending = true;
    }
    // Also for a cancel or timeout that arrived meanwhile: the check resets
    // the latch that would have ended the next sleep at once.
    CHECK_FOR_INTERRUPTS();
}

// Sleep until waiter `waiter` is granted or `deadline` passes; no polling
// of the table: the sleep ends at a grant signal, the next expiry among the
// holders, or the deadline, whichever comes first, and at least once a
// second to see whether the client is still connected.
void wait_for_grant(int waiter, Timestamp deadline, Result *out) {
    ConditionVariable *cv = &lockext_shared->cvs[waiter];
    ConditionVariablePrepareToSleep(cv);
    PG_TRY();
    {
        for (;;) {
            Timestamp wake_at = lockext::kNever;
            LWLockAcquire(lockext_shared->table_lock, LW_EXCLUSIVE);
            const Timestamp now = GetCurrentTimestamp();
            *out = lockext_shared->table->poll(waiter, now, deadline, &wake_at, lockext_wake_waiter,
                                               nullptr);
            LWLockRelease(lockext_shared->table_lock);
            if (out->outcome != Outcome::waiting)
                break;
            // Sleep until signalled or wake_at; the table is looked at again
            // only then, the client once a second meanwhile.
            for (;;) {
                long ms = kClientCheckMs;
                bool capped = true;
                if (wake_at != lockext::kNever) {
                    const std::int64_t us = wake_at - GetCurrentTimestamp();
                    if (us <= kClientCheckMs * 1000) {
                        ms = us <= 0 ? 1 : static_cast<long>((us + 999) / 1000);
                        capped = false;
                    }
                }
                const bool timed_out = ConditionVariableTimedSleep(cv, ms, PG_WAIT_EXTENSION);
                exit_if_client_gone();
                if (!timed_out || !capped)
                    break;
            }
        }
    }
    PG_CATCH();
    {
        ConditionVariableCancelSleep();
        abandon_wait(waiter);
        PG_RE_THROW();
    }
    PG_END_TRY();
    ConditionVariableCancelSleep();
}

// After a grant: make it crash-safe, or release it and let the error go on
// (the caller never sees the token, so nobody relies on the lease).
void make_durable_or_release(const Key *key, const Result *r) {
    PG_TRY();
    { lockext_durable_ensure(r->token, r->expires_at); }
    PG_CATCH();
    {
        LWLockAcquire(lockext_shared->table_lock, LW_EXCLUSIVE);
        lockext_shared->table->release(*key, r->token, GetCurrentTimestamp(), 0, true,
                                       lockext_wake_waiter, nullptr);
        LWLockRelease(lockext_shared->table_lock);
        PG_RE_THROW();
    }
    PG_END_TRY();
}

// lockext.acquire(name, ttl, wait, mode, scope, max_holders, owner) -> token
Datum acquire_impl(FunctionCallInfo fcinfo) {
    lockext_require_loaded();
    const Key key = key_arg(fcinfo, 0);
    // Job leases of the queues (src/queue_ops.cpp) live under this prefix.
    if (key.len >= 10 && memcmp(key.name, "lockext.q/", 10) == 0)
        ereport(ERROR, (errcode(ERRCODE_RESERVED_NAME),
                        errmsg("lock names starting with \"lockext.q/\" are reserved for queue "
                               "jobs")));
    const lockext::Mode mode = mode_arg(fcinfo, 3);
    const Scope scope = scope_arg(fcinfo, 4);
    const std::int64_t ttl_us = ttl_arg(fcinfo, 1);
    const std::int64_t wait_us = wait_arg(fcinfo, 2);
    if (ttl_us < 0 && scope == Scope::lease)
        ereport(ERROR,
                (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("a lease-scope lock needs a ttl"),
                 errhint("Only session and transaction scope locks may have a NULL ttl.")));
    std::int32_t max_holders = PG_ARGISNULL(5) ? 1 : PG_GETARG_INT32(5);
    if (max_holders < 1)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("max_holders must be at least 1")));
    if (mode != lockext::Mode::semaphore && max_holders != 1)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("max_holders applies only to semaphore mode")));

    Request req;
    lockext_init_request(&req, mode, scope, max_holders, ttl_us);
    if (!PG_ARGISNULL(6)) {
        text *owner = PG_GETARG_TEXT_PP(6);
        if (VARSIZE_ANY_EXHDR(owner) > lockext::kMaxOwnerLen)
            ereport(ERROR, (errcode(ERRCODE_NAME_TOO_LONG),
                            errmsg("owner is over the limit of %d bytes", lockext::kMaxOwnerLen)));
        req.has_owner = true;
        memcpy(req.owner, VARDATA_ANY(owner), VARSIZE_ANY_EXHDR(owner));
    }

    // Before queueing: a FATAL while queued must find its cleanup registered.
    if (scope != Scope::lease || wait_us != 0)
        lockext_register_backend_cleanup();
    const int waiter = MyProc->pgprocno;

    // The clock is read under the lock, so a lease never starts before the
    // moment it is granted (a grant made later by another backend included).
    LWLockAcquire(lockext_shared->table_lock, LW_EXCLUSIVE);
    const Timestamp now = GetCurrentTimestamp();
    Timestamp deadline = lockext::kNever;
    if (wait_us >= 0 && wait_us < lockext::kNever - now)
        deadline = now + wait_us;
    Result r = lockext_shared->table->acquire(key, req, now, wait_us != 0, waiter,
                                              lockext_wake_waiter, nullptr);
    LWLockRelease(lockext_shared->table_lock);

    if (r.outcome == Outcome::waiting)
        wait_for_grant(waiter, deadline, &r);
    switch (r.outcome) {
        case Outcome::granted:
            break;
        case Outcome::busy:
        case Outcome::timed_out:
            PG_RETURN_NULL();
        case Outcome::kind_conflict:
            if (r.entry_semaphore)
                ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                                errmsg("lock \"%.*s\" is in use as a semaphore with max_holders %d",
                                       key.len, key.name, r.entry_max_holders),
                                errhint("Every holder of a name must use the same mode family "
                                        "and max_holders.")));
            ereport(
                ERROR,
                (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                 errmsg("lock \"%.*s\" is in use in exclusive/shared mode", key.len, key.name),
                 errhint("A name cannot be a semaphore and an exclusive/shared lock at once.")));
            break;
        case Outcome::capacity_full:
            ereport(ERROR, (errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
                            errmsg("lockext lock table is full (%d slots)", lockext_max_locks),
                            errhint("Release locks, or raise lockext.max_locks and restart.")));
            break;
        case Outcome::self_deadlock:
            ereport(ERROR,
                    (errcode(ERRCODE_LOCK_NOT_AVAILABLE),
                     errmsg("lock \"%.*s\" is already held by this session", key.len, key.name),
                     errdetail("Waiting for it would wait forever: lockext locks are not "
                               "re-entrant.")));
            break;
        default:
            elog(ERROR, "lockext: unexpected acquire outcome %d", static_cast<int>(r.outcome));
    }
    make_durable_or_release(&key, &r);
    if (scope != Scope::lease)
        lockext_note_scoped_grant(scope);
    else
        lockext_wal_log_grant(key, req, r.token, r.expires_at);
    PG_RETURN_INT64(r.token);
}

// A held token argument; NULL is an error, not "not held".
std::int64_t token_arg(FunctionCallInfo fcinfo, int n) {
    if (PG_ARGISNULL(n))
        ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("token must not be NULL")));
    return PG_GETARG_INT64(n);
}

// lockext.renew(name, token, ttl) -> new expiry, or NULL when not held
Datum renew_impl(FunctionCallInfo fcinfo) {
    lockext_require_loaded();
    lockext_refuse_in_recovery("renew a lock");
    const Key key = key_arg(fcinfo, 0);
    const std::int64_t token = token_arg(fcinfo, 1);
    const std::int64_t ttl_us = ttl_arg(fcinfo, 2);
    bool privileged = false;
    Result r;
    for (;;) {
        LWLockAcquire(lockext_shared->table_lock, LW_EXCLUSIVE);
        const auto horizon =
            static_cast<lockext::Timestamp>(pg_atomic_read_u64(&lockext_shared->durable_horizon));
        r = lockext_shared->table->renew(key, token, ttl_us, max_ttl_us(), GetCurrentTimestamp(),
                                         horizon, GetUserId(), privileged, lockext_wake_waiter,
                                         nullptr);
        LWLockRelease(lockext_shared->table_lock);
        if (r.outcome == Outcome::not_durable) {
            // Write the longer horizon, then renew again. If the write
            // fails, the error leaves the lease at the expiry it had: its
            // holder was promised that one, so it must not end early. (A
            // write slower than the horizon's slack makes another round;
            // a cancel ends the loop.)
            lockext_durable_ensure(r.token, r.expires_at);
            CHECK_FOR_INTERRUPTS();
            continue;
        }
        if (r.outcome != Outcome::not_permitted)
            break;
        check_holder_role("renew", r.holder_role);
        privileged = true;
    }
    if (r.outcome != Outcome::granted)
        PG_RETURN_NULL();
    // Logged whatever the scope: a standby has only lease-scope copies, and
    // replay of a renewal or release it has no copy of does nothing.
    lockext_wal_log_renew(key, token, GetCurrentTimestamp(), r.expires_at);
    if (r.expires_at == lockext::kNever)
        PG_RETURN_TIMESTAMPTZ(DT_NOEND);
    PG_RETURN_TIMESTAMPTZ(r.expires_at);
}

// lockext.release(name, token) -> whether that token still held the lock
Datum release_impl(FunctionCallInfo fcinfo) {
    lockext_require_loaded();
    lockext_refuse_in_recovery("release a lock");
    const Key key = key_arg(fcinfo, 0);
    const std::int64_t token = token_arg(fcinfo, 1);
    bool privileged = false;
    Result r;
    for (;;) {
        LWLockAcquire(lockext_shared->table_lock, LW_EXCLUSIVE);
        r = lockext_shared->table->release(key, token, GetCurrentTimestamp(), GetUserId(),
                                           privileged, lockext_wake_waiter, nullptr);
        LWLockRelease(lockext_shared->table_lock);
        if (r.outcome != Outcome::not_permitted)
            break;
        check_holder_role("release", r.holder_role);
        privileged = true;
    }
    if (r.outcome == Outcome::granted)
        lockext_wal_log_release(key, token);
    PG_RETURN_BOOL(r.outcome == Outcome::granted);
}

// lockext.force_release(name) -> number of holders released
Datum force_release_impl(FunctionCallInfo fcinfo) {
    lockext_require_loaded();
    lockext_refuse_in_recovery("release a lock");
    const Key key = key_arg(fcinfo, 0);
    LWLockAcquire(lockext_shared->table_lock, LW_EXCLUSIVE);
    const std::int32_t n = lockext_shared->table->force_release(key, GetCurrentTimestamp(),
                                                                lockext_wake_waiter, nullptr);
    LWLockRelease(lockext_shared->table_lock);
    if (n > 0)
        lockext_wal_log_release(key, 0);
    PG_RETURN_INT32(n);
}

}  // namespace

// A request of this backend, as its current role, with its application
// name and client address (no owner).
void lockext_init_request(Request *req, lockext::Mode mode, Scope scope, std::int32_t max_holders,
                          std::int64_t ttl_us) {
    lockext_refuse_in_recovery("grant a lock");
    memset(req, 0, sizeof(*req));
    req->dboid = MyDatabaseId;
    req->roleid = GetUserId();
    req->pid = MyProcPid;
    req->slot = MyProc->pgprocno;
    req->mode = mode;
    req->scope = scope;
    req->max_holders = max_holders;
    req->ttl_us = ttl_us;
    copy_str(req->app_name, application_name, sizeof(req->app_name));
    client_addr(req->client_addr, sizeof(req->client_addr));
}

LOCKEXT_SQL_FUNCTION(acquire)
LOCKEXT_SQL_FUNCTION(renew)
LOCKEXT_SQL_FUNCTION(release)
LOCKEXT_SQL_FUNCTION(force_release)
