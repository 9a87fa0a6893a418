#include "trainer/report/loss_plot.h"

#include <cairo.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/fsutil.h"

namespace anneal::report {
namespace {

constexpr int kWidth = 640, kHeight = 480;
constexpr double kLeft = 80, kRight = 24, kTop = 44, kBottom = 58;  // the plot area's margins
constexpr double kBlue[3] = {0x1f / 255.0, 0x77 / 255.0, 0xb4 / 255.0};

struct Range {
  double lo, hi;
  double At(double v, double from, double to) const { return from + (v - lo) / (hi - lo) * (to - from); }
};

// matplotlib's default 5% margins; a flat range gets +-0.5 (or +-5% of the value) so it has a height.
Range Padded(double lo, double hi) {
  if (hi - lo < 1e-12) {
    const double pad = lo == 0 ? 0.5 : std::fabs(lo) * 0.05;
    return {lo - pad, hi + pad};
  }
  const double pad = (hi - lo) * 0.05;
  return {lo - pad, hi + pad};
}

// Round tick positions (1, 2, 2.5 or 5 times a power of ten) covering `r`, about 4 to 8 of them.
std::vector<double> Ticks(const Range& r) {
  const double raw = (r.hi - r.lo) / 6;
  const double magnitude = std::pow(10, std::floor(std::log10(raw)));
  double step = magnitude;
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0}) {
    if (m * magnitude >= raw) {
      step = m * magnitude;
      break;
    }
  }
  std::vector<double> ticks;
  // By index, at most 50: `t += step` stops moving when step is below half an ulp of t (a range of one ulp).
  const double first = std::ceil(r.lo / step) * step;
  for (int i = 0; i < 50; ++i) {
    const double t = first + i * step;
    if (t > r.hi + step * 1e-9) break;
    ticks.push_back(std::fabs(t) < step * 1e-9 ? 0 : t);
  }
  return ticks;
}

std::string TickLabel(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

void ShowText(cairo_t* cr, const std::string& text, double x, double y, double align_x, double align_y) {
  cairo_text_extents_t ext;
  cairo_text_extents(cr, text.c_str(), &ext);
  cairo_move_to(cr, x - ext.width * align_x - ext.x_bearing, y - ext.height * align_y - ext.y_bearing);
  cairo_show_text(cr, text.c_str());
}

void DrawLine(cairo_t* cr, const Curve& c, const std::vector<double>& values, const Range& xs, const Range& ys,
              double alpha) {
  cairo_set_source_rgba(cr, kBlue[0], kBlue[1], kBlue[2], alpha);
  cairo_set_line_width(cr, 1.5);
  for (size_t i = 0; i < values.size(); ++i) {
    const double x = xs.At(static_cast<double>(c.steps[i]), kLeft, kWidth - kRight);
    const double y = ys.At(values[i], kHeight - kBottom, kTop);
    if (i == 0) cairo_move_to(cr, x, y);
    cairo_line_to(cr, x, y);
  }
  if (values.size() == 1)
    cairo_arc(cr, xs.At(static_cast<double>(c.steps[0]), kLeft, kWidth - kRight),
              ys.At(values[0], kHeight - kBottom, kTop), 2, 0, 2 * M_PI);
  cairo_stroke(cr);
}

void DrawAxes(cairo_t* cr, const Range& xs, const Range& ys, const std::string& title, const std::string& ylabel) {
  cairo_set_source_rgb(cr, 0, 0, 0);
  cairo_set_line_width(cr, 1);
  cairo_rectangle(cr, kLeft, kTop, kWidth - kLeft - kRight, kHeight - kTop - kBottom);
  cairo_stroke(cr);
  cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
  cairo_set_font_size(cr, 11);
  for (double t : Ticks(xs)) {
    const double x = xs.At(t, kLeft, kWidth - kRight);
    cairo_move_to(cr, x, kHeight - kBottom);
    cairo_line_to(cr, x, kHeight - kBottom + 4);
    cairo_stroke(cr);
    ShowText(cr, TickLabel(t), x, kHeight - kBottom + 8, 0.5, 0);
  }
  for (double t : Ticks(ys)) {
    const double y = ys.At(t, kHeight - kBottom, kTop);
    cairo_move_to(cr, kLeft - 4, y);
    cairo_line_to(cr, kLeft, y);
    cairo_stroke(cr);
    ShowText(cr, TickLabel(t), kLeft - 7, y, 1, 0.5);
  }
  cairo_set_font_size(cr, 13);
  ShowText(cr, "step", (kLeft + kWidth - kRight) / 2, kHeight - 22, 0.5, 0);
  cairo_save(cr);
  cairo_translate(cr, 18, (kTop + kHeight - kBottom) / 2);
  cairo_rotate(cr, -M_PI / 2);
  ShowText(cr, ylabel, 0, 0, 0.5, 0.5);
  cairo_restore(cr);
  cairo_set_font_size(cr, 14);
  ShowText(cr, title, kWidth / 2.0, 14, 0.5, 0);
}

void DrawLegend(cairo_t* cr) {
  const double x = kWidth - kRight - 110, y = kTop + 10;
  cairo_set_source_rgb(cr, 1, 1, 1);
  cairo_rectangle(cr, x, y, 100, 44);
  cairo_fill_preserve(cr);
  cairo_set_source_rgb(cr, 0.8, 0.8, 0.8);
  cairo_set_line_width(cr, 1);
  cairo_stroke(cr);
  cairo_set_font_size(cr, 11);
  const char* names[] = {"original", "smoothed"};
  const double alphas[] = {0.4, 1.0};
  for (int i = 0; i < 2; ++i) {
    const double row = y + 14 + 18 * i;
    cairo_set_source_rgba(cr, kBlue[0], kBlue[1], kBlue[2], alphas[i]);
    cairo_set_line_width(cr, 1.5);
    cairo_move_to(cr, x + 8, row);
    cairo_line_to(cr, x + 34, row);
    cairo_stroke(cr);
    cairo_set_source_rgb(cr, 0, 0, 0);
    ShowText(cr, names[i], x + 42, row, 0, 0.5);
  }
}

}  // namespace

bool PlotsAvailable() {
  return true;
}

std::vector<double> Smooth(const std::vector<double>& values) {
  std::vector<double> smoothed;
  if (values.empty()) return smoothed;
  const double weight = 1.8 * (1 / (1 + std::exp(-0.05 * static_cast<double>(values.size()))) - 0.5);
  double last = values.front();
  for (double v : values) {
    last = last * weight + (1 - weight) * v;
    smoothed.push_back(last);
  }
  return smoothed;
}

Status PlotCurve(const std::string& png_path, const std::string& title, const std::string& ylabel, const Curve& curve) {
  if (curve.values.empty() || curve.values.size() != curve.steps.size()) {
    return InvalidArgumentError("plot " + png_path + ": the curve needs as many steps as values, at least one");
  }
  for (double v : curve.values) {
    if (!std::isfinite(v)) return InvalidArgumentError("plot " + png_path + ": a value is not finite");
  }
  const std::vector<double> smoothed = Smooth(curve.values);
  const auto [min_step, max_step] = std::minmax_element(curve.steps.begin(), curve.steps.end());
  const auto [min_v, max_v] = std::minmax_element(curve.values.begin(), curve.values.end());
  const Range xs = Padded(static_cast<double>(*min_step), static_cast<double>(*max_step));
  const Range ys = Padded(*min_v, *max_v);

  cairo_surface_t* surface = cairo_image_surface_create(CAIRO_FORMAT_RGB24, kWidth, kHeight);
  cairo_t* cr = cairo_create(surface);
  cairo_set_source_rgb(cr, 1, 1, 1);
  cairo_paint(cr);
  cairo_save(cr);
  cairo_rectangle(cr, kLeft, kTop, kWidth - kLeft - kRight, kHeight - kTop - kBottom);
  cairo_clip(cr);
  DrawLine(cr, curve, curve.values, xs, ys, 0.4);
  DrawLine(cr, curve, smoothed, xs, ys, 1.0);
  cairo_restore(cr);
  DrawAxes(cr, xs, ys, title, ylabel);
  DrawLegend(cr);
  cairo_destroy(cr);
  const cairo_status_t written = cairo_surface_write_to_png(surface, png_path.c_str());
  cairo_surface_destroy(surface);
  if (written != CAIRO_STATUS_SUCCESS) {
    return InternalError("plot: cannot write " + png_path + ": " + cairo_status_to_string(written));
  }
  return Status::Ok();
}

StatusOr<Curve> ReadTrainerLogCurve(const std::string& output_dir, const std::string& key) {
  const std::string path = output_dir + "/trainer_log.jsonl";
  auto text = ReadFile(path);
  if (!text.ok()) return NotFoundError("plot_loss: cannot read " + path + ": " + text.status().message());
  Curve curve;
  std::istringstream in(*text);
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (line.empty()) continue;
    const auto entry = nlohmann::json::parse(line, nullptr, false);
    if (entry.is_discarded() || !entry.is_object()) {
      ++curve.skipped_lines;
      continue;
    }
    if (!entry.contains(key) || !entry[key].is_number()) continue;
    const auto step = entry.find("current_steps");
    const double value = entry[key].get<double>();
    if (step == entry.end() || !step->is_number_integer() || !std::isfinite(value)) {
      ++curve.skipped_lines;
      continue;
    }
    curve.steps.push_back(step->get<int64_t>());
    curve.values.push_back(value);
  }
  return curve;
}

StatusOr<std::vector<std::string>> PlotTrainerLog(const std::string& output_dir) {
  std::vector<std::string> written;
  for (const std::string key : {"loss", "eval_loss"}) {
    ASSIGN_OR_RETURN(Curve curve, ReadTrainerLogCurve(output_dir, key));
    if (curve.values.empty()) continue;
    const std::string path = output_dir + "/training_" + key + ".png";
    RETURN_IF_ERROR(PlotCurve(path, "training " + key + " of " + output_dir, key, curve));
    written.push_back(path);
  }
  return written;
}

}  // namespace anneal::report
