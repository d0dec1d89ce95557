// engine/: the connection core both backends share. SGE mapping against real registrations
// (a device of this process, two PDs) and the scatter/gather copies, checked against a flat
// copy of the same bytes (a second computation) at every boundary.
#include <gtest/gtest.h>
#include <infiniband/verbs.h>

#include <cstring>
#include <numeric>
#include <vector>

#include "engine/atomic.hpp"
#include "engine/sge.hpp"
#include "provider/core/objects.hpp"

namespace {

using eca::engine::SgeMap;

// One device context, two PDs, MRs registered on demand; all released at the end.
class EngineSge : public ::testing::Test {
 protected:
  void SetUp() override {
    int n = 0;
    ibv_device **list = ibv_get_device_list(&n);
    ASSERT_TRUE(list && n > 0) << "no device";
    ctx_ = ibv_open_device(list[0]);
    ibv_free_device_list(list);
    ASSERT_NE(ctx_, nullptr);
    pd_ = ibv_alloc_pd(ctx_);
    other_pd_ = ibv_alloc_pd(ctx_);
    ASSERT_TRUE(pd_ && other_pd_);
  }
  void TearDown() override {
    for (ibv_mr *m : mrs_) ibv_dereg_mr(m);
    if (pd_) ibv_dealloc_pd(pd_);
    if (other_pd_) ibv_dealloc_pd(other_pd_);
    if (ctx_) ibv_close_device(ctx_);
  }
  ibv_mr *Reg(ibv_pd *pd, void *p, size_t n, int access) {
    ibv_mr *m = ibv_reg_mr(pd, p, n, access);
    EXPECT_NE(m, nullptr);
    if (m) mrs_.push_back(m);
    return m;
  }
  static eca::Sge S(ibv_mr *m, const uint8_t *p, uint32_t n) {
    return {(uint64_t)(uintptr_t)p, n, m->lkey};
  }
  eca::Pd *pd() const { return eca::Pd::from(pd_); }

  ibv_context *ctx_ = nullptr;
  ibv_pd *pd_ = nullptr, *other_pd_ = nullptr;
  std::vector<ibv_mr *> mrs_;
};

TEST_F(EngineSge, MapsNonEmptySgesInOrder) {
  std::vector<uint8_t> a(64), b(64);
  ibv_mr *ma = Reg(pd_, a.data(), a.size(), IBV_ACCESS_LOCAL_WRITE);
  ibv_mr *mb = Reg(pd_, b.data(), b.size(), IBV_ACCESS_LOCAL_WRITE);
  const eca::Sge sges[] = {S(ma, a.data() + 8, 16), S(mb, b.data(), 0), S(mb, b.data() + 4, 60)};
  SgeMap m;
  uint32_t bad = 99;
  ASSERT_EQ(IBV_WC_SUCCESS, eca::engine::map_sges(pd(), sges, IBV_ACCESS_LOCAL_WRITE, &m, &bad));
  ASSERT_EQ(m.n, 2u) << "a zero-length SGE maps to nothing";
  EXPECT_EQ(m.bytes, 76u);
  EXPECT_EQ(m.iov[0].iov_base, a.data() + 8);
  EXPECT_EQ(m.iov[0].iov_len, 16u);
  EXPECT_EQ(m.iov[1].iov_base, b.data() + 4);
  EXPECT_EQ(m.sge[1], &sges[2]);
  EXPECT_EQ(bad, 99u) << "untouched on success";
}

TEST_F(EngineSge, RefusesWhatTheMrDoesNotAllow) {
  std::vector<uint8_t> a(64);
  ibv_mr *ro = Reg(pd_, a.data(), a.size(), 0);  // local read only
  ibv_mr *rw = Reg(pd_, a.data(), a.size(), IBV_ACCESS_LOCAL_WRITE);
  ibv_mr *foreign = Reg(other_pd_, a.data(), a.size(), IBV_ACCESS_LOCAL_WRITE);
  struct Case {
    const char *name;
    eca::Sge bad_sge;
    int need;
  } cases[] = {
      {"write to a read-only MR", S(ro, a.data(), 8), IBV_ACCESS_LOCAL_WRITE},
      {"MR of another PD", S(foreign, a.data(), 8), 0},
      {"past the end", S(rw, a.data() + 60, 8), 0},
      {"before the start", S(rw, a.data() - 1, 8), 0},
      {"unknown lkey", {(uint64_t)(uintptr_t)a.data(), 8, rw->lkey ^ 0x5a5a00}, 0},
  };
  for (const Case &c : cases) {
    const eca::Sge sges[] = {S(rw, a.data(), 4), {0, 0, 0}, c.bad_sge};
    SgeMap m;
    uint32_t bad = 99;
    EXPECT_EQ(IBV_WC_LOC_PROT_ERR, eca::engine::map_sges(pd(), sges, c.need, &m, &bad)) << c.name;
    EXPECT_EQ(bad, 2u) << c.name << ": the index counts every SGE, empty ones too";
    EXPECT_EQ(m.n, 0u) << c.name;
    EXPECT_EQ(m.refs[0].mr, nullptr) << c.name << ": nothing stays referenced";
  }
}

TEST_F(EngineSge, InlineDataIsOnePieceWithoutLookup) {
  eca::SendWqe w;
  w.flags = IBV_SEND_INLINE;
  w.inline_len = 5;
  w.num_sge = 1;
  w.sge[0] = {0x1000, 5, 0xdead};  // would fail a lookup
  SgeMap m;
  uint32_t bad = 0;
  ASSERT_EQ(IBV_WC_SUCCESS, eca::engine::map_send_sges(pd(), w, 0, &m, &bad));
  ASSERT_EQ(m.n, 1u);
  EXPECT_EQ(m.iov[0].iov_base, w.inline_data.data());
  EXPECT_EQ(m.bytes, 5u);
  w.inline_len = 0;
  ASSERT_EQ(IBV_WC_SUCCESS, eca::engine::map_send_sges(pd(), w, 0, &m, &bad));
  EXPECT_EQ(m.n, 0u);
}

// Segments of 3, 0, 5, 1 and 7 bytes over one buffer with gaps, so that a copy that crosses
// a boundary wrongly lands in a gap and shows.
struct Segs {
  std::vector<uint8_t> mem = std::vector<uint8_t>(64, 0);
  std::vector<iovec> iov;
  std::vector<size_t> at;  // offset in mem of each byte of the concatenation
  Segs() {
    size_t pos = 1;
    for (size_t n : {3, 0, 5, 1, 7}) {
      iov.push_back({mem.data() + pos, n});
      for (size_t i = 0; i < n; i++) at.push_back(pos + i);
      pos += n + 2;
    }
  }
};

TEST(EngineCopy, GatherScatterSliceAtEveryBoundary) {
  Segs s;
  const size_t total = s.at.size();
  ASSERT_EQ(total, 16u);
  for (size_t from = 0; from <= total; from++)
    for (size_t to = from; to <= total + 2; to++) {
      SCOPED_TRACE(testing::Message() << "[" << from << ", " << to << ")");
      const size_t end = std::min(to, total);
      // scatter: bytes 100.. into [from, to); everything else stays 0
      std::fill(s.mem.begin(), s.mem.end(), 0);
      std::vector<uint8_t> src(to - from);
      std::iota(src.begin(), src.end(), 100);
      eca::engine::scatter_copy(src.data(), s.iov, from, to);
      std::vector<uint8_t> want(s.mem.size(), 0);
      for (size_t i = from; i < end; i++) want[s.at[i]] = (uint8_t)(100 + i - from);
      EXPECT_EQ(s.mem, want);
      // gather: the concatenation's bytes [from, end)
      std::iota(s.mem.begin(), s.mem.end(), 1);
      std::vector<uint8_t> out(to - from, 0), ref(to - from, 0);
      eca::engine::gather_copy(s.iov, from, to, out.data());
      for (size_t i = from; i < end; i++) ref[i - from] = s.mem[s.at[i]];
      EXPECT_EQ(out, ref);
      // slice: pieces whose bytes are exactly those
      iovec pieces[8];
      const size_t np = eca::engine::slice(s.iov, from, to, pieces, 8);
      std::vector<uint8_t> joined;
      for (size_t k = 0; k < np; k++) {
        EXPECT_GT(pieces[k].iov_len, 0u);
        const uint8_t *p = static_cast<const uint8_t *>(pieces[k].iov_base);
        joined.insert(joined.end(), p, p + pieces[k].iov_len);
      }
      EXPECT_EQ(joined, std::vector<uint8_t>(ref.begin(), ref.begin() + (end - from)));
    }
  iovec one[1];
  EXPECT_EQ(eca::engine::slice(s.iov, 0, 16, one, 1), 1u) << "at most `max` pieces";
}

// The verbs atomics (fetch-add, compare-swap) executed on a word: original value returned.
TEST(EngineAtomic, ExecutesOnTheWord) {
  alignas(8) uint64_t word = 40;
  EXPECT_EQ(eca::engine::atomic_execute((uint8_t *)&word, eca::engine::atomic_fetch_add(1, 0, 2)),
            40u);
  EXPECT_EQ(word, 42u);
  EXPECT_EQ(eca::engine::atomic_execute((uint8_t *)&word,
                                        eca::engine::atomic_compare_swap(1, 0, 41, 7)),
            42u);
  EXPECT_EQ(word, 42u) << "compare failed: unchanged";
  EXPECT_EQ(eca::engine::atomic_execute((uint8_t *)&word,
                                        eca::engine::atomic_compare_swap(1, 0, 42, 7)),
            42u);
  EXPECT_EQ(word, 7u);
}

}  // namespace
