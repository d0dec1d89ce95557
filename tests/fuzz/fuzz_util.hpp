// Helpers shared by the fuzz harnesses in tests/fuzz/.
#pragma once

#include <infiniband/verbs.h>

#include <cstdio>
#include <cstdlib>

// An invariant of the code under test: a violation is a finding (libFuzzer saves the input).
#define FUZZ_CHECK(c)                                                                 \
  do {                                                                                \
    if (!(c)) {                                                                       \
      std::fprintf(stderr, "fuzz check failed: %s (%s:%d)\n", #c, __FILE__, __LINE__); \
      std::abort();                                                                   \
    }                                                                                 \
  } while (0)

namespace fuzz {

// The environment of a harness that drives a QP of `backend`: quiet, and a SEND that finds
// no receive fails at once instead of waiting (ECA_RECV_WAIT_MS=0).
inline void set_backend_env(const char *backend) {
  setenv("ECA_BACKEND", backend, 1);
  setenv("ECA_LOG", "error", 0);
  setenv("ECA_RECV_WAIT_MS", "0", 1);
}

// FUZZ_VERBOSE=1 in the environment: list every completion (reproducing a finding).
inline void print_completions(const ibv_wc *wc, int n) {
  static const bool verbose = std::getenv("FUZZ_VERBOSE") != nullptr;
  for (int i = 0; verbose && i < n; i++)
    std::fprintf(stderr, "wc: wr_id %llu status %s opcode %d len %u\n",
                 (unsigned long long)wc[i].wr_id, ibv_wc_status_str(wc[i].status),
                 int(wc[i].opcode), wc[i].byte_len);
}

}  // namespace fuzz
