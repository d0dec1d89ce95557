// Reference measurements for the modeled-hardware benchmark, taken on the same machine in
// the same run as the perftest numbers they are compared with:
//
//   eca-refbench memcpy   [--size BYTES] [--seconds S]   memcpy bandwidth (bytes/s)
//   eca-refbench pingpong [--iters N]                     one-way latency (us) of a ping-pong
//                                                         between two processes spinning on
//                                                         shared memory
//
// Output is one line "name value unit" so scripts can parse it.
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

int memcpy_bw(size_t size, double secs) {
  std::vector<unsigned char> src(size, 0x5a), dst(size, 0);
  // warm up
  for (int i = 0; i < 64; i++) std::memcpy(dst.data(), src.data(), size);
  uint64_t bytes = 0;
  auto t0 = Clock::now();
  double el = 0;
  do {
    for (int i = 0; i < 256; i++) {
      std::memcpy(dst.data(), src.data(), size);
      src[i % size] ^= 1;  // keep the copy observable
    }
    bytes += 256ull * size;
    el = seconds_since(t0);
  } while (el < secs);
  volatile unsigned char sink = dst[size / 2];
  (void)sink;
  std::printf("memcpy_bw %.0f bytes/s\n", (double)bytes / el);
  return 0;
}

struct alignas(64) Line {
  std::atomic<uint64_t> v;
};

int pingpong(uint64_t iters) {
  void *p = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    std::perror("mmap");
    return 1;
  }
  auto *ping = new (p) Line{};
  auto *pong = new (static_cast<char *>(p) + 64) Line{};
  pid_t child = fork();
  if (child < 0) {
    std::perror("fork");
    return 1;
  }
  if (child == 0) {  // responder: answer every ping
    for (uint64_t i = 1; i <= iters + 1000; i++) {
      while (ping->v.load(std::memory_order_acquire) < i) {
      }
      pong->v.store(i, std::memory_order_release);
    }
    _exit(0);
  }
  auto round = [&](uint64_t i) {
    ping->v.store(i, std::memory_order_release);
    while (pong->v.load(std::memory_order_acquire) < i) {
    }
  };
  for (uint64_t i = 1; i <= 1000; i++) round(i);  // warm up
  auto t0 = Clock::now();
  for (uint64_t i = 1001; i <= iters + 1000; i++) round(i);
  double el = seconds_since(t0);
  int st = 0;
  waitpid(child, &st, 0);
  std::printf("pingpong_one_way %.3f us\n", el / (double)iters / 2 * 1e6);
  return 0;
}

}  // namespace

int main(int argc, char **argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s memcpy [--size B] [--seconds S] | pingpong [--iters N]\n",
                 argv[0]);
    return 2;
  }
  std::string mode = argv[1];
  size_t size = 65536;
  double secs = 2.0;
  uint64_t iters = 200000;
  for (int i = 2; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    if (k == "--size") size = std::strtoull(argv[i + 1], nullptr, 0);
    else if (k == "--seconds") secs = std::strtod(argv[i + 1], nullptr);
    else if (k == "--iters") iters = std::strtoull(argv[i + 1], nullptr, 0);
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  if (mode == "memcpy" && size > 0) return memcpy_bw(size, secs);
  if (mode == "pingpong" && iters > 0) return pingpong(iters);
  std::fprintf(stderr, "bad arguments\n");
  return 2;
}
