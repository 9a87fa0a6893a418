// Spool on a real temp directory: sequencing, cumulative acks, reopen after a restart, torn tails.
#include "agent/spool.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

namespace anneal::agent {
namespace {

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/anneal-spool-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

pb::AgentToCoordinator Metric(uint64_t step) {
  pb::AgentToCoordinator m;
  m.mutable_metric_batch()->set_job_id("j");
  m.mutable_metric_batch()->add_points()->set_step(step);
  return m;
}

TEST(Spool, AssignsIncreasingSeqsAndAcksCumulatively) {
  TempDir d;
  auto spool = Spool::Open(d.path);
  ASSERT_TRUE(spool.ok()) << spool.status().ToString();
  for (uint64_t i = 1; i <= 5; ++i) {
    auto m = Metric(i);
    auto seq = (*spool)->Append(&m);
    ASSERT_TRUE(seq.ok());
    EXPECT_EQ(*seq, i);
    EXPECT_EQ(ReportSeq(m), i);
  }
  ASSERT_TRUE((*spool)->Ack(3).ok());
  ASSERT_EQ((*spool)->Pending().size(), 2u);
  EXPECT_EQ(ReportSeq((*spool)->Pending().front()), 4u);
  ASSERT_TRUE((*spool)->Ack(2).ok());  // an old ack changes nothing
  EXPECT_EQ((*spool)->Pending().size(), 2u);
}

TEST(Spool, PendingReportsAndSeqSurviveReopen) {
  TempDir d;
  {
    auto spool = Spool::Open(d.path);
    ASSERT_TRUE(spool.ok());
    for (uint64_t i = 1; i <= 4; ++i) {
      auto m = Metric(i);
      ASSERT_TRUE((*spool)->Append(&m).ok());
    }
    ASSERT_TRUE((*spool)->Ack(2).ok());
  }
  auto spool = Spool::Open(d.path);
  ASSERT_TRUE(spool.ok());
  ASSERT_EQ((*spool)->Pending().size(), 2u);
  EXPECT_EQ((*spool)->Pending()[0].metric_batch().points(0).step(), 3u);
  EXPECT_EQ((*spool)->last_acked(), 2u);
  EXPECT_EQ((*spool)->next_seq(), 5u);
  // Everything acknowledged: the log is emptied but the counter goes on after a reopen.
  ASSERT_TRUE((*spool)->Ack(4).ok());
  EXPECT_EQ(std::filesystem::file_size(d.path + "/reports.log"), 0u);
  spool = Spool::Open(d.path);
  ASSERT_TRUE(spool.ok());
  EXPECT_TRUE((*spool)->Pending().empty());
  EXPECT_EQ((*spool)->next_seq(), 5u);
}

TEST(Spool, TornLastRecordIsCutOff) {
  TempDir d;
  {
    auto spool = Spool::Open(d.path);
    ASSERT_TRUE(spool.ok());
    for (uint64_t i = 1; i <= 2; ++i) {
      auto m = Metric(i);
      ASSERT_TRUE((*spool)->Append(&m).ok());
    }
  }
  {
    std::ofstream f(d.path + "/reports.log", std::ios::app | std::ios::binary);
    f.write("\x00\x00\x01\x00garbage", 11);  // a length of 256 with 7 bytes: torn
  }
  auto spool = Spool::Open(d.path);
  ASSERT_TRUE(spool.ok());
  EXPECT_EQ((*spool)->Pending().size(), 2u);
  auto m = Metric(3);
  auto seq = (*spool)->Append(&m);
  ASSERT_TRUE(seq.ok());
  EXPECT_EQ(*seq, 3u);
  spool = Spool::Open(d.path);
  ASSERT_TRUE(spool.ok());
  EXPECT_EQ((*spool)->Pending().size(), 3u);
}

TEST(Spool, RenumbersPendingAfterAWatermarkItNeverIssued) {
  TempDir d;
  auto spool = Spool::Open(d.path);
  ASSERT_TRUE(spool.ok());
  auto m = Metric(1);
  ASSERT_TRUE((*spool)->Append(&m).ok());
  // The coordinator has applied up to 100 from this node (the spool was wiped): continue after it.
  ASSERT_TRUE((*spool)->AdoptCoordinatorWatermark(100).ok());
  ASSERT_EQ((*spool)->Pending().size(), 1u);
  EXPECT_EQ(ReportSeq((*spool)->Pending().front()), 101u);
  auto n = Metric(2);
  EXPECT_EQ(*(*spool)->Append(&n), 102u);
  // A watermark inside the issued range is a plain ack.
  ASSERT_TRUE((*spool)->AdoptCoordinatorWatermark(101).ok());
  EXPECT_EQ((*spool)->Pending().size(), 1u);
}

TEST(Spool, RefusesUnsequencedBodies) {
  TempDir d;
  auto spool = Spool::Open(d.path);
  ASSERT_TRUE(spool.ok());
  pb::AgentToCoordinator hb;
  hb.mutable_heartbeat()->set_node_id("n");
  EXPECT_EQ((*spool)->Append(&hb).status().code(), StatusCode::kInvalidArgument);
}

TEST(Spool, AFullSpoolDropsNewMetricBatchesButNeverTaskOrCheckpointReports) {
  TempDir d;
  auto spool = Spool::Open(d.path, /*max_bytes=*/200);
  ASSERT_TRUE(spool.ok()) << spool.status().ToString();
  Spool& s = **spool;
  uint64_t accepted = 0;
  Status refused;
  for (uint64_t step = 1; step <= 50 && refused.ok(); ++step) {
    auto m = Metric(step);
    auto seq = s.Append(&m);
    if (seq.ok()) ++accepted;
    else refused = seq.status();
  }
  ASSERT_FALSE(refused.ok()) << "200 bytes cannot hold 50 metric batches";
  EXPECT_EQ(refused.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(refused.message().find("metric batch dropped"), std::string::npos) << refused.message();
  EXPECT_EQ(s.dropped_metric_batches(), 1u);
  EXPECT_LE(s.file_bytes(), 200u);
  EXPECT_EQ(s.next_seq(), accepted + 1) << "a dropped batch takes no seq: pending seqs stay contiguous";
  // A task report is kept beyond the limit.
  pb::AgentToCoordinator task;
  task.mutable_task_update()->mutable_status()->set_job_id("j");
  auto seq = s.Append(&task);
  ASSERT_TRUE(seq.ok()) << seq.status().ToString();
  EXPECT_EQ(*seq, accepted + 1);
  EXPECT_GT(s.file_bytes(), 200u);
  // Once acknowledged, the log is compacted and metric batches fit again.
  ASSERT_TRUE(s.Ack(*seq).ok());
  auto m = Metric(99);
  EXPECT_TRUE(s.Append(&m).ok());
  // The pending reports and their seqs survive a reopen with the limit.
  spool->reset();
  auto reopened = Spool::Open(d.path, 200);
  ASSERT_TRUE(reopened.ok());
  ASSERT_EQ((*reopened)->Pending().size(), 1u);
  EXPECT_EQ(ReportSeq((*reopened)->Pending().front()), *seq + 1);
}

// Seq space (found by the spool fuzz target's invariants, bench/fuzz/spool_fuzz.cc): a watermark of 2^64-1 made
// next_seq wrap around to 0, so new reports went out with seq 0 (unsequenced) and then 1, 2, ... below it.
TEST(Spool, RefusesACoordinatorWatermarkThatLeavesNoSeqSpace) {
  TempDir d;
  auto spool = Spool::Open(d.path);
  ASSERT_TRUE(spool.ok());
  auto m = Metric(1);
  ASSERT_TRUE((*spool)->Append(&m).ok());
  const Status st = (*spool)->AdoptCoordinatorWatermark(UINT64_MAX);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("acknowledged seq 18446744073709551615 leaves no room"), std::string::npos)
      << st.message();
  ASSERT_EQ((*spool)->Pending().size(), 1u);  // nothing renumbered, nothing dropped
  EXPECT_EQ(ReportSeq((*spool)->Pending().front()), 1u);
  auto next = Metric(2);
  auto seq = (*spool)->Append(&next);
  ASSERT_TRUE(seq.ok());
  EXPECT_EQ(*seq, 2u);
}

TEST(Spool, AnUnreadableAckedFileCountsAsZero) {
  for (const std::string bad : {"18446744073709551615\n", "99999999999999999999999\n", "12abc\n", "-3\n", ""}) {
    TempDir d;
    {
      auto spool = Spool::Open(d.path);
      ASSERT_TRUE(spool.ok());
      for (uint64_t i = 1; i <= 3; ++i) {
        auto m = Metric(i);
        ASSERT_TRUE((*spool)->Append(&m).ok());
      }
    }
    std::ofstream(d.path + "/acked", std::ios::trunc) << bad;
    auto spool = Spool::Open(d.path);
    ASSERT_TRUE(spool.ok()) << spool.status().ToString();
    EXPECT_EQ((*spool)->last_acked(), 0u) << bad;
    EXPECT_EQ((*spool)->Pending().size(), 3u) << bad;  // resent; the coordinator drops what it applied
    EXPECT_EQ((*spool)->next_seq(), 4u) << bad;
  }
}

TEST(Spool, ARecordWhoseSeqDoesNotIncreaseIsCutLikeATornTail) {
  TempDir d;
  {
    auto spool = Spool::Open(d.path);
    ASSERT_TRUE(spool.ok());
    for (uint64_t i = 1; i <= 2; ++i) {
      auto m = Metric(i);
      ASSERT_TRUE((*spool)->Append(&m).ok());
    }
  }
  // Append a copy of the first record (seq 1 again) and one with seq 2^63.
  std::ifstream in(d.path + "/reports.log", std::ios::binary);
  const std::string log((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const uint32_t first = (uint32_t(uint8_t(log[0])) << 24) | (uint32_t(uint8_t(log[1])) << 16) |
                         (uint32_t(uint8_t(log[2])) << 8) | uint32_t(uint8_t(log[3]));
  std::ofstream(d.path + "/reports.log", std::ios::app | std::ios::binary) << log.substr(0, 4 + first);
  auto spool = Spool::Open(d.path);
  ASSERT_TRUE(spool.ok());
  ASSERT_EQ((*spool)->Pending().size(), 2u);
  EXPECT_EQ(ReportSeq((*spool)->Pending().back()), 2u);
  EXPECT_EQ((*spool)->next_seq(), 3u);
  EXPECT_EQ(std::filesystem::file_size(d.path + "/reports.log"), log.size());  // the bad record is cut

  auto huge = Metric(9);
  SetReportSeq(&huge, kMaxReportSeq);
  const std::string body = huge.SerializeAsString();
  std::string frame(4, '\0');
  for (int i = 0; i < 4; ++i) frame[i] = static_cast<char>(body.size() >> (24 - 8 * i));
  spool->reset();
  std::ofstream(d.path + "/reports.log", std::ios::app | std::ios::binary) << frame + body;
  auto reopened = Spool::Open(d.path);
  ASSERT_TRUE(reopened.ok());
  EXPECT_EQ((*reopened)->next_seq(), 3u);  // 2^63 is no seq: cut, numbering continues after 2
}

}  // namespace
}  // namespace anneal::agent
