// Datasets in LLaMA-Factory's formats, loaded into plain conversations.
//
//   alpaca:    {"instruction", "input", "output", "system", "history": [[q, a], ...]} (columns renamable)
//   sharegpt:  {"conversations": [{"from": "human"|"gpt"|"observation"|"function_call"|"system", "value"}]}
//              or, with tags, {"messages": [{"role", "content"}]}; role_tag, content_tag, user_tag,
//              assistant_tag, observation_tag, function_tag, system_tag as in dataset_info.json
//   tokenized: {"input_ids": [...], "labels": [...]?} (data tokenized elsewhere; labels default to input_ids)
// Files: .json (an array of rows) or .jsonl (one row per line). dataset_info.json lookups work as in
// LLaMA-Factory (parser.py): `dataset: a,b` names entries of <dataset_dir>/dataset_info.json with file_name,
// formatting, columns, tags, num_samples; when "columns" (or "tags") is given, the ones it omits are unset,
// as LLaMA-Factory does. A name that is not in dataset_info.json but is an existing file path is loaded
// directly, its format detected from the first row's keys.
//
// Several datasets are concatenated in order (LLaMA-Factory's default mix_strategy "concat"); max_samples
// keeps the first N rows of each dataset (as LLaMA-Factory's select(range(N))); num_samples likewise.
// A malformed row is an INVALID_ARGUMENT naming file, line and field; with skip_bad_rows it is skipped and
// counted in LoadReport.
//
// Ownership: results are values; nothing is kept open.
// Thread-safety: pure functions over files.
//
// Example:
//   LoadOptions o; o.skip_bad_rows = true;
//   LoadReport report;
//   ASSIGN_OR_RETURN(auto rows, LoadDatasets({"alpaca_en_demo"}, "data", o, &report));
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
  std::string file_path;              // resolved path of the file
  std::string formatting = "alpaca";  // alpaca, sharegpt, tokenized
  std::optional<int64_t> num_samples;
  // columns (nullopt: unset)
  std::optional<std::string> prompt = "instruction", query = "input", response = "output", history, system, tools;
  std::optional<std::string> messages = "conversations";
  std::optional<std::string> input_ids = "input_ids", labels = "labels";
  // sharegpt tags
  std::optional<std::string> role_tag = "from", content_tag = "value", user_tag = "human", assistant_tag = "gpt",
                             observation_tag = "observation", function_tag = "function_call", system_tag = "system";
};

// One row, converted.
struct Conversation {
  std::vector<Message> messages;  // prompt turns then the answer
  std::string system;
  bool pretokenized = false;
  std::vector<int32_t> input_ids, labels;
  std::string origin;  // "file:line", for messages
};

struct LoadOptions {
  std::optional<int64_t> max_samples;
  bool skip_bad_rows = false;
  bool response_optional = false;  // stage pt: an alpaca row without a response column is the prompt alone
};

struct LoadReport {
  int64_t rows = 0;
  int64_t skipped = 0;
  std::vector<std::string> skipped_examples;  // the first few skip reasons
};

// Resolves names through <dataset_dir>/dataset_info.json (or as file paths).
StatusOr<std::vector<DatasetAttr>> ResolveDatasets(const std::vector<std::string>& names,
                                                   const std::string& dataset_dir);

StatusOr<std::vector<Conversation>> LoadDataset(const DatasetAttr& attr, const LoadOptions& options,
                                                LoadReport* report);

// Resolve + load + concatenate.
StatusOr<std::vector<Conversation>> LoadDatasets(const std::vector<std::string>& names, const std::string& dataset_dir,
                                                 const LoadOptions& options, LoadReport* report);

// Held-out split: val_size < 1 is a fraction (ceil(val_size * n) rows, as HF datasets' train_test_split),
// >= 1 a count. The permutation is a Fisher-Yates shuffle driven by splitmix64(seed), so the split depends
// only on (n, val_size, seed). Returns (train indices, val indices), each ascending.
StatusOr<std::pair<std::vector<int64_t>, std::vector<int64_t>>> SplitTrainVal(int64_t n, double val_size,
                                                                              uint64_t seed);

}  // namespace anneal::data
