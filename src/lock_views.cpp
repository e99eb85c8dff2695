// Set-returning functions behind lockext.holders, lockext.waiters and
// lockext.stats.
//
// Each copies what it needs under table_lock (shared for the snapshots,
// exclusive for stats, which first frees expired leases), releases the lock,
// and only then builds tuples, so no allocation or catalog access happens
// under the lock. Rows are limited to the current database, as names are.
// Privacy follows pg_stat_activity: the token (the capability to renew or
// release) and the client address of another role's lock are shown only to
// members of that role and of pg_read_all_stats.
extern "C" {
#include "postgres.h"

#include "catalog/pg_authid.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/inet.h"
#include "utils/timestamp.h"
}

#include "lockext/lock_shmem.hpp"
#include "lockext/pg_guard.hpp"

using lockext::HolderRow;
using lockext::LockTable;
using lockext::Scope;
using lockext::WaiterRow;

namespace {

// Name of a mode as SQL spells it.
const char *mode_name(lockext::Mode m) {
    switch (m) {
        case lockext::Mode::exclusive:
            return "exclusive";
        case lockext::Mode::shared:
            return "shared";
        case lockext::Mode::semaphore:
            return "semaphore";
    }
    return "?";
}

// Name of a scope as SQL spells it.
const char *scope_name(Scope s) {
    switch (s) {
        case Scope::lease:
            return "lease";
        case Scope::session:
            return "session";
        case Scope::transaction:
            return "transaction";
    }
    return "?";
}

// Whether the current user may see the details of a lock held by `role`.
bool may_see(Oid role) {
    return has_privs_of_role(GetUserId(), role) ||
           has_privs_of_role(GetUserId(), ROLE_PG_READ_ALL_STATS);
}

// lockext._holders(): one row per live holder in this database.
Datum holders_impl(FunctionCallInfo fcinfo) {
    lockext_require_loaded();
    InitMaterializedSRF(fcinfo, 0);
    ReturnSetInfo *rsinfo = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);
    LockTable *t = lockext_shared->table;

    // Size the copy first (palloc must not run under the lock); when more
    // slots are in use by the time of the copy and it filled up, it may have
    // cut off any holder, so copy again into a buffer of the new size.
    LWLockAcquire(lockext_shared->table_lock, LW_SHARED);
    std::int32_t room = Max(t->slots_used(), 1);
    LWLockRelease(lockext_shared->table_lock);
    HolderRow *rows = nullptr;
    std::int32_t n = 0;
    for (;;) {
        // Huge: a large lockext.max_locks can need more than 1 GB of rows.
        rows = static_cast<HolderRow *>(palloc_extended(sizeof(HolderRow) * room, MCXT_ALLOC_HUGE));
        LWLockAcquire(lockext_shared->table_lock, LW_SHARED);
        n = t->snapshot_holders(MyDatabaseId, GetCurrentTimestamp(), rows, room);
        const std::int32_t used = t->slots_used();
        LWLockRelease(lockext_shared->table_lock);
        if (n < room || used <= room)
            break;
        pfree(rows);
        room = used;
    }

    for (std::int32_t i = 0; i < n; i++) {
        const lockext::Holder &h = rows[i].holder;
        Datum values[11];
        bool nulls[11];
        memset(nulls, 0, sizeof(nulls));
        const bool visible = may_see(h.req.roleid);
        values[0] = CStringGetTextDatum(rows[i].name);
        values[1] = CStringGetTextDatum(mode_name(h.req.mode));
        values[2] = Int64GetDatum(h.token);
        nulls[2] = !visible;
        values[3] = h.req.has_owner ? CStringGetTextDatum(h.req.owner) : 0;
        nulls[3] = !h.req.has_owner;
        values[4] = CStringGetTextDatum(scope_name(h.req.scope));
        values[5] = Int32GetDatum(h.req.pid);
        values[6] = CStringGetTextDatum(h.req.app_name);
        nulls[7] = !visible || h.req.client_addr[0] == '\0';
        values[7] = nulls[7] ? 0 : DirectFunctionCall1(inet_in, CStringGetDatum(h.req.client_addr));
        values[8] = TimestampTzGetDatum(h.acquired_at);
        values[9] = TimestampTzGetDatum(h.renewed_at);
        nulls[9] = h.renewed_at == 0;
        values[10] = TimestampTzGetDatum(h.expires_at);
        nulls[10] = h.expires_at == lockext::kNever;
        tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
    }
    pfree(rows);
    return static_cast<Datum>(0);
}

// lockext._waiters(): one row per queued request in this database.
Datum waiters_impl(FunctionCallInfo fcinfo) {
    lockext_require_loaded();
    InitMaterializedSRF(fcinfo, 0);
    ReturnSetInfo *rsinfo = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);
    LockTable *t = lockext_shared->table;
    // At most one queued request per backend, so max_waiters bounds the copy.
    const std::int32_t max = t->max_waiters();
    WaiterRow *rows = static_cast<WaiterRow *>(palloc(sizeof(WaiterRow) * max));
    LWLockAcquire(lockext_shared->table_lock, LW_SHARED);
    const std::int32_t n = t->snapshot_waiters(MyDatabaseId, rows, max);
    LWLockRelease(lockext_shared->table_lock);

    for (std::int32_t i = 0; i < n; i++) {
        const lockext::Waiter &w = rows[i].waiter;
        Datum values[6];
        bool nulls[6];
        memset(nulls, 0, sizeof(nulls));
        values[0] = CStringGetTextDatum(rows[i].name);
        values[1] = CStringGetTextDatum(mode_name(w.req.mode));
        values[2] = Int32GetDatum(w.req.pid);
        values[3] = w.req.has_owner ? CStringGetTextDatum(w.req.owner) : 0;
        nulls[3] = !w.req.has_owner;
        values[4] = TimestampTzGetDatum(w.since);
        values[5] = Int32GetDatum(rows[i].position);
        tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
    }
    pfree(rows);
    return static_cast<Datum>(0);
}

// lockext._stats(): the counters since server start, and slot usage.
Datum stats_impl(FunctionCallInfo fcinfo) {
    lockext_require_loaded();
    TupleDesc desc;
    if (get_call_result_type(fcinfo, nullptr, &desc) != TYPEFUNC_COMPOSITE)
        elog(ERROR, "lockext: stats must return a composite type");
    LockTable *t = lockext_shared->table;
    LWLockAcquire(lockext_shared->table_lock, LW_EXCLUSIVE);
    t->reap_all(GetCurrentTimestamp(), lockext_wake_waiter, nullptr, false);
    const lockext::Stats s = t->stats();
    const std::int32_t used = t->slots_used();
    LWLockRelease(lockext_shared->table_lock);

    Datum values[9];
    bool nulls[9];
    memset(nulls, 0, sizeof(nulls));
    values[0] = Int64GetDatum(static_cast<int64>(s.acquired));
    values[1] = Int64GetDatum(static_cast<int64>(s.released));
    values[2] = Int64GetDatum(static_cast<int64>(s.expired));
    values[3] = Int64GetDatum(static_cast<int64>(s.renewed));
    values[4] = Int64GetDatum(static_cast<int64>(s.timed_out));
    values[5] = Int64GetDatum(static_cast<int64>(s.cancelled));
    values[6] = Int64GetDatum(static_cast<int64>(s.contended));
    values[7] = Int32GetDatum(used);
    values[8] = Int32GetDatum(t->capacity());
    PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

}  // namespace

LOCKEXT_SQL_FUNCTION(holders)
LOCKEXT_SQL_FUNCTION(waiters)
LOCKEXT_SQL_FUNCTION(stats)
