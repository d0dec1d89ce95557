// fork() and registered memory: the MADV_DONTFORK mode of ibv_fork_init (see fork.hpp).
#include "provider/core/fork.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <iterator>
#include <map>
#include <mutex>

namespace eca {
namespace {

struct ForkState {
  std::mutex mu;
  bool enabled = false;   // MADV_DONTFORK mode
  bool too_late = false;  // memory was registered before the mode was enabled
  // Disjoint page ranges [start, end) covered by `count` registrations (count >= 1).
  struct Seg {
    uint64_t end;
    uint32_t count;
  };
  std::map<uint64_t, Seg> segs;

  ForkState() { enabled = std::getenv("RDMAV_FORK_SAFE") || std::getenv("IBV_FORK_SAFE"); }

  // A segment boundary at x (splits the segment that strictly contains it). mu held.
  void split(uint64_t x) {
    auto it = segs.upper_bound(x);
    if (it == segs.begin()) return;
    --it;
    if (it->first < x && x < it->second.end) {
      segs[x] = {it->second.end, it->second.count};
      it->second.end = x;
    }
  }

  // Adds `delta` (+1 or -1) to every page of [a, b); pages whose count drops to zero are
  // given back to fork (MADV_DOFORK). mu held.
  void adjust(uint64_t a, uint64_t b, int delta) {
    split(a);
    split(b);
    uint64_t at = a;
    auto it = segs.lower_bound(a);
    while (at < b) {
      if (it == segs.end() || it->first > at) {  // a gap: no registration covers it yet
        const uint64_t gap_end = it == segs.end() ? b : std::min(b, it->first);
        if (delta > 0) segs.emplace_hint(it, at, Seg{gap_end, 1});
        at = gap_end;
        continue;
      }
      at = it->second.end;
      if (delta > 0) {
        it->second.count++;
        ++it;
      } else if (--it->second.count == 0) {
        ::madvise(reinterpret_cast<void *>(it->first), it->second.end - it->first, MADV_DOFORK);
        it = segs.erase(it);
      } else {
        ++it;
      }
    }
  }
};

ForkState &state() {
  static ForkState s;
  return s;
}

void page_range(void *addr, size_t len, uint64_t *a, uint64_t *b) {
  const uint64_t ps = (uint64_t)::sysconf(_SC_PAGESIZE);
  *a = reinterpret_cast<uintptr_t>(addr) & ~(ps - 1);
  *b = (reinterpret_cast<uintptr_t>(addr) + len + ps - 1) & ~(ps - 1);
}

}  // namespace

int fork_init() {
  ForkState &s = state();
  std::lock_guard lk(s.mu);
  if (s.enabled) return 0;
  if (s.too_late) return EINVAL;
  s.enabled = true;
  return 0;
}

ibv_fork_status fork_status() {
  ForkState &s = state();
  std::lock_guard lk(s.mu);
  return s.enabled ? IBV_FORK_ENABLED : IBV_FORK_UNNEEDED;
}

int fork_dontfork(void *addr, size_t len) {
  ForkState &s = state();
  std::lock_guard lk(s.mu);
  if (!s.enabled) {
    s.too_late = true;
    return 0;
  }
  if (!len) return 0;
  uint64_t a, b;
  page_range(addr, len, &a, &b);
  s.adjust(a, b, +1);
  // The whole range, not only pages new to the count: a backend may have replaced mappings
  // inside it while registering (the modeled adapter re-backs pages with a memfd), and a new
  // mapping does not inherit the flag.
  if (::madvise(reinterpret_cast<void *>(a), b - a, MADV_DONTFORK) != 0) {
    const int e = errno;
    s.adjust(a, b, -1);
    return e;
  }
  return 0;
}

int fork_dofork(void *addr, size_t len) {
  ForkState &s = state();
  std::lock_guard lk(s.mu);
  if (!s.enabled || !len) return 0;
  uint64_t a, b;
  page_range(addr, len, &a, &b);
  s.adjust(a, b, -1);  // leaves segment boundaries at a and b
  // Pages other MRs still cover keep the flag, also where the backend replaced the mapping
  // while deregistering (the modeled adapter moves retired pages off its memfd).
  for (auto it = s.segs.lower_bound(a); it != s.segs.end() && it->first < b; ++it)
    ::madvise(reinterpret_cast<void *>(it->first), std::min(b, it->second.end) - it->first,
              MADV_DONTFORK);
  return 0;
}

}  // namespace eca
