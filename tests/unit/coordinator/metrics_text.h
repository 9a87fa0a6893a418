// A strict reader of the Prometheus text format for tests: every sample parsed into name, labels and value,
// every family's HELP and TYPE checked to come before its samples, histograms checked for cumulative buckets.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

namespace anneal::testing {

struct PromSample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

// The label values unescaped (\\ \" \n), as Prometheus reads them.
inline std::string UnescapeLabel(const std::string& v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i] == '\\' && i + 1 < v.size()) {
      ++i;
      out += v[i] == 'n' ? '\n' : v[i];
    } else {
      out += v[i];
    }
  }
  return out;
}

// Parses `text`; a malformed line, a sample before its family's TYPE, or non-cumulative histogram buckets are
// test failures (ADD_FAILURE naming the line).
inline std::vector<PromSample> ParseExposition(const std::string& text) {
  static const std::regex kSample(R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$)");
  static const std::regex kLabel(R"re(([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?)re");
  std::vector<PromSample> out;
  std::map<std::string, std::string> types;
  std::istringstream lines(text);
  std::string line;
  std::string current_family;
  while (std::getline(lines, line)) {
    if (line.rfind("# HELP ", 0) == 0) continue;
    if (line.rfind("# TYPE ", 0) == 0) {
      std::istringstream f(line.substr(7));
      std::string name, type;
      f >> name >> type;
      if (types.count(name)) ADD_FAILURE() << "family " << name << " declared twice";
      types[name] = type;
      current_family = name;
      continue;
    }
    std::smatch m;
    if (!std::regex_match(line, m, kSample)) {
      ADD_FAILURE() << "malformed exposition line: '" << line << "'";
      continue;
    }
    PromSample s;
    s.name = m[1];
    const std::string value = m[4];
    s.value = value == "+Inf" ? INFINITY : value == "-Inf" ? -INFINITY : std::stod(value);
    std::string labels = m[3];
    for (std::sregex_iterator it(labels.begin(), labels.end(), kLabel), end; it != end; ++it) {
      s.labels[(*it)[1]] = UnescapeLabel((*it)[2]);
    }
    std::string family = s.name;
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      const std::string sfx = suffix;
      if (!types.count(family) && family.size() > sfx.size() && family.ends_with(sfx)) {
        family = family.substr(0, family.size() - sfx.size());
      }
    }
    if (family != current_family) ADD_FAILURE() << "sample " << s.name << " outside its family (TYPE missing?)";
    out.push_back(std::move(s));
  }
  // Histograms: per label set (without le), buckets cumulative in le order, +Inf == _count.
  std::map<std::string, std::vector<std::pair<double, double>>> buckets;
  std::map<std::string, double> counts;
  auto key_of = [](const PromSample& s, const std::string& family) {
    std::string key = family;
    for (const auto& [k, v] : s.labels) {
      if (k != "le") key += "," + k + "=" + v;
    }
    return key;
  };
  for (const auto& s : out) {
    if (s.name.ends_with("_bucket")) {
      const std::string family = s.name.substr(0, s.name.size() - 7);
      const std::string le = s.labels.count("le") ? s.labels.at("le") : "";
      if (le.empty()) ADD_FAILURE() << s.name << " without le";
      buckets[key_of(s, family)].push_back({le == "+Inf" ? INFINITY : std::stod(le), s.value});
    } else if (s.name.ends_with("_count") && types.count(s.name.substr(0, s.name.size() - 6)) &&
               types[s.name.substr(0, s.name.size() - 6)] == "histogram") {
      counts[key_of(s, s.name.substr(0, s.name.size() - 6))] = s.value;
    }
  }
  for (const auto& [key, list] : buckets) {
    for (size_t i = 1; i < list.size(); ++i) {
      if (!(list[i].first > list[i - 1].first)) ADD_FAILURE() << key << ": le not increasing";
      if (list[i].second < list[i - 1].second) ADD_FAILURE() << key << ": buckets not cumulative";
    }
    if (list.empty() || !std::isinf(list.back().first)) ADD_FAILURE() << key << ": no le=\"+Inf\" bucket last";
    if (!list.empty() && counts[key] != list.back().second) ADD_FAILURE() << key << ": +Inf bucket != _count";
  }
  return out;
}

// The value of the one sample named `name` whose labels include `labels`; NaN when there is none.
inline double SampleValue(const std::vector<PromSample>& samples, const std::string& name,
                          const std::map<std::string, std::string>& labels = {}) {
  for (const auto& s : samples) {
    if (s.name != name) continue;
    bool match = true;
    for (const auto& [k, v] : labels) {
      auto it = s.labels.find(k);
      match = match && it != s.labels.end() && it->second == v;
    }
    if (match) return s.value;
  }
  return NAN;
}

}  // namespace anneal::testing
