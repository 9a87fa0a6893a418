// The rows a run trains and validates on, addressed by sampler position.
//
// TrainRows holds the tokenized cache and either cache rows (unpacked) or packing bins of cache rows
// (packing / neat_packing); Make(positions) builds one micro-batch from sampler positions. Prepare moves a
// micro-batch to the rank's device (padding the sequence for sequence parallelism first). The validation loss
// over such rows is trainer/train/validator.h.
//
// Thread-safety: TrainRows is immutable after construction.
//
// Example:
//   TrainRows rows = TrainRows::ForTraining(data, spec.data);
//   Batch b = Prepare(rows.Make({0, 1}), rt, rows.pad_id);
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "jobspec/jobspec.h"
#include "trainer/data/pipeline.h"
#include "trainer/train/batch.h"
#include "trainer/train/runtime.h"

namespace anneal::train {

struct TrainRows {
  std::shared_ptr<data::TokenCache> cache;
  std::vector<int64_t> examples;           // cache rows (unpacked)
  std::vector<std::vector<int64_t>> bins;  // packing bins of cache rows (packing on)
  bool packed = false, neat = false;
  // Preference pairs: examples are chosen rows (rejected = chosen + 1); a micro-batch of n pairs is the n chosen
  // rows then the n rejected rows (LLaMA-Factory's PairwiseDataCollatorWithPadding), [2n, T].
  bool pairwise = false;
  // Stage kto: examples are target rows; each is followed by its KL row and its tag row (trainer/data/feedback.h);
  // a micro-batch of n examples is the n target rows then the n KL rows, [2n, T], with kto_tags [n].
  bool kto = false;
  int cutoff_len = 0;
  int32_t pad_id = 0;

  // The training split (packed into bins when the spec packs, unless `stage_packs_bins` is false: stage pt
  // packs while preprocessing) and the validation split (never packed).
  static TrainRows ForTraining(const data::PreparedData& prepared, const jobspec::DataSpec& spec,
                               bool stage_packs_bins = true);
  static TrainRows ForValidation(const data::PreparedData& prepared, const jobspec::DataSpec& spec);
  // Every row of a separately prepared eval_dataset (never packed).
  static TrainRows ForEvalDataset(const data::PreparedData& prepared, const jobspec::DataSpec& spec);

  int64_t size() const;
  // One micro-batch of the rows at sampler positions `positions`.
  Batch Make(const std::vector<int64_t>& positions) const;
};

// On the rank's device, and padded for sequence parallelism when it is on.
Batch Prepare(Batch b, const Runtime& rt, int64_t pad_id);

}  // namespace anneal::train
