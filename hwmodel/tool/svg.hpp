// Minimal SVG line charts written directly (no plotting dependency): axes with ticks,
// labels, a legend, one polyline with markers per series. Output is a pure function of
// the plot, formatted with fixed precision.
#pragma once
#include <string>

#include "hwmodel/model/experiments.hpp"

namespace eca::hwmodel {
std::string render_svg(const Plot &p);
}
