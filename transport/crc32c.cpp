#include "transport/crc32c.hpp"

#include <isa-l/crc.h>

namespace eca::transport {

uint32_t crc32c_update(uint32_t state, const void *data, size_t len) {
  // crc32_iscsi takes the raw register as its seed and returns the raw register.
  return crc32_iscsi(static_cast<unsigned char *>(const_cast<void *>(data)), (int)len, state);
}

}  // namespace eca::transport
