#include "trainer/train/events.h"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "common/fsutil.h"

namespace anneal::train {

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string FormatDuration(double seconds) {
  const int64_t s = static_cast<int64_t>(seconds);
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                static_cast<long long>((s / 60) % 60), static_cast<long long>(s % 60));
  return buf;
}

EventSink EventSink::FromEnvironment(int rank) {
  EventSink sink;
  sink.rank_ = rank;
  if (const char* v = std::getenv("ANNEAL_EVENTS_FD")) {
    char* end = nullptr;
    long fd = std::strtol(v, &end, 10);
    if (end != v && *end == '\0' && fd >= 0 && ::fcntl(static_cast<int>(fd), F_GETFD) != -1) {
      sink.fd_ = static_cast<int>(fd);
    }
  }
  return sink;
}

void EventSink::Emit(const std::string& type, nlohmann::json fields) const {
  if (fd_ < 0) return;
  fields["type"] = type;
  fields["rank"] = rank_;
  fields["time_ms"] = NowMs();
  const std::string line = fields.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  size_t done = 0;
  while (done < line.size()) {
    ssize_t n = ::write(fd_, line.data() + done, line.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // the launcher went away; training goes on and its files remain the record
    }
    done += static_cast<size_t>(n);
  }
}

void TrainerLog::Append(const nlohmann::json& entry) const {
  std::ofstream out(path_, std::ios::app);
  out << entry.dump() << "\n";
}

void TrainerLog::TruncateAfter(int64_t step) const {
  auto text = ReadFile(path_);
  if (!text.ok()) return;
  std::istringstream in(*text);
  std::string line, kept;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.value("current_steps", int64_t{0}) > step) continue;
    kept += line + "\n";
  }
  WriteFileAtomic(path_, kept).IgnoreError();
}

}  // namespace anneal::train
