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
