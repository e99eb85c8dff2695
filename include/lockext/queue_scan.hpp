// Direct index scans of a queue leaf for dequeue (src/queue_scan.cpp): the
// ready jobs in dequeue order, a key's head, a job by id. They replace SPI
// statements on dequeue's hot path, whose executor start-up cost more than
// the scans themselves. Include after postgres.h.
#pragma once

extern "C" {
#include "access/genam.h"
#include "access/skey.h"
#include "executor/tuptable.h"
#include "utils/rel.h"
#include "utils/snapshot.h"
#include "utils/timestamp.h"
}

namespace lockext::leaf {

// A leaf partition open for dequeue, with the indexes it reads.
struct LeafRel {
    Relation heap;
    Relation ready_idx;  // (priority DESC, id) WHERE state = 'ready'
    Relation key_idx;    // (key, id) WHERE key IS NOT NULL
    Relation id_idx;     // (id)
    TupleTableSlot *slot;
    // Column numbers in the leaf (a leaf created after the update that
    // dropped columns from lockext.jobs numbers them differently).
    AttrNumber id, key, payload, state, priority, attempt, enqueued_at;
};

// Open leaf `relid` and its dequeue indexes, AccessShareLock; raises 55000
// when one of the indexes is missing.
void open_leaf(Oid relid, LeafRel *l);
// Close what open_leaf opened (the locks stay until the transaction ends).
void close_leaf(LeafRel *l);

// The latest snapshot, registered (UnregisterSnapshot it), after making
// this transaction's own writes so far visible to it.
Snapshot latest_snapshot();

// A scan of a leaf's ready jobs in (priority DESC, id) order.
struct ReadyScan {
    LeafRel *leaf;
    Snapshot snap;
    IndexScanDesc scan;
    bool from;  // from (priority, id) on: two ranges, phase 0 then 1
    int phase;
    int32 priority;
    int64 id;
    ScanKeyData keys[2];
};

// Start a scan with the latest snapshot; from (priority, id) on when `from`.
void begin_ready_scan(LeafRel *l, ReadyScan *s, bool from, int32 priority, int64 id);
// The next ready job: its id, key (a copy; key_null when none) and priority.
bool next_ready(ReadyScan *s, int64 *id, Datum *key, bool *key_null, int32 *priority);
// End the scan and release its snapshot.
void end_ready_scan(ReadyScan *s);

// The columns dequeue hands out of one job row (datums are copies).
struct JobRow {
    int64 id;
    Datum key;
    bool key_null;
    Datum payload;
    int32 attempt;
    TimestampTz enqueued_at;
    bool ready;
};

// The head of `key` (its live job with the lowest id) as `snap` sees it;
// false when the key has no job.
bool key_head(LeafRel *l, Snapshot snap, Datum key, JobRow *out);
// Job `id` as `snap` sees it; false when there is no such row.
bool job_by_id(LeafRel *l, Snapshot snap, int64 id, JobRow *out);

}  // namespace lockext::leaf
