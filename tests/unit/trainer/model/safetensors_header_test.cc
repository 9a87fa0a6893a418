// The LibTorch-free safetensors header checker (trainer/model/safetensors_header.h): what it accepts is safe to
// map, what it refuses names the file and the tensor. The reader's own tests (safetensors_test.cc) cover files.
#include "trainer/model/safetensors_header.h"

#include <gtest/gtest.h>

#include <string>

namespace anneal::model {
namespace {

std::string File(const std::string& header, size_t data_bytes) {
  std::string out;
  for (int i = 0; i < 8; ++i) out += static_cast<char>((header.size() >> (8 * i)) & 0xff);
  return out + header + std::string(data_bytes, '\x01');
}

TEST(SafetensorsHeader, AcceptsTensorsTilingTheBufferWithMetadata) {
  const std::string file = File(
      R"({"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
      R"("b":{"dtype":"BF16","shape":[4],"data_offsets":[24,32]},"e":{"dtype":"I64","shape":[0],"data_offsets":[32,32]}})",
      32);
  auto layout = ParseSafetensorsFile(file, file.size(), "m.safetensors");
  ASSERT_TRUE(layout.ok()) << layout.status().ToString();
  EXPECT_EQ(layout->data_start, file.size() - 32);
  ASSERT_EQ(layout->entries.size(), 3u);
  EXPECT_EQ(layout->entries.at("w").shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(layout->entries.at("b").begin, 24u);
  EXPECT_EQ(layout->metadata.at("format"), "pt");
}

// Found while writing the fuzz target's invariants: 2^62 F64 elements are 2^65 bytes, which wrapped around to
// 0, so a "tensor" of 2^62 elements with no bytes was accepted and a view of it would read past the mapping.
TEST(SafetensorsHeader, RefusesAByteSizeThatWrapsAround) {
  const std::string file = File(R"({"huge":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,0]}})", 0);
  auto layout = ParseSafetensorsFile(file, file.size(), "m.safetensors");
  ASSERT_FALSE(layout.ok());
  EXPECT_EQ(layout.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(layout.status().message().find("m.safetensors: tensor 'huge': shape overflows"), std::string::npos)
      << layout.status().message();
  // The same through two dims whose product fits in 2^62 elements but not in bytes.
  const std::string two = File(R"({"t":{"dtype":"I32","shape":[2147483648,2147483648],"data_offsets":[0,0]}})", 0);
  EXPECT_FALSE(ParseSafetensorsFile(two, two.size(), "m.safetensors").ok());
}

TEST(SafetensorsHeader, RefusesAHeaderLengthPastTheFile) {
  std::string file = File(R"({})", 0);
  file[0] = 100;  // claims 100 header bytes; the file has 2
  auto layout = ParseSafetensorsFile(file, file.size(), "m.safetensors");
  ASSERT_FALSE(layout.ok());
  EXPECT_NE(layout.status().message().find("header length 100 exceeds the file"), std::string::npos)
      << layout.status().message();
  EXPECT_FALSE(ParseSafetensorsFile("1234567", 7, "m.safetensors").ok());
}

TEST(SafetensorsHeader, RefusesOverlapsGapsAndTrailingBytes) {
  const auto refused = [](const std::string& header, size_t data, const std::string& expected) {
    const std::string file = File(header, data);
    auto layout = ParseSafetensorsFile(file, file.size(), "m.safetensors");
    ASSERT_FALSE(layout.ok()) << header;
    EXPECT_NE(layout.status().message().find(expected), std::string::npos) << layout.status().message();
  };
  refused(
      R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})", 6,
      "tensor 'b' starts at byte 2 of the data buffer, expected 4");
  refused(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[1,5]}})", 5, "tensor 'a' starts at byte 1");
  refused(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})", 9,
          "tensors cover 4 bytes but the data buffer has 9");
  refused(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,4]}})", 4, "tensor 'a': 4 bytes for shape of 3 F32");
  refused(R"({"a":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}})", 1, "tensor 'a': unsupported dtype 'Q4'");
  refused(R"({"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}})", 1, "non-integer or negative dim");
  refused(R"([1,2])", 0, "not a JSON object");
}

}  // namespace
}  // namespace anneal::model
