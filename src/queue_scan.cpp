// Direct index scans of a queue leaf, for dequeue (see queue_scan.hpp).
//
// Why not SPI: a dequeue of one job ran two statements per leaf it read (the
// ready scan as a cursor, then the recheck of the granted keys' heads), and
// their executor start-up (plan validation, node and expression
// initialisation, a UNION ALL's Append) cost more CPU than the index scans
// inside them: 17% of a single-job cycle's server time against 3% for the
// scans. These functions run the same scans through the index AM directly.
//
// What they read and with which snapshot is the caller's business (the
// dequeue protocol in queue_ops.cpp); they take the relation locks an SPI
// statement would (AccessShareLock on the leaf and its indexes). The ready
// scan checks each row's state although the partial index's predicate
// implies it: the indexes are found by their columns, and a guard costs
// less than trusting that nobody changed a predicate.
//
// Bodies keep only plain data on the stack: the index AM and the relcache
// may ereport. Relations, scans and snapshots left open by an error are
// released by the transaction's resource owner.
extern "C" {
#include "postgres.h"

#include "access/genam.h"
#include "access/relscan.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_am.h"
#include "catalog/pg_index.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
}

#include "lockext/queue_scan.hpp"

namespace lockext::leaf {

namespace {

// What a leaf's catalog entries say, cached per backend: the index oids and
// column numbers. Any relcache invalidation of a cached leaf or index (a
// REINDEX CONCURRENTLY, a drop, an ALTER) empties the cache.
struct LeafInfo {
    Oid leaf;
    Oid ready_idx, key_idx, id_idx;
    AttrNumber id, key, payload, state, priority, attempt, enqueued_at;
};
constexpr int kCached = 64;
LeafInfo cache[kCached];
int ncached = 0;
int next_victim = 0;
bool callback_registered = false;

// Empty the cache when a cached leaf or index (or everything) is invalidated.
void invalidate(Datum, Oid relid) {
    if (relid == InvalidOid) {
        ncached = 0;
        return;
    }
    for (int i = 0; i < ncached; i++) {
        const LeafInfo &c = cache[i];
        if (c.leaf == relid || c.ready_idx == relid || c.key_idx == relid || c.id_idx == relid) {
            ncached = 0;
            return;
        }
    }
}

// Column `name` of relation `relid`; raises 55000 when there is none.
AttrNumber column(Oid relid, const char *name) {
    const AttrNumber a = get_attnum(relid, name);
    if (a == InvalidAttrNumber)
        ereport(ERROR,
                (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                 errmsg("queue partition \"%s\" has no column \"%s\"", get_rel_name(relid), name)));
    return a;
}

// Fill `info` from the catalogs: which of the leaf's indexes is which, by
// their columns and whether they are partial.
void describe(Relation heap, LeafInfo *info) {
    const Oid relid = RelationGetRelid(heap);
    info->leaf = relid;
    info->id = column(relid, "id");
    info->key = column(relid, "key");
    info->payload = column(relid, "payload");
    info->state = column(relid, "state");
    info->priority = column(relid, "priority");
    info->attempt = column(relid, "attempt");
    info->enqueued_at = column(relid, "enqueued_at");
    info->ready_idx = info->key_idx = info->id_idx = InvalidOid;
    List *indexes = RelationGetIndexList(heap);
    ListCell *lc;
    foreach (lc, indexes) {
        const Oid idx = lfirst_oid(lc);
        Relation ir = index_open(idx, AccessShareLock);
        const Form_pg_index f = ir->rd_index;
        const bool partial = !heap_attisnull(ir->rd_indextuple, Anum_pg_index_indpred, nullptr);
        const bool usable =
            f->indisvalid && f->indisready && f->indislive && ir->rd_rel->relam == BTREE_AM_OID;
        const int n = f->indnatts;
        const AttrNumber *k = f->indkey.values;
        if (usable && n == 2 && k[0] == info->priority && k[1] == info->id && partial)
            info->ready_idx = idx;
        else if (usable && n == 2 && k[0] == info->key && k[1] == info->id)
            info->key_idx = idx;
        else if (usable && n == 1 && k[0] == info->id && !partial)
            info->id_idx = idx;
        index_close(ir, NoLock);
    }
    list_free(indexes);
    if (!OidIsValid(info->ready_idx) || !OidIsValid(info->key_idx) || !OidIsValid(info->id_idx))
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("queue partition \"%s\" lacks one of its indexes",
                               RelationGetRelationName(heap)),
                        errhint("Recreate the queue, or restore the indexes lockext.jobs has.")));
}

// The cached description of leaf `heap`, filling the cache on a miss.
const LeafInfo *info_of(Relation heap) {
    if (!callback_registered) {
        CacheRegisterRelcacheCallback(invalidate, (Datum)0);
        callback_registered = true;
    }
    const Oid relid = RelationGetRelid(heap);
    for (int i = 0; i < ncached; i++)
        if (cache[i].leaf == relid)
            return &cache[i];
    LeafInfo fresh;
    describe(heap, &fresh);
    // describe() may have processed invalidations that emptied the cache.
    int slot = ncached < kCached ? ncached++ : (next_victim++ % kCached);
    cache[slot] = fresh;
    return &cache[slot];
}

// Whether the row in the leaf's slot is in state 'ready'.
bool slot_is_ready(LeafRel *l) {
    bool isnull;
    const text *state = DatumGetTextPP(slot_getattr(l->slot, l->state, &isnull));
    return VARSIZE_ANY_EXHDR(state) == 5 && memcmp(VARDATA_ANY(state), "ready", 5) == 0;
}

// Read the handed-out columns of the row in the leaf's slot into `out`.
void read_row(LeafRel *l, JobRow *out) {
    TupleTableSlot *s = l->slot;
    bool isnull;
    out->id = DatumGetInt64(slot_getattr(s, l->id, &isnull));
    Datum key = slot_getattr(s, l->key, &out->key_null);
    out->key = out->key_null ? (Datum)0 : PointerGetDatum(PG_DETOAST_DATUM_COPY(key));
    out->payload = PointerGetDatum(PG_DETOAST_DATUM_COPY(slot_getattr(s, l->payload, &isnull)));
    out->attempt = DatumGetInt32(slot_getattr(s, l->attempt, &isnull));
    out->enqueued_at = DatumGetTimestampTz(slot_getattr(s, l->enqueued_at, &isnull));
    out->ready = slot_is_ready(l);
}

// The first row of index `idx` matching `key` (one scan key), as `snap` sees it.
bool first_match(LeafRel *l, Relation idx, Snapshot snap, ScanKey key, JobRow *out) {
    IndexScanDesc scan = index_beginscan(l->heap, idx, snap, 1, 0);
    index_rescan(scan, key, 1, nullptr, 0);
    const bool found = index_getnext_slot(scan, ForwardScanDirection, l->slot);
    if (found)
        read_row(l, out);
    index_endscan(scan);
    ExecClearTuple(l->slot);
    return found;
}

}  // namespace

// Open a leaf and its dequeue indexes; see queue_scan.hpp.
void open_leaf(Oid relid, LeafRel *l) {
    l->heap = table_open(relid, AccessShareLock);
    // A copy: opening the indexes may process invalidations.
    const LeafInfo info = *info_of(l->heap);
    l->ready_idx = index_open(info.ready_idx, AccessShareLock);
    l->key_idx = index_open(info.key_idx, AccessShareLock);
    l->id_idx = index_open(info.id_idx, AccessShareLock);
    l->id = info.id;
    l->key = info.key;
    l->payload = info.payload;
    l->state = info.state;
    l->priority = info.priority;
    l->attempt = info.attempt;
    l->enqueued_at = info.enqueued_at;
    l->slot = table_slot_create(l->heap, nullptr);
}

// Close a leaf opened by open_leaf.
void close_leaf(LeafRel *l) {
    ExecDropSingleTupleTableSlot(l->slot);
    index_close(l->id_idx, NoLock);
    index_close(l->key_idx, NoLock);
    index_close(l->ready_idx, NoLock);
    table_close(l->heap, NoLock);
}

// Start (or, for phase 1 of a `from` scan, restart) the index scan of `s`.
static void start_phase(ReadyScan *s) {
    int nkeys = 0;
    if (s->from && s->phase == 0) {
        ScanKeyInit(&s->keys[0], 1, BTEqualStrategyNumber, F_INT4EQ, Int32GetDatum(s->priority));
        ScanKeyInit(&s->keys[1], 2, BTGreaterEqualStrategyNumber, F_INT8GE, Int64GetDatum(s->id));
        nkeys = 2;
    } else if (s->from) {
        // The index orders priority descending; btree applies the strategy
        // to the values, so "<" means the lower priorities that follow.
        ScanKeyInit(&s->keys[0], 1, BTLessStrategyNumber, F_INT4LT, Int32GetDatum(s->priority));
        nkeys = 1;
    }
    s->scan = index_beginscan(s->leaf->heap, s->leaf->ready_idx, s->snap, nkeys, 0);
    index_rescan(s->scan, s->keys, nkeys, nullptr, 0);
}

// The latest snapshot, registered; see queue_scan.hpp.
Snapshot latest_snapshot() {
    // This transaction's own last writes (a complete before the dequeue,
    // a lapse counted before the recheck) must be seen: SPI leaves them in
    // the current command until the next statement increments it.
    CommandCounterIncrement();
    return RegisterSnapshot(GetLatestSnapshot());
}

// Start a ready scan; see queue_scan.hpp.
void begin_ready_scan(LeafRel *l, ReadyScan *s, bool from, int32 priority, int64 id) {
    s->leaf = l;
    s->snap = latest_snapshot();
    s->from = from;
    s->phase = 0;
    s->priority = priority;
    s->id = id;
    start_phase(s);
}

// The next ready job of the scan; see queue_scan.hpp.
bool next_ready(ReadyScan *s, int64 *id, Datum *key, bool *key_null, int32 *priority) {
    LeafRel *l = s->leaf;
    for (;;) {
        CHECK_FOR_INTERRUPTS();
        if (index_getnext_slot(s->scan, ForwardScanDirection, l->slot)) {
            if (!slot_is_ready(l))
                continue;
            bool isnull;
            *id = DatumGetInt64(slot_getattr(l->slot, l->id, &isnull));
            *priority = DatumGetInt32(slot_getattr(l->slot, l->priority, &isnull));
            Datum k = slot_getattr(l->slot, l->key, key_null);
            *key = *key_null ? (Datum)0 : PointerGetDatum(PG_DETOAST_DATUM_COPY(k));
            return true;
        }
        if (!s->from || s->phase == 1)
            return false;
        index_endscan(s->scan);
        s->phase = 1;
        start_phase(s);
    }
}

// End a ready scan; see queue_scan.hpp.
void end_ready_scan(ReadyScan *s) {
    index_endscan(s->scan);
    ExecClearTuple(s->leaf->slot);
    UnregisterSnapshot(s->snap);
}

// A key's head; see queue_scan.hpp.
bool key_head(LeafRel *l, Snapshot snap, Datum key, JobRow *out) {
    ScanKeyData k;
    ScanKeyInit(&k, 1, BTEqualStrategyNumber, F_TEXTEQ, key);
    // The index's collation, not ScanKeyInit's C default: btree descends
    // with the key's comparison, which must order as the index does.
    k.sk_collation = l->key_idx->rd_indcollation[0];
    return first_match(l, l->key_idx, snap, &k, out);
}

// A job by id; see queue_scan.hpp.
bool job_by_id(LeafRel *l, Snapshot snap, int64 id, JobRow *out) {
    ScanKeyData k;
    ScanKeyInit(&k, 1, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(id));
    return first_match(l, l->id_idx, snap, &k, out);
}

}  // namespace lockext::leaf
