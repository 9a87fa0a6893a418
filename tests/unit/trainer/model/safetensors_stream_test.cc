// SafetensorsStreamWriter: the streamed file is byte-identical to WriteSafetensors' for the same tensors (every
// dtype, a scalar, an empty tensor, a strided and a non-CPU-ordered view), the writer keeps no appended tensor
// alive (a ZeRO-3 save holds one gathered tensor at a time), and what does not match the header is refused
// without leaving a file at the path.
#include "trainer/model/safetensors_stream.h"

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>

#include "common/fsutil.h"
#include "trainer/model/safetensors.h"

namespace anneal::model {
namespace {

namespace fs = std::filesystem;

class SafetensorsStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("anneal-sts-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }
  size_t Files() const { return static_cast<size_t>(std::distance(fs::directory_iterator(dir_), {})); }
  fs::path dir_;
};

std::vector<SafetensorsStreamWriter::Entry> EntriesOf(const std::vector<std::pair<std::string, at::Tensor>>& ts) {
  std::vector<SafetensorsStreamWriter::Entry> entries;
  for (const auto& [name, t] : ts) entries.push_back({name, t.scalar_type(), t.sizes().vec()});
  return entries;
}

TEST_F(SafetensorsStreamTest, TheStreamedFileIsByteIdenticalToWriteSafetensors) {
  torch::manual_seed(0);
  const std::vector<std::pair<std::string, at::Tensor>> tensors = {
      {"z.f32", torch::randn({3, 5})},
      {"a.bf16", torch::randn({7}).to(torch::kBFloat16)},
      {"m.f16", torch::randn({2, 2, 2}).to(torch::kHalf)},
      {"i64", torch::arange(10)},
      {"scalar", torch::tensor(3.5f)},
      {"empty", torch::zeros({0, 4})},
      {"transposed", torch::randn({4, 3}).t()},  // not contiguous: written in its logical order
  };
  ASSERT_TRUE(WriteSafetensors(Path("whole.safetensors"), tensors).ok());
  auto writer = SafetensorsStreamWriter::Open(Path("streamed.safetensors"), EntriesOf(tensors));
  ASSERT_TRUE(writer.ok()) << writer.status().ToString();
  for (const auto& [name, t] : tensors) ASSERT_TRUE((*writer)->Append(t).ok()) << name;
  ASSERT_TRUE((*writer)->Close().ok());
  auto whole = ReadFile(Path("whole.safetensors"));
  auto streamed = ReadFile(Path("streamed.safetensors"));
  ASSERT_TRUE(whole.ok() && streamed.ok());
  EXPECT_EQ(streamed->size(), whole->size());
  EXPECT_TRUE(*streamed == *whole);
  EXPECT_EQ(Files(), 2u) << "no temporary file left";
}

TEST_F(SafetensorsStreamTest, AnAppendedTensorIsNotKeptAlive) {
  auto writer =
      SafetensorsStreamWriter::Open(Path("a.safetensors"), {{"a", at::kFloat, {64, 64}}, {"b", at::kFloat, {64, 64}}});
  ASSERT_TRUE(writer.ok()) << writer.status().ToString();
  for (int k = 0; k < 2; ++k) {
    at::Tensor gathered = torch::full({64, 64}, static_cast<float>(k));
    const c10::weak_intrusive_ptr<c10::StorageImpl> storage(gathered.storage().getWeakStorageImpl());
    ASSERT_TRUE((*writer)->Append(gathered).ok());
    EXPECT_EQ(gathered.storage().use_count(), 1) << "the writer holds no reference to tensor " << k;
    gathered.reset();
    EXPECT_TRUE(storage.expired()) << "tensor " << k << "'s bytes are freed once the caller drops it";
    EXPECT_EQ((*writer)->appended(), static_cast<size_t>(k + 1));
  }
  ASSERT_TRUE((*writer)->Close().ok());
  auto file = SafetensorsFile::Open(Path("a.safetensors"));
  ASSERT_TRUE(file.ok());
  auto b = (*file)->Tensor("b");
  ASSERT_TRUE(b.ok());
  EXPECT_TRUE(torch::equal(*b, torch::ones({64, 64})));
}

TEST_F(SafetensorsStreamTest, WhatDoesNotMatchTheHeaderIsRefusedAndLeavesNoFile) {
  {
    auto writer = SafetensorsStreamWriter::Open(Path("a.safetensors"), {{"w", at::kFloat, {2, 3}}});
    ASSERT_TRUE(writer.ok());
    Status shape = (*writer)->Append(torch::zeros({3, 2}));
    EXPECT_EQ(shape.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(shape.message().find("tensor 'w' announced as F32 [2, 3], appended as F32 [3, 2]"), std::string::npos)
        << shape.message();
    Status dtype = (*writer)->Append(torch::zeros({2, 3}, torch::kFloat64));
    EXPECT_NE(dtype.message().find("appended as F64 [2, 3]"), std::string::npos) << dtype.message();
    Status early = (*writer)->Close();
    EXPECT_EQ(early.code(), StatusCode::kFailedPrecondition);
    EXPECT_NE(early.message().find("0 of 1 tensors appended (next: 'w')"), std::string::npos) << early.message();
  }
  EXPECT_FALSE(fs::exists(Path("a.safetensors")));
  EXPECT_EQ(Files(), 0u) << "the temporary file is removed";
  auto writer = SafetensorsStreamWriter::Open(Path("b.safetensors"), {{"w", at::kFloat, {1}}});
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE((*writer)->Append(torch::zeros({1})).ok());
  Status extra = (*writer)->Append(torch::zeros({1}));
  EXPECT_NE(extra.message().find("a tensor appended after the 1 announced in the header"), std::string::npos)
      << extra.message();
  EXPECT_TRUE((*writer)->Close().ok());
  auto twice = SafetensorsStreamWriter::Open(Path("c.safetensors"), {{"w", at::kFloat, {1}}, {"w", at::kFloat, {1}}});
  EXPECT_EQ(twice.status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace anneal::model
