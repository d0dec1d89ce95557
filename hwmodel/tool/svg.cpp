#include "hwmodel/tool/svg.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

namespace eca::hwmodel {
namespace {

constexpr double kW = 860, kH = 520, kL = 80, kR = 250, kT = 50, kB = 60;
constexpr const char *kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"};

std::string f2(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f", v);
  return b;
}

std::string label(double v) {
  char b[32];
  if (std::fabs(v) >= 1e6) std::snprintf(b, sizeof b, "%.3gM", v / 1e6);
  else if (std::fabs(v) >= 1e4) std::snprintf(b, sizeof b, "%.4gk", v / 1e3);
  else std::snprintf(b, sizeof b, "%.4g", v);
  return b;
}

std::string esc(const std::string &s) {
  std::string o;
  for (char c : s) {
    if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '&') o += "&amp;";
    else o += c;
  }
  return o;
}

// A "nice" tick step (1, 2 or 5 times a power of ten) giving about n ticks over span.
double nice_step(double span, int n) {
  const double raw = span / n;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double r = raw / mag;
  return (r < 1.5 ? 1 : r < 3.5 ? 2 : r < 7.5 ? 5 : 10) * mag;
}

}  // namespace

std::string render_svg(const Plot &p) {
  double x0 = 1e300, x1 = -1e300, y1 = 0;
  for (const Series &s : p.series)
    for (size_t i = 0; i < s.x.size(); ++i) {
      x0 = std::min(x0, s.x[i]), x1 = std::max(x1, s.x[i]);
      y1 = std::max(y1, s.y[i]);
    }
  if (x0 > x1) x0 = 0, x1 = 1;
  if (x1 == x0) x1 = x0 + 1;
  const bool logx = p.log_x && x0 > 0;
  const double ystep = nice_step(y1 > 0 ? y1 : 1, 6);
  const double ytop = std::ceil((y1 > 0 ? y1 : 1) * 1.02 / ystep) * ystep;
  const double pw = kW - kL - kR, ph = kH - kT - kB;
  auto tx = [&](double x) {
    const double u = logx ? (std::log(x) - std::log(x0)) / (std::log(x1) - std::log(x0))
                          : (x - x0) / (x1 - x0);
    return kL + u * pw;
  };
  auto ty = [&](double y) { return kT + ph - y / ytop * ph; };

  std::string s;
  s += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + f2(kW) + "\" height=\"" + f2(kH) +
       "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  s += "<text x=\"" + f2(kL + pw / 2) + "\" y=\"28\" text-anchor=\"middle\" font-size=\"16\">" +
       esc(p.title) + "</text>\n";
  // grid and y ticks
  for (double y = 0; y <= ytop + ystep / 2; y += ystep) {
    s += "<line x1=\"" + f2(kL) + "\" y1=\"" + f2(ty(y)) + "\" x2=\"" + f2(kL + pw) + "\" y2=\"" +
         f2(ty(y)) + "\" stroke=\"#ddd\"/>\n";
    s += "<text x=\"" + f2(kL - 6) + "\" y=\"" + f2(ty(y) + 4) + "\" text-anchor=\"end\">" +
         label(y) + "</text>\n";
  }
  // x ticks
  std::vector<double> xt;
  if (logx) {
    for (double v = std::pow(2.0, std::floor(std::log2(x0))); v <= x1 * 1.0001; v *= 4)
      if (v >= x0 * 0.9999) xt.push_back(v);
  } else {
    const double st = nice_step(x1 - x0, 8);
    for (double v = std::ceil(x0 / st) * st; v <= x1 + st * 1e-9; v += st) xt.push_back(v);
  }
  for (double v : xt) {
    s += "<line x1=\"" + f2(tx(v)) + "\" y1=\"" + f2(kT) + "\" x2=\"" + f2(tx(v)) + "\" y2=\"" +
         f2(kT + ph) + "\" stroke=\"#eee\"/>\n";
    s += "<text x=\"" + f2(tx(v)) + "\" y=\"" + f2(kT + ph + 18) + "\" text-anchor=\"middle\">" +
         label(v) + "</text>\n";
  }
  // axes and labels
  s += "<line x1=\"" + f2(kL) + "\" y1=\"" + f2(kT + ph) + "\" x2=\"" + f2(kL + pw) + "\" y2=\"" +
       f2(kT + ph) + "\" stroke=\"black\"/>\n";
  s += "<line x1=\"" + f2(kL) + "\" y1=\"" + f2(kT) + "\" x2=\"" + f2(kL) + "\" y2=\"" +
       f2(kT + ph) + "\" stroke=\"black\"/>\n";
  s += "<text x=\"" + f2(kL + pw / 2) + "\" y=\"" + f2(kH - 18) + "\" text-anchor=\"middle\">" +
       esc(p.xlabel) + (logx ? " (log scale)" : "") + "</text>\n";
  s += "<text transform=\"translate(20," + f2(kT + ph / 2) +
       ") rotate(-90)\" text-anchor=\"middle\">" + esc(p.ylabel) + "</text>\n";
  // series
  for (size_t k = 0; k < p.series.size(); ++k) {
    const Series &se = p.series[k];
    const char *c = kColors[k % std::size(kColors)];
    std::string pts;
    for (size_t i = 0; i < se.x.size(); ++i)
      pts += (i ? " " : "") + f2(tx(se.x[i])) + "," + f2(ty(se.y[i]));
    s += "<polyline fill=\"none\" stroke=\"" + std::string(c) + "\" stroke-width=\"2\" points=\"" +
         pts + "\"/>\n";
    for (size_t i = 0; i < se.x.size(); ++i)
      s += "<circle cx=\"" + f2(tx(se.x[i])) + "\" cy=\"" + f2(ty(se.y[i])) + "\" r=\"2.5\" fill=\"" +
           c + "\"/>\n";
    const double ly = kT + 10 + 20 * static_cast<double>(k);
    s += "<line x1=\"" + f2(kL + pw + 15) + "\" y1=\"" + f2(ly) + "\" x2=\"" + f2(kL + pw + 40) +
         "\" y2=\"" + f2(ly) + "\" stroke=\"" + c + "\" stroke-width=\"2\"/>\n";
    s += "<text x=\"" + f2(kL + pw + 46) + "\" y=\"" + f2(ly + 4) + "\">" + esc(se.name) + "</text>\n";
  }
  s += "</svg>\n";
  return s;
}

}  // namespace eca::hwmodel
