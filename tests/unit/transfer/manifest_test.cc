#include "transfer/manifest.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <filesystem>

#include "tests/unit/transfer/transfer_test_support.h"

namespace anneal::transfer {
namespace {
namespace fs = std::filesystem;
using testing::RandomBytes;
using testing::TempDir;
using testing::WriteBytes;

void MakeTree(const std::string& root) {
  WriteBytes(root + "/config.json", "{\"a\": 1}");
  WriteBytes(root + "/weights/part-0.bin", RandomBytes(5000, 1));
  WriteBytes(root + "/weights/deep/part-1.bin", RandomBytes(300, 2));
  WriteBytes(root + "/.hidden", "dot");
  WriteBytes(root + "/empty", "");
}

TEST(Manifest, ListsEveryFileSortedWithDotFilesAndEmptyFiles) {
  TempDir t;
  MakeTree(t.path + "/m");
  auto m = BuildManifest(t.path + "/m", nullptr);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  std::vector<std::string> paths;
  for (const auto& f : m->files) paths.push_back(f.path);
  EXPECT_EQ(paths, (std::vector<std::string>{".hidden", "config.json", "empty", "weights/deep/part-1.bin",
                                             "weights/part-0.bin"}));
  EXPECT_EQ(m->total_bytes(), 3u + 8u + 0u + 300u + 5000u);
  EXPECT_EQ(m->files[2].sha256, Sha256Hex(""));
}

TEST(Manifest, IdIsStableAcrossCopiesAndChangesWithContentOrNames) {
  TempDir t;
  MakeTree(t.path + "/a");
  MakeTree(t.path + "/b");
  const std::string id = BuildManifest(t.path + "/a", nullptr)->Id();
  EXPECT_EQ(id.size(), 64u);
  EXPECT_EQ(BuildManifest(t.path + "/a", nullptr)->Id(), id);
  EXPECT_EQ(BuildManifest(t.path + "/b", nullptr)->Id(), id) << "the id names content, not location";
  WriteBytes(t.path + "/b/config.json", "{\"a\": 2}");  // same size, one byte differs
  EXPECT_NE(BuildManifest(t.path + "/b", nullptr)->Id(), id);
  MakeTree(t.path + "/c");
  fs::rename(t.path + "/c/empty", t.path + "/c/empty2");
  EXPECT_NE(BuildManifest(t.path + "/c", nullptr)->Id(), id);
}

TEST(Manifest, ASingleFileRootHasOneEntryNamedAfterTheFile) {
  TempDir t;
  WriteBytes(t.path + "/model.gguf", "weights");
  auto m = BuildManifest(t.path + "/model.gguf", nullptr);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_EQ(m->files.size(), 1u);
  EXPECT_EQ(m->files[0].path, "model.gguf");
  EXPECT_EQ(m->files[0].sha256, Sha256Hex("weights"));
}

TEST(Manifest, ASymlinkInsideTheRootIsListedAsTheFileItPointsTo) {
  TempDir t;
  MakeTree(t.path + "/m");
  fs::create_symlink("config.json", t.path + "/m/alias.json");
  auto m = BuildManifest(t.path + "/m", nullptr);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_EQ(m->files[1].path, "alias.json");
  EXPECT_EQ(m->files[1].sha256, m->files[2].sha256);
}

TEST(Manifest, ASymlinkOutOfTheRootIsRefusedNamingIt) {
  TempDir t;
  MakeTree(t.path + "/m");
  WriteBytes(t.path + "/secret", "private");
  fs::create_symlink(t.path + "/secret", t.path + "/m/weights/escape");
  auto m = BuildManifest(t.path + "/m", nullptr);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(m.status().message().find("weights/escape"), std::string::npos) << m.status().message();
  EXPECT_NE(m.status().message().find("outside the root"), std::string::npos) << m.status().message();
}

TEST(Manifest, ADanglingSymlinkAndAFifoAreRefusedNamingThePath) {
  TempDir t;
  MakeTree(t.path + "/m");
  fs::create_symlink(t.path + "/m/nothing", t.path + "/m/dangling");
  auto dangling = BuildManifest(t.path + "/m", nullptr);
  ASSERT_FALSE(dangling.ok());
  EXPECT_NE(dangling.status().message().find("dangling"), std::string::npos) << dangling.status().message();
  fs::remove(t.path + "/m/dangling");
  ASSERT_EQ(::mkfifo((t.path + "/m/pipe").c_str(), 0600), 0);
  auto fifo = BuildManifest(t.path + "/m", nullptr);
  ASSERT_FALSE(fifo.ok());
  EXPECT_EQ(fifo.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(fifo.status().message().find("pipe"), std::string::npos) << fifo.status().message();
}

TEST(Manifest, AFileNameThatIsNotUtf8IsRefusedNamingIt) {
  TempDir t;
  MakeTree(t.path + "/m");
  WriteBytes(t.path + "/m/bad\xff\xfe.bin", "x");
  auto m = BuildManifest(t.path + "/m", nullptr);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(m.status().message().find("UTF-8"), std::string::npos) << m.status().message();
}

TEST(Manifest, SymlinkLoopsAreRefusedQuickly) {
  TempDir t;
  fs::create_directories(t.path + "/m/d");
  fs::create_symlink(".", t.path + "/m/d/self");
  fs::create_symlink("..", t.path + "/m/d/parent");
  auto m = BuildManifest(t.path + "/m", nullptr);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(m.status().message().find("symlink loop"), std::string::npos) << m.status().message();
}

TEST(Manifest, AMissingRootIsNotFound) {
  auto m = BuildManifest("/nonexistent/anneal-model", nullptr);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kNotFound);
  EXPECT_NE(m.status().message().find("/nonexistent/anneal-model"), std::string::npos);
}

TEST(HashCache, HashesEachFileOnceAndAgainOnlyWhenItChanges) {
  TempDir t;
  MakeTree(t.path + "/m");
  HashCache cache;
  const std::string first = BuildManifest(t.path + "/m", &cache)->Id();
  EXPECT_EQ(cache.hashes_computed(), 5u);
  EXPECT_EQ(BuildManifest(t.path + "/m", &cache)->Id(), first);
  EXPECT_EQ(cache.hashes_computed(), 5u) << "an unchanged tree is not read again";

  // Same size, new bytes, a different mtime: noticed.
  WriteBytes(t.path + "/m/config.json", "{\"a\": 9}");
  struct timeval times[2] = {{1000, 0}, {1000, 0}};
  ASSERT_EQ(::utimes((t.path + "/m/config.json").c_str(), times), 0);
  const std::string second = BuildManifest(t.path + "/m", &cache)->Id();
  EXPECT_EQ(cache.hashes_computed(), 6u);
  EXPECT_NE(second, first);
  // A new size (mtime set back to the same value): noticed too.
  WriteBytes(t.path + "/m/config.json", "{\"a\": 10}");
  ASSERT_EQ(::utimes((t.path + "/m/config.json").c_str(), times), 0);
  EXPECT_NE(BuildManifest(t.path + "/m", &cache)->Id(), second);
  EXPECT_EQ(cache.hashes_computed(), 7u);
}

TEST(HashCache, ARememberedHashIsTrustedUntilTheFileChanges) {
  TempDir t;
  WriteBytes(t.path + "/blob", "abc");
  HashCache cache;
  ASSERT_TRUE(cache.Remember(t.path + "/blob", "remembered").ok());
  EXPECT_EQ(*cache.Sha256(t.path + "/blob"), "remembered") << "the caller hashed it: not read again";
  EXPECT_EQ(cache.hashes_computed(), 0u);
  WriteBytes(t.path + "/blob", "abd");
  struct timeval times[2] = {{1000, 0}, {1000, 0}};
  ASSERT_EQ(::utimes((t.path + "/blob").c_str(), times), 0);
  EXPECT_NE(*cache.Sha256(t.path + "/blob"), "remembered");
  EXPECT_EQ(cache.hashes_computed(), 1u);
  EXPECT_EQ(cache.Remember(t.path + "/gone", "x").code(), StatusCode::kNotFound);
}

TEST(HashCache, APersistedCacheSparesARestartTheHashing) {
  TempDir t;
  MakeTree(t.path + "/m");
  const std::string persist = t.path + "/hash-cache.json";
  {
    HashCache cache(persist);
    ASSERT_TRUE(BuildManifest(t.path + "/m", &cache).ok());
    EXPECT_EQ(cache.hashes_computed(), 5u);
  }
  HashCache restarted(persist);
  EXPECT_EQ(restarted.size(), 5u);
  ASSERT_TRUE(BuildManifest(t.path + "/m", &restarted).ok());
  EXPECT_EQ(restarted.hashes_computed(), 0u);
  struct stat st {};
  ASSERT_EQ(::stat(persist.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST(HashCache, ARestartDropsEntriesOfFilesThatAreGone) {
  TempDir t;
  MakeTree(t.path + "/m");
  const std::string persist = t.path + "/hash-cache.json";
  {
    HashCache cache(persist);
    ASSERT_TRUE(BuildManifest(t.path + "/m", &cache).ok());
  }
  fs::remove_all(t.path + "/m/weights");
  HashCache restarted(persist);
  EXPECT_EQ(restarted.size(), 3u);
}

TEST(HashCache, ACorruptPersistFileStartsEmpty) {
  TempDir t;
  WriteBytes(t.path + "/hash-cache.json", "{not json");
  WriteBytes(t.path + "/f", "x");
  HashCache cache(t.path + "/hash-cache.json");
  EXPECT_EQ(cache.size(), 0u);
  auto sha = cache.Sha256(t.path + "/f");
  ASSERT_TRUE(sha.ok());
  EXPECT_EQ(*sha, Sha256Hex("x"));
}

TEST(ManifestJson, RoundTrips) {
  TempDir t;
  MakeTree(t.path + "/m");
  auto m = BuildManifest(t.path + "/m", nullptr);
  auto back = ManifestFromJson(ManifestToJson(*m));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, *m);
  EXPECT_EQ(back->Id(), m->Id());
}

TEST(ManifestJson, ForgedPathsAndEntriesAreRefusedNamingTheEntry) {
  const std::string sha = Sha256Hex("x");
  auto one = [&](const std::string& path, const std::string& digest = "") {
    return R"({"files":[{"path":")" + path + R"(","size":1,"sha256":")" + (digest.empty() ? sha : digest) + "\"}]}";
  };
  for (const std::string path : {"../x", "a/../../x", "/etc/passwd", "a//b", "./a", "a/"}) {
    auto m = ManifestFromJson(one(path));
    ASSERT_FALSE(m.ok()) << path;
    EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(m.status().message().find(path), std::string::npos) << m.status().message();
  }
  EXPECT_FALSE(ManifestFromJson(one("a", "XYZ")).ok());
  EXPECT_FALSE(ManifestFromJson("{garbage").ok());
  EXPECT_FALSE(ManifestFromJson(R"({"files":[{"path":"a","size":-1,"sha256":")" + sha + "\"}]}").ok());
  auto unsorted = ManifestFromJson(R"({"files":[{"path":"b","size":1,"sha256":")" + sha +
                                   R"("},{"path":"a","size":1,"sha256":")" + sha + "\"}]}");
  ASSERT_FALSE(unsorted.ok());
  EXPECT_NE(unsorted.status().message().find("unsorted or duplicate"), std::string::npos);
}

}  // namespace
}  // namespace anneal::transfer
