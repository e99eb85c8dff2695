// The job queues' state machine: enqueue, dequeue, complete, fail, extend,
// requeue, and the rare paths (due delayed jobs, lapsed leases, burial).
//
// A JOB IS A ROW; A RUNNING JOB IS A LEASE. The jobs table holds what must
// survive anything: the job, its attempt count so far, and whether it may
// run now ('ready') or from run_at on ('delayed'). That a job is running
// lives only in the lock table in shared memory (src/lock_table.cpp): a
// lease named after the job's key (lockext.q/<queue>/k/<key>, or /h/<hash>
// for a key too long for a lock name) or, for a job without a key, after
// its id (lockext.q/<queue>/j/<id>). The lease carries the job's id, and its
// fencing token is the job's token. So dequeue writes nothing durable on
// its common path, and the lock core's crash rules cover jobs: tokens never
// repeat, and after a restart no lease (so no job) is handed out before
// every lease granted before it has expired.
//
// Per-key order. The jobs of a key share one lease name, so at most one of
// them runs at a time; dequeue takes a job only when it is its key's head,
// the live job with the lowest id (the recheck, below). A key whose head is
// delayed (a retry in backoff, a job scheduled for later) holds back the
// jobs behind it. Ids rise in the order enqueues take them, so jobs of a key
// run in enqueue order when its enqueues do not overlap in time; of two
// concurrent uncommitted enqueues the first to commit may run first.
//
// DEQUEUE PROTOCOL (no row locks: rows are read, never locked, by dequeue)
//  1. Scan a leaf's ready jobs in (priority DESC, id) order with the latest
//     snapshot (through the ready index directly, src/queue_scan.cpp: an
//     SPI statement's executor start-up cost more than the scan).
//  2. For each row whose key this call has not met yet, try its lease in
//     the lock table without waiting, as a pending lease (Pending::granted:
//     the transaction's abort releases it, its commit keeps it).
//  3. Recheck the granted rows with a new latest snapshot taken after the
//     grants (the (key, id) index, or the id index for an unkeyed job): the row is still there,
//     still ready, and no earlier live job of its key exists. A job finished by a commit is gone
//     for any snapshot taken after its lease was released (complete releases at commit, after the
//     commit is visible: see lock_shmem.cpp), so a finished job is never handed out again. Rows
//     failing the recheck give their lease back at once.
//  4. Return the rest with attempt + 1 and the lease's token and expiry.
//
// FINISHING (complete, fail, requeue): the job's row is read by id, the
// lease is marked finishing by this transaction in the lock table (it then
// cannot expire before the transaction ends, so no other worker takes the
// job meanwhile), the row is deleted or updated, and the lease is released
// at commit (restored at abort). A token finishes only the job it was
// handed out for: the lease's job id must match.
//
// ATTEMPTS. A row's attempt counts finished or lapsed deliveries. A
// delivery is counted when it fails (fail writes attempt + 1) or, when its
// lease ran out unfinished, by the next dequeue that takes the lease's name:
// the lock table keeps an expired job lease until its name is acquired
// again, and reports its job (Result::lapsed_job), whose count that dequeue
// raises (burying the job when that was its last attempt). A server restart
// forgets running leases: a job that was running then is delivered again
// with the same attempt number.
//
// Lock order: table_lock (the lock table) is taken only around calls into
// the lock core, never while running SQL; row locks are taken only by the
// finishing statements (on rows whose lease this transaction is finishing,
// so they never wait on each other) and by the rare paths.
//
// Why C: each statement names the one leaf partition that holds its job,
// through a plan prepared once per backend and leaf (a statement on the
// queue table would open every partition). A job id carries its leaf:
// id = nextval(job_id_seq) * kIdStride + the hash remainder of its key, as
// tuple routing computes it with the partition key's support function.
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

#include "lockext/lock_shmem.hpp"
#include "lockext/pg_guard.hpp"
#include "lockext/queue_notify.hpp"
#include "lockext/queue_scan.hpp"

using lockext::Key;
using lockext::LockTable;
using lockext::Outcome;
using lockext::Request;
using lockext::leaf::JobRow;
using lockext::leaf::LeafRel;
using lockext::leaf::ReadyScan;

namespace {

// Job ids leave room for the leaf's remainder (create_queue allows up to
// 1024 partitions).
constexpr int64 kIdStride = 1024;
constexpr const char *kSchema = "lockext";
// Lease names of jobs start with this; acquire() refuses it to users.
constexpr const char *kLeasePrefix = "lockext.q/";

// Statements with a cached plan; each is prepared per relation it names.
enum Stmt : int {
    kInsert,      // leaf: insert one job
    kInsertMany,  // queue table: insert a batch of jobs
    kLapse,       // leaf: count a lapsed delivery; true when it was the last attempt
    kBury,        // leaf: move a job to dead_jobs
    kFind,        // leaf: a job's key and attempts, by id
    kDelete,      // leaf: delete a job by id
    kDeleteMany,  // leaf: delete jobs by ids
    kRetry,       // leaf: a failed job waits for its retry
    kProbe,       // queue table: is any delayed job due?
    kPromoteDue,  // queue table: due delayed jobs become ready
    kPurgeDead,   // dead_jobs: delete a dropped queue's dead jobs
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

// The SQL of each statement; %1$s is the quoted leaf, %2$s the queue table.
const char *stmt_sql(int stmt) {
    switch (stmt) {
        case kInsert:
            return "INSERT INTO lockext.%1$s (queue, id, key, payload, state, run_at, priority, "
                   "max_attempts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
        case kInsertMany:
            return "INSERT INTO lockext.%1$s (queue, id, key, payload, state, run_at, priority, "
                   "max_attempts) SELECT $1, u.id, u.key, u.payload, u.state, u.run_at, "
                   "u.priority, u.max_attempts FROM unnest($2, $3, $4, $5, $6, $7, $8) "
                   "AS u(id, key, payload, state, run_at, priority, max_attempts)";
        // Statements that find jobs by id test their state against a
        // sub-select, not a literal: the planner can then not match it to
        // the partial ready index's predicate. With churned statistics (a
        // bloated leaf analysed when it held a few live rows) it otherwise
        // reads that whole index, dead entries and all, instead of looking
        // the ids up.
        case kLapse:
            return "UPDATE lockext.%1$s j SET attempt = j.attempt + 1 WHERE j.id = $1 "
                   "AND j.state = (SELECT 'ready'::text) RETURNING j.attempt >= j.max_attempts";
        case kBury:
            return "WITH gone AS (DELETE FROM lockext.%1$s j WHERE j.id = $1 RETURNING j.*) "
                   "INSERT INTO lockext.dead_jobs (queue, id, key, payload, priority, attempt, "
                   "max_attempts, last_error, enqueued_at) SELECT g.queue, g.id, g.key, "
                   "g.payload, g.priority, g.attempt + $3, g.max_attempts, "
                   "coalesce($2, g.last_error), g.enqueued_at FROM gone g";
        case kFind:
            return "SELECT j.key, j.attempt, j.max_attempts FROM lockext.%1$s j WHERE j.id = $1 "
                   "AND j.state = (SELECT 'ready'::text)";
        case kDelete:
            return "DELETE FROM lockext.%1$s j WHERE j.id = $1";
        case kDeleteMany:
            return "DELETE FROM lockext.%1$s j WHERE j.id = ANY ($1)";
        case kRetry:
            return "UPDATE lockext.%1$s j SET state = 'delayed', attempt = j.attempt + 1, "
                   "last_error = $2, run_at = now() + coalesce($3, "
                   "lockext.backoff(j.attempt + 1)) WHERE j.id = $1";
        case kProbe:
            return "SELECT EXISTS (SELECT 1 FROM lockext.%1$s d WHERE d.state = 'delayed' "
                   "AND d.run_at <= now())";
        case kPromoteDue:
            return "UPDATE lockext.%1$s j SET state = 'ready' WHERE j.id = ANY (ARRAY("
                   "SELECT d.id FROM lockext.%1$s d WHERE d.state = 'delayed' "
                   "AND d.run_at <= now() ORDER BY d.run_at LIMIT 1000 FOR UPDATE SKIP LOCKED)) "
                   "AND j.state = (SELECT 'delayed'::text)";
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
            types[0] = TEXTOID;
            types[1] = INT8OID;
            types[2] = TEXTOID;
            types[3] = JSONBOID;
            types[4] = TEXTOID;
            types[5] = TIMESTAMPTZOID;
            types[6] = INT4OID;
            types[7] = INT4OID;
            return 8;
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
        case kProbe:
        case kPromoteDue:
            return 0;
        case kDeleteMany:
            types[0] = INT8ARRAYOID;
            return 1;
        case kLapse:
        case kFind:
        case kDelete:
            types[0] = INT8OID;
            return 1;
        case kBury:
            types[0] = INT8OID;
            types[1] = TEXTOID;
            types[2] = INT4OID;
            return 3;
        case kRetry:
            types[0] = INT8OID;
            types[1] = TEXTOID;
            types[2] = INTERVALOID;
            return 3;
        case kPurgeDead:
            types[0] = TEXTOID;
            return 1;
    }
    return 0;
}

// Backend-local plans, kept for the session. Plans are parsed by relation
// name, so when a queue is dropped and created again the plan cache re-plans
// them against the new tables.
HTAB *plans = nullptr;

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

// Run a cached statement with the latest snapshot: after taking a job's
// lease, its key's jobs must be read as the lease's previous holders
// committed them, even when the transaction's own snapshot is older
// (REPEATABLE READ) or the statement's was taken before the lease.
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
    if (isnull)
        ereport(ERROR,
                (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("%s must not be NULL", what)));
    Interval zero, cap;
    memset(&zero, 0, sizeof(zero));
    memset(&cap, 0, sizeof(cap));
    cap.month = kMaxSpanYears * MONTHS_PER_YEAR;
    int sign = DatumGetInt32(DirectFunctionCall2(interval_cmp, span, IntervalPGetDatum(&zero)));
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

// Pin the settings every queue statement is planned under; returns the GUC
// nest level to pop.
int pin_settings() {
    int level = NewGUCNestLevel();
    (void)set_config_option("search_path", "pg_catalog, pg_temp", PGC_USERSET, PGC_S_SESSION,
                            GUC_ACTION_SAVE, true, 0, false);
    (void)set_config_option("enable_seqscan", "off", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
                            true, 0, false);
    // Every statement here is an index lookup or an ordered index scan; with
    // churned statistics the planner otherwise picks bitmap scans that read
    // every later job of the partition.
    (void)set_config_option("enable_bitmapscan", "off", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
                            true, 0, false);
    return level;
}

// Raise 2202E unless array argument `n` (named `what`) has at most one dimension.
void check_one_dimension(FunctionCallInfo fcinfo, int n, const char *what) {
    if (PG_ARGISNULL(n))
        return;
    if (ARR_NDIM(PG_GETARG_ARRAYTYPE_P(n)) > 1)
        ereport(ERROR, (errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
                        errmsg("%s must be a one-dimensional array", what)));
}

// Raise 22004 when argument `n` (named `what`) is NULL.
void require_arg(FunctionCallInfo fcinfo, int n, const char *what) {
    if (PG_ARGISNULL(n))
        ereport(ERROR,
                (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("%s must not be NULL", what)));
}

// Raise 22008 unless `t` is a finite timestamp (what = the argument's name).
void check_finite(TimestampTz t, const char *what) {
    if (TIMESTAMP_NOT_FINITE(t))
        ereport(ERROR, (errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
                        errmsg("%s must be a finite timestamp", what),
                        errdetail("A job whose run_at is infinite would never run.")));
}

// A job lease's TTL in microseconds: the lease argument, checked against the
// lock core's limit (lockext.max_ttl), since a job's lease is a lock lease.
int64 lease_us(bool isnull, Datum lease) {
    check_span(isnull, lease, "lease", false);
    const Interval *iv = DatumGetIntervalP(lease);
    const __int128 us = static_cast<__int128>(iv->time) +
                        static_cast<__int128>(iv->day) * USECS_PER_DAY +
                        static_cast<__int128>(iv->month) * DAYS_PER_MONTH * USECS_PER_DAY;
    if (us > static_cast<__int128>(lockext_max_ttl_s) * USECS_PER_SEC)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("lease must not exceed lockext.max_ttl (%d s)", lockext_max_ttl_s)));
    return static_cast<int64>(us);
}

// Room for a lease name and its NUL.
struct LeaseName {
    char name[lockext::kMaxNameLen + 1];
    int len;
};

// The lease name of a job: its key's, or (no key) its id's; see the top.
void lease_name(const char *queue, const text *key, int64 id, LeaseName *out) {
    if (key == nullptr) {
        out->len =
            snprintf(out->name, sizeof(out->name), "%s%s/j/" INT64_FORMAT, kLeasePrefix, queue, id);
        return;
    }
    const int klen = static_cast<int>(VARSIZE_ANY_EXHDR(key));
    const int fixed = static_cast<int>(strlen(kLeasePrefix) + strlen(queue)) + 3;
    if (fixed + klen <= lockext::kMaxNameLen) {
        out->len = snprintf(out->name, sizeof(out->name), "%s%s/k/", kLeasePrefix, queue);
        memcpy(out->name + out->len, VARDATA_ANY(key), klen);
        out->len += klen;
        out->name[out->len] = '\0';
        return;
    }
    // Too long for a lock name: two different keys then share a lease only
    // if their 64-bit hashes collide (they run one at a time, nothing worse).
    const uint64 h = hash_bytes_extended(reinterpret_cast<const unsigned char *>(VARDATA_ANY(key)),
                                         klen, 0x6c6f636b);
    out->len = snprintf(out->name, sizeof(out->name), "%s%s/h/%016llx", kLeasePrefix, queue,
                        static_cast<unsigned long long>(h));
}

// The lock-table key of a lease name in this database.
Key lease_key(const LeaseName &n) {
    Key k;
    k.dboid = MyDatabaseId;
    k.name = n.name;
    k.len = n.len;
    return k;
}

// The prefix of the lease names of `queue`'s jobs ("lockext.q/<queue>/").
struct LeasePrefix {
    char text[NAMEDATALEN + 16];
    int len;
};

// Fill `p` with the lease name prefix of `queue`.
void lease_prefix(const char *queue, LeasePrefix *p) {
    p->len = snprintf(p->text, sizeof(p->text), "%s%s/", kLeasePrefix, queue);
}

// LEAF GENERATIONS. A dequeue that finds no free job in a leaf remembers the
// leaf's generation (LockextShared::leaf_gen, locking protocol in
// src/lock_shmem.cpp) and skips the leaf while it stands, for at most
// kResumeUs (a lease running out frees a job without any event). Whatever
// may free a job of a leaf bumps its generation once its transaction has
// committed and released its leases: enqueue, complete, fail, requeue, the
// burial of a lapsed job, the promotion of due delayed jobs, and a dequeue
// that rolls back. Several leaves may share a generation (4096 of them):
// that costs a needless rescan, never a missed job.
constexpr int kLeafGens = 4096;
constexpr int kTouchedMax = 64;
struct Touched {
    int gen;          // index into leaf_gen
    bool abort_only;  // bump only if the transaction aborts
};
Touched touched[kTouchedMax];
int ntouched = 0;
bool touched_all = false;  // more leaves than fit: bump every generation

// The generation slot of leaf `rem` of `queue` in this database.
int leaf_gen_index(const char *queue, int64 rem) {
    uint32 h =
        hash_bytes(reinterpret_cast<const unsigned char *>(queue), static_cast<int>(strlen(queue)));
    h = hash_combine(h, MyDatabaseId);
    h = hash_combine(h, static_cast<uint32>(rem));
    return static_cast<int>(h % kLeafGens);
}

// The current generation of leaf `rem`.
uint32 leaf_gen(const char *queue, int64 rem) {
    return pg_atomic_read_u32(&lockext_shared->leaf_gen[leaf_gen_index(queue, rem)]);
}

// Bump leaf `rem`'s generation when this transaction ends (only if it
// aborts, for `abort_only`).
void touch_leaf(const char *queue, int64 rem, bool abort_only) {
    if (lockext_shared == nullptr)
        return;
    const int g = leaf_gen_index(queue, rem);
    for (int i = 0; i < ntouched; i++)
        if (touched[i].gen == g) {
            touched[i].abort_only &= abort_only;
            return;
        }
    lockext_note_queue_xact();
    if (ntouched == kTouchedMax) {
        touched_all = true;
        return;
    }
    touched[ntouched++] = {g, abort_only};
}

// Mark the leases of jobs `ids` of `queue` finishing in this transaction
// (found by job id in the lock table); ok[i] says whether tokens[i] held
// job i's lease. Returns whether any finished lease was a key's.
bool finish_jobs(const char *queue, const int64 *ids, const int64 *tokens, int n, bool *ok) {
    LeasePrefix prefix;
    lease_prefix(queue, &prefix);
    bool any_keyed = false;
    lockext_note_pending_leases();
    LWLockAcquire(lockext_shared->table_lock, LW_EXCLUSIVE);
    const TimestampTz now = GetCurrentTimestamp();
    LockTable *t = lockext_shared->table;
    for (int i = 0; i < n; i++) {
        bool keyed = false;
        ok[i] = t->finish_job(MyDatabaseId, ids[i], tokens[i], prefix.text, prefix.len, now,
                              MyProcPid, MyProc->pgprocno, &keyed)
                    .outcome == Outcome::granted;
        any_keyed |= ok[i] && keyed;
    }
    LWLockRelease(lockext_shared->table_lock);
    return any_keyed;
}

// Enqueue one job; see lockext.enqueue.
Datum enqueue_impl(FunctionCallInfo fcinfo) {
    char *queue = queue_arg(fcinfo, 0);
    require_arg(fcinfo, 1, "payload");
    bool key_null = PG_ARGISNULL(2);
    Datum key = key_null ? (Datum)0 : PG_GETARG_DATUM(2);
    TimestampTz now = GetCurrentTransactionStartTimestamp();
    TimestampTz run_at = PG_ARGISNULL(3) ? now : PG_GETARG_TIMESTAMPTZ(3);
    check_finite(run_at, "run_at");
    int32 priority = PG_ARGISNULL(4) ? 0 : PG_GETARG_INT32(4);
    require_arg(fcinfo, 5, "max_attempts");
    check(PG_GETARG_INT32(5) >= 1, "max_attempts must be at least 1");
    int32 max_attempts = PG_GETARG_INT32(5);

    Oid relid = open_queue(queue);
    int64 rem = remainder_of(relid, key, key_null);
    int level = pin_settings();
    SPI_connect();
    Oid seq = get_relname_relid("job_id_seq", get_namespace_oid(kSchema, false));
    int64 id = next_job_id(seq, rem);
    Datum args[8] = {CStringGetTextDatum(queue),
                     Int64GetDatum(id),
                     key,
                     PG_GETARG_DATUM(1),
                     CStringGetTextDatum(run_at > now ? "delayed" : "ready"),
                     TimestampTzGetDatum(run_at),
                     Int32GetDatum(priority),
                     Int32GetDatum(max_attempts)};
    char nulls[8] = {' ', ' ', key_null ? 'n' : ' ', ' ', ' ', ' ', ' ', ' '};
    run(kInsert, leaf_name(queue, rem), args, nulls);
    touch_leaf(queue, rem, false);
    SPI_finish();
    AtEOXact_GUC(true, level);
    lockext_notify_after_commit(queue);
    PG_RETURN_INT64(id);
}

// How often a busy backend looks for due delayed jobs even when ready jobs
// are plentiful. The look costs an index probe per partition; a dequeue that
// comes up short always looks at once, so this only bounds how late a busy
// queue starts a retry or a scheduled job.
constexpr int64 kRarePathIntervalUs = 100 * 1000;
// When this backend last looked (its own clock), and at which queue.
TimestampTz last_rare_path = 0;
char last_rare_queue[NAMEDATALEN];

// Make due delayed jobs of the queue ready; true if any became ready.
bool promote_due(const char *table, const char *queue, int nparts) {
    bool isnull;
    last_rare_path = GetCurrentTimestamp();
    strlcpy(last_rare_queue, queue, sizeof(last_rare_queue));
    run(kProbe, table, nullptr, nullptr);
    if (!DatumGetBool(result(0, 1, &isnull)))
        return false;
    run(kPromoteDue, table, nullptr, nullptr);
    if (SPI_processed == 0)
        return false;
    for (int rem = 0; rem < nparts; rem++)
        touch_leaf(queue, rem, false);
    return true;
}

// What one dequeue call works with: plain data, shared by its steps.
struct DequeueCall {
    const char *queue;
    int32 batch;
    int taken;
    int64 lease_us;
    const text *worker;  // NULL: none
    Tuplestorestate *out;
    TupleDesc desc;
    HTAB *seen;  // lease names met in this call (taken, busy or not a head)
};

// A name met in this call.
struct SeenName {
    char name[lockext::kMaxNameLen + 1];
};

// Whether this call has met lease `n` already; records it.
bool seen_before(DequeueCall *call, const LeaseName &n) {
    bool found;
    SeenName probe;
    memset(&probe, 0, sizeof(probe));
    memcpy(probe.name, n.name, n.len);
    (void)hash_search(call->seen, &probe, HASH_ENTER, &found);
    return found;
}

// A lapsed delivery of job `job` (its lease ran out unfinished) is counted;
// a job that has had its last attempt is buried.
void count_lapsed(const char *queue, int64 job) {
    bool isnull;
    char *leaf = leaf_name(queue, job % kIdStride);
    Datum args[3] = {Int64GetDatum(job), CStringGetTextDatum("lease expired"), Int32GetDatum(0)};
    run_latest(kLapse, leaf, args, nullptr);
    if (SPI_processed > 0 && DatumGetBool(result(0, 1, &isnull))) {
        run_latest(kBury, leaf, args, nullptr);
        touch_leaf(queue, job % kIdStride, false);
    }
}

// Candidates of one scan chunk: rows whose lease this call tries.
struct Candidates {
    int n;
    int64 *ids;
    int32 *prios;
    bool *handed;  // set by deliver: a job went out under this candidate's lease
    Datum *keys;   // (Datum) 0 for no key
    LeaseName *names;
    int64 *tokens;         // when granted
    TimestampTz *expires;  // when granted
    int64 *lapsed;         // per row: a lapsed job reported by its acquire, or 0
    bool *granted;
};

// Room in `c` for `n` candidates (the old arrays are left to the call's
// memory context).
void alloc_candidates(Candidates *c, long n) {
    c->ids = static_cast<int64 *>(palloc(sizeof(int64) * n));
    c->prios = static_cast<int32 *>(palloc(sizeof(int32) * n));
    c->handed = static_cast<bool *>(palloc(sizeof(bool) * n));
    c->keys = static_cast<Datum *>(palloc(sizeof(Datum) * n));
    c->names = static_cast<LeaseName *>(palloc(sizeof(LeaseName) * n));
    c->tokens = static_cast<int64 *>(palloc(sizeof(int64) * n));
    c->expires = static_cast<TimestampTz *>(palloc(sizeof(TimestampTz) * n));
    c->lapsed = static_cast<int64 *>(palloc(sizeof(int64) * n));
    c->granted = static_cast<bool *>(palloc(sizeof(bool) * n));
}

// Try the leases of the candidates in one hold of the table lock, until
// `want` are granted; sets c->n to how many were tried. Raises 53400 when
// the lock table is full (the transaction's abort then releases what this
// call was granted).
void try_leases(DequeueCall *call, Candidates *c, int want) {
    Request req;
    lockext_init_request(&req, lockext::Mode::exclusive, lockext::Scope::lease, 1, call->lease_us);
    req.pending = true;
    if (call->worker != nullptr) {
        const int len =
            Min(static_cast<int>(VARSIZE_ANY_EXHDR(call->worker)), lockext::kMaxOwnerLen);
        req.has_owner = true;
        memcpy(req.owner, VARDATA_ANY(call->worker), len);
    }
    bool full = false;
    lockext_note_pending_leases();
    LWLockAcquire(lockext_shared->table_lock, LW_EXCLUSIVE);
    const TimestampTz now = GetCurrentTimestamp();
    LockTable *t = lockext_shared->table;
    int granted = 0, i = 0;
    for (; i < c->n && granted < want && !full; i++) {
        c->granted[i] = false;
        c->lapsed[i] = 0;
        req.job = c->ids[i];
        const lockext::Result r = t->acquire(lease_key(c->names[i]), req, now, false, req.slot,
                                             lockext_wake_waiter, nullptr);
        c->lapsed[i] = r.lapsed_job;
        if (r.outcome == Outcome::granted) {
            c->granted[i] = true;
            c->tokens[i] = r.token;
            c->expires[i] = r.expires_at;
            granted++;
        } else if (r.outcome == Outcome::capacity_full) {
            full = true;
        }
    }
    c->n = i;
    LWLockRelease(lockext_shared->table_lock);
    if (full)
        ereport(ERROR,
                (errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
                 errmsg("lockext lock table is full (%d slots)", lockext_max_locks),
                 errdetail("Every running job holds a lease in the lock table."),
                 errhint("Raise lockext.max_locks above the running jobs plus the locks in use, "
                         "and restart.")));
}

// Hand out, for each granted candidate, its key's head (or the unkeyed job
// itself) when it is ready; give the other leases back.
void deliver(DequeueCall *call, Candidates *c, LeafRel *leaf) {
    int ngranted = 0;
    int64 max_token = 0;
    TimestampTz max_expiry = 0;
    for (int i = 0; i < c->n; i++) {
        c->handed[i] = false;
        if (c->granted[i]) {
            ngranted++;
            max_token = Max(max_token, c->tokens[i]);
            max_expiry = Max(max_expiry, c->expires[i]);
        }
    }
    if (ngranted == 0)
        return;
    // Tokens and expiries are made durable before anybody can see them (the
    // error path's abort releases the leases).
    lockext_durable_ensure(max_token, max_expiry);
    // The recheck (step 3): a snapshot taken after the grants.
    Snapshot snap = lockext::leaf::latest_snapshot();
    // handed[i]: the job handed out under candidate i's lease, or 0.
    int64 *handed = static_cast<int64 *>(palloc0(sizeof(int64) * (c->n + 1)));
    for (int i = 0; i < c->n && call->taken < call->batch; i++) {
        if (!c->granted[i])
            continue;
        JobRow row;
        const bool found = c->keys[i] != (Datum)0
                               ? lockext::leaf::key_head(leaf, snap, c->keys[i], &row)
                               : lockext::leaf::job_by_id(leaf, snap, c->ids[i], &row);
        if (!found || !row.ready)
            continue;
        handed[i] = row.id;
        c->handed[i] = true;
        touch_leaf(call->queue, row.id % kIdStride, true);
        call->taken++;
        Datum values[7];
        bool nulls[7] = {false, row.key_null, false, false, false, false, false};
        values[0] = Int64GetDatum(row.id);
        values[1] = row.key;
        values[2] = row.payload;
        values[3] = Int32GetDatum(row.attempt + 1);
        values[4] = Int64GetDatum(c->tokens[i]);
        values[5] = TimestampTzGetDatum(row.enqueued_at);
        values[6] = TimestampTzGetDatum(c->expires[i]);
        tuplestore_putvalues(call->out, call->desc, values, nulls);
    }
    UnregisterSnapshot(snap);
    // Leases now run the job handed out (which may be another row of the
    // key than the one scanned); the rest go back: finished since the scan,
    // a key whose head is not ready, or past the batch.
    LWLockAcquire(lockext_shared->table_lock, LW_EXCLUSIVE);
    const TimestampTz now = GetCurrentTimestamp();
    LockTable *t = lockext_shared->table;
    for (int i = 0; i < c->n; i++) {
        if (!c->granted[i])
            continue;
        if (handed[i] == 0)
            (void)t->release(lease_key(c->names[i]), c->tokens[i], now, 0, true,
                             lockext_wake_waiter, nullptr);
        else if (handed[i] != c->ids[i])
            t->set_job(lease_key(c->names[i]), c->tokens[i], handed[i]);
    }
    LWLockRelease(lockext_shared->table_lock);
}

// Where this backend's next scan of a leaf starts. A dequeue steps over the
// rows of busy keys (running, or their head retrying) at the front of a
// leaf; when a long run of them is there (a stuck key with a backlog), every
// call would read it again. So a scan remembers the position of the first
// job it handed out, and for kResumeUs the next scans of this backend start
// there (each such scan moves it to its own first job, so workers that keep
// their jobs running long do not step over all the running ones every
// time). A scan that finds no free job in the whole leaf marks the leaf
// exhausted at its generation (LEAF GENERATIONS, above): the next calls skip
// it while the generation stands, for at most kResumeUs. A call that comes
// up short reads again from the top the leaves it read from a resume point,
// so it misses no job but those freed by a lapsed lease or a due retry in
// the last kResumeUs; a call that fills its batch may pass over a job
// behind a busy run for at most kResumeUs.
constexpr int64 kResumeUs = 100 * 1000;
constexpr int kMaxLeaves = 1024;
struct ResumePoint {
    bool valid;  // a position to start from
    int32 priority;
    int64 id;
    TimestampTz until;
    bool exhausted;  // no free job at generation `gen`: skip the leaf
    uint32 gen;
};
ResumePoint resume_at[kMaxLeaves];
char resume_queue[NAMEDATALEN];

// Forget every resume point (another queue, or a full rescan).
void forget_resume_points(const char *queue) {
    memset(resume_at, 0, sizeof(resume_at));
    strlcpy(resume_queue, queue, sizeof(resume_queue));
}

// Take ready jobs of leaf `rem`, in its (priority DESC, id) order, until the
// batch is full or the leaf has no more; from the leaf's resume point when
// `resume` and one is set. Returns whether it started from a resume point.
bool dequeue_leaf(DequeueCall *call, int rem, bool resume) {
    ResumePoint *rp = &resume_at[rem];
    const TimestampTz started = GetCurrentTimestamp();
    // Read before the snapshot: a bump after it means a rescan.
    const uint32 gen = leaf_gen(call->queue, rem);
    pg_memory_barrier();
    if (resume && rp->exhausted && rp->gen == gen && rp->until > started)
        return false;
    const bool from = resume && rp->valid && rp->until > started;
    const Oid leaf_oid =
        get_relname_relid(leaf_name(call->queue, rem), get_namespace_oid(kSchema, false));
    if (!OidIsValid(leaf_oid))
        ereport(ERROR,
                (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                 errmsg("queue \"%s\" has no partition for remainder %d", call->queue, rem)));
    LeafRel leaf;
    lockext::leaf::open_leaf(leaf_oid, &leaf);
    ReadyScan scan;
    lockext::leaf::begin_ready_scan(&leaf, &scan, from, rp->priority, rp->id);
    if (!from)
        *rp = {false, 0, 0, started + kResumeUs, false, 0};
    bool placed = false;  // the resume point is set by this scan
    // A chunk a little larger than what is missing: most rows at the front
    // of a busy leaf belong to running keys. The arrays are sized to the
    // chunk (a lease name is 133 bytes: arrays for the largest chunk would
    // cost a dequeue of one job more than its scan).
    const long cap = 1024;
    long chunk = Min(cap, 2 * (call->batch - call->taken) + 8);
    Candidates c;
    alloc_candidates(&c, chunk);
    bool exhausted = false;
    while (call->taken < call->batch) {
        long fetched = 0;
        c.n = 0;
        int64 id;
        Datum key;
        bool key_null;
        int32 prio;
        while (fetched < chunk && lockext::leaf::next_ready(&scan, &id, &key, &key_null, &prio)) {
            fetched++;
            LeaseName n;
            lease_name(call->queue, key_null ? nullptr : DatumGetTextPP(key), id, &n);
            if (seen_before(call, n))
                continue;
            c.keys[c.n] = key;
            c.ids[c.n] = id;
            c.prios[c.n] = prio;
            c.names[c.n++] = n;
        }
        if (fetched == 0) {
            exhausted = true;
            break;
        }
        // The chunk's candidates in rounds that take no more leases than
        // the batch still needs (a full lock table must not be filled by
        // leases this call would only give back).
        int pos = 0;
        while (pos < c.n && call->taken < call->batch) {
            Candidates round = c;
            round.ids += pos;
            round.prios += pos;
            round.handed += pos;
            round.keys += pos;
            round.names += pos;
            round.tokens += pos;
            round.expires += pos;
            round.lapsed += pos;
            round.granted += pos;
            round.n = c.n - pos;
            try_leases(call, &round, call->batch - call->taken);
            for (int i = 0; i < round.n; i++)
                if (round.lapsed[i] != 0)
                    count_lapsed(call->queue, round.lapsed[i]);
            deliver(call, &round, &leaf);
            // The first job handed out marks where the busy run ended. A scan
            // from the resume point moves it forward but keeps its deadline:
            // the rows it passed were busy when the last full scan looked.
            for (int i = 0; i < round.n && !placed; i++)
                if (round.handed[i]) {
                    *rp = {true,         round.prios[i],
                           round.ids[i], from ? rp->until : started + kResumeUs,
                           false,        0};
                    placed = true;
                }
            pos += round.n;
        }
        if (fetched < chunk) {
            exhausted = true;
            break;
        }
        if (chunk < cap) {
            chunk = Min(cap, chunk * 2);
            alloc_candidates(&c, chunk);
        }
    }
    lockext::leaf::end_ready_scan(&scan);
    lockext::leaf::close_leaf(&leaf);
    // No free job in the whole leaf: skip it until its generation moves.
    if (!from && !placed && exhausted)
        *rp = {false, 0, 0, started + kResumeUs, true, gen};
    return from;
}

// Take up to `batch` jobs of the queue in argument 0, with the batch, lease
// and worker in arguments b, b + 1 and b + 2; see lockext.dequeue.
Datum dequeue_with(FunctionCallInfo fcinfo, int b) {
    lockext_require_loaded();
    DequeueCall call;
    call.queue = queue_arg(fcinfo, 0);
    require_arg(fcinfo, b, "batch");
    check(PG_GETARG_INT32(b) >= 1, "batch must be at least 1");
    call.batch = PG_GETARG_INT32(b);
    call.lease_us = lease_us(PG_ARGISNULL(b + 1), PG_GETARG_DATUM(b + 1));
    call.worker = PG_ARGISNULL(b + 2) ? nullptr : PG_GETARG_TEXT_PP(b + 2);
    if (call.worker != nullptr && VARSIZE_ANY_EXHDR(call.worker) > lockext::kMaxOwnerLen)
        ereport(ERROR, (errcode(ERRCODE_NAME_TOO_LONG),
                        errmsg("worker is over the limit of %d bytes", lockext::kMaxOwnerLen)));
    call.taken = 0;

    InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
    call.out = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo)->setResult;
    call.desc = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo)->setDesc;
    Oid relid = open_queue(call.queue);
    const char *table = queue_table(call.queue);
    int nparts;
    {
        Relation rel = table_open(relid, NoLock);
        nparts = RelationGetPartitionDesc(rel, true)->nparts;
        table_close(rel, NoLock);
    }
    HASHCTL ctl;
    ctl.keysize = sizeof(SeenName);
    ctl.entrysize = sizeof(SeenName);
    ctl.hcxt = CurrentMemoryContext;
    call.seen =
        hash_create("lockext dequeue names", 16, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
    int level = pin_settings();
    SPI_connect();

    bool looked = GetCurrentTimestamp() - last_rare_path >= kRarePathIntervalUs ||
                  strcmp(last_rare_queue, call.queue) != 0;
    if (looked)
        (void)promote_due(table, call.queue, nparts);
    // Each backend starts at a leaf of its own, so concurrent workers do not
    // all step over the same running jobs; priority is exact within a leaf.
    const int start = MyProc->pgprocno % Max(nparts, 1);
    if (strcmp(resume_queue, call.queue) != 0 || nparts > kMaxLeaves)
        forget_resume_points(call.queue);
    bool *resumed = static_cast<bool *>(palloc0(sizeof(bool) * (nparts + 1)));
    for (int k = 0; k < nparts && call.taken < call.batch; k++) {
        const int rem = (start + k) % nparts;
        resumed[rem] = dequeue_leaf(&call, rem, nparts <= kMaxLeaves);
    }
    // Short: look again from the top of the leaves read from a resume point
    // (the others were read whole, or have no free job at their generation).
    for (int k = 0; k < nparts && call.taken < call.batch; k++) {
        const int rem = (start + k) % nparts;
        if (resumed[rem])
            (void)dequeue_leaf(&call, rem, false);
    }
    // Still short: due delayed jobs may have become ready.
    if (call.taken < call.batch && !looked && promote_due(table, call.queue, nparts)) {
        hash_destroy(call.seen);
        call.seen =
            hash_create("lockext dequeue names", 16, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
        for (int k = 0; k < nparts && call.taken < call.batch; k++)
            (void)dequeue_leaf(&call, (start + k) % nparts, false);
    }

    SPI_finish();
    AtEOXact_GUC(true, level);
    return (Datum)0;
}

// The leaf of job `id` of `queue`, or NULL when no such leaf exists (a
// stale id of a queue that had more partitions before it was recreated).
char *leaf_of(const char *queue, int64 id) {
    if (id <= 0)
        return nullptr;
    char *leaf = leaf_name(queue, id % kIdStride);
    if (!OidIsValid(get_relname_relid(leaf, get_namespace_oid(kSchema, false))))
        return nullptr;
    return leaf;
}

// The (queue, id, token) arguments of a call on one running job.
struct JobArgs {
    char *queue;
    int64 id;
    int64 token;
    char *leaf;  // NULL: no such leaf, so no such job
};

// Read and check the (queue, id, token) arguments (22004 for a NULL one,
// 42704 for an unknown queue); args.leaf is NULL when the id names no leaf.
JobArgs job_args(FunctionCallInfo fcinfo) {
    lockext_require_loaded();
    JobArgs a;
    a.queue = queue_arg(fcinfo, 0);
    require_arg(fcinfo, 1, "id");
    require_arg(fcinfo, 2, "token");
    (void)open_queue(a.queue);
    a.id = PG_GETARG_INT64(1);
    a.token = PG_GETARG_INT64(2);
    a.leaf = leaf_of(a.queue, a.id);
    return a;
}

// Finish one job; see lockext.complete(queue, id, token).
Datum complete_impl(FunctionCallInfo fcinfo) {
    const JobArgs a = job_args(fcinfo);
    const char *queue = a.queue, *leaf = a.leaf;
    const int64 id = a.id, token = a.token;
    if (leaf == nullptr)
        PG_RETURN_BOOL(false);
    bool done;
    const bool keyed = finish_jobs(queue, &id, &token, 1, &done);
    if (done) {
        int level = pin_settings();
        SPI_connect();
        Datum args[1] = {Int64GetDatum(id)};
        run(kDelete, leaf, args, nullptr);
        done = SPI_processed > 0;
        touch_leaf(queue, id % kIdStride, false);
        SPI_finish();
        AtEOXact_GUC(true, level);
    }
    // The key's next job may run once this commits.
    if (done && keyed)
        lockext_notify_after_commit(queue);
    PG_RETURN_BOOL(done);
}

// The elements of bigint[] argument `n` (NULL elements become 0, which no job has).
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

// Order of (id, token) pairs: by leaf, then id.
int compare_pair(const void *a, const void *b) {
    const int64 *x = static_cast<const int64 *>(a);
    const int64 *y = static_cast<const int64 *>(b);
    int64 rx = x[0] % kIdStride, ry = y[0] % kIdStride;
    if (rx != ry)
        return rx < ry ? -1 : 1;
    return x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0;
}

// Take up to `batch` jobs; see lockext.dequeue.
Datum dequeue_impl(FunctionCallInfo fcinfo) {
    return dequeue_with(fcinfo, 1);
}

// Finish the jobs of arguments 0 (queue), 1 (ids) and 2 (tokens); returns
// how many were held. See lockext.complete(queue, ids, tokens).
int complete_with(FunctionCallInfo fcinfo) {
    lockext_require_loaded();
    char *queue = queue_arg(fcinfo, 0);
    (void)open_queue(queue);
    require_arg(fcinfo, 1, "ids");
    require_arg(fcinfo, 2, "tokens");
    check_one_dimension(fcinfo, 1, "ids");
    check_one_dimension(fcinfo, 2, "tokens");
    int64 *ids, *tokens;
    int n = int8_elements(fcinfo, 1, &ids);
    int m = int8_elements(fcinfo, 2, &tokens);
    if (n != m)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("ids has %d elements but tokens has %d", n, m)));
    int64 *pairs = static_cast<int64 *>(palloc(sizeof(int64) * 2 * (n + 1)));
    int valid = 0;
    for (int i = 0; i < n; i++)
        if (ids[i] > 0) {
            pairs[2 * valid] = ids[i];
            pairs[2 * valid + 1] = tokens[i];
            valid++;
        }
    qsort(pairs, valid, sizeof(int64) * 2, compare_pair);

    int64 *f_ids = static_cast<int64 *>(palloc(sizeof(int64) * (valid + 1)));
    int64 *f_tokens = static_cast<int64 *>(palloc(sizeof(int64) * (valid + 1)));
    bool *ok = static_cast<bool *>(palloc(sizeof(bool) * (valid + 1)));
    for (int i = 0; i < valid; i++) {
        f_ids[i] = pairs[2 * i];
        f_tokens[i] = pairs[2 * i + 1];
    }
    // Every lease in one hold of the table lock, then one DELETE per leaf.
    const bool keyed = finish_jobs(queue, f_ids, f_tokens, valid, ok);
    int level = pin_settings();
    SPI_connect();
    Datum *id_datums = static_cast<Datum *>(palloc(sizeof(Datum) * (valid + 1)));
    int done = 0, start = 0;
    while (start < valid) {
        const int64 rem = f_ids[start] % kIdStride;
        int end = start;
        int nd = 0;
        while (end < valid && f_ids[end] % kIdStride == rem) {
            // A repeated id counts once.
            if (ok[end] && (nd == 0 || DatumGetInt64(id_datums[nd - 1]) != f_ids[end]))
                id_datums[nd++] = Int64GetDatum(f_ids[end]);
            end++;
        }
        char *leaf = leaf_of(queue, f_ids[start]);
        if (leaf != nullptr && nd > 0) {
            Datum args[1] = {
                PointerGetDatum(construct_array(id_datums, nd, INT8OID, 8, true, TYPALIGN_DOUBLE))};
            run(kDeleteMany, leaf, args, nullptr);
            done += static_cast<int>(SPI_processed);
            touch_leaf(queue, rem, false);
        }
        start = end;
    }
    SPI_finish();
    AtEOXact_GUC(true, level);
    if (done > 0 && keyed)
        lockext_notify_after_commit(queue);
    return done;
}

// Finish many jobs; see lockext.complete(queue, ids, tokens).
Datum complete_many_impl(FunctionCallInfo fcinfo) {
    PG_RETURN_INT32(complete_with(fcinfo));
}

// A worker's one call per round: finish the jobs it holds, then take the
// next ones; see lockext.complete_and_dequeue.
Datum complete_and_dequeue_impl(FunctionCallInfo fcinfo) {
    (void)complete_with(fcinfo);
    return dequeue_with(fcinfo, 3);
}

// Report a failed attempt; see lockext.fail.
Datum fail_impl(FunctionCallInfo fcinfo) {
    if (!PG_ARGISNULL(4))
        check_span(false, PG_GETARG_DATUM(4), "retry_in", true);
    const JobArgs a = job_args(fcinfo);
    const char *queue = a.queue, *leaf = a.leaf;
    const int64 id = a.id, token = a.token;
    if (leaf == nullptr)
        PG_RETURN_NULL();
    bool held;
    (void)finish_jobs(queue, &id, &token, 1, &held);
    const char *outcome = nullptr;
    int level = pin_settings();
    SPI_connect();
    Datum fargs[1] = {Int64GetDatum(id)};
    if (held)
        run_latest(kFind, leaf, fargs, nullptr);
    if (held && SPI_processed > 0) {
        bool isnull;
        const int32 attempt = DatumGetInt32(result(0, 2, &isnull));
        const int32 max_attempts = DatumGetInt32(result(0, 3, &isnull));
        Datum error = PG_ARGISNULL(3) ? (Datum)0 : PG_GETARG_DATUM(3);
        if (attempt + 1 >= max_attempts) {
            Datum args[3] = {Int64GetDatum(id), error, Int32GetDatum(1)};
            char nulls[3] = {' ', PG_ARGISNULL(3) ? 'n' : ' ', ' '};
            run(kBury, leaf, args, nulls);
            outcome = "dead";
        } else {
            Datum args[3] = {Int64GetDatum(id), error,
                             PG_ARGISNULL(4) ? (Datum)0 : PG_GETARG_DATUM(4)};
            char nulls[3] = {' ', PG_ARGISNULL(3) ? 'n' : ' ', PG_ARGISNULL(4) ? 'n' : ' '};
            run(kRetry, leaf, args, nulls);
            outcome = "retry";
        }
    }
    if (held)
        touch_leaf(queue, id % kIdStride, false);
    SPI_finish();
    AtEOXact_GUC(true, level);
    // A buried job frees its key for the next job at commit.
    if (outcome != nullptr && strcmp(outcome, "dead") == 0)
        lockext_notify_after_commit(queue);
    if (outcome == nullptr)
        PG_RETURN_NULL();
    PG_RETURN_TEXT_P(cstring_to_text(outcome));
}

// Give a leased job back unfinished; see lockext.requeue.
Datum requeue_impl(FunctionCallInfo fcinfo) {
    const JobArgs a = job_args(fcinfo);
    const char *queue = a.queue;
    const int64 id = a.id, token = a.token;
    if (a.leaf == nullptr)
        PG_RETURN_BOOL(false);
    // Nothing to write: the row still says ready, and its attempt count
    // never counted this delivery. The lease goes at commit.
    bool done;
    (void)finish_jobs(queue, &id, &token, 1, &done);
    if (done) {
        touch_leaf(queue, id % kIdStride, false);
        lockext_notify_after_commit(queue);
    }
    PG_RETURN_BOOL(done);
}

// Heartbeat: extend a running job's lease; see lockext.extend.
Datum extend_impl(FunctionCallInfo fcinfo) {
    const int64 ttl = lease_us(PG_ARGISNULL(3), PG_ARGISNULL(3) ? (Datum)0 : PG_GETARG_DATUM(3));
    const JobArgs a = job_args(fcinfo);
    const char *queue = a.queue;
    const int64 id = a.id, token = a.token;
    if (a.leaf == nullptr)
        PG_RETURN_NULL();
    LeasePrefix prefix;
    lease_prefix(queue, &prefix);
    lockext::Result r;
    for (;;) {
        LWLockAcquire(lockext_shared->table_lock, LW_EXCLUSIVE);
        const auto horizon =
            static_cast<lockext::Timestamp>(pg_atomic_read_u64(&lockext_shared->durable_horizon));
        r = lockext_shared->table->renew_job(MyDatabaseId, id, token, prefix.text, prefix.len, ttl,
                                             GetCurrentTimestamp(), horizon);
        LWLockRelease(lockext_shared->table_lock);
        if (r.outcome != Outcome::not_durable)
            break;
        // As lockext.renew: make the longer expiry durable first.
        lockext_durable_ensure(r.token, r.expires_at);
        CHECK_FOR_INTERRUPTS();
    }
    if (r.outcome != Outcome::granted)
        PG_RETURN_NULL();
    PG_RETURN_TIMESTAMPTZ(r.expires_at);
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

// Deconstruct argument `n` (an array of `type`, named `what`) if it is not NULL.
OptionalArray optional_array(FunctionCallInfo fcinfo, int n, const char *what, Oid type, int16 len,
                             bool byval, char align) {
    OptionalArray a;
    check_one_dimension(fcinfo, n, what);
    if (!PG_ARGISNULL(n))
        deconstruct_array(PG_GETARG_ARRAYTYPE_P(n), type, len, byval, align, &a.values, &a.nulls,
                          &a.count);
    return a;
}

// Insert jobs of `queue` in array order (ids rise in that order); returns
// how many, their ids in *ids_out (in the caller's memory context).
int insert_jobs(const char *queue, const OptionalArray &payloads, const OptionalArray &keys,
                const OptionalArray &run_ats, const OptionalArray &priorities,
                const OptionalArray &attempts, Datum **ids_out) {
    Oid relid = open_queue(queue);
    int n = payloads.count;
    if (keys.values != nullptr && keys.count != n)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("keys has %d elements but payloads has %d", keys.count, n)));
    for (int i = 0; i < n; i++)
        if (payloads.nulls[i])
            ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                            errmsg("payload %d must not be NULL", i + 1)));

    Datum *key = static_cast<Datum *>(palloc0(sizeof(Datum) * (n + 1)));
    bool *key_null = static_cast<bool *>(palloc(sizeof(bool) * (n + 1)));
    for (int i = 0; i < n; i++) {
        key_null[i] = !keys.has(i);
        if (!key_null[i])
            key[i] = PointerGetDatum(PG_DETOAST_DATUM_PACKED(keys.values[i]));
    }
    int64 *rems = static_cast<int64 *>(palloc(sizeof(int64) * (n + 1)));
    remainders_of(relid, key, key_null, n, rems);
    // The ids are returned after SPI_finish: keep them in the caller's context.
    Datum *ids = static_cast<Datum *>(palloc(sizeof(Datum) * (n + 1)));
    *ids_out = ids;

    int level = pin_settings();
    SPI_connect();
    Oid seq = get_relname_relid("job_id_seq", get_namespace_oid(kSchema, false));
    TimestampTz now = GetCurrentTransactionStartTimestamp();
    Datum *states = static_cast<Datum *>(palloc(sizeof(Datum) * (n + 1)));
    Datum *when = static_cast<Datum *>(palloc(sizeof(Datum) * (n + 1)));
    Datum *prio = static_cast<Datum *>(palloc(sizeof(Datum) * (n + 1)));
    Datum *maxa = static_cast<Datum *>(palloc(sizeof(Datum) * (n + 1)));
    Datum delayed = CStringGetTextDatum("delayed"), ready = CStringGetTextDatum("ready");
    for (int i = 0; i < n; i++) {
        TimestampTz run_at = run_ats.has(i) ? DatumGetTimestampTz(run_ats.values[i]) : now;
        check_finite(run_at, "run_at");
        maxa[i] = attempts.has(i) ? attempts.values[i] : Int32GetDatum(5);
        check(DatumGetInt32(maxa[i]) >= 1, "max_attempts must be at least 1");
        ids[i] = Int64GetDatum(next_job_id(seq, rems[i]));
        when[i] = TimestampTzGetDatum(run_at);
        prio[i] = priorities.has(i) ? priorities.values[i] : Int32GetDatum(0);
        states[i] = run_at > now ? delayed : ready;
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
    for (int i = 0; i < n; i++)
        touch_leaf(queue, rems[i], false);
    SPI_finish();
    AtEOXact_GUC(true, level);
    if (n > 0)
        lockext_notify_after_commit(queue);
    return n;
}

// Return `n` ids as the rows of a SETOF bigint function.
Datum return_ids(FunctionCallInfo fcinfo, const Datum *ids, int n) {
    InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
    Tuplestorestate *out = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo)->setResult;
    TupleDesc desc = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo)->setDesc;
    for (int i = 0; i < n; i++) {
        bool isnull = false;
        tuplestore_putvalues(out, desc, const_cast<Datum *>(&ids[i]), &isnull);
    }
    return (Datum)0;
}

// The ids of the running jobs of a queue; see lockext._running_jobs.
Datum running_jobs_impl(FunctionCallInfo fcinfo) {
    char *queue = queue_arg(fcinfo, 0);
    // Not preloaded: nothing can run (dequeue needs the lock table).
    if (lockext_shared == nullptr)
        return return_ids(fcinfo, nullptr, 0);
    char *prefix = psprintf("%s%s/", kLeasePrefix, queue);
    const int max = lockext_max_locks;
    int64 *jobs = static_cast<int64 *>(palloc(sizeof(int64) * max));
    LWLockAcquire(lockext_shared->table_lock, LW_SHARED);
    const int n = lockext_shared->table->job_leases(
        MyDatabaseId, prefix, static_cast<int>(strlen(prefix)), GetCurrentTimestamp(), jobs, max);
    LWLockRelease(lockext_shared->table_lock);
    Datum *ids = static_cast<Datum *>(palloc(sizeof(Datum) * (n + 1)));
    for (int i = 0; i < n; i++)
        ids[i] = Int64GetDatum(jobs[i]);
    return return_ids(fcinfo, ids, n);
}

// Enqueue many jobs in order; see lockext.enqueue_batch.
Datum enqueue_batch_impl(FunctionCallInfo fcinfo) {
    char *queue = queue_arg(fcinfo, 0);
    require_arg(fcinfo, 1, "payloads");
    OptionalArray payloads =
        optional_array(fcinfo, 1, "payloads", JSONBOID, -1, false, TYPALIGN_INT);
    OptionalArray keys = optional_array(fcinfo, 2, "keys", TEXTOID, -1, false, TYPALIGN_INT);
    OptionalArray none;
    Datum *ids;
    const int n = insert_jobs(queue, payloads, keys, none, none, none, &ids);
    return return_ids(fcinfo, ids, n);
}

// Move dead jobs back to the queue as new jobs; see lockext.redrive.
Datum redrive_impl(FunctionCallInfo fcinfo) {
    char *queue = queue_arg(fcinfo, 0);
    check_one_dimension(fcinfo, 1, "ids");
    (void)open_queue(queue);
    int level = pin_settings();
    SPI_connect();
    Datum args[2] = {CStringGetTextDatum(queue), PG_ARGISNULL(1) ? (Datum)0 : PG_GETARG_DATUM(1)};
    char nulls[2] = {' ', PG_ARGISNULL(1) ? 'n' : ' '};
    Oid types[2] = {TEXTOID, INT8ARRAYOID};
    if (SPI_execute_with_args(
            "WITH gone AS (DELETE FROM lockext.dead_jobs d WHERE d.queue = $1 "
            "AND ($2 IS NULL OR d.id = ANY ($2)) RETURNING d.*) "
            "SELECT array_agg(g.payload ORDER BY g.id), array_agg(g.key ORDER BY g.id), "
            "array_agg(g.priority ORDER BY g.id), array_agg(g.max_attempts ORDER BY g.id) "
            "FROM gone g",
            2, types, args, nulls, false, 0) != SPI_OK_SELECT)
        elog(ERROR, "lockext: redrive could not read the dead jobs");
    bool isnull;
    int n = 0;
    Datum payload_arr = result(0, 1, &isnull);
    if (!isnull) {
        OptionalArray payloads, keys, priorities, attempts, none;
        deconstruct_array(DatumGetArrayTypeP(payload_arr), JSONBOID, -1, false, TYPALIGN_INT,
                          &payloads.values, &payloads.nulls, &payloads.count);
        deconstruct_array(DatumGetArrayTypeP(result(0, 2, &isnull)), TEXTOID, -1, false,
                          TYPALIGN_INT, &keys.values, &keys.nulls, &keys.count);
        deconstruct_array(DatumGetArrayTypeP(result(0, 3, &isnull)), INT4OID, 4, true, TYPALIGN_INT,
                          &priorities.values, &priorities.nulls, &priorities.count);
        deconstruct_array(DatumGetArrayTypeP(result(0, 4, &isnull)), INT4OID, 4, true, TYPALIGN_INT,
                          &attempts.values, &attempts.nulls, &attempts.count);
        Datum *ids;
        n = insert_jobs(queue, payloads, keys, none, priorities, attempts, &ids);
    }
    SPI_finish();
    AtEOXact_GUC(true, level);
    PG_RETURN_INT32(n);
}

// lockext._insert_jobs of version 0.1.0, whose install script an update
// starts from: enqueue_batch with every column.
Datum insert_jobs_impl(FunctionCallInfo fcinfo) {
    char *queue = queue_arg(fcinfo, 0);
    require_arg(fcinfo, 1, "payloads");
    OptionalArray payloads =
        optional_array(fcinfo, 1, "payloads", JSONBOID, -1, false, TYPALIGN_INT);
    OptionalArray keys = optional_array(fcinfo, 2, "keys", TEXTOID, -1, false, TYPALIGN_INT);
    OptionalArray run_ats =
        optional_array(fcinfo, 3, "run_ats", TIMESTAMPTZOID, 8, true, TYPALIGN_DOUBLE);
    OptionalArray priorities =
        optional_array(fcinfo, 4, "priorities", INT4OID, 4, true, TYPALIGN_INT);
    OptionalArray attempts =
        optional_array(fcinfo, 5, "max_attempts", INT4OID, 4, true, TYPALIGN_INT);
    Datum *ids;
    const int n = insert_jobs(queue, payloads, keys, run_ats, priorities, attempts, &ids);
    return return_ids(fcinfo, ids, n);
}

// C functions of version 0.1.0 that 0.2.0 no longer has. The 0.1.0 install
// script names them (an update starts from it), so the library keeps them,
// refusing to run.
Datum removed_impl(FunctionCallInfo fcinfo) {
    ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                    errmsg("this lockext 0.1.0 function is gone from the installed library"),
                    errhint("Run ALTER EXTENSION lockext UPDATE.")));
    pg_unreachable();
}

// 0.1.0's names for the removed functions.
Datum free_keys_impl(FunctionCallInfo fcinfo) {
    return removed_impl(fcinfo);
}
Datum job_id_impl(FunctionCallInfo fcinfo) {
    return removed_impl(fcinfo);
}
Datum check_interval_impl(FunctionCallInfo fcinfo) {
    return removed_impl(fcinfo);
}

// Delete the dead jobs of a queue that no longer exists (and end its job
// leases at commit), reading them with
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
    // The running jobs' leases go with the queue when this commits: a queue
    // made again under the same name must not find its keys taken.
    if (lockext_shared != nullptr) {
        char *prefix = psprintf("%s%s/", kLeasePrefix, queue);
        lockext_note_pending_leases();
        LWLockAcquire(lockext_shared->table_lock, LW_EXCLUSIVE);
        (void)lockext_shared->table->finish_all(MyDatabaseId, prefix,
                                                static_cast<int>(strlen(prefix)),
                                                GetCurrentTimestamp(), MyProcPid, MyProc->pgprocno);
        LWLockRelease(lockext_shared->table_lock);
    }
    int level = pin_settings();
    SPI_connect();
    Datum args[1] = {CStringGetTextDatum(queue)};
    run_latest(kPurgeDead, nullptr, args, nullptr);
    SPI_finish();
    AtEOXact_GUC(true, level);
    PG_RETURN_VOID();
}

}  // namespace

// Bump the generations of the leaves this transaction touched; see LEAF
// GENERATIONS. Called by src/lock_shmem.cpp after the transaction's leases
// were settled.
void lockext_queue_xact_end(bool commit) {
    if (lockext_shared != nullptr) {
        if (touched_all) {
            for (pg_atomic_uint32 &g : lockext_shared->leaf_gen)
                pg_atomic_fetch_add_u32(&g, 1);
        } else {
            for (int i = 0; i < ntouched; i++)
                if (!commit || !touched[i].abort_only)
                    pg_atomic_fetch_add_u32(&lockext_shared->leaf_gen[touched[i].gen], 1);
        }
    }
    ntouched = 0;
    touched_all = false;
}

LOCKEXT_SQL_FUNCTION(purge_dead_jobs)
LOCKEXT_SQL_FUNCTION(enqueue)
LOCKEXT_SQL_FUNCTION(dequeue)
LOCKEXT_SQL_FUNCTION(complete)
LOCKEXT_SQL_FUNCTION(complete_many)
LOCKEXT_SQL_FUNCTION(complete_and_dequeue)
LOCKEXT_SQL_FUNCTION(fail)
LOCKEXT_SQL_FUNCTION(requeue)
LOCKEXT_SQL_FUNCTION(extend)
LOCKEXT_SQL_FUNCTION(insert_jobs)
LOCKEXT_SQL_FUNCTION(enqueue_batch)
LOCKEXT_SQL_FUNCTION(redrive)
LOCKEXT_SQL_FUNCTION(running_jobs)
LOCKEXT_SQL_FUNCTION(free_keys)
LOCKEXT_SQL_FUNCTION(job_id)
LOCKEXT_SQL_FUNCTION(check_interval)
