#include "hwmodel/backend/adapter.hpp"

#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/uio.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "hwmodel/backend/hw_conn.hpp"
#include "provider/core/log.hpp"

namespace eca::hw {
namespace {

size_t page_size() {
  static const size_t p = (size_t)sysconf(_SC_PAGESIZE);
  return p;
}

int futex(std::atomic<uint32_t> *addr, int op, uint32_t val, const timespec *ts) {
  // Shared (non-private) futex: the word lives in memory shared between processes.
  return (int)syscall(SYS_futex, reinterpret_cast<uint32_t *>(addr), op, val, ts, nullptr, 0);
}

struct LocalRegion {
  uint32_t idx;
  uint32_t gen;
  int fd;
  uint64_t base;
  uint64_t len;
  uint32_t refs;  // registered MRs whose interior lies here; retired at zero
};

// Our regions by base address (control path; guarded by Adapter::mu_, read by the data path
// through local_region under the same lock: registration is rare).
std::map<uint64_t, LocalRegion> g_regions;

}  // namespace

// ---------------------------------------------------------------------------------------------
bool cross_memory_read(uint32_t pid, uint64_t remote, void *local, uint64_t n) {
  if (pid == (uint32_t)getpid()) {
    std::memcpy(local, reinterpret_cast<const void *>(remote), n);
    return true;
  }
  while (n) {
    iovec l{local, n}, r{reinterpret_cast<void *>(remote), n};
    ssize_t k = ::process_vm_readv((pid_t)pid, &l, 1, &r, 1, 0);
    if (k <= 0) return false;
    local = static_cast<uint8_t *>(local) + k;
    remote += (uint64_t)k;
    n -= (uint64_t)k;
  }
  return true;
}

bool cross_memory_write(uint32_t pid, uint64_t remote, const void *local, uint64_t n) {
  if (pid == (uint32_t)getpid()) {
    std::memcpy(reinterpret_cast<void *>(remote), local, n);
    return true;
  }
  while (n) {
    iovec l{const_cast<void *>(local), n}, r{reinterpret_cast<void *>(remote), n};
    ssize_t k = ::process_vm_writev((pid_t)pid, &l, 1, &r, 1, 0);
    if (k <= 0) return false;
    local = static_cast<const uint8_t *>(local) + k;
    remote += (uint64_t)k;
    n -= (uint64_t)k;
  }
  return true;
}

PeerAdapter::~PeerAdapter() {
  for (auto &[idx, m] : regions_) ::munmap(m.ptr, m.len);
  ::munmap(const_cast<AdapterShm *>(shm_), len_);
}

uint8_t *PeerAdapter::region_ptr(uint32_t idx, uint32_t gen, uint64_t off, uint64_t len) {
  if (idx >= kMaxRegions) return nullptr;
  {
    std::shared_lock lk(mu_);
    auto it = regions_.find(idx);
    if (it != regions_.end() && it->second.gen == gen) {
      if (off > it->second.len || len > it->second.len - off) return nullptr;
      return it->second.ptr + off;
    }
  }
  // First use (or the region was replaced): map it. A control-path cost paid once.
  const RegionEntry &r = shm_->regions[idx];
  const uint32_t cur = r.gen.load(std::memory_order_acquire);
  if (cur == 0 || cur != gen) return nullptr;
  const int fd = r.fd;
  const uint64_t rlen = r.length;
  if (off > rlen || len > rlen - off) return nullptr;
  char path[64];
  std::snprintf(path, sizeof(path), "/proc/%u/fd/%d", pid_, fd);
  int f = ::open(path, O_RDWR | O_CLOEXEC);
  if (f < 0) return nullptr;
  void *p = ::mmap(nullptr, rlen, PROT_READ | PROT_WRITE, MAP_SHARED, f, 0);
  ::close(f);
  if (p == MAP_FAILED) return nullptr;
  std::unique_lock lk(mu_);
  auto &slot = regions_[idx];
  if (slot.ptr) ::munmap(slot.ptr, slot.len);
  slot = {gen, static_cast<uint8_t *>(p), rlen};
  return slot.ptr + off;
}

// ---------------------------------------------------------------------------------------------
Adapter &Adapter::instance() {
  static Adapter *a = new Adapter();  // lives for the process, like the hardware it models
  return *a;
}

Adapter::Adapter() {
  pid_ = (uint32_t)getpid();
  shm_fd_ = ::memfd_create("eca-hw-adapter", MFD_CLOEXEC);
  if (shm_fd_ < 0 || ::ftruncate(shm_fd_, sizeof(AdapterShm)) != 0) {
    ECA_LOG(Error, "hwmodel: adapter memory: %s", strerror(errno));
    return;
  }
  ::fchmod(shm_fd_, 0600);
  void *p = ::mmap(nullptr, sizeof(AdapterShm), PROT_READ | PROT_WRITE, MAP_SHARED, shm_fd_, 0);
  if (p == MAP_FAILED) {
    ECA_LOG(Error, "hwmodel: adapter memory: %s", strerror(errno));
    return;
  }
  shm_ = static_cast<AdapterShm *>(p);  // a fresh memfd is zero-filled: all entries free
  shm_->magic = kAdapterMagic;
  shm_->version = kLayoutVersion;
  shm_->pid = pid_;
  // Peers (same user) read and write the unshared edge bytes of our MRs with
  // process_vm_readv/writev; with Yama's ptrace_scope=1 that needs our consent.
  ::prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);
  fw_ = std::thread([this] { firmware_loop(); });
  fw_.detach();
}

// Makes [addr, addr+len) DMA-able and publishes its STag.
//
// Only the pages wholly inside the MR are re-backed by a memfd shared with peers: they hold
// nothing but the application's buffer. The partial pages at the MR's edges may hold other
// heap data that other threads can change while we copy, so those bytes stay private and
// peers reach them with process_vm_readv/writev (cross_memory_read/write).
int Adapter::register_mr(uint32_t key, uint32_t pd, int access, uint64_t iova, void *addr,
                         uint64_t len) {
  if (!shm_) return ENODEV;
  const uint32_t sidx = (key >> 8) - 1;
  if ((key >> 8) == 0 || sidx >= kMaxStags) return ENOMEM;
  std::lock_guard lk(mu_);
  uint32_t ridx = kMaxRegions;
  const uint64_t ps = page_size();
  uint64_t start = ((uint64_t)addr + ps - 1) & ~(ps - 1);
  uint64_t end = ((uint64_t)addr + len) & ~(ps - 1);
  if (len && start < end) {
    auto covering = std::find_if(g_regions.begin(), g_regions.end(), [&](const auto &kv) {
      return kv.second.base <= start && kv.second.base + kv.second.len >= end;
    });
    if (covering == g_regions.end()) {
      // Merge with every region the range overlaps (interiors only, so the union holds no
      // page that is not wholly inside some MR), then re-back the union.
      std::vector<uint64_t> merged;
      uint32_t refs = 0;
      for (auto &[b, r] : g_regions)
        if (r.base < end && r.base + r.len > start) {
          start = std::min(start, r.base);
          end = std::max(end, r.base + r.len);
          merged.push_back(b);
          refs += r.refs;
        }
      const uint64_t size = end - start;
      int fd = ::memfd_create("eca-hw-mr", MFD_CLOEXEC);
      if (fd < 0) return errno;
      ::fchmod(fd, 0600);
      if (::ftruncate(fd, (off_t)size) != 0) {
        int e = errno;
        ::close(fd);
        return e;
      }
      void *tmp = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      if (tmp == MAP_FAILED) {
        int e = errno;
        ::close(fd);
        return e;
      }
      std::memcpy(tmp, reinterpret_cast<void *>(start), size);
      void *fixed = ::mmap(reinterpret_cast<void *>(start), size, PROT_READ | PROT_WRITE,
                           MAP_SHARED | MAP_FIXED, fd, 0);
      ::munmap(tmp, size);
      if (fixed == MAP_FAILED) {
        int e = errno;
        ::close(fd);
        ECA_LOG(Error, "hwmodel: cannot share pages at %#llx: %s", (unsigned long long)start,
                strerror(e));
        return e;
      }
      // A free region slot (one no live region of ours uses).
      std::vector<bool> used(kMaxRegions, false);
      for (auto &[b, r] : g_regions) used[r.idx] = true;
      const uint32_t slot = (uint32_t)(std::find(used.begin(), used.end(), false) - used.begin());
      if (slot == kMaxRegions) {
        ::close(fd);
        return ENOMEM;
      }
      RegionEntry &re = shm_->regions[slot];
      // Generations are never reused: a peer's cached mapping of a retired region can never
      // be mistaken for the region that now occupies its slot.
      const uint32_t gen = next_gen_++;
      re.fd = fd;
      re.base = start;
      re.length = size;
      re.gen.store(gen, std::memory_order_release);
      // Re-point the STags of merged regions, then retire those regions.
      for (uint64_t b : merged) {
        LocalRegion old = g_regions[b];
        for (uint32_t i = 0; i < kMaxStags; i++) {
          StagEntry &se = shm_->stags[i];
          uint32_t k = se.key.load(std::memory_order_relaxed);
          if (!k || se.region != old.idx) continue;
          se.key.store(0, std::memory_order_release);
          se.region = slot;
          se.key.store(k, std::memory_order_release);
        }
        shm_->regions[old.idx].gen.store(0, std::memory_order_release);
        ::close(old.fd);
        g_regions.erase(b);
      }
      covering = g_regions.emplace(start, LocalRegion{slot, gen, fd, start, size, refs}).first;
    }
    ridx = covering->second.idx;
    covering->second.refs++;
  }
  StagEntry &se = shm_->stags[sidx];
  se.key.store(0, std::memory_order_release);
  se.pd = pd;
  se.access = (uint32_t)access;
  se.region = ridx;
  se.iova = iova;
  se.length = len;
  se.host = (uint64_t)addr;
  se.key.store(key, std::memory_order_release);
  return 0;
}

void Adapter::unregister_mr(uint32_t key) {
  const uint32_t sidx = (key >> 8) - 1;
  if (!shm_ || (key >> 8) == 0 || sidx >= kMaxStags) return;
  std::lock_guard lk(mu_);
  StagEntry &se = shm_->stags[sidx];
  uint32_t expect = key;
  if (!se.key.compare_exchange_strong(expect, 0, std::memory_order_acq_rel)) return;
  // The region dies with its last MR (the application may free the memory now). Its pages
  // stay mapped to the memfd: the application still owns them and may keep using them.
  for (auto it = g_regions.begin(); it != g_regions.end(); ++it) {
    if (it->second.idx != se.region) continue;
    if (--it->second.refs == 0) {
      shm_->regions[it->second.idx].gen.store(0, std::memory_order_release);
      ::close(it->second.fd);
      g_regions.erase(it);
    }
    break;
  }
}

// A remotely invalidated STag stops working at once; the MR (and its region reference)
// stays until the application deregisters it.
void Adapter::invalidate_mr(uint32_t key) {
  const uint32_t sidx = (key >> 8) - 1;
  if (!shm_ || (key >> 8) == 0 || sidx >= kMaxStags) return;
  std::lock_guard lk(mu_);
  StagEntry &se = shm_->stags[sidx];
  const uint32_t k = se.key.load(std::memory_order_acquire);
  if (k != key) return;
  se.key.store(0, std::memory_order_release);  // readers that race see no STag at all
  se.access = 0;                               // no remote access from now on
  se.key.store(k, std::memory_order_release);
}

bool Adapter::local_region(const void *addr, uint64_t len, uint32_t *idx, uint32_t *gen,
                           uint64_t *off) {
  std::lock_guard lk(mu_);
  const uint64_t a = (uint64_t)addr;
  auto it = g_regions.upper_bound(a);
  if (it == g_regions.begin()) return false;
  --it;
  const LocalRegion &r = it->second;
  if (a < r.base || len > r.len || a - r.base > r.len - len) return false;
  *idx = r.idx;
  *gen = r.gen;
  *off = a - r.base;
  return true;
}

std::shared_ptr<PeerAdapter> Adapter::peer(uint32_t pid, int fd) {
  std::lock_guard lk(peers_mu_);
  if (auto it = peers_.find(pid); it != peers_.end())
    if (auto p = it->second.lock()) return p;
  char path[64];
  std::snprintf(path, sizeof(path), "/proc/%u/fd/%d", pid, fd);
  int f = ::open(path, O_RDWR | O_CLOEXEC);
  if (f < 0) {
    ECA_LOG(Warn, "hwmodel: cannot open the adapter of process %u: %s", pid, strerror(errno));
    return nullptr;
  }
  void *p = ::mmap(nullptr, sizeof(AdapterShm), PROT_READ | PROT_WRITE, MAP_SHARED, f, 0);
  ::close(f);
  if (p == MAP_FAILED) return nullptr;
  auto *shm = static_cast<AdapterShm *>(p);
  if (shm->magic != kAdapterMagic || shm->version != kLayoutVersion || shm->pid != pid) {
    ::munmap(p, sizeof(AdapterShm));
    ECA_LOG(Warn, "hwmodel: process %u offered no valid adapter memory", pid);
    return nullptr;
  }
  auto pa = std::make_shared<PeerAdapter>(pid, shm, sizeof(AdapterShm));
  peers_[pid] = pa;
  return pa;
}

// ---------------------------------------------------------------------------------------------
// Firmware thread: serves connections whose application is not polling (interrupt mode),
// paced completions that fall due, and receive deadlines. Busy-polling applications do the
// same work themselves from ibv_poll_cq(); then this thread mostly sleeps.

void Adapter::attach(const std::shared_ptr<HwConn> &c) {
  {
    std::lock_guard lk(conns_mu_);
    conns_.push_back(c);
  }
  kick();
}

void Adapter::detach(HwConn *c) {
  std::lock_guard lk(conns_mu_);
  std::erase_if(conns_, [c](const std::weak_ptr<HwConn> &w) {
    auto s = w.lock();
    return !s || s.get() == c;
  });
}

void Adapter::kick() {
  if (!shm_) return;
  shm_->doorbell.fetch_add(1, std::memory_order_acq_rel);
  if (shm_->sleeping.load(std::memory_order_acquire))
    futex(&shm_->doorbell, FUTEX_WAKE, 1, nullptr);
}

void Adapter::kick_peer(const AdapterShm *peer) {
  auto *p = const_cast<AdapterShm *>(peer);
  p->doorbell.fetch_add(1, std::memory_order_acq_rel);
  if (p->sleeping.load(std::memory_order_acquire)) futex(&p->doorbell, FUTEX_WAKE, 1, nullptr);
}

void Adapter::firmware_loop() {
  pthread_setname_np(pthread_self(), "eca-hw-fw");
  for (;;) {
    uint32_t seen = shm_->doorbell.load(std::memory_order_acquire);
    std::vector<std::shared_ptr<HwConn>> live;
    {
      std::lock_guard lk(conns_mu_);
      for (auto &w : conns_)
        if (auto s = w.lock()) live.push_back(std::move(s));
    }
    bool did = false, timed = false;
    for (auto &c : live) {
      HwConn::FwResult r = c->firmware_poll();
      did |= r.did_work;
      timed |= r.needs_tick;
    }
    if (did) continue;
    // Idle: sleep until kicked; wake periodically while something waits on a deadline.
    timespec ts{0, timed ? 1000000L : 20000000L};
    shm_->sleeping.store(1, std::memory_order_release);
    if (shm_->doorbell.load(std::memory_order_acquire) == seen)
      futex(&shm_->doorbell, FUTEX_WAIT, seen, &ts);
    shm_->sleeping.store(0, std::memory_order_release);
  }
}

}  // namespace eca::hw
