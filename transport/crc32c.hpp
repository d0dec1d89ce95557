// CRC32c (Castagnoli) for MPA FPDUs, from ISA-L's vectorised crc32_iscsi. The running state
// is the raw (non-inverted) register; the FPDU trailer carries ~state in little-endian byte
// order, as iSCSI digests and the Linux siw driver do.
#pragma once
#include <cstddef>
#include <cstdint>

namespace eca::transport {

inline constexpr uint32_t kCrcInit = 0xffffffffu;
uint32_t crc32c_update(uint32_t state, const void *data, size_t len);
inline uint32_t crc32c_final(uint32_t state) { return ~state; }
inline uint32_t crc32c(const void *data, size_t len) {
  return crc32c_final(crc32c_update(kCrcInit, data, len));
}

}  // namespace eca::transport
