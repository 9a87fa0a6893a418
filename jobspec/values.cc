#include "jobspec/values.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <iterator>
#include <utility>

namespace anneal::jobspec {
namespace {

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

bool DecodeInt64(const YAML::Node& node, int64_t* out) {
  if (!node.IsScalar()) return false;
  std::string_view s = Trim(node.Scalar());
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  if (s.empty()) return false;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && ptr == s.data() + s.size();
}

bool DecodeNumber(const YAML::Node& node, double* out) {
  if (!node.IsScalar()) return false;
  std::string_view s = Trim(node.Scalar());
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  if (s.empty()) return false;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), *out, std::chars_format::general);
  return ec == std::errc() && ptr == s.data() + s.size() && std::isfinite(*out);
}

bool DecodeBool(const YAML::Node& node, bool* out) {
  if (!node.IsScalar()) return false;
  return YAML::convert<bool>::decode(node, *out);
}

bool DecodeString(const YAML::Node& node, std::string* out) {
  if (!node.IsScalar()) return false;
  *out = node.Scalar();
  return true;
}

bool DecodeList(const YAML::Node& node, std::vector<std::string>* out) {
  out->clear();
  if (node.IsSequence()) {
    for (const auto& item : node) {
      if (!item.IsScalar()) return false;
      std::string_view s = Trim(item.Scalar());
      if (s.empty()) return false;
      out->emplace_back(s);
    }
    return true;
  }
  if (!node.IsScalar()) return false;
  std::string_view rest = node.Scalar();
  if (Trim(rest).empty()) return true;  // "" is the empty list
  while (true) {
    size_t comma = rest.find(',');
    std::string_view item = Trim(rest.substr(0, comma));
    if (item.empty()) return false;
    out->emplace_back(item);
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  return true;
}

bool DecodeDuration(const YAML::Node& node, int64_t* seconds) {
  if (!node.IsScalar()) return false;
  int64_t plain = 0;
  if (DecodeInt64(node, &plain)) {
    *seconds = plain;
    return plain > 0 && plain <= kMaxDurationSeconds;
  }
  static constexpr std::pair<char, int64_t> kUnits[] = {{'d', 86400}, {'h', 3600}, {'m', 60}, {'s', 1}};
  std::string_view s = Trim(node.Scalar());
  if (s.empty()) return false;
  int64_t total = 0;
  size_t next_unit = 0;  // units must come largest first, each once
  while (!s.empty()) {
    int64_t count = 0;
    auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), count);
    if (ec != std::errc() || ptr == s.data() || ptr == s.data() + s.size() || count < 0) return false;
    const char unit = *ptr;
    size_t u = next_unit;
    while (u < std::size(kUnits) && kUnits[u].first != unit) ++u;
    if (u == std::size(kUnits) || count > kMaxDurationSeconds / kUnits[u].second) return false;
    total += count * kUnits[u].second;
    if (total > kMaxDurationSeconds) return false;
    next_unit = u + 1;
    s.remove_prefix(static_cast<size_t>(ptr - s.data()) + 1);
  }
  *seconds = total;
  return total > 0;
}

std::string FormatDuration(int64_t seconds) {
  if (seconds <= 0) return "0s";
  std::string out;
  for (const auto& [unit, size] : {std::pair{'d', 86400LL}, {'h', 3600LL}, {'m', 60LL}, {'s', 1LL}}) {
    if (seconds >= size) {
      out += fmt::format("{}{}", seconds / size, unit);
      seconds %= size;
    }
  }
  return out;
}

std::string Describe(const YAML::Node& node) {
  if (!node.IsDefined() || node.IsNull()) return "nothing";
  if (node.IsMap()) return "a mapping";
  if (node.IsSequence()) return "a list";
  return "'" + node.Scalar() + "'";
}

std::string FormatNumber(double value) {
  return fmt::format("{}", value);
}

size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

}  // namespace anneal::jobspec
