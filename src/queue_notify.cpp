// Queue wakeups sent after the enqueuing transaction commits, by a notifier
// background worker per database.
//
// Why not NOTIFY in the enqueuing transaction: PostgreSQL serialises every
// transaction that has sent NOTIFY on one database-wide lock, held from
// pre-commit until its commit record is flushed. Enqueuers then commit one at
// a time and lose group commit: with 8 workers, the single-job cycle ran at
// 56% of its speed without the NOTIFY. Here enqueue only remembers the
// queue's name; when its transaction commits, the name goes to this
// database's notifier, which sends the NOTIFYs of many commits in one
// transaction of its own. Listeners still hear about a job only after it is
// committed, a few hundred microseconds later than before.
//
// Fallbacks keep wakeups from being lost: when the library is not preloaded
// (no shared memory), or no notifier can be started (max_worker_processes,
// more databases than slots), enqueue sends NOTIFY in its own transaction as
// before. A notifier that finds names it could not keep (the pending list was
// full) notifies every queue of its database.
//
// LOCKING PROTOCOL
//
//   shared->lock (LWLock, the third of tranche "lockext")
//     EXCLUSIVE for every read and write of slots[] and pending[]; held only
//     to copy a few names and to register a worker (which takes
//     BackgroundWorkerLock inside; that lock never waits on ours).
//
//   slots[i] (one per database with a notifier)
//     db != InvalidOid marks the slot used. A backend claims a free slot
//     and registers the worker under the lock; the worker fills in pid and
//     latch when it runs and frees the slot on exit. open_xacts counts
//     transactions of that database that have enqueued and not yet ended:
//     +1 at the first enqueue of a transaction, -1 at its commit or abort.
//     The worker leaves on idleness only when open_xacts is 0 and no name of
//     its database is pending, checked and freed under the lock, so a
//     committing transaction always finds its notifier's slot.
//
//   pending[] (names waiting for their notifier)
//     Appended by committing backends, taken (and compacted) by the notifier
//     of the name's database. A full list sets slots[i].overflow instead.
//
//   The worker's latch is set by a committer after appending, outside no
//   lock ordering concern (SetLatch takes none of ours).
//
//   The database's lock (heavyweight, on its pg_database object; a session
//   takes it RowExclusiveLock in InitPostgres to connect, and DROP
//   DATABASE, ALTER DATABASE RENAME / SET TABLESPACE and CREATE DATABASE
//   ... TEMPLATE take modes that conflict with that)
//     The worker takes it as a session lock before it connects: a worker
//     connecting under a DROP would die with FATAL 3D000 (database does not
//     exist), since DROP DATABASE does not count a process that has not yet
//     advertised its database. It takes it without waiting (an unconnected
//     process cannot wait for a heavyweight lock) and never while holding
//     shared->lock. While the lock is unavailable the worker retries every
//     kLockRetryMs, unconnected, so the DROP goes ahead; a DROP that comes
//     while the worker holds it waits only for the worker's connection
//     (milliseconds). Once the worker has it no DROP is under way, and the
//     database exists exactly when its directory does: a worker that finds
//     none forgets the database (its slot and its pending names) and leaves
//     with exit code 0. Otherwise it connects (InitPostgres' own request is
//     granted from the session lock, so it cannot queue behind a DROP that
//     came meanwhile) and releases the lock, after which a DROP sees it in
//     the ProcArray. Connected, the worker tries the lock (and releases it)
//     every kWaitMs: when it is unavailable, a command that needs the
//     database to itself waits for this worker, which leaves as soon as it
//     could leave on idleness, instead of after kIdleExitMs.
extern "C" {
#include "postgres.h"

#include <sys/stat.h>

#include "access/parallel.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "catalog/pg_tablespace.h"
#include "commands/async.h"
#include "common/relpath.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lock.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
}

#include "lockext/pg_guard.hpp"
#include "lockext/queue_notify.hpp"

namespace {

constexpr int kSlots = 32;               // databases with a notifier at once
constexpr int kPending = 1024;           // names waiting for their notifiers
constexpr int kXactNames = 16;           // distinct queues one transaction remembers
constexpr long kWaitMs = 100;            // longest sleep; it tries its database's lock as often
constexpr long kIdleExitMs = 2000;       // idle notifiers leave
constexpr long kLockRetryMs = 10;        // an unconnected notifier retries its database's lock
constexpr long kStartTimeoutMs = 10000;  // a worker not running by then is presumed failed
// After a send, the notifier lets names gather this long before the next:
// one transaction then covers many commits, and a wakeup is at most this
// much later than it would have been.
constexpr long kCoalesceMs = 2;

struct NotifierSlot {
    Oid db;          // InvalidOid: free
    int pid;         // 0 until the worker runs
    Latch *latch;    // the worker's, once it runs
    int open_xacts;  // transactions that enqueued and have not ended
    bool overflow;   // names were dropped: notify every queue
    TimestampTz registered;
};

struct PendingName {
    Oid db;
    char queue[NAMEDATALEN];
};

struct NotifyShared {
    LWLock *lock;
    int npending;
    NotifierSlot slots[kSlots];
    PendingName pending[kPending];
};

NotifyShared *shared = nullptr;

// This backend's transaction: the slot it counted itself in (-1: none, so
// it notifies directly) and the queues to announce at commit.
int xact_slot = -1;
bool xact_active = false;
int xact_nnames = 0;
bool xact_overflow = false;
char xact_names[kXactNames][NAMEDATALEN];
bool callback_registered = false;

// The notifier's own state: SIGTERM seen (it then leaves with exit code 0);
// inside a transaction, SIGTERM ends it as die() does; the database whose
// lock it holds as a session lock (InvalidOid: none).
volatile sig_atomic_t got_sigterm = false;
volatile sig_atomic_t die_on_sigterm = false;
Oid locked_db = InvalidOid;

// The channel a queue's workers LISTEN on (lockext.queue_channel).
char *channel_of(const char *queue) {
    return psprintf("lockext_queue_%s", queue);
}

// SIGTERM (pg_terminate_backend, DROP DATABASE ... WITH (FORCE), shutdown):
// the notifier leaves at its next wakeup; in a transaction, as die() does.
void notifier_sigterm(SIGNAL_ARGS) {
    int save_errno = errno;
    got_sigterm = true;
    if (die_on_sigterm)
        die(postgres_signal_arg);
    SetLatch(MyLatch);
    errno = save_errno;
}

// The lock a session takes on database `db` to connect.
LOCKTAG database_lock(Oid db) {
    LOCKTAG tag;
    SET_LOCKTAG_OBJECT(tag, InvalidOid, DatabaseRelationId, db, 0);
    return tag;
}

// Take database `db`'s lock as a session connecting to it would, as a
// session lock and without waiting; false when a command that needs the
// database to itself holds it or waits for it.
bool try_lock_database(Oid db) {
    LOCKTAG tag = database_lock(db);
    if (LockAcquire(&tag, RowExclusiveLock, true, true) == LOCKACQUIRE_NOT_AVAIL)
        return false;
    locked_db = db;
    return true;
}

// Release the lock try_lock_database() took, if it is still held (an abort
// releases session locks too).
void unlock_database() {
    if (locked_db == InvalidOid)
        return;
    LOCKTAG tag = database_lock(locked_db);
    locked_db = InvalidOid;
    if (LockHeldByMe(&tag, RowExclusiveLock))
        LockRelease(&tag, RowExclusiveLock, true);
}

// Whether `path` may exist (only "no such file" says it does not).
bool may_exist(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 || errno != ENOENT;
}

// Whether database `db` still has a directory, in base/ or in a tablespace.
// Under the database's lock no DROP DATABASE is under way, so the directory
// is there exactly when the database is (InitPostgres too checks it, once
// it has read pg_database).
bool database_exists(Oid db) {
    char *path = GetDatabasePath(db, DEFAULTTABLESPACE_OID);
    bool found = may_exist(path);
    pfree(path);
    DIR *dir = found ? nullptr : AllocateDir("pg_tblspc");
    struct dirent *de;
    while (!found && (de = ReadDirExtended(dir, "pg_tblspc", LOG)) != nullptr) {
        Oid spc = atooid(de->d_name);  // 0 for "." and ".."
        if (spc == InvalidOid)
            continue;
        path = GetDatabasePath(db, spc);
        found = may_exist(path);
        pfree(path);
    }
    if (dir != nullptr)
        FreeDir(dir);
    return found;
}

// Register the notifier for slot `i`; under shared->lock.
bool start_worker(int i) {
    BackgroundWorker worker;
    memset(&worker, 0, sizeof(worker));
    worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
    worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
    worker.bgw_restart_time = BGW_NEVER_RESTART;
    strlcpy(worker.bgw_library_name, "lockext", BGW_MAXLEN);
    strlcpy(worker.bgw_function_name, "lockext_notifier_main", BGW_MAXLEN);
    snprintf(worker.bgw_name, BGW_MAXLEN, "lockext notifier for database %u", MyDatabaseId);
    strlcpy(worker.bgw_type, "lockext notifier", BGW_MAXLEN);
    worker.bgw_main_arg = Int32GetDatum(i);
    worker.bgw_notify_pid = 0;
    if (!RegisterDynamicBackgroundWorker(&worker, nullptr))
        return false;
    shared->slots[i].db = MyDatabaseId;
    shared->slots[i].pid = 0;
    shared->slots[i].latch = nullptr;
    shared->slots[i].overflow = false;
    shared->slots[i].registered = GetCurrentTimestamp();
    return true;
}

// The slot of this database's notifier, starting one if needed; -1 when
// none can be had. Under shared->lock.
int notifier_slot() {
    int free_slot = -1;
    for (int i = 0; i < kSlots; i++) {
        NotifierSlot &s = shared->slots[i];
        if (s.db == MyDatabaseId) {
            // Its worker exited with transactions still counted, or was
            // registered long ago and never ran: start another.
            if (s.pid == 0 &&
                (s.registered == 0 ||
                 TimestampDifferenceExceeds(s.registered, GetCurrentTimestamp(), kStartTimeoutMs)))
                (void)start_worker(i);
            return i;
        }
        if (s.db == InvalidOid && free_slot < 0)
            free_slot = i;
    }
    if (free_slot >= 0 && start_worker(free_slot))
        return free_slot;
    return -1;
}

// Hand this transaction's names to its notifier (commit) or drop them
// (abort), and uncount the transaction.
void queue_notify_xact_callback(XactEvent event, void *) {
    if (!xact_active)
        return;
    switch (event) {
        case XACT_EVENT_PRE_PREPARE:
            // Same rule as NOTIFY: the wakeup would belong to whoever
            // commits the prepared transaction.
            ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                            errmsg("cannot PREPARE a transaction that has enqueued jobs")));
            break;
        case XACT_EVENT_COMMIT:
        case XACT_EVENT_ABORT: {
            Latch *latch = nullptr;
            LWLockAcquire(shared->lock, LW_EXCLUSIVE);
            NotifierSlot &s = shared->slots[xact_slot];
            if (s.db == MyDatabaseId) {
                s.open_xacts--;
                if (event == XACT_EVENT_COMMIT) {
                    for (int n = 0; n < xact_nnames; n++) {
                        if (shared->npending == kPending) {
                            s.overflow = true;
                            break;
                        }
                        PendingName &p = shared->pending[shared->npending++];
                        p.db = MyDatabaseId;
                        strlcpy(p.queue, xact_names[n], NAMEDATALEN);
                    }
                    if (xact_overflow)
                        s.overflow = true;
                    latch = s.latch;
                }
                // The worker died since this transaction began: start
                // another, which takes the names from pending[]. After an
                // abort, only once no transaction is counted: else the
                // slot would stay taken with no worker, for good if the
                // database is then dropped.
                if (s.pid == 0 && s.registered == 0 &&
                    (event == XACT_EVENT_COMMIT || s.open_xacts == 0))
                    (void)start_worker(xact_slot);
            }
            LWLockRelease(shared->lock);
            if (latch != nullptr)
                SetLatch(latch);
            xact_active = false;
            xact_slot = -1;
            xact_nnames = 0;
            xact_overflow = false;
            break;
        }
        default:
            break;
    }
}

// Free slot `i` when its worker exits, however it exits, and release the
// database's lock if it still holds it.
void notifier_exit(int, Datum arg) {
    int i = DatumGetInt32(arg);
    unlock_database();
    LWLockAcquire(shared->lock, LW_EXCLUSIVE);
    NotifierSlot &s = shared->slots[i];
    if (s.pid == MyProcPid) {
        s.pid = 0;
        s.latch = nullptr;
        // Transactions still counted here will find no latch to set; mark
        // the slot as needing a new worker (their commit starts one).
        if (s.open_xacts == 0)
            s.db = InvalidOid;
        else
            s.registered = 0;
    }
    LWLockRelease(shared->lock);
}

// Slot `i`'s database was dropped: drop the names pending for it and free
// the slot (no transaction of a dropped database can still be counted).
void forget_database(int i) {
    LWLockAcquire(shared->lock, LW_EXCLUSIVE);
    NotifierSlot &s = shared->slots[i];
    if (s.pid == MyProcPid) {
        int kept = 0;
        for (int p = 0; p < shared->npending; p++)
            if (shared->pending[p].db != s.db)
                shared->pending[kept++] = shared->pending[p];
        shared->npending = kept;
        s.db = InvalidOid;
        s.pid = 0;
        s.latch = nullptr;
        s.open_xacts = 0;
        s.overflow = false;
    }
    LWLockRelease(shared->lock);
}

// Copy the names pending for slot `i`'s database into `names` (at most
// kPending), removing them; sets *overflow when every queue must be
// notified. Returns the count, or -1 when the worker should leave (it may,
// and nothing is pending or counted).
int take_pending(int i, char (*names)[NAMEDATALEN], bool *overflow, bool may_leave) {
    LWLockAcquire(shared->lock, LW_EXCLUSIVE);
    NotifierSlot &s = shared->slots[i];
    int n = 0, kept = 0;
    for (int p = 0; p < shared->npending; p++) {
        if (shared->pending[p].db == s.db) {
            strlcpy(names[n++], shared->pending[p].queue, NAMEDATALEN);
        } else {
            if (kept != p)
                shared->pending[kept] = shared->pending[p];
            kept++;
        }
    }
    shared->npending = kept;
    *overflow = s.overflow;
    s.overflow = false;
    if (n == 0 && !*overflow && may_leave && s.open_xacts == 0) {
        s.db = InvalidOid;
        s.pid = 0;
        s.latch = nullptr;
        n = -1;
    }
    LWLockRelease(shared->lock);
    return n;
}

// Send the NOTIFYs for `n` names (duplicates are folded by NOTIFY itself),
// or for every queue of the database on overflow, in one transaction.
void send_notifies(char (*names)[NAMEDATALEN], int n, bool overflow) {
    SetCurrentStatementStartTimestamp();
    StartTransactionCommand();
    pgstat_report_activity(STATE_RUNNING, "lockext: notifying queue workers");
    for (int k = 0; k < n; k++)
        Async_Notify(channel_of(names[k]), "");
    if (overflow) {
        SPI_connect();
        PushActiveSnapshot(GetTransactionSnapshot());
        if (SPI_execute("SELECT queue FROM lockext.queues", true, 0) == SPI_OK_SELECT) {
            for (uint64 r = 0; r < SPI_processed; r++) {
                char *q = SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1);
                if (q != nullptr)
                    Async_Notify(channel_of(q), "");
            }
        }
        SPI_finish();
        PopActiveSnapshot();
    }
    CommitTransactionCommand();
    pgstat_report_activity(STATE_IDLE, nullptr);
}

}  // namespace

// Bytes of the notifier's shared state.
Size lockext_notify_shmem_size() {
    return MAXALIGN(sizeof(NotifyShared));
}

// Create (or attach to) the notifier's shared state; under AddinShmemInitLock.
void lockext_notify_shmem_init(LWLock *lock) {
    bool found = false;
    shared = static_cast<NotifyShared *>(
        ShmemInitStruct("lockext notify", lockext_notify_shmem_size(), &found));
    if (!found) {
        memset(shared, 0, sizeof(NotifyShared));
        shared->lock = lock;
    }
}

// Announce new ready jobs of `queue` to its LISTEN channel once the current
// transaction commits.
void lockext_notify_after_commit(const char *queue) {
    if (shared == nullptr || IsParallelWorker()) {
        Async_Notify(channel_of(queue), "");
        return;
    }
    if (!xact_active) {
        if (!callback_registered) {
            RegisterXactCallback(queue_notify_xact_callback, nullptr);
            callback_registered = true;
        }
        LWLockAcquire(shared->lock, LW_EXCLUSIVE);
        int slot = notifier_slot();
        if (slot >= 0)
            shared->slots[slot].open_xacts++;
        LWLockRelease(shared->lock);
        if (slot < 0) {
            // No notifier to be had: the old way, in this transaction.
            Async_Notify(channel_of(queue), "");
            return;
        }
        xact_slot = slot;
        xact_active = true;
    }
    for (int n = 0; n < xact_nnames; n++)
        if (strcmp(xact_names[n], queue) == 0)
            return;
    if (xact_nnames == kXactNames) {
        xact_overflow = true;
        return;
    }
    strlcpy(xact_names[xact_nnames++], queue, NAMEDATALEN);
}

// The notifier background worker: sleeps on its latch, and sends the
// NOTIFYs committed transactions of its database handed it.
extern "C" PGDLLEXPORT void lockext_notifier_main(Datum arg) {
    int i = DatumGetInt32(arg);
    pqsignal(SIGTERM, notifier_sigterm);
    BackgroundWorkerUnblockSignals();

    LWLockAcquire(shared->lock, LW_EXCLUSIVE);
    NotifierSlot &s = shared->slots[i];
    Oid db = s.db;
    bool mine = db != InvalidOid && s.pid == 0;
    if (mine) {
        s.pid = MyProcPid;
        s.latch = MyLatch;
    }
    LWLockRelease(shared->lock);
    if (!mine)
        proc_exit(0);
    before_shmem_exit(notifier_exit, Int32GetDatum(i));

    // Connect under the database's lock (see LOCKING PROTOCOL).
    while (!try_lock_database(db)) {
        if (got_sigterm) {
            elog(DEBUG1, "lockext notifier: terminating on request");
            proc_exit(0);
        }
        (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, kLockRetryMs,
                        PG_WAIT_EXTENSION);
        ResetLatch(MyLatch);
    }
    if (!database_exists(db)) {
        unlock_database();
        forget_database(i);
        elog(DEBUG1, "lockext notifier: database %u was dropped, leaving", db);
        proc_exit(0);
    }
    // It serves transactions that committed there while connections were
    // allowed; ALTER DATABASE ... ALLOW_CONNECTIONS false would otherwise
    // make it die with FATAL 55000.
    BackgroundWorkerInitializeConnectionByOid(db, InvalidOid, BGWORKER_BYPASS_ALLOWCONN);
    unlock_database();
    // A notification needs no durability: listeners hear it once the commit
    // is in the commit log, and the jobs it announces were flushed by their
    // own commits. Skipping the WAL flush keeps the notifier off the disk.
    SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);

    auto *names = static_cast<char(*)[NAMEDATALEN]>(
        MemoryContextAlloc(TopMemoryContext, sizeof(char[NAMEDATALEN]) * kPending));
    TimestampTz last_work = GetCurrentTimestamp();
    TimestampTz last_try = 0;
    bool wanted = false;  // the last try found the database's lock unavailable
    for (;;) {
        if (got_sigterm) {
            elog(DEBUG1, "lockext notifier: terminating on request");
            proc_exit(0);
        }
        CHECK_FOR_INTERRUPTS();
        TimestampTz now = GetCurrentTimestamp();
        if (TimestampDifferenceExceeds(last_try, now, kWaitMs)) {
            wanted = !try_lock_database(db);
            unlock_database();
            last_try = now;
        }
        bool idle = TimestampDifferenceExceeds(last_work, now, kIdleExitMs);
        bool overflow = false;
        int n = take_pending(i, names, &overflow, idle || wanted);
        if (n < 0) {
            if (wanted)
                elog(DEBUG1, "lockext notifier: database %u is wanted by another command, leaving",
                     db);
            proc_exit(0);
        }
        if (n > 0 || overflow) {
            die_on_sigterm = true;
            send_notifies(names, n, overflow);
            die_on_sigterm = false;
            last_work = GetCurrentTimestamp();
            (void)WaitLatch(nullptr, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, kCoalesceMs,
                            PG_WAIT_EXTENSION);
            continue;
        }
        (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, kWaitMs,
                        PG_WAIT_EXTENSION);
        ResetLatch(MyLatch);
    }
}
