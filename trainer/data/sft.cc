#include "trainer/data/sft.h"

#include <algorithm>
#include <map>

namespace anneal::data {

std::pair<int, int> InferSeqlen(int source_len, int target_len, int cutoff_len) {
  int max_target_len;
  if (target_len * 2 < cutoff_len) {  // truncate source
    max_target_len = cutoff_len;
  } else if (source_len * 2 < cutoff_len) {  // truncate target
    max_target_len = cutoff_len - source_len;
  } else {  // truncate both: int() of the float product, as Python does
    max_target_len = static_cast<int>(static_cast<double>(cutoff_len) *
                                      (static_cast<double>(target_len) / (source_len + target_len)));
  }
  int new_target_len = std::min(max_target_len, target_len);
  int max_source_len = std::max(cutoff_len - new_target_len, 0);
  int new_source_len = std::min(max_source_len, source_len);
  return {new_source_len, new_target_len};
}

StatusOr<SftExample> EncodeSupervised(const ChatTemplate& t, const Tokenizer& tok, const std::vector<Message>& messages,
                                      std::string_view system, const SftOptions& o) {
  if (o.train_on_prompt && t.efficient_eos)
    return InvalidArgumentError("template " + t.name + " does not support train_on_prompt (efficient_eos)");
  bool discard_cot = o.mask_history;  // LLaMA-Factory: mask_history and not preserve_thinking (default false)
  ASSIGN_OR_RETURN(auto pairs, EncodeMultiturn(t, tok, messages, system, discard_cot));
  int32_t eos = tok.eos_id().value_or(kIgnoreIndex);
  SftExample ex;
  int total = t.efficient_eos ? 1 : 0;
  if (o.mask_history) std::reverse(pairs.begin(), pairs.end());  // high priority for the last turns
  for (size_t turn = 0; turn < pairs.size(); ++turn) {
    if (total >= o.cutoff_len) break;
    auto& [source, target] = pairs[turn];
    auto [slen, tlen] = InferSeqlen(static_cast<int>(source.size()), static_cast<int>(target.size()), o.cutoff_len - total);
    source.resize(slen);
    target.resize(tlen);
    total += slen + tlen;
    std::vector<int32_t> source_label;
    if (o.train_on_prompt) {
      source_label = source;
    } else if (t.efficient_eos && turn != 0) {
      source_label.assign(slen, kIgnoreIndex);
      if (slen > 0) source_label[0] = eos;
    } else {
      source_label.assign(slen, kIgnoreIndex);
    }
    std::vector<int32_t> target_label = (o.mask_history && turn != 0) ? std::vector<int32_t>(tlen, kIgnoreIndex) : target;
    std::vector<int32_t> ids = source, labels = source_label;
    ids.insert(ids.end(), target.begin(), target.end());
    labels.insert(labels.end(), target_label.begin(), target_label.end());
    if (o.mask_history) {  // reversed: prepend
      ids.insert(ids.end(), ex.input_ids.begin(), ex.input_ids.end());
      labels.insert(labels.end(), ex.labels.begin(), ex.labels.end());
      ex.input_ids = std::move(ids);
      ex.labels = std::move(labels);
    } else {
      ex.input_ids.insert(ex.input_ids.end(), ids.begin(), ids.end());
      ex.labels.insert(ex.labels.end(), labels.begin(), labels.end());
    }
  }
  if (t.efficient_eos) {
    ex.input_ids.push_back(eos);
    ex.labels.push_back(eos);
  }
  return ex;
}

SftExample FromTokens(std::vector<int32_t> ids, std::vector<int32_t> labels) {
  SftExample ex;
  ex.labels = labels.empty() ? ids : std::move(labels);
  ex.input_ids = std::move(ids);
  return ex;
}

std::vector<std::vector<int64_t>> GreedyKnapsackBins(std::span<const int64_t> lengths_in, int cutoff_len) {
  // greedy_knapsack: sorted lengths, each bin takes the largest that still fits (bisect); within one length,
  // LLaMA-Factory pops the last-added index first.
  std::vector<int64_t> lengths;
  std::map<int64_t, std::vector<int64_t>> by_length;
  for (size_t i = 0; i < lengths_in.size(); ++i) {
    if (lengths_in[i] > cutoff_len) continue;  // dropped: lengthy example
    lengths.push_back(lengths_in[i]);
    by_length[lengths_in[i]].push_back(static_cast<int64_t>(i));
  }
  std::sort(lengths.begin(), lengths.end());
  std::vector<std::vector<int64_t>> bins;
  while (!lengths.empty()) {
    std::vector<int64_t> bin;
    int64_t remaining = cutoff_len;
    while (true) {
      auto it = std::upper_bound(lengths.begin(), lengths.end(), remaining);  // bisect.bisect
      if (it == lengths.begin()) break;
      --it;
      int64_t len = *it;
      lengths.erase(it);
      remaining -= len;
      bin.push_back(by_length[len].back());
      by_length[len].pop_back();
    }
    bins.push_back(std::move(bin));
  }
  return bins;
}

std::vector<PackedSequence> PackExamples(std::span<const SftExample> examples, int cutoff_len, int32_t pad_id) {
  std::vector<int64_t> lengths;
  for (const auto& ex : examples) lengths.push_back(static_cast<int64_t>(ex.input_ids.size()));
  std::vector<PackedSequence> out;
  for (const auto& bin : GreedyKnapsackBins(lengths, cutoff_len)) {
    PackedSequence p;
    int32_t segment = 0;
    for (int64_t index : bin) {
      const SftExample& ex = examples[index];
      ++segment;
      p.input_ids.insert(p.input_ids.end(), ex.input_ids.begin(), ex.input_ids.end());
      p.labels.insert(p.labels.end(), ex.labels.begin(), ex.labels.end());
      for (size_t k = 0; k < ex.input_ids.size(); ++k) {
        p.position_ids.push_back(static_cast<int32_t>(k));
        p.segment_ids.push_back(segment);
      }
      p.example_indices.push_back(index);
    }
    int pad = cutoff_len + 1 - static_cast<int>(p.input_ids.size());  // LLaMA-Factory pads to cutoff_len + 1
    for (int k = 0; k < pad; ++k) {
      p.input_ids.push_back(pad_id);
      p.labels.push_back(kIgnoreIndex);
      p.position_ids.push_back(0);
      p.segment_ids.push_back(0);
    }
    out.push_back(std::move(p));
  }
  return out;
}

PackedSequence ConcatPaddingFree(std::span<const SftExample* const> examples) {
  PackedSequence p;
  int32_t segment = 0;
  for (const SftExample* ex : examples) {
    ++segment;
    p.input_ids.insert(p.input_ids.end(), ex->input_ids.begin(), ex->input_ids.end());
    p.labels.insert(p.labels.end(), ex->labels.begin(), ex->labels.end());
    for (size_t k = 0; k < ex->input_ids.size(); ++k) {
      p.position_ids.push_back(static_cast<int32_t>(k));
      p.segment_ids.push_back(segment);
    }
    p.example_indices.push_back(segment - 1);
  }
  return p;
}

}  // namespace anneal::data
