// lockext::PartitionProcessor: ordered per key, parallel across keys, in one process.
//
//   lockext::PartitionProcessor orders({.workers = 4, .capacity = 10000,
//       .on_error = [](std::string_view key, std::exception_ptr e) { log(key, e); }});
//   orders.submit("user:42", [] { charge(42); });
//   orders.submit("user:42", [] { email_receipt(42); });  // after charge(42), never alongside
//   orders.shutdown(lockext::Drain::all);
//
// Guarantees:
// - Tasks of one key run one at a time, in the order they were accepted (when one
//   submit returns before another begins, its task runs first).
//   A task's error callback (if it threw) returns before the next task of that
//   key starts, so every effect of task n happens-before task n + 1.
// - Tasks of different keys run in parallel on up to `workers` threads. Keys are
//   not bound to a worker: each key with queued work waits in one FIFO of ready
//   keys, and whichever worker is free takes the next ready key, runs one task
//   of it and puts the key back at the end of that FIFO if more tasks remain. A
//   slow task therefore delays only its own key, never other keys (unlike
//   hashing keys onto fixed workers, the Kafka partition model), and a key with
//   a long backlog shares the workers round-robin with the others.
// - Bounded memory: at most `capacity` tasks are queued and not yet started,
//   counted over all keys together. A full processor makes submit block and
//   try_submit_for wait at most its timeout (backpressure). Per-key bookkeeping
//   exists only for keys with queued or running tasks.
// - No error is dropped: an exception escaping a task goes to on_error with the
//   task's key. Without on_error, or when on_error itself throws, the failure is
//   counted in stats().unreported (stats().failed counts every failure).
// - shutdown(Drain::all) runs every task accepted before it, then stops;
//   shutdown(Drain::cancel) discards accepted tasks that have not started,
//   waits for the running ones, and returns how many it discarded. The
//   destructor does shutdown(Drain::all) if no shutdown happened yet.
//
// Not promised:
// - Order between different keys.
// - Backpressure for tasks submitted by the processor's own tasks: those are
//   always admitted even when full, because a worker blocking on its own
//   processor could stop every worker for good. Fan-out from tasks can thus
//   exceed capacity; keep it bounded.
// - Calls from inside a task to shutdown, wait_idle or the destructor of the
//   same processor would wait for themselves: shutdown and wait_idle throw
//   InvalidArgument there, and destroying the processor there is a bug.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string_view>

#include "lockext/lockext.hpp"

namespace lockext {

// submit or try_submit_for after shutdown began (also thrown to a submitter that
// was blocked waiting for room when shutdown began).
class ProcessorStopped : public Error {
  public:
    using Error::Error;
};

// What shutdown does with tasks that are queued but not started.
enum class Drain {
    all,     // run them all, then stop
    cancel,  // discard them; running tasks still finish
};

struct PartitionOptions {
    // Threads running tasks; 1 to 4096.
    std::size_t workers = 4;
    // Most tasks queued and not yet started, over all keys together; at least 1.
    std::size_t capacity = 10000;
    // Receives every exception a task throws, with the task's key (valid during
    // the call only). Runs on a worker thread, possibly on several at once for
    // different keys, so it must be thread-safe.
    std::function<void(std::string_view key, std::exception_ptr error)> on_error;
};

// Counters since construction (a consistent snapshot).
struct PartitionStats {
    std::uint64_t submitted = 0;   // tasks accepted
    std::uint64_t completed = 0;   // tasks that ran, failed or not
    std::uint64_t failed = 0;      // tasks that threw
    std::uint64_t unreported = 0;  // failures no on_error took (unset, or it threw)
    std::uint64_t cancelled = 0;   // tasks discarded by shutdown(Drain::cancel)
    std::size_t queued = 0;        // accepted and not started
    std::size_t running = 0;       // started and not finished
};

namespace detail {
class PartitionState;
}

// Runs tasks keyed by a string: in submit order per key, in parallel across keys.
// Thread-safe: any thread may submit. Not copyable or movable.
class PartitionProcessor {
  public:
    using Task = std::function<void()>;

    // Start options.workers threads. Throws InvalidArgument for a worker count
    // outside 1..4096 or a capacity of 0.
    explicit PartitionProcessor(PartitionOptions options = {});
    // shutdown(Drain::all) unless a shutdown already happened.
    ~PartitionProcessor();
    PartitionProcessor(const PartitionProcessor &) = delete;
    PartitionProcessor &operator=(const PartitionProcessor &) = delete;

    // Queue task after the earlier tasks of key, blocking while the processor is
    // full. Throws ProcessorStopped after shutdown began, InvalidArgument for an
    // empty task.
    void submit(std::string_view key, Task task);

    // As submit, but wait for room at most timeout; false (task discarded) when
    // none came. timeout <= 0 tries once.
    bool try_submit_for(std::string_view key, Task task, std::chrono::milliseconds timeout);

    // Block until no task is queued or running. Tasks submitted meanwhile are
    // waited for too. Throws InvalidArgument from inside a task.
    void wait_idle();

    // Stop accepting tasks, deal with the queued ones as drain says, wait for the
    // workers to finish, and return how many tasks this call discarded. Safe to
    // call again or concurrently (later calls return 0 once the first finished;
    // a cancel during a running drain still discards what is left). Throws
    // InvalidArgument from inside a task.
    std::size_t shutdown(Drain drain = Drain::all);

    PartitionStats stats() const;

  private:
    std::unique_ptr<detail::PartitionState> state_;
};

}  // namespace lockext
