// docs/job-spec.md is checked against the validator: every documented key is accepted (with its documented
// default), every accepted key is documented, and the documented defaults are the real ones.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "jobspec/jobspec.h"
#include "jobspec/schema.h"

namespace anneal::jobspec {
namespace {

struct DocRow {
  std::vector<std::string> nested;  // backticked names of column 1
  std::vector<std::string> flat;    // backticked names of column 2
  std::string default_value;        // backticked text of column 4, "" when the default is described in words
};

std::vector<std::string> Backticked(const std::string& cell) {
  std::vector<std::string> out;
  static const std::regex re("`([^`]*)`");
  for (auto it = std::sregex_iterator(cell.begin(), cell.end(), re); it != std::sregex_iterator(); ++it) {
    out.push_back((*it)[1]);
  }
  return out;
}

std::vector<std::string> Cells(const std::string& line) {
  std::vector<std::string> cells;
  std::stringstream in(line.substr(1));
  std::string cell;
  while (std::getline(in, cell, '|')) cells.push_back(cell);
  return cells;
}

// Rows of the table under `heading` (a "## ..." line), skipping the header and separator rows.
std::vector<std::vector<std::string>> TableAfter(const std::string& heading) {
  std::ifstream in(std::string(ANNEAL_SOURCE_DIR) + "/docs/job-spec.md");
  EXPECT_TRUE(in.good()) << "docs/job-spec.md not readable";
  std::vector<std::vector<std::string>> rows;
  std::string line;
  bool in_section = false;
  while (std::getline(in, line)) {
    if (line.rfind("## ", 0) == 0) in_section = line == heading;
    if (!in_section || line.rfind("| `", 0) != 0) continue;
    rows.push_back(Cells(line));
  }
  return rows;
}

std::vector<DocRow> KeyRows() {
  std::vector<DocRow> rows;
  for (const auto& cells : TableAfter("## Keys")) {
    EXPECT_GE(cells.size(), 6u) << "short row: " << cells[0];
    if (cells.size() < 6) continue;
    DocRow row{Backticked(cells[0]), Backticked(cells[1]), ""};
    auto defaults = Backticked(cells[3]);
    if (defaults.size() == 1) row.default_value = defaults[0];
    rows.push_back(row);
  }
  return rows;
}

constexpr const char* kBase = "model_name_or_path: /m\ndataset: d\noutput_dir: /o\n";

TEST(JobSpecDocs, EveryAcceptedKeyIsDocumentedAndNothingElse) {
  std::set<std::string> documented_nested, documented_flat, accepted_nested, accepted_flat;
  for (const DocRow& row : KeyRows()) {
    documented_nested.insert(row.nested.begin(), row.nested.end());
    documented_flat.insert(row.flat.begin(), row.flat.end());
  }
  for (const Field& f : KnownFields()) {
    accepted_nested.insert(f.nested);
    accepted_nested.insert(f.nested_aliases.begin(), f.nested_aliases.end());
    if (!f.flat.empty()) accepted_flat.insert(f.flat);
    accepted_flat.insert(f.flat_aliases.begin(), f.flat_aliases.end());
  }
  accepted_flat.insert("do_train");  // documented with kind: do_train: false means kind: eval
  for (const TranslatedKey& k : TranslatedKeys()) accepted_flat.insert(k.key);  // documented with their field
  EXPECT_EQ(documented_nested, accepted_nested);
  EXPECT_EQ(documented_flat, accepted_flat);
}

TEST(JobSpecDocs, EveryDocumentedSpellingIsAcceptedWithItsDocumentedDefault) {
  const JobSpec defaults;
  int checked = 0;
  for (const DocRow& row : KeyRows()) {
    ASSERT_FALSE(row.nested.empty());
    const Field* field = FindNestedField(row.nested[0]);
    ASSERT_NE(field, nullptr) << row.nested[0] << " is documented but not accepted";
    if (row.default_value.empty()) continue;
    // The documented default is the struct's default (written as ToYaml writes it).
    if (field->nested != "finetuning.lora_alpha") {
      EXPECT_EQ(NodeText(field->get(defaults)), row.default_value) << field->nested;
    }
    std::vector<std::string> spellings = row.nested;
    spellings.insert(spellings.end(), row.flat.begin(), row.flat.end());
    // Export keys belong to an export job, clean keys to a clean job.
    const char* base = field->section() == "export"  ? "kind: export\nmodel_name_or_path: /m\noutput_dir: /o\n"
                       : field->section() == "clean" ? "kind: clean\ndataset: d\noutput_dir: /o\n"
                                                     : kBase;
    for (const std::string& key : spellings) {
      if (key == "do_train" || FindTranslatedKey(key)) continue;
      std::string value = row.default_value;
      if (value.empty() || value == "null") value = "null";
      auto spec = ParseJobSpec(base, "job.yaml", {key + "=" + value});
      EXPECT_TRUE(spec.ok()) << key << "=" << value << ": " << spec.status().ToString();
      ++checked;
    }
  }
  EXPECT_GT(checked, 100);
}

// ---- the LLaMA-Factory keys table ---------------------------------------------------------------------------

struct LfRow {
  std::string key, handling, example;
};

std::vector<LfRow> LlamaFactoryRows() {
  std::vector<LfRow> rows;
  for (const auto& cells : TableAfter("## LLaMA-Factory keys")) {
    EXPECT_GE(cells.size(), 4u) << "short row: " << cells[0];
    if (cells.size() < 4) continue;
    auto key = Backticked(cells[0]), example = Backticked(cells[2]);
    EXPECT_EQ(key.size(), 1u) << cells[0];
    EXPECT_EQ(example.size(), 1u) << cells[0] << ": the example column holds one backticked value";
    if (key.size() != 1 || example.size() != 1) continue;
    std::string handling = cells[1];
    handling.erase(0, handling.find_first_not_of(' '));
    handling.erase(handling.find_last_not_of(' ') + 1);
    rows.push_back({key[0], handling, example[0]});
  }
  return rows;
}

// The backticked names of the paragraph that starts with `prefix`.
std::set<std::string> ListedAfter(const std::string& prefix) {
  std::ifstream in(std::string(ANNEAL_SOURCE_DIR) + "/docs/job-spec.md");
  std::string line;
  std::set<std::string> names;
  while (std::getline(in, line)) {
    if (line.rfind(prefix, 0) != 0) continue;
    for (const std::string& name : Backticked(line)) names.insert(name);
  }
  return names;
}

// Parses the base spec plus "key: example" with the repository as the working directory (deepspeed paths).
StatusOr<JobSpec> ParseRow(const LfRow& row) {
  const auto cwd = std::filesystem::current_path();
  std::filesystem::current_path(ANNEAL_SOURCE_DIR);
  std::string text;
  // LLaMA-Factory's export keys come in an export config (`llamafactory-cli export`), not in a train one.
  const bool export_key = row.key.rfind("export_", 0) == 0;
  const std::vector<const char*> base =
      export_key
          ? std::vector<const char*>{"model_name_or_path: /m\n", "adapter_name_or_path: /a\n", "export_dir: /e\n"}
          : std::vector<const char*>{"model_name_or_path: /m\n", "dataset: d\n", "output_dir: /o\n", "val_size: 0.1\n"};
  for (const char* line : base) {
    if (std::string(line).rfind(row.key + ":", 0) == 0) continue;  // the row's key replaces the base's
    if (row.key == "eval_dataset" && std::string(line).rfind("val_size:", 0) == 0) continue;  // one or the other
    text += line;
  }
  // Early stopping judges evaluations: those rows come with eval_strategy (HF's Trainer requires it too).
  if (row.key == "early_stopping_steps" || row.key == "load_best_model_at_end") text += "eval_strategy: steps\n";
  auto spec = ParseJobSpec(text + row.key + ": " + row.example + "\n", "job.yaml");
  std::filesystem::current_path(cwd);
  return spec;
}

bool WarnsAbout(const JobSpec& spec, const std::string& key, bool deprecation_only) {
  for (const std::string& w : spec.warnings) {
    if (w.find("'" + key + "'") == std::string::npos) continue;
    if (!deprecation_only || w.find("deprecated") == std::string::npos) return true;
  }
  return false;
}

TEST(JobSpecDocs, LlamaFactoryTableListsEveryFlatKeyTheParserKnows) {
  std::set<std::string> tabled, anneal_own = ListedAfter("Anneal's own flat keys");
  for (const LfRow& row : LlamaFactoryRows()) tabled.insert(row.key);
  std::set<std::string> known;
  for (const Field& f : KnownFields()) {
    if (!f.flat.empty()) known.insert(f.flat);
    known.insert(f.flat_aliases.begin(), f.flat_aliases.end());
  }
  known.insert("do_train");
  for (const TranslatedKey& k : TranslatedKeys()) known.insert(k.key);
  for (const RefusedKey& k : RefusedKeys()) known.insert(k.key);
  for (const IgnoredKey& k : IgnoredKeys()) known.insert(k.key);
  std::set<std::string> documented = tabled;
  documented.insert(anneal_own.begin(), anneal_own.end());
  EXPECT_EQ(documented, known);
  for (const std::string& key : anneal_own) EXPECT_EQ(tabled.count(key), 0u) << key << " is in both lists";
}

TEST(JobSpecDocs, LlamaFactoryKeysAreHandledAsTheTableSays) {
  int rows = 0;
  for (const LfRow& row : LlamaFactoryRows()) {
    ++rows;
    const std::string trace = row.key + ": " + row.example + " (" + row.handling + ")";
    SCOPED_TRACE(trace);
    auto spec = ParseRow(row);
    if (row.handling == "honoured") {
      EXPECT_TRUE(spec.ok()) << spec.status().ToString();
      if (!spec.ok()) continue;
      EXPECT_FALSE(WarnsAbout(*spec, row.key, /*deprecation_only=*/true));
      EXPECT_TRUE(FindField(row.key) || FindTranslatedKey(row.key) || row.key == "do_train");
    } else if (row.handling == "ignored") {
      EXPECT_TRUE(spec.ok()) << spec.status().ToString();
      if (!spec.ok()) continue;
      EXPECT_TRUE(WarnsAbout(*spec, row.key, false));
    } else if (row.handling == "refused") {
      EXPECT_FALSE(spec.ok());
      if (spec.ok()) continue;
      const std::string message = spec.status().message();
      EXPECT_NE(message.find("'" + row.key + "'"), std::string::npos) << message;
      // A refusal says what to use instead.
      EXPECT_TRUE(message.find("use ") != std::string::npos || message.find("remove") != std::string::npos) << message;
    } else {
      ADD_FAILURE() << "handling must be honoured, refused or ignored, got '" << row.handling << "'";
    }
  }
  EXPECT_GT(rows, 100);
}

TEST(JobSpecDocs, RefusedKeysWithLlamaFactorysDefaultChangeNothing) {
  JobSpec plain = *ParseJobSpec(kBase, "job.yaml");
  for (const RefusedKey& k : RefusedKeys()) {
    if (k.harmless.empty()) continue;
    auto spec = ParseJobSpec(std::string(kBase) + k.key + ": " + k.harmless + "\n", "job.yaml");
    ASSERT_TRUE(spec.ok()) << k.key << ": " << spec.status().ToString();
    EXPECT_EQ(*spec, plain) << k.key;
  }
}

}  // namespace
}  // namespace anneal::jobspec
