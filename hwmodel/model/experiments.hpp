// The dissertation's experiments, run in modeled time, and the calibration table that
// compares the model with every number the dissertation text gives. Results are tables
// (printable, CSV) and line plots (data series); formatting is fixed-precision, so the
// output of a parameter set is byte-identical from run to run.
#pragma once
#include <string>
#include <vector>

#include "hwmodel/model/params.hpp"

namespace eca::hwmodel {

struct Table {
  std::string id;     // file stem for --csv
  std::string title;
  std::vector<std::string> columns;
  std::vector<std::vector<std::string>> rows;
  std::string note;
};

struct Series {
  std::string name;
  std::vector<double> x, y;
};

struct Plot {
  std::string id;  // file stem for --plot
  std::string title, xlabel, ylabel;
  bool log_x = false;
  std::vector<Series> series;
};

struct ExperimentOutput {
  std::vector<Table> tables;
  std::vector<Plot> plots;
};

// (a) theoretical maximum throughput by frame size
ExperimentOutput experiment_a(const Params &p);
// (b) NIC-to-NIC line speed: firmware-limited frame rate vs line rate, by frame size
ExperimentOutput experiment_b(const Params &p);
// (c) host->NIC and NIC->host DMA throughput by transfer size
ExperimentOutput experiment_c(const Params &p);
// (d) host-to-host throughput: standard firmware, fragmentation, coalescing, both;
//     1.5K and 9K frames; by frames per chunk / per coalesced DMA
ExperimentOutput experiment_d(const Params &p);
// Every number in the dissertation text against the model (meaningful for the default
// preset): quantity, published, model, error %, calibrates / prediction.
struct CalibrationRow {
  std::string quantity;
  double published;
  double model;
  std::string unit;
  bool calibrates;     // a parameter was fitted to this number
  std::string basis;   // which parameter, or why it is a prediction
  double tol_pct = 1.0;  // agreement required by the tests
  double error_pct() const { return published != 0 ? (model - published) / published * 100.0 : 0; }
};
std::vector<CalibrationRow> calibration(const Params &p);
ExperimentOutput experiment_calibration(const Params &p);

// Runs one experiment by name: "a", "b", "c", "d" or "calib".
ExperimentOutput run_experiment(const std::string &name, const Params &p);

std::string format_table(const Table &t);  // aligned text with title and note
std::string to_csv(const Table &t);
std::string fmt(double v, int decimals);

}  // namespace eca::hwmodel
