#include "storage/keys.h"

namespace anneal::storage {

void AppendBigEndian64(std::string* out, uint64_t value) {
  for (int shift = 56; shift >= 0; shift -= 8) out->push_back(static_cast<char>((value >> shift) & 0xff));
}

std::optional<uint64_t> ReadBigEndian64(std::string_view bytes) {
  if (bytes.size() != 8) return std::nullopt;
  uint64_t value = 0;
  for (char c : bytes) value = (value << 8) | static_cast<unsigned char>(c);
  return value;
}

std::string IdPrefix(std::string_view id) {
  std::string key(id);
  key.push_back('\0');
  return key;
}

std::string JobStepKey(std::string_view id, uint64_t number) {
  std::string key = IdPrefix(id);
  AppendBigEndian64(&key, number);
  return key;
}

std::optional<std::pair<std::string, uint64_t>> DecodeJobStepKey(std::string_view key) {
  if (key.size() < 9 || key[key.size() - 9] != '\0') return std::nullopt;
  auto number = ReadBigEndian64(key.substr(key.size() - 8));
  if (!number) return std::nullopt;
  return std::make_pair(std::string(key.substr(0, key.size() - 9)), *number);
}

}  // namespace anneal::storage
