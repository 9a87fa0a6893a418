// safetensors: bit-exact round trips, sharding, and clear errors on corrupt or truncated files.
#include "trainer/model/safetensors.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "common/fsutil.h"

namespace anneal::model {
namespace {

namespace fs = std::filesystem;

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("anneal-st-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

void WriteRaw(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

std::string RawFile(const std::string& header, size_t data_bytes) {
  std::string s;
  uint64_t n = header.size();
  s.append(reinterpret_cast<const char*>(&n), 8);
  s += header;
  s.append(data_bytes, '\0');
  return s;
}

TEST_F(SafetensorsTest, RoundTripIsBitExactForEveryDtype) {
  torch::manual_seed(0);
  std::vector<std::pair<std::string, torch::Tensor>> tensors = {
      {"f32", torch::randn({3, 5})},
      {"bf16", torch::randn({7}).to(torch::kBFloat16)},
      {"f16", torch::randn({2, 2, 2}).to(torch::kHalf)},
      {"i64", torch::arange(10)},
      {"scalar", torch::tensor(3.5f)},
      {"empty", torch::zeros({0, 4})},
  };
  ASSERT_TRUE(WriteSafetensors(Path("a.safetensors"), tensors).ok());
  auto file = SafetensorsFile::Open(Path("a.safetensors"));
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
  for (const auto& [name, t] : tensors) {
    auto got = (*file)->Tensor(name);
    ASSERT_TRUE(got.ok()) << name;
    EXPECT_EQ(got->scalar_type(), t.scalar_type()) << name;
    EXPECT_TRUE(torch::equal(*got, t)) << name;
  }
  // Conversion on load.
  auto as_f32 = (*file)->Tensor("bf16", torch::kFloat32);
  ASSERT_TRUE(as_f32.ok());
  EXPECT_TRUE(torch::equal(*as_f32, tensors[1].second.to(torch::kFloat32)));
}

TEST_F(SafetensorsTest, ShardedCheckpointWritesAnIndexAndReadsBack) {
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (int i = 0; i < 5; ++i) {
    std::string name = "w";
    name += std::to_string(i);  // (GCC 12 warns falsely on "w" + std::to_string(i) here)
    tensors.emplace_back(std::move(name), torch::full({256}, float(i)));
  }
  ASSERT_TRUE(WriteSafetensorsCheckpoint(dir_.string(), "model", tensors, /*max_shard_bytes=*/2048).ok());
  EXPECT_TRUE(fs::exists(Path("model.safetensors.index.json")));
  EXPECT_TRUE(fs::exists(Path("model-00001-of-00003.safetensors")));
  auto ck = SafetensorsCheckpoint::Open(dir_.string());
  ASSERT_TRUE(ck.ok()) << ck.status().ToString();
  EXPECT_EQ(ck->Names().size(), 5u);
  auto w3 = ck->Tensor("w3");
  ASSERT_TRUE(w3.ok());
  EXPECT_TRUE(torch::equal(*w3, torch::full({256}, 3.f)));
}

TEST_F(SafetensorsTest, TruncatedFileIsAClearError) {
  ASSERT_TRUE(WriteSafetensors(Path("t.safetensors"), {{"w", torch::ones({100})}}).ok());
  fs::resize_file(Path("t.safetensors"), fs::file_size(Path("t.safetensors")) - 10);
  auto file = SafetensorsFile::Open(Path("t.safetensors"));
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(file.status().message().find("truncated or trailing garbage"), std::string::npos)
      << file.status().message();
  EXPECT_NE(file.status().message().find("t.safetensors"), std::string::npos);
}

TEST_F(SafetensorsTest, TinyFileHasNoHeader) {
  WriteRaw(Path("x.safetensors"), "abc");
  auto file = SafetensorsFile::Open(Path("x.safetensors"));
  ASSERT_FALSE(file.ok());
  EXPECT_NE(file.status().message().find("truncated safetensors file (3 bytes, no header)"), std::string::npos);
}

TEST_F(SafetensorsTest, HeaderLengthBeyondTheFileIsRefused) {
  std::string s(8, '\0');
  uint64_t n = 1ull << 40;
  std::memcpy(s.data(), &n, 8);
  WriteRaw(Path("h.safetensors"), s + "{}");
  auto file = SafetensorsFile::Open(Path("h.safetensors"));
  ASSERT_FALSE(file.ok());
  EXPECT_NE(file.status().message().find("header length 1099511627776 exceeds the file"), std::string::npos)
      << file.status().message();
}

TEST_F(SafetensorsTest, InvalidJsonHeaderIsRefused) {
  WriteRaw(Path("j.safetensors"), RawFile("{not json", 0));
  auto file = SafetensorsFile::Open(Path("j.safetensors"));
  ASSERT_FALSE(file.ok());
  EXPECT_NE(file.status().message().find("corrupt safetensors header: not valid JSON"), std::string::npos);
}

TEST_F(SafetensorsTest, OverlappingOffsetsAreRefused) {
  const std::string h = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                        R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})";
  WriteRaw(Path("o.safetensors"), RawFile(h, 12));
  auto file = SafetensorsFile::Open(Path("o.safetensors"));
  ASSERT_FALSE(file.ok());
  EXPECT_NE(file.status().message().find("tensor 'b' starts at byte 4 of the data buffer, expected 8"),
            std::string::npos)
      << file.status().message();
}

TEST_F(SafetensorsTest, ShapeThatDisagreesWithTheBytesIsRefused) {
  const std::string h = R"({"a":{"dtype":"BF16","shape":[3],"data_offsets":[0,8]}})";
  WriteRaw(Path("s.safetensors"), RawFile(h, 8));
  auto file = SafetensorsFile::Open(Path("s.safetensors"));
  ASSERT_FALSE(file.ok());
  EXPECT_NE(file.status().message().find("tensor 'a': 8 bytes for shape of 3 BF16 elements (expected 6)"),
            std::string::npos)
      << file.status().message();
}

TEST_F(SafetensorsTest, UnknownDtypeIsNamed) {
  const std::string h = R"({"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,2]}})";
  WriteRaw(Path("d.safetensors"), RawFile(h, 2));
  auto file = SafetensorsFile::Open(Path("d.safetensors"));
  ASSERT_FALSE(file.ok());
  EXPECT_NE(file.status().message().find("tensor 'a': unsupported dtype 'Q4'"), std::string::npos);
}

TEST_F(SafetensorsTest, IndexPointingAtAMissingTensorIsRefused) {
  ASSERT_TRUE(WriteSafetensors(Path("model-00001-of-00001.safetensors"), {{"a", torch::ones({1})}}).ok());
  ASSERT_TRUE(WriteFileAtomic(Path("model.safetensors.index.json"),
                              R"({"weight_map": {"b": "model-00001-of-00001.safetensors"}})")
                  .ok());
  auto ck = SafetensorsCheckpoint::Open(dir_.string());
  ASSERT_FALSE(ck.ok());
  EXPECT_NE(ck.status().message().find("'b' is mapped to model-00001-of-00001.safetensors which does not contain it"),
            std::string::npos);
}

TEST_F(SafetensorsTest, MissingCheckpointNamesTheDirectory) {
  auto ck = SafetensorsCheckpoint::Open(dir_.string());
  ASSERT_FALSE(ck.ok());
  EXPECT_EQ(ck.status().code(), StatusCode::kNotFound);
  EXPECT_NE(ck.status().message().find("no model.safetensors or model.safetensors.index.json in"), std::string::npos);
}

}  // namespace
}  // namespace anneal::model
