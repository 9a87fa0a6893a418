// Helpers shared by the libFuzzer targets under bench/fuzz (docs/development.md "Fuzzing").
//
// ProcessTempDir: one scratch directory per fuzzer process (mkdtemp under $TMPDIR or /tmp), removed at exit
// (atexit, so libFuzzer's normal exits — -runs, -max_total_time, a crash report — leave nothing behind; a
// SIGKILLed process leaves /tmp/anneal-fuzz-*). Targets keep every file they write inside it.
// FuzzCheck: aborts with a message when an invariant the target checks does not hold (libFuzzer then saves
// the input as a crash).
// Reader: cuts a fuzz input into records (the multi-message targets' input format).
// LLVMFuzzerInitialize (fuzz_support.cc) silences spdlog and protobuf's logging for every target
// (ANNEAL_FUZZ_VERBOSE=1 keeps them); targets do not define their own.
//
// Thread-safety: none needed (libFuzzer runs one input at a time on one thread).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace anneal::fuzz {

// The process's scratch directory, created on first use.
const std::string& ProcessTempDir();

// Removes every entry of `dir` (not `dir` itself).
void ClearDir(const std::string& dir);

[[noreturn]] void FuzzFail(std::string_view what);
inline void FuzzCheck(bool ok, std::string_view what) {
  if (!ok) FuzzFail(what);
}

// Reads the input front to back; a read past the end yields zeros / a short string, never fails.
class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool empty() const { return pos_ >= size_; }
  uint8_t U8() { return pos_ < size_ ? data_[pos_++] : 0; }
  uint16_t U16() { return static_cast<uint16_t>(U8() | (U8() << 8)); }  // little-endian
  // `n` bytes, or what is left.
  std::string_view Bytes(size_t n) {
    const size_t take = n < size_ - pos_ ? n : size_ - pos_;
    std::string_view out(reinterpret_cast<const char*>(data_ + pos_), take);
    pos_ += take;
    return out;
  }
  // A u16 length, then that many bytes.
  std::string_view Chunk() { return Bytes(U16()); }
  std::string_view Rest() { return Bytes(size_ - pos_); }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// Appends a record in Reader's Chunk format (used by the seed generator).
inline void AppendChunk(std::string* out, std::string_view bytes) {
  const size_t n = bytes.size() < 0xffff ? bytes.size() : 0xffff;
  out->push_back(static_cast<char>(n & 0xff));
  out->push_back(static_cast<char>(n >> 8));
  out->append(bytes.substr(0, n));
}

}  // namespace anneal::fuzz
