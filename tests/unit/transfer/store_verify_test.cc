// BlobStore's checks of blobs already in the store: changed blobs are removed and fetched again; Verify hashes
// every blob. Real sockets on loopback, real files in temp dirs.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tests/unit/transfer/transfer_test_support.h"
#include "transfer/client.h"
#include "transfer/manifest.h"
#include "transfer/store_lock.h"

namespace anneal::transfer {
namespace {
namespace fs = std::filesystem;
using testing::RandomBytes;
using testing::ReadBytes;
using testing::ServerFixture;
using testing::TempDir;
using testing::WriteBytes;

constexpr uint64_t kBig = (9ull << 20) + 12345;  // three 4 MiB reads

struct StoreVerifyTest : ::testing::Test {
  void SetUp() override {
    WriteBytes(root + "/model.safetensors", RandomBytes(kBig, 1));
    WriteBytes(root + "/config.json", "{\"hidden\": 64}");
    auto m = FetchManifest(f.SourceFor(root), "");
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    manifest = *m;
    ASSERT_EQ(manifest.files[1].path, "model.safetensors");
    ASSERT_TRUE(store.Fetch(f.SourceFor(root), manifest, store.TreePath(manifest.Id())).ok());
  }
  std::string ModelBlob() const { return store.BlobPath(manifest.files[1].sha256); }
  // Changes one byte of the model's blob in place (what a stray write as root would do); keeps its mtime when asked.
  void DamageModelBlob(bool keep_mtime) {
    struct stat before {};
    ASSERT_EQ(::stat(ModelBlob().c_str(), &before), 0);
    ASSERT_EQ(::chmod(ModelBlob().c_str(), 0644), 0);
    {
      std::fstream blob(ModelBlob(), std::ios::in | std::ios::out | std::ios::binary);
      blob.seekp(1000);
      const char byte = static_cast<char>(ReadBytes(root + "/model.safetensors")[1000] ^ 0x5a);
      blob.write(&byte, 1);
    }
    ASSERT_EQ(::chmod(ModelBlob().c_str(), 0444), 0);
    if (keep_mtime) {
      const struct timespec times[2] = {before.st_atim, before.st_mtim};
      ASSERT_EQ(::utimensat(AT_FDCWD, ModelBlob().c_str(), times, 0), 0);
    }
  }
  void ExpectTreeIsTheSource(const std::string& dest) {
    EXPECT_EQ(ReadBytes(dest + "/model.safetensors"), ReadBytes(root + "/model.safetensors"));
    EXPECT_EQ(ReadBytes(dest + "/config.json"), ReadBytes(root + "/config.json"));
  }

  TempDir t;
  std::string root = t.path + "/source";
  ServerFixture f;
  BlobStore store{t.path + "/store"};
  Manifest manifest;
};

TEST_F(StoreVerifyTest, ABlobWrittenInPlaceIsRemovedAndFetchedAgainAndItsTreeRebuilt) {
  DamageModelBlob(/*keep_mtime=*/false);
  const uint64_t reads = f.server->stats().read_requests;
  FetchStats stats;
  FetchOptions options;
  options.stats = &stats;
  BlobStore reopened(store.root());  // as the next staging on the node opens it
  ASSERT_TRUE(reopened.Fetch(f.SourceFor(root), manifest, store.TreePath(manifest.Id()), options).ok());
  EXPECT_EQ(stats.replaced_blobs, 1);
  EXPECT_EQ(f.server->stats().read_requests, reads + 3) << "only the changed blob is fetched again";
  EXPECT_EQ(ReadBytes(ModelBlob()), ReadBytes(root + "/model.safetensors"));
  ExpectTreeIsTheSource(store.TreePath(manifest.Id()));
}

TEST_F(StoreVerifyTest, AnUnchangedStoreIsNotReadAgainAndItsRecordsSurviveAReopen) {
  const std::string records = store.root() + "/verified.json";
  auto doc = nlohmann::json::parse(ReadBytes(records), nullptr, false);
  ASSERT_TRUE(doc.is_object()) << ReadBytes(records);
  EXPECT_EQ(doc["files"].size(), 2u) << "both blobs recorded when they entered";
  const uint64_t reads = f.server->stats().read_requests;
  FetchStats stats;
  FetchOptions options;
  options.stats = &stats;
  BlobStore reopened(store.root());
  ASSERT_TRUE(reopened.Fetch(f.SourceFor(root), manifest, t.path + "/job-2/model", options).ok());
  EXPECT_EQ(f.server->stats().read_requests, reads);
  EXPECT_EQ(stats.replaced_blobs, 0);
  ExpectTreeIsTheSource(t.path + "/job-2/model");
}

TEST_F(StoreVerifyTest, BlobsWithoutRecordsAreHashedOnceAndKept) {
  fs::remove(store.root() + "/verified.json");  // a store from before records were kept
  BlobStore reopened(store.root());
  const uint64_t reads = f.server->stats().read_requests;
  ASSERT_TRUE(reopened.Fetch(f.SourceFor(root), manifest, store.TreePath(manifest.Id())).ok());
  EXPECT_EQ(f.server->stats().read_requests, reads) << "intact blobs are kept";
  auto doc = nlohmann::json::parse(ReadBytes(store.root() + "/verified.json"), nullptr, false);
  ASSERT_TRUE(doc.is_object());
  EXPECT_EQ(doc["files"].size(), 2u) << "and recorded";
}

TEST_F(StoreVerifyTest, AChangeThatKeepsSizeMtimeAndInodeIsFoundOnlyByVerify) {
  DamageModelBlob(/*keep_mtime=*/true);
  const uint64_t reads = f.server->stats().read_requests;
  ASSERT_TRUE(BlobStore(store.root()).Fetch(f.SourceFor(root), manifest, store.TreePath(manifest.Id())).ok());
  EXPECT_EQ(f.server->stats().read_requests, reads) << "the records cannot see it (documented)";

  auto report = store.Verify();
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->blobs_checked, 2u);
  EXPECT_EQ(report->bytes_checked, manifest.total_bytes());
  EXPECT_EQ(report->removed, std::vector<std::string>{manifest.files[1].sha256});
  EXPECT_FALSE(store.Has(manifest.files[1].sha256));
  EXPECT_TRUE(store.Has(manifest.files[0].sha256));

  ASSERT_TRUE(store.Fetch(f.SourceFor(root), manifest, store.TreePath(manifest.Id())).ok());
  EXPECT_EQ(f.server->stats().read_requests, reads + 3);
  ExpectTreeIsTheSource(store.TreePath(manifest.Id()));
  auto again = store.Verify();
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->removed.empty());
}

TEST_F(StoreVerifyTest, MaterializingAChangedBlobIsRefusedNamingTheFile) {
  DamageModelBlob(/*keep_mtime=*/false);
  Status st = BlobStore(store.root()).Materialize(manifest, t.path + "/copy");
  EXPECT_EQ(st.code(), StatusCode::kNotFound);
  EXPECT_NE(st.message().find("'model.safetensors'"), std::string::npos) << st.message();
  EXPECT_FALSE(fs::exists(t.path + "/copy"));
}

TEST_F(StoreVerifyTest, VerifyIsRefusedWhileAFetchHoldsTheStore) {
  auto fetching = StoreLock::Shared(store.root());
  ASSERT_TRUE(fetching.ok());
  auto report = store.Verify();
  EXPECT_EQ(report.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(report.status().message().find("in use"), std::string::npos) << report.status().message();
}

}  // namespace
}  // namespace anneal::transfer
