// ResolveDatasets: dataset_info.json entries (LLaMA-Factory's parser.py) -> DatasetAttr, refusing by name what
// is not built. See dataset.h for the contract and docs/data.md for the key table.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>

#include "trainer/data/columnar.h"
#include "trainer/data/dataset.h"
#include "trainer/data/dataset_internal.h"

namespace anneal::data {
namespace internal {

StatusOr<std::string> ReadText(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return NotFoundError("cannot open dataset file " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

StatusOr<std::pair<int64_t, int64_t>> SplitRange(const std::string& split, int64_t n) {
  static const std::regex kSpec(R"(^train(\[(-?\d+)?(%)?:(-?\d+)?(%)?\])?$)");
  std::smatch m;
  if (!std::regex_match(split, m, kSpec))
    return InvalidArgumentError(fmt::format(
        "split '{}': a local file has only the \"train\" split (or a slice: \"train[:100]\", \"train[10%:50%]\")",
        split));
  if (n < 0) n = 0;
  if (!m[1].matched) return std::make_pair(int64_t{0}, n);
  bool from_pct = m[3].matched, to_pct = m[5].matched;
  if ((m[2].matched && m[4].matched && from_pct != to_pct) || (from_pct && !m[2].matched) || (to_pct && !m[4].matched))
    return InvalidArgumentError(fmt::format("split '{}': both bounds must use the same unit", split));
  auto bound = [&](int group, bool pct, int64_t dflt) -> StatusOr<int64_t> {
    if (!m[group].matched) return dflt;
    int64_t v = std::stoll(m[group].str());
    if (!pct) return v;
    if (v < -100 || v > 100)
      return InvalidArgumentError(fmt::format("split '{}': percent boundaries must be in [-100, 100]", split));
    return static_cast<int64_t>(std::nearbyint(static_cast<double>(v) * static_cast<double>(n) / 100.0));
  };
  ASSIGN_OR_RETURN(int64_t from, bound(2, from_pct, 0));
  ASSIGN_OR_RETURN(int64_t to, bound(4, to_pct, n));
  if (from < 0) from = std::max<int64_t>(n + from, 0);
  if (to < 0) to = std::max<int64_t>(n + to, 0);
  return std::make_pair(std::min(from, n), std::max(std::min(to, n), std::min(from, n)));
}

}  // namespace internal

namespace {

using nlohmann::json;
namespace fs = std::filesystem;

// Keys of a dataset_info.json entry and why the ones we do not build are refused.
const std::set<std::string> kEntryKeys = {"file_name", "formatting",  "ranking", "subset", "split",
                                          "folder",    "num_samples", "columns", "tags"};
const std::vector<std::pair<std::string, std::string>> kRemoteKeys = {{"hf_hub_url", "Hugging Face Hub"},
                                                                      {"ms_hub_url", "ModelScope Hub"},
                                                                      {"om_hub_url", "Modelers Hub"},
                                                                      {"script_url", "a dataset loading script"},
                                                                      {"cloud_file_name", "cloud storage"}};
const std::vector<std::pair<std::string, std::string>> kRefusedColumns = {
    {"images", "multimodal data (images) is not supported"},
    {"videos", "multimodal data (videos) is not supported"},
    {"audios", "multimodal data (audios) is not supported"}};

StatusOr<std::optional<std::string>> StringOrNull(const json& obj, const std::string& key, const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::optional<std::string>();
  if (!it->is_string()) return InvalidArgumentError(fmt::format("{}: \"{}\" must be a string", where, key));
  return std::optional<std::string>(it->get<std::string>());
}

Status ParseColumns(const json& c, const std::string& where, DatasetAttr* a) {
  if (!c.is_object()) return InvalidArgumentError(where + ": \"columns\" must be an object");
  static const std::set<std::string> kKnown = {"prompt", "query",     "response", "history", "messages", "system",
                                               "tools",  "input_ids", "labels",   "chosen",  "rejected", "kto_tag"};
  for (const auto& item : c.items()) {
    // Named, not structured bindings: the lambda below captures `key` (clang 14 cannot capture a binding).
    const std::string& key = item.key();
    const json& value = item.value();
    for (const auto& [name, why] : kRefusedColumns)
      if (key == name && !value.is_null())
        return InvalidArgumentError(fmt::format("{}: column \"{}\": {}", where, key, why));
    bool refused_but_null =
        std::any_of(kRefusedColumns.begin(), kRefusedColumns.end(), [&](const auto& r) { return r.first == key; });
    if (!kKnown.count(key) && !refused_but_null)
      return InvalidArgumentError(fmt::format(
          "{}: unknown column key \"{}\" (known: prompt, query, response, history, messages, system, tools, "
          "input_ids, labels, chosen, rejected, kto_tag)",
          where, key));
  }
  for (auto [key, dst] : {std::pair{"prompt", &a->prompt},
                          {"query", &a->query},
                          {"response", &a->response},
                          {"history", &a->history},
                          {"messages", &a->messages},
                          {"system", &a->system},
                          {"tools", &a->tools},
                          {"chosen", &a->chosen},
                          {"rejected", &a->rejected},
                          {"kto_tag", &a->kto_tag}}) {
    ASSIGN_OR_RETURN(*dst, StringOrNull(c, key, where + ": columns"));  // omitted: unset, as LLaMA-Factory
  }
  if (c.contains("input_ids")) {
    ASSIGN_OR_RETURN(a->input_ids, StringOrNull(c, "input_ids", where + ": columns"));
  }
  if (c.contains("labels")) {
    ASSIGN_OR_RETURN(a->labels, StringOrNull(c, "labels", where + ": columns"));
  }
  return Status::Ok();
}

Status ParseTags(const json& t, const std::string& where, DatasetAttr* a) {
  if (!t.is_object()) return InvalidArgumentError(where + ": \"tags\" must be an object");
  const std::vector<std::pair<std::string, std::optional<std::string>*>> tags = {
      {"role_tag", &a->role_tag},
      {"content_tag", &a->content_tag},
      {"user_tag", &a->user_tag},
      {"assistant_tag", &a->assistant_tag},
      {"observation_tag", &a->observation_tag},
      {"function_tag", &a->function_tag},
      {"system_tag", &a->system_tag}};
  for (const auto& item : t.items()) {
    const std::string& key = item.key();  // named for the lambda's capture (see ParseColumns)
    if (std::none_of(tags.begin(), tags.end(), [&](const auto& p) { return p.first == key; }))
      return InvalidArgumentError(
          fmt::format("{}: unknown tag \"{}\" (known: role_tag, content_tag, user_tag, assistant_tag, observation_tag, "
                      "function_tag, system_tag)",
                      where, key));
  }
  for (const auto& [key, dst] : tags) {
    ASSIGN_OR_RETURN(*dst, StringOrNull(t, key, where + ": tags"));
  }
  return Status::Ok();
}

Status ParseEntry(const json& e, const std::string& dataset_dir, const std::string& where, DatasetAttr* a) {
  if (!e.is_object()) return InvalidArgumentError(where + ": must be an object");
  for (const auto& [key, what] : kRemoteKeys)
    if (e.contains(key))
      return InvalidArgumentError(
          fmt::format("{}: \"{}\" loads from {}; only local files (\"file_name\") are supported", where, key, what));
  for (const auto& [key, value] : e.items())
    if (!kEntryKeys.count(key))
      return InvalidArgumentError(fmt::format(
          "{}: unknown key \"{}\" (known: file_name, formatting, ranking, subset, split, folder, num_samples, "
          "columns, tags)",
          where, key));
  if (!e.contains("file_name") || !e["file_name"].is_string())
    return InvalidArgumentError(where + ": needs \"file_name\" (a file or directory under the dataset_dir)");
  a->file_path = (fs::path(dataset_dir) / e["file_name"].get<std::string>()).string();
  ASSIGN_OR_RETURN(auto formatting, StringOrNull(e, "formatting", where));
  a->formatting = formatting.value_or("alpaca");
  if (a->formatting == "openai")
    return InvalidArgumentError(where + ": formatting \"openai\" (OpenAI messages with tool calls) is not supported");
  if (a->formatting != "alpaca" && a->formatting != "sharegpt" && a->formatting != "tokenized")
    return InvalidArgumentError(where + ": formatting \"" + a->formatting + "\" (known: alpaca, sharegpt, tokenized)");
  if (e.contains("ranking") && !e["ranking"].is_boolean())
    return InvalidArgumentError(where + ": \"ranking\" must be true or false");
  a->ranking = e.value("ranking", false);
  if (a->ranking && a->formatting == "tokenized")
    return InvalidArgumentError(where +
                                ": \"ranking\": true needs alpaca or sharegpt rows (chosen and rejected "
                                "answers), not formatting \"tokenized\"");
  ASSIGN_OR_RETURN(auto split, StringOrNull(e, "split", where));
  a->split = split.value_or("train");
  RETURN_IF_ERROR(internal::SplitRange(a->split, -1).status().WithContext(where));
  for (const char* key : {"subset", "folder"}) {  // LLaMA-Factory passes them to hub loads only
    ASSIGN_OR_RETURN(auto ignored, StringOrNull(e, key, where));
    (void)ignored;
  }
  if (e.contains("num_samples") && !e["num_samples"].is_null()) {
    if (!e["num_samples"].is_number_integer() || e["num_samples"].get<int64_t>() < 0)
      return InvalidArgumentError(where + ": \"num_samples\" must be a non-negative integer");
    a->num_samples = e["num_samples"].get<int64_t>();
  }
  if (e.contains("columns")) RETURN_IF_ERROR(ParseColumns(e["columns"], where, a));
  if (e.contains("tags")) RETURN_IF_ERROR(ParseTags(e["tags"], where, a));
  if (a->ranking && a->kto_tag)
    return InvalidArgumentError(where +
                                ": \"ranking\": true with a \"kto_tag\" column: a dataset holds either preference "
                                "pairs (ranking) or tagged answers (kto_tag), not both");
  if (a->kto_tag && a->formatting == "tokenized")
    return InvalidArgumentError(where +
                                ": a \"kto_tag\" column needs alpaca or sharegpt rows, not formatting "
                                "\"tokenized\"");
  return Status::Ok();
}

// A file, or a directory whose files are all of one readable type (sorted by name).
Status ListFiles(const std::string& where, DatasetAttr* a) {
  std::error_code ec;
  auto type_of = [](const fs::path& p) {
    std::string e = p.extension().string();
    return e == ".jsonl" ? std::string(".json") : e;
  };
  auto readable = [](const std::string& e) { return e == ".json" || e == ".txt" || IsColumnarExtension(e); };
  if (fs::is_regular_file(a->file_path, ec)) {
    a->files = {a->file_path};
  } else if (fs::is_directory(a->file_path, ec)) {
    for (const auto& entry : fs::directory_iterator(a->file_path, ec))
      if (entry.is_regular_file(ec)) a->files.push_back(entry.path().string());
    std::sort(a->files.begin(), a->files.end());
    if (a->files.empty())
      return InvalidArgumentError(fmt::format("{}: directory {} has no files", where, a->file_path));
  } else {
    return NotFoundError(fmt::format("{}: {} not found", where, a->file_path));
  }
  std::string type = type_of(a->files[0]);
  for (const auto& f : a->files) {
    if (!readable(type_of(f)))
      return InvalidArgumentError(
          fmt::format("{}: {}: unsupported file type (json, jsonl, csv, parquet, arrow, txt)", where, f));
    if (type_of(f) != type)
      return InvalidArgumentError(
          fmt::format("{}: {} and {}: the files of a directory must have one type", where, a->files[0], f));
  }
  return Status::Ok();
}

}  // namespace

StatusOr<std::vector<DatasetAttr>> ResolveDatasets(const std::vector<std::string>& names,
                                                   const std::string& dataset_dir) {
  std::vector<DatasetAttr> out;
  fs::path info_path = fs::path(dataset_dir) / "dataset_info.json";
  json info;
  std::error_code ec;
  if (fs::exists(info_path, ec)) {
    ASSIGN_OR_RETURN(std::string text, internal::ReadText(info_path.string()));
    info = json::parse(text, nullptr, false);
    if (info.is_discarded() || !info.is_object())
      return InvalidArgumentError(info_path.string() + ": not a JSON object");
  }
  for (const std::string& name : names) {
    DatasetAttr a;
    a.name = name;
    std::string where = info_path.string() + ": dataset '" + name + "'";
    if (info.is_object() && info.contains(name)) {
      RETURN_IF_ERROR(ParseEntry(info[name], dataset_dir, where, &a));
    } else {
      fs::path p = fs::path(name);
      if (!fs::exists(p, ec) && fs::exists(fs::path(dataset_dir) / name, ec)) p = fs::path(dataset_dir) / name;
      if (!fs::exists(p, ec))
        return NotFoundError(
            fmt::format("dataset '{}' is neither in {} nor an existing file", name, info_path.string()));
      a.file_path = p.string();
      a.formatting = "auto";
      where = "dataset '" + name + "'";
    }
    RETURN_IF_ERROR(ListFiles(where, &a));
    out.push_back(std::move(a));
  }
  return out;
}

}  // namespace anneal::data
