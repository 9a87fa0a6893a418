#include "trainer/model/generate.h"

#include <algorithm>

#include <ATen/ATen.h>

namespace anneal::model {

namespace {

// logits [V] fp32 -> next token id.
int64_t PickToken(torch::Tensor logits, const GenerateOptions& o, at::Generator& gen) {
  if (o.temperature <= 0.0) return logits.argmax().item<int64_t>();
  logits = logits / o.temperature;
  if (o.top_k > 0 && o.top_k < logits.size(0)) {
    auto kth = std::get<0>(logits.topk(o.top_k)).min();
    logits = logits.masked_fill(logits < kth, -INFINITY);
  }
  if (o.top_p < 1.0) {
    // Keep the smallest set of tokens whose probability mass reaches top_p (HF TopPLogitsWarper).
    auto [sorted, idx] = logits.sort(/*dim=*/-1, /*descending=*/false);
    torch::Tensor cum = sorted.softmax(-1).cumsum(-1);
    torch::Tensor remove_sorted = cum <= (1.0 - o.top_p);
    remove_sorted.index_put_({-1}, false);  // always keep the most likely token
    torch::Tensor remove = remove_sorted.scatter(0, idx, remove_sorted);
    logits = logits.masked_fill(remove, -INFINITY);
  }
  torch::Tensor probs = logits.softmax(-1);
  return at::multinomial(probs, 1, /*replacement=*/false, gen).item<int64_t>();
}

}  // namespace

StatusOr<std::vector<int64_t>> Generate(CausalLM& lm, const std::vector<int64_t>& prompt,
                                        const GenerateOptions& o) {
  if (prompt.empty()) return InvalidArgumentError("generate: the prompt has no tokens");
  const int64_t vocab = lm->config().vocab_size;
  for (int64_t id : prompt) {
    if (id < 0 || id >= vocab) {
      return InvalidArgumentError("generate: prompt token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                                  std::to_string(vocab) + ")");
    }
  }
  torch::NoGradGuard no_grad;
  lm->eval();
  const torch::Device device = lm->head_weight().device();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  KvCache cache;
  cache.capacity = static_cast<int64_t>(prompt.size()) + o.max_new_tokens;
  torch::Tensor ids = torch::tensor(prompt, torch::kInt64).unsqueeze(0).to(device);  // [1, T]
  std::vector<int64_t> out;
  for (int64_t step = 0; step < o.max_new_tokens; ++step) {
    torch::Tensor hidden = lm->Forward({.input_ids = ids, .cache = &cache});   // [1, T, C]
    torch::Tensor last = lm->Logits(hidden.select(1, hidden.size(1) - 1))      // [1, V]
                             .squeeze(0).to(torch::kFloat32).to(torch::kCPU);
    if (step < o.min_new_tokens) {
      // HF MinNewTokensLengthLogitsProcessor: the stop tokens cannot be chosen yet.
      for (int64_t id : o.stop_token_ids) last[id] = -INFINITY;
    }
    const int64_t next = PickToken(last, o, gen);
    out.push_back(next);
    if (std::find(o.stop_token_ids.begin(), o.stop_token_ids.end(), next) != o.stop_token_ids.end()) break;
    ids = torch::tensor({next}, torch::kInt64).view({1, 1}).to(device);
  }
  return out;
}

}  // namespace anneal::model
