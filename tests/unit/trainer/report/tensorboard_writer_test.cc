// TensorBoardWriter (trainer/report/tensorboard_writer.h): real files in a temp dir, read back with the TFRecord
// parser and the Event message; the resume rule (one run, each step once) edge by edge.
#include "trainer/report/tensorboard_writer.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "common/fsutil.h"
#include "trainer/report/tensorboard_event.pb.h"
#include "trainer/report/tfrecord.h"

namespace anneal::report {
namespace {

namespace fs = std::filesystem;

class TensorBoardWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::temp_directory_path() / ("tbw-" + std::to_string(::getpid()) + "-" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name()))
               .string();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Every event of every file in run_dir, in file order.
  static std::vector<tensorboard::Event> ReadRun(const std::string& run_dir) {
    std::vector<tensorboard::Event> events;
    for (const std::string& file : EventFiles(run_dir)) {
      auto records = ParseRecords(*ReadFile(file));
      EXPECT_TRUE(records.ok()) << records.status().ToString();
      for (const std::string& data : *records) {
        tensorboard::Event e;
        EXPECT_TRUE(e.ParseFromString(data));
        events.push_back(e);
      }
    }
    return events;
  }
  static std::vector<int64_t> SummarySteps(const std::vector<tensorboard::Event>& events) {
    std::vector<int64_t> steps;
    for (const auto& e : events) {
      if (e.has_summary()) steps.push_back(e.step());
    }
    return steps;
  }
  static void WriteSteps(TensorBoardWriter& w, int64_t from, int64_t to, double offset = 0) {
    for (int64_t s = from; s <= to; ++s) {
      ASSERT_TRUE(w.Add(s, {{"train/loss", offset + 1.0 / static_cast<double>(s)}}).ok());
    }
  }

  std::string dir_;
};

TEST_F(TensorBoardWriterTest, FirstRecordIsFileVersionThenOneEventPerStepWithEveryTag) {
  auto w = TensorBoardWriter::Open(dir_, 0);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  ASSERT_TRUE((*w)->Add(10, {{"train/loss", 2.5}, {"train/learning_rate", 1e-4}, {"train/grad_norm", 0.75}}).ok());
  ASSERT_TRUE((*w)->Add(20, {{"eval/loss", 2.25}}).ok());
  EXPECT_EQ(fs::path((*w)->run_dir()).parent_path(), fs::path(dir_) / "runs");
  EXPECT_EQ(fs::path((*w)->path()).filename().string().rfind("events.out.tfevents.", 0), 0u);

  const auto events = ReadRun((*w)->run_dir());  // flushed: readable while the writer is open
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].file_version(), "brain.Event:2");
  EXPECT_GT(events[0].wall_time(), 1.6e9);
  EXPECT_EQ(events[1].step(), 10);
  ASSERT_EQ(events[1].summary().value_size(), 3);
  EXPECT_EQ(events[1].summary().value(0).tag(), "train/loss");
  EXPECT_EQ(events[1].summary().value(0).simple_value(), 2.5f);
  EXPECT_EQ(events[1].summary().value(1).tag(), "train/learning_rate");
  EXPECT_EQ(events[1].summary().value(1).simple_value(), 1e-4f);
  EXPECT_EQ(events[2].step(), 20);
  EXPECT_EQ(events[2].summary().value(0).tag(), "eval/loss");
}

TEST_F(TensorBoardWriterTest, ResumeKeepsStepsUpToTheCheckpointAndNeverShowsAStepTwice) {
  std::string run_dir;
  {
    auto first = TensorBoardWriter::Open(dir_, 0);
    ASSERT_TRUE(first.ok());
    run_dir = (*first)->run_dir();
    WriteSteps(**first, 1, 6);  // preempted after step 6; its last checkpoint is step 4
  }
  auto second = TensorBoardWriter::Open(dir_, 4);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_EQ((*second)->run_dir(), run_dir);  // the same TensorBoard run
  WriteSteps(**second, 5, 8, /*offset=*/100);

  const auto files = EventFiles(run_dir);
  ASSERT_EQ(files.size(), 1u);  // the earlier file's steps were copied and it was removed
  const auto events = ReadRun(run_dir);
  EXPECT_EQ(events[0].file_version(), "brain.Event:2");
  EXPECT_EQ(SummarySteps(events), (std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(events[4].summary().value(0).simple_value(), 0.25f);          // step 4: the first attempt's
  EXPECT_EQ(events[5].summary().value(0).simple_value(), 100.0f + 0.2f);  // step 5: the resumed attempt's
}

TEST_F(TensorBoardWriterTest, SecondResumeKeepsBothEarlierAttempts) {
  { WriteSteps(**TensorBoardWriter::Open(dir_, 0), 1, 3); }
  { WriteSteps(**TensorBoardWriter::Open(dir_, 2), 3, 5, 10); }
  auto third = TensorBoardWriter::Open(dir_, 4);
  ASSERT_TRUE(third.ok());
  WriteSteps(**third, 5, 6, 20);
  const auto events = ReadRun((*third)->run_dir());
  EXPECT_EQ(SummarySteps(events), (std::vector<int64_t>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(events[3].summary().value(0).simple_value(), 10.0f + 1.0f / 3);  // step 3 from the second attempt
  EXPECT_EQ(events[5].summary().value(0).simple_value(), 20.0f + 0.2f);      // step 5 from the third
}

TEST_F(TensorBoardWriterTest, FreshStartMakesANewRunAndLeavesTheOldOne) {
  std::string old_run;
  {
    auto first = TensorBoardWriter::Open(dir_, 0);
    old_run = (*first)->run_dir();
    WriteSteps(**first, 1, 2);
  }
  fs::rename(old_run, dir_ + "/runs/older_run");  // names carry the second: make them differ
  auto again = TensorBoardWriter::Open(dir_, 0);
  ASSERT_TRUE(again.ok());
  EXPECT_NE((*again)->run_dir(), dir_ + "/runs/older_run");
  EXPECT_EQ(SummarySteps(ReadRun(dir_ + "/runs/older_run")), (std::vector<int64_t>{1, 2}));
  EXPECT_TRUE(SummarySteps(ReadRun((*again)->run_dir())).empty());
}

TEST_F(TensorBoardWriterTest, AResumeInterruptedBeforeTheOldFilesWentTakesEachStepOnce) {
  std::string path;
  {
    auto first = TensorBoardWriter::Open(dir_, 0);
    WriteSteps(**first, 1, 4);
    path = (*first)->path();
  }
  // The copy took its final name (it sorts after the original) and the original was not removed yet.
  fs::copy_file(path, path + ".copy");
  auto second = TensorBoardWriter::Open(dir_, 3);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_EQ(SummarySteps(ReadRun((*second)->run_dir())), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(EventFiles((*second)->run_dir()).size(), 1u);
}

TEST_F(TensorBoardWriterTest, TornEarlierFileKeepsItsWholeRecords) {
  std::string path;
  {
    auto first = TensorBoardWriter::Open(dir_, 0);
    WriteSteps(**first, 1, 3);
    path = (*first)->path();
  }
  fs::resize_file(path, fs::file_size(path) - 5);  // killed in the middle of step 3's record
  auto second = TensorBoardWriter::Open(dir_, 3);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_EQ(SummarySteps(ReadRun((*second)->run_dir())), (std::vector<int64_t>{1, 2}));
}

TEST_F(TensorBoardWriterTest, CorruptEarlierFileIsDataLossNamingIt) {
  std::string path;
  {
    auto first = TensorBoardWriter::Open(dir_, 0);
    WriteSteps(**first, 1, 3);
    path = (*first)->path();
  }
  std::string bytes = *ReadFile(path);
  bytes[bytes.size() - 8] ^= 0x10;
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  auto second = TensorBoardWriter::Open(dir_, 2);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(second.status().message().find(path), std::string::npos) << second.status().message();
  EXPECT_EQ(EventFiles(fs::path(path).parent_path().string()).size(), 1u);  // nothing was removed
}

TEST_F(TensorBoardWriterTest, LeftoverPendingCopyIsRemoved) {
  std::string run_dir;
  {
    auto first = TensorBoardWriter::Open(dir_, 0);
    WriteSteps(**first, 1, 2);
    run_dir = (*first)->run_dir();
  }
  std::ofstream(run_dir + "/.anneal-pending.events.out.tfevents.1.h.1.0") << "partial";
  auto second = TensorBoardWriter::Open(dir_, 2);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_FALSE(fs::exists(run_dir + "/.anneal-pending.events.out.tfevents.1.h.1.0"));
  EXPECT_EQ(SummarySteps(ReadRun(run_dir)), (std::vector<int64_t>{1, 2}));
}

TEST_F(TensorBoardWriterTest, UnwritableOutputDirIsAnErrorNamingThePath) {
  std::ofstream(dir_ + "/file") << "x";
  auto w = TensorBoardWriter::Open(dir_ + "/file", 0);
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.status().message().find(dir_ + "/file/runs"), std::string::npos) << w.status().message();
}

}  // namespace
}  // namespace anneal::report
