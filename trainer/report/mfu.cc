#include "trainer/report/mfu.h"

#include <algorithm>
#include <cctype>
#include <string>

namespace anneal::report {
namespace {

// Ordered: the first entry whose word appears in the name wins ("H100 PCIe" before "H100").
struct PeakRule {
  const char* first;
  const char* second;  // "" when one word decides
  double flops;
};
constexpr PeakRule kPeaks[] = {
    {"H100", "PCIe", 756e12}, {"H100", "NVL", 835e12}, {"H100", "", 989.4e12}, {"GH200", "", 989.4e12},
    {"H200", "", 989.4e12},   {"H800", "", 989.4e12},  {"B200", "", 2250e12},  {"A100", "", 312e12},
    {"A800", "", 312e12},     {"L40S", "", 362e12},    {"L40", "", 181e12},    {"L4", "", 121e12},
    {"A10", "", 125e12},
};

// True when `word` is in `name` with no letter or digit right before or after it ("A100-SXM4" holds A100,
// "L40S" does not hold L4).
bool HasWord(std::string_view name, std::string_view word) {
  auto alnum = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; };
  for (size_t at = name.find(word); at != std::string_view::npos; at = name.find(word, at + 1)) {
    const size_t end = at + word.size();
    if ((at == 0 || !alnum(name[at - 1])) && (end == name.size() || !alnum(name[end]))) return true;
  }
  return false;
}

}  // namespace

int64_t MatmulParameterCount(const DecoderShape& s) {
  const int64_t q = s.heads * s.head_dim, kv = s.kv_heads * s.head_dim;
  const int64_t attention =
      s.hidden * q + 2 * s.hidden * kv + q * s.hidden + (s.qkv_bias ? q + 2 * kv : 0) + (s.o_bias ? s.hidden : 0);
  const int64_t mlp = 3 * s.hidden * s.intermediate + (s.mlp_bias ? 2 * s.intermediate + s.hidden : 0);
  const int64_t norms = 2 * s.hidden;
  return s.layers * (attention + mlp + norms) + s.hidden /* final norm */ + s.vocab * s.hidden /* LM head */;
}

int64_t ParameterCount(const DecoderShape& s) {
  return MatmulParameterCount(s) + (s.tied_embeddings ? 0 : s.vocab * s.hidden);
}

double TrainingFlopsPerToken(const DecoderShape& s, int64_t trained_params, int64_t seq_len) {
  const double n = static_cast<double>(MatmulParameterCount(s));
  const double trained = std::min(n, static_cast<double>(std::max<int64_t>(0, trained_params)));
  const double attention = 12.0 * static_cast<double>(s.layers) * static_cast<double>(s.heads) *
                           static_cast<double>(s.head_dim) * static_cast<double>(seq_len);
  return 4 * n + 2 * trained + attention;
}

std::optional<double> PeakBf16Flops(std::string_view device_name) {
  for (const PeakRule& rule : kPeaks) {
    if (HasWord(device_name, rule.first) && (*rule.second == '\0' || HasWord(device_name, rule.second))) {
      return rule.flops;
    }
  }
  return std::nullopt;
}

std::optional<double> Mfu(double flops_per_token, double tokens_per_second, double peak_flops_per_gpu, int gpus) {
  if (!(flops_per_token > 0) || !(tokens_per_second > 0) || !(peak_flops_per_gpu > 0) || gpus <= 0) {
    return std::nullopt;
  }
  return flops_per_token * tokens_per_second / (peak_flops_per_gpu * gpus);
}

}  // namespace anneal::report
