// TFRecord framing (trainer/report/tfrecord.h): CRC32C against published check values, TensorFlow's mask, and
// records that parse back, with torn and corrupt input.
#include "trainer/report/tfrecord.h"

#include <gtest/gtest.h>

namespace anneal::report {
namespace {

TEST(Crc32c, MatchesTheStandardCheckValues) {
  // RFC 3720 (iSCSI) appendix B.4 and the CRC catalogue's check value for "123456789".
  EXPECT_EQ(Crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(Crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(Crc32c(std::string(32, '\xff')), 0x62A8AB43u);
  EXPECT_EQ(Crc32c(""), 0u);
}

TEST(Crc32c, MaskIsTensorFlowsRotateAndAdd) {
  const uint32_t crc = Crc32c("123456789");
  EXPECT_EQ(MaskedCrc32c("123456789"), ((crc >> 15) | (crc << 17)) + 0xa282ead8u);
}

TEST(TfRecord, FrameIsLengthChecksumDataChecksum) {
  const std::string framed = FrameRecord("abc");
  ASSERT_EQ(framed.size(), 8u + 4 + 3 + 4);
  EXPECT_EQ(framed.substr(0, 8), std::string("\x03\0\0\0\0\0\0\0", 8));
  EXPECT_EQ(framed.substr(12, 3), "abc");
  const uint32_t data_crc = MaskedCrc32c("abc");
  EXPECT_EQ(static_cast<unsigned char>(framed[15]), data_crc & 0xff);
  EXPECT_EQ(static_cast<unsigned char>(framed[18]), data_crc >> 24);
}

TEST(TfRecord, RecordsParseBackInOrder) {
  const std::string bytes = FrameRecord("first") + FrameRecord("") + FrameRecord(std::string(1000, 'x'));
  auto records = ParseRecords(bytes);
  ASSERT_TRUE(records.ok()) << records.status().ToString();
  ASSERT_EQ(records->size(), 3u);
  EXPECT_EQ((*records)[0], "first");
  EXPECT_EQ((*records)[1], "");
  EXPECT_EQ((*records)[2], std::string(1000, 'x'));
}

TEST(TfRecord, TornLastRecordIsDropped) {
  const std::string whole = FrameRecord("kept") + FrameRecord("torn away");
  for (size_t cut = FrameRecord("kept").size(); cut < whole.size(); ++cut) {
    auto records = ParseRecords(whole.substr(0, cut));
    ASSERT_TRUE(records.ok()) << "cut at " << cut << ": " << records.status().ToString();
    ASSERT_EQ(records->size(), 1u) << "cut at " << cut;
    EXPECT_EQ((*records)[0], "kept");
  }
}

TEST(TfRecord, CorruptDataIsDataLossNamingTheOffset) {
  std::string bytes = FrameRecord("good") + FrameRecord("bad!");
  bytes[FrameRecord("good").size() + 12] ^= 0x01;  // a byte of the second record's data
  auto records = ParseRecords(bytes);
  ASSERT_FALSE(records.ok());
  EXPECT_EQ(records.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(records.status().message().find("offset 20"), std::string::npos) << records.status().message();
  EXPECT_NE(records.status().message().find("data's checksum"), std::string::npos);
}

TEST(TfRecord, CorruptLengthIsDataLoss) {
  std::string bytes = FrameRecord("good");
  bytes[0] ^= 0x04;
  auto records = ParseRecords(bytes);
  ASSERT_FALSE(records.ok());
  EXPECT_NE(records.status().message().find("length's checksum"), std::string::npos);
}

}  // namespace
}  // namespace anneal::report
