// Checkpoint deletion confined to the output directory, on a real temp tree.
#include "agent/checkpoint_files.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

namespace anneal::agent {
namespace {

namespace fs = std::filesystem;

struct Tree {
  std::string root;
  std::string out;
  Tree() {
    char tmpl[] = "/tmp/anneal-ckdel-XXXXXX";
    root = ::mkdtemp(tmpl);
    out = root + "/out";
    fs::create_directories(out + "/checkpoint-1");
    std::ofstream(out + "/checkpoint-1/w.bin") << "w";
    fs::create_directories(root + "/other");
    std::ofstream(root + "/other/keep") << "k";
  }
  ~Tree() { fs::remove_all(root); }
};

TEST(CheckpointDeletion, DeletesInsideTheOutputDir) {
  Tree t;
  ASSERT_TRUE(DeleteCheckpointDir(t.out + "/checkpoint-1", t.out).ok());
  EXPECT_FALSE(fs::exists(t.out + "/checkpoint-1"));
  EXPECT_TRUE(DeleteCheckpointDir(t.out + "/checkpoint-1", t.out).ok()) << "already gone is success";
  EXPECT_TRUE(DeleteCheckpointDir(t.out + "/checkpoint-2/", t.out + "/").ok());
}

TEST(CheckpointDeletion, RefusesEscapes) {
  Tree t;
  EXPECT_EQ(DeleteCheckpointDir(t.root + "/other", t.out).code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(DeleteCheckpointDir(t.out + "/../other", t.out).code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(DeleteCheckpointDir(t.out, t.out).code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(DeleteCheckpointDir("relative/checkpoint-1", t.out).code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(DeleteCheckpointDir(t.out + "/checkpoint-1", "/").code(), StatusCode::kPermissionDenied);
  // A prefix that is not a parent directory: /x/out-evil is not inside /x/out.
  fs::create_directories(t.root + "/out-evil");
  EXPECT_EQ(DeleteCheckpointDir(t.root + "/out-evil", t.out).code(), StatusCode::kPermissionDenied);
  // Symlinks: one escaping the output directory is refused, even deeper in the path.
  fs::create_directory_symlink(t.root + "/other", t.out + "/checkpoint-9");
  Status st = DeleteCheckpointDir(t.out + "/checkpoint-9", t.out);
  EXPECT_EQ(st.code(), StatusCode::kPermissionDenied);
  EXPECT_NE(st.message().find("outside the output directory"), std::string::npos) << st.message();
  EXPECT_EQ(DeleteCheckpointDir(t.out + "/checkpoint-9/keep", t.out).code(), StatusCode::kPermissionDenied);
  EXPECT_TRUE(fs::exists(t.root + "/other/keep"));
  EXPECT_TRUE(fs::exists(t.out + "/checkpoint-1/w.bin"));
}

TEST(CheckpointDeletion, SymlinksInsideACheckpointAreNotFollowed) {
  Tree t;
  fs::create_directory_symlink(t.root + "/other", t.out + "/checkpoint-1/link");
  ASSERT_TRUE(DeleteCheckpointDir(t.out + "/checkpoint-1", t.out).ok());
  EXPECT_TRUE(fs::exists(t.root + "/other/keep"));
}

}  // namespace
}  // namespace anneal::agent
