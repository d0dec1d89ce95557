#include "hwmodel/backend/adapter.hpp"

#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/ioctl.h>
#include <linux/userfaultfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>
#include <string>

#include "hwmodel/backend/hw_conn.hpp"
#include "hwmodel/backend/tsan.hpp"
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
  uint32_t remote_write = 0;  // of those, MRs granting REMOTE_WRITE
  uint32_t remote_read = 0;   // ... and REMOTE_READ
  std::set<uint32_t> named_for;  // peers a Send frame named this region to
};

// The tables below live as long as the process, like the Adapter that uses them: its firmware
// thread may still run while static destructors do at exit.
// The access each live MR was registered with, by key (the STag entry's copy is cleared by
// invalidation; the region's grant counts follow registration).
std::map<uint32_t, int> &g_mr_access = *new std::map<uint32_t, int>;

void privatize_in_child();

// Our regions by base address (control path; guarded by Adapter::mu_, read by the data path
// through local_region under the same lock: registration is rare).
std::map<uint64_t, LocalRegion> &g_regions = *new std::map<uint64_t, LocalRegion>;
// Regions whose last MR is gone. Their pages stay re-backed (the application still uses
// them); registering inside one again revives it under a new generation.
std::map<uint64_t, LocalRegion> &g_retired = *new std::map<uint64_t, LocalRegion>;

}  // namespace

// ---------------------------------------------------------------------------------------------
// Always through the kernel, even within one process: it sees the application's own mapping
// (a file's pages, the current protection) and fails with EFAULT where a plain copy would
// fault. These are the adapter path's system calls (counted by the caller).
bool cross_memory_read(uint32_t pid, uint64_t remote, void *local, uint64_t n) {
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
  ::munmap(const_cast<AdapterShm *>(shm_), sizeof(AdapterShm));
  ::munmap(bell_, kBellBytes);
}

uint8_t *PeerAdapter::region_ptr(uint32_t idx, uint32_t gen, uint64_t off, uint64_t len,
                                 bool write) {
  if (idx >= kMaxRegions) return nullptr;
  {
    std::shared_lock lk(mu_);
    auto it = regions_.find(idx);
    if (it != regions_.end() && it->second.gen == gen && (it->second.writable || !write)) {
      if (off > it->second.len || len > it->second.len - off) return nullptr;
      return it->second.ptr + off;
    }
  }
  // First use (or the region was replaced, or more access is needed): ask the owner. A
  // control-path cost paid once per region.
  const RegionEntry &r = shm_->regions[idx];
  const uint32_t cur = r.gen.load(std::memory_order_acquire);
  const uint64_t rlen = r.length;
  if (cur == 0 || cur != gen || off > rlen || len > rlen - off) return nullptr;
  ctl::Request rq{};
  rq.magic = ctl::kCtlMagic;
  rq.kind = (uint32_t)ctl::Kind::Region;
  rq.idx = idx;
  rq.gen = gen;
  ctl::Reply rp{};
  std::vector<int> fds;
  pid_t who = 0;
  if (int rc = ctl::call(path_, rq, &rp, &fds, &who)) {
    ECA_LOG(Info, "hwmodel: process %u refused region %u: %s", pid_, idx, strerror(rc));
    return nullptr;
  }
  const int f = fds[0];
  const bool writable = (::fcntl(f, F_GETFL) & O_ACCMODE) == O_RDWR;
  void *p = MAP_FAILED;
  if ((uint32_t)who == pid_ && fds.size() == 1 && rp.size[0] == rlen &&
      ctl::check_memfd(f, rlen) == 0 && (writable || !write))
    p = ::mmap(nullptr, rlen, PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED, f, 0);
  for (int x : fds) ::close(x);
  if (p == MAP_FAILED) return nullptr;
  std::unique_lock lk(mu_);
  auto &slot = regions_[idx];
  if (slot.ptr) ::munmap(slot.ptr, slot.len);
  slot = {gen, writable, static_cast<uint8_t *>(p), rlen};
  return slot.ptr + off;
}

// ---------------------------------------------------------------------------------------------
Adapter &Adapter::instance() {
  static Adapter *a = new Adapter();  // lives for the process, like the hardware it models
  return *a;
}

Adapter::Adapter() {
  pid_ = (uint32_t)getpid();
  shm_fd_ = ctl::sealed_memfd("eca-hw-adapter", sizeof(AdapterShm));
  bell_fd_ = ctl::sealed_memfd("eca-hw-bell", kBellBytes);
  void *p = shm_fd_ < 0 ? MAP_FAILED
                        : ::mmap(nullptr, sizeof(AdapterShm), PROT_READ | PROT_WRITE, MAP_SHARED,
                                 shm_fd_, 0);
  void *b = bell_fd_ < 0 ? MAP_FAILED
                         : ::mmap(nullptr, kBellBytes, PROT_READ | PROT_WRITE, MAP_SHARED, bell_fd_, 0);
  if (p == MAP_FAILED || b == MAP_FAILED) {
    ECA_LOG(Error, "hwmodel: adapter memory: %s", strerror(errno));
    return;
  }
  if (int rc = ctl_.start([this](const ctl::Request &rq, const ctl::Server::Caller &who,
                                 std::vector<int> *fds) { return serve(rq, who, fds); })) {
    ECA_LOG(Error, "hwmodel: adapter control socket: %s", strerror(rc));
    return;
  }
  bell_ = static_cast<Bell *>(b);
  shm_ = static_cast<AdapterShm *>(p);  // a fresh memfd is zero-filled: all entries free
  shm_->magic = kAdapterMagic;
  shm_->version = kLayoutVersion;
  shm_->pid = pid_;
  // Peers (same user, identity proven on the control socket) read and write the unshared
  // bytes of our MRs with process_vm_readv/writev; with Yama's ptrace_scope=1 that needs our
  // consent.
  ::prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);
  // A fork() child gets private copies of the pages we re-backed (see privatize_in_child).
  ::pthread_atfork(nullptr, nullptr, privatize_in_child);
  fw_ = std::thread([this] { firmware_loop(); });
  fw_.detach();
}

// ---------------------------------------------------------------------------------------------
// Registration: what the application's mappings are, and the race-free re-backing of the
// pages that take the shared-memory fast path.

namespace {

// One mapping of ours as /proc/self/maps describes it.
struct Vma {
  uint64_t start, end;
  int prot;
  bool shared;
  bool anon;  // private anonymous memory (heap, mmap(MAP_ANONYMOUS), named anonymous)
  bool ours;  // pages this adapter re-backed (an eca-hw-mr memfd)
  uint64_t ino;
};

constexpr char kMrMemfdName[] = "eca-hw-mr";

// The mappings covering [start, end), in order; EFAULT if any byte of it is unmapped.
int mappings(uint64_t start, uint64_t end, std::vector<Vma> *out) {
  out->clear();
  FILE *f = std::fopen("/proc/self/maps", "re");
  if (!f) return errno ? errno : EIO;
  char line[512];
  uint64_t next = start;  // first byte not yet accounted for
  while (next < end && std::fgets(line, sizeof line, f)) {
    unsigned long long a = 0, b = 0, off = 0, ino = 0;
    char perms[8] = {}, dev[16] = {};
    int path_at = 0;
    if (std::sscanf(line, "%llx-%llx %7s %llx %15s %llu %n", &a, &b, perms, &off, dev, &ino,
                    &path_at) < 6)
      continue;
    if (b <= next) continue;
    if (a > next) break;  // a hole
    std::string path = line + path_at;
    while (!path.empty() && (path.back() == '\n' || path.back() == ' ')) path.pop_back();
    Vma v{};
    v.start = std::max<uint64_t>(a, start);
    v.end = std::min<uint64_t>(b, end);
    v.prot = (perms[0] == 'r' ? PROT_READ : 0) | (perms[1] == 'w' ? PROT_WRITE : 0) |
             (perms[2] == 'x' ? PROT_EXEC : 0);
    v.shared = perms[3] == 's';
    v.anon = !v.shared && ino == 0 &&
             (path.empty() || path == "[heap]" || path.rfind("[anon:", 0) == 0);
    v.ours = v.shared && path.rfind(std::string("/memfd:") + kMrMemfdName, 0) == 0;
    v.ino = ino;
    out->push_back(v);
    next = v.end;
  }
  std::fclose(f);
  return next >= end ? 0 : EFAULT;
}

// A userfaultfd offering `features` (UFFD_FEATURE_*), or -1.
int open_uffd(uint64_t features = 0) {
  int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
#ifdef UFFD_USER_MODE_ONLY
  if (fd < 0 && errno == EPERM)
    fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
#endif
  if (fd < 0) return -1;
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = features;
  if (::ioctl(fd, UFFDIO_API, &api) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// A userfaultfd with `features` watching [start, start+size) in `mode` (*uffd), or an errno
// (ENOTSUP: no userfaultfd with those features).
int open_uffd_on(uint64_t start, uint64_t size, uint64_t features, uint64_t mode, int *uffd) {
  *uffd = open_uffd(features);
  if (*uffd < 0) return ENOTSUP;
  uffdio_register reg{};
  reg.range.start = start;
  reg.range.len = size;
  reg.mode = mode;
  if (::ioctl(*uffd, UFFDIO_REGISTER, &reg) != 0) {
    const int e = errno;
    ::close(*uffd);
    return e;
  }
  return 0;
}

// Moves the contents of the private anonymous, writable pages [start, start+size) (made of
// the mappings `vmas`) into the memfd `fd` and maps the memfd there in their place, without
// losing a write of a concurrent thread:
//  1. the range is registered with a userfaultfd (missing-page faults), which we never serve;
//  2. each mapping's pages are moved aside with mremap(MREMAP_DONTUNMAP): the range stays
//     mapped but empty, so any thread touching it from now on waits in its page fault;
//  3. the moved pages are copied into the memfd, which is mapped over the range (MAP_FIXED);
//  4. closing the userfaultfd wakes the waiting threads; they retry and find the memfd pages.
// Every write made before step 2 is in the moved pages; every write after it waits for step 4.
// Returns 0, or an errno with the range unchanged.
int reback_race_free(uint64_t start, uint64_t size, const std::vector<Vma> &vmas, int fd) {
  int uffd;
  if (int rc = open_uffd_on(start, size, 0, UFFDIO_REGISTER_MODE_MISSING, &uffd)) return rc;
  void *view = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  int rc = view == MAP_FAILED ? errno : 0;
  struct Moved {
    uint64_t at;
    void *old;
    uint64_t n;
  };
  std::vector<Moved> moved;
  for (size_t i = 0; !rc && i < vmas.size(); i++) {
    const uint64_t a = std::max(vmas[i].start, start), b = std::min(vmas[i].end, start + size);
    if (a >= b) continue;
    // The fifth argument is passed explicitly: with MREMAP_DONTUNMAP the kernel reads it as
    // the (page-aligned) hint for the new address.
    void *old = ::mremap(reinterpret_cast<void *>(a), b - a, b - a,
                         MREMAP_MAYMOVE | MREMAP_DONTUNMAP, nullptr);
    if (old == MAP_FAILED) {
      rc = errno;
      break;
    }
    moved.push_back({a, old, b - a});
  }
  if (!rc) {
    for (const Moved &m : moved)
      std::memcpy(static_cast<uint8_t *>(view) + (m.at - start), m.old, m.n);
    // Not a write of this thread: the bytes stay as they were (see tsan.hpp).
    tsan::NotAnAccess same_bytes;
    if (::mmap(reinterpret_cast<void *>(start), size, PROT_READ | PROT_WRITE,
               MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED)
      rc = errno;
  }
  for (const Moved &m : moved) {
    if (rc)  // put the application's pages back where they were
      ::mremap(m.old, m.n, m.n, MREMAP_MAYMOVE | MREMAP_FIXED, reinterpret_cast<void *>(m.at));
    else
      ::munmap(m.old, m.n);
  }
  if (view != MAP_FAILED) ::munmap(view, size);
  ::close(uffd);  // wakes every thread that touched the range meanwhile
  return rc;
}

// The reverse of reback_race_free, when a region's last MR is gone: the application's pages
// [start, start+size), mapped from the memfd `fd`, become private anonymous memory again
// (read-write, as the fast path requires), so a peer that mapped the memfd while the region
// was granted reaches only a file nobody else uses any more. No write of a concurrent
// thread is lost: the range is registered with a userfaultfd for minor faults (a shmem page
// that is in the file but not mapped), which we never serve; MADV_DONTNEED unmaps the pages
// (the file keeps them), so a thread touching the range from now on waits in its fault; the
// file is copied into fresh anonymous pages, which are moved over the range; closing the
// userfaultfd wakes the waiting threads onto them. Returns 0, or an errno with the range
// unchanged (a kernel without minor faults on shmem: ENOTSUP).
int unback_race_free(uint64_t start, uint64_t size, int fd) {
#ifdef UFFD_FEATURE_MINOR_SHMEM
  int uffd;
  if (int rc = open_uffd_on(start, size, UFFD_FEATURE_MINOR_SHMEM, UFFDIO_REGISTER_MODE_MINOR,
                            &uffd))
    return rc;
  void *fresh = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  void *view = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  int rc = fresh == MAP_FAILED || view == MAP_FAILED ? errno : 0;
  if (!rc && ::madvise(reinterpret_cast<void *>(start), size, MADV_DONTNEED) != 0) rc = errno;
  if (!rc) {
    std::memcpy(fresh, view, size);
    if (::mremap(fresh, size, size, MREMAP_MAYMOVE | MREMAP_FIXED,
                 reinterpret_cast<void *>(start)) == MAP_FAILED)
      rc = errno;
    else
      fresh = MAP_FAILED;  // it is the application's memory now
  }
  if (fresh != MAP_FAILED) ::munmap(fresh, size);
  if (view != MAP_FAILED) ::munmap(view, size);
  ::close(uffd);  // wakes every thread that touched the range meanwhile
  return rc;
#else
  (void)start, (void)size, (void)fd;
  return ENOTSUP;
#endif
}

// In a fork() child: every page this adapter re-backed gets a private copy, as the kernel's
// copy-on-fork gives a child for pinned pages; the child shares nothing with its parent.
// Only the child's own thread runs here.
void privatize_in_child() {
  std::vector<Vma> all;
  FILE *f = std::fopen("/proc/self/maps", "re");
  if (!f) return;
  char line[512];
  while (std::fgets(line, sizeof line, f)) {
    unsigned long long a = 0, b = 0;
    char perms[8] = {};
    if (std::sscanf(line, "%llx-%llx %7s", &a, &b, perms) != 3) continue;
    if (!std::strstr(line, (std::string("/memfd:") + kMrMemfdName).c_str())) continue;
    Vma v{};
    v.start = a;
    v.end = b;
    v.prot = (perms[0] == 'r' ? PROT_READ : 0) | (perms[1] == 'w' ? PROT_WRITE : 0);
    all.push_back(v);
  }
  std::fclose(f);
  for (const Vma &v : all) {
    const uint64_t n = v.end - v.start;
    void *copy = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (copy == MAP_FAILED) continue;
    // The kernel copies, as fork() itself would: the pages may hold memory the application
    // freed after deregistering (or allocator bookkeeping), which is no business of ours to
    // read; a sanitizer would rightly report a plain copy of it.
    if (!cross_memory_read((uint32_t)::getpid(), v.start, copy, n)) {
      ::munmap(copy, n);
      continue;
    }
    ::mprotect(copy, n, v.prot);
    ::mremap(copy, n, n, MREMAP_MAYMOVE | MREMAP_FIXED, reinterpret_cast<void *>(v.start));
  }
}

}  // namespace

// Makes [addr, addr+len) DMA-able and publishes its STag.
//
// The range must be mapped (EFAULT otherwise, without touching it) and writable where the
// access asks for writes. Peers reach an MR in one of two ways:
//  - Fast path: the pages wholly inside the MR are private anonymous writable memory. They are
//    re-backed by a memfd (reback_race_free) that peer adapters map: placement is a plain copy.
//    The partial pages at the MR's edges may hold other data and stay private.
//  - Adapter path: everything else (file-backed or shared mappings, read-only pages, memory
//    that cannot be re-backed) stays exactly as the application mapped it; the adapters move
//    bytes with process_vm_readv/writev, which see the application's own mapping (a file's
//    pages, its protection) and fail with EFAULT where the kernel would.
int Adapter::register_mr(uint32_t key, uint32_t pd, int access, uint64_t iova, void *addr,
                         uint64_t len, uint32_t qpn) {
  if (!shm_) return ENODEV;
  const uint32_t sidx = (key >> 8) - 1;
  if ((key >> 8) == 0 || sidx >= kMaxStags) return ENOMEM;
  const uint64_t a0 = (uint64_t)addr;
  if (len && a0 + len < a0) return EFAULT;  // wraps around the address space
  std::lock_guard lk(mu_);
  uint32_t ridx = kMaxRegions;
  const uint64_t ps = page_size();
  uint64_t start = (a0 + ps - 1) & ~(ps - 1);
  uint64_t end = (a0 + len) & ~(ps - 1);
  bool fast = false;
  std::vector<Vma> vmas;
  if (len) {
    if (int rc = mappings(a0 & ~(ps - 1), (a0 + len + ps - 1) & ~(ps - 1), &vmas)) return rc;
    const int writes = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_ATOMIC;
    for (const Vma &v : vmas) {
      if (!(v.prot & PROT_READ)) return EFAULT;
      if ((access & writes) && !(v.prot & PROT_WRITE)) return EFAULT;
    }
    fast = start < end && std::all_of(vmas.begin(), vmas.end(), [&](const Vma &v) {
             return v.end <= start || v.start >= end ||
                    ((v.anon || v.ours) && v.prot == (PROT_READ | PROT_WRITE));
           });
  }
  auto covering = g_regions.end();
  if (fast) {
    covering = std::find_if(g_regions.begin(), g_regions.end(), [&](const auto &kv) {
      return kv.second.base <= start && kv.second.base + kv.second.len >= end;
    });
    const bool overlaps = std::any_of(g_regions.begin(), g_regions.end(), [&](const auto &kv) {
      return kv.second.base < end && kv.second.base + kv.second.len > start;
    });
    // Interiors that only partly overlap a region, or pages we re-backed for an MR that is
    // gone, take the adapter path: re-backing them again could lose concurrent writes.
    const bool stale = std::any_of(vmas.begin(), vmas.end(), [&](const Vma &v) {
      return v.ours && v.end > start && v.start < end;
    });
    if (covering == g_regions.end() && !overlaps && stale) {
      // Pages we re-backed for an MR that is gone: revive that region if the interior lies
      // wholly in its memfd (same inode in every mapping).
      fast = false;
      for (auto it = g_retired.begin(); it != g_retired.end(); ++it) {
        LocalRegion r = it->second;
        if (r.base > start || r.base + r.len < end) continue;
        struct stat st{};
        if (::fstat(r.fd, &st) != 0) break;
        const bool same = std::all_of(vmas.begin(), vmas.end(), [&](const Vma &v) {
          return v.end <= start || v.start >= end || (v.ours && v.ino == (uint64_t)st.st_ino);
        });
        if (!same) break;
        std::vector<bool> used(kMaxRegions, false);
        for (auto &[b, lr] : g_regions) used[lr.idx] = true;
        const uint32_t slot = (uint32_t)(std::find(used.begin(), used.end(), false) - used.begin());
        if (slot == kMaxRegions) break;
        g_retired.erase(it);
        r.idx = slot;
        r.gen = next_gen_++;
        r.refs = 0;
        RegionEntry &re = shm_->regions[slot];
        re.fd = r.fd;
        re.base = r.base;
        re.length = r.len;
        re.gen.store(r.gen, std::memory_order_release);
        covering = g_regions.emplace(r.base, r).first;
        fast = true;
        break;
      }
    } else if (covering == g_regions.end() && (overlaps || stale)) {
      fast = false;
    }
  }
  if (fast && covering == g_regions.end()) {
    // A free region slot (one no live region of ours uses).
    std::vector<bool> used(kMaxRegions, false);
    for (auto &[b, r] : g_regions) used[r.idx] = true;
    const uint32_t slot = (uint32_t)(std::find(used.begin(), used.end(), false) - used.begin());
    const uint64_t size = end - start;
    int fd = slot == kMaxRegions ? -1 : ::memfd_create(kMrMemfdName, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    int rc = fd < 0 ? ENOMEM : 0;
    if (!rc && (::fchmod(fd, 0600) != 0 || ::ftruncate(fd, (off_t)size) != 0 ||
                ::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0))
      rc = errno;
    if (!rc) rc = reback_race_free(start, size, vmas, fd);
    if (rc) {
      if (fd >= 0) ::close(fd);
      ECA_LOG(Debug, "hwmodel: pages at %#llx stay private (%s): adapter path",
              (unsigned long long)start, strerror(rc));
      fast = false;
    } else {
      RegionEntry &re = shm_->regions[slot];
      // Generations are never reused: a peer's cached mapping of a retired region can never
      // be mistaken for the region that now occupies its slot.
      const uint32_t gen = next_gen_++;
      re.fd = fd;
      re.base = start;
      re.length = size;
      re.gen.store(gen, std::memory_order_release);
      covering = g_regions.emplace(start, LocalRegion{slot, gen, fd, start, size, 0}).first;
    }
  }
  if (fast) {
    ridx = covering->second.idx;
    covering->second.refs++;
    covering->second.remote_write += (access & IBV_ACCESS_REMOTE_WRITE) ? 1 : 0;
    covering->second.remote_read += (access & IBV_ACCESS_REMOTE_READ) ? 1 : 0;
  }
  g_mr_access[key] = access;
  StagEntry &se = shm_->stags[sidx];
  se.key.store(0, std::memory_order_release);
  se.pd = pd;
  se.access = (uint32_t)access;
  se.region = ridx;
  se.iova = iova;
  se.length = len;
  se.host = (uint64_t)addr;
  se.qpn = qpn;
  se.key.store(key, std::memory_order_release);
  return 0;
}

void Adapter::unregister_mr(uint32_t key) {
  const uint32_t sidx = (key >> 8) - 1;
  if (!shm_ || (key >> 8) == 0 || sidx >= kMaxStags) return;
  Retired retired;
  {
    std::lock_guard lk(mu_);
    if (!retire_stag_locked(sidx, key, &retired)) return;
  }
  // No peer validates the STag any more; wait for those that validated it before.
  std::vector<std::shared_ptr<HwConn>> live;
  {
    std::lock_guard lk(conns_mu_);
    std::erase_if(links_, [&](const std::weak_ptr<HwConn> &w) {
      auto s = w.lock();
      if (!s) return true;
      live.push_back(std::move(s));
      return false;
    });
  }
  for (auto &c : live) c->await_peer_untouched(key);
  if (retired.fd >= 0) revoke_retired(retired);
}

// The region `r` lost its last MR and no peer access to it is in flight: the application's
// pages leave the memfd (unback_race_free), so mappings peers made of it while it was granted
// no longer reach them. Skipped if the region was revived meanwhile (registered again: it
// is in g_regions, not g_retired) or if the pages cannot be moved (they then stay re-backed;
// docs/hwmodel.md, "Limits").
void Adapter::revoke_retired(const Retired &r) {
  std::lock_guard lk(mu_);
  auto it = g_retired.find(r.base);
  if (it == g_retired.end() || it->second.fd != r.fd || it->second.gen != r.gen) return;
  const LocalRegion &lr = it->second;
  std::vector<Vma> vmas;
  struct stat st{};
  if (mappings(lr.base, lr.base + lr.len, &vmas) != 0 || ::fstat(lr.fd, &st) != 0) return;
  const bool intact = std::all_of(vmas.begin(), vmas.end(), [&](const Vma &v) {
    return v.ours && v.ino == (uint64_t)st.st_ino && v.prot == (PROT_READ | PROT_WRITE);
  });
  if (!intact) return;  // the application mapped something else there since
  if (int rc = unback_race_free(lr.base, lr.len, lr.fd)) {
    ECA_LOG(Debug, "hwmodel: retired region at 0x%llx stays shared (%s)",
            (unsigned long long)lr.base, strerror(rc));
    return;
  }
  ::close(lr.fd);
  g_retired.erase(it);
}

// Clears the STag entry (seq_cst: pairs with the peers' LinkSide::touching stores) and drops
// the MR's share of its region. False if `key` is not registered. mu_ held.
bool Adapter::retire_stag_locked(uint32_t sidx, uint32_t key, Retired *retired) {
  ECA_ASSERT_HELD(mu_);
  StagEntry &se = shm_->stags[sidx];
  uint32_t expect = key;
  if (!se.key.compare_exchange_strong(expect, 0, std::memory_order_seq_cst)) return false;
  int access = 0;
  if (auto a = g_mr_access.find(key); a != g_mr_access.end()) {
    access = a->second;
    g_mr_access.erase(a);
  }
  // The region dies with its last MR (the application may free the memory now). Its pages
  // stay mapped to the memfd: the application still owns them and may keep using them.
  for (auto it = g_regions.begin(); it != g_regions.end(); ++it) {
    if (it->second.idx != se.region) continue;
    it->second.remote_write -= (access & IBV_ACCESS_REMOTE_WRITE) ? 1 : 0;
    it->second.remote_read -= (access & IBV_ACCESS_REMOTE_READ) ? 1 : 0;
    if (--it->second.refs == 0) {
      shm_->regions[it->second.idx].gen.store(0, std::memory_order_release);
      auto [old, inserted] = g_retired.emplace(it->second.base, it->second);
      if (!inserted) {  // the application re-mapped there: the older record is stale
        ::close(old->second.fd);
        old->second = it->second;
      }
      if (retired) *retired = {it->second.base, it->second.fd, it->second.gen};
      g_regions.erase(it);
    }
    break;
  }
  return true;
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

void Adapter::name_for(uint32_t key, uint32_t reader) {
  const uint32_t sidx = (key >> 8) - 1;
  if (!shm_ || (key >> 8) == 0 || sidx >= kMaxStags) return;
  std::lock_guard lk(mu_);
  const StagEntry &se = shm_->stags[sidx];
  if (se.key.load(std::memory_order_relaxed) != key || se.region >= kMaxRegions) return;
  for (auto &[base, r] : g_regions)
    if (r.idx == se.region) {
      r.named_for.insert(reader);
      return;
    }
}

// ---------------------------------------------------------------------------------------------
// Identity and descriptors (the control channel's server side runs on its own thread).

namespace {
std::string nonce_key(const uint8_t (&n)[ctl::kNonceBytes]) {
  return std::string(reinterpret_cast<const char *>(n), ctl::kNonceBytes);
}

// A descriptor of our memfd `fd` that grants only `mode` (O_RDONLY or O_RDWR): reopened
// through our own /proc/self/fd, so a read-only one can never be mapped writable.
int reopen(int fd, int mode) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  return ::open(path, mode | O_CLOEXEC);
}
}  // namespace

void Adapter::expect_hello(const uint8_t (&nonce)[ctl::kNonceBytes], int link_fd,
                           std::function<void(uint32_t)> proven) {
  std::lock_guard lk(hello_mu_);
  pending_[nonce_key(nonce)] = Pending{link_fd, std::move(proven)};
}

void Adapter::forget(const uint8_t (&nonce)[ctl::kNonceBytes], uint32_t peer_pid) {
  std::lock_guard lk(hello_mu_);
  pending_.erase(nonce_key(nonce));
  if (peer_pid)
    if (auto it = proven_.find(peer_pid); it != proven_.end()) proven_.erase(it);
}

ctl::Reply Adapter::serve(const ctl::Request &rq, const ctl::Server::Caller &who,
                          std::vector<int> *fds) {
  ctl::Reply rp{};
  switch (static_cast<ctl::Kind>(rq.kind)) {
    case ctl::Kind::Hello: {
      Pending p;
      {
        std::lock_guard lk(hello_mu_);
        auto it = pending_.find(nonce_key(rq.nonce));
        if (it == pending_.end()) {
          rp.status = EACCES;  // not a nonce we sent: not the process at the other end
          return rp;
        }
        p = std::move(it->second);
        pending_.erase(it);  // one use
        proven_.insert((uint32_t)who.pid);
      }
      fds->push_back(reopen(shm_fd_, O_RDONLY));
      rp.size[0] = sizeof(AdapterShm);
      fds->push_back(reopen(bell_fd_, O_RDWR));
      rp.size[1] = kBellBytes;
      if (p.link_fd >= 0) {
        fds->push_back(::fcntl(p.link_fd, F_DUPFD_CLOEXEC, 0));
        rp.size[2] = sizeof(LinkShm);
      }
      for (int f : *fds)
        if (f < 0) rp.status = EMFILE;
      if (!rp.status && p.proven) p.proven((uint32_t)who.pid);
      return rp;
    }
    case ctl::Kind::Region: {
      std::lock_guard lk(mu_);
      {
        std::lock_guard hk(hello_mu_);
        if (!proven_.count((uint32_t)who.pid)) {
          rp.status = EACCES;
          return rp;
        }
      }
      auto it = std::find_if(g_regions.begin(), g_regions.end(),
                             [&](const auto &kv) { return kv.second.idx == rq.idx; });
      if (it == g_regions.end() || it->second.gen != rq.gen) {
        rp.status = ESTALE;
        return rp;
      }
      const LocalRegion &r = it->second;
      int mode = -1;
      if (r.remote_write)
        mode = O_RDWR;
      else if (r.remote_read || r.named_for.count((uint32_t)who.pid))
        mode = O_RDONLY;
      if (mode < 0) {
        rp.status = EACCES;
        return rp;
      }
      int f = reopen(r.fd, mode);
      if (f < 0) {
        rp.status = errno;
        return rp;
      }
      fds->push_back(f);
      rp.size[0] = r.len;
      return rp;
    }
  }
  rp.status = EINVAL;
  return rp;
}

std::shared_ptr<PeerAdapter> Adapter::connect_peer(const std::string &path,
                                                   const uint8_t (&nonce)[ctl::kNonceBytes],
                                                   int *link_fd) {
  *link_fd = -1;
  ctl::Request rq{};
  rq.magic = ctl::kCtlMagic;
  rq.kind = (uint32_t)ctl::Kind::Hello;
  std::memcpy(rq.nonce, nonce, sizeof rq.nonce);
  ctl::Reply rp{};
  std::vector<int> fds;
  pid_t pid = 0;
  if (int rc = ctl::call(path, rq, &rp, &fds, &pid)) {
    ECA_LOG(Warn, "hwmodel: the peer adapter at %s did not answer: %s", path.c_str(), strerror(rc));
    return nullptr;
  }
  auto fail = [&](const char *why) -> std::shared_ptr<PeerAdapter> {
    ECA_LOG(Warn, "hwmodel: process %d offered no valid adapter: %s", (int)pid, why);
    for (int f : fds) ::close(f);
    return nullptr;
  };
  if (fds.size() < 2 || rp.size[0] != sizeof(AdapterShm) || rp.size[1] != kBellBytes ||
      ctl::check_memfd(fds[0], sizeof(AdapterShm)) || ctl::check_memfd(fds[1], kBellBytes))
    return fail("unsealed or wrongly sized memory");
  if (fds.size() == 3 && (rp.size[2] != sizeof(LinkShm) || ctl::check_memfd(fds[2], sizeof(LinkShm))))
    return fail("unsealed or wrongly sized link");
  void *t = ::mmap(nullptr, sizeof(AdapterShm), PROT_READ, MAP_SHARED, fds[0], 0);
  if (t == MAP_FAILED) return fail("adapter table");
  void *b = ::mmap(nullptr, kBellBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fds[1], 0);
  if (b == MAP_FAILED) {
    ::munmap(t, sizeof(AdapterShm));
    return fail("doorbell");
  }
  auto *shm = static_cast<const AdapterShm *>(t);
  if (shm->magic != kAdapterMagic || shm->version != kLayoutVersion) {
    ::munmap(t, sizeof(AdapterShm));
    ::munmap(b, kBellBytes);
    return fail("layout");
  }
  ::close(fds[0]);
  ::close(fds[1]);
  if (fds.size() == 3) *link_fd = fds[2];
  // One PeerAdapter per connection: its mappings go with the connection.
  return std::make_shared<PeerAdapter>((uint32_t)pid, path, shm, static_cast<Bell *>(b));
}

// ---------------------------------------------------------------------------------------------
// Firmware thread: serves connections whose application is not polling (interrupt mode),
// paced completions that fall due, and receive deadlines. Busy-polling applications do the
// same work themselves from ibv_poll_cq(); then this thread mostly sleeps.

void Adapter::attach(const std::shared_ptr<HwConn> &c) {
  {
    std::lock_guard lk(conns_mu_);
    conns_.push_back(c);
    std::erase_if(links_, [](const std::weak_ptr<HwConn> &w) { return w.expired(); });
    links_.push_back(c);
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
  if (!bell_) return;
  bell_->doorbell.fetch_add(1, std::memory_order_acq_rel);
  if (bell_->sleeping.load(std::memory_order_acquire))
    futex(&bell_->doorbell, FUTEX_WAKE, 1, nullptr);
}

void Adapter::kick_peer(Bell *p) {
  p->doorbell.fetch_add(1, std::memory_order_acq_rel);
  if (p->sleeping.load(std::memory_order_acquire)) futex(&p->doorbell, FUTEX_WAKE, 1, nullptr);
}

void Adapter::firmware_loop() {
  pthread_setname_np(pthread_self(), "eca-hw-fw");
  for (;;) {
    uint32_t seen = bell_->doorbell.load(std::memory_order_acquire);
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
    bell_->sleeping.store(1, std::memory_order_release);
    if (bell_->doorbell.load(std::memory_order_acquire) == seen)
      futex(&bell_->doorbell, FUTEX_WAIT, seen, &ts);
    bell_->sleeping.store(0, std::memory_order_release);
  }
}

}  // namespace eca::hw
