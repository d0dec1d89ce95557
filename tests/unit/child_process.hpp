// A peer process for the process-level tests: fork() first thing in a test, before the parent
// creates any verbs/rdma_cm object, then exec() of this same binary in a "role" chosen by the
// environment (ECA_CHILD_ROLE, with the pipe ends in ECA_CHILD_IN / ECA_CHILD_OUT). The role
// runs from a static initializer before gtest's main (see run_child_role), so the child is a
// fresh process even if earlier tests of the parent started the library's threads.
// Header-only; every wait is bounded and every child is reaped.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "tests/unit/fixture.hpp"

namespace ecatest {

inline bool read_full(int fd, void *p, size_t n, int timeout_ms) {
  auto *b = static_cast<uint8_t *>(p);
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (n) {
    if (!fd_readable(fd, ms_left(deadline))) return false;
    ssize_t r = ::read(fd, b, n);
    if (r <= 0) return false;
    b += r;
    n -= (size_t)r;
  }
  return true;
}

inline bool write_full(int fd, const void *p, size_t n) {
  return ::write(fd, p, n) == (ssize_t)n;
}

// A new id on a new event channel with address and route resolved to loopback `port`, ready
// for rdma_connect. False (nothing to clean up but what was returned) on failure.
inline bool resolve_loopback(uint16_t port, rdma_event_channel **ch, rdma_cm_id **id) {
  *ch = rdma_create_event_channel();
  *id = nullptr;
  if (!*ch || rdma_create_id(*ch, id, nullptr, RDMA_PS_TCP)) return false;
  sockaddr_in d = loopback_addr(port);
  return rdma_resolve_addr(*id, nullptr, reinterpret_cast<sockaddr *>(&d), 2000) == 0 &&
         wait_cm_event(*ch, RDMA_CM_EVENT_ADDR_RESOLVED) && rdma_resolve_route(*id, 2000) == 0 &&
         wait_cm_event(*ch, RDMA_CM_EVENT_ROUTE_RESOLVED);
}

// A passive peer: listens on a free loopback port, writes the port to `out_fd` and waits for
// the connection request (*id). False on failure.
inline bool listen_for_one(int out_fd, rdma_event_channel **ch, rdma_cm_id **lid, rdma_cm_id **id) {
  *ch = rdma_create_event_channel();
  *lid = *id = nullptr;
  if (!*ch || rdma_create_id(*ch, lid, nullptr, RDMA_PS_TCP)) return false;
  sockaddr_in a = loopback_addr(0);
  if (rdma_bind_addr(*lid, reinterpret_cast<sockaddr *>(&a)) || rdma_listen(*lid, 4)) return false;
  const uint16_t port = ntohs(rdma_get_src_port(*lid));
  return ::write(out_fd, &port, sizeof port) == (ssize_t)sizeof port &&
         wait_cm_event(*ch, RDMA_CM_EVENT_CONNECT_REQUEST, kTimeoutMs, id);
}

// What a passive peer offers in the accept's private data: an MR of its own.
struct PeerInfo {
  uint64_t addr;
  uint32_t rkey;
  uint32_t len;
};

// A passive peer role: accepts the parent's connection (listen_for_one), offers `len` bytes
// registered with `access` (filled with the pattern of `seed` unless 0), writes 'S' once
// established, then idles (its progress thread keeps serving) until killed. Returns an exit
// code (30.. on failure, 40 if never killed).
inline int serve_region_until_killed(int out_fd, size_t len, int access, uint32_t seed) {
  rdma_event_channel *ch = nullptr;
  rdma_cm_id *lid = nullptr, *id = nullptr;
  if (!listen_for_one(out_fd, &ch, &lid, &id)) return 30;
  ibv_pd *pd = nullptr;
  ibv_cq *cq = nullptr;
  if (!make_rc_qp(id, 16, &pd, &cq)) return 34;
  auto *mem = static_cast<uint8_t *>(std::malloc(len));
  if (seed) fill_pattern(mem, len, seed);
  ibv_mr *mr = ibv_reg_mr(pd, mem, len, access);
  if (!mr) return 36;
  PeerInfo pi{(uint64_t)(uintptr_t)mem, mr->rkey, (uint32_t)len};
  rdma_conn_param cp{};
  cp.initiator_depth = cp.responder_resources = 16;
  cp.private_data = &pi;
  cp.private_data_len = sizeof pi;
  if (rdma_accept(id, &cp)) return 37;
  if (!wait_cm_event(ch, RDMA_CM_EVENT_ESTABLISHED)) return 38;
  char s = 'S';
  if (::write(out_fd, &s, 1) != 1) return 39;
  auto deadline = Clock::now() + std::chrono::seconds(60);
  while (Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  return 40;
}

// Runs the role named in the environment and exits with its code; returns 0 in the parent.
// Roles get (in_fd, out_fd): the parent's end of each pipe.
inline int run_child_role(const std::map<std::string, std::function<int(int, int)>> &roles) {
  const char *role = std::getenv("ECA_CHILD_ROLE");
  if (!role) return 0;
  const char *in = std::getenv("ECA_CHILD_IN"), *out = std::getenv("ECA_CHILD_OUT");
  auto it = roles.find(role);
  ::_exit(it == roles.end() ? 126 : it->second(in ? std::atoi(in) : -1, out ? std::atoi(out) : -1));
}

struct Child {
  pid_t pid = -1;
  int to_child = -1;    // parent writes
  int from_child = -1;  // parent reads
  int status = 0;
  bool reaped = false;

  // fork() + exec of this binary in `role`. Everything exec needs is prepared before fork.
  bool start(const char *role, std::vector<std::string> extra_env = {}) {
    int p2c[2], c2p[2];
    if (::pipe(p2c) || ::pipe(c2p)) return false;
    std::vector<std::string> envs;
    for (char **e = environ; *e; e++) {
      std::string s = *e;
      if (s.rfind("ECA_CHILD_", 0) == 0 || s.rfind("GTEST_", 0) == 0) continue;
      envs.push_back(s);
    }
    envs.push_back(std::string("ECA_CHILD_ROLE=") + role);
    envs.push_back("ECA_CHILD_IN=" + std::to_string(p2c[0]));
    envs.push_back("ECA_CHILD_OUT=" + std::to_string(c2p[1]));
    for (auto &e : extra_env) envs.push_back(e);
    std::vector<char *> envp;
    for (auto &s : envs) envp.push_back(s.data());
    envp.push_back(nullptr);
    char exe[] = "/proc/self/exe";
    std::string arg0s = std::string("child_") + role;
    char *argv[] = {arg0s.data(), nullptr};
    pid = ::fork();
    if (pid < 0) return false;
    if (pid == 0) {
      ::close(p2c[1]);
      ::close(c2p[0]);
      ::execve(exe, argv, envp.data());
      ::_exit(127);
    }
    ::close(p2c[0]);
    ::close(c2p[1]);
    to_child = p2c[1];
    from_child = c2p[0];
    return true;
  }
  bool wait_byte(char expect, int timeout_ms) {
    char c = 0;
    return read_full(from_child, &c, 1, timeout_ms) && c == expect;
  }
  void kill9() {
    if (pid > 0 && !reaped) ::kill(pid, SIGKILL);
  }
  // Reaps the child (bounded); true when it is gone.
  bool reap(int timeout_ms = 5000) {
    if (pid <= 0 || reaped) return true;
    auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
      pid_t r = ::waitpid(pid, &status, WNOHANG);
      if (r == pid) {
        reaped = true;
        return true;
      }
      if (Clock::now() >= deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  bool exited_ok(int timeout_ms = 10000) {
    return reap(timeout_ms) && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }
  std::string describe() {
    if (!reaped) reap(100);
    if (!reaped) return "still running";
    if (WIFEXITED(status)) return "exited with code " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
    return "?";
  }
  ~Child() {
    kill9();
    reap(5000);
    if (to_child >= 0) ::close(to_child);
    if (from_child >= 0) ::close(from_child);
  }
};

}  // namespace ecatest
