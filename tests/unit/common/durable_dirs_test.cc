// Replacing and deleting committed directories on a real filesystem (a temp dir).
#include "common/durable_dirs.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace anneal {
namespace {

namespace fs = std::filesystem;

struct TempDir {
  std::string path;
  TempDir() {
    path = (fs::temp_directory_path() / ("anneal-dirs-" + std::to_string(::getpid()) + "-" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name()))
               .string();
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

void Write(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path) << text;
}

std::string Read(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(ReplaceDirectory, RenamesWhenTheTargetIsNew) {
  TempDir t;
  Write(t.path + "/.tmp-checkpoint-5/a", "new");
  ASSERT_TRUE(ReplaceDirectory(t.path + "/.tmp-checkpoint-5", t.path + "/checkpoint-5").ok());
  EXPECT_EQ(Read(t.path + "/checkpoint-5/a"), "new");
  EXPECT_FALSE(fs::exists(t.path + "/.tmp-checkpoint-5"));
}

TEST(ReplaceDirectory, ExchangesWithAnExistingTargetAndRemovesTheOld) {
  TempDir t;
  Write(t.path + "/checkpoint-5/a", "old");
  Write(t.path + "/checkpoint-5/only-old", "x");
  Write(t.path + "/.tmp-checkpoint-5/a", "new");
  ASSERT_TRUE(ReplaceDirectory(t.path + "/.tmp-checkpoint-5", t.path + "/checkpoint-5/").ok());
  EXPECT_EQ(Read(t.path + "/checkpoint-5/a"), "new");
  EXPECT_FALSE(fs::exists(t.path + "/checkpoint-5/only-old"));
  EXPECT_FALSE(fs::exists(t.path + "/.tmp-checkpoint-5"));
}

TEST(ReplaceDirectory, AMissingStagedDirectoryIsAnErrorAndLeavesTheTarget) {
  TempDir t;
  Write(t.path + "/checkpoint-5/a", "old");
  Status st = ReplaceDirectory(t.path + "/.tmp-checkpoint-5", t.path + "/checkpoint-5");
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find(".tmp-checkpoint-5"), std::string::npos) << st.message();
  EXPECT_EQ(Read(t.path + "/checkpoint-5/a"), "old");
}

TEST(DeleteDirectoryMarked, RemovesTheTreeAndItsMark) {
  TempDir t;
  Write(t.path + "/checkpoint-1/sub/a", "x");
  ASSERT_TRUE(DeleteDirectoryMarked(t.path + "/checkpoint-1").ok());
  EXPECT_FALSE(fs::exists(t.path + "/checkpoint-1"));
  EXPECT_FALSE(fs::exists(DeletingMarkPath(t.path + "/checkpoint-1")));
  EXPECT_EQ(DeletingMarkPath(t.path + "/checkpoint-1/"), t.path + "/.deleting-checkpoint-1");
}

TEST(DeleteDirectoryMarked, AlreadyGoneIsSuccess) {
  TempDir t;
  EXPECT_TRUE(DeleteDirectoryMarked(t.path + "/checkpoint-9").ok());
  EXPECT_TRUE(DeleteDirectoryMarked(t.path + "/checkpoint-9").ok());
}

TEST(DeleteDirectoryMarked, FinishesADeleteACrashInterrupted) {
  TempDir t;
  Write(t.path + "/.deleting-checkpoint-1/a", "half");  // renamed, then the process died
  ASSERT_TRUE(DeleteDirectoryMarked(t.path + "/checkpoint-1").ok());
  EXPECT_FALSE(fs::exists(t.path + "/.deleting-checkpoint-1"));
}

TEST(CleanDirectoryLeftovers, RemovesMarksAndRestoresAReplacedDirectoryThatLostItsPlace) {
  TempDir t;
  Write(t.path + "/.deleting-checkpoint-1/a", "x");
  Write(t.path + "/.replaced-checkpoint-2/a", "old");  // crash between the two renames of a replace
  Write(t.path + "/.replaced-checkpoint-3/a", "older");
  Write(t.path + "/checkpoint-3/a", "new");  // crash after the second rename
  Write(t.path + "/checkpoint-4/a", "kept");
  ASSERT_TRUE(CleanDirectoryLeftovers(t.path).ok());
  EXPECT_FALSE(fs::exists(t.path + "/.deleting-checkpoint-1"));
  EXPECT_EQ(Read(t.path + "/checkpoint-2/a"), "old");
  EXPECT_EQ(Read(t.path + "/checkpoint-3/a"), "new");
  EXPECT_FALSE(fs::exists(t.path + "/.replaced-checkpoint-3"));
  EXPECT_EQ(Read(t.path + "/checkpoint-4/a"), "kept");
  EXPECT_TRUE(CleanDirectoryLeftovers(t.path + "/missing").ok()) << "no output directory yet: nothing to clean";
}

}  // namespace
}  // namespace anneal
