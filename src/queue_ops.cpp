// The hot paths of the job queues: enqueue, dequeue and complete.
//
// Why C and not PL/pgSQL: a statement on lockext.jobs (or on one queue's
// table) is planned over every partition it might touch, and a generic plan
// locks and initialises all of them on every execution: with ten queues of
// eight partitions, a one-row DELETE opened 88 tables and their indexes. Here
// every statement that changes a job names the one leaf partition that holds
// it, through a plan prepared once per backend and leaf:
//  - a job id carries its leaf: id = nextval(job_id_seq) * kIdStride + the
//    hash remainder of its key, so complete and the dequeue's update go
//    straight to the leaf (ids still rise in enqueue order, and all jobs of a
//    key share one leaf);
//  - enqueue computes the remainder with the partition key's own hash
//    support function, exactly as tuple routing does;
//  - only the ready-job scan and the due/expired probe read the queue's
//    whole table, as scans (no result relations to open).
// The rules are those of the SQL in sql/lockext--0.1.0.sql (one ready,
// delayed or running job per key, at the head of the key's line), which the
// rare paths (lease expiry, delayed promotion, retries) still use.
//
// PER-KEY LOCKING PROTOCOL
//   Every change to which job heads a key's line (enqueue of a keyed job,
//   the finish of a key's head by completion or death, redrive) runs under
//   the key lock: an ExclusiveLock in PostgreSQL's lock manager on
//   (database, 64-bit hash of queue and key), transaction scope, tagged
//   kKeyLockTag so it never meets a user's advisory lock. Several keys are
//   locked in hash order. Above the key locks is the queue lock (same
//   scope, kQueueLockTag, hash of the queue name): a call takes it in
//   ShareLock mode right after the key locks it took, and before it reads
//   or changes the keys' lines. Once a transaction's key locks would pass
//   key_lock_budget() (only keys it does not hold yet count), it takes the
//   queue lock in ExclusiveLock mode instead, which stands for every key
//   lock of the queue, and takes no more key locks there: every other
//   writer of the queue's lines is then either done with its call (it
//   holds the ShareLock: we wait for its commit) or will wait for the
//   ShareLock before it reads a line (it may hold the key lock meanwhile,
//   which we no longer need). So a bulk transaction holds a bounded number
//   of locks and cannot fill the server's lock table; it serialises with
//   the queue's other writers instead. The ShareLock comes after the keys
//   so that a writer waiting for one of the escalating transaction's keys
//   holds no ShareLock it waits for; a transaction that took the ShareLock
//   in an earlier call and waits for such a key in a later one can still
//   close a cycle (40P01, as key locks taken across calls in opposite
//   orders can). Row locks on running jobs (the DELETE of a
//   finished job) are taken before its key lock; a waiting job's row is
//   locked only under its key lock (promotion). While holding the key lock,
//   a transaction reads the key's jobs with the latest snapshot, not its
//   own: it then sees everything committed by the key's previous lock
//   holders, at every isolation level.
//
// Bodies keep only plain data on the stack (include/lockext/pg_guard.hpp):
// SPI and ereport may longjmp through them.
extern "C" {
#include "postgres.h"

#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "common/int.h"
#include "commands/sequence.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "partitioning/partbounds.h"
#include "partitioning/partdesc.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/partcache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"
}

#include <algorithm>

#include "lockext/pg_guard.hpp"
#include "lockext/queue_notify.hpp"

namespace {

// Job ids leave room for the leaf's remainder (create_queue allows up to
// 1024 partitions).
constexpr int64 kIdStride = 1024;
constexpr const char *kSchema = "lockext";

// Statements with a cached plan; each is prepared per relation it names.
enum Stmt : int {
    kInsert,       // queue table: insert one unkeyed job (routing beats a leaf's constraint check)
    kInsertKeyed,  // queue table: insert a keyed job, waiting if its leaf has others of the key
    kProbe,        // queue table: any delayed job due, any running lease expired?
    kReady,        // queue table: pick ready jobs, row-locked
    kTake,         // leaf: lease the picked jobs
    kDelete,       // leaf: complete one job by id and token
    kLockMany,     // leaf: lock jobs of a batch in id order
    kDeleteMany,   // leaf: complete a batch's jobs by id and token
    kKeysBusy,     // leaf: which of these keys have live jobs
    kInsertMany,   // queue table: insert a batch of prepared jobs
    kPromoteMany,  // leaf: make each listed key's next job ready
    kExpired,      // SQL: _dequeue_expired(queue, n, lease, worker)
    kPromoteDue,   // SQL: _promote_delayed(queue)
    kPurgeDead,    // dead_jobs: delete a dropped queue's dead jobs
    kStmtCount
};

// A cached plan's identity: the statement and the relation (or queue) it names.
struct PlanKey {
    int stmt;
    char rel[NAMEDATALEN];
};

struct PlanEntry {
    PlanKey key;
    SPIPlanPtr plan;
};

// Backend-local plans, kept for the session. Plans are parsed by relation
// name, so when a queue is dropped and created again the plan cache re-plans
// them against the new tables.
HTAB *plans = nullptr;

// The SQL of each statement; %s is the quoted relation name where it has one.
const char *stmt_sql(int stmt) {
    switch (stmt) {
        case kInsert:
            return "INSERT INTO lockext.%s (queue, id, key, payload, state, run_at, priority, "
                   "max_attempts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
        case kInsertKeyed:
            // %1$s is the key's leaf, %2$s the queue table. Run with the
            // latest snapshot under the key lock: see the protocol above.
            return "INSERT INTO lockext.%2$s (queue, id, key, payload, state, run_at, priority, "
                   "max_attempts) SELECT $1, $2, $3, $4, CASE WHEN EXISTS (SELECT 1 FROM "
                   "lockext.%1$s w WHERE w.key = $3) THEN 'waiting' ELSE $5 END, $6, $7, $8";
        case kProbe:
            return "SELECT EXISTS (SELECT 1 FROM lockext.%1$s d WHERE d.state = 'delayed' "
                   "AND d.run_at <= now()), EXISTS (SELECT 1 FROM lockext.%1$s e "
                   "WHERE e.state = 'running' AND e.lease_expires_at <= now())";
        case kReady:
            return "SELECT r.id FROM lockext.%s r WHERE r.state = 'ready' AND r.run_at <= now() "
                   "ORDER BY r.priority DESC, r.id LIMIT $1 FOR UPDATE SKIP LOCKED";
        // Statements that find jobs by id test their state against a
        // sub-select, not a literal: the planner can then not match it to a
        // partial index's predicate (state = 'running', 'ready'). With
        // churned statistics (a bloated leaf analysed when it held a few
        // live rows) it otherwise reads that whole partial index, dead
        // entries and all, instead of looking the ids up: a batch complete
        // took 70-220 ms instead of 7 ms after a 1,000,000-job churn.
        case kTake:
            return "UPDATE lockext.%s j SET state = 'running', attempt = j.attempt + 1, "
                   "token = nextval('lockext.job_token_seq'::regclass), "
                   "lease_expires_at = clock_timestamp() + $2, worker = $3 "
                   "WHERE j.id = ANY ($1) AND j.state = (SELECT 'ready'::text) "
                   "RETURNING j.id, j.key, j.payload, j.attempt, j.token, j.enqueued_at, "
                   "j.lease_expires_at";
        case kDelete:
            return "DELETE FROM lockext.%s j WHERE j.id = $1 AND j.token = $2 "
                   "AND j.state = (SELECT 'running'::text) RETURNING j.key";
        case kLockMany:
            return "SELECT 1 FROM lockext.%s j WHERE j.id = ANY ($1) "
                   "AND j.state = (SELECT 'running'::text) ORDER BY j.id FOR UPDATE";
        case kDeleteMany:
            return "DELETE FROM lockext.%s j WHERE j.id = ANY ($1) "
                   "AND j.state = (SELECT 'running'::text) AND (j.id, j.token) IN (SELECT d.id, "
                   "d.token FROM unnest($1, $2) AS d(id, "
                   "token)) RETURNING j.key, j.id";
        case kKeysBusy:
            return "SELECT DISTINCT w.key FROM lockext.%s w WHERE w.key = ANY ($1)";
        case kInsertMany:
            return "INSERT INTO lockext.%s (queue, id, key, payload, state, run_at, priority, "
                   "max_attempts) SELECT $1, u.id, u.key, u.payload, u.state, u.run_at, "
                   "u.priority, u.max_attempts FROM unnest($2, $3, $4, $5, $6, $7, $8) "
                   "AS u(id, key, payload, state, run_at, priority, max_attempts)";
        case kPromoteMany:
            // Each key's next job is its earliest after the one just
            // finished (`after`): that one was the key's head (only a head
            // runs), so every live job of the key comes after it. Starting
            // the scan there also steps over the dead entries of the key's
            // finished jobs, which after heavy churn outnumber its live ones
            // until vacuum. The next row after (key, after) in (key, id)
            // order is found with a row comparison and no equality on the
            // key (an equality would make the key a constant of the order):
            // that order only the (key, id) index gives, so the planner
            // cannot pick the id index and filter on the key, reading every
            // later job of the leaf. The row found belongs to the key or the
            // key has no next job. The heads are found first (an InitPlan),
            // then updated by id.
            return "UPDATE lockext.%1$s j "
                   "SET state = CASE WHEN j.run_at > now() THEN 'delayed' ELSE 'ready' END "
                   "WHERE j.id = ANY (ARRAY(SELECT head.id FROM unnest($1, $2) AS ks(key, after) "
                   "CROSS JOIN LATERAL (SELECT w.id, w.key, w.state FROM lockext.%1$s w "
                   "WHERE w.key IS NOT NULL AND (w.key, w.id) > (ks.key, ks.after) "
                   "ORDER BY w.key, w.id LIMIT 1) head "
                   "WHERE head.key = ks.key AND head.state = 'waiting')) AND j.state = 'waiting'";
        case kExpired:
            return "SELECT * FROM lockext._dequeue_expired($1, $2, $3, $4)";
        case kPromoteDue:
            return "SELECT lockext._promote_delayed($1)";
        case kPurgeDead:
            return "DELETE FROM lockext.dead_jobs d WHERE d.queue = $1";
    }
    elog(ERROR, "lockext: unknown queue statement %d", stmt);
    return nullptr;
}

// Parameter types of each statement.
int stmt_params(int stmt, Oid *types) {
    switch (stmt) {
        case kInsert:
        case kInsertKeyed:
            types[0] = TEXTOID;
            types[1] = INT8OID;
            types[2] = TEXTOID;
            types[3] = JSONBOID;
            types[4] = TEXTOID;
            types[5] = TIMESTAMPTZOID;
            types[6] = INT4OID;
            types[7] = INT4OID;
            return 8;
        case kProbe:
            return 0;
        case kReady:
            types[0] = INT4OID;
            return 1;
        case kTake:
            types[0] = INT8ARRAYOID;
            types[1] = INTERVALOID;
            types[2] = TEXTOID;
            return 3;
        case kDelete:
            types[0] = INT8OID;
            types[1] = INT8OID;
            return 2;
        case kLockMany:
            types[0] = INT8ARRAYOID;
            return 1;
        case kDeleteMany:
            types[0] = INT8ARRAYOID;
            types[1] = INT8ARRAYOID;
            return 2;
        case kKeysBusy:
            types[0] = TEXTARRAYOID;
            return 1;
        case kInsertMany:
            types[0] = TEXTOID;
            types[1] = INT8ARRAYOID;
            types[2] = TEXTARRAYOID;
            types[3] = JSONBARRAYOID;
            types[4] = TEXTARRAYOID;
            types[5] = TIMESTAMPTZARRAYOID;
            types[6] = INT4ARRAYOID;
            types[7] = INT4ARRAYOID;
            return 8;
        case kPromoteMany:
            types[0] = TEXTARRAYOID;
            types[1] = INT8ARRAYOID;
            return 2;
        case kExpired:
            types[0] = TEXTOID;
            types[1] = INT4OID;
            types[2] = INTERVALOID;
            types[3] = TEXTOID;
            return 4;
        case kPromoteDue:
        case kPurgeDead:
            types[0] = TEXTOID;
            return 1;
    }
    return 0;
}

// The session's plan for `stmt` on relation `rel` (NULL: none), preparing it
// on first use. Call inside SPI_connect.
SPIPlanPtr plan_for(int stmt, const char *rel) {
    if (plans == nullptr) {
        HASHCTL ctl;
        ctl.keysize = sizeof(PlanKey);
        ctl.entrysize = sizeof(PlanEntry);
        ctl.hcxt = TopMemoryContext;
        plans = hash_create("lockext queue plans", 64, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
    }
    PlanKey key;
    memset(&key, 0, sizeof(key));
    key.stmt = stmt;
    if (rel != nullptr)
        strlcpy(key.rel, rel, sizeof(key.rel));
    auto *entry = static_cast<PlanEntry *>(hash_search(plans, &key, HASH_FIND, nullptr));
    if (entry != nullptr)
        return entry->plan;

    const char *sql = stmt_sql(stmt);
    if (rel != nullptr) {
        // A leaf's queue table is its name up to the '$' (which queue names
        // cannot contain); statements name the leaf as %s or %1$s and the
        // queue table as %2$s.
        char *table = pstrdup(rel);
        if (char *dollar = strchr(table, '$'))
            *dollar = '\0';
        sql = psprintf(sql, quote_identifier(rel), quote_identifier(table));
    }
    Oid types[8];
    int nargs = stmt_params(stmt, types);
    // Generic from the start: queue tables churn faster than statistics
    // follow, and every statement is an index lookup on its leaf.
    SPIPlanPtr plan = SPI_prepare_cursor(sql, nargs, types, CURSOR_OPT_GENERIC_PLAN);
    if (plan == nullptr)
        elog(ERROR, "lockext: could not prepare queue statement: %s",
             SPI_result_code_string(SPI_result));
    if (SPI_keepplan(plan) != 0)
        elog(ERROR, "lockext: could not keep queue statement");
    entry = static_cast<PlanEntry *>(hash_search(plans, &key, HASH_ENTER, nullptr));
    entry->plan = plan;
    return entry->plan;
}

// Run a cached statement; `nulls` as for SPI_execute_plan (NULL: none null).
int run(int stmt, const char *rel, Datum *values, const char *nulls, long limit = 0) {
    int rc = SPI_execute_plan(plan_for(stmt, rel), values, nulls, false, limit);
    if (rc < 0)
        elog(ERROR, "lockext: queue statement failed: %s", SPI_result_code_string(rc));
    return rc;
}

// Run a cached statement with the latest snapshot: under a key lock, the
// key's jobs must be read as its previous lock holders committed them, even
// when the transaction's own snapshot is older (REPEATABLE READ).
int run_latest(int stmt, const char *rel, Datum *values, const char *nulls) {
    int rc = SPI_execute_snapshot(plan_for(stmt, rel), values, nulls, GetLatestSnapshot(),
                                  InvalidSnapshot, false, true, 0);
    if (rc < 0)
        elog(ERROR, "lockext: queue statement failed: %s", SPI_result_code_string(rc));
    return rc;
}

// Column `col` (1-based) of result row `row` of the last statement.
Datum result(int row, int col, bool *isnull) {
    return SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, isnull);
}

// Raise 22023 with `message` unless `ok`.
void check(bool ok, const char *message) {
    if (!ok)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("%s", message)));
}

// Cap on leases and retry delays: now() plus any of them stays a valid timestamp.
constexpr int32 kMaxSpanYears = 1000;

// Raise 22023 unless `what` is positive (zero too if zero_ok) and under the cap, in
// total and in each field: with mixed signs, now() + span can overflow midway.
void check_span(bool isnull, Datum span, const char *what, bool zero_ok) {
    Interval zero, cap;
    memset(&zero, 0, sizeof(zero));
    memset(&cap, 0, sizeof(cap));
    cap.month = kMaxSpanYears * MONTHS_PER_YEAR;
    int sign =
        isnull ? -1
               : DatumGetInt32(DirectFunctionCall2(interval_cmp, span, IntervalPGetDatum(&zero)));
    if (sign < 0 || (sign == 0 && !zero_ok))
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg(zero_ok ? "%s must not be negative" : "%s must be positive", what)));
    const Interval *iv = DatumGetIntervalP(span);
    const int64 max_days = static_cast<int64>(kMaxSpanYears) * 366;
    const int64 max_us = static_cast<int64>(kMaxSpanYears) * SECS_PER_YEAR * USECS_PER_SEC;
    if (DatumGetInt32(DirectFunctionCall2(interval_cmp, span, IntervalPGetDatum(&cap))) >= 0 ||
        iv->month <= -cap.month || iv->month >= cap.month || iv->day <= -max_days ||
        iv->day >= max_days || iv->time <= -max_us || iv->time >= max_us)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("%s must be less than %d years", what, kMaxSpanYears)));
}

// Argument `n` as the queue name, NULL-checked.
char *queue_arg(FunctionCallInfo fcinfo, int n) {
    if (PG_ARGISNULL(n))
        ereport(ERROR,
                (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("queue name must not be NULL")));
    return text_to_cstring(PG_GETARG_TEXT_PP(n));
}

// The queue's table name ("queue_<name>"); NULL when the name cannot be a queue.
char *queue_table(const char *queue) {
    if (strlen(queue) > 40)
        return nullptr;
    return psprintf("queue_%s", queue);
}

// The queue's table, locked AccessShare; raises 42704 when there is no such queue.
Oid open_queue(const char *queue) {
    char *table = queue_table(queue);
    Oid nsp = get_namespace_oid(kSchema, false);
    // lockext.jobs first, as the planner and DROP TABLE of a queue lock a
    // parent before its partitions: a call that goes on to the SQL paths on
    // lockext.jobs must not hold the queue's table while drop_queue holds jobs.
    Oid jobs = get_relname_relid("jobs", nsp);
    if (OidIsValid(jobs))
        LockRelationOid(jobs, AccessShareLock);
    Oid relid = table == nullptr ? InvalidOid : get_relname_relid(table, nsp);
    if (OidIsValid(relid)) {
        LockRelationOid(relid, AccessShareLock);
        // Dropped while we waited for the lock?
        if (get_rel_relkind(relid) != RELKIND_PARTITIONED_TABLE)
            relid = InvalidOid;
    }
    if (!OidIsValid(relid))
        ereport(ERROR,
                (errcode(ERRCODE_UNDEFINED_OBJECT), errmsg("queue \"%s\" does not exist", queue),
                 errhint("Create it with lockext.create_queue().")));
    return relid;
}

// A new job id for a job in leaf `rem`: the next value of job_id_seq times
// kIdStride plus rem. Raises 22003 instead of wrapping into negative ids.
int64 next_job_id(Oid seq, int64 rem) {
    int64 id;
    if (pg_mul_s64_overflow(nextval_internal(seq, true), kIdStride, &id) ||
        pg_add_s64_overflow(id, rem, &id))
        ereport(ERROR, (errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
                        errmsg("lockext.job_id_seq is past the largest job id"),
                        errhint("Job ids are its value times %d; reset it with setval().",
                                static_cast<int>(kIdStride))));
    return id;
}

// The name of the leaf partition holding remainder `rem` of a queue.
char *leaf_name(const char *queue, int64 rem) {
    return psprintf("queue_%s$" INT64_FORMAT, queue, rem);
}

// The hash remainders of `n` keys in the queue table `relid` (NULL keys
// where nulls[i]): the leaves tuple routing would choose, computed with the
// partition key's own support function.
void remainders_of(Oid relid, const Datum *keys, const bool *nulls, int n, int64 *out) {
    Relation rel = table_open(relid, NoLock);
    PartitionKey pk = RelationGetPartitionKey(rel);
    PartitionDesc pd = RelationGetPartitionDesc(rel, true);
    if (pk == nullptr || pk->strategy != PARTITION_STRATEGY_HASH || pk->partnatts != 1 ||
        pd->nparts < 1)
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("queue table \"%s\" is not hash-partitioned by key",
                               RelationGetRelationName(rel))));
    uint64 modulus = static_cast<uint64>(get_hash_partition_greatest_modulus(pd->boundinfo));
    for (int i = 0; i < n; i++) {
        Datum key = keys[i];
        bool key_null = nulls != nullptr && nulls[i];
        uint64 hash =
            compute_partition_hash_value(1, pk->partsupfunc, pk->partcollation, &key, &key_null);
        out[i] = static_cast<int64>(hash % modulus);
    }
    table_close(rel, NoLock);
}

// The hash remainder of one key; see remainders_of.
int64 remainder_of(Oid relid, Datum key, bool key_null) {
    int64 rem;
    remainders_of(relid, &key, &key_null, 1, &rem);
    return rem;
}

// The tag in field 4 of key locks: PostgreSQL's own advisory locks use 1 and 2.
constexpr uint16 kKeyLockTag = 0x4c51;

// The key lock's identity: a 64-bit hash of the queue name and the key.
uint64 key_hash(const char *queue, Datum key) {
    text *k = DatumGetTextPP(key);
    uint64 h = hash_bytes_extended(reinterpret_cast<const unsigned char *>(queue),
                                   static_cast<int>(strlen(queue)), 0);
    return hash_combine64(
        h, hash_bytes_extended(reinterpret_cast<const unsigned char *>(VARDATA_ANY(k)),
                               static_cast<int>(VARSIZE_ANY_EXHDR(k)), 0));
}

// Order of key hashes (the order key locks are taken in).
int compare_hash(const void *a, const void *b) {
    uint64 x = *static_cast<const uint64 *>(a), y = *static_cast<const uint64 *>(b);
    return x < y ? -1 : x > y ? 1 : 0;
}

// The tag in field 4 of queue locks, the parents of its key locks.
constexpr uint16 kQueueLockTag = 0x4c52;

// How many key locks one transaction takes before it locks whole queues
// instead: a sixteenth of the server's lock table, at least 64. Both
// settings are fixed at server start.
int64 key_lock_budget() {
    return std::max<int64>(64, static_cast<int64>(max_locks_per_xact) * MaxBackends / 16);
}

// Key locks taken by the current top-level transaction (an upper bound: a
// rolled-back subtransaction's count stays, which only escalates sooner).
LocalTransactionId key_locks_xact = InvalidLocalTransactionId;
int64 key_locks_taken = 0;

// Take the key locks of `n` keys of `queue` (NULL keys skipped), in hash
// order so that transactions locking overlapping sets cannot deadlock; held
// to the end of the transaction. Past the budget, the queue's lock in
// ExclusiveLock mode stands for all its keys. See the protocol at the top.
void lock_keys(const char *queue, const Datum *keys, const bool *nulls, int n) {
    const uint64 qh = hash_bytes_extended(reinterpret_cast<const unsigned char *>(queue),
                                          static_cast<int>(strlen(queue)), 0);
    LOCKTAG queue_tag;
    SET_LOCKTAG_ADVISORY(queue_tag, MyDatabaseId, static_cast<uint32>(qh >> 32),
                         static_cast<uint32>(qh), kQueueLockTag);
    if (LockHeldByMe(&queue_tag, ExclusiveLock))
        return;  // escalated earlier in this transaction: every key is ours
    uint64 *hashes = static_cast<uint64 *>(palloc(sizeof(uint64) * (n + 1)));
    int m = 0;
    for (int i = 0; i < n; i++)
        if (nulls == nullptr || !nulls[i])
            hashes[m++] = key_hash(queue, keys[i]);
    qsort(hashes, m, sizeof(uint64), compare_hash);
    // The keys this transaction does not hold yet, in hash order.
    int fresh = 0;
    for (int i = 0; i < m; i++) {
        if (i > 0 && hashes[i] == hashes[i - 1])
            continue;
        LOCKTAG tag;
        SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, static_cast<uint32>(hashes[i] >> 32),
                             static_cast<uint32>(hashes[i]), kKeyLockTag);
        if (!LockHeldByMe(&tag, ExclusiveLock))
            hashes[fresh++] = hashes[i];
    }
    if (fresh == 0) {
        pfree(hashes);
        return;
    }
    if (key_locks_xact != MyProc->lxid) {
        key_locks_xact = MyProc->lxid;
        key_locks_taken = 0;
    }
    if (key_locks_taken + fresh > key_lock_budget()) {
        (void)LockAcquire(&queue_tag, ExclusiveLock, false, false);
        pfree(hashes);
        return;
    }
    for (int i = 0; i < fresh; i++) {
        LOCKTAG tag;
        SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, static_cast<uint32>(hashes[i] >> 32),
                             static_cast<uint32>(hashes[i]), kKeyLockTag);
        (void)LockAcquire(&tag, ExclusiveLock, false, false);
    }
    // After the keys: a writer waiting for a key of a transaction that
    // escalates must not hold the ShareLock that transaction waits for.
    (void)LockAcquire(&queue_tag, ShareLock, false, false);
    key_locks_taken += fresh;
    pfree(hashes);
}

// Pin the settings every queue statement is planned under (the functions'
// SET clauses did this in SQL); returns the GUC nest level to pop.
int pin_settings() {
    int level = NewGUCNestLevel();
    (void)set_config_option("search_path", "pg_catalog, pg_temp", PGC_USERSET, PGC_S_SESSION,
                            GUC_ACTION_SAVE, true, 0, false);
    (void)set_config_option("enable_seqscan", "off", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
                            true, 0, false);
    // Every statement here is an index lookup or a short range on one key;
    // with churned statistics the planner otherwise picks bitmap scans over
    // the id index that read every later job of the partition.
    (void)set_config_option("enable_bitmapscan", "off", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
                            true, 0, false);
    return level;
}

// Enqueue one job; see lockext.enqueue.
Datum enqueue_impl(FunctionCallInfo fcinfo) {
    char *queue = queue_arg(fcinfo, 0);
    if (PG_ARGISNULL(1))
        ereport(ERROR,
                (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("payload must not be NULL")));
    bool key_null = PG_ARGISNULL(2);
    Datum key = key_null ? (Datum)0 : PG_GETARG_DATUM(2);
    TimestampTz now = GetCurrentTransactionStartTimestamp();
    TimestampTz run_at = PG_ARGISNULL(3) ? now : PG_GETARG_TIMESTAMPTZ(3);
    int32 priority = PG_ARGISNULL(4) ? 0 : PG_GETARG_INT32(4);
    check(!PG_ARGISNULL(5) && PG_GETARG_INT32(5) >= 1, "max_attempts must be at least 1");
    int32 max_attempts = PG_GETARG_INT32(5);

    Oid relid = open_queue(queue);
    int64 rem = remainder_of(relid, key, key_null);
    int level = pin_settings();
    SPI_connect();

    Datum qtext = CStringGetTextDatum(queue);
    // The key lock comes before the id, so a key's ids rise in lock order.
    if (!key_null)
        lock_keys(queue, &key, nullptr, 1);
    Oid seq = get_relname_relid("job_id_seq", get_namespace_oid(kSchema, false));
    int64 id = next_job_id(seq, rem);
    // The state unless the key has other jobs (then 'waiting', decided by the insert).
    const char *state = run_at > now ? "delayed" : "ready";
    Datum args[8] = {qtext,
                     Int64GetDatum(id),
                     key,
                     PG_GETARG_DATUM(1),
                     CStringGetTextDatum(state),
                     TimestampTzGetDatum(run_at),
                     Int32GetDatum(priority),
                     Int32GetDatum(max_attempts)};
    char nulls[8] = {' ', ' ', key_null ? 'n' : ' ', ' ', ' ', ' ', ' ', ' '};
    if (key_null)
        run(kInsert, queue_table(queue), args, nulls);
    else
        run_latest(kInsertKeyed, leaf_name(queue, rem), args, nulls);

    SPI_finish();
    AtEOXact_GUC(true, level);
    lockext_notify_after_commit(queue);
    PG_RETURN_INT64(id);
}

// Order of picked jobs: by leaf, then id (the order the leaves are updated in).
int compare_pick(const void *a, const void *b) {
    const int64 *x = static_cast<const int64 *>(a);
    const int64 *y = static_cast<const int64 *>(b);
    int64 rx = x[0] % kIdStride, ry = y[0] % kIdStride;
    if (rx != ry)
        return rx < ry ? -1 : 1;
    return x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0;
}

// How often a busy backend looks for due delayed jobs and lapsed leases
// even when ready jobs are plentiful. The look costs an index probe per
// partition and state; an idle queue (a dequeue that comes up short) always
// looks at once, so this only bounds how late a busy queue re-delivers.
constexpr int64 kRarePathIntervalUs = 100 * 1000;
// When this backend last looked (its own clock), and at which queue.
TimestampTz last_rare_path = 0;
char last_rare_queue[NAMEDATALEN];

// What one dequeue call works with: plain data, shared by its steps.
struct DequeueCall {
    const char *queue;
    const char *table;
    Datum qtext;
    int32 batch;
    int taken;
    Datum lease;
    Datum worker;
    bool worker_null;
    Tuplestorestate *out;
};

// The rare paths: make due delayed jobs ready, and re-lease (or bury) jobs
// whose lease ran out, adding them to the result. True if any delayed job
// became ready.
bool dequeue_rare_paths(DequeueCall *call) {
    bool isnull;
    last_rare_path = GetCurrentTimestamp();
    strlcpy(last_rare_queue, call->queue, sizeof(last_rare_queue));
    run(kProbe, call->table, nullptr, nullptr);
    bool due = DatumGetBool(result(0, 1, &isnull));
    bool expired = DatumGetBool(result(0, 2, &isnull));
    if (due) {
        Datum args[1] = {call->qtext};
        run(kPromoteDue, nullptr, args, nullptr);
    }
    if (expired && call->taken < call->batch) {
        Datum args[4] = {call->qtext, Int32GetDatum(call->batch - call->taken), call->lease,
                         call->worker};
        char nulls[4] = {' ', ' ', ' ', call->worker_null ? 'n' : ' '};
        run(kExpired, nullptr, args, nulls);
        for (uint64 i = 0; i < SPI_processed; i++)
            tuplestore_puttuple(call->out, SPI_tuptable->vals[i]);
        call->taken += static_cast<int>(SPI_processed);
    }
    return due;
}

// Lease ready jobs, by priority then id, up to the batch; each leaf's picks
// are updated by one statement, and the rows are returned in pick order.
void dequeue_ready(DequeueCall *call) {
    bool isnull;
    Datum args[1] = {Int32GetDatum(call->batch - call->taken)};
    run(kReady, call->table, args, nullptr);
    int n = static_cast<int>(SPI_processed);
    // picks[2i] = id, picks[2i+1] = its rank in dequeue order.
    int64 *picks = static_cast<int64 *>(palloc(sizeof(int64) * 2 * (n + 1)));
    for (int i = 0; i < n; i++) {
        picks[2 * i] = DatumGetInt64(result(i, 1, &isnull));
        picks[2 * i + 1] = i;
    }
    qsort(picks, n, sizeof(int64) * 2, compare_pick);
    HeapTuple *rows = static_cast<HeapTuple *>(palloc0(sizeof(HeapTuple) * (n + 1)));
    Datum *ids = static_cast<Datum *>(palloc(sizeof(Datum) * (n + 1)));
    int start = 0;
    while (start < n) {
        int64 rem = picks[2 * start] % kIdStride;
        int end = start;
        while (end < n && picks[2 * end] % kIdStride == rem) {
            ids[end - start] = Int64GetDatum(picks[2 * end]);
            end++;
        }
        ArrayType *arr = construct_array(ids, end - start, INT8OID, 8, true, TYPALIGN_DOUBLE);
        Datum targs[3] = {PointerGetDatum(arr), call->lease, call->worker};
        char tnulls[3] = {' ', ' ', call->worker_null ? 'n' : ' '};
        run(kTake, leaf_name(call->queue, rem), targs, tnulls);
        // Match each updated row back to its rank.
        for (uint64 r = 0; r < SPI_processed; r++) {
            int64 id = DatumGetInt64(result(static_cast<int>(r), 1, &isnull));
            for (int p = start; p < end; p++)
                if (picks[2 * p] == id) {
                    rows[picks[2 * p + 1]] = SPI_tuptable->vals[r];
                    break;
                }
        }
        start = end;
    }
    for (int i = 0; i < n; i++)
        if (rows[i] != nullptr) {
            tuplestore_puttuple(call->out, rows[i]);
            call->taken++;
        }
}

// Take up to `batch` jobs; see lockext.dequeue.
Datum dequeue_impl(FunctionCallInfo fcinfo) {
    DequeueCall call;
    call.queue = queue_arg(fcinfo, 0);
    check(!PG_ARGISNULL(1) && PG_GETARG_INT32(1) >= 1, "batch must be at least 1");
    call.batch = PG_GETARG_INT32(1);
    check_span(PG_ARGISNULL(2), PG_GETARG_DATUM(2), "lease", false);
    call.lease = PG_GETARG_DATUM(2);
    call.worker_null = PG_ARGISNULL(3);
    call.worker = call.worker_null ? (Datum)0 : PG_GETARG_DATUM(3);
    call.taken = 0;

    InitMaterializedSRF(fcinfo, 0);
    call.out = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo)->setResult;
    (void)open_queue(call.queue);
    call.table = queue_table(call.queue);
    int level = pin_settings();
    SPI_connect();
    call.qtext = CStringGetTextDatum(call.queue);

    // Lapsed leases go first when it is time to look; otherwise only when
    // the ready jobs do not fill the batch.
    bool looked = GetCurrentTimestamp() - last_rare_path >= kRarePathIntervalUs ||
                  strcmp(last_rare_queue, call.queue) != 0;
    if (looked)
        (void)dequeue_rare_paths(&call);
    if (call.taken < call.batch)
        dequeue_ready(&call);
    if (!looked && call.taken < call.batch && dequeue_rare_paths(&call) && call.taken < call.batch)
        dequeue_ready(&call);

    SPI_finish();
    AtEOXact_GUC(true, level);
    return (Datum)0;
}

// Finish one job; see lockext.complete(queue, id, token).
Datum complete_impl(FunctionCallInfo fcinfo) {
    char *queue = queue_arg(fcinfo, 0);
    Oid relid = open_queue(queue);
    (void)relid;
    if (PG_ARGISNULL(1) || PG_ARGISNULL(2))
        PG_RETURN_BOOL(false);
    int64 id = PG_GETARG_INT64(1);
    if (id <= 0)
        PG_RETURN_BOOL(false);
    char *leaf = leaf_name(queue, id % kIdStride);
    // A stale id from a queue that had more partitions before it was recreated.
    if (!OidIsValid(get_relname_relid(leaf, get_namespace_oid(kSchema, false))))
        PG_RETURN_BOOL(false);

    int level = pin_settings();
    SPI_connect();
    bool done = false, promoted = false, isnull;
    Datum args[2] = {Int64GetDatum(id), PG_GETARG_DATUM(2)};
    run(kDelete, leaf, args, nullptr);
    if (SPI_processed > 0) {
        done = true;
        Datum key = result(0, 1, &isnull);
        if (!isnull) {
            key = PointerGetDatum(PG_DETOAST_DATUM_COPY(key));
            lock_keys(queue, &key, nullptr, 1);
            Datum id_datum = Int64GetDatum(id);
            Datum pargs[2] = {
                PointerGetDatum(construct_array(&key, 1, TEXTOID, -1, false, TYPALIGN_INT)),
                PointerGetDatum(construct_array(&id_datum, 1, INT8OID, 8, true, TYPALIGN_DOUBLE))};
            run_latest(kPromoteMany, leaf, pargs, nullptr);
            promoted = SPI_processed > 0;
        }
    }
    SPI_finish();
    AtEOXact_GUC(true, level);
    if (promoted)
        lockext_notify_after_commit(queue);
    PG_RETURN_BOOL(done);
}

// The elements of a bigint[] argument (NULL elements become 0, which no job has).
int int8_elements(FunctionCallInfo fcinfo, int n, int64 **out) {
    ArrayType *arr = PG_GETARG_ARRAYTYPE_P(n);
    Datum *elems;
    bool *nulls;
    int count;
    deconstruct_array(arr, INT8OID, 8, true, TYPALIGN_DOUBLE, &elems, &nulls, &count);
    *out = static_cast<int64 *>(palloc(sizeof(int64) * (count + 1)));
    for (int i = 0; i < count; i++)
        (*out)[i] = nulls[i] ? 0 : DatumGetInt64(elems[i]);
    return count;
}

// Finish many jobs; see lockext.complete(queue, ids, tokens).
Datum complete_many_impl(FunctionCallInfo fcinfo) {
    char *queue = queue_arg(fcinfo, 0);
    Oid relid = open_queue(queue);
    (void)relid;
    if (PG_ARGISNULL(1) || PG_ARGISNULL(2)) {
        check(PG_ARGISNULL(1) && PG_ARGISNULL(2), "ids and tokens must both be given");
        PG_RETURN_INT32(0);
    }
    int64 *ids, *tokens;
    int n = int8_elements(fcinfo, 1, &ids);
    int m = int8_elements(fcinfo, 2, &tokens);
    if (n != m)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("ids has %d elements but tokens has %d", n, m)));
    // pairs[2i] = id, pairs[2i+1] = token; sorted by leaf, then id, so
    // concurrent batches lock the same rows in the same order.
    int64 *pairs = static_cast<int64 *>(palloc(sizeof(int64) * 2 * (n + 1)));
    int valid = 0;
    for (int i = 0; i < n; i++)
        if (ids[i] > 0) {
            pairs[2 * valid] = ids[i];
            pairs[2 * valid + 1] = tokens[i];
            valid++;
        }
    qsort(pairs, valid, sizeof(int64) * 2, compare_pick);

    int level = pin_settings();
    SPI_connect();
    Oid nsp = get_namespace_oid(kSchema, false);
    Datum *id_datums = static_cast<Datum *>(palloc(sizeof(Datum) * (valid + 1)));
    Datum *tok_datums = static_cast<Datum *>(palloc(sizeof(Datum) * (valid + 1)));
    // keys[i] is the key of a finished job, key_ids[i] its id, key_rem[i] its leaf.
    Datum *keys = static_cast<Datum *>(palloc(sizeof(Datum) * (valid + 1)));
    Datum *key_ids = static_cast<Datum *>(palloc(sizeof(Datum) * (valid + 1)));
    int64 *key_rem = static_cast<int64 *>(palloc(sizeof(int64) * (valid + 1)));
    int nkeys = 0, done = 0, start = 0;
    bool isnull;
    while (start < valid) {
        int64 rem = pairs[2 * start] % kIdStride;
        int end = start;
        while (end < valid && pairs[2 * end] % kIdStride == rem) {
            id_datums[end - start] = Int64GetDatum(pairs[2 * end]);
            tok_datums[end - start] = Int64GetDatum(pairs[2 * end + 1]);
            end++;
        }
        char *leaf = leaf_name(queue, rem);
        if (OidIsValid(get_relname_relid(leaf, nsp))) {
            ArrayType *a_ids =
                construct_array(id_datums, end - start, INT8OID, 8, true, TYPALIGN_DOUBLE);
            ArrayType *a_toks =
                construct_array(tok_datums, end - start, INT8OID, 8, true, TYPALIGN_DOUBLE);
            Datum args[2] = {PointerGetDatum(a_ids), PointerGetDatum(a_toks)};
            run(kLockMany, leaf, args, nullptr);
            run(kDeleteMany, leaf, args, nullptr);
            done += static_cast<int>(SPI_processed);
            for (uint64 r = 0; r < SPI_processed; r++) {
                Datum key = result(static_cast<int>(r), 1, &isnull);
                if (!isnull) {
                    key_rem[nkeys] = rem;
                    key_ids[nkeys] = result(static_cast<int>(r), 2, &isnull);
                    keys[nkeys++] = PointerGetDatum(PG_DETOAST_DATUM_COPY(key));
                }
            }
        }
        start = end;
    }
    if (nkeys > 0) {
        // Lock the finished jobs' keys (in hash order), then free each key's
        // next job, leaf by leaf (keys were collected in leaf order).
        lock_keys(queue, keys, nullptr, nkeys);
        bool promoted = false;
        for (int k = 0; k < nkeys;) {
            int e = k;
            while (e < nkeys && key_rem[e] == key_rem[k])
                e++;
            ArrayType *leaf_keys =
                construct_array(keys + k, e - k, TEXTOID, -1, false, TYPALIGN_INT);
            ArrayType *leaf_ids =
                construct_array(key_ids + k, e - k, INT8OID, 8, true, TYPALIGN_DOUBLE);
            Datum pargs[2] = {PointerGetDatum(leaf_keys), PointerGetDatum(leaf_ids)};
            run_latest(kPromoteMany, leaf_name(queue, key_rem[k]), pargs, nullptr);
            promoted |= SPI_processed > 0;
            k = e;
        }
        if (promoted)
            lockext_notify_after_commit(queue);
    }
    SPI_finish();
    AtEOXact_GUC(true, level);
    PG_RETURN_INT32(done);
}

// The non-NULL elements of text[] argument `n`, detoasted, in *out; returns the count.
int text_elements(FunctionCallInfo fcinfo, int n, Datum **out) {
    if (PG_ARGISNULL(n)) {
        *out = nullptr;
        return 0;
    }
    Datum *elems;
    bool *nulls;
    int count;
    deconstruct_array(PG_GETARG_ARRAYTYPE_P(n), TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls,
                      &count);
    *out = static_cast<Datum *>(palloc(sizeof(Datum) * (count + 1)));
    int m = 0;
    for (int i = 0; i < count; i++)
        if (!nulls[i])
            (*out)[m++] = PointerGetDatum(PG_DETOAST_DATUM(elems[i]));
    return m;
}

// Run `stmt` (taking a text[] of keys, then optionally a bigint[] of zeros)
// on each leaf for the keys that hash to it, with the latest snapshot.
// Calls `each` after each leaf's statement; returns the rows it produced.
template <typename Each>
uint64 per_leaf(const char *queue, Oid relid, int stmt, Datum *keys, int n, Each each) {
    int64 *rems = static_cast<int64 *>(palloc(sizeof(int64) * (n + 1)));
    bool *done = static_cast<bool *>(palloc0(sizeof(bool) * (n + 1)));
    Datum *group = static_cast<Datum *>(palloc(sizeof(Datum) * (n + 1)));
    Datum *zeros = static_cast<Datum *>(palloc(sizeof(Datum) * (n + 1)));
    for (int i = 0; i < n; i++) {
        rems[i] = remainder_of(relid, keys[i], false);
        zeros[i] = Int64GetDatum(0);
    }
    uint64 rows = 0;
    for (int i = 0; i < n; i++) {
        if (done[i])
            continue;
        int g = 0;
        for (int j = i; j < n; j++)
            if (!done[j] && rems[j] == rems[i]) {
                group[g++] = keys[j];
                done[j] = true;
            }
        ArrayType *a_keys = construct_array(group, g, TEXTOID, -1, false, TYPALIGN_INT);
        ArrayType *a_zeros = construct_array(zeros, g, INT8OID, 8, true, TYPALIGN_DOUBLE);
        Datum args[2] = {PointerGetDatum(a_keys), PointerGetDatum(a_zeros)};
        run_latest(stmt, leaf_name(queue, rems[i]), args, nullptr);
        rows += SPI_processed;
        each();
    }
    return rows;
}

// Jobs of these keys have left the jobs table (completed elsewhere, or
// dead): lock the keys and make each key's earliest job ready if it waits;
// see lockext._free_keys.
Datum free_keys_impl(FunctionCallInfo fcinfo) {
    char *queue = queue_arg(fcinfo, 0);
    Oid relid = open_queue(queue);
    Datum *keys;
    int n = text_elements(fcinfo, 1, &keys);
    lock_keys(queue, keys, nullptr, n);
    int level = pin_settings();
    SPI_connect();
    uint64 promoted = per_leaf(queue, relid, kPromoteMany, keys, n, [] {});
    SPI_finish();
    AtEOXact_GUC(true, level);
    if (promoted > 0)
        lockext_notify_after_commit(queue);
    PG_RETURN_VOID();
}

// Order of batch rows by key bytes, then position (for finding each key's
// first job of the batch).
struct KeyRow {
    const char *key;
    int len;
    int index;
};

// KeyRow order: key bytes, then length, then index.
int compare_key_row(const void *a, const void *b) {
    const KeyRow *x = static_cast<const KeyRow *>(a), *y = static_cast<const KeyRow *>(b);
    int c = memcmp(x->key, y->key, Min(x->len, y->len));
    if (c != 0)
        return c;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index ? 1 : 0;
}

// Element i of an optional array argument's deconstructed values.
struct OptionalArray {
    Datum *values = nullptr;
    bool *nulls = nullptr;
    int count = 0;

    // Whether element i is present (the array is given, long enough, not NULL there).
    bool has(int i) const {
        return values != nullptr && i < count && !nulls[i];
    }
};

// Deconstruct argument `n` (an array of `type`) if it is not NULL.
OptionalArray optional_array(FunctionCallInfo fcinfo, int n, Oid type, int16 len, bool byval,
                             char align) {
    OptionalArray a;
    if (!PG_ARGISNULL(n))
        deconstruct_array(PG_GETARG_ARRAYTYPE_P(n), type, len, byval, align, &a.values, &a.nulls,
                          &a.count);
    return a;
}

// Insert jobs in array order (ids rise in that order); a keyed job waits
// when its key has live jobs or an earlier job in the batch. The keys are
// locked first, so a key's ids rise in lock order. See lockext._insert_jobs.
Datum insert_jobs_impl(FunctionCallInfo fcinfo) {
    char *queue = queue_arg(fcinfo, 0);
    Oid relid = open_queue(queue);
    if (PG_ARGISNULL(1))
        ereport(ERROR,
                (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("payloads must not be NULL")));
    OptionalArray payloads = optional_array(fcinfo, 1, JSONBOID, -1, false, TYPALIGN_INT);
    OptionalArray keys = optional_array(fcinfo, 2, TEXTOID, -1, false, TYPALIGN_INT);
    OptionalArray run_ats = optional_array(fcinfo, 3, TIMESTAMPTZOID, 8, true, TYPALIGN_DOUBLE);
    OptionalArray priorities = optional_array(fcinfo, 4, INT4OID, 4, true, TYPALIGN_INT);
    OptionalArray attempts = optional_array(fcinfo, 5, INT4OID, 4, true, TYPALIGN_INT);
    int n = payloads.count;
    if (keys.values != nullptr && keys.count != n)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("keys has %d elements but payloads has %d", keys.count, n)));
    for (int i = 0; i < n; i++)
        if (payloads.nulls[i])
            ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                            errmsg("payload %d must not be NULL", i + 1)));

    // Keys: detoasted, NULL where absent; each key's first row in the batch.
    Datum *key = static_cast<Datum *>(palloc0(sizeof(Datum) * (n + 1)));
    bool *key_null = static_cast<bool *>(palloc(sizeof(bool) * (n + 1)));
    KeyRow *rows = static_cast<KeyRow *>(palloc(sizeof(KeyRow) * (n + 1)));
    Datum *distinct = static_cast<Datum *>(palloc(sizeof(Datum) * (n + 1)));
    bool *first = static_cast<bool *>(palloc0(sizeof(bool) * (n + 1)));
    int nkeyed = 0, ndistinct = 0;
    for (int i = 0; i < n; i++) {
        key_null[i] = !keys.has(i);
        if (key_null[i])
            continue;
        key[i] = PointerGetDatum(PG_DETOAST_DATUM_PACKED(keys.values[i]));
        rows[nkeyed++] = {VARDATA_ANY(key[i]), static_cast<int>(VARSIZE_ANY_EXHDR(key[i])), i};
    }
    qsort(rows, nkeyed, sizeof(KeyRow), compare_key_row);
    for (int r = 0; r < nkeyed; r++)
        if (r == 0 || rows[r].len != rows[r - 1].len ||
            memcmp(rows[r].key, rows[r - 1].key, rows[r].len) != 0) {
            first[rows[r].index] = true;
            distinct[ndistinct++] = key[rows[r].index];
        }
    lock_keys(queue, distinct, nullptr, ndistinct);

    int level = pin_settings();
    MemoryContext outer = CurrentMemoryContext;
    SPI_connect();
    // Which keys already have live jobs (read under the key locks, latest snapshot).
    bool *busy = static_cast<bool *>(MemoryContextAllocZero(outer, sizeof(bool) * (n + 1)));
    (void)per_leaf(queue, relid, kKeysBusy, distinct, ndistinct, [&] {
        bool isnull;
        for (uint64 r = 0; r < SPI_processed; r++) {
            text *k = DatumGetTextPP(result(static_cast<int>(r), 1, &isnull));
            KeyRow probe = {VARDATA_ANY(k), static_cast<int>(VARSIZE_ANY_EXHDR(k)), -1};
            // The first row of this key sorts right after the probe (index -1).
            int lo = 0, hi = nkeyed;
            while (lo < hi) {
                int mid = (lo + hi) / 2;
                if (compare_key_row(&rows[mid], &probe) < 0)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            if (lo < nkeyed && compare_key_row(&rows[lo], &probe) > 0 &&
                rows[lo].len == probe.len && memcmp(rows[lo].key, probe.key, probe.len) == 0)
                busy[rows[lo].index] = true;
        }
    });

    int64 *rems = static_cast<int64 *>(palloc(sizeof(int64) * (n + 1)));
    remainders_of(relid, key, key_null, n, rems);
    Oid seq = get_relname_relid("job_id_seq", get_namespace_oid(kSchema, false));
    TimestampTz now = GetCurrentTransactionStartTimestamp();
    // The ids are returned after SPI_finish: keep them in the caller's context.
    Datum *ids = static_cast<Datum *>(MemoryContextAlloc(outer, sizeof(Datum) * (n + 1)));
    Datum *states = static_cast<Datum *>(palloc(sizeof(Datum) * (n + 1)));
    Datum *when = static_cast<Datum *>(palloc(sizeof(Datum) * (n + 1)));
    Datum *prio = static_cast<Datum *>(palloc(sizeof(Datum) * (n + 1)));
    Datum *maxa = static_cast<Datum *>(palloc(sizeof(Datum) * (n + 1)));
    Datum waiting = CStringGetTextDatum("waiting"), delayed = CStringGetTextDatum("delayed"),
          ready = CStringGetTextDatum("ready");
    for (int i = 0; i < n; i++) {
        ids[i] = Int64GetDatum(next_job_id(seq, rems[i]));
        TimestampTz run_at = run_ats.has(i) ? DatumGetTimestampTz(run_ats.values[i]) : now;
        when[i] = TimestampTzGetDatum(run_at);
        prio[i] = priorities.has(i) ? priorities.values[i] : Int32GetDatum(0);
        maxa[i] = attempts.has(i) ? attempts.values[i] : Int32GetDatum(5);
        check(DatumGetInt32(maxa[i]) >= 1, "max_attempts must be at least 1");
        bool waits = !key_null[i] && (!first[i] || busy[i]);
        states[i] = waits ? waiting : run_at > now ? delayed : ready;
    }
    int lbound = 1;
    Datum args[8] = {
        CStringGetTextDatum(queue),
        PointerGetDatum(construct_array(ids, n, INT8OID, 8, true, TYPALIGN_DOUBLE)),
        PointerGetDatum(
            construct_md_array(key, key_null, 1, &n, &lbound, TEXTOID, -1, false, TYPALIGN_INT)),
        PointerGetDatum(construct_array(payloads.values, n, JSONBOID, -1, false, TYPALIGN_INT)),
        PointerGetDatum(construct_array(states, n, TEXTOID, -1, false, TYPALIGN_INT)),
        PointerGetDatum(construct_array(when, n, TIMESTAMPTZOID, 8, true, TYPALIGN_DOUBLE)),
        PointerGetDatum(construct_array(prio, n, INT4OID, 4, true, TYPALIGN_INT)),
        PointerGetDatum(construct_array(maxa, n, INT4OID, 4, true, TYPALIGN_INT))};
    if (n > 0)
        run(kInsertMany, queue_table(queue), args, nullptr);
    SPI_finish();
    AtEOXact_GUC(true, level);
    if (n > 0)
        lockext_notify_after_commit(queue);

    InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
    Tuplestorestate *out = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo)->setResult;
    TupleDesc desc = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo)->setDesc;
    for (int i = 0; i < n; i++) {
        bool isnull = false;
        tuplestore_putvalues(out, desc, &ids[i], &isnull);
    }
    return (Datum)0;
}

// A job id for `key` in `queue` (its leaf's remainder in the low digits); see
// the id rules at the top of this file. Used by the SQL that inserts jobs.
Datum job_id_impl(FunctionCallInfo fcinfo) {
    char *queue = queue_arg(fcinfo, 0);
    Oid relid = open_queue(queue);
    bool key_null = PG_ARGISNULL(1);
    int64 rem = remainder_of(relid, key_null ? (Datum)0 : PG_GETARG_DATUM(1), key_null);
    Oid seq = get_relname_relid("job_id_seq", get_namespace_oid(kSchema, false));
    PG_RETURN_INT64(next_job_id(seq, rem));
}

// Delete the dead jobs of a queue that no longer exists, reading them with
// the latest snapshot: drop_queue's DROP TABLE has waited for every
// transaction that could bury a job of the queue, but at REPEATABLE READ its
// own snapshot would miss the rows they committed (they would then outlive
// the queue and come back with a new queue of the same name).
Datum purge_dead_jobs_impl(FunctionCallInfo fcinfo) {
    char *queue = queue_arg(fcinfo, 0);
    char *table = queue_table(queue);
    if (table != nullptr && OidIsValid(get_relname_relid(table, get_namespace_oid(kSchema, false))))
        ereport(ERROR, (errcode(ERRCODE_OBJECT_IN_USE), errmsg("queue \"%s\" still exists", queue),
                        errhint("Use lockext.drop_queue() to drop a queue.")));
    int level = pin_settings();
    SPI_connect();
    Datum args[1] = {CStringGetTextDatum(queue)};
    run_latest(kPurgeDead, nullptr, args, nullptr);
    SPI_finish();
    AtEOXact_GUC(true, level);
    PG_RETURN_VOID();
}

// dequeue's interval checks, for the SQL functions (extend, fail).
Datum check_interval_impl(FunctionCallInfo fcinfo) {
    check(!PG_ARGISNULL(1) && !PG_ARGISNULL(2), "what and zero_ok must not be NULL");
    check_span(PG_ARGISNULL(0), PG_GETARG_DATUM(0), text_to_cstring(PG_GETARG_TEXT_PP(1)),
               PG_GETARG_BOOL(2));
    PG_RETURN_VOID();
}

}  // namespace

LOCKEXT_SQL_FUNCTION(check_interval)
LOCKEXT_SQL_FUNCTION(purge_dead_jobs)
LOCKEXT_SQL_FUNCTION(enqueue)
LOCKEXT_SQL_FUNCTION(dequeue)
LOCKEXT_SQL_FUNCTION(complete)
LOCKEXT_SQL_FUNCTION(complete_many)
LOCKEXT_SQL_FUNCTION(job_id)
LOCKEXT_SQL_FUNCTION(free_keys)
LOCKEXT_SQL_FUNCTION(insert_jobs)
