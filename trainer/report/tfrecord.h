// TFRecord framing, the container of TensorBoard event files: each record is
//   uint64 length (little-endian) | uint32 masked CRC32C of those 8 bytes | data | uint32 masked CRC32C of data
// where masked(c) = ((c >> 15) | (c << 17)) + 0xa282ead8 (TensorFlow's tensorflow/core/lib/hash/crc32c.h).
//
// Thread-safety: free functions over caller-owned values.
//
// Example:
//   std::string bytes = FrameRecord(event.SerializeAsString());
//   auto records = ParseRecords(file_contents);   // every record's data, or DATA_LOSS naming the offset
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace anneal::report {

// CRC32C (Castagnoli) of `data` (Boost.CRC), and TensorFlow's masking of it.
uint32_t Crc32c(std::string_view data);
uint32_t MaskedCrc32c(std::string_view data);

// One record: header, data and both checksums.
std::string FrameRecord(std::string_view data);

// The data of every record in `bytes`, in order. A torn last record (a writer killed mid-write) is dropped, as
// TensorBoard's reader drops it; a checksum mismatch anywhere is DATA_LOSS naming the record's offset.
StatusOr<std::vector<std::string>> ParseRecords(std::string_view bytes);

}  // namespace anneal::report
