#include "trainer/report/tfrecord.h"

#include <boost/crc.hpp>

namespace anneal::report {
namespace {

// CRC-32C: polynomial 0x1EDC6F41, reflected, initial and final XOR 0xFFFFFFFF.
using Crc32cComputer = boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true>;

constexpr uint32_t kMaskDelta = 0xa282ead8u;
constexpr size_t kHeaderBytes = 8 + 4;
constexpr size_t kFooterBytes = 4;

void AppendLittleEndian(std::string* out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t ReadLittleEndian(std::string_view bytes, size_t at, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(bytes[at + static_cast<size_t>(i)]);
  return v;
}

}  // namespace

uint32_t Crc32c(std::string_view data) {
  Crc32cComputer crc;
  crc.process_bytes(data.data(), data.size());
  return crc.checksum();
}

uint32_t MaskedCrc32c(std::string_view data) {
  const uint32_t crc = Crc32c(data);
  return ((crc >> 15) | (crc << 17)) + kMaskDelta;
}

std::string FrameRecord(std::string_view data) {
  std::string out;
  out.reserve(kHeaderBytes + data.size() + kFooterBytes);
  AppendLittleEndian(&out, data.size(), 8);
  AppendLittleEndian(&out, MaskedCrc32c(out), 4);
  out.append(data);
  AppendLittleEndian(&out, MaskedCrc32c(data), 4);
  return out;
}

StatusOr<std::vector<std::string>> ParseRecords(std::string_view bytes) {
  std::vector<std::string> records;
  size_t at = 0;
  while (bytes.size() - at >= kHeaderBytes) {
    const std::string_view length_bytes = bytes.substr(at, 8);
    if (ReadLittleEndian(bytes, at + 8, 4) != MaskedCrc32c(length_bytes)) {
      return DataLossError("TFRecord at offset " + std::to_string(at) + ": the length's checksum does not match");
    }
    const uint64_t length = ReadLittleEndian(bytes, at, 8);
    if (length > bytes.size() - at - kHeaderBytes || bytes.size() - at - kHeaderBytes - length < kFooterBytes) {
      break;  // torn last record
    }
    const std::string_view data = bytes.substr(at + kHeaderBytes, length);
    if (ReadLittleEndian(bytes, at + kHeaderBytes + length, 4) != MaskedCrc32c(data)) {
      return DataLossError("TFRecord at offset " + std::to_string(at) + ": the data's checksum does not match");
    }
    records.emplace_back(data);
    at += kHeaderBytes + length + kFooterBytes;
  }
  return records;
}

}  // namespace anneal::report
