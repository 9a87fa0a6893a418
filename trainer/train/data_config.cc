#include "trainer/train/data_config.h"

#include <filesystem>

namespace anneal::train {

data::DataConfig DataConfigFor(const jobspec::JobSpec& spec, const std::vector<std::string>& datasets) {
  data::DataConfig dc;
  dc.tokenizer_dir = spec.model.model_name_or_path;
  dc.template_name = spec.data.template_name;
  dc.datasets = datasets;
  dc.dataset_dir = spec.data.dataset_dir;
  dc.sft.cutoff_len = spec.data.cutoff_len;
  dc.sft.train_on_prompt = spec.data.train_on_prompt;
  dc.sft.mask_history = spec.data.mask_history;
  dc.pretrain = spec.finetuning.stage == "pt";  // raw text blocks (trainer/data/pretrain.h)
  dc.pretrain_packing = spec.data.packing;
  // (chosen, rejected) pairs (trainer/data/pairwise.h): preference training and reward modeling
  dc.pairwise = spec.finetuning.stage == "dpo" || spec.finetuning.stage == "rm";
  dc.kto = spec.finetuning.stage == "kto";  // tagged answers with KL completions (trainer/data/feedback.h)
  dc.preprocessing_batch_size = spec.data.preprocessing_batch_size;
  dc.preprocessing_num_workers = spec.data.preprocessing_num_workers;
  dc.max_samples = spec.data.max_samples;
  dc.mix_strategy = spec.data.mix_strategy;  // trainer/data/mix.h
  dc.interleave_probs = spec.data.interleave_probs;
  dc.skip_bad_rows = spec.data.skip_bad_rows;
  dc.seed = static_cast<uint64_t>(spec.train.seed);
  const std::filesystem::path out = std::filesystem::absolute(spec.train.output_dir);
  dc.cache_dir = spec.data.tokenized_cache_dir.empty() ? (out.parent_path() / ".anneal-cache").string()
                                                       : spec.data.tokenized_cache_dir;
  return dc;
}

}  // namespace anneal::train
