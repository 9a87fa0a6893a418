#include "trainer/data/token_cache.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>

#include "tests/unit/data/test_dir.h"

namespace anneal::data {
namespace {

using testing::TempDir;

Status WriteThree(TokenCacheWriter& w) {
  std::vector<int32_t> a = {1, 2, 3}, la = {-100, 2, 3}, b = {7}, lb = {7};
  RETURN_IF_ERROR(w.Add(a, la));
  RETURN_IF_ERROR(w.Add(b, lb));
  return w.Add(std::vector<int32_t>{}, std::vector<int32_t>{});
}

TEST(TokenCache, BuildsOnceThenReopensMapped) {
  TempDir d;
  std::string key = CacheKey({"tok", "qwen", "data"});
  int builds = 0;
  auto build = [&](TokenCacheWriter& w) { ++builds; return WriteThree(w); };
  auto c = TokenCache::OpenOrBuild(d.path(), key, "test", build);
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_TRUE((*c)->built_here());
  EXPECT_EQ((*c)->size(), 3);
  EXPECT_EQ((*c)->num_tokens(), 4);
  auto ids = (*c)->input_ids(0);
  EXPECT_EQ(std::vector<int32_t>(ids.begin(), ids.end()), (std::vector<int32_t>{1, 2, 3}));
  auto labels = (*c)->labels(0);
  EXPECT_EQ(labels[0], -100);
  EXPECT_EQ((*c)->input_ids(2).size(), 0u);
  auto again = TokenCache::OpenOrBuild(d.path(), key, "test", build);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE((*again)->built_here());
  EXPECT_EQ(builds, 1);
  // No temp directories are left behind.
  for (auto& e : std::filesystem::directory_iterator(d.path()))
    EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos);
}

TEST(TokenCache, KeyChangesWithAnyPart) {
  EXPECT_NE(CacheKey({"a", "bc"}), CacheKey({"ab", "c"}));
  EXPECT_EQ(CacheKey({"a", "b"}), CacheKey({"a", "b"}));
  EXPECT_EQ(CacheKey({"a"}).size(), 16u);
}

TEST(TokenCache, ConcurrentBuildersBuildOnce) {
  TempDir d;
  std::string key = CacheKey({"concurrent"});
  std::atomic<int> builds{0};
  auto build = [&](TokenCacheWriter& w) {
    ++builds;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    return WriteThree(w);
  };
  std::vector<std::thread> ranks;
  std::atomic<int> ok{0};
  for (int r = 0; r < 4; ++r)
    ranks.emplace_back([&] {
      auto c = TokenCache::OpenOrBuild(d.path(), key, "", build, 10);
      if (c.ok() && (*c)->size() == 3) ++ok;
    });
  for (auto& t : ranks) t.join();
  EXPECT_EQ(ok.load(), 4);
  EXPECT_EQ(builds.load(), 1);
}

TEST(TokenCache, SeparateProcessesBuildOnceAndShare) {
  // Real processes (ranks of one node): exactly one builds, the others wait and open the same cache.
  TempDir d;
  std::string key = CacheKey({"processes"});
  std::string builds = d.path() + "/builds.log";
  std::vector<pid_t> children;
  for (int r = 0; r < 3; ++r) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      auto c = TokenCache::OpenOrBuild(d.path(), key, "", [&](TokenCacheWriter& w) {
        std::ofstream(builds, std::ios::app) << ::getpid() << "\n";
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
        return WriteThree(w);
      }, 20);
      ::_exit(c.ok() && (*c)->size() == 3 ? 0 : 1);
    }
    children.push_back(pid);
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  int ok = 0;
  for (pid_t pid : children) {
    int status = 0;
    while (::waitpid(pid, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) ++ok;
  }
  EXPECT_EQ(ok, 3);
  std::ifstream in(builds);
  int lines = 0;
  for (std::string l; std::getline(in, l);) ++lines;
  EXPECT_EQ(lines, 1);
}

TEST(TokenCache, WaiterTimesOutWithClearError) {
  TempDir d;
  std::string key = CacheKey({"slow"});
  std::atomic<bool> release{false};
  std::thread builder([&] {
    auto c = TokenCache::OpenOrBuild(d.path(), key, "", [&](TokenCacheWriter& w) {
      while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      return WriteThree(w);
    });
    EXPECT_TRUE(c.ok());
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  auto waiter = TokenCache::OpenOrBuild(d.path(), key, "", WriteThree, 0.3);
  release = true;
  builder.join();
  ASSERT_FALSE(waiter.ok());
  EXPECT_EQ(waiter.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(waiter.status().message().find(".lock"), std::string::npos) << waiter.status().message();
}

TEST(TokenCache, FailedBuildLeavesNothingAndTruncatedCacheIsDetected) {
  TempDir d;
  std::string key = CacheKey({"fail"});
  auto c = TokenCache::OpenOrBuild(d.path(), key, "", [](TokenCacheWriter&) { return InternalError("boom"); });
  ASSERT_FALSE(c.ok());
  EXPECT_FALSE(std::filesystem::exists(std::filesystem::path(d.path()) / key));
  ASSERT_TRUE(TokenCache::OpenOrBuild(d.path(), key, "", WriteThree).ok());
  std::filesystem::resize_file(std::filesystem::path(d.path()) / key / "input_ids.bin", 4);
  auto broken = TokenCache::Open(d.path(), key);
  ASSERT_FALSE(broken.ok());
  EXPECT_EQ(broken.status().code(), StatusCode::kDataLoss);
}

}  // namespace
}  // namespace anneal::data
