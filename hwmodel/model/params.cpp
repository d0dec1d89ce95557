#include "hwmodel/model/params.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <strings.h>

namespace eca::hwmodel {
namespace {

constexpr int64_t kMax = int64_t{1} << 40;

constexpr ParamRow kRows[] = {
#define ECA_PARAM(name, deflt, min, max, unit, help) {#name, &Params::name, deflt, min, max, unit, help},
#include "hwmodel/model/params.def"
#undef ECA_PARAM
};

constexpr bool defaults_in_range() {
  for (const ParamRow &r : kRows)
    if (r.deflt < r.min || r.deflt > r.max) return false;
  return true;
}
static_assert(defaults_in_range(), "every default in params.def lies within its row's range");

constexpr Preset kPresets[] = {
    {"tigon-pci33", "",
     "Alteon Tigon, 33 MHz / 32-bit PCI, gigabit Ethernet (the default; calibrated)"},
    {"tigon-pci66", "pci_clock_khz=66667,pci_width_bytes=8",
     "the same NIC and firmware on 66 MHz / 64-bit PCI (prediction)"},
    {"pcie-gen3-x8",
     "pci_clock_khz=984615,pci_width_bytes=8,pci_burst_setup_cycles=3,"
     "pci_latency_timer_cycles=0,pci_max_burst_bytes=256,pci_read_latency_cycles=800,"
     "pci_shared=0,dma_overhead_ns=200,fw_clock_mhz=1000,fw_desc_cycles=20,"
     "fw_tx_frame_cycles=40,fw_rx_frame_cycles=40,desc_fetch_batch=32,wb_batch=32,"
     "doorbell_ns=150,mac_rate_mbps=25000,tx_buf_bytes=1048576,rx_buf_bytes=1048576,"
     "rx_ring=1024",
     "PCI Express 3.0 x8 (8 GT/s, 128b/130b: 7.88 GB/s per direction, 256 B TLP payload, "
     "~24 B TLP overhead) with a 25GbE MAC and a 1 GHz firmware engine (illustrative, "
     "not calibrated)"},
};

bool parse_int(std::string_view v, int64_t &out) {
  if (v == "on" || v == "yes" || v == "true") return out = 1, true;
  if (v == "off" || v == "no" || v == "false") return out = 0, true;
  std::string s(v);
  if (s.empty()) return false;
  errno = 0;
  char *end = nullptr;
  long long x = std::strtoll(s.c_str(), &end, 10);
  if (errno != 0 || *end != '\0') return false;
  out = x;
  return true;
}

bool is_sep(char c) { return c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ';'; }

std::string trim(std::string_view s) {
  size_t a = 0, b = s.size();
  while (a < b && (s[a] == ' ' || s[a] == '\t')) ++a;
  while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t')) --b;
  return std::string(s.substr(a, b - a));
}

}  // namespace

std::span<const ParamRow> param_table() { return kRows; }

const ParamRow *find_param(std::string_view name) {
  for (const ParamRow &r : kRows)
    if (name == r.name) return &r;
  return nullptr;
}

std::span<const Preset> presets() { return kPresets; }

const Preset *find_preset(std::string_view name) {
  for (const Preset &p : kPresets)
    if (name == p.name) return &p;
  return nullptr;
}

bool parse_overrides(std::string_view text, Params &p, std::string &error) {
  Params q = p;
  size_t i = 0;
  while (i < text.size()) {
    if (is_sep(text[i])) { ++i; continue; }
    if (text[i] == '#') {
      while (i < text.size() && text[i] != '\n') ++i;
      continue;
    }
    size_t j = i;
    while (j < text.size() && !is_sep(text[j]) && text[j] != '#') ++j;
    std::string_view item = text.substr(i, j - i);
    i = j;
    size_t eq = item.find('=');
    if (eq == std::string_view::npos) {
      error = "'" + std::string(item) + "': expected name=value";
      return false;
    }
    std::string name = trim(item.substr(0, eq)), value = trim(item.substr(eq + 1));
    const ParamRow *r = find_param(name);
    if (!r) {
      error = "unknown parameter '" + name + "' (eca-nicmodel --list-params shows them all)";
      return false;
    }
    int64_t x = 0;
    if (!parse_int(value, x)) {
      error = "bad value '" + value + "' for " + name + ": expected an integer (" + r->unit +
              ")";
      return false;
    }
    if (x < r->min || x > r->max) {
      error = name + "=" + value + " is out of range [" + std::to_string(r->min) + ", " +
              std::to_string(r->max) + "] " + r->unit;
      return false;
    }
    q.*(r->field) = x;
  }
  p = q;
  return true;
}

bool validate(const Params &p, std::string &error) {
  if (p.pci_latency_timer_cycles != 0 && p.pci_latency_timer_cycles <= p.pci_burst_setup_cycles) {
    error = "pci_latency_timer_cycles must exceed pci_burst_setup_cycles (a bus tenure needs "
            "at least one data phase)";
    return false;
  }
  const int64_t min_frame = p.eth_header_bytes + 1 + p.eth_fcs_bytes;
  if (p.eth_max_frame_bytes < min_frame) {
    error = "eth_max_frame_bytes is shorter than a header + 1 B + FCS";
    return false;
  }
  if (p.std_payload + p.eth_header_bytes + p.eth_fcs_bytes > p.eth_max_frame_bytes ||
      p.jumbo_payload + p.eth_header_bytes + p.eth_fcs_bytes > p.eth_max_frame_bytes) {
    error = "std_payload/jumbo_payload make frames longer than eth_max_frame_bytes";
    return false;
  }
  if (p.frag_max_chunk < p.eth_header_bytes + 1 || p.coal_max_chunk < p.coal_hdr_bytes + p.eth_header_bytes + 1) {
    error = "frag_max_chunk/coal_max_chunk cannot hold one frame";
    return false;
  }
  return true;
}

bool load_params(std::string_view preset, std::string_view overrides, Params &out,
                 std::string &error) {
  Params p;
  if (!preset.empty()) {
    const Preset *pr = find_preset(preset);
    if (!pr) {
      error = "unknown preset '" + std::string(preset) + "' (known:";
      for (const Preset &k : kPresets) error += std::string(" ") + k.name;
      error += ")";
      return false;
    }
    if (!parse_overrides(pr->overrides, p, error)) return false;
  }
  if (!parse_overrides(overrides, p, error)) return false;
  if (!validate(p, error)) return false;
  out = p;
  return true;
}

bool params_from_env(Params &out, std::string &error) {
  const char *preset = std::getenv("ECA_HWMODEL_PRESET");
  const char *ov = std::getenv("ECA_HWMODEL");
  if (!load_params(preset ? preset : "", ov ? ov : "", out, error)) {
    error = "ECA_HWMODEL: " + error;
    return false;
  }
  return true;
}

std::string params_markdown(const Params &p) {
  std::string s = "| name | value | default | unit | range | meaning |\n"
                  "| --- | ---: | ---: | --- | --- | --- |\n";
  for (const ParamRow &r : kRows) {
    s += "| `" + std::string(r.name) + "` | " + std::to_string(p.*(r.field)) + " | " +
         std::to_string(r.deflt) + " | " + r.unit + " | " + std::to_string(r.min) + " .. " +
         std::to_string(r.max) + " | " + r.help + " |\n";
  }
  return s;
}

std::string presets_markdown() {
  std::string s = "| preset | overrides | what it models |\n| --- | --- | --- |\n";
  for (const Preset &p : kPresets)
    s += "| `" + std::string(p.name) + "` | " +
         (*p.overrides ? "`" + std::string(p.overrides) + "`" : std::string("(defaults)")) +
         " | " + p.summary + " |\n";
  return s;
}

}  // namespace eca::hwmodel
