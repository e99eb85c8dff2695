// Clang thread-safety annotations and the annotated mutex every client file uses.
//
// Clang's -Wthread-safety checks, at compile time, that a field marked
// GUARDED_BY(mu) is only touched while mu is held. The macros expand to nothing
// on other compilers, so g++ builds see plain code.
//
// Waiting on a condition variable: hold a MutexLock and loop on the guarded
// condition yourself, so the analysis sees the lock held while the predicate runs:
//
//   MutexLock lock(mu_);
//   while (!ready_) cv_.wait(lock.native());
#pragma once

#include <mutex>

#if defined(__clang__)
#define LOCKEXT_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define LOCKEXT_THREAD_ANNOTATION(x)
#endif

#define CAPABILITY(x) LOCKEXT_THREAD_ANNOTATION(capability(x))
#define SCOPED_CAPABILITY LOCKEXT_THREAD_ANNOTATION(scoped_lockable)
#define GUARDED_BY(x) LOCKEXT_THREAD_ANNOTATION(guarded_by(x))
#define PT_GUARDED_BY(x) LOCKEXT_THREAD_ANNOTATION(pt_guarded_by(x))
#define ACQUIRED_BEFORE(...) LOCKEXT_THREAD_ANNOTATION(acquired_before(__VA_ARGS__))
#define ACQUIRED_AFTER(...) LOCKEXT_THREAD_ANNOTATION(acquired_after(__VA_ARGS__))
#define REQUIRES(...) LOCKEXT_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define EXCLUDES(...) LOCKEXT_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define ACQUIRE(...) LOCKEXT_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define RELEASE(...) LOCKEXT_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define TRY_ACQUIRE(...) LOCKEXT_THREAD_ANNOTATION(try_acquire_capability(__VA_ARGS__))
#define ASSERT_CAPABILITY(x) LOCKEXT_THREAD_ANNOTATION(assert_capability(x))
#define RETURN_CAPABILITY(x) LOCKEXT_THREAD_ANNOTATION(lock_returned(x))
#define NO_THREAD_SAFETY_ANALYSIS LOCKEXT_THREAD_ANNOTATION(no_thread_safety_analysis)

namespace lockext::detail {

// A std::mutex the thread-safety analysis knows about.
class CAPABILITY("mutex") Mutex {
  public:
    Mutex() = default;
    Mutex(const Mutex &) = delete;
    Mutex &operator=(const Mutex &) = delete;

    // Block until the mutex is ours.
    void lock() ACQUIRE() {
        mu_.lock();
    }
    // Give the mutex back.
    void unlock() RELEASE() {
        mu_.unlock();
    }
    // Take the mutex only if it is free.
    bool try_lock() TRY_ACQUIRE(true) {
        return mu_.try_lock();
    }
    // Tell the analysis the caller holds the mutex (where it cannot see it).
    void assert_held() const ASSERT_CAPABILITY(this) {}

    // The wrapped std::mutex, for std::condition_variable and std::unique_lock.
    std::mutex &native() RETURN_CAPABILITY(this) {
        return mu_;
    }

  private:
    std::mutex mu_;
};

// Holds a Mutex for its scope; native() gives the std::unique_lock a condition
// variable's wait() needs.
class SCOPED_CAPABILITY MutexLock {
  public:
    // Lock mu until the end of the scope.
    explicit MutexLock(Mutex &mu) ACQUIRE(mu) : lock_(mu.native()) {}
    // Unlock (unless unlock() already did).
    ~MutexLock() RELEASE() {}
    MutexLock(const MutexLock &) = delete;
    MutexLock &operator=(const MutexLock &) = delete;

    // Release early, e.g. before calling out of the critical section.
    void unlock() RELEASE() {
        lock_.unlock();
    }
    // Take the mutex again after unlock().
    void lock() ACQUIRE() {
        lock_.lock();
    }

    // For std::condition_variable::wait / wait_until (which unlock and relock it).
    std::unique_lock<std::mutex> &native() {
        return lock_;
    }

  private:
    std::unique_lock<std::mutex> lock_;
};

}  // namespace lockext::detail
