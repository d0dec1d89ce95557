// ThreadSanitizer annotations for the modeled adapter's hand-offs that TSan cannot see.
// Nothing here generates code outside a -DECA_SANITIZE=thread build.
//
// TSan orders threads only through synchronisation it observes at one virtual address. The
// adapter synchronises in two ways it does not observe:
//  - the link rings: both ends map the same memory, each at an address of its own, so when
//    both ends live in one process (the unit tests) the producer's release store of a ring
//    tail and the consumer's acquire load of it are accesses to two different addresses.
//    link_key() names one synchronisation object per link for both ends, and the ring code
//    releases to it before publishing and acquires from it after consuming a frame
//    (hw_conn.cpp ring_publish_locked, rx_locked);
//  - re-backing registered pages (adapter.cpp reback_race_free): a thread that touches the
//    range meanwhile waits in a userfaultfd page fault that the registering thread ends; the
//    new mapping keeps the bytes it replaces. TSan's mmap interceptor records a MAP_FIXED
//    mapping as a write by the mapping thread, which a waiting writer then "races" with.
//    NotAnAccess makes the mapping reset TSan's record of the range instead, as a fresh
//    mapping of unchanged contents should.
#pragma once

#include <cstdint>

#if defined(__SANITIZE_THREAD__)
#define ECA_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define ECA_TSAN 1
#endif
#endif

#ifdef ECA_TSAN
extern "C" void __tsan_acquire(void *addr);
extern "C" void __tsan_release(void *addr);
extern "C" void __tsan_ignore_thread_begin();
extern "C" void __tsan_ignore_thread_end();
#endif

namespace eca::hw::tsan {

#ifdef ECA_TSAN
// The same address for both ends of a link in this process (ends in other processes are not
// TSan's concern). Links whose QP numbers collide share one object: that can only hide a
// report, never make one.
inline void *link_key(uint32_t initiator_qpn, uint32_t responder_qpn) {
  static char keys[4096];
  return &keys[(initiator_qpn * 2654435761u ^ responder_qpn) % sizeof keys];
}
inline void release(void *key) { __tsan_release(key); }
inline void acquire(void *key) { __tsan_acquire(key); }
struct NotAnAccess {  // this thread's memory operations in scope are not recorded
  NotAnAccess() { __tsan_ignore_thread_begin(); }
  ~NotAnAccess() { __tsan_ignore_thread_end(); }
  NotAnAccess(const NotAnAccess &) = delete;
  NotAnAccess &operator=(const NotAnAccess &) = delete;
};
#else
inline void *link_key(uint32_t, uint32_t) { return nullptr; }
inline void release(void *) {}
inline void acquire(void *) {}
struct NotAnAccess {
  ~NotAnAccess() {}  // user-provided: a scope guard is no unused variable
};
#endif

}  // namespace eca::hw::tsan
