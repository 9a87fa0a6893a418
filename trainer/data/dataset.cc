#include "trainer/data/dataset.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <numeric>
#include <sstream>

#include "trainer/data/columnar.h"
#include "trainer/data/dataset_internal.h"
#include "trainer/data/mix.h"
#include "trainer/data/numpy_random.h"
#include "trainer/data/row_reader.h"
#include "trainer/data/sampler.h"

namespace anneal::data {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

using internal::RawRow;

// Column value: null when the column is unset or absent from the row (HF datasets fills absent keys with None).
const json& Col(const json& row, const std::optional<std::string>& column) {
  static const json kNull;
  if (!column || !row.is_object()) return kNull;
  auto it = row.find(*column);
  return it == row.end() ? kNull : *it;
}

// Python truthiness of a column value, for alpaca's `if example[prompt]`.
bool Truthy(const json& v) {
  if (v.is_null()) return false;
  if (v.is_string()) return !v.get_ref<const std::string&>().empty();
  if (v.is_boolean()) return v.get<bool>();
  if (v.is_array() || v.is_object()) return !v.empty();
  if (v.is_number()) return v.get<double>() != 0;
  return true;
}

// Errors are "field: problem"; the caller prefixes file:line.
// Tool definitions change what LLaMA-Factory renders (format_tools); we do not render them, so say so.
Status RejectTools(const DatasetAttr& a, const json& row) {
  if (Truthy(Col(row, a.tools)))
    return InvalidArgumentError(fmt::format("field '{}': tool definitions are not supported", *a.tools));
  return Status::Ok();
}

// A kto_tag dataset's row: its tag, a boolean (LLaMA-Factory reads a row without one as untagged and its
// feedback processor drops it; here it is an error naming the field, or skipped with skip_bad_rows).
Status ReadKtoTag(const DatasetAttr& a, const json& row, Conversation* c) {
  if (!a.kto_tag) return Status::Ok();
  const json& tag = Col(row, a.kto_tag);
  if (!tag.is_boolean())
    return InvalidArgumentError(
        fmt::format("field '{}': {} (the kto_tag column: true for a desirable answer, false "
                    "for an undesirable one)",
                    *a.kto_tag, tag.is_null() ? "missing" : "must be true or false"));
  c->kto_tag = tag.get<bool>();
  return Status::Ok();
}

StatusOr<Conversation> ConvertAlpaca(const DatasetAttr& a, const json& row, bool response_optional) {
  RETURN_IF_ERROR(RejectTools(a, row));
  Conversation c;
  const json& history = Col(row, a.history);
  if (history.is_array()) {
    for (size_t k = 0; k < history.size(); ++k) {
      const json& pair = history[k];
      if (!pair.is_array() || pair.size() != 2 || !pair[0].is_string() || !pair[1].is_string())
        return InvalidArgumentError(
            fmt::format("field '{}'[{}]: must be a [prompt, response] pair of strings", *a.history, k));
      c.messages.push_back({Role::kUser, pair[0].get<std::string>()});
      c.messages.push_back({Role::kAssistant, pair[1].get<std::string>()});
    }
  } else if (!history.is_null()) {
    return InvalidArgumentError(fmt::format("field '{}': must be a list of [prompt, response] pairs", *a.history));
  }
  std::vector<std::string> query;
  for (const auto* col : {&a.prompt, &a.query}) {
    const json& v = Col(row, *col);
    if (!Truthy(v)) continue;
    if (!v.is_string()) return InvalidArgumentError(fmt::format("field '{}': must be a string", **col));
    query.push_back(v.get<std::string>());
  }
  std::string joined;
  for (size_t k = 0; k < query.size(); ++k) joined += (k ? "\n" : "") + query[k];
  c.messages.push_back({Role::kUser, joined});
  if (a.ranking) {
    // LLaMA-Factory's pairwise example: the chosen and rejected answers as strings.
    for (const auto& [column, what] : {std::pair{&a.chosen, "chosen"}, std::pair{&a.rejected, "rejected"}}) {
      const json& answer = Col(row, *column);
      if (!answer.is_string())
        return InvalidArgumentError(
            fmt::format("field '{}': {}", column->value_or(std::string("(no \"") + what + "\" column in \"columns\")"),
                        answer.is_null() ? std::string("missing (the ") + what + " answer of a ranking dataset)"
                                         : "must be a string"));
    }
    c.messages.push_back({Role::kAssistant, Col(row, a.chosen).get<std::string>()});
    c.rejected = Message{Role::kAssistant, Col(row, a.rejected).get<std::string>()};
  } else {
    const json& response = Col(row, a.response);
    if (response_optional && response.is_null()) return c;  // LLaMA-Factory: an empty response (unsupervised)
    if (!response.is_string())
      return InvalidArgumentError(fmt::format("field '{}': {}", a.response.value_or("output"),
                                              response.is_null() ? "missing" : "must be a string"));
    c.messages.push_back({Role::kAssistant, response.get<std::string>()});
  }
  const json& system = Col(row, a.system);
  if (!system.is_null() && !system.is_string())
    return InvalidArgumentError(fmt::format("field '{}': must be a string", *a.system));
  if (system.is_string()) c.system = system.get<std::string>();
  RETURN_IF_ERROR(ReadKtoTag(a, row, &c));
  return c;
}

// A ranking row: the messages are the prompt (ending with a user or observation turn); the chosen and rejected
// columns are one assistant (or function) message each, as LLaMA-Factory's sharegpt converter reads them.
StatusOr<Conversation> AddSharegptPair(const DatasetAttr& a, const json& row, const std::string& field,
                                       const std::string& role_tag, const std::string& content_tag, Conversation c) {
  if (c.messages.size() % 2 == 0)
    return InvalidArgumentError(fmt::format(
        "field '{}': {} turns; the prompt of a ranking row must end with a user turn (its answers are the chosen "
        "and rejected columns)",
        field, c.messages.size()));
  Message answers[2];
  for (int k = 0; k < 2; ++k) {
    const std::optional<std::string>& column = k == 0 ? a.chosen : a.rejected;
    const char* what = k == 0 ? "chosen" : "rejected";
    const json& m = Col(row, column);
    const std::string name = column.value_or(std::string("(no \"") + what + "\" column in \"columns\")");
    if (!m.is_object() || !m.contains(role_tag) || !m[role_tag].is_string() || !m.contains(content_tag) ||
        !m[content_tag].is_string())
      return InvalidArgumentError(fmt::format("field '{}': the {} answer must be a message with string '{}' and '{}'",
                                              name, what, role_tag, content_tag));
    const std::string r = m[role_tag].get<std::string>();
    if (a.assistant_tag && r == *a.assistant_tag)
      answers[k] = {Role::kAssistant, m[content_tag].get<std::string>()};
    else if (a.function_tag && r == *a.function_tag)
      answers[k] = {Role::kFunction, m[content_tag].get<std::string>()};
    else
      return InvalidArgumentError(fmt::format("field '{}'.{}: role '{}' is invalid for an answer (expected {})", name,
                                              role_tag, r, a.assistant_tag.value_or("an assistant tag")));
  }
  c.messages.push_back(std::move(answers[0]));
  c.rejected = std::move(answers[1]);
  return c;
}

StatusOr<Conversation> ConvertSharegpt(const DatasetAttr& a, const json& row) {
  RETURN_IF_ERROR(RejectTools(a, row));
  Conversation c;
  std::string field = a.messages.value_or("conversations");
  const json& msgs = Col(row, a.messages);
  if (!msgs.is_array() || msgs.empty())
    return InvalidArgumentError(fmt::format("field '{}': must be a non-empty list of messages", field));
  std::string role_tag = a.role_tag.value_or(""), content_tag = a.content_tag.value_or("");
  auto role_of = [&](const json& m) -> std::string {
    auto it = m.find(role_tag);
    return it != m.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  for (size_t k = 0; k < msgs.size(); ++k) {
    const json& m = msgs[k];
    if (!m.is_object() || !m.contains(role_tag) || !m[role_tag].is_string() || !m.contains(content_tag) ||
        !m[content_tag].is_string())
      return InvalidArgumentError(
          fmt::format("field '{}'[{}]: needs string '{}' and '{}'", field, k, role_tag, content_tag));
  }
  size_t first = 0;
  if (a.system_tag && role_of(msgs[0]) == *a.system_tag) {
    c.system = msgs[0][content_tag].get<std::string>();
    first = 1;
  } else if (const json& s = Col(row, a.system); s.is_string()) {
    c.system = s.get<std::string>();
  }
  for (size_t k = first; k < msgs.size(); ++k) {
    std::string r = role_of(msgs[k]);
    bool odd_turn = (k - first) % 2 == 0;  // user/observation turns
    Role role;
    if (odd_turn && a.user_tag && r == *a.user_tag)
      role = Role::kUser;
    else if (odd_turn && a.observation_tag && r == *a.observation_tag)
      role = Role::kObservation;
    else if (!odd_turn && a.assistant_tag && r == *a.assistant_tag)
      role = Role::kAssistant;
    else if (!odd_turn && a.function_tag && r == *a.function_tag)
      role = Role::kFunction;
    else
      return InvalidArgumentError(
          fmt::format("field '{}'[{}].{}: role '{}' is invalid here (expected {})", field, k, role_tag, r,
                      odd_turn ? "a user or observation turn" : "an assistant or function turn"));
    c.messages.push_back({role, msgs[k][content_tag].get<std::string>()});
  }
  if (a.ranking) return AddSharegptPair(a, row, field, role_tag, content_tag, std::move(c));
  if (c.messages.size() % 2 != 0)
    return InvalidArgumentError(
        fmt::format("field '{}': {} turns; a conversation must end with an answer", field, c.messages.size()));
  RETURN_IF_ERROR(ReadKtoTag(a, row, &c));
  return c;
}

StatusOr<Conversation> ConvertTokenized(const DatasetAttr& a, const json& row) {
  Conversation c;
  c.pretokenized = true;
  std::string ids_col = a.input_ids.value_or("input_ids"), labels_col = a.labels.value_or("labels");
  auto ints = [&](const json& v, const std::string& field, std::vector<int32_t>* out) -> Status {
    if (!v.is_array()) return InvalidArgumentError(fmt::format("field '{}': must be a list of integers", field));
    for (size_t k = 0; k < v.size(); ++k) {
      if (!v[k].is_number_integer())
        return InvalidArgumentError(fmt::format("field '{}'[{}]: must be an integer", field, k));
      out->push_back(v[k].get<int32_t>());
    }
    return Status::Ok();
  };
  RETURN_IF_ERROR(ints(Col(row, a.input_ids), ids_col, &c.input_ids));
  if (c.input_ids.empty()) return InvalidArgumentError(fmt::format("field '{}': empty", ids_col));
  const json& labels = Col(row, a.labels);
  if (!labels.is_null()) {
    RETURN_IF_ERROR(ints(labels, labels_col, &c.labels));
    if (c.labels.size() != c.input_ids.size())
      return InvalidArgumentError(
          fmt::format("field '{}': {} labels for {} input_ids", labels_col, c.labels.size(), c.input_ids.size()));
  }
  return c;
}

}  // namespace

namespace internal {

void DetectFormat(const json& row, DatasetAttr* a) {
  if (!row.is_object()) return;
  if (row.contains("input_ids"))
    a->formatting = "tokenized";
  else if (row.contains("text") && !row.contains("instruction"))  // raw text (.txt files, c4-style jsonl)
    a->prompt = "text";
  else if (row.contains("conversations"))
    a->formatting = "sharegpt";
  else if (row.contains("messages")) {
    a->formatting = "sharegpt";
    a->messages = "messages";
    a->role_tag = "role";
    a->content_tag = "content";
    a->user_tag = "user";
    a->assistant_tag = "assistant";
    a->observation_tag = "observation";
    a->function_tag = "function";
    a->system_tag = "system";
  }
}

StatusOr<Conversation> ConvertRow(const DatasetAttr& attr, const RawRow& row, const LoadOptions& o) {
  if (!row.parse_error.empty()) return InvalidArgumentError(row.parse_error);
  if (!row.value.is_object()) return InvalidArgumentError("row: must be a JSON object");
  if (attr.formatting == "sharegpt") return ConvertSharegpt(attr, row.value);
  if (attr.formatting == "tokenized") return ConvertTokenized(attr, row.value);
  return ConvertAlpaca(attr, row.value, o.response_optional);
}

}  // namespace internal

namespace {

// LLaMA-Factory's _load_single_dataset order: split slice, num_samples (numpy's global stream), max_samples.
StatusOr<std::vector<RawRow>> SelectRows(std::vector<RawRow> rows, const DatasetAttr& attr, const LoadOptions& o,
                                         NumpyLegacyRandom* rng) {
  ASSIGN_OR_RETURN(auto range, internal::SplitRange(attr.split, static_cast<int64_t>(rows.size())));
  if (range.first != 0 || range.second != static_cast<int64_t>(rows.size())) {
    rows.erase(rows.begin() + range.second, rows.end());
    rows.erase(rows.begin(), rows.begin() + range.first);
  }
  if (attr.num_samples) {
    int64_t n = static_cast<int64_t>(rows.size()), want = *attr.num_samples;
    if (n == 0 && want > 0)
      return InvalidArgumentError(fmt::format("dataset '{}': num_samples {} from an empty dataset", attr.name, want));
    std::vector<int64_t> idx = rng->Permutation(n);
    if (static_cast<int64_t>(idx.size()) > want) idx.resize(static_cast<size_t>(want));
    if (want > n) {
      std::vector<int64_t> more = rng->Choice(n, want - n);
      idx.insert(idx.end(), more.begin(), more.end());
    }
    std::vector<RawRow> picked;
    picked.reserve(idx.size());
    for (int64_t i : idx) picked.push_back(rows[static_cast<size_t>(i)]);
    rows = std::move(picked);
  }
  if (o.max_samples && *o.max_samples < static_cast<int64_t>(rows.size()))
    rows.resize(static_cast<size_t>(std::max<int64_t>(*o.max_samples, 0)));
  return rows;
}

StatusOr<std::vector<Conversation>> LoadOne(const DatasetAttr& attr_in, const LoadOptions& o, LoadReport* report,
                                            NumpyLegacyRandom* rng) {
  DatasetAttr attr = attr_in;
  std::vector<std::string> files = attr.files.empty() ? std::vector<std::string>{attr.file_path} : attr.files;
  std::vector<RawRow> rows;
  for (const std::string& f : files) {
    ASSIGN_OR_RETURN(std::vector<RawRow> part, internal::ReadAllRows(f));
    std::move(part.begin(), part.end(), std::back_inserter(rows));
  }
  if (attr.formatting == "auto") {
    attr.formatting = "alpaca";
    if (!rows.empty()) internal::DetectFormat(rows[0].value, &attr);
  }
  ASSIGN_OR_RETURN(rows, SelectRows(std::move(rows), attr, o, rng));
  std::vector<Conversation> out;
  for (const RawRow& row : rows) {
    StatusOr<Conversation> c = internal::ConvertRow(attr, row, o);
    if (report) ++report->rows;
    if (!c.ok()) {
      Status s = c.status().WithContext(row.origin);
      if (!o.skip_bad_rows) return InvalidArgumentError(s.message() + " (set skip_bad_rows to skip such rows)");
      if (report) {
        ++report->skipped;
        if (report->skipped_examples.size() < 5) report->skipped_examples.push_back(s.message());
      }
      continue;
    }
    c->origin = row.origin;
    out.push_back(std::move(*c));
  }
  return out;
}

StatusOr<NumpyLegacyRandom> SeededLegacy(uint64_t seed) {
  if (seed > 0xffffffffULL)
    return InvalidArgumentError(fmt::format("seed {}: must be below 2^32 (numpy's np.random.seed)", seed));
  return NumpyLegacyRandom(static_cast<uint32_t>(seed));
}

}  // namespace

StatusOr<std::vector<Conversation>> LoadDataset(const DatasetAttr& attr, const LoadOptions& o, LoadReport* report) {
  ASSIGN_OR_RETURN(NumpyLegacyRandom rng, SeededLegacy(o.seed));
  return LoadOne(attr, o, report, &rng);
}

StatusOr<std::vector<Conversation>> LoadAndMixDatasets(const std::vector<DatasetAttr>& attrs, const LoadOptions& o,
                                                       LoadReport* report) {
  ASSIGN_OR_RETURN(NumpyLegacyRandom rng, SeededLegacy(o.seed));
  std::vector<std::vector<Conversation>> parts;
  std::vector<int64_t> lengths;
  for (const auto& a : attrs) {
    ASSIGN_OR_RETURN(auto rows, LoadOne(a, o, report, &rng));
    lengths.push_back(static_cast<int64_t>(rows.size()));
    parts.push_back(std::move(rows));
  }
  ASSIGN_OR_RETURN(std::vector<int64_t> order, MixIndices(lengths, o.mix_strategy, o.interleave_probs, o.seed));
  std::vector<const Conversation*> flat;
  for (const auto& p : parts)
    for (const auto& c : p) flat.push_back(&c);
  std::vector<Conversation> all;
  all.reserve(order.size());
  for (int64_t i : order) all.push_back(*flat[static_cast<size_t>(i)]);
  return all;
}

StatusOr<std::vector<Conversation>> LoadDatasets(const std::vector<std::string>& names, const std::string& dataset_dir,
                                                 const LoadOptions& o, LoadReport* report) {
  if (names.empty()) return InvalidArgumentError("no dataset given (data.dataset is empty)");
  ASSIGN_OR_RETURN(auto attrs, ResolveDatasets(names, dataset_dir));
  return LoadAndMixDatasets(attrs, o, report);
}

StatusOr<std::pair<std::vector<int64_t>, std::vector<int64_t>>> SplitTrainVal(int64_t n, double val_size,
                                                                              uint64_t seed) {
  if (val_size < 0) return InvalidArgumentError(fmt::format("val_size must be >= 0, got {}", val_size));
  int64_t n_val = val_size < 1.0 ? static_cast<int64_t>(std::ceil(val_size * static_cast<double>(n)))
                                 : static_cast<int64_t>(val_size);
  if (n_val >= n && n_val > 0)
    return InvalidArgumentError(fmt::format("val_size {} leaves no training rows out of {}", val_size, n));
  std::vector<int64_t> perm = ShuffledIndices(n, seed, /*epoch=*/0);
  std::vector<int64_t> val(perm.begin(), perm.begin() + n_val), train(perm.begin() + n_val, perm.end());
  std::sort(val.begin(), val.end());
  std::sort(train.begin(), train.end());
  return std::make_pair(std::move(train), std::move(val));
}

}  // namespace anneal::data
