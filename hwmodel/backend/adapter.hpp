// The modeled adapter of one process: the memory it can reach, the STag table it publishes,
// the peers' memory it has mapped, and its firmware thread.
//
// Registering private anonymous memory re-backs its pages with a sealed memfd, race-free (see
// register_mr), so that the adapters of peer processes can place and fetch data in it
// directly: the modeled DMA. Other memory stays as mapped and is reached through the kernel
// (process_vm_readv/writev). The STag table and the region table live in this process's
// AdapterShm, which peers map read-only to validate and translate remote accesses.
// Descriptors pass only over the control channel (ctl.hpp): a Unix-domain socket with
// SO_PEERCRED, a nonce from the TCP set-up, and SCM_RIGHTS; the adapter that owns memory
// decides what access each peer's descriptor grants.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

#include "hwmodel/backend/ctl.hpp"
#include "hwmodel/backend/shm_layout.hpp"
#include "provider/core/mutex.hpp"

namespace eca::hw {

// A peer process's adapter as seen from here.
class PeerAdapter {
 public:
  PeerAdapter(uint32_t pid, std::string path, const AdapterShm *shm, Bell *bell)
      : pid_(pid), path_(std::move(path)), shm_(shm), bell_(bell) {}
  ~PeerAdapter();
  uint32_t pid() const { return pid_; }  // proven (SO_PEERCRED), never taken from a peer's word
  const AdapterShm *shm() const { return shm_; }
  Bell *bell() const { return bell_; }
  // Host pointer in OUR address space for [off, off+len) of the peer's region `idx`, asking the
  // peer for the region on first use (and again when `write` needs more than it granted).
  // Null if the region is unknown, stale, too short or not granted for that access.
  uint8_t *region_ptr(uint32_t idx, uint32_t gen, uint64_t off, uint64_t len, bool write);

 private:
  struct Mapping {
    uint32_t gen;
    bool writable;
    uint8_t *ptr;
    uint64_t len;
  };
  uint32_t pid_;
  std::string path_;  // the peer's control socket
  const AdapterShm *shm_;
  Bell *bell_;
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
  uint32_t pid() const { return pid_; }
  const std::string &ctl_path() const { return ctl_.path(); }

  // Memory registration: share the pages of [addr, addr+len) and publish the STag.
  // A bound memory window registers like an MR over its range; `qpn` != 0 (type 2) limits
  // remote access to that QP of ours.
  int register_mr(uint32_t key, uint32_t pd, int access, uint64_t iova, void *addr,
                  uint64_t len, uint32_t qpn = 0);
  // Retires the STag, then returns once no peer adapter is inside an access to it (each
  // link's LinkSide::touching; bounded, see HwConn::await_peer_untouched). Takes mu_ for the
  // tables only, never while waiting: a peer inside an access may need our control socket.
  void unregister_mr(uint32_t key);
  void invalidate_mr(uint32_t key);
  // A Send frame to peer `reader` names our MR `key` as its source: the region behind the
  // MR's interior (if any) may then be handed to that peer read-only.
  void name_for(uint32_t key, uint32_t reader);

  // Set-up of one connection. expect_hello: a peer that presents `nonce` on our control
  // socket gets our adapter table, our doorbell and (link_fd >= 0) the link memory; the pid
  // it proves goes to `proven`. connect_peer: presents the peer's nonce at the peer's socket;
  // returns the peer adapter (pid proven) and the link fd it handed over, if any (*link_fd,
  // else -1). forget: the connection ends (its nonce and its peer's grant go).
  void expect_hello(const uint8_t (&nonce)[ctl::kNonceBytes], int link_fd,
                    std::function<void(uint32_t)> proven);
  std::shared_ptr<PeerAdapter> connect_peer(const std::string &path,
                                            const uint8_t (&nonce)[ctl::kNonceBytes],
                                            int *link_fd);
  void forget(const uint8_t (&nonce)[ctl::kNonceBytes], uint32_t peer_pid);

  // Connections served by the firmware thread.
  void attach(const std::shared_ptr<HwConn> &c);
  void detach(HwConn *c);
  // Wakes the firmware thread (from any thread; a syscall only if it sleeps).
  void kick();
  // Wakes a peer's firmware thread through its doorbell word.
  static void kick_peer(Bell *peer);

 private:
  Adapter();
  void firmware_loop();
  // A region whose last MR went away (fd -1: none did).
  struct Retired {
    uint64_t base = 0;
    int fd = -1;
    uint32_t gen = 0;
  };
  bool retire_stag_locked(uint32_t sidx, uint32_t key, Retired *retired = nullptr);
  void revoke_retired(const Retired &r);  // the region's pages leave its memfd
  ctl::Reply serve(const ctl::Request &rq, const ctl::Server::Caller &who, std::vector<int> *fds);

  AdapterShm *shm_ = nullptr;
  int shm_fd_ = -1;
  Bell *bell_ = nullptr;
  int bell_fd_ = -1;
  ctl::Server ctl_;
  struct Pending {
    int link_fd;  // ours; dup'ed into the reply
    std::function<void(uint32_t)> proven;
  };
  std::mutex hello_mu_;  // pending_ and proven_
  std::map<std::string, Pending> pending_;  // by nonce
  std::multiset<uint32_t> proven_;          // pids with a live proven connection
  uint32_t pid_ = 0;
  Mutex mu_;  // regions and STags (control path)
  uint32_t next_gen_ = 1;
  std::mutex conns_mu_;
  std::vector<std::weak_ptr<HwConn>> conns_;  // served by the firmware thread
  // Every connection whose peer may still be inside an access to our memory: attached ones
  // and closed ones not yet destroyed (unregister_mr waits for them).
  std::vector<std::weak_ptr<HwConn>> links_;
  std::thread fw_;
};

}  // namespace eca::hw
