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
// Leases themselves are not logged yet: after a failover their names are
// held by nobody but cannot be granted before the horizon.
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

// The one record type: the durable marks moved.
constexpr uint8 kXlogDurable = 0x10;

// What a kXlogDurable record carries.
struct DurableRecord {
    int64 token_mark;
    int64 horizon;
};

// Replay a record (startup process: crash recovery or a standby).
void redo(XLogReaderState *record) {
    const uint8 info = XLogRecGetInfo(record) & ~XLR_INFO_MASK;
    if (info != kXlogDurable)
        elog(PANIC, "lockext: unknown WAL record type %u", info);
    DurableRecord rec;
    memcpy(&rec, XLogRecGetData(record), sizeof(rec));
    lockext_durable_redo(rec.token_mark, rec.horizon);
}

// Describe a record for pg_waldump and pg_walinspect.
void desc(StringInfo buf, XLogReaderState *record) {
    const uint8 info = XLogRecGetInfo(record) & ~XLR_INFO_MASK;
    if (info != kXlogDurable)
        return;
    DurableRecord rec;
    memcpy(&rec, XLogRecGetData(record), sizeof(rec));
    appendStringInfo(buf, "token_mark " INT64_FORMAT "; horizon %s", rec.token_mark,
                     timestamptz_to_str(rec.horizon));
}

// Name a record type.
const char *identify(uint8 info) {
    return (info & ~XLR_INFO_MASK) == kXlogDurable ? "DURABLE" : nullptr;
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
