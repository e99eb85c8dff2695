// The durable state over WAL: lockext's custom resource manager.
//
// Every rewrite of $PGDATA/lockext.state (src/durable_state.cpp) is also a
// WAL record carrying the new token mark and expiry horizon. A streaming
// standby replays it into its own lockext.state and shared memory, so a
// promoted standby starts where its primary's durable state was, not from
// the clock:
//  - tokens resume above the highest mark it received, so above every
//    token the old primary handed out under that mark;
//  - no lock is granted before the horizon it received has passed, so no
//    lease the old primary granted under that horizon is overlapped.
//
// What depends on what. A grant never waits for WAL: tokens and expiries
// are handed out only under marks that are already durable, and a mark is
// moved (a record written, flushed and, with synchronous replication,
// confirmed by the synchronous standbys, as a commit is) once per
// kTokenBlock tokens or kHorizonSlack of time. So
//  - with synchronous replication, every token and expiry a client was
//    given is covered on the synchronous standby: a failover to it keeps
//    both promises (as for a commit, a cancel of the wait for the standby
//    ends it with a WARNING and the grant goes ahead);
//  - with asynchronous replication, a standby that lags may miss the last
//    record: tokens then rise only by the clock term (as before), and a
//    lease granted under a horizon the standby never received may be
//    overlapped after the horizon it did receive. The README says so.
// Records are replayed by crash recovery too; replay only ever raises the
// marks, so an old record never lowers the state file.
//
// LEASES. With lockext.replicate_leases on, grants, renewals and releases
// of lease-scope locks are logged too (not flushed: the horizon above is what keeps a failover
// safe; these records make the leases usable there). A standby's replay keeps a copy of them in its
// own lock table, which lockext.holders shows; after promotion their holders renew and release them
// with their old tokens, and nobody else can take their names before they expire. Expiry needs no
// record: the copy expires by the clock as the original does. Session and transaction locks die
// with their backend and are not logged; neither are the queues' job leases (a failover redelivers
// their jobs once the horizon has passed, as a crash does). Off by default: two records per acquire
// + release cost 5-15% of the lock benchmark's throughput here (A/B in the README); logging only
// leases that outlive a short delay, from a background scan, is the design that would make it cheap
// enough to be on by default.
extern "C" {
#include "postgres.h"

#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "access/xloginsert.h"
#include "access/xlogreader.h"
#include "lib/stringinfo.h"
#include "replication/syncrep.h"
#include "utils/timestamp.h"
}

#include "lockext/lock_shmem.hpp"

namespace {

// Record types.
constexpr uint8 kXlogDurable = 0x10;  // the durable marks moved
constexpr uint8 kXlogGrant = 0x20;    // a lease was granted
constexpr uint8 kXlogRenew = 0x30;    // a lease was renewed
constexpr uint8 kXlogRelease = 0x40;  // a lease was released (token 0: all of the name)

// What a kXlogDurable record carries.
struct DurableRecord {
    int64 token_mark;
    int64 horizon;
};

// What the lease records carry, followed by the name (and, for a grant,
// the owner) bytes.
struct LeaseRecord {
    Oid dboid;
    Oid roleid;
    int64 token;
    TimestampTz at;       // grant: acquired_at; renew: renewed_at
    TimestampTz expires;  // grant, renew
    int32 mode;
    int32 max_holders;
    int16 name_len;
    int16 owner_len;  // -1: no owner
};

// Log one lease record of type `info`, and leave it to the WAL writer.
// XactLastRecEnd is put back: otherwise the commit of a transaction that
// wrote nothing else would wake the WAL writer to flush it at once, which
// cost a quarter of the lock benchmark's throughput. (A commit record, if
// the transaction has one, still flushes everything before it.)
void log_lease(uint8 info, const LeaseRecord &rec, const char *name, const char *owner) {
    const XLogRecPtr last = XactLastRecEnd;
    XLogBeginInsert();
    XLogRegisterData(const_cast<char *>(reinterpret_cast<const char *>(&rec)), sizeof(rec));
    XLogRegisterData(const_cast<char *>(name), rec.name_len);
    if (rec.owner_len > 0)
        XLogRegisterData(const_cast<char *>(owner), rec.owner_len);
    (void)XLogInsert(kLockextRmgrId, info);
    XactLastRecEnd = last;
}

// Apply a replayed lease record to this server's lock table.
void redo_lease(uint8 info, XLogReaderState *record) {
    if (lockext_shared == nullptr)
        return;
    LeaseRecord rec;
    const char *data = XLogRecGetData(record);
    memcpy(&rec, data, sizeof(rec));
    const char *name = data + sizeof(rec);
    lockext::Key key;
    key.dboid = rec.dboid;
    key.name = name;
    key.len = rec.name_len;
    const TimestampTz now = GetCurrentTimestamp();
    LWLockAcquire(lockext_shared->table_lock, LW_EXCLUSIVE);
    lockext::LockTable *t = lockext_shared->table;
    bool full = false;
    if (info == kXlogGrant) {
        lockext::Request req;
        memset(&req, 0, sizeof(req));
        req.dboid = rec.dboid;
        req.roleid = rec.roleid;
        req.mode = static_cast<lockext::Mode>(rec.mode);
        req.scope = lockext::Scope::lease;
        req.max_holders = rec.max_holders;
        req.ttl_us = rec.expires - rec.at;
        req.slot = -1;
        if (rec.owner_len > 0) {
            req.has_owner = true;
            memcpy(req.owner, name + rec.name_len, Min(rec.owner_len, lockext::kMaxOwnerLen));
        }
        full = !t->replay_grant(key, req, rec.token, rec.at, rec.expires, now);
    } else if (info == kXlogRenew) {
        t->replay_renew(key, rec.token, rec.at, rec.expires);
    } else if (rec.token == 0) {
        (void)t->force_release(
            key, now, [](std::int32_t, void *) {}, nullptr);
    } else {
        (void)t->release(
            key, rec.token, now, 0, true, [](std::int32_t, void *) {}, nullptr);
    }
    LWLockRelease(lockext_shared->table_lock);
    // The horizon still protects the lease; only its copy is missing.
    if (full)
        ereport(WARNING, (errmsg("lockext: lock table full, replayed lease \"%.*s\" not kept",
                                 rec.name_len, name),
                          errhint("Give the standby at least the primary's lockext.max_locks.")));
}

// Replay a record (startup process: crash recovery or a standby).
void redo(XLogReaderState *record) {
    const uint8 info = XLogRecGetInfo(record) & ~XLR_INFO_MASK;
    if (info == kXlogGrant || info == kXlogRenew || info == kXlogRelease) {
        redo_lease(info, record);
        return;
    }
    if (info != kXlogDurable)
        elog(PANIC, "lockext: unknown WAL record type %u", info);
    DurableRecord rec;
    memcpy(&rec, XLogRecGetData(record), sizeof(rec));
    lockext_durable_redo(rec.token_mark, rec.horizon);
}

// Describe a record for pg_waldump and pg_walinspect.
void desc(StringInfo buf, XLogReaderState *record) {
    const uint8 info = XLogRecGetInfo(record) & ~XLR_INFO_MASK;
    if (info == kXlogGrant || info == kXlogRenew || info == kXlogRelease) {
        LeaseRecord rec;
        memcpy(&rec, XLogRecGetData(record), sizeof(rec));
        appendStringInfo(buf, "db %u; name \"%.*s\"; token " INT64_FORMAT, rec.dboid, rec.name_len,
                         XLogRecGetData(record) + sizeof(rec), rec.token);
        if (info != kXlogRelease)
            appendStringInfo(buf, "; expires %s", timestamptz_to_str(rec.expires));
        return;
    }
    if (info != kXlogDurable)
        return;
    DurableRecord rec;
    memcpy(&rec, XLogRecGetData(record), sizeof(rec));
    appendStringInfo(buf, "token_mark " INT64_FORMAT "; horizon %s", rec.token_mark,
                     timestamptz_to_str(rec.horizon));
}

// Name a record type.
const char *identify(uint8 info) {
    switch (info & ~XLR_INFO_MASK) {
        case kXlogDurable:
            return "DURABLE";
        case kXlogGrant:
            return "GRANT";
        case kXlogRenew:
            return "RENEW";
        case kXlogRelease:
            return "RELEASE";
    }
    return nullptr;
}

// Report, once replay is over, until when no lock will be granted.
void cleanup() {
    lockext_durable_report();
}

RmgrData rmgr = {
    "lockext", redo, desc, identify, nullptr, cleanup, nullptr, nullptr,
};

}  // namespace

// Register the resource manager (from _PG_init, while preloading).
void lockext_wal_register() {
    RegisterCustomRmgr(kLockextRmgrId, &rmgr);
}

// Log new durable marks and wait until they are flushed (and, with
// synchronous replication, on the synchronous standbys).
void lockext_wal_log_durable(int64 token_mark, int64 horizon) {
    DurableRecord rec = {token_mark, horizon};
    XLogBeginInsert();
    XLogRegisterData(reinterpret_cast<char *>(&rec), sizeof(rec));
    const XLogRecPtr lsn = XLogInsert(kLockextRmgrId, kXlogDurable);
    XLogFlush(lsn);
    SyncRepWaitForLSN(lsn, false);
}

namespace {

// The fields every lease record has: the name's database and length, the token.
LeaseRecord lease_record(const lockext::Key &key, std::int64_t token) {
    LeaseRecord rec;
    memset(&rec, 0, sizeof(rec));
    rec.dboid = key.dboid;
    rec.token = token;
    rec.name_len = static_cast<int16>(key.len);
    rec.owner_len = -1;
    return rec;
}

}  // namespace

// Log a lease grant (lease scope only); see lock_shmem.hpp.
void lockext_wal_log_grant(const lockext::Key &key, const lockext::Request &req, std::int64_t token,
                           std::int64_t expires_at) {
    if (!lockext_replicate_leases)
        return;
    LeaseRecord rec = lease_record(key, token);
    rec.roleid = req.roleid;
    rec.expires = expires_at;
    rec.at = expires_at - req.ttl_us;
    rec.mode = static_cast<int32>(req.mode);
    rec.max_holders = req.max_holders;
    if (req.has_owner)
        rec.owner_len = static_cast<int16>(strnlen(req.owner, lockext::kMaxOwnerLen));
    log_lease(kXlogGrant, rec, key.name, req.owner);
}

// Log a lease renewal; see lock_shmem.hpp.
void lockext_wal_log_renew(const lockext::Key &key, std::int64_t token, std::int64_t renewed_at,
                           std::int64_t expires_at) {
    if (!lockext_replicate_leases)
        return;
    LeaseRecord rec = lease_record(key, token);
    rec.at = renewed_at;
    rec.expires = expires_at;
    log_lease(kXlogRenew, rec, key.name, nullptr);
}

// Log a release (token 0: every holder of the name); see lock_shmem.hpp.
void lockext_wal_log_release(const lockext::Key &key, std::int64_t token) {
    if (!lockext_replicate_leases)
        return;
    log_lease(kXlogRelease, lease_record(key, token), key.name, nullptr);
}
