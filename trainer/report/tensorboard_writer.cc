#include "trainer/report/tensorboard_writer.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <map>

#include "common/fsutil.h"
#include "trainer/report/tensorboard_event.pb.h"
#include "trainer/report/tfrecord.h"

namespace anneal::report {
namespace {

namespace fs = std::filesystem;
namespace tb = anneal::report::tensorboard;

// No "tfevents" in the name: TensorBoard ignores the copy until it is renamed into place.
constexpr const char* kPendingPrefix = ".anneal-pending.";

double WallTime() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string HostName() {
  std::array<char, 256> name{};
  if (::gethostname(name.data(), name.size() - 1) != 0) return "localhost";
  return name.data();
}

// HF's default logging_dir leaf: datetime.now().strftime("%b%d_%H-%M-%S") + "_" + hostname.
std::string NewRunName() {
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  ::localtime_r(&now, &local);
  std::array<char, 64> stamp{};
  std::strftime(stamp.data(), stamp.size(), "%b%d_%H-%M-%S", &local);
  return std::string(stamp.data()) + "_" + HostName();
}

// SummaryWriter's file name: events.out.tfevents.<seconds>.<hostname>.<pid>.<per-process counter>.
std::string NewFileName() {
  static int counter = 0;
  return "events.out.tfevents." + std::to_string(static_cast<int64_t>(WallTime())) + "." + HostName() + "." +
         std::to_string(::getpid()) + "." + std::to_string(counter++);
}

// The run directory under `runs` that was written last (it holds event files), or "" when there is none.
std::string NewestRunDir(const std::string& runs) {
  std::error_code ec;
  std::string best;
  fs::file_time_type best_time{};
  for (const auto& entry : fs::directory_iterator(runs, ec)) {
    if (!entry.is_directory(ec) || EventFiles(entry.path().string()).empty()) continue;
    const auto t = fs::last_write_time(entry.path(), ec);
    if (best.empty() || t > best_time) {
      best = entry.path().string();
      best_time = t;
    }
  }
  return best;
}

void RemovePendingCopies(const std::string& run_dir) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(run_dir, ec)) {
    if (entry.path().filename().string().rfind(kPendingPrefix, 0) == 0) fs::remove(entry.path(), ec);
  }
}

// Serialized summary events of `files` at steps <= last_step, in file order.
// The summaries of steps <= last_step, in step order. A step found in several files (oldest name first) is taken
// from the newest: a resume interrupted after its copy took its final name and before the earlier files were
// removed leaves both, and the copy already holds what they held.
StatusOr<std::vector<std::string>> KeptRecords(const std::vector<std::string>& files, int64_t last_step) {
  std::map<int64_t, std::vector<std::string>> by_step;
  for (const std::string& file : files) {
    ASSIGN_OR_RETURN(std::string bytes, ReadFile(file));
    auto records = ParseRecords(bytes);
    if (!records.ok()) return DataLossError(file + ": " + records.status().message());
    std::map<int64_t, std::vector<std::string>> in_file;
    for (std::string& data : *records) {
      tb::Event event;
      if (!event.ParseFromString(data)) return DataLossError(file + ": a record is not an Event message");
      if (event.has_summary() && event.step() <= last_step) in_file[event.step()].push_back(std::move(data));
    }
    for (auto& [step, records_at_step] : in_file) by_step[step] = std::move(records_at_step);
  }
  std::vector<std::string> kept;
  for (auto& [step, records_at_step] : by_step) {
    for (std::string& data : records_at_step) kept.push_back(std::move(data));
  }
  return kept;
}

std::string FileVersionEvent() {
  tb::Event event;
  event.set_wall_time(WallTime());
  event.set_file_version("brain.Event:2");
  return event.SerializeAsString();
}

}  // namespace

std::vector<std::string> EventFiles(const std::string& run_dir) {
  std::vector<std::string> files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(run_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_regular_file(ec) && name.find("tfevents") != std::string::npos && name.rfind(kPendingPrefix, 0) != 0) {
      files.push_back(entry.path().string());
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

StatusOr<std::unique_ptr<TensorBoardWriter>> TensorBoardWriter::Open(const std::string& output_dir,
                                                                     int64_t resume_step) {
  const std::string runs = output_dir + "/runs";
  std::string run_dir = resume_step > 0 ? NewestRunDir(runs) : "";
  if (run_dir.empty()) run_dir = runs + "/" + NewRunName();
  RETURN_IF_ERROR(MakeDirs(run_dir));
  RemovePendingCopies(run_dir);
  const std::vector<std::string> earlier = EventFiles(run_dir);
  std::vector<std::string> kept;
  if (resume_step > 0 && !earlier.empty()) {
    ASSIGN_OR_RETURN(kept, KeptRecords(earlier, resume_step));
  }

  const std::string path = run_dir + "/" + NewFileName();
  const std::string write_path = earlier.empty() ? path : run_dir + "/" + kPendingPrefix + NewFileName();
  std::FILE* file = std::fopen(write_path.c_str(), "wb");
  if (file == nullptr) return InternalError("tensorboard: cannot create " + write_path + ": " + ErrnoText(errno));
  std::unique_ptr<TensorBoardWriter> writer(new TensorBoardWriter(run_dir, path, file));
  RETURN_IF_ERROR(writer->WriteRecord(FileVersionEvent()));
  for (const std::string& data : kept) RETURN_IF_ERROR(writer->WriteRecord(data));
  if (write_path != path) {
    // The copy is durable and takes its final name before the earlier files go (the FILE stays open): a crash
    // in between leaves both, and KeptRecords takes each step once, from the copy.
    if (::fsync(::fileno(file)) != 0)
      return InternalError("tensorboard: fsync " + write_path + ": " + ErrnoText(errno));
    std::error_code ec;
    fs::rename(write_path, path, ec);
    if (ec) return InternalError("tensorboard: cannot rename " + write_path + " to " + path + ": " + ec.message());
    for (const std::string& old : earlier) {
      if (!fs::remove(old, ec) && ec) return InternalError("tensorboard: cannot remove " + old + ": " + ec.message());
    }
  }
  return writer;
}

TensorBoardWriter::~TensorBoardWriter() {
  if (file_ != nullptr) std::fclose(file_);
}

Status TensorBoardWriter::WriteRecord(const std::string& data) {
  const std::string record = FrameRecord(data);
  if (std::fwrite(record.data(), 1, record.size(), file_) != record.size() || std::fflush(file_) != 0) {
    return InternalError("tensorboard: cannot write " + path_ + ": " + ErrnoText(errno));
  }
  return Status::Ok();
}

Status TensorBoardWriter::Add(int64_t step, const Scalars& scalars) {
  tb::Event event;
  event.set_wall_time(WallTime());
  event.set_step(step);
  for (const auto& [tag, value] : scalars) {
    tb::SummaryValue* v = event.mutable_summary()->add_value();
    v->set_tag(tag);
    v->set_simple_value(static_cast<float>(value));
  }
  return WriteRecord(event.SerializeAsString());
}

}  // namespace anneal::report
