// The watchdog thread: renews auto-renewed leases when they fall due.
//
// Locking protocol:
//   Shared::mu guards the queue (a binary min-heap of LockState pointers on
//   WatchSlot::due, each slot knowing its index so it can be removed or moved
//   in O(log n)), every LockState's WatchSlot, the thread's sleeping_until
//   target, the started/shutdown flags and the thread handle. It is never held
//   during a renewal (a backend call), so watch() never waits for the network.
//
// Lifetimes: the queue holds raw pointers. A queued state is removed by
//   unwatch() (release) or, at the latest, by ~LockState (which calls
//   unwatch() when its slot is still queued), both under mu. To renew, the
//   thread takes a reference with LockState::try_ref() under mu, *before*
//   taking the state out of the queue: a state whose count already reached
//   zero is then still marked queued, so its destructor is (or will be)
//   waiting for mu in unwatch() and its memory stays valid until we let go.
//   If try_ref() fails the entry is dropped and the state is never touched
//   again; `queued` turns false (release) only after our last access, so a
//   destructor that reads it false (acquire) may free the memory at once.
//
// Wakeups: the thread sleeps on the condition variable until the earliest due
// time. watch() signals it only when the new due time is earlier than the one
// it sleeps towards, so a stream of acquires with one ttl costs no wakeups.
//
// Core lifetime: the thread holds a reference to Shared, not to the Watchdog.
// If the thread itself drops the last reference to a Core (a LockState it was
// renewing was the last thing keeping it alive), ~Watchdog runs on this very
// thread: it detaches instead of joining itself, and the loop then sees
// shutdown and exits touching only Shared.
#include "watchdog.hpp"

#include <condition_variable>
#include <vector>

#include "lock_state.hpp"

namespace lockext::detail {

namespace {

using Steady = std::chrono::steady_clock;

}  // namespace

struct Watchdog::Shared {
    Mutex mu;
    std::condition_variable cv;
    std::vector<LockState *> heap GUARDED_BY(mu);
    // What the thread sleeps towards: max when idle, min while it is renewing
    // (it looks at the queue again before sleeping, so no signal is needed).
    Steady::time_point sleeping_until GUARDED_BY(mu) = Steady::time_point::max();
    bool started GUARDED_BY(mu) = false;
    bool shutdown GUARDED_BY(mu) = false;
    std::jthread thread GUARDED_BY(mu);

    // Whether heap[a] is due before heap[b].
    bool earlier(std::size_t a, std::size_t b) const REQUIRES(mu) {
        return heap[a]->watch.due < heap[b]->watch.due;
    }
    // Put the state at i and record its index.
    void place(std::size_t i, LockState *state) REQUIRES(mu) {
        heap[i] = state;
        state->watch.index = i;
    }
    // Swap two heap positions.
    void swap_at(std::size_t a, std::size_t b) REQUIRES(mu) {
        LockState *sa = heap[a];
        place(a, heap[b]);
        place(b, sa);
    }
    // Restore the heap order around i after its due time changed.
    void fix(std::size_t i) REQUIRES(mu) {
        while (i > 0 && earlier(i, (i - 1) / 2)) {
            swap_at(i, (i - 1) / 2);
            i = (i - 1) / 2;
        }
        for (;;) {
            const std::size_t l = 2 * i + 1, r = l + 1;
            std::size_t m = i;
            if (l < heap.size() && earlier(l, m))
                m = l;
            if (r < heap.size() && earlier(r, m))
                m = r;
            if (m == i)
                return;
            swap_at(i, m);
            i = m;
        }
    }
    // Queue state (not queued yet).
    void push(LockState *state) REQUIRES(mu) {
        heap.push_back(nullptr);
        place(heap.size() - 1, state);
        state->watch.queued.store(true, std::memory_order_relaxed);
        fix(heap.size() - 1);
    }
    // Take the state at i out of the queue.
    void remove_at(std::size_t i) REQUIRES(mu) {
        LockState *state = heap[i];
        const std::size_t last = heap.size() - 1;
        if (i != last)
            place(i, heap[last]);
        heap.pop_back();
        if (i != last)
            fix(i);
        state->watch.index = WatchSlot::npos;
        // Last: the destructor may free the state once it reads false.
        state->watch.queued.store(false, std::memory_order_release);
    }
};

// No thread yet: it starts on the first watch().
Watchdog::Watchdog() : shared_(std::make_shared<Shared>()) {}

// Stop the thread; never joins itself (see Core lifetime above).
Watchdog::~Watchdog() {
    std::jthread thread;
    {
        MutexLock lock(shared_->mu);
        shared_->shutdown = true;
        thread = std::move(shared_->thread);
    }
    shared_->cv.notify_all();
    if (!thread.joinable())
        return;
    if (thread.get_id() == std::this_thread::get_id())
        thread.detach();
    else
        thread.join();
}

// Queue state for renewal at due, or move it there if already queued.
void Watchdog::watch(LockState &state, Steady::time_point due) {
    Shared &s = *shared_;
    MutexLock lock(s.mu);
    if (s.shutdown)
        return;
    WatchSlot &slot = state.watch;
    slot.registered = true;
    slot.due = due;
    if (slot.index == WatchSlot::npos)
        s.push(&state);
    else
        s.fix(slot.index);
    if (!s.started) {
        // Flagged only once the thread exists: if creating it throws, the
        // next watch() tries again instead of queueing leases no one renews.
        s.thread = std::jthread(run, shared_);
        s.started = true;
    } else if (due < s.sleeping_until) {
        s.cv.notify_one();
    }
}

// Forget state: not renewed again, not referred to any more.
void Watchdog::unwatch(LockState &state) noexcept {
    Shared &s = *shared_;
    MutexLock lock(s.mu);
    state.watch.registered = false;
    if (state.watch.index != WatchSlot::npos)
        s.remove_at(state.watch.index);
}

// The thread: take the earliest due state, renew it outside the lock, requeue.
void Watchdog::run(std::shared_ptr<Shared> shared) {
    Shared &s = *shared;
    MutexLock lock(s.mu);
    while (!s.shutdown) {
        if (s.heap.empty()) {
            s.sleeping_until = Steady::time_point::max();
            s.cv.wait(lock.native());
            continue;
        }
        const Steady::time_point due = s.heap.front()->watch.due;
        if (due > Steady::now()) {
            s.sleeping_until = due;
            s.cv.wait_until(lock.native(), due);
            continue;
        }
        s.sleeping_until = Steady::time_point::min();
        LockState *state = s.heap.front();
        // The reference first, the dequeue second (see Lifetimes above).
        const bool alive = state->try_ref();
        s.remove_at(0);
        if (!alive)
            continue;  // being destroyed; it is out of the queue now
        lock.unlock();
        const std::optional<Steady::time_point> next = state->watchdog_renew();
        lock.lock();
        // Requeue unless released meanwhile, or already requeued by a user renew.
        if (next && !s.shutdown && state->watch.registered &&
            state->watch.index == WatchSlot::npos) {
            state->watch.due = *next;
            s.push(state);
        }
        // Dropping the reference may destroy the state, its Core and this
        // Watchdog (on this thread); their destructors take mu.
        lock.unlock();
        LockState::unref(state);
        lock.lock();
    }
}

}  // namespace lockext::detail
