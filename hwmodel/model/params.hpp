// Tunables of the modeled NIC. Every parameter is one row of params.def (name, default, range,
// unit, meaning); `eca-nicmodel --list-params` prints the table and docs/hwmodel.md carries
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

// One int64_t field per row of params.def, initialised to the row's default (preset
// "tigon-pci33").
struct Params {
#define ECA_PARAM(name, deflt, min, max, unit, help) int64_t name = deflt;
#include "hwmodel/model/params.def"
#undef ECA_PARAM

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
