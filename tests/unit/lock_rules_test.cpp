// eca::Mutex and the locking rule of `*_locked` functions (provider/core/mutex.hpp).
//
// In checked builds (Debug, sanitizer builds: ECA_LOCK_CHECKS) a `*_locked` function called
// without its mutex aborts; the death tests below exist only there. Every build checks that
// eca::Mutex is an ordinary lockable mutex for the standard lock types.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#include "provider/core/backend.hpp"
#include "provider/core/mutex.hpp"
#include "provider/core/objects.hpp"

namespace {

TEST(LockRules, MutexWorksWithTheStandardLockTypes) {
  eca::Mutex a, b;
  {
    std::scoped_lock both(a, b);
    EXPECT_FALSE(a.try_lock());  // held (by us): a second lock must not succeed
  }
  std::unique_lock ua(a, std::try_to_lock);
  ASSERT_TRUE(ua.owns_lock());
  ua.unlock();

  // Mutual exclusion between threads: a counter incremented under the mutex loses nothing.
  int counter = 0;
  constexpr int kPerThread = 20000;
  auto work = [&] {
    for (int i = 0; i < kPerThread; i++) {
      std::lock_guard g(a);
      counter = counter + 1;
    }
  };
  std::thread t1(work), t2(work);
  t1.join();
  t2.join();
  EXPECT_EQ(counter, 2 * kPerThread);
}

TEST(LockRules, LockedFunctionRunsUnderItsLock) {
  eca::Qp qp;
  qp.sq.init(4);
  qp.sq.tail = 3;
  {
    std::lock_guard g(qp.sq_mu);
    qp.publish_sq_locked();
  }
  EXPECT_EQ(qp.sq_unsent.to.load(), 3u);
  EXPECT_FALSE(qp.sq_unsent.empty());
}

#if ECA_LOCK_CHECKS

TEST(LockRules, MutexKnowsItsOwner) {
  eca::Mutex m;
  EXPECT_FALSE(m.held_by_me());
  {
    std::lock_guard g(m);
    EXPECT_TRUE(m.held_by_me());
  }
  EXPECT_FALSE(m.held_by_me());
  ASSERT_TRUE(m.try_lock());
  EXPECT_TRUE(m.held_by_me());
  m.unlock();

  // Held by another thread is not held by this one.
  std::atomic<bool> locked{false}, release{false};
  std::thread other([&] {
    std::lock_guard g(m);
    locked.store(true);
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!release.load() && std::chrono::steady_clock::now() < end) std::this_thread::yield();
  });
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!locked.load() && std::chrono::steady_clock::now() < end) std::this_thread::yield();
  ASSERT_TRUE(locked.load());
  EXPECT_FALSE(m.held_by_me());
  release.store(true);
  other.join();
}

using LockRulesDeathTest = ::testing::Test;

TEST_F(LockRulesDeathTest, LockedFunctionWithoutItsLockAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  eca::Qp qp;
  qp.sq.init(4);
  qp.rq.init(4);
  EXPECT_DEATH(qp.publish_sq_locked(), "locking rule broken at .*objects.hpp:[0-9]+: sq_mu is not held");
  EXPECT_DEATH(qp.publish_rq_locked(), "rq_mu is not held");
  // The other queue's lock is not this one's.
  EXPECT_DEATH(
      {
        std::lock_guard g(qp.rq_mu);
        qp.publish_sq_locked();
      },
      "sq_mu is not held");
}

// Another thread holds `m` while this one asserts it holds it: aborts there. The rest runs
// only if the check is missing.
void assert_while_another_thread_holds() {
  eca::Mutex m;
  std::atomic<bool> locked{false};
  std::atomic<bool> release{false};
  std::thread other([&] {
    std::lock_guard g(m);
    locked.store(true);
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!release.load() && std::chrono::steady_clock::now() < end) std::this_thread::yield();
  });
  while (!locked.load()) std::this_thread::yield();
  ECA_ASSERT_HELD(m);
  release.store(true);
  other.join();
}

TEST_F(LockRulesDeathTest, HeldByAnotherThreadIsNotHeld) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(assert_while_another_thread_holds(), "m is not held by this thread");
}

#endif  // ECA_LOCK_CHECKS

}  // namespace
