// Scalar decoding for the job spec: YAML nodes to integers, numbers, booleans, strings and lists, strictly.
//
// yaml-cpp keeps every scalar as text; these functions decide what a value means and refuse anything else
// ("8.5" is not an integer, "1e-4" is a number, "yes" is a bool, "a, b" is a two-item list). Nothing here knows
// about keys or locations: callers turn a false return into a message naming the key.
//
// Thread-safety: pure functions.
//
// Example:
//   int64_t n;
//   if (!DecodeInt64(node, &n)) return error("expected an integer, got " + Describe(node));
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace anneal::jobspec {

bool DecodeInt64(const YAML::Node& node, int64_t* out);       // decimal integer scalar, optional sign
bool DecodeNumber(const YAML::Node& node, double* out);       // finite decimal number scalar (1, 1.5, 1.0e-4)
bool DecodeBool(const YAML::Node& node, bool* out);           // true/false (and YAML 1.1's yes/no/on/off)
bool DecodeString(const YAML::Node& node, std::string* out);  // any scalar, as written
// A sequence of scalars, or one scalar holding a comma-separated list (LLaMA-Factory's "a,b"); items are
// trimmed and empty items are refused.
bool DecodeList(const YAML::Node& node, std::vector<std::string>* out);

// A duration: whole seconds as a number ("5400"), or a string of <n>d, <n>h, <n>m, <n>s parts, largest first,
// each at most once ("90m", "2h", "1h30m", "1d12h", "45s"). Refuses 0, negatives, fractions and anything past
// kMaxDurationSeconds (365 days).
inline constexpr int64_t kMaxDurationSeconds = 365LL * 24 * 3600;
bool DecodeDuration(const YAML::Node& node, int64_t* seconds);
// The canonical spelling DecodeDuration reads back: "1h30m", "2d", "45s" ("0s" for 0).
std::string FormatDuration(int64_t seconds);

// How a value reads in a message: "'eight'" for a scalar, "a mapping", "a list", "nothing".
std::string Describe(const YAML::Node& node);

// Shortest text that parses back to the same double ("5e-05", "0.1", "3").
std::string FormatNumber(double value);

// Levenshtein distance, for "did you mean" suggestions.
size_t EditDistance(std::string_view a, std::string_view b);

}  // namespace anneal::jobspec
