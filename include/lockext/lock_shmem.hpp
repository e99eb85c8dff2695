// Shared state of the extension as PostgreSQL code sees it.
// The locking protocol is written at the top of src/lock_shmem.cpp.
// Include after postgres.h.
#pragma once

extern "C" {
#include "port/atomics.h"
#include "storage/condition_variable.h"
#include "storage/lwlock.h"
}

#include "lockext/lock_table.hpp"

struct LockextShared {
    LWLock *table_lock;  // guards *table (see protocol)
    LWLock *state_lock;  // serialises writes of the durable state file
    // Highest token and latest expiry the state file covers; read without
    // a lock, written only under state_lock after the file is durable.
    pg_atomic_uint64 durable_token;
    pg_atomic_uint64 durable_horizon;
    lockext::LockTable *table;
    ConditionVariable *cvs;  // one per PGPROC number, slept on by its waiter
    // Queue leaf generations (src/queue_ops.cpp): bumped after a commit that
    // may have made a job of the leaf free; no lock (atomics).
    pg_atomic_uint32 leaf_gen[4096];
};

extern LockextShared *lockext_shared;

// GUCs.
extern int lockext_max_locks;
extern int lockext_max_ttl_s;
extern int lockext_startup_grace_s;
extern bool lockext_replicate_leases;

// Raise an error with a hint unless the library was preloaded.
void lockext_require_loaded();
// Register this backend's exit and transaction-end cleanups once.
void lockext_register_backend_cleanup();
// Note that this backend now holds a lock in session or transaction scope.
void lockext_note_scoped_grant(lockext::Scope scope);
// Note that this transaction has job leases that its end settles (call
// before taking or finishing one).
void lockext_note_pending_leases();
// Call lockext_queue_xact_end at the end of this transaction.
void lockext_note_queue_xact();
// Queue bookkeeping at the end of a transaction, after its job leases were
// settled (src/queue_ops.cpp).
void lockext_queue_xact_end(bool commit);
// A request of this backend, as its current role, with its application
// name and client address (no owner); src/lock_functions.cpp.
void lockext_init_request(lockext::Request *req, lockext::Mode mode, lockext::Scope scope,
                          std::int32_t max_holders, std::int64_t ttl_us);
// Signal waiter `w`'s condition variable; a lockext::WakeFn.
void lockext_wake_waiter(std::int32_t w, void *ctx);

// Load the durable state at server start and seed the token counter.
void lockext_durable_startup(LockextShared *shared);
// Make sure a crash cannot make `token` reappear or forget `expires_at`.
void lockext_durable_ensure(std::int64_t token, lockext::Timestamp expires_at);
// Raise the durable marks to those of a replayed WAL record: the state file,
// the shared copies and the lock table's token counter and grace.
void lockext_durable_redo(std::int64_t token_mark, std::int64_t horizon);
// Log until when no lock will be granted, if that is in the future.
void lockext_durable_report();

// lockext's custom WAL resource manager id (src/durable_wal.cpp), from the
// range PostgreSQL leaves to extensions (128-255; 128 is for experiments).
constexpr int kLockextRmgrId = 171;
// Register the resource manager (from _PG_init, while preloading).
void lockext_wal_register();
// Log new durable marks and wait until they are flushed (and, with
// synchronous replication, on the synchronous standbys).
void lockext_wal_log_durable(std::int64_t token_mark, std::int64_t horizon);
// Log a grant of a lease-scope lock (not flushed; src/durable_wal.cpp).
void lockext_wal_log_grant(const lockext::Key &key, const lockext::Request &req, std::int64_t token,
                           std::int64_t expires_at);
// Log a renewal of lease `token` of `key` until `expires_at`.
void lockext_wal_log_renew(const lockext::Key &key, std::int64_t token, std::int64_t renewed_at,
                           std::int64_t expires_at);
// Log a release of lease `token` of `key` (0: every holder, force_release).
void lockext_wal_log_release(const lockext::Key &key, std::int64_t token);
// Raise 25006 when this server is in recovery (a standby): locks are
// granted and renewed only on a primary. `what` names the call.
void lockext_refuse_in_recovery(const char *what);
