// Memory registration: the process-wide STag table. An STag is (24-bit index << 8 | 8-bit
// key); the key byte is drawn at random for every registration, so a stale or guessed STag
// misses. lkey == rkey (iWARP has one STag per region).
#include <cerrno>
#include <cstdlib>
#include <mutex>
#include <random>
#include <shared_mutex>

#include "provider/core/backend.hpp"
#include "provider/core/fork.hpp"
#include "provider/core/log.hpp"
#include "provider/core/mem_pin.hpp"
#include "provider/core/mw.hpp"
#include "provider/core/objects.hpp"

namespace eca {
namespace {

class MrTable {
 public:
  // Publishes `mr` under a new key (also its handle, lkey and rkey); ENOMEM when full.
  int add(std::shared_ptr<Mr> mr, uint32_t *key) {
    std::unique_lock lk(mu_);
    uint32_t idx;
    if (!free_.empty()) {
      idx = free_.back();
      free_.pop_back();
    } else {
      if (slots_.size() >= kMaxMr) return ENOMEM;
      idx = (uint32_t)slots_.size();
      slots_.emplace_back();
    }
    // Index 0 is never used: STag 0 is what a zero-filled header carries.
    uint32_t k = (uint32_t)(rng_() & 0xff);
    *key = ((idx + 1) << 8) | k;
    // The key is part of the entry before the entry is visible: get() compares it under the
    // shared lock, from any thread.
    mr->ibmr.handle = mr->ibmr.lkey = mr->ibmr.rkey = *key;
    slots_[idx] = std::move(mr);
    return 0;
  }

  // Takes the MR out of the table and hands the table's reference to the caller (null if
  // `key` names no MR), so the object outlives the caller's use of it.
  std::shared_ptr<Mr> remove(uint32_t key) {
    std::unique_lock lk(mu_);
    uint32_t idx = (key >> 8) - 1;
    std::shared_ptr<Mr> out;
    if (idx < slots_.size() && slots_[idx] && slots_[idx]->ibmr.rkey == key) {
      out = std::move(slots_[idx]);
      free_.push_back(idx);
    }
    return out;
  }

  // Puts `e` in `key`'s slot (memory windows: same index, new key byte); false if absent.
  bool replace(uint32_t key, std::shared_ptr<Mr> e) {
    std::unique_lock lk(mu_);
    uint32_t idx = (key >> 8) - 1;
    if ((key >> 8) == 0 || idx >= slots_.size() || !slots_[idx] || slots_[idx]->ibmr.rkey != key)
      return false;
    slots_[idx] = std::move(e);
    return true;
  }

  // Validates under the table lock without taking a reference.
  template <typename F>
  auto with(uint32_t key, F &&f) {
    std::shared_lock lk(mu_);
    uint32_t idx = (key >> 8) - 1;
    const Mr *m = nullptr;
    if ((key >> 8) != 0 && idx < slots_.size() && slots_[idx] && slots_[idx]->ibmr.rkey == key)
      m = slots_[idx].get();
    return f(m);
  }

  std::shared_ptr<Mr> get(uint32_t key) {
    std::shared_lock lk(mu_);
    uint32_t idx = (key >> 8) - 1;
    if ((key >> 8) == 0 || idx >= slots_.size()) return nullptr;
    const auto &m = slots_[idx];
    if (!m || m->ibmr.rkey != key) return nullptr;
    return m;
  }

 private:
  std::shared_mutex mu_;
  std::vector<std::shared_ptr<Mr>> slots_;
  std::vector<uint32_t> free_;
  std::mt19937 rng_{std::random_device{}()};
};

MrTable &table() {
  static MrTable *t = new MrTable();  // lives as long as the progress thread may look up
  return *t;
}

constexpr int kKnownAccess = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
                             IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC |
                             IBV_ACCESS_MW_BIND | IBV_ACCESS_ZERO_BASED |
                             IBV_ACCESS_HUGETLB | IBV_ACCESS_RELAXED_ORDERING;

}  // namespace

int mr_register(Pd *pd, void *addr, size_t len, uint64_t iova, int access, Mr **out) {
  access &= ~IBV_ACCESS_OPTIONAL_RANGE;  // optional hints: we may ignore them
  if (access & ~kKnownAccess) return (access & IBV_ACCESS_ON_DEMAND) ? EOPNOTSUPP : EINVAL;
  // verbs: remote write/atomic access require local write
  if ((access & (IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_ATOMIC)) &&
      !(access & IBV_ACCESS_LOCAL_WRITE))
    return EINVAL;
  // Like the kernel's ib_umem_get(): no empty regions, no wrap-around; then the memory must
  // be pinnable for the access asked (EFAULT otherwise), before any backend sees it.
  if (len == 0) return EINVAL;
  if (iova + len < iova || reinterpret_cast<uintptr_t>(addr) + len < len) return EINVAL;
  constexpr int kWriting =
      IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_ATOMIC;
  if (int rc = mem_pin_check(addr, len, (access & kWriting) != 0)) return rc;
  auto mr = std::make_shared<Mr>();
  mr->pd = pd;
  mr->iova = (access & IBV_ACCESS_ZERO_BASED) ? 0 : iova;
  mr->addr = static_cast<uint8_t *>(addr);
  mr->length = len;
  mr->access = access;
  uint32_t key;
  Mr *raw = mr.get();
  if (int rc = table().add(std::move(mr), &key)) return rc;
  raw->ibmr.context = pd->ctx->ibv();
  raw->ibmr.pd = &pd->ibpd;
  raw->ibmr.addr = addr;
  raw->ibmr.length = len;
  if (int rc = pd->ctx->dev->backend->mr_registered(*raw)) {
    table().remove(key);
    return rc;
  }
  // After the backend: it may have replaced the mappings (fork.hpp).
  if (int rc = fork_dontfork(addr, len)) {
    pd->ctx->dev->backend->mr_deregistered(*raw);
    table().remove(key);
    return rc;
  }
  pd->users++;
  *out = raw;
  return 0;
}

// Returns once nothing touches the memory any more: the STag is gone from the table (no new
// lookups), the backend's device has let go of it (mr_deregistered's contract), and every
// MrUse in flight has left (software transport placements, READ responses, transmissions).
int mr_deregister(Mr *mr) {
  Pd *pd = mr->pd;
  if (!mw_mr_release(mr)) return EINVAL;  // windows still bound to it (mw.cpp)
  // No new lookups from here; MrRefs in flight keep the object, not the memory. `keep` holds
  // the table's reference until this function is done with the object.
  const std::shared_ptr<Mr> keep = table().remove(mr->ibmr.rkey);
  pd->ctx->dev->backend->mr_deregistered(*mr);
  uint32_t v = mr->touch.fetch_or(kMrDead, std::memory_order_acq_rel) | kMrDead;
  while (v != kMrDead) {
    mr->touch.wait(v, std::memory_order_acquire);
    v = mr->touch.load(std::memory_order_acquire);
  }
  fork_dofork(mr->addr, mr->length);
  pd->users--;
  return 0;
}

namespace {
void touch_release(Mr *m) {
  if (m->touch.fetch_sub(1, std::memory_order_release) == (kMrDead | 1)) m->touch.notify_all();
}
}  // namespace

bool MrUse::enter(const MrRef *refs, size_t n) {
  const size_t start = n_;
  auto hold = [&](Mr *m) {
    if (n_ == held_.size()) std::abort();  // more MRs than one access can name: a bug
    const uint32_t prev = m->touch.fetch_add(1, std::memory_order_acquire);
    held_[n_++] = m;
    return !(prev & kMrDead);
  };
  for (size_t i = 0; i < n; i++) {
    Mr *m = refs[i].mr.get();
    if (!m) continue;
    // A memory window's memory is its parent MR's: that registration is what must hold.
    if (!hold(m) || (m->parent && !hold(m->parent.get()))) {
      while (n_ > start) touch_release(held_[--n_]);
      return false;
    }
  }
  return true;
}

void MrUse::leave() {
  while (n_) touch_release(held_[--n_]);
}

namespace {
constexpr int kRemoteAccess =
    IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC;

AccessError check(const Mr &m, const Pd *pd, uint64_t addr, uint64_t len, int need,
                  uint32_t qpn) {
  if (!m.valid.load(std::memory_order_acquire)) return AccessError::InvalidStag;
  if (m.parent) {  // a memory window: remote access only; type 2 only through its QP
    if (!(need & kRemoteAccess)) return AccessError::InvalidStag;
    if (m.window_qpn && m.window_qpn != qpn) return AccessError::ProtDomain;
  }
  if (m.pd != pd) return AccessError::ProtDomain;
  if ((m.access & need) != need) return AccessError::Access;
  if (addr < m.iova || len > m.length || addr - m.iova > m.length - len) return AccessError::Bounds;
  return AccessError::None;
}
}  // namespace

AccessError mr_check(uint32_t key, const Pd *pd, uint64_t addr, uint64_t len, int need,
                     uint8_t **host) {
  return table().with(key, [&](const Mr *m) {
    if (!m) return AccessError::InvalidStag;
    AccessError e = check(*m, pd, addr, len, need, 0);
    if (e == AccessError::None) *host = m->addr + (addr - m->iova);
    return e;
  });
}

AccessError mr_lookup(uint32_t key, const Pd *pd, uint64_t addr, uint64_t len, int need,
                      MrRef *out, uint32_t qpn) {
  auto mr = table().get(key);
  if (!mr) return AccessError::InvalidStag;
  if (AccessError e = check(*mr, pd, addr, len, need, qpn); e != AccessError::None) return e;
  out->host = mr->addr + (addr - mr->iova);
  out->mr = std::move(mr);
  return AccessError::None;
}

}  // namespace eca

namespace eca {
// RDMAP SEND with Invalidate: the named STag stops being usable for remote access. Only an
// invalidatable STag of the QP's PD may be named; otherwise nothing changes and the caller
// answers with a TERMINATE (STag cannot be invalidated).
bool mr_invalidate(uint32_t key, const Pd *pd, uint32_t qpn) {
  auto mr = table().get(key);
  if (!mr || mr->pd != pd || !mr->invalidatable) return false;
  if (mr->parent) return mw_invalidate_remote(key, pd, qpn);
  mr->valid.store(false, std::memory_order_release);
  pd->ctx->dev->backend->mr_invalidated(*mr);
  return true;
}
}  // namespace eca

namespace eca {
int stag_add(std::shared_ptr<Mr> entry, uint32_t *key) { return table().add(std::move(entry), key); }
bool stag_replace(uint32_t key, std::shared_ptr<Mr> entry) {
  return table().replace(key, std::move(entry));
}
std::shared_ptr<Mr> stag_remove(uint32_t key) { return table().remove(key); }
std::shared_ptr<Mr> stag_get(uint32_t key) { return table().get(key); }
}  // namespace eca
