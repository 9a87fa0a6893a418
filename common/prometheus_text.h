// Prometheus text exposition format (version 0.0.4), shared by the coordinator's and the agents' /metrics.
//
//   TextWriter  appends `# HELP` / `# TYPE` lines and samples; label values and HELP texts are escaped
//               (backslash, double quote, newline), values written so that they parse back to the same double
//               (shortest round-trip form; NaN, +Inf, -Inf spelled as Prometheus reads them).
//   Histogram   cumulative buckets with fixed upper bounds (strictly increasing, finite): Write emits
//               NAME_bucket{...,le="B"} for every bound and le="+Inf", then NAME_sum and NAME_count.
//
// Names are the caller's: units in names (`_seconds`, `_bytes`), `_total` for counters (docs/operations.md).
// A family's samples must be written right after its Family() line (the format requires them grouped).
//
// Thread-safety: value types; no internal locking.
//
// Example:
//   prom::TextWriter out;
//   out.Family("anneal_queue_jobs", "gauge", "Pending jobs per team.");
//   out.Sample("anneal_queue_jobs", {{"team", "nlp"}}, 3);
//   prom::Histogram wait({1, 10, 60});
//   wait.Observe(4.2);
//   out.Family("anneal_job_wait_seconds", "histogram", "Submit to first start.");
//   wait.Write(out, "anneal_job_wait_seconds", {{"team", "nlp"}});
//   std::string body = out.Take();
#pragma once

#include <fmt/format.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace anneal::prom {

using Labels = std::vector<std::pair<std::string, std::string>>;

// A label value with `\`, `"` and newlines escaped as the text format requires.
inline std::string EscapeLabelValue(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

// A sample value that parses back to the same double.
inline std::string FormatValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", value);
}

class TextWriter {
 public:
  // `type`: counter, gauge, histogram, untyped.
  void Family(std::string_view name, std::string_view type, std::string_view help) {
    std::string escaped;
    for (char c : help) {
      if (c == '\\') {
        escaped += "\\\\";
      } else if (c == '\n') {
        escaped += "\\n";
      } else {
        escaped += c;
      }
    }
    text_ += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, escaped, name, type);
  }
  void Sample(std::string_view name, const Labels& labels, double value) {
    text_ += name;
    if (!labels.empty()) {
      text_ += '{';
      for (size_t i = 0; i < labels.size(); ++i) {
        if (i > 0) text_ += ',';
        text_ += fmt::format("{}=\"{}\"", labels[i].first, EscapeLabelValue(labels[i].second));
      }
      text_ += '}';
    }
    text_ += ' ';
    text_ += FormatValue(value);
    text_ += '\n';
  }
  const std::string& text() const { return text_; }
  std::string Take() { return std::move(text_); }

 private:
  std::string text_;
};

class Histogram {
 public:
  // `upper_bounds`: strictly increasing and finite (+Inf is implicit); std::invalid_argument otherwise (a
  // programming error: the bounds are constants).
  explicit Histogram(std::vector<double> upper_bounds)
      : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1, 0) {
    for (size_t i = 0; i < bounds_.size(); ++i) {
      if (!std::isfinite(bounds_[i]) || (i > 0 && bounds_[i] <= bounds_[i - 1])) {
        throw std::invalid_argument("histogram bounds must be finite and strictly increasing");
      }
    }
  }
  void Observe(double value) {
    size_t i = 0;
    while (i < bounds_.size() && value > bounds_[i]) ++i;
    ++counts_[i];
    sum_ += value;
    ++count_;
  }
  uint64_t count() const { return count_; }
  double sum() const { return sum_; }
  const std::vector<double>& upper_bounds() const { return bounds_; }

  // NAME_bucket (cumulative, le last), NAME_sum, NAME_count. The caller wrote the family's Family() line.
  void Write(TextWriter& out, std::string_view name, const Labels& labels) const {
    const std::string bucket = std::string(name) + "_bucket";
    uint64_t cumulative = 0;
    for (size_t i = 0; i <= bounds_.size(); ++i) {
      cumulative += counts_[i];
      Labels with_le = labels;
      with_le.emplace_back("le", i < bounds_.size() ? FormatValue(bounds_[i]) : "+Inf");
      out.Sample(bucket, with_le, static_cast<double>(cumulative));
    }
    out.Sample(std::string(name) + "_sum", labels, sum_);
    out.Sample(std::string(name) + "_count", labels, static_cast<double>(count_));
  }

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative; the last is above every bound
  double sum_ = 0;
  uint64_t count_ = 0;
};

}  // namespace anneal::prom
