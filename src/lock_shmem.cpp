// Module start-up, GUCs, shared memory and per-backend cleanup.
//
// LOCKING PROTOCOL (the only shared state of the lock service)
//
//   lockext_shared->table_lock (LWLock, tranche "lockext")
//     EXCLUSIVE for every change to the LockTable: acquire, poll, abandon,
//     renew, release, force_release, release_backend, reap_all, and the
//     stats counters and LockTable::last_token (tokens are assigned in
//     LockTable::grant under this lock, so they rise in grant order).
//     SHARED for the read-only snapshots behind lockext.holders and
//     lockext.waiters.
//     Held only for in-memory work: no I/O, no allocation, no sleeping. The
//     only calls made under it are into the C++ core and
//     ConditionVariableSignal (a spinlock and a latch) via the wake callback.
//
//   lockext_shared->state_lock (LWLock, tranche "lockext")
//     EXCLUSIVE while writing the durable state file (src/durable_state.cpp).
//     Never taken while table_lock is held, and table_lock is never taken
//     while it is held, so the two cannot deadlock.
//
//   durable_token, durable_horizon (pg_atomic_uint64)
//     Read without a lock by any backend; written only under state_lock,
//     after the file that records them is fsync'd.
//
//   leaf_gen[i] (pg_atomic_uint32)
//     Queue leaf generations: bumped with an atomic add, after commit and
//     after the commit's job leases were released, by a transaction that may
//     have made a job of a leaf free (enqueue, complete, fail, requeue); read
//     without a lock by dequeue, which skips a leaf it found without a free
//     job while its generation stands (src/queue_ops.cpp).
//
//   cvs[i] (ConditionVariable)
//     Slept on only by the backend whose PGPROC number is i, while its
//     LockTable waiter i is queued. Signalled by whichever backend grants to
//     waiter i, under table_lock. The sleeper prepares to sleep before it
//     checks its state, so a grant between check and sleep is not lost.
//
//   LockTable::waiters[i]
//     Written by backend i (enqueue, consume a grant, abandon) and by
//     granting backends (state := granted), always under table_lock.
//
//   LockTable slot list i (slot_heads()[i] and the Holder slot_* links)
//     The session and transaction holders granted to backend i, linked by
//     whichever backend grants them and unlinked by whichever frees them,
//     under table_lock. Backend i walks it at commit and at exit, so those
//     cost its own scoped holders, not a scan of lockext.max_locks slots.
//
// Everything above is created by the postmaster in the shmem_startup_hook
// under AddinShmemInitLock, and re-created after a crash restart. So is the
// queue notifier's state, whose protocol is at the top of
// src/queue_notify.cpp (it has a lock of its own, never held with these).
extern "C" {
#include "postgres.h"

#include "access/twophase.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/guc.h"
#include "utils/timestamp.h"
}

#include "lockext/lock_shmem.hpp"
#include "lockext/queue_notify.hpp"

extern "C" {
PG_MODULE_MAGIC;
void _PG_init(void);
}

LockextShared *lockext_shared = nullptr;
int lockext_max_locks = 4096;
int lockext_max_ttl_s = 86400;
int lockext_startup_grace_s = 0;
bool lockext_replicate_leases = false;

static shmem_request_hook_type prev_shmem_request_hook = nullptr;
static shmem_startup_hook_type prev_shmem_startup_hook = nullptr;

static bool cleanup_registered = false;
static bool holds_xact_locks = false;
static bool queue_xact = false;  // lockext_queue_xact_end is due

// Number of PGPROC slots, hence of possible waiters.
static int waiter_slots() {
    return MaxBackends + NUM_AUXILIARY_PROCS + max_prepared_xacts;
}

// Bytes of the whole shared block.
static Size shared_size() {
    Size size = MAXALIGN(sizeof(LockextShared));
    size = add_size(size, MAXALIGN(mul_size(sizeof(ConditionVariable), waiter_slots())));
    size = add_size(size, lockext::LockTable::bytes_needed(lockext_max_locks, waiter_slots()));
    return size;
}

// Bytes of everything the module puts in shared memory.
static Size module_shared_size() {
    return add_size(shared_size(), lockext_notify_shmem_size());
}

// Ask the postmaster for our shared memory and LWLocks.
static void lockext_shmem_request() {
    if (prev_shmem_request_hook)
        prev_shmem_request_hook();
    RequestAddinShmemSpace(module_shared_size());
    // table_lock, state_lock, and the queue notifier's lock.
    RequestNamedLWLockTranche("lockext", 3);
}

// Create (or attach to) the shared block; seed tokens from the state file.
static void lockext_shmem_startup() {
    if (prev_shmem_startup_hook)
        prev_shmem_startup_hook();
    LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
    bool found = false;
    char *base = static_cast<char *>(ShmemInitStruct("lockext", shared_size(), &found));
    lockext_shared = reinterpret_cast<LockextShared *>(base);
    if (!found) {
        LWLockPadded *locks = GetNamedLWLockTranche("lockext");
        lockext_shared->table_lock = &locks[0].lock;
        lockext_shared->state_lock = &locks[1].lock;
        pg_atomic_init_u64(&lockext_shared->durable_token, 0);
        pg_atomic_init_u64(&lockext_shared->durable_horizon, 0);
        for (pg_atomic_uint32 &g : lockext_shared->leaf_gen)
            pg_atomic_init_u32(&g, 0);
        char *p = base + MAXALIGN(sizeof(LockextShared));
        lockext_shared->cvs = reinterpret_cast<ConditionVariable *>(p);
        for (int i = 0; i < waiter_slots(); i++)
            ConditionVariableInit(&lockext_shared->cvs[i]);
        p += MAXALIGN(mul_size(sizeof(ConditionVariable), waiter_slots()));
        lockext_shared->table = lockext::LockTable::create(p, lockext_max_locks, waiter_slots());
        lockext_durable_startup(lockext_shared);
    }
    lockext_notify_shmem_init(&GetNamedLWLockTranche("lockext")[2].lock);
    LWLockRelease(AddinShmemInitLock);
}

// Module load: GUCs, and the shared-memory hooks when preloaded.
void _PG_init(void) {
    DefineCustomIntVariable("lockext.max_ttl", "Longest TTL a lease may be granted or renewed for.",
                            nullptr, &lockext_max_ttl_s, 86400, 1, INT_MAX / 1000, PGC_SIGHUP,
                            GUC_UNIT_S, nullptr, nullptr, nullptr);
    // Postmaster-only settings may be defined only while preloading: defining
    // them later (CREATE EXTENSION without preload) is a FATAL error.
    if (!process_shared_preload_libraries_in_progress) {
        MarkGUCPrefixReserved("lockext");
        return;
    }
    DefineCustomIntVariable(
        "lockext.max_locks", "Maximum number of lock holders (slots) in shared memory.", nullptr,
        &lockext_max_locks, 4096, 16, 10000000, PGC_POSTMASTER, 0, nullptr, nullptr, nullptr);
    DefineCustomIntVariable(
        "lockext.startup_grace", "Time after server start during which no lock is granted.",
        "Set it to the longest TTL in use when a standby may be promoted: the standby "
        "cannot know the leases its old primary granted.",
        &lockext_startup_grace_s, 0, 0, INT_MAX / 1000, PGC_POSTMASTER, GUC_UNIT_S, nullptr,
        nullptr, nullptr);
    DefineCustomBoolVariable(
        "lockext.replicate_leases",
        "WAL-logs lease grants, renewals and releases, so a streaming standby keeps a copy.",
        "With it, the holders of leases granted before a failover renew and release them on the "
        "promoted standby. Off by default: two WAL records per acquire and release cost 5-15% "
        "of the lock benchmark's throughput.",
        &lockext_replicate_leases, false, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
    MarkGUCPrefixReserved("lockext");
    lockext_wal_register();

    prev_shmem_request_hook = shmem_request_hook;
    shmem_request_hook = lockext_shmem_request;
    prev_shmem_startup_hook = shmem_startup_hook;
    shmem_startup_hook = lockext_shmem_startup;
}

// Raise 25006 on a server in recovery; see lock_shmem.hpp.
void lockext_refuse_in_recovery(const char *what) {
    if (RecoveryInProgress())
        ereport(ERROR, (errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
                        errmsg("cannot %s on a server in recovery", what),
                        errdetail("lockext grants and renews locks only on a primary."),
                        errhint("Connect to the primary.")));
}

// Raise an error with a hint unless the library was preloaded.
void lockext_require_loaded() {
    if (lockext_shared == nullptr)
        ereport(ERROR,
                (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE), errmsg("lockext is not loaded"),
                 errhint("Add lockext to shared_preload_libraries in postgresql.conf and restart "
                         "the server.")));
}

// Signal waiter `w`'s condition variable; a lockext::WakeFn.
void lockext_wake_waiter(std::int32_t w, void *) {
    ConditionVariableSignal(&lockext_shared->cvs[w]);
}

// Release this backend's scoped locks and leave any wait queue.
static void release_backend_locks(bool session, bool transaction, bool commit) {
    LWLockAcquire(lockext_shared->table_lock, LW_EXCLUSIVE);
    const TimestampTz now = GetCurrentTimestamp();
    lockext::LockTable *t = lockext_shared->table;
    if (session && t->is_waiting(MyProc->pgprocno)) {
        t->abandon(MyProc->pgprocno, now, lockext_wake_waiter, nullptr);
        t->stats().cancelled++;
    }
    t->release_backend(MyProcPid, MyProc->pgprocno, session, transaction, commit, now,
                       lockext_wake_waiter, nullptr);
    LWLockRelease(lockext_shared->table_lock);
}

// Backend exit: drop session and transaction locks and any pending wait.
static void on_backend_exit(int, Datum) {
    if (lockext_shared == nullptr || MyProc == nullptr)
        return;
    // On FATAL this runs before ShutdownPostgres releases LWLocks. Nothing
    // that can raise FATAL runs under table_lock, but never self-deadlock.
    if (LWLockHeldByMe(lockext_shared->table_lock))
        LWLockRelease(lockext_shared->table_lock);
    release_backend_locks(true, true, false);
    holds_xact_locks = false;
    if (queue_xact) {
        queue_xact = false;
        lockext_queue_xact_end(false);
    }
}

// Transaction end: drop transaction-scope locks.
static void on_xact_event(XactEvent event, void *) {
    switch (event) {
        case XACT_EVENT_PRE_PREPARE:
            if (holds_xact_locks)
                ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                                errmsg("cannot PREPARE a transaction that holds lockext "
                                       "transaction-scope locks or has taken or finished "
                                       "queue jobs")));
            break;
        case XACT_EVENT_COMMIT:
        case XACT_EVENT_PARALLEL_COMMIT:
        case XACT_EVENT_ABORT:
        case XACT_EVENT_PARALLEL_ABORT:
            // COMMIT comes after the commit is visible to other snapshots, so
            // a job lease released here is taken by nobody who could still
            // see the finished job's row.
            if (holds_xact_locks) {
                release_backend_locks(
                    false, true, event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT);
                holds_xact_locks = false;
            }
            // After the releases: who then looks at a leaf finds its jobs free.
            if (queue_xact) {
                queue_xact = false;
                lockext_queue_xact_end(event == XACT_EVENT_COMMIT ||
                                       event == XACT_EVENT_PARALLEL_COMMIT);
            }
            break;
        default:
            break;
    }
}

// Register this backend's exit and transaction-end cleanups once.
void lockext_register_backend_cleanup() {
    if (cleanup_registered)
        return;
    before_shmem_exit(on_backend_exit, 0);
    RegisterXactCallback(on_xact_event, nullptr);
    cleanup_registered = true;
}

// Note that this backend now holds a lock in session or transaction scope.
void lockext_note_scoped_grant(lockext::Scope scope) {
    if (scope == lockext::Scope::transaction)
        holds_xact_locks = true;
}

// Note that this transaction has job leases that its end settles.
void lockext_note_pending_leases() {
    lockext_register_backend_cleanup();
    holds_xact_locks = true;
}

// Call lockext_queue_xact_end at the end of this transaction.
void lockext_note_queue_xact() {
    lockext_register_backend_cleanup();
    queue_xact = true;
}
