#include "provider/core/config.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <strings.h>

#include "provider/core/log.hpp"

namespace eca {
namespace {

constexpr ConfigRow kRows[] = {
    {"ECA_BACKEND", "software", "-",
     "device kind this process uses: software (iWARP over TCP) or hwmodel (modeled adapter)"},
    {"ECA_MPA_CRC", "1", "bool", "request MPA CRC32c on connections we initiate (C=1 in the "
                                 "MPA Request); the responder's Reply decides what is used"},
    {"ECA_MPA_CRC_REQUIRED", "0", "bool",
     "insist on MPA CRC32c: as responder, reply C=1 even to a Request without it; as "
     "initiator, refuse a Reply with C=0. Off: a responder uses CRC exactly when the "
     "initiator asks for it (RFC 5044: CRC is used unless both ends agree to omit it)"},
    {"ECA_MPA_REV", "2", "-", "MPA revision to initiate with: 2 (RFC 6581, IRD/ORD in private "
                              "data) or 1 (RFC 5044)"},
    {"ECA_MPA_MARKERS", "0", "bool", "request MPA markers (for negative tests only: markers are "
                                     "rejected by this implementation)"},
    {"ECA_FPDU_SIZE", "65000", "bytes", "largest DDP payload per FPDU (64 .. 65488); not tied to "
                                        "the TCP MSS"},
    {"ECA_RX_BATCH", "16384", "bytes", "bytes read per recv() while a header or small frames "
                                       "are expected; large payloads bypass it"},
    {"ECA_TX_INLINE", "1", "bool", "transmit from the posting thread when the socket is idle "
                                   "(0: always hand off to the progress thread)"},
    {"ECA_KEEPALIVE", "0", "s", "TCP keepalive idle time for connected QPs (0 = off)"},
    {"ECA_RECV_WAIT_MS", "1000", "ms", "how long an arriving SEND waits for a receive to be "
                                       "posted before the iWARP error path (TERMINATE)"},
    {"ECA_MPA_TIMEOUT_MS", "10000", "ms", "time limit for the TCP connect and the MPA "
                                          "request/reply exchange (100 .. 600000)"},
    {"ECA_CQ_MODERATION", "0,0", "count,us", "default interrupt moderation of new CQs: the "
                                              "completion event waits for COUNT completions or "
                                              "US microseconds (ibv_modify_cq sets it per CQ)"},
    {"ECA_HWMODEL_MODE", "fast", "-", "modeled adapter: fast (complete as fast as the host "
                                      "allows, count modeled time) or paced (complete no earlier "
                                      "than the modeled time)"},
    {"ECA_HWMODEL_PRESET", "tigon-pci33", "-", "modeled adapter: parameter preset "
                                               "(docs/hwmodel.md, `eca-nicmodel --list-params`)"},
    {"ECA_HWMODEL", "", "k=v,...", "modeled adapter: parameter overrides on top of the preset"},
    {"ECA_LOG", "warn", "-", "log level: error, warn, info, debug"},
};

bool env_bool(const char *name, bool dflt) {
  const char *v = std::getenv(name);
  if (!v || !*v) return dflt;
  return !(strcmp(v, "0") == 0 || strcasecmp(v, "off") == 0 || strcasecmp(v, "no") == 0 ||
           strcasecmp(v, "false") == 0);
}

long env_long(const char *name, long dflt, long lo, long hi) {
  const char *v = std::getenv(name);
  if (!v || !*v) return dflt;
  char *end = nullptr;
  long x = std::strtol(v, &end, 0);
  if (*end || x < lo || x > hi) {
    ECA_LOG(Warn, "%s=%s is out of range [%ld, %ld]; using %ld", name, v, lo, hi, dflt);
    return dflt;
  }
  return x;
}

// Defaults are the member initialisers of Config (config.hpp): the one place they are set.
Config load() {
  Config c;
  if (const char *b = std::getenv("ECA_BACKEND")) {
    if (!strcasecmp(b, "hwmodel") || !strcasecmp(b, "hw"))
      c.backend = BackendKind::HwModel;
    else if (strcasecmp(b, "software") && strcasecmp(b, "sw"))
      ECA_LOG(Warn, "ECA_BACKEND=%s unknown; using software", b);
  }
  c.mpa_crc = env_bool("ECA_MPA_CRC", c.mpa_crc);
  c.mpa_crc_required = env_bool("ECA_MPA_CRC_REQUIRED", c.mpa_crc_required);
  c.mpa_rev = (int)env_long("ECA_MPA_REV", c.mpa_rev, 1, 2);
  c.mpa_markers = env_bool("ECA_MPA_MARKERS", c.mpa_markers);
  c.fpdu_payload = (uint32_t)env_long("ECA_FPDU_SIZE", c.fpdu_payload, 64, 65488);
  c.rx_batch = (uint32_t)env_long("ECA_RX_BATCH", c.rx_batch, 256, 1 << 20);
  c.tx_inline = env_bool("ECA_TX_INLINE", c.tx_inline);
  c.keepalive_s = (uint32_t)env_long("ECA_KEEPALIVE", c.keepalive_s, 0, 3600);
  c.recv_wait_ms = (uint32_t)env_long("ECA_RECV_WAIT_MS", c.recv_wait_ms, 0, 600000);
  c.mpa_timeout_ms = (uint32_t)env_long("ECA_MPA_TIMEOUT_MS", c.mpa_timeout_ms, 100, 600000);
  if (const char *m = std::getenv("ECA_HWMODEL_MODE")) {
    if (!strcasecmp(m, "paced"))
      c.hwmodel_paced = true;
    else if (strcasecmp(m, "fast"))
      ECA_LOG(Warn, "ECA_HWMODEL_MODE=%s unknown; using fast", m);
  }
  if (const char *m = std::getenv("ECA_CQ_MODERATION")) {
    unsigned cnt = 0, us = 0;
    if (std::sscanf(m, "%u,%u", &cnt, &us) == 2 && cnt <= 65535 && us <= 65535) {
      c.cq_mod_count = (uint16_t)cnt;
      c.cq_mod_period_us = (uint16_t)us;
    } else {
      ECA_LOG(Warn, "ECA_CQ_MODERATION=%s is not COUNT,MICROSECONDS; moderation off", m);
    }
  }
  return c;
}

}  // namespace

const Config &config() {
  static const Config c = load();
  return c;
}

std::span<const ConfigRow> config_table() { return kRows; }

}  // namespace eca
