// The modeled adapter of one process: the memory it can reach, the STag table it publishes,
// the peers' memory it has mapped, and its firmware thread.
//
// Registering memory re-backs the registered pages with a memfd (contents copied, then the
// memfd mapped MAP_FIXED|MAP_SHARED at the same address), so that the adapters of peer
// processes can place and fetch data in it directly: the modeled DMA. The STag table and the
// region table live in this process's AdapterShm, which peers map read-only-by-convention to
// validate and translate remote accesses. Peers open our memfds through /proc/<pid>/fd/<n>,
// which the kernel allows only to processes of the same user (memfds are 0600).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <thread>
#include <vector>

#include "hwmodel/backend/shm_layout.hpp"

namespace eca::hw {

// A peer process's adapter as seen from here.
class PeerAdapter {
 public:
  PeerAdapter(uint32_t pid, const AdapterShm *shm, size_t len) : pid_(pid), shm_(shm), len_(len) {}
  ~PeerAdapter();
  uint32_t pid() const { return pid_; }
  const AdapterShm *shm() const { return shm_; }
  // Host pointer in OUR address space for [off, off+len) of the peer's region `idx`, mapping
  // the region on first use. Null if the region is unknown, stale or too short.
  uint8_t *region_ptr(uint32_t idx, uint32_t gen, uint64_t off, uint64_t len);

 private:
  struct Mapping {
    uint32_t gen;
    uint8_t *ptr;
    uint64_t len;
  };
  uint32_t pid_;
  const AdapterShm *shm_;
  size_t len_;
  std::shared_mutex mu_;
  std::map<uint32_t, Mapping> regions_;
};

class HwConn;

// Moves bytes to or from another process's memory (the private edges of its MRs).
bool cross_memory_read(uint32_t pid, uint64_t remote, void *local, uint64_t n);
bool cross_memory_write(uint32_t pid, uint64_t remote, const void *local, uint64_t n);

class Adapter {
 public:
  static Adapter &instance();

  AdapterShm *shm() { return shm_; }
  int shm_fd() const { return shm_fd_; }
  uint32_t pid() const { return pid_; }

  // Memory registration: share the pages of [addr, addr+len) and publish the STag.
  int register_mr(uint32_t key, uint32_t pd, int access, uint64_t iova, void *addr,
                  uint64_t len);
  void unregister_mr(uint32_t key);
  void invalidate_mr(uint32_t key);
  // Our own region lookup, for Send frames that reference our source buffers: the region
  // wholly containing [addr, addr+len), if any.
  bool local_region(const void *addr, uint64_t len, uint32_t *idx, uint32_t *gen,
                    uint64_t *off);

  // Peers (by pid and the fd number of their AdapterShm memfd).
  std::shared_ptr<PeerAdapter> peer(uint32_t pid, int fd);

  // Connections served by the firmware thread.
  void attach(const std::shared_ptr<HwConn> &c);
  void detach(HwConn *c);
  // Wakes the firmware thread (from any thread; a syscall only if it sleeps).
  void kick();
  // Wakes a peer's firmware thread through its doorbell word.
  static void kick_peer(const AdapterShm *peer);

 private:
  Adapter();
  void firmware_loop();

  AdapterShm *shm_ = nullptr;
  int shm_fd_ = -1;
  uint32_t pid_ = 0;
  std::mutex mu_;  // regions and STags (control path)
  uint32_t next_gen_ = 1;
  std::mutex peers_mu_;
  std::map<uint32_t, std::weak_ptr<PeerAdapter>> peers_;
  std::mutex conns_mu_;
  std::vector<std::weak_ptr<HwConn>> conns_;
  std::thread fw_;
};

}  // namespace eca::hw
