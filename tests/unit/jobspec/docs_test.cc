// docs/job-spec.md is checked against the validator: every documented key is accepted (with its documented
// default), every accepted key is documented, and the documented defaults are the real ones.
#include <gtest/gtest.h>

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
    for (const std::string& key : spellings) {
      if (key == "do_train") continue;
      std::string value = row.default_value;
      if (value.empty() || value == "null") value = "null";
      auto spec = ParseJobSpec(kBase, "job.yaml", {key + "=" + value});
      EXPECT_TRUE(spec.ok()) << key << "=" << value << ": " << spec.status().ToString();
      ++checked;
    }
  }
  EXPECT_GT(checked, 100);
}

TEST(JobSpecDocs, IgnoredKeysTableMatchesTheParser) {
  std::set<std::string> documented, accepted;
  for (const auto& cells : TableAfter("## Accepted and ignored LLaMA-Factory keys")) {
    for (const auto& name : Backticked(cells[0])) documented.insert(name);
  }
  for (const IgnoredKey& k : IgnoredKeys()) accepted.insert(k.key);
  EXPECT_EQ(documented, accepted);
  for (const std::string& key : documented) {
    auto spec = ParseJobSpec(std::string(kBase) + key + ": 1\n", "job.yaml");
    ASSERT_TRUE(spec.ok()) << key << ": " << spec.status().ToString();
    ASSERT_EQ(spec->warnings.size(), 1u) << key;
  }
}

}  // namespace
}  // namespace anneal::jobspec
