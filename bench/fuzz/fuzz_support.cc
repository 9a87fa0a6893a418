#include "bench/fuzz/fuzz_support.h"

#include <google/protobuf/stubs/logging.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <system_error>

namespace anneal::fuzz {
namespace {

std::string* temp_dir = nullptr;

void RemoveTempDir() {
  if (temp_dir == nullptr) return;
  std::error_code ec;
  std::filesystem::remove_all(*temp_dir, ec);
}

}  // namespace

const std::string& ProcessTempDir() {
  if (temp_dir == nullptr) {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/anneal-fuzz-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) FuzzFail("mkdtemp " + tmpl + " failed");
    temp_dir = new std::string(tmpl);
    std::atexit(RemoveTempDir);
  }
  return *temp_dir;
}

void ClearDir(const std::string& dir) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    std::filesystem::remove_all(entry.path(), ec);
  }
}

void FuzzFail(std::string_view what) {
  std::fprintf(stderr, "fuzz invariant violated: %.*s\n", static_cast<int>(what.size()), what.data());
  std::abort();
}

}  // namespace anneal::fuzz

// libFuzzer calls this once before the first input: the daemons' logs (spdlog) and protobuf's parse warnings
// would print for nearly every input and slow the run down; ANNEAL_FUZZ_VERBOSE=1 keeps them for debugging.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* verbose = std::getenv("ANNEAL_FUZZ_VERBOSE");
  if (verbose == nullptr || std::string(verbose) != "1") {
    spdlog::set_level(spdlog::level::off);
    google::protobuf::SetLogHandler(nullptr);
  }
  return 0;
}
