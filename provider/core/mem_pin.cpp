// Registration-time checks of application memory (see mem_pin.hpp).
#include "provider/core/mem_pin.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

namespace eca {
namespace {

size_t page_size() {
  static const size_t pg = (size_t)::sysconf(_SC_PAGESIZE);
  return pg;
}

// The whole of /proc/self/maps (it is generated on read: no size is known in advance).
bool read_maps(std::string *out) {
  int fd = ::open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[16384];
  for (;;) {
    ssize_t r = ::read(fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      ::close(fd);
      return r == 0;
    }
    out->append(buf, (size_t)r);
  }
}

}  // namespace

int mem_maps_check(const char *maps, size_t maps_len, uintptr_t begin, uintptr_t end,
                   bool write) {
  // Lines "lo-hi perms ...", ascending and non-overlapping: walk them with a cursor that must
  // move from `begin` to `end` without a gap.
  uintptr_t cur = begin;
  const char *p = maps, *e = maps + maps_len;
  while (p < e && cur < end) {
    const char *nl = static_cast<const char *>(std::memchr(p, '\n', (size_t)(e - p)));
    const char *line_end = nl ? nl : e;
    char *q;
    unsigned long long lo = std::strtoull(p, &q, 16);
    unsigned long long hi = (*q == '-') ? std::strtoull(q + 1, &q, 16) : 0;
    const bool ok = q + 3 < line_end && *q == ' ';
    p = nl ? nl + 1 : e;
    if (!ok || hi <= cur) continue;
    if (lo > cur) return EFAULT;  // a hole
    const char r = q[1], w = q[2];
    if (r != 'r' || (write && w != 'w')) return EFAULT;
    cur = (uintptr_t)hi;
  }
  return cur >= end ? 0 : EFAULT;
}

bool mem_populate_supported() {
  static const bool ok = [] {
    // A page of our own that is certainly mapped and readable: unknown advice is EINVAL.
    static char probe[1];
    uintptr_t pg = reinterpret_cast<uintptr_t>(probe) & ~(uintptr_t)(page_size() - 1);
    return ::madvise(reinterpret_cast<void *>(pg), page_size(), MADV_POPULATE_READ) == 0;
  }();
  return ok;
}

int mem_pin_check(const void *addr, size_t len, bool write) {
  const size_t pg = page_size();
  const uintptr_t begin = reinterpret_cast<uintptr_t>(addr) & ~(uintptr_t)(pg - 1);
  const uintptr_t last = reinterpret_cast<uintptr_t>(addr) + len - 1;  // no wrap: caller
  const uintptr_t end = (last | (pg - 1)) + 1;                        // 0 if the top page
  // 1. Mappings first: a 1 TiB length must fail here, not after populating what is mapped.
  std::string maps;
  if (!read_maps(&maps)) return EFAULT;
  if (int rc = mem_maps_check(maps.data(), maps.size(), begin, end ? end : UINTPTR_MAX, write))
    return rc;
  // 2. Pinning cannot hold more than the machine has (the kernel fails such a pin ENOMEM).
  const long pages = ::sysconf(_SC_PHYS_PAGES);
  if (pages > 0 && (end - begin) / pg > (uintptr_t)pages) return ENOMEM;
  // 3. Populate: fails exactly where get_user_pages() would.
  if (!mem_populate_supported()) return 0;
  int r;
  do {
    r = ::madvise(reinterpret_cast<void *>(begin), end - begin,
                  write ? MADV_POPULATE_WRITE : MADV_POPULATE_READ);
  } while (r != 0 && errno == EINTR);
  if (r == 0) return 0;
  return (errno == ENOMEM || errno == EAGAIN) ? ENOMEM : EFAULT;  // OOM; else SIGBUS-like
}

}  // namespace eca
