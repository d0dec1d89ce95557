#include "engine/sge.hpp"

#include <algorithm>
#include <cstring>

namespace eca::engine {

ibv_wc_status map_sges(const Pd *pd, std::span<const Sge> sges, int need, SgeMap *out,
                       uint32_t *bad) {
  out->n = 0;
  out->bytes = 0;
  for (uint32_t i = 0; i < sges.size(); i++) {
    const Sge &s = sges[i];
    if (!s.length) continue;
    MrRef &ref = out->refs[out->n];
    if (mr_lookup(s.lkey, pd, s.addr, s.length, need, &ref) != AccessError::None) {
      for (size_t k = 0; k <= out->n; k++) out->refs[k] = MrRef{};
      out->n = 0;
      out->bytes = 0;
      *bad = i;
      return IBV_WC_LOC_PROT_ERR;
    }
    out->iov[out->n] = {ref.host, s.length};
    out->sge[out->n] = &s;
    out->n++;
    out->bytes += s.length;
  }
  return IBV_WC_SUCCESS;
}

ibv_wc_status map_send_sges(const Pd *pd, const SendWqe &w, int need, SgeMap *out,
                            uint32_t *bad) {
  if (!(w.flags & IBV_SEND_INLINE)) return map_sges(pd, {w.sge.data(), w.num_sge}, need, out, bad);
  out->n = 0;
  out->bytes = w.inline_len;
  if (w.inline_len) {
    out->iov[0] = {const_cast<uint8_t *>(w.inline_data.data()), w.inline_len};
    out->sge[0] = nullptr;
    out->n = 1;
  }
  return IBV_WC_SUCCESS;
}

void gather_copy(std::span<const iovec> src, uint64_t from, uint64_t to, uint8_t *out) {
  uint64_t pos = 0;
  for (const iovec &s : src) {
    const uint64_t a = std::max(from, pos), b = std::min<uint64_t>(to, pos + s.iov_len);
    if (a < b) std::memcpy(out + (a - from), static_cast<const uint8_t *>(s.iov_base) + (a - pos), b - a);
    pos += s.iov_len;
    if (pos >= to) break;
  }
}

void scatter_copy(const uint8_t *src, std::span<const iovec> dst, uint64_t from, uint64_t to) {
  uint64_t pos = 0;
  for (const iovec &d : dst) {
    const uint64_t a = std::max(from, pos), b = std::min<uint64_t>(to, pos + d.iov_len);
    if (a < b) std::memcpy(static_cast<uint8_t *>(d.iov_base) + (a - pos), src + (a - from), b - a);
    pos += d.iov_len;
    if (pos >= to) break;
  }
}

size_t slice(std::span<const iovec> segs, uint64_t from, uint64_t to, iovec *out, size_t max) {
  size_t k = 0;
  uint64_t pos = 0;
  for (const iovec &s : segs) {
    if (k == max || pos >= to) break;
    const uint64_t a = std::max(from, pos), b = std::min<uint64_t>(to, pos + s.iov_len);
    if (a < b) out[k++] = {static_cast<uint8_t *>(s.iov_base) + (a - pos), b - a};
    pos += s.iov_len;
  }
  return k;
}

}  // namespace eca::engine
