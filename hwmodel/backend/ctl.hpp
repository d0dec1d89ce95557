// The adapters' control channel (wire format: ctl_wire.hpp) and the checks every shared
// memory object passes before it is mapped.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "hwmodel/backend/ctl_wire.hpp"

namespace eca::hw::ctl {

// A memfd of exactly `size` bytes, mode 0600, sealed against shrinking and growing (and
// against further seals): a peer that maps it can never make our mapping fault. -1 + errno.
int sealed_memfd(const char *name, uint64_t size);

// 0 if `fd` is a regular file of exactly `size` bytes sealed against shrinking and growing;
// EPROTO otherwise. Run on every descriptor a peer hands us, before mmap.
int check_memfd(int fd, uint64_t size);

// The server: a listening socket in a private directory (0700, ours) and a thread that
// answers one request per connection. `handle` runs on that thread.
class Server {
 public:
  struct Caller {
    pid_t pid;
    uid_t uid;
  };
  using Handler = std::function<Reply(const Request &, const Caller &, std::vector<int> *fds)>;
  int start(Handler handle);  // 0 or errno
  const std::string &path() const { return path_; }
  ~Server();

 private:
  void loop();
  int fd_ = -1;
  std::string path_;
  Handler handle_;
  std::thread th_;
};

// One request to the server at `path`: 0 and the reply (its fds in `fds`, owned by the caller,
// at most kMaxFds) with the server's pid from SO_PEERCRED, or an errno. Bounded in time.
int call(const std::string &path, const Request &rq, Reply *rp, std::vector<int> *fds,
         pid_t *server_pid);

}  // namespace eca::hw::ctl
