// Durable state: what must survive a crash so fencing stays safe.
//
// The lock table lives only in shared memory, so a crash or restart forgets
// every lease. Two facts must outlive it:
//  1. the highest fencing token handed out, so tokens never go backwards;
//  2. the latest expiry of any lease handed out, so no lease is granted
//     after a restart while a lease from before it may still be in force.
// Both are kept in $PGDATA/lockext.state, written ahead of use in blocks, as
// PostgreSQL logs sequences ahead: a token is returned to a client only when
// the file covers it (token <= durable_token) and its lease only when the
// file covers its expiry (expires_at <= durable_horizon). The file is
// rewritten only when a grant crosses those marks, then moved well beyond
// them, so the fsync cost is paid once per kTokenBlock tokens or
// kHorizonSlack of time, not per grant.
//
// At start-up the token counter resumes at max(file token mark, wall clock
// in microseconds). The clock term keeps tokens rising even when the file is
// lost or stale, provided clocks agree and grants average under one per
// microsecond. Every rewrite of the file is also WAL-logged
// (src/durable_wal.cpp), so a streaming standby keeps its own copy current
// and a promoted standby starts from its primary's marks. No
// lease is granted until the file's horizon (and lockext.startup_grace) has
// passed: this is Chubby's "wait out the longest lease" applied to the leases
// that were actually granted.
#include <fcntl.h>
#include <unistd.h>

extern "C" {
#include "postgres.h"

#include "miscadmin.h"
#include "port/pg_crc32c.h"
#include "storage/fd.h"
#include "utils/timestamp.h"
}

#include "lockext/lock_shmem.hpp"

namespace {

constexpr const char *kStateFile = "lockext.state";
constexpr const char *kStateTmp = "lockext.state.tmp";
constexpr std::uint32_t kMagic = 0x4c4b5854;  // "LKXT"
constexpr std::uint32_t kVersion = 1;
constexpr std::int64_t kTokenBlock = 1000000;
constexpr std::int64_t kHorizonSlack = 10 * USECS_PER_SEC;
// How far tokens jump past the clock when the state file is unreadable.
constexpr std::int64_t kUnknownTokenJump = 1000 * kTokenBlock;

struct StateFile {
    std::uint32_t magic;
    std::uint32_t version;
    std::int64_t token_mark;  // no token above this was handed out
    std::int64_t horizon;     // no lease handed out expires after this
    pg_crc32c crc;
};

// CRC of everything in the file before the crc field.
pg_crc32c state_crc(const StateFile &s) {
    pg_crc32c crc;
    INIT_CRC32C(crc);
    COMP_CRC32C(crc, &s, offsetof(StateFile, crc));
    FIN_CRC32C(crc);
    return crc;
}

// Read the state file; false when it is missing or unusable.
bool read_state(StateFile *out, bool *missing) {
    *missing = false;
    int fd = OpenTransientFile(kStateFile, O_RDONLY | PG_BINARY);
    if (fd < 0) {
        if (errno == ENOENT) {
            *missing = true;
            return false;
        }
        ereport(LOG, (errcode_for_file_access(),
                      errmsg("lockext: could not open \"%s\": %m", kStateFile)));
        return false;
    }
    ssize_t n = read(fd, out, sizeof(*out));
    CloseTransientFile(fd);
    if (n != static_cast<ssize_t>(sizeof(*out)) || out->magic != kMagic ||
        out->version != kVersion || !EQ_CRC32C(out->crc, state_crc(*out))) {
        ereport(LOG, (errmsg("lockext: \"%s\" is corrupt; ignoring it", kStateFile)));
        return false;
    }
    return true;
}

// Write and fsync the state file atomically (write a temp file, rename).
void write_state(std::int64_t token_mark, std::int64_t horizon) {
    StateFile s;
    memset(&s, 0, sizeof(s));
    s.magic = kMagic;
    s.version = kVersion;
    s.token_mark = token_mark;
    s.horizon = horizon;
    s.crc = state_crc(s);
    int fd = OpenTransientFile(kStateTmp, O_WRONLY | O_CREAT | O_TRUNC | PG_BINARY);
    if (fd < 0)
        ereport(ERROR, (errcode_for_file_access(),
                        errmsg("lockext: could not create \"%s\": %m", kStateTmp)));
    errno = 0;
    if (write(fd, &s, sizeof(s)) != static_cast<ssize_t>(sizeof(s))) {
        if (errno == 0)
            errno = ENOSPC;
        int save = errno;
        CloseTransientFile(fd);
        errno = save;
        ereport(ERROR, (errcode_for_file_access(),
                        errmsg("lockext: could not write \"%s\": %m", kStateTmp)));
    }
    if (CloseTransientFile(fd) != 0)
        ereport(ERROR, (errcode_for_file_access(),
                        errmsg("lockext: could not close \"%s\": %m", kStateTmp)));
    // durable_rename fsyncs the file, renames it and fsyncs the directory.
    durable_rename(kStateTmp, kStateFile, ERROR);
}

// write_state() and, when `log` (not in replay), its WAL record, releasing
// `lock` first if either fails: the caller's cleanup takes table_lock, and
// the two are never held together.
void write_state_releasing(LWLock *lock, std::int64_t token_mark, std::int64_t horizon, bool log) {
    PG_TRY();
    {
        write_state(token_mark, horizon);
        if (log)
            lockext_wal_log_durable(token_mark, horizon);
    }
    PG_CATCH();
    {
        // errfinish() zeroed the interrupt holdoff count that LWLockAcquire
        // raised; LWLockRelease lowers it again. Raise it first, as
        // LWLockReleaseAll does, or the count goes negative and this
        // backend ignores cancels and terminations until its next error.
        HOLD_INTERRUPTS();
        LWLockRelease(lock);
        PG_RE_THROW();
    }
    PG_END_TRY();
}

}  // namespace

// Load the durable state at server start and seed the token counter.
void lockext_durable_startup(LockextShared *shared) {
    const TimestampTz now = GetCurrentTimestamp();
    StateFile s;
    bool missing = false;
    std::int64_t token_mark = 0;
    std::int64_t horizon = 0;
    if (read_state(&s, &missing)) {
        token_mark = s.token_mark;
        horizon = s.horizon;
    } else if (!missing) {
        // The file exists but cannot be trusted: assume the worst. Tokens
        // jump far past the clock, and leases granted before may be as long
        // as any TTL allowed now.
        token_mark = now + kUnknownTokenJump;
        horizon = now + static_cast<std::int64_t>(lockext_max_ttl_s) * USECS_PER_SEC;
    }
    const std::int64_t grace =
        now + static_cast<std::int64_t>(lockext_startup_grace_s) * USECS_PER_SEC;
    lockext::LockTable *t = shared->table;
    t->last_token = Max(token_mark, now);
    t->grace_until = Max(horizon, grace);
    if (t->grace_until > now)
        ereport(LOG, (errmsg("lockext: no lock will be granted before %s, when leases granted "
                             "before the restart have expired",
                             timestamptz_to_str(t->grace_until))));
    // Only what the file says is durable: the first grant above it writes it.
    pg_atomic_write_u64(&shared->durable_token, static_cast<uint64>(Max(token_mark, 0)));
    pg_atomic_write_u64(&shared->durable_horizon, static_cast<uint64>(Max(horizon, 0)));
}

// Make sure a crash cannot make `token` reappear or forget `expires_at`.
void lockext_durable_ensure(std::int64_t token, lockext::Timestamp expires_at) {
    LockextShared *sh = lockext_shared;
    const bool no_expiry = expires_at == lockext::kNever;
    auto covered = [&]() {
        return token <= static_cast<std::int64_t>(pg_atomic_read_u64(&sh->durable_token)) &&
               (no_expiry ||
                expires_at <= static_cast<std::int64_t>(pg_atomic_read_u64(&sh->durable_horizon)));
    };
    if (covered())
        return;
    LWLockAcquire(sh->state_lock, LW_EXCLUSIVE);
    if (!covered()) {
        std::int64_t mark = static_cast<std::int64_t>(pg_atomic_read_u64(&sh->durable_token));
        std::int64_t horizon = static_cast<std::int64_t>(pg_atomic_read_u64(&sh->durable_horizon));
        if (token > mark)
            mark = token + kTokenBlock;
        if (!no_expiry && expires_at > horizon)
            horizon = expires_at + kHorizonSlack;
        write_state_releasing(sh->state_lock, mark, horizon, true);
        pg_atomic_write_u64(&sh->durable_token, static_cast<uint64>(mark));
        pg_atomic_write_u64(&sh->durable_horizon, static_cast<uint64>(horizon));
    }
    LWLockRelease(sh->state_lock);
}

// Raise the durable marks to a replayed record's; see lock_shmem.hpp.
void lockext_durable_redo(std::int64_t token_mark, std::int64_t horizon) {
    LockextShared *sh = lockext_shared;
    if (sh == nullptr)
        return;
    LWLockAcquire(sh->state_lock, LW_EXCLUSIVE);
    const auto cur_mark = static_cast<std::int64_t>(pg_atomic_read_u64(&sh->durable_token));
    const auto cur_until = static_cast<std::int64_t>(pg_atomic_read_u64(&sh->durable_horizon));
    const std::int64_t mark = Max(token_mark, cur_mark);
    const std::int64_t until = Max(horizon, cur_until);
    if (mark != cur_mark || until != cur_until) {
        write_state_releasing(sh->state_lock, mark, until, false);
        pg_atomic_write_u64(&sh->durable_token, static_cast<uint64>(mark));
        pg_atomic_write_u64(&sh->durable_horizon, static_cast<uint64>(until));
    }
    LWLockRelease(sh->state_lock);
    // The lock table: tokens resume above the mark, and nothing is granted
    // before the horizon (a standby grants nothing anyway; this is what a
    // promotion starts from).
    LWLockAcquire(sh->table_lock, LW_EXCLUSIVE);
    lockext::LockTable *t = sh->table;
    t->last_token = Max(t->last_token, mark);
    t->grace_until = Max(t->grace_until, until);
    LWLockRelease(sh->table_lock);
}

// Log until when no lock will be granted; see lock_shmem.hpp.
void lockext_durable_report() {
    LockextShared *sh = lockext_shared;
    if (sh == nullptr)
        return;
    LWLockAcquire(sh->table_lock, LW_SHARED);
    const lockext::Timestamp until = sh->table->grace_until;
    LWLockRelease(sh->table_lock);
    if (until > GetCurrentTimestamp())
        ereport(LOG, (errmsg("lockext: no lock will be granted before %s, when the leases "
                             "granted before recovery have expired",
                             timestamptz_to_str(until))));
}
