// Rank logs: rotation by size and reads at logical offsets across rotations.
#include "agent/rank_logs.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

namespace anneal::agent {
namespace {

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/anneal-logs-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

TEST(RankLogs, ReadsFromAnOffset) {
  TempDir d;
  const std::string log = d.path + "/rank-0.log";
  std::ofstream(log) << "hello world";
  auto s = ReadLog(log, 6, 100);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->data, "world");
  EXPECT_EQ(s->offset, 6u);
  EXPECT_EQ(s->end, 11u);
  auto past = ReadLog(log, 50, 100);
  ASSERT_TRUE(past.ok());
  EXPECT_EQ(past->data, "");
  EXPECT_EQ(past->offset, 11u);
  EXPECT_EQ(ReadLog(d.path + "/rank-9.log", 0, 10).status().code(), StatusCode::kNotFound);
}

TEST(RankLogs, RotationKeepsLogicalOffsets) {
  TempDir d;
  const std::string log = d.path + "/rank-0.log";
  std::ofstream(log) << "0123456789";
  ASSERT_TRUE(RotateLogIfLarger(log, 100).ok());
  EXPECT_FALSE(std::filesystem::exists(log + ".1")) << "small logs are not rotated";
  ASSERT_TRUE(RotateLogIfLarger(log, 5).ok());
  EXPECT_EQ(std::filesystem::file_size(log), 0u);
  std::ofstream(log, std::ios::app) << "abcdef";
  // Logical stream: "0123456789abcdef".
  auto tail = ReadLog(log, 12, 100);
  ASSERT_TRUE(tail.ok());
  EXPECT_EQ(tail->data, "cdef");
  EXPECT_EQ(tail->end, 16u);
  auto old = ReadLog(log, 3, 100);
  ASSERT_TRUE(old.ok());
  EXPECT_EQ(old->data, "3456789");  // up to the rotation point; the next read continues at 10
  auto next = ReadLog(log, old->offset + old->data.size(), 100);
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(next->data, "abcdef");
  // A second rotation drops the oldest bytes: a read below what is kept starts at the oldest byte.
  ASSERT_TRUE(RotateLogIfLarger(log, 5).ok());
  auto gone = ReadLog(log, 0, 100);
  ASSERT_TRUE(gone.ok());
  EXPECT_EQ(gone->offset, 10u);
  EXPECT_EQ(gone->data, "abcdef");
}

}  // namespace
}  // namespace anneal::agent
