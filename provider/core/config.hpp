// Run-time configuration, read once from the environment. Every tunable is a row of one
// table (name, default, unit, meaning); docs/configuration.md lists the same rows and
// tests/unit/config_test.cpp checks that the two agree.
#pragma once
#include <cstdint>
#include <span>
#include <string>

namespace eca {

enum class BackendKind { Software, HwModel };

struct Config {
  BackendKind backend = BackendKind::Software;
  bool mpa_crc = true;          // initiator: request MPA CRC32c
  bool mpa_crc_required = false;// insist on CRC as responder and as initiator
  int mpa_rev = 2;              // MPA revision we initiate with (1 or 2)
  bool mpa_markers = false;     // request markers (only for tests: markers are never supported)
  uint32_t fpdu_payload = 65000;// max payload bytes per FPDU (ULPDU minus DDP/RDMAP header)
  uint32_t rx_batch = 16384;    // bytes read per recv() while headers/small frames are expected
  bool tx_inline = true;        // transmit from the posting thread when the socket is free
  uint32_t keepalive_s = 0;     // TCP keepalive idle seconds (0 = off); peer death is seen via RST/EOF
  uint32_t recv_wait_ms = 1000; // how long a SEND may wait for a receive to be posted
  uint32_t mpa_timeout_ms = 10000;  // TCP connect + MPA exchange time limit
  bool hwmodel_paced = false;       // ECA_HWMODEL_MODE=paced
  uint16_t cq_mod_count = 0;        // default interrupt moderation of new CQs
  uint16_t cq_mod_period_us = 0;
};

struct ConfigRow {
  const char *env;
  const char *deflt;
  const char *unit;
  const char *meaning;
};

const Config &config();
std::span<const ConfigRow> config_table();

}  // namespace eca
