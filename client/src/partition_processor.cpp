// PartitionProcessor: per-key FIFO queues, a FIFO of ready keys, N workers.
//
// Locking protocol
// ----------------
// PartitionState::mu_ guards all scheduling state: keys_ (the KeyQueue of every
// key with queued or running tasks, and every field of each KeyQueue),
// spare_keys_, the ready list (ready_head_/ready_tail_), the task-node free
// list, the counters, accepting_ and idle_workers_. Three condition variables
// wait on mu_:
//   work_cv_   workers, for a ready key or for the end of a shutdown;
//   space_cv_  submitters, for room under capacity or for shutdown;
//   idle_cv_   wait_idle, for nothing queued or running.
// join_mu_ guards workers_ and serialises joining them. No thread ever holds
// mu_ and join_mu_ together (the workers being joined take only mu_), so the
// two cannot deadlock.
// Tasks, task destructors and on_error always run with no mutex held.
//
// Invariant (under mu_): every KeyQueue in keys_ is in exactly one state —
//   ready:   not running, at least one queued task, linked in the ready list;
//   running: a worker runs one of its tasks (its queue may be empty).
// A key is never in the ready list while running, so it runs on one worker at
// a time. A worker that finishes a task re-queues its key at the ready tail if
// tasks remain, otherwise erases it. A KeyQueue's address is stable while it is
// in keys_ (unordered_map nodes do not move), and a worker reads its key
// without mu_ while running it: the key is written before the KeyQueue is
// published and not changed until it is erased, which never happens while a
// worker runs it.
//
// Wakeups: enqueue notifies one idle worker when a key becomes ready; a worker
// that takes a key while more keys are ready and others sleep passes a wakeup
// on, so a burst of ready keys reaches every idle worker. Taking a task frees
// one unit of capacity and notifies one submitter; a timed submitter that wakes
// re-checks for room before its deadline, so a timeout never wastes the room
// it was woken for.
#include "lockext/partition_processor.hpp"

#include <algorithm>
#include <condition_variable>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "thread_annotations.hpp"

namespace lockext {
namespace detail {

namespace {

using Clock = std::chrono::steady_clock;

// Most worker threads a processor may start (a guard against nonsense values).
constexpr std::size_t kMaxWorkers = 4096;
// Recycled task nodes kept, so steady-state submits do not malloc a node.
constexpr std::size_t kMaxSpareNodes = 1024;
// Recycled key entries kept (map nodes with their key string's memory).
constexpr std::size_t kMaxSpareKeys = 256;

// One queued task, linked into its key's queue (or the free list).
struct TaskNode {
    PartitionProcessor::Task fn;
    TaskNode *next = nullptr;
};

// The queue of one key; see the invariant at the top.
struct KeyQueue {
    const std::string *key = nullptr;  // the map node's key
    TaskNode *head = nullptr;
    TaskNode *tail = nullptr;
    KeyQueue *next_ready = nullptr;
    bool running = false;
};

// std::hash over string_view, so keys_ can be searched without building a std::string.
struct KeyHash {
    using is_transparent = void;
    // Hash any string-like key the same way.
    std::size_t operator()(std::string_view key) const noexcept {
        return std::hash<std::string_view>{}(key);
    }
};

// The processor this thread is a worker of, if any: detects calls from tasks.
thread_local const PartitionState *tl_current_processor = nullptr;

}  // namespace

// Everything behind a PartitionProcessor.
class PartitionState {
  public:
    // Check the options; workers start in start().
    explicit PartitionState(PartitionOptions options);
    // Free recycled memory; shutdown() must have finished.
    ~PartitionState() NO_THREAD_SAFETY_ANALYSIS;

    // Launch the worker threads; on failure stop those already started and rethrow.
    void start(std::size_t workers) EXCLUDES(mu_, join_mu_);
    // Queue task for key, waiting for room until deadline (forever when unset).
    // False when the deadline passed first.
    bool enqueue(std::string_view key, PartitionProcessor::Task &&task,
                 std::optional<Clock::time_point> deadline) EXCLUDES(mu_);
    // Wait until nothing is queued or running.
    void wait_idle() EXCLUDES(mu_);
    // Stop accepting, drain or cancel, join the workers; returns tasks discarded.
    std::size_t shutdown(Drain drain) EXCLUDES(mu_, join_mu_);
    // A snapshot of the counters.
    PartitionStats stats() const EXCLUDES(mu_);

  private:
    using KeyMap = std::unordered_map<std::string, KeyQueue, KeyHash, std::equal_to<>>;

    // One worker thread's loop: take a ready key, run one task, repeat.
    void worker_main() EXCLUDES(mu_);
    // Append q to the ready list.
    void push_ready(KeyQueue *q) REQUIRES(mu_);
    // Remove and return the first ready key, or null.
    KeyQueue *pop_ready() REQUIRES(mu_);
    // The queue of key, created when missing (may throw std::bad_alloc).
    KeyQueue *find_or_insert(std::string_view key) REQUIRES(mu_);
    // Drop q from keys_, keeping its map node for reuse when there is room.
    void erase_key(KeyQueue *q) REQUIRES(mu_);
    // An empty task node (recycled or new; may throw std::bad_alloc).
    std::unique_ptr<TaskNode> take_node() REQUIRES(mu_);
    // Return a node whose task was already destroyed.
    void recycle_node(TaskNode *node) REQUIRES(mu_);

    const std::size_t capacity_;
    const std::function<void(std::string_view, std::exception_ptr)> on_error_;

    mutable Mutex mu_;
    std::condition_variable work_cv_;
    std::condition_variable space_cv_;
    std::condition_variable idle_cv_;
    KeyMap keys_ GUARDED_BY(mu_);
    std::vector<KeyMap::node_type> spare_keys_ GUARDED_BY(mu_);  // capacity kMaxSpareKeys
    KeyQueue *ready_head_ GUARDED_BY(mu_) = nullptr;
    KeyQueue *ready_tail_ GUARDED_BY(mu_) = nullptr;
    TaskNode *spare_nodes_ GUARDED_BY(mu_) = nullptr;
    std::size_t spare_node_count_ GUARDED_BY(mu_) = 0;
    std::size_t queued_ GUARDED_BY(mu_) = 0;
    std::size_t running_ GUARDED_BY(mu_) = 0;
    std::size_t idle_workers_ GUARDED_BY(mu_) = 0;
    bool accepting_ GUARDED_BY(mu_) = true;
    PartitionStats counters_ GUARDED_BY(mu_);  // queued/running filled in by stats()

    Mutex join_mu_;
    std::vector<std::thread> workers_ GUARDED_BY(join_mu_);
};

PartitionState::PartitionState(PartitionOptions options)
    : capacity_(options.capacity), on_error_(std::move(options.on_error)) {
    if (options.workers == 0 || options.workers > kMaxWorkers) {
        throw InvalidArgument("PartitionProcessor: workers must be between 1 and " +
                              std::to_string(kMaxWorkers) + ", got " +
                              std::to_string(options.workers));
    }
    if (options.capacity == 0) {
        throw InvalidArgument("PartitionProcessor: capacity must be at least 1");
    }
    spare_keys_.reserve(kMaxSpareKeys);  // so erase_key never allocates
}

PartitionState::~PartitionState() {
    for (auto &[key, q] : keys_) {
        for (TaskNode *n = q.head; n != nullptr;)
            delete std::exchange(n, n->next);
    }
    for (TaskNode *n = spare_nodes_; n != nullptr;)
        delete std::exchange(n, n->next);
}

void PartitionState::start(std::size_t workers) {
    try {
        MutexLock lock(join_mu_);
        workers_.reserve(workers);
        for (std::size_t i = 0; i < workers; ++i)
            workers_.emplace_back([this] { worker_main(); });
    } catch (...) {
        shutdown(Drain::cancel);
        throw;
    }
}

void PartitionState::push_ready(KeyQueue *q) {
    q->next_ready = nullptr;
    if (ready_tail_ != nullptr) {
        ready_tail_->next_ready = q;
    } else {
        ready_head_ = q;
    }
    ready_tail_ = q;
}

KeyQueue *PartitionState::pop_ready() {
    KeyQueue *q = ready_head_;
    if (q == nullptr)
        return nullptr;
    ready_head_ = q->next_ready;
    if (ready_head_ == nullptr)
        ready_tail_ = nullptr;
    q->next_ready = nullptr;
    return q;
}

KeyQueue *PartitionState::find_or_insert(std::string_view key) {
    if (auto it = keys_.find(key); it != keys_.end())
        return &it->second;
    KeyMap::iterator it;
    if (!spare_keys_.empty()) {
        KeyMap::node_type node = std::move(spare_keys_.back());
        spare_keys_.pop_back();
        node.key().assign(key);
        node.mapped() = KeyQueue{};
        it = keys_.insert(std::move(node)).position;
    } else {
        it = keys_.emplace(std::string(key), KeyQueue{}).first;
    }
    it->second.key = &it->first;
    return &it->second;
}

void PartitionState::erase_key(KeyQueue *q) {
    auto it = keys_.find(*q->key);
    if (spare_keys_.size() < kMaxSpareKeys) {
        spare_keys_.push_back(keys_.extract(it));  // reserved: cannot throw
    } else {
        keys_.erase(it);
    }
}

std::unique_ptr<TaskNode> PartitionState::take_node() {
    if (spare_nodes_ == nullptr)
        return std::make_unique<TaskNode>();
    --spare_node_count_;
    std::unique_ptr<TaskNode> node(std::exchange(spare_nodes_, spare_nodes_->next));
    node->next = nullptr;
    return node;
}

void PartitionState::recycle_node(TaskNode *node) {
    if (spare_node_count_ >= kMaxSpareNodes) {
        delete node;
        return;
    }
    node->next = spare_nodes_;
    spare_nodes_ = node;
    ++spare_node_count_;
}

bool PartitionState::enqueue(std::string_view key, PartitionProcessor::Task &&task,
                             std::optional<Clock::time_point> deadline) {
    const bool from_worker = tl_current_processor == this;
    MutexLock lock(mu_);
    while (accepting_ && queued_ >= capacity_ && !from_worker) {
        if (!deadline) {
            space_cv_.wait(lock.native());
            continue;
        }
        // Room is checked (loop condition) before the deadline, so a wakeup
        // that brought room is used even if it arrived just at the deadline.
        if (Clock::now() >= *deadline)
            return false;
        space_cv_.wait_until(lock.native(), *deadline);
    }
    if (!accepting_)
        throw ProcessorStopped("PartitionProcessor: submit after shutdown");

    // Allocate before changing anything, so std::bad_alloc leaves no trace.
    std::unique_ptr<TaskNode> node = take_node();
    KeyQueue *q = find_or_insert(key);
    node->fn = std::move(task);
    TaskNode *n = node.release();
    if (q->tail != nullptr) {
        q->tail->next = n;
    } else {
        q->head = n;
    }
    q->tail = n;
    ++queued_;
    ++counters_.submitted;
    // A key with no other task queued and not running has just become ready.
    if (!q->running && q->head == n) {
        push_ready(q);
        if (idle_workers_ > 0)
            work_cv_.notify_one();
    }
    return true;
}

void PartitionState::worker_main() {
    tl_current_processor = this;
    MutexLock lock(mu_);
    for (;;) {
        while (ready_head_ == nullptr && (accepting_ || queued_ > 0)) {
            ++idle_workers_;
            work_cv_.wait(lock.native());
            --idle_workers_;
        }
        KeyQueue *q = pop_ready();
        if (q == nullptr)
            break;  // shut down and nothing left to run
        if (ready_head_ != nullptr && idle_workers_ > 0)
            work_cv_.notify_one();

        TaskNode *node = q->head;
        q->head = node->next;
        if (q->head == nullptr)
            q->tail = nullptr;
        q->running = true;
        --queued_;
        ++running_;
        space_cv_.notify_one();
        lock.unlock();

        const std::string_view key = *q->key;  // stable while running: see the protocol
        std::exception_ptr error;
        try {
            node->fn();
        } catch (...) {
            error = std::current_exception();
        }
        node->fn = nullptr;  // destroy the task's captures outside the lock
        const bool failed = error != nullptr;
        bool reported = false;
        if (failed && on_error_) {
            try {
                on_error_(key, error);
                reported = true;
            } catch (...) {
                // A throwing callback must not kill the worker; counted as unreported.
            }
        }
        error = nullptr;  // free the exception object outside the lock

        lock.lock();
        recycle_node(node);
        --running_;
        ++counters_.completed;
        if (failed) {
            ++counters_.failed;
            if (!reported)
                ++counters_.unreported;
        }
        q->running = false;
        if (q->head != nullptr) {
            push_ready(q);
        } else {
            erase_key(q);
        }
        if (queued_ == 0 && running_ == 0)
            idle_cv_.notify_all();
        if (!accepting_ && queued_ == 0)
            work_cv_.notify_all();  // idle workers may leave
    }
}

void PartitionState::wait_idle() {
    if (tl_current_processor == this) {
        throw InvalidArgument("PartitionProcessor: wait_idle from one of its own tasks");
    }
    MutexLock lock(mu_);
    while (queued_ > 0 || running_ > 0)
        idle_cv_.wait(lock.native());
}

std::size_t PartitionState::shutdown(Drain drain) {
    if (tl_current_processor == this) {
        throw InvalidArgument("PartitionProcessor: shutdown from one of its own tasks");
    }
    TaskNode *dropped = nullptr;
    std::size_t cancelled = 0;
    {
        MutexLock lock(mu_);
        accepting_ = false;
        if (drain == Drain::cancel && queued_ > 0) {
            for (auto it = keys_.begin(); it != keys_.end();) {
                KeyQueue &q = it->second;
                for (TaskNode *n = q.head; n != nullptr;) {
                    TaskNode *next = n->next;
                    n->next = dropped;
                    dropped = n;
                    ++cancelled;
                    n = next;
                }
                q.head = q.tail = nullptr;
                // A running key is erased by its worker when the task ends.
                it = q.running ? std::next(it) : keys_.erase(it);
            }
            ready_head_ = ready_tail_ = nullptr;
            queued_ = 0;
            counters_.cancelled += cancelled;
            if (running_ == 0)
                idle_cv_.notify_all();
        }
        work_cv_.notify_all();
        space_cv_.notify_all();
    }
    for (TaskNode *n = dropped; n != nullptr;)
        delete std::exchange(n, n->next);

    MutexLock lock(join_mu_);
    for (std::thread &worker : workers_) {
        if (worker.joinable())
            worker.join();
    }
    return cancelled;
}

PartitionStats PartitionState::stats() const {
    MutexLock lock(mu_);
    PartitionStats s = counters_;
    s.queued = queued_;
    s.running = running_;
    return s;
}

}  // namespace detail

// ---- PartitionProcessor ---------------------------------------------------

PartitionProcessor::PartitionProcessor(PartitionOptions options) {
    const std::size_t workers = options.workers;
    state_ = std::make_unique<detail::PartitionState>(std::move(options));
    state_->start(workers);
}

PartitionProcessor::~PartitionProcessor() {
    state_->shutdown(Drain::all);
}

void PartitionProcessor::submit(std::string_view key, Task task) {
    if (!task)
        throw InvalidArgument("PartitionProcessor: empty task");
    state_->enqueue(key, std::move(task), std::nullopt);
}

bool PartitionProcessor::try_submit_for(std::string_view key, Task task,
                                        std::chrono::milliseconds timeout) {
    if (!task)
        throw InvalidArgument("PartitionProcessor: empty task");
    const auto now = detail::Clock::now();
    // A timeout beyond the clock's range means: wait as long as it takes.
    std::optional<detail::Clock::time_point> deadline;
    if (std::chrono::duration<double>(timeout) <
        std::chrono::duration<double>(detail::Clock::time_point::max() - now)) {
        deadline = now + std::max(timeout, std::chrono::milliseconds::zero());
    }
    return state_->enqueue(key, std::move(task), deadline);
}

void PartitionProcessor::wait_idle() {
    state_->wait_idle();
}

std::size_t PartitionProcessor::shutdown(Drain drain) {
    return state_->shutdown(drain);
}

PartitionStats PartitionProcessor::stats() const {
    return state_->stats();
}

}  // namespace lockext
