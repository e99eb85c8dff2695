// Queue wakeups sent after commit by a notifier worker (src/queue_notify.cpp).
// Include after postgres.h.
#pragma once

extern "C" {
#include "storage/lwlock.h"
}

// Bytes of the notifier's shared state.
Size lockext_notify_shmem_size();
// Create (or attach to) the notifier's shared state; under AddinShmemInitLock.
void lockext_notify_shmem_init(LWLock *lock);
// Announce new ready jobs of `queue` to its LISTEN channel once the current
// transaction commits.
void lockext_notify_after_commit(const char *queue);
