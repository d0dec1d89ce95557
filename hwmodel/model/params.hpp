// Tunables of the modeled NIC. Every parameter is one row of a table (name, default, unit,
// range, meaning); `eca-nicmodel --list-params` prints the table and docs/hwmodel.md carries
// that output. Presets are named sets of overrides in the same "name=value" syntax that the
// ECA_HWMODEL environment string and `--set` use.
//
// All values are integers. Durations carry their unit in the name (_ns, _us); clocks are
// in kHz or MHz; sizes in bytes; 0/1 switches are written 0/1, on/off, yes/no or true/false.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace eca::hwmodel {

// The in-class defaults are the Alteon Tigon on 33 MHz / 32-bit PCI with gigabit Ethernet
// (preset "tigon-pci33"); params.cpp checks at compile time that they equal the table's.
struct Params {
  // --- PCI bus
  int64_t pci_clock_khz = 33'333;
  int64_t pci_width_bytes = 4;
  int64_t pci_burst_setup_cycles = 4;
  int64_t pci_latency_timer_cycles = 64;
  int64_t pci_max_burst_bytes = 4096;
  int64_t pci_read_latency_cycles = 0;
  int64_t pci_shared = 1;
  // --- DMA engines
  int64_t dma_engines = 2;
  int64_t dma_overhead_ns = 5'992;
  // --- firmware (embedded processors)
  int64_t fw_cpus = 2;
  int64_t fw_clock_mhz = 88;
  int64_t fw_desc_cycles = 50;
  int64_t fw_tx_frame_cycles = 100;
  int64_t fw_rx_frame_cycles = 100;
  int64_t desc_bytes = 32;
  int64_t desc_fetch_batch = 16;
  int64_t wb_bytes = 32;
  int64_t wb_batch = 16;
  int64_t doorbell_ns = 300;
  // --- transmit fragmentation / receive coalescing
  int64_t frag = 0;
  int64_t frag_max_chunk = 65'536;
  int64_t frag_frames = 0;
  int64_t coal = 0;
  int64_t coal_max_chunk = 65'536;
  int64_t coal_frames = 0;
  int64_t coal_hdr_bytes = 16;
  int64_t coal_timer_us = 1'000;
  // --- MAC and Ethernet segment
  int64_t mac_rate_mbps = 1'000;
  int64_t eth_preamble_bytes = 8;
  int64_t eth_ifg_bytes = 12;
  int64_t eth_header_bytes = 14;
  int64_t eth_fcs_bytes = 4;
  int64_t eth_min_frame_bytes = 64;
  int64_t eth_max_frame_bytes = 65'536;
  int64_t eth_mtu = 1'500;
  int64_t eth_jumbo_mtu = 9'000;
  int64_t std_payload = 1'498;
  int64_t jumbo_payload = 9'058;
  int64_t link_prop_ns = 50;
  int64_t flow_control = 1;
  int64_t tx_buf_bytes = 262'144;
  int64_t rx_buf_bytes = 262'144;
  int64_t rx_ring = 256;

  bool operator==(const Params &) const = default;
};

struct ParamRow {
  const char *name;
  int64_t Params::*field;
  int64_t deflt;
  int64_t min;
  int64_t max;
  const char *unit;
  const char *help;
};

std::span<const ParamRow> param_table();
const ParamRow *find_param(std::string_view name);

struct Preset {
  const char *name;
  const char *overrides;  // "name=value,..." applied on top of the defaults
  const char *summary;
};
std::span<const Preset> presets();
const Preset *find_preset(std::string_view name);

// Applies "name=value" items separated by commas, whitespace or newlines; '#' starts a
// comment that runs to the end of the line (so a config file can be passed verbatim).
// On the first bad item returns false, leaves `p` unchanged and puts a message naming the
// item into `error`: unknown name, missing '=', non-integer value, or value out of range.
bool parse_overrides(std::string_view text, Params &p, std::string &error);

// Checks relations between parameters (e.g. a burst must leave room for data phases).
// Returns false with a message when the set cannot be simulated.
bool validate(const Params &p, std::string &error);

// defaults -> preset (if non-empty) -> overrides; validated.
bool load_params(std::string_view preset, std::string_view overrides, Params &out,
                 std::string &error);

// Reads ECA_HWMODEL_PRESET and ECA_HWMODEL ("k=v,k=v") from the environment.
bool params_from_env(Params &out, std::string &error);

// The parameter table as markdown: name, value in `p`, default, unit, range, meaning.
std::string params_markdown(const Params &p);
std::string presets_markdown();

}  // namespace eca::hwmodel
