#include "trainer/data/pretrain.h"

#include <algorithm>

namespace anneal::data {
namespace {

SftExample WithLabels(std::vector<int32_t> ids, const PretrainOptions& o) {
  SftExample ex;
  ex.labels = ids;
  if (o.pad_id) {
    for (int32_t& label : ex.labels) {
      if (label == *o.pad_id) label = kIgnoreIndex;
    }
  }
  ex.input_ids = std::move(ids);
  return ex;
}

// One map batch: concatenated, cut into blocks of cutoff_len, the remainder dropped.
void GroupBatch(const std::vector<std::vector<int32_t>>& texts, int64_t lo, int64_t hi, const PretrainOptions& o,
                std::vector<SftExample>* out) {
  std::vector<int32_t> all;
  for (int64_t i = lo; i < hi; ++i) all.insert(all.end(), texts[i].begin(), texts[i].end());
  const auto block = static_cast<size_t>(o.cutoff_len);
  for (size_t start = 0; start + block <= all.size(); start += block) {
    std::vector<int32_t> ids(all.begin() + static_cast<std::ptrdiff_t>(start),
                             all.begin() + static_cast<std::ptrdiff_t>(start + block));
    out->push_back(WithLabels(std::move(ids), o));
  }
}

}  // namespace

std::pair<int64_t, int64_t> ContiguousShard(int64_t n, int shards, int index) {
  const int64_t div = n / shards, mod = n % shards;
  const int64_t lo = div * index + std::min<int64_t>(index, mod);
  return {lo, lo + div + (index < mod ? 1 : 0)};
}

std::vector<SftExample> GroupPretrainTexts(const std::vector<std::vector<int32_t>>& texts, const PretrainOptions& o) {
  std::vector<SftExample> out;
  const auto n = static_cast<int64_t>(texts.size());
  if (!o.packing) {
    for (const auto& text : texts) {
      std::vector<int32_t> ids = text;
      if (static_cast<int>(ids.size()) > o.cutoff_len) ids.resize(o.cutoff_len);
      out.push_back(WithLabels(std::move(ids), o));
    }
    return out;
  }
  // datasets.map(num_proc) never uses more processes than rows.
  const int shards = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(o.num_shards, n)));
  const int64_t batch = std::max(1, o.batch_size);
  for (int s = 0; s < shards; ++s) {
    auto [lo, hi] = ContiguousShard(n, shards, s);
    for (int64_t b = lo; b < hi; b += batch) GroupBatch(texts, b, std::min(hi, b + batch), o, &out);
  }
  return out;
}

}  // namespace anneal::data
