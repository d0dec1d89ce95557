// eca-nicmodel: runs the dissertation's experiments on the modeled NIC, in modeled time,
// and prints tables; optionally writes CSV files and SVG plots. The output depends only on
// the parameters, never on the machine's clock or load, and is byte-identical run to run.
//
//   eca-nicmodel --experiment all --csv out/csv --plot out/svg
//   eca-nicmodel --preset tigon-pci66 --experiment d
//   eca-nicmodel --set dma_overhead_ns=3000 --set coal_timer_us=200 --experiment d
//   eca-nicmodel --list-params
#include <CLI/CLI.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "hwmodel/model/experiments.hpp"
#include "hwmodel/model/params.hpp"
#include "hwmodel/tool/svg.hpp"

using namespace eca::hwmodel;
namespace fs = std::filesystem;

namespace {

bool write_file(const fs::path &path, const std::string &text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
  if (!f) {
    std::cerr << "eca-nicmodel: cannot write " << path.string() << "\n";
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char **argv) {
  CLI::App app{"Modeled Alteon-Tigon-class NIC: runs the gigabit NIC dissertation's "
               "experiments in modeled time"};
  std::string preset = "tigon-pci33", experiment = "all", csv_dir, plot_dir, config;
  std::vector<std::string> sets;
  bool list_params = false, list_presets = false;
  app.add_option("--preset", preset, "parameter preset (see --list-presets)");
  app.add_option("--set", sets, "override a parameter: name=value (repeatable; commas allowed)");
  app.add_option("--config", config, "file of name=value lines ('#' comments) applied after the preset");
  app.add_option("--experiment,-e", experiment, "a | b | c | d | calib | all")
      ->check(CLI::IsMember({"a", "b", "c", "d", "calib", "all"}));
  app.add_option("--csv", csv_dir, "write one CSV file per table into DIR");
  app.add_option("--plot", plot_dir, "write one SVG line chart per plot into DIR");
  app.add_flag("--list-params", list_params, "print the parameter table (markdown) and exit");
  app.add_flag("--list-presets", list_presets, "print the presets (markdown) and exit");
  CLI11_PARSE(app, argc, argv);

  std::string overrides;
  if (!config.empty()) {
    std::ifstream f(config);
    if (!f) {
      std::cerr << "eca-nicmodel: cannot read " << config << "\n";
      return 2;
    }
    std::stringstream ss;
    ss << f.rdbuf();
    overrides = ss.str() + "\n";
  }
  for (const std::string &s : sets) overrides += s + "\n";
  Params p;
  std::string err;
  if (!load_params(preset, overrides, p, err)) {
    std::cerr << "eca-nicmodel: " << err << "\n";
    return 2;
  }
  if (list_params) {
    std::cout << params_markdown(p);
    return 0;
  }
  if (list_presets) {
    std::cout << presets_markdown();
    return 0;
  }

  std::vector<std::string> which;
  if (experiment == "all") which = {"calib", "a", "b", "c", "d"};
  else which = {experiment};

  for (const std::string *dir : {&csv_dir, &plot_dir}) {
    if (dir->empty()) continue;
    std::error_code ec;
    fs::create_directories(*dir, ec);
    if (ec) {
      std::cerr << "eca-nicmodel: cannot create " << *dir << ": " << ec.message() << "\n";
      return 2;
    }
  }

  std::cout << "# eca-nicmodel preset=" << preset;
  for (const ParamRow &r : param_table())
    if (p.*(r.field) != r.deflt) std::cout << " " << r.name << "=" << p.*(r.field);
  std::cout << "\n\n";
  for (const std::string &e : which) {
    const ExperimentOutput out = run_experiment(e, p);
    for (const Table &t : out.tables) {
      std::cout << format_table(t);
      if (!csv_dir.empty() && !write_file(fs::path(csv_dir) / (t.id + ".csv"), to_csv(t)))
        return 1;
    }
    if (!plot_dir.empty())
      for (const Plot &pl : out.plots)
        if (!write_file(fs::path(plot_dir) / (pl.id + ".svg"), render_svg(pl))) return 1;
  }
  return 0;
}
