// Fuzz target: the trainer event parser (agent/events.h). Input: bytes from a rank's event pipe, fed to a
// LineSplitter in pieces (the first byte sets the piece size) with a small line limit; every line goes to
// ParseTrainerEvent. Accepted events must carry a report (when any) that serializes, for the task's job.
#include <cstdint>
#include <string>

#include "agent/events.h"
#include "bench/fuzz/fuzz_support.h"

using anneal::fuzz::FuzzCheck;

namespace {

void ParseLine(const std::string& line, const anneal::agent::TaskIdentity& id) {
  auto event = anneal::agent::ParseTrainerEvent(line, id);
  if (!event.ok()) {
    FuzzCheck(!event.status().message().empty(), "a refused event has an error message");
    return;
  }
  if (event->report) {
    std::string bytes;
    FuzzCheck(event->report->SerializeToString(&bytes), "the report serializes");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  anneal::fuzz::Reader in(data, size);
  const size_t piece = 1 + in.U8();
  const anneal::agent::TaskIdentity id{"job-1", 2, 7, "node-a"};
  anneal::agent::LineSplitter lines(/*max_line=*/4096);
  size_t fed = 0;
  while (!in.empty()) {
    const auto bytes = in.Bytes(piece);
    fed += bytes.size();
    for (const std::string& line : lines.Feed(bytes)) {
      FuzzCheck(line.size() <= 4096, "LineSplitter yields no line over its limit");
      FuzzCheck(line.find('\n') == std::string::npos, "a line holds no newline");
      ParseLine(line, id);
    }
  }
  const std::string rest = lines.TakeRest();
  FuzzCheck(rest.size() <= fed, "the rest is part of the input");
  if (!rest.empty()) ParseLine(rest, id);
  return 0;
}
