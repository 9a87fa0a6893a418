#include "trainer/data/preview.h"

#include <fmt/format.h>

#include <filesystem>

#include "jobspec/jobspec.h"

namespace anneal::data {

DataConfig DataConfigFromJob(const jobspec::JobSpec& spec) {
  DataConfig c;
  c.tokenizer_dir = spec.model.model_name_or_path;
  c.template_name = spec.data.template_name;
  c.datasets = spec.data.dataset;
  c.dataset_dir = spec.data.dataset_dir;
  c.sft.cutoff_len = spec.data.cutoff_len;
  c.sft.train_on_prompt = spec.data.train_on_prompt;
  c.sft.mask_history = spec.data.mask_history;
  c.pretrain = spec.finetuning.stage == "pt";
  c.pretrain_packing = spec.data.packing;
  c.preprocessing_batch_size = spec.data.preprocessing_batch_size;
  c.preprocessing_num_workers = spec.data.preprocessing_num_workers;
  c.max_samples = spec.data.max_samples;
  c.mix_strategy = spec.data.mix_strategy;
  c.interleave_probs = spec.data.interleave_probs;
  c.val_size = spec.data.val_size;
  c.skip_bad_rows = spec.data.skip_bad_rows;
  c.seed = static_cast<uint64_t>(spec.train.seed);
  c.cache_dir = spec.data.tokenized_cache_dir;
  if (c.cache_dir.empty() && !spec.train.output_dir.empty())  // docs/job-spec.md: <output_dir>/../.anneal-cache
    c.cache_dir = (std::filesystem::path(spec.train.output_dir).parent_path() / ".anneal-cache").string();
  return c;
}

Status RunPreview(const PreviewArgs& args, std::ostream& out) {
  ASSIGN_OR_RETURN(jobspec::JobSpec spec, jobspec::LoadJobSpecFile(args.config));
  DataConfig c = DataConfigFromJob(spec);
  ASSIGN_OR_RETURN(auto tok, Tokenizer::Load(c.tokenizer_dir));
  ASSIGN_OR_RETURN(ChatTemplate t, GetChatTemplate(c.template_name));
  RETURN_IF_ERROR(FixTokenizerForTemplate(t, tok.get()));
  LoadOptions lo;
  lo.max_samples = args.num;
  lo.skip_bad_rows = c.skip_bad_rows;
  lo.response_optional = c.pretrain;
  lo.mix_strategy = c.mix_strategy;
  lo.interleave_probs = c.interleave_probs;
  lo.seed = c.seed;
  LoadReport report;
  ASSIGN_OR_RETURN(auto rows, LoadDatasets(c.datasets, c.dataset_dir, lo, &report));
  if (static_cast<int>(rows.size()) > args.num) rows.resize(args.num);
  std::vector<SftExample> examples;
  if (c.pretrain) {  // stage pt: the first --num rows' texts, grouped into blocks (no template)
    ASSIGN_OR_RETURN(examples, EncodePretrainTexts(*tok, c.template_name, rows, c));
  } else {
    ASSIGN_OR_RETURN(examples, EncodeConversations(t, *tok, rows, c.sft, c.skip_bad_rows, 1, &report));
  }
  out << fmt::format("template: {}   tokenizer: {}   cutoff_len: {}{}\n", t.name, c.tokenizer_dir, c.sft.cutoff_len,
                     c.pretrain ? fmt::format("   stage pt, packing {}", c.pretrain_packing) : "");
  for (size_t i = 0; i < examples.size(); ++i) {
    const SftExample& ex = examples[i];
    std::vector<int32_t> trained;
    for (size_t k = 0; k < ex.labels.size(); ++k)
      if (ex.labels[k] != kIgnoreIndex) trained.push_back(ex.labels[k]);
    std::string mask;
    for (int32_t l : ex.labels) mask += l == kIgnoreIndex ? '.' : '#';
    out << fmt::format("--- example {} ({} tokens, {} trained)\n", i, ex.input_ids.size(), trained.size());
    out << "input_ids: " << fmt::format("{}", fmt::join(ex.input_ids, " ")) << "\n";
    out << "label_mask (# = loss): " << mask << "\n";
    out << "inputs:\n" << tok->Decode(ex.input_ids) << "\n";
    out << "labels:\n" << tok->Decode(trained) << "\n";
  }
  if (report.skipped > 0) {
    out << fmt::format("skipped {} bad rows, e.g.:\n", report.skipped);
    for (const auto& e : report.skipped_examples) out << "  " << e << "\n";
  }
  return Status::Ok();
}

}  // namespace anneal::data
