#include "hwmodel/model/params.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <strings.h>

namespace eca::hwmodel {
namespace {

constexpr int64_t kMax = int64_t{1} << 40;

// Rows are grouped by component; the order here is the order of --list-params.
// "CALIBRATED" marks the parameters fitted to the dissertation's numbers (docs/hwmodel.md).
constexpr ParamRow kRows[] = {
    // --- PCI bus
    {"pci_clock_khz", &Params::pci_clock_khz, 33'333, 1'000, 10'000'000, "kHz",
     "bus clock; the period is rounded up to a whole ps (33333 kHz -> 30001 ps)"},
    {"pci_width_bytes", &Params::pci_width_bytes, 4, 1, 256, "B",
     "bytes moved per data phase (4 = 32-bit PCI, 8 = 64-bit)"},
    {"pci_burst_setup_cycles", &Params::pci_burst_setup_cycles, 4, 0, 1'000, "cycles",
     "bus cycles of every tenure besides data phases: arbitration, address phase, target "
     "initial latency, turnaround. CALIBRATED (with the latency timer) to the 125 MB/s "
     "sustained DMA rate"},
    {"pci_latency_timer_cycles", &Params::pci_latency_timer_cycles, 64, 0, 65'536, "cycles",
     "latency timer: longest bus tenure, so a burst carries at most (timer - setup) data "
     "phases; 64 is the common BIOS setting; 0 = no limit"},
    {"pci_max_burst_bytes", &Params::pci_max_burst_bytes, 4'096, 1, 1 << 20, "B",
     "hard cap on the bytes of one burst (DMA engine limit / page boundary), applied after "
     "the latency timer"},
    {"pci_read_latency_cycles", &Params::pci_read_latency_cycles, 0, 0, 1'000'000, "cycles",
     "extra initial latency of each host->NIC transaction (memory read round trip); on a "
     "shared bus it holds the bus, on split links it does not"},
    {"pci_shared", &Params::pci_shared, 1, 0, 1, "bool",
     "1: one half-duplex bus arbitrated between the DMA engines (PCI); 0: one link per "
     "direction (PCI Express)"},
    // --- DMA engines
    {"dma_engines", &Params::dma_engines, 2, 1, 2, "-",
     "independent DMA engines: 2 = one host->NIC and one NIC->host (Tigon); 1 = one engine "
     "serving both directions in turn"},
    {"dma_overhead_ns", &Params::dma_overhead_ns, 5'992, 0, 1'000'000, "ns",
     "fixed cost of one DMA transaction besides bus time (firmware builds and posts the DMA "
     "descriptor, the engine starts, completion is noticed); serial with the bus time. "
     "CALIBRATED to NIC->host DMA at 1512 B"},
    // --- firmware
    {"fw_cpus", &Params::fw_cpus, 2, 1, 2, "-",
     "embedded processors: 2 = transmit work on one, receive work on the other; 1 = both "
     "on one"},
    {"fw_clock_mhz", &Params::fw_clock_mhz, 88, 1, 100'000, "MHz",
     "processor clock (Tigon II: 88 MHz; an assumption, the seed text gives none)"},
    {"fw_desc_cycles", &Params::fw_desc_cycles, 50, 0, 1'000'000, "cycles",
     "firmware work per host descriptor (send or receive): validate, program the DMA"},
    {"fw_tx_frame_cycles", &Params::fw_tx_frame_cycles, 100, 0, 1'000'000, "cycles",
     "firmware work per transmitted frame: parse header, queue to the MAC"},
    {"fw_rx_frame_cycles", &Params::fw_rx_frame_cycles, 100, 0, 1'000'000, "cycles",
     "firmware work per received frame: classify, choose the host buffer"},
    {"desc_bytes", &Params::desc_bytes, 32, 1, 4'096, "B",
     "size of one host descriptor (fetched by DMA from the host ring)"},
    {"desc_fetch_batch", &Params::desc_fetch_batch, 16, 1, 4'096, "-",
     "most descriptors fetched by one DMA; a fetch starts when half a batch or less is left"},
    {"wb_bytes", &Params::wb_bytes, 32, 1, 4'096, "B",
     "bytes written back to the host per completion (return-ring entry)"},
    {"wb_batch", &Params::wb_batch, 16, 1, 4'096, "-",
     "completions per write-back DMA; written earlier when the NIC->host engine is idle"},
    {"doorbell_ns", &Params::doorbell_ns, 300, 0, 1'000'000, "ns",
     "host doorbell (PIO write) to firmware noticing it"},
    // --- transmit fragmentation / receive coalescing
    {"frag", &Params::frag, 0, 0, 1, "bool",
     "transmit fragmentation: the host hands one chunk of frames, DMAed once, cut into "
     "frames by firmware (default mode of HostToHostModel)"},
    {"frag_max_chunk", &Params::frag_max_chunk, 65'536, 64, 1 << 24, "B",
     "largest chunk one DMA may move (64 KiB: 43 frames of 1512 B)"},
    {"frag_frames", &Params::frag_frames, 0, 0, 65'536, "frames",
     "frames per chunk; 0 = as many as fit in frag_max_chunk"},
    {"coal", &Params::coal, 0, 0, 1, "bool",
     "receive coalescing: several frames gathered and DMAed to the host in one transaction "
     "(default mode of HostToHostModel)"},
    {"coal_max_chunk", &Params::coal_max_chunk, 65'536, 64, 1 << 24, "B",
     "largest receive chunk, i.e. host buffer and DMA size"},
    {"coal_frames", &Params::coal_frames, 0, 0, 65'536, "frames",
     "frames per coalesced DMA; 0 = as many as fit in coal_max_chunk"},
    {"coal_hdr_bytes", &Params::coal_hdr_bytes, 16, 0, 4'096, "B",
     "status written in front of each frame in a coalesced chunk (length, flags, checksum). "
     "CALIBRATED to '42 packets of 1.5K at most'"},
    {"coal_timer_us", &Params::coal_timer_us, 1'000, 1, 1'000'000'000, "us",
     "coalescing timer: a partly filled chunk is DMAed this long after its first frame"},
    // --- MAC and Ethernet segment
    {"mac_rate_mbps", &Params::mac_rate_mbps, 1'000, 1, 1'000'000, "Mbit/s",
     "line rate"},
    {"eth_preamble_bytes", &Params::eth_preamble_bytes, 8, 0, 64, "B", "preamble + SFD"},
    {"eth_ifg_bytes", &Params::eth_ifg_bytes, 12, 0, 1'024, "B", "inter-frame gap"},
    {"eth_header_bytes", &Params::eth_header_bytes, 14, 0, 1'024, "B",
     "MAC header (destination, source, type); part of every DMA"},
    {"eth_fcs_bytes", &Params::eth_fcs_bytes, 4, 0, 64, "B",
     "frame check sequence; added by the MAC, stripped on receive"},
    {"eth_min_frame_bytes", &Params::eth_min_frame_bytes, 64, 0, 1'024, "B",
     "shortest frame (header + payload + FCS); shorter frames are padded"},
    {"eth_max_frame_bytes", &Params::eth_max_frame_bytes, 65'536, 64, 1 << 24, "B",
     "longest frame the MAC accepts (Tigon: 64K; CRC weakens beyond ~12K)"},
    {"eth_mtu", &Params::eth_mtu, 1'500, 46, 1 << 24, "B", "standard MTU (informational)"},
    {"eth_jumbo_mtu", &Params::eth_jumbo_mtu, 9'000, 46, 1 << 24, "B",
     "jumbo MTU (informational; the dissertation's 9K tests carried 9054-9058 B)"},
    {"std_payload", &Params::std_payload, 1'498, 1, 1 << 24, "B",
     "payload of a standard 1.5K frame in the experiments (dissertation: 1498)"},
    {"jumbo_payload", &Params::jumbo_payload, 9'058, 1, 1 << 24, "B",
     "payload of a 9K jumbo frame in the experiments (dissertation: 9058)"},
    {"link_prop_ns", &Params::link_prop_ns, 50, 0, 1'000'000'000, "ns",
     "propagation delay of the segment (10 m of cable)"},
    {"flow_control", &Params::flow_control, 1, 0, 1, "bool",
     "1: idealised 802.3x flow control, a sender never overruns the receiver's buffer; "
     "0: frames that find the receive buffer full are dropped"},
    {"tx_buf_bytes", &Params::tx_buf_bytes, 262'144, 1'024, kMax, "B",
     "NIC memory for frames DMAed from the host and not yet sent"},
    {"rx_buf_bytes", &Params::rx_buf_bytes, 262'144, 1'024, kMax, "B",
     "NIC memory for received frames not yet DMAed to the host"},
    {"rx_ring", &Params::rx_ring, 256, 1, 65'536, "-",
     "receive descriptors the host keeps posted (HostToHostModel)"},
};

constexpr bool defaults_match_struct() {
  Params p;
  for (const ParamRow &r : kRows)
    if (p.*(r.field) != r.deflt || r.deflt < r.min || r.deflt > r.max) return false;
  return sizeof(Params) == sizeof(int64_t) * std::size(kRows);
}
static_assert(defaults_match_struct(),
              "every Params field needs one row whose default equals the in-class value");

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
