// eca::Mutex: a std::mutex that can state its locking rule.
//
// A function named `*_locked` runs with a given mutex held by its caller; it says so at its
// entry with ECA_ASSERT_HELD(that_mutex). In checked builds (ECA_LOCK_CHECKS: CMake defines it
// for CMAKE_BUILD_TYPE=Debug and for every sanitizer build) the mutex records the thread that
// owns it, and the assertion aborts the process with a message when the calling thread does
// not hold it. Otherwise the mutex is a plain std::mutex and the macro compiles to nothing.
//
// BasicLockable and Lockable: std::lock_guard, std::unique_lock, std::scoped_lock and
// std::try_to_lock work unchanged. A std::condition_variable cannot wait on it; a mutex that
// one waits on stays a std::mutex (or the wait uses std::condition_variable_any).
//
// The lock order of every mutex in the project: docs/architecture.md, "Lock order".
#pragma once

#include <mutex>

#if ECA_LOCK_CHECKS
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <thread>
#endif

namespace eca {

#if ECA_LOCK_CHECKS
// Reports that `what` is not held by the calling thread at `file`:`line`, and aborts.
[[noreturn]] inline void lock_rule_broken(const char *what, const char *file, int line) {
  std::fprintf(stderr, "eca: locking rule broken at %s:%d: %s is not held by this thread\n",
               file, line, what);
  std::abort();
}
#endif

class Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex &) = delete;
  Mutex &operator=(const Mutex &) = delete;

#if ECA_LOCK_CHECKS
  void lock() {
    m_.lock();
    owner_.store(std::this_thread::get_id(), std::memory_order_relaxed);
  }
  bool try_lock() {
    if (!m_.try_lock()) return false;
    owner_.store(std::this_thread::get_id(), std::memory_order_relaxed);
    return true;
  }
  void unlock() {
    owner_.store(std::thread::id(), std::memory_order_relaxed);
    m_.unlock();
  }
  // True if the calling thread holds the mutex. Relaxed is enough: only the owner stores its
  // own id, and a thread always reads its own latest store, so no other thread reads its id.
  bool held_by_me() const {
    return owner_.load(std::memory_order_relaxed) == std::this_thread::get_id();
  }
  // Aborts unless the calling thread holds the mutex (use ECA_ASSERT_HELD: it names the mutex
  // and compiles to nothing in unchecked builds).
  void assert_held(const char *what = "mutex", const char *file = __builtin_FILE(),
                   int line = __builtin_LINE()) const {
    if (!held_by_me()) lock_rule_broken(what, file, line);
  }
#else
  void lock() { m_.lock(); }
  bool try_lock() { return m_.try_lock(); }
  void unlock() { m_.unlock(); }
#endif

 private:
  std::mutex m_;
#if ECA_LOCK_CHECKS
  std::atomic<std::thread::id> owner_{};
#endif
};

}  // namespace eca

// The locking rule of a `*_locked` function: `mu` (an eca::Mutex) is held by the caller.
#if ECA_LOCK_CHECKS
#define ECA_ASSERT_HELD(mu) (mu).assert_held(#mu, __FILE__, __LINE__)
#else
#define ECA_ASSERT_HELD(mu) ((void)0)
#endif
