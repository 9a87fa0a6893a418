// Server + BlobStore end to end: real sockets on loopback, real files in temp dirs.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "tests/unit/transfer/transfer_test_support.h"
#include "transfer/client.h"
#include "transfer/manifest.h"

namespace anneal::transfer {
namespace {
namespace fs = std::filesystem;
using testing::RandomBytes;
using testing::ReadBytes;
using testing::ServerFixture;
using testing::TempDir;
using testing::WriteBytes;

constexpr uint64_t kBig = (9ull << 20) + 12345;  // three 4 MiB reads, the last one short

struct BlobStoreTest : ::testing::Test {
  void SetUp() override {
    WriteBytes(root + "/model.safetensors", RandomBytes(kBig, 1));
    WriteBytes(root + "/config.json", "{\"hidden\": 64}");
    WriteBytes(root + "/empty.txt", "");
    WriteBytes(root + "/tok/nested/deep/vocab.txt", RandomBytes(70000, 2));
    WriteBytes(root + "/tok/copy-of-config.json", "{\"hidden\": 64}");  // same content: one blob
    WriteBytes(root + "/.meta", "dot");
  }
  Manifest GetManifest() {
    auto m = FetchManifest(f.SourceFor(root), "");
    if (!m.ok()) ADD_FAILURE() << m.status().ToString();
    return m.ok() ? *m : Manifest{};
  }
  void ExpectSameTree(const std::string& dest) {
    const Manifest m = GetManifest();
    ASSERT_EQ(m.files.size(), 6u);
    for (const auto& e : m.files) EXPECT_EQ(ReadBytes(dest + "/" + e.path), ReadBytes(root + "/" + e.path)) << e.path;
    auto local = BuildManifest(dest, nullptr);
    ASSERT_TRUE(local.ok()) << local.status().ToString();
    EXPECT_EQ(local->Id(), m.Id());
  }

  TempDir t;
  std::string root = t.path + "/source";
  ServerFixture f;
  BlobStore store{t.path + "/store"};
};

TEST_F(BlobStoreTest, FetchesATreeInChunksAndASecondFetchReadsNothing) {
  const Manifest m = GetManifest();
  EXPECT_EQ(m.total_bytes(), kBig + 14 + 0 + 70000 + 14 + 3);
  uint64_t last_done = 0;
  FetchOptions options;
  options.progress = [&](uint64_t done, uint64_t total) {
    EXPECT_GE(done, last_done);
    EXPECT_EQ(total, m.total_bytes());
    last_done = done;
  };
  ASSERT_TRUE(store.Fetch(f.SourceFor(root), m, store.TreePath(m.Id()), options).ok());
  ExpectSameTree(store.TreePath(m.Id()));
  EXPECT_EQ(last_done, m.total_bytes());
  EXPECT_EQ(f.server->stats().read_requests, 3u + 1u + 1u + 1u) << "the big file in 3 reads, duplicates once, "
                                                                   "the empty file never";
  struct stat st {};
  ASSERT_EQ(::stat(store.BlobPath(m.files[3].sha256).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0444u);

  const uint64_t reads = f.server->stats().read_requests;
  ASSERT_TRUE(store.Fetch(f.SourceFor(root), m, store.TreePath(m.Id())).ok());
  ASSERT_TRUE(store.Fetch(f.SourceFor(root), m, t.path + "/job-2/model").ok());
  EXPECT_EQ(f.server->stats().read_requests, reads) << "content in the store is never fetched again";
  ExpectSameTree(t.path + "/job-2/model");
  ASSERT_EQ(::stat((t.path + "/job-2/model/model.safetensors").c_str(), &st), 0);
  EXPECT_GE(st.st_nlink, 3u) << "trees are hard links to the blob";
}

TEST_F(BlobStoreTest, ACancelledTransferResumesFromThePartFile) {
  const Manifest m = GetManifest();
  std::atomic<bool> cancel{false};
  FetchOptions options;
  options.chunk_bytes = 1 << 20;
  options.window = 1;
  options.cancel = &cancel;
  options.progress = [&](uint64_t done, uint64_t) {
    if (done >= (3u << 20)) cancel = true;
  };
  Status st = store.Fetch(f.SourceFor(root), m, store.TreePath(m.Id()), options);
  ASSERT_EQ(st.code(), StatusCode::kCancelled) << st.ToString();
  EXPECT_FALSE(fs::exists(store.TreePath(m.Id())));
  const FileEntry& big = m.files[3];
  ASSERT_EQ(big.path, "model.safetensors");
  const std::string part = store.root() + "/partial/" + big.sha256 + ".part";
  ASSERT_TRUE(fs::exists(part));
  const uint64_t kept = fs::file_size(part);
  EXPECT_GE(kept, 3u << 20);
  EXPECT_LT(kept, kBig);

  const uint64_t served_before = f.server->stats().bytes_served;
  cancel = false;
  options.progress = nullptr;
  FetchStats stats;
  options.stats = &stats;
  ASSERT_TRUE(store.Fetch(f.SourceFor(root), m, store.TreePath(m.Id()), options).ok());
  const uint64_t served = f.server->stats().bytes_served - served_before;
  EXPECT_LE(served, m.total_bytes() - kept) << "the second fetch continued from the .part";
  EXPECT_EQ(stats.resumed_bytes, kept) << "resumed at the .part's length";
  EXPECT_EQ(stats.resumed_files, 1);
  EXPECT_EQ(stats.bytes_received, (kBig - kept) + 70000) << "the rest of the big file and the vocab, nothing twice";
  EXPECT_EQ(stats.re_requests, 0);
  EXPECT_EQ(stats.refetched_files, 0);
  ExpectSameTree(store.TreePath(m.Id()));
  EXPECT_FALSE(fs::exists(part));
}

TEST_F(BlobStoreTest, AServerRestartMidTransferIsBridgedByRetries) {
  const Manifest m = GetManifest();
  const Source source = f.SourceFor(root);  // taken before: the server object is replaced meanwhile
  std::atomic<bool> restarting{false};
  std::thread restart;
  FetchOptions options;
  options.chunk_bytes = 256 << 10;
  options.timeout_ms = 300;
  options.max_retries = 10;  // with 0 this fails: the requests lost in the restart are sent again
  options.progress = [&](uint64_t done, uint64_t) {
    if (done >= (2u << 20) && !restarting.exchange(true)) restart = std::thread([&] { f.Restart(); });
  };
  Status st = store.Fetch(source, m, store.TreePath(m.Id()), options);
  if (restart.joinable()) restart.join();
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_TRUE(restarting.load());
  ExpectSameTree(store.TreePath(m.Id()));
}

TEST_F(BlobStoreTest, AStalledTransferAsksAgainFromTheLastByteWrittenAndKeepsTheRest) {
  const Manifest m = GetManifest();
  const Source source = f.SourceFor(root);
  uint64_t before_big = 0;  // bytes of the files sorted before model.safetensors (in the store before it)
  for (size_t i = 0; i < 3; ++i) before_big += m.files[i].size;
  ASSERT_EQ(m.files[3].path, "model.safetensors");
  uint64_t stopped_at = 0;  // bytes of model.safetensors written when the server went away
  std::thread restart;
  FetchOptions options;
  options.chunk_bytes = 256 << 10;
  options.window = 1;  // nothing in flight when the server stops: the stall starts exactly at a chunk's end
  options.timeout_ms = 200;
  options.max_retries = 20;
  FetchStats stats;
  options.stats = &stats;
  options.progress = [&](uint64_t done, uint64_t) {
    if (done < before_big + (2u << 20) || stopped_at != 0) return;
    stopped_at = done - before_big;
    f.server.reset();  // down for longer than the request timeout: the fetch must ask again
    restart = std::thread([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(700));
      f.Restart();
    });
  };
  Status st = store.Fetch(source, m, store.TreePath(m.Id()), options);
  if (restart.joinable()) restart.join();
  ASSERT_TRUE(st.ok()) << st.ToString();
  ASSERT_GT(stopped_at, 0u);
  EXPECT_GE(stats.re_requests, 1);
  EXPECT_EQ(stats.last_re_request_offset, stopped_at) << "asked again from the last byte written, not from 0";
  EXPECT_EQ(stats.bytes_received, m.total_bytes() - 14) << "every byte received once (the duplicate config once)";
  EXPECT_EQ(stats.resumed_bytes, 0u);
  ExpectSameTree(store.TreePath(m.Id()));
}

TEST_F(BlobStoreTest, AFileChangedOnTheServerIsDataLossAfterOneRefetchAndLeavesNoBlob) {
  const Manifest m = GetManifest();
  WriteBytes(root + "/tok/nested/deep/vocab.txt", RandomBytes(70000, 99));  // same size, other bytes
  const uint64_t reads = f.server->stats().read_requests;
  Status st = store.Fetch(f.SourceFor(root), m, store.TreePath(m.Id()));
  ASSERT_EQ(st.code(), StatusCode::kDataLoss) << st.ToString();
  EXPECT_NE(st.message().find("tok/nested/deep/vocab.txt"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("refetch"), std::string::npos) << st.message();
  const FileEntry* vocab = nullptr;
  for (const auto& e : m.files) vocab = e.path == "tok/nested/deep/vocab.txt" ? &e : vocab;
  ASSERT_NE(vocab, nullptr);
  EXPECT_FALSE(store.Has(vocab->sha256));
  EXPECT_FALSE(fs::exists(store.root() + "/partial/" + vocab->sha256 + ".part"));
  EXPECT_FALSE(fs::exists(store.TreePath(m.Id())));
  EXPECT_GE(f.server->stats().read_requests - reads, 2u) << "fetched twice";
}

TEST_F(BlobStoreTest, AFileWhoseSizeChangedOnTheServerIsDataLoss) {
  const Manifest m = GetManifest();
  WriteBytes(root + "/config.json", "{\"hidden\": 128}");
  Status st = store.Fetch(f.SourceFor(root), m, store.TreePath(m.Id()));
  ASSERT_EQ(st.code(), StatusCode::kDataLoss) << st.ToString();
  EXPECT_NE(st.message().find("config.json"), std::string::npos) << st.message();
}

TEST_F(BlobStoreTest, ACorruptPartOnTheClientIsCaughtBySha256AndRefetched) {
  const Manifest m = GetManifest();
  const FileEntry& big = m.files[3];
  WriteBytes(store.root() + "/partial/" + big.sha256 + ".part", RandomBytes(5 << 20, 7));  // wrong bytes
  FetchStats stats;
  FetchOptions options;
  options.stats = &stats;
  ASSERT_TRUE(store.Fetch(f.SourceFor(root), m, store.TreePath(m.Id()), options).ok());
  ExpectSameTree(store.TreePath(m.Id()));
  EXPECT_EQ(stats.resumed_bytes, 5u << 20) << "the .part was resumed first";
  EXPECT_EQ(stats.refetched_files, 1) << "then fetched again from scratch after the SHA-256 mismatch";
}

TEST_F(BlobStoreTest, TwoConcurrentFetchesOfOneTreeIntoOneStoreBothSucceed) {
  const Manifest m = GetManifest();
  BlobStore second(store.root());  // as another agent process would open it
  Status a, b;
  std::thread ta([&] { a = store.Fetch(f.SourceFor(root), m, store.TreePath(m.Id())); });
  std::thread tb([&] { b = second.Fetch(f.SourceFor(root), m, store.TreePath(m.Id())); });
  ta.join();
  tb.join();
  ASSERT_TRUE(a.ok()) << a.ToString();
  ASSERT_TRUE(b.ok()) << b.ToString();
  ExpectSameTree(store.TreePath(m.Id()));
  EXPECT_LE(f.server->stats().bytes_served, m.total_bytes() - 14) << "each blob fetched once";
}

TEST_F(BlobStoreTest, ASubdirectoryAndASingleFileRootAreFetched) {
  FetchOptions options;
  options.subpath = "tok";
  auto sub = FetchManifest(f.SourceFor(root), "tok");
  ASSERT_TRUE(sub.ok()) << sub.status().ToString();
  ASSERT_EQ(sub->files.size(), 2u);
  ASSERT_TRUE(store.Fetch(f.SourceFor(root), *sub, t.path + "/tok", options).ok());
  EXPECT_EQ(ReadBytes(t.path + "/tok/nested/deep/vocab.txt"), ReadBytes(root + "/tok/nested/deep/vocab.txt"));

  const std::string file_root = root + "/config.json";
  auto single = FetchManifest(f.SourceFor(file_root), "");
  ASSERT_TRUE(single.ok()) << single.status().ToString();
  ASSERT_EQ(single->files.size(), 1u);
  ASSERT_TRUE(store.Fetch(f.SourceFor(file_root), *single, t.path + "/cfg").ok());
  EXPECT_EQ(ReadBytes(t.path + "/cfg/config.json"), "{\"hidden\": 64}");
}

TEST_F(BlobStoreTest, ADifferentTreeAtTheDestinationIsReplacedWhole) {
  const Manifest m = GetManifest();
  WriteBytes(t.path + "/dest/stale.bin", "old");
  ASSERT_TRUE(store.Fetch(f.SourceFor(root), m, t.path + "/dest").ok());
  EXPECT_FALSE(fs::exists(t.path + "/dest/stale.bin"));
  ExpectSameTree(t.path + "/dest");
  for (const auto& entry : fs::directory_iterator(t.path)) {
    EXPECT_EQ(entry.path().filename().string().find(".partial-"), std::string::npos) << entry.path();
  }
}

TEST_F(BlobStoreTest, MaterializingOnAnotherFilesystemCopies) {
  struct stat tmp {
  }, shm{};
  if (::stat(t.path.c_str(), &tmp) != 0 || ::stat("/dev/shm", &shm) != 0 || tmp.st_dev == shm.st_dev) {
    GTEST_SKIP() << "needs /dev/shm on another filesystem than /tmp";
  }
  const Manifest m = GetManifest();
  TempDir other("/dev/shm");
  const std::string dest = other.path + "/model";
  ASSERT_TRUE(store.Fetch(f.SourceFor(root), m, dest).ok());
  ExpectSameTree(dest);
  struct stat st {};
  ASSERT_EQ(::stat((dest + "/model.safetensors").c_str(), &st), 0);
  EXPECT_EQ(st.st_nlink, 1u) << "a copy, not a link";
  const ino_t inode = st.st_ino;
  ASSERT_TRUE(store.Materialize(m, dest).ok());
  ASSERT_EQ(::stat((dest + "/model.safetensors").c_str(), &st), 0);
  EXPECT_EQ(st.st_ino, inode) << "a complete copy with the same content is left as is";
}

TEST_F(BlobStoreTest, WritableCopiesAreTheCallersOwn) {
  const Manifest m = GetManifest();
  FetchOptions options;
  options.materialize_copies = true;
  ASSERT_TRUE(store.Fetch(f.SourceFor(root), m, t.path + "/fetched", options).ok());
  ExpectSameTree(t.path + "/fetched");
  struct stat st {};
  ASSERT_EQ(::stat((t.path + "/fetched/config.json").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u);
  EXPECT_EQ(st.st_nlink, 1u);
  WriteBytes(t.path + "/fetched/config.json", "edited");
  EXPECT_EQ(ReadBytes(store.BlobPath(m.files[1].sha256)), "{\"hidden\": 64}") << "the blob is untouched";
}

TEST_F(BlobStoreTest, AddLocalStoresCopiesAndRefusesAFileThatNoLongerMatches) {
  auto m = BuildManifest(root, nullptr);
  ASSERT_TRUE(m.ok());
  ASSERT_TRUE(store.AddLocal(root, *m).ok());
  for (const auto& e : m->files) EXPECT_TRUE(store.Has(e.sha256)) << e.path;
  struct stat st {};
  ASSERT_EQ(::stat((root + "/config.json").c_str(), &st), 0);
  EXPECT_EQ(st.st_nlink, 1u) << "the caller's file is not linked into the store";
  EXPECT_EQ(f.server->stats().read_requests, 0u);

  BlobStore fresh(t.path + "/store2");
  WriteBytes(root + "/config.json", "{\"hidden\": 65}");
  Status st2 = fresh.AddLocal(root, *m);
  ASSERT_EQ(st2.code(), StatusCode::kDataLoss) << st2.ToString();
  EXPECT_NE(st2.message().find("config.json"), std::string::npos);
}

TEST_F(BlobStoreTest, PruneDropsUnpinnedTreesOldestFirstAndKeepsPinnedOnes) {
  const Manifest a = GetManifest();
  ASSERT_TRUE(store.Fetch(f.SourceFor(root), a, store.TreePath(a.Id())).ok());
  WriteBytes(t.path + "/other/weights.bin", RandomBytes(1 << 20, 5));
  auto b = FetchManifest(f.SourceFor(t.path + "/other"), "");
  ASSERT_TRUE(b.ok());
  ASSERT_TRUE(store.Fetch(f.SourceFor(t.path + "/other"), *b, store.TreePath(b->Id())).ok());
  const uint64_t both = store.UsedBytes();
  EXPECT_EQ(both, a.total_bytes() - 14 + b->total_bytes());

  ASSERT_TRUE(store.Prune(both, {}).ok());
  EXPECT_TRUE(fs::exists(store.TreePath(a.Id()))) << "under the limit: nothing removed";
  ASSERT_TRUE(store.Prune(a.total_bytes(), {a.Id()}).ok());
  EXPECT_TRUE(fs::exists(store.TreePath(a.Id())));
  EXPECT_FALSE(fs::exists(store.TreePath(b->Id())));
  EXPECT_FALSE(store.Has(b->files[0].sha256));
  ExpectSameTree(store.TreePath(a.Id()));

  Status full = store.Prune(1000, {a.Id()});
  ASSERT_EQ(full.code(), StatusCode::kResourceExhausted) << full.ToString();
  EXPECT_TRUE(fs::exists(store.TreePath(a.Id())));
  ASSERT_TRUE(store.Prune(0, {}).ok());
  EXPECT_EQ(store.UsedBytes(), 0u);
}

TEST_F(BlobStoreTest, FetchFileCopiesOneCheckedFileAndRefusesADirectory) {
  ASSERT_TRUE(FetchFile(f.SourceFor(root), "tok/nested/deep/vocab.txt", t.path + "/vocab.txt").ok());
  EXPECT_EQ(ReadBytes(t.path + "/vocab.txt"), ReadBytes(root + "/tok/nested/deep/vocab.txt"));
  Status dir = FetchFile(f.SourceFor(root), "tok", t.path + "/tok.txt");
  ASSERT_EQ(dir.code(), StatusCode::kInvalidArgument) << dir.ToString();
  EXPECT_NE(dir.message().find("directory"), std::string::npos);
  Status escape = FetchFile(f.SourceFor(root), "../x", t.path + "/x");
  EXPECT_EQ(escape.code(), StatusCode::kPermissionDenied) << escape.ToString();
}

TEST_F(BlobStoreTest, AManifestWithForgedPathsIsRefusedBeforeAnyRequest) {
  Manifest forged;
  forged.files.push_back({"../../etc/passwd", 10, Sha256Hex("x")});
  Status st = store.Fetch(f.SourceFor(root), forged, t.path + "/x");
  ASSERT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("../../etc/passwd"), std::string::npos);
  EXPECT_EQ(f.server->stats().read_requests, 0u);
}

}  // namespace
}  // namespace anneal::transfer
