// Datasets in LLaMA-Factory's formats, loaded into plain conversations.
//
//   alpaca:    {"instruction", "input", "output", "system", "history": [[q, a], ...]} (columns renamable)
//   sharegpt:  {"conversations": [{"from": "human"|"gpt"|"observation"|"function_call"|"system", "value"}]}
//              or, with tags, {"messages": [{"role", "content"}]}; role_tag, content_tag, user_tag,
//              assistant_tag, observation_tag, function_tag, system_tag as in dataset_info.json
//   tokenized: {"input_ids": [...], "labels": [...]?} (data tokenized elsewhere; labels default to input_ids)
// Files: .json (an array of rows), .jsonl (one row per line), .csv, .parquet and .arrow (columnar.h: Arrow
// C++; list<struct> columns hold sharegpt messages, list<int> columns input_ids), or a directory of files of one
// of these types (all of the same type, read in sorted name order). Every file type gives the same
// Conversation values for the same rows.
//
// dataset_info.json (dataset_info.cc; docs/data.md has the table): `dataset: a,b` names entries of
// <dataset_dir>/dataset_info.json as LLaMA-Factory's parser.py reads them: file_name, formatting (alpaca,
// sharegpt, tokenized), ranking, subset, split, folder, num_samples, columns, tags. When "columns" (or "tags")
// is given, the ones it omits are unset, as LLaMA-Factory does. Refused by name, with why: hub / script /
// cloud entries (hf_hub_url, ms_hub_url, om_hub_url, script_url, cloud_file_name), formatting "openai",
// the images / videos / audios columns (multimodal), splits other than "train" or its slices ("train[:100]",
// "train[10%:50%]"), and any key LLaMA-Factory does not know. subset and folder are accepted and ignored for
// local files, as LLaMA-Factory ignores them there. A name that is not in dataset_info.json but is an
// existing file or directory is loaded directly, its format detected from the first row's keys.
//
// Per dataset, in LLaMA-Factory's order (loader.py): the split slice; num_samples: np.random.permutation(n)
// [:num_samples], topped up with np.random.choice(n, num_samples - n) when num_samples > n, from numpy's
// global stream seeded by transformers.set_seed(seed) and shared by the datasets in order (numpy_random.h:
// the same indices as numpy); max_samples keeps the first N rows. Then rows are converted; a malformed row is
// an INVALID_ARGUMENT naming its origin (file:line for JSON, file:row N (0-based) for columnar files) and field;
// with skip_bad_rows it is skipped and counted in LoadReport.
//
// Mixing several datasets (mix.h): mix_strategy concat (default), interleave_under, interleave_over,
// interleave_once with optional interleave_probs: HF datasets' interleave_datasets, row for row.
//
// Ownership: results are values; nothing is kept open.
// Thread-safety: pure functions over files.
//
// Example:
//   LoadOptions o; o.skip_bad_rows = true; o.mix_strategy = "interleave_under"; o.interleave_probs = {0.7, 0.3};
//   LoadReport report;
//   ASSIGN_OR_RETURN(auto rows, LoadDatasets({"alpaca_en_demo", "chat.parquet"}, "data", o, &report));
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "trainer/data/chat_template.h"

namespace anneal::data {

struct DatasetAttr {
  std::string name;
  std::string file_path;              // resolved path of the file or directory
  std::vector<std::string> files;     // what is read: file_path, or the directory's files (sorted)
  std::string formatting = "alpaca";  // alpaca, sharegpt, tokenized
  std::string split = "train";        // "train" or a slice of it: "train[a:b]", "train[a%:b%]"
  std::optional<int64_t> num_samples;
  // columns (nullopt: unset)
  std::optional<std::string> prompt = "instruction", query = "input", response = "output", history, system, tools;
  std::optional<std::string> messages = "conversations";
  std::optional<std::string> input_ids = "input_ids", labels = "labels";
  // ranking: true (pairwise preference data for stage dpo): the chosen and rejected answer columns (unset
  // unless "columns" names them, as LLaMA-Factory): alpaca strings, sharegpt message objects.
  bool ranking = false;
  std::optional<std::string> chosen, rejected;
  // kto_tag (stage kto; unset unless "columns" names it): a boolean column, true for a desirable answer.
  std::optional<std::string> kto_tag;
  // sharegpt tags
  std::optional<std::string> role_tag = "from", content_tag = "value", user_tag = "human", assistant_tag = "gpt",
                             observation_tag = "observation", function_tag = "function_call", system_tag = "system";
};

// One row, converted.
struct Conversation {
  std::vector<Message> messages;    // prompt turns then the answer (ranking: the chosen answer)
  std::optional<Message> rejected;  // ranking: the rejected answer to the same prompt
  std::optional<bool> kto_tag;      // kto_tag datasets: whether the answer (the last message) is desirable
  std::string system;
  bool pretokenized = false;
  std::vector<int32_t> input_ids, labels;
  std::string origin;  // "file:line", for messages
};

struct LoadOptions {
  std::optional<int64_t> max_samples;
  bool skip_bad_rows = false;
  bool response_optional = false;  // stage pt: an alpaca row without a response column is the prompt alone
  // Mixing (mix.h) and sampling: LLaMA-Factory's data args and training seed.
  std::string mix_strategy = "concat";   // concat, interleave_under, interleave_over, interleave_once
  std::vector<double> interleave_probs;  // empty: round-robin; else one per dataset, summing to 1
  uint64_t seed = 42;                    // num_samples (numpy's global stream) and interleave_probs (default_rng)
};

struct LoadReport {
  int64_t rows = 0;
  int64_t skipped = 0;
  std::vector<std::string> skipped_examples;  // the first few skip reasons
};

// Resolves names through <dataset_dir>/dataset_info.json (or as file paths).
StatusOr<std::vector<DatasetAttr>> ResolveDatasets(const std::vector<std::string>& names,
                                                   const std::string& dataset_dir);

// One dataset (its num_samples drawn from a numpy stream seeded with options.seed, as if it were the first).
StatusOr<std::vector<Conversation>> LoadDataset(const DatasetAttr& attr, const LoadOptions& options,
                                                LoadReport* report);

// Several resolved datasets: each loaded (num_samples sharing one numpy stream, in order), then mixed by
// options.mix_strategy.
StatusOr<std::vector<Conversation>> LoadAndMixDatasets(const std::vector<DatasetAttr>& attrs,
                                                       const LoadOptions& options, LoadReport* report);

// Resolve + LoadAndMixDatasets.
StatusOr<std::vector<Conversation>> LoadDatasets(const std::vector<std::string>& names, const std::string& dataset_dir,
                                                 const LoadOptions& options, LoadReport* report);

// Held-out split: val_size < 1 is a fraction (ceil(val_size * n) rows, as HF datasets' train_test_split),
// >= 1 a count. The permutation is a Fisher-Yates shuffle driven by splitmix64(seed), so the split depends
// only on (n, val_size, seed). Returns (train indices, val indices), each ascending.
StatusOr<std::pair<std::vector<int64_t>, std::vector<int64_t>>> SplitTrainVal(int64_t n, double val_size,
                                                                              uint64_t seed);

}  // namespace anneal::data
