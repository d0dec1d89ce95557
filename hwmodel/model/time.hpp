// Modeled time. Every instant and duration in the model is an integer number of
// picoseconds (ps_t); there is no floating point on the simulation path and no wall clock
// anywhere. Conversions that can lose precision ROUND UP, so a modeled cost is never
// shorter than the real one: a 33.333 MHz clock is 30001 ps, not 30000.3 ps, and 3 bytes at
// 7 Mbit/s take ceil(3 * 8e6 / 7) = 3428572 ps. Doubles appear only when reporting.
#pragma once
#include <cassert>
#include <cstdint>

namespace eca::hwmodel {

using ps_t = int64_t;

inline constexpr ps_t kPsPerNs = 1'000;
inline constexpr ps_t kPsPerUs = 1'000'000;
inline constexpr ps_t kPsPerMs = 1'000'000'000;
inline constexpr ps_t kPsPerS = 1'000'000'000'000;

// ceil(a / b) for a >= 0, b > 0.
constexpr int64_t ceil_div(int64_t a, int64_t b) {
  assert(a >= 0 && b > 0);
  return a / b + (a % b != 0);
}

constexpr ps_t from_ns(int64_t ns) { return ns * kPsPerNs; }
constexpr ps_t from_us(int64_t us) { return us * kPsPerUs; }

// Period of a clock given in kHz or MHz, rounded up to a whole picosecond.
constexpr ps_t period_from_khz(int64_t khz) { return ceil_div(1'000'000'000, khz); }
constexpr ps_t period_from_mhz(int64_t mhz) { return ceil_div(1'000'000, mhz); }

// n clock cycles of the given period.
constexpr ps_t cycles(int64_t n, ps_t period) { return n * period; }

// Time to move `bytes` at `mbps` megabits per second: ceil(bytes * 8 * 10^6 / mbps) ps.
// The product is formed in 128 bits, so any byte count an int64 holds is safe.
constexpr ps_t bytes_at_mbps(int64_t bytes, int64_t mbps) {
  assert(bytes >= 0 && mbps > 0);
  const __int128 num = static_cast<__int128>(bytes) * 8'000'000;
  return static_cast<ps_t>(num / mbps + (num % mbps != 0));
}

// Reporting helpers (not used to advance time).
constexpr double to_us(ps_t t) { return static_cast<double>(t) / kPsPerUs; }
// Throughput in Mbit/s of `bytes` moved in `t` ps (0 if t == 0).
constexpr double mbit_per_s(int64_t bytes, ps_t t) {
  return t > 0 ? static_cast<double>(bytes) * 8.0 * 1e6 / static_cast<double>(t) : 0.0;
}

static_assert(period_from_khz(33'333) == 30'001);
static_assert(period_from_mhz(88) == 11'364);
static_assert(bytes_at_mbps(1, 1000) == 8'000);
static_assert(bytes_at_mbps(3, 7) == 3'428'572);

}  // namespace eca::hwmodel
