#include "trainer/data/clean_job.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace anneal::data {
namespace {

namespace fs = std::filesystem;

class CleanJobTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("clean_job_test_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "raw");
    std::ofstream rows(dir_ / "raw/rows.jsonl");
    for (int i = 0; i < 6; ++i)
      rows << R"({"instruction": "Name the color number )" << i << R"(.", "output": "It is color )" << i << "\"}\n";
    rows << R"({"instruction": "Name the color number 1.", "output": "It is color 1"})"
         << "\n";  // exact duplicate
    rows << R"({"instruction": "ok", "output": "ok"})"
         << "\n";  // too short
    std::ofstream(dir_ / "raw/dataset_info.json") << R"({"raw": {"file_name": "rows.jsonl"}})";
  }
  void TearDown() override { fs::remove_all(dir_); }

  jobspec::JobSpec Spec(const std::string& extra = "") {
    auto spec = jobspec::ParseJobSpec("kind: clean\ndataset: raw\ndataset_dir: " + (dir_ / "raw").string() +
                                          "\noutput_dir: " + (dir_ / "out").string() + "\n" + extra,
                                      "clean.yaml");
    EXPECT_TRUE(spec.ok()) << spec.status().ToString();
    return *spec;
  }
  static std::string Read(const fs::path& p) {
    std::ifstream in(p);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  fs::path dir_;
};

TEST_F(CleanJobTest, WritesTheDatasetItsInfoAndTheReportAndCountsByReason) {
  auto r = RunCleanJob(Spec("clean: {dataset_name: colors, min_chars: 10}\n"));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->counts["rows"], 8);
  EXPECT_EQ(r->counts["kept"], 6);
  EXPECT_EQ(r->counts["dropped"], 2);
  EXPECT_EQ(r->counts["dropped_exact_duplicate"], 1);
  EXPECT_EQ(r->counts["dropped_too_short"], 1);
  EXPECT_EQ(r->output_dir, (dir_ / "out").string());
  EXPECT_NE(r->summary.find("8 rows, 6 kept, 2 dropped"), std::string::npos) << r->summary;
  const auto info = nlohmann::json::parse(Read(dir_ / "out/dataset_info.json"));
  EXPECT_EQ(info.at("colors").at("file_name"), "colors.jsonl");
  EXPECT_EQ(info.at("colors").at("formatting"), "sharegpt");
  const auto report = nlohmann::json::parse(Read(dir_ / "out/clean_report.json"));
  EXPECT_EQ(report.at("kept"), 6);
  EXPECT_EQ(report.at("dropped").at("exact_duplicate"), 1);
  // The written dataset loads back through its dataset_info.json: the kept rows, in order.
  auto back = LoadDatasets({"colors"}, (dir_ / "out").string(), {}, nullptr);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ASSERT_EQ(back->size(), 6u);
  EXPECT_EQ((*back)[1].messages[0].content, "Name the color number 1.");
}

TEST_F(CleanJobTest, OptionsMapOneToOneAndBadOptionsFailTheJob) {
  jobspec::CleanSpec c;
  c.normalize = "NFKC";
  c.languages = {"en"};
  c.language_confidence = 0.7;
  c.minhash_seed = 7;
  c.near_dedup = true;
  const CleanOptions o = CleanOptionsOf(c);
  EXPECT_EQ(o.normalize, "NFKC");
  EXPECT_EQ(o.languages, std::vector<std::string>{"en"});
  EXPECT_DOUBLE_EQ(o.language_confidence, 0.7);
  EXPECT_EQ(o.seed, 7u);
  EXPECT_TRUE(o.near_dedup);
  // scripts are checked when the job runs (ICU), naming the script.
  auto bad = RunCleanJob(Spec("clean: {scripts: [Klingonish]}\n"));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("Klingonish"), std::string::npos) << bad.status().message();
  jobspec::JobSpec missing = Spec();
  missing.data.dataset = {"nowhere"};
  auto gone = RunCleanJob(missing);
  ASSERT_FALSE(gone.ok());
  EXPECT_NE(gone.status().message().find("nowhere"), std::string::npos) << gone.status().message();
}

}  // namespace
}  // namespace anneal::data
