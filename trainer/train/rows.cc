#include "trainer/train/rows.h"

#include <torch/torch.h>

namespace anneal::train {
namespace {

Batch ToDevice(Batch b, const torch::Device& d) {
  for (at::Tensor* t : {&b.input_ids, &b.labels, &b.attention_mask, &b.position_ids, &b.segment_ids, &b.kto_tags}) {
    if (t->defined()) *t = t->to(d);
  }
  return b;
}

TrainRows CommonRows(const data::PreparedData& prepared, const jobspec::DataSpec& spec) {
  TrainRows rows;
  rows.cache = prepared.cache;
  rows.pad_id = prepared.tokenizer->pad_id().value_or(prepared.tokenizer->eos_id().value_or(0));
  rows.cutoff_len = spec.cutoff_len;
  rows.pairwise = prepared.pairwise;
  rows.kto = prepared.kto;
  return rows;
}

}  // namespace

TrainRows TrainRows::ForTraining(const data::PreparedData& prepared, const jobspec::DataSpec& spec,
                                 bool stage_packs_bins) {
  TrainRows rows = CommonRows(prepared, spec);
  rows.examples = prepared.train;
  // Stage pt packs while preprocessing (the cache rows are the cutoff_len blocks); sft packs rows into bins.
  rows.packed = stage_packs_bins && !rows.pairwise && !rows.kto && (spec.packing || spec.neat_packing);
  rows.neat = spec.neat_packing;
  if (rows.packed) rows.bins = data::PackRows(*prepared.cache, prepared.train, spec.cutoff_len);
  return rows;
}

TrainRows TrainRows::ForValidation(const data::PreparedData& prepared, const jobspec::DataSpec& spec) {
  TrainRows rows = CommonRows(prepared, spec);
  rows.examples = prepared.val;
  return rows;
}

TrainRows TrainRows::ForEvalDataset(const data::PreparedData& prepared, const jobspec::DataSpec& spec) {
  TrainRows rows = CommonRows(prepared, spec);
  rows.examples = prepared.train;  // prepared with val_size 0: every row
  return rows;
}

int64_t TrainRows::size() const {
  return packed ? static_cast<int64_t>(bins.size()) : static_cast<int64_t>(examples.size());
}

Batch TrainRows::Make(const std::vector<int64_t>& positions) const {
  if (packed) {
    std::vector<std::vector<int64_t>> chosen;
    for (int64_t p : positions) chosen.push_back(bins[p]);
    return ToTensors(data::PackedBatch(*cache, chosen, cutoff_len, pad_id), true, neat);
  }
  std::vector<int64_t> rows;
  for (int64_t p : positions) rows.push_back(examples[p]);
  if (kto) {
    std::vector<uint8_t> tags;
    for (int64_t p : positions) {
      rows.push_back(examples[p] + 1);  // the KL rows after the target ones
      tags.push_back(cache->input_ids(examples[p] + 2)[0] != 0 ? 1 : 0);
    }
    // Padded to a multiple of 8 (LLaMA-Factory's collator); the stage cuts each half to its own width.
    Batch b = PadSequenceTo(ToTensors(data::PadBatch(*cache, rows, pad_id), false, false), 8, pad_id);
    b.kto_tags = torch::tensor(at::ArrayRef<uint8_t>(tags), torch::kUInt8).to(torch::kBool);
    return b;
  }
  if (pairwise) {
    for (int64_t p : positions) rows.push_back(examples[p] + 1);  // the rejected rows after the chosen ones
    // LLaMA-Factory's pairwise collator pads to a multiple of 8; only the logits metrics see the padding.
    return PadSequenceTo(ToTensors(data::PadBatch(*cache, rows, pad_id), false, false), 8, pad_id);
  }
  return ToTensors(data::PadBatch(*cache, rows, pad_id), false, false);
}

Batch Prepare(Batch b, const Runtime& rt, int64_t pad_id) {
  if (rt.sequence_parallel) b = PadSequenceTo(std::move(b), rt.dims.tp(), pad_id);
  return ToDevice(std::move(b), rt.device);
}

}  // namespace anneal::train
