#include "agent/spool.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

namespace anneal::agent {
namespace {

std::string Errno() {
  return std::strerror(errno);
}

Status WriteAll(int fd, const std::string& data, const std::string& path) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return DataLossError("writing " + path + ": " + Errno());
    }
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

std::string Frame(const pb::AgentToCoordinator& msg) {
  std::string body = msg.SerializeAsString();
  std::string out(4, '\0');
  const uint32_t n = static_cast<uint32_t>(body.size());
  out[0] = static_cast<char>(n >> 24);
  out[1] = static_cast<char>(n >> 16);
  out[2] = static_cast<char>(n >> 8);
  out[3] = static_cast<char>(n);
  return out + body;
}

// The acked watermark as WriteAcked writes it (decimal, newline), below kMaxReportSeq; nullopt otherwise.
std::optional<uint64_t> ParseAcked(std::string text) {
  if (!text.empty() && text.back() == '\n') text.pop_back();
  uint64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || value >= kMaxReportSeq) {
    return std::nullopt;
  }
  return value;
}

}  // namespace

uint64_t ReportSeq(const pb::AgentToCoordinator& msg) {
  switch (msg.body_case()) {
    case pb::AgentToCoordinator::kTaskUpdate:
      return msg.task_update().seq();
    case pb::AgentToCoordinator::kCheckpointCommitted:
      return msg.checkpoint_committed().seq();
    case pb::AgentToCoordinator::kMetricBatch:
      return msg.metric_batch().seq();
    case pb::AgentToCoordinator::kCheckpointDeleted:
      return msg.checkpoint_deleted().seq();
    case pb::AgentToCoordinator::kCheckpointReplicated:
      return msg.checkpoint_replicated().seq();
    default:
      return 0;
  }
}

bool SetReportSeq(pb::AgentToCoordinator* msg, uint64_t seq) {
  switch (msg->body_case()) {
    case pb::AgentToCoordinator::kTaskUpdate:
      msg->mutable_task_update()->set_seq(seq);
      return true;
    case pb::AgentToCoordinator::kCheckpointCommitted:
      msg->mutable_checkpoint_committed()->set_seq(seq);
      return true;
    case pb::AgentToCoordinator::kMetricBatch:
      msg->mutable_metric_batch()->set_seq(seq);
      return true;
    case pb::AgentToCoordinator::kCheckpointDeleted:
      msg->mutable_checkpoint_deleted()->set_seq(seq);
      return true;
    case pb::AgentToCoordinator::kCheckpointReplicated:
      msg->mutable_checkpoint_replicated()->set_seq(seq);
      return true;
    default:
      return false;
  }
}

StatusOr<std::unique_ptr<Spool>> Spool::Open(const std::string& dir, uint64_t max_bytes) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return InternalError("creating spool directory " + dir + ": " + ec.message());
  std::unique_ptr<Spool> spool(new Spool(dir, max_bytes));
  RETURN_IF_ERROR(spool->Load());
  return spool;
}

Spool::~Spool() {
  if (fd_ >= 0) ::close(fd_);
}

Status Spool::Load() {
  if (std::ifstream acked(dir_ + "/acked", std::ios::binary); acked) {
    std::string text((std::istreambuf_iterator<char>(acked)), std::istreambuf_iterator<char>());
    const std::optional<uint64_t> watermark = ParseAcked(text);
    if (!watermark) {
      spdlog::warn(
          "spool {}: acked file unreadable ('{}'), counting from 0: reports the coordinator already "
          "applied are resent and dropped there",
          dir_, text.substr(0, 40));
    }
    last_acked_ = watermark.value_or(0);
  }
  const std::string path = dir_ + "/reports.log";
  std::string data;
  {
    std::ifstream in(path, std::ios::binary);
    if (in) {
      std::ostringstream ss;
      ss << in.rdbuf();
      data = ss.str();
    }
  }
  size_t at = 0;
  uint64_t max_seq = last_acked_;
  uint64_t last_seq_in_file = 0;
  while (at + 4 <= data.size()) {
    const uint32_t n = (static_cast<uint32_t>(static_cast<uint8_t>(data[at])) << 24) |
                       (static_cast<uint32_t>(static_cast<uint8_t>(data[at + 1])) << 16) |
                       (static_cast<uint32_t>(static_cast<uint8_t>(data[at + 2])) << 8) |
                       static_cast<uint32_t>(static_cast<uint8_t>(data[at + 3]));
    if (at + 4 + n > data.size()) break;  // torn tail
    pb::AgentToCoordinator msg;
    if (!msg.ParseFromArray(data.data() + at + 4, static_cast<int>(n))) break;
    // Seqs in the file only increase (Append and Rewrite keep that): anything else is corrupt, cut like a tail.
    const uint64_t seq = ReportSeq(msg);
    if (seq == 0 || seq <= last_seq_in_file || seq >= kMaxReportSeq) break;
    last_seq_in_file = seq;
    at += 4 + n;
    ++records_in_file_;
    max_seq = std::max(max_seq, seq);
    if (seq > last_acked_) pending_.push_back(std::move(msg));
  }
  next_seq_ = max_seq + 1;
  file_bytes_ = at;
  if (at != data.size()) {
    spdlog::warn("spool {}: cutting {} bytes of a torn or unreadable record at offset {}", path, data.size() - at, at);
    if (::truncate(path.c_str(), static_cast<off_t>(at)) != 0 && errno != ENOENT) {
      return DataLossError("truncating the torn tail of " + path + ": " + Errno());
    }
  }
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) return InternalError("opening spool " + path + ": " + Errno());
  if (pending_.empty() && records_in_file_ > 0) RETURN_IF_ERROR(Rewrite());
  return Status::Ok();
}

StatusOr<uint64_t> Spool::Append(pb::AgentToCoordinator* msg) {
  if (!SetReportSeq(msg, next_seq_)) {
    return InvalidArgumentError("spool: message body " + std::to_string(msg->body_case()) + " carries no seq");
  }
  const std::string path = dir_ + "/reports.log";
  const std::string record = Frame(*msg);
  if (!Fits(record.size())) {
    if (msg->has_metric_batch()) {
      if (dropped_metric_batches_++ % 100 == 0) {
        spdlog::warn(
            "spool {} is full ({} bytes of {} spool_max_bytes, {} reports unacknowledged): dropping new "
            "metric batches until the coordinator acknowledges ({} dropped so far)",
            dir_, file_bytes_, max_bytes_, pending_.size(), dropped_metric_batches_);
      }
      return ResourceExhaustedError(
          fmt::format("spool {} is full ({} of {} bytes): metric batch dropped", dir_, file_bytes_, max_bytes_));
    }
    spdlog::warn(
        "spool {} is past its limit ({} of {} bytes): keeping report seq {} anyway (task and checkpoint "
        "reports are never dropped)",
        dir_, file_bytes_, max_bytes_, next_seq_);
  }
  Status st = WriteAll(fd_, record, path);
  if (st.ok() && ::fdatasync(fd_) != 0) st = DataLossError("fdatasync " + path + ": " + Errno());
  if (st.ok()) file_bytes_ += record.size();
  // Even when the disk failed the report stays pending in memory (resent until acked while this agent
  // lives); only its survival across a restart is lost.
  if (st.ok())
    ++records_in_file_;
  else
    spdlog::error("spool: report seq {} is kept in memory only: {}", next_seq_, st.message());
  pending_.push_back(*msg);
  return next_seq_++;
}

Status Spool::WriteAcked() {
  const std::string tmp = dir_ + "/acked.tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return InternalError("opening " + tmp + ": " + Errno());
  Status st = WriteAll(fd, std::to_string(last_acked_) + "\n", tmp);
  if (st.ok() && ::fsync(fd) != 0) st = DataLossError("fsync " + tmp + ": " + Errno());
  ::close(fd);
  RETURN_IF_ERROR(st);
  if (::rename(tmp.c_str(), (dir_ + "/acked").c_str()) != 0) {
    return InternalError("renaming " + tmp + ": " + Errno());
  }
  return Status::Ok();
}

Status Spool::Ack(uint64_t seq) {
  if (seq <= last_acked_) return Status::Ok();
  last_acked_ = std::min(seq, next_seq_ - 1);
  while (!pending_.empty() && ReportSeq(pending_.front()) <= last_acked_) pending_.pop_front();
  RETURN_IF_ERROR(WriteAcked());
  // Keep reports.log small: empty it when all is acknowledged, rewrite it when mostly acknowledged.
  if (pending_.empty() || (records_in_file_ > 1024 && pending_.size() * 2 < records_in_file_)) {
    RETURN_IF_ERROR(Rewrite());
  }
  return Status::Ok();
}

Status Spool::AdoptCoordinatorWatermark(uint64_t coordinator_acked) {
  if (coordinator_acked >= kMaxReportSeq) {
    return InvalidArgumentError("spool " + dir_ + ": the coordinator's acknowledged seq " +
                                std::to_string(coordinator_acked) +
                                " leaves no room for new seqs (limit 2^63); pending reports keep their seqs");
  }
  if (coordinator_acked < next_seq_) return Ack(coordinator_acked);
  spdlog::warn(
      "spool {}: the coordinator has seen seq {} but this spool only issued up to {}; renumbering {} "
      "pending reports after it",
      dir_, coordinator_acked, next_seq_ - 1, pending_.size());
  last_acked_ = coordinator_acked;
  next_seq_ = coordinator_acked + 1;
  for (auto& msg : pending_) SetReportSeq(&msg, next_seq_++);
  RETURN_IF_ERROR(WriteAcked());
  return Rewrite();
}

Status Spool::Rewrite() {
  const std::string path = dir_ + "/reports.log";
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return InternalError("opening " + tmp + ": " + Errno());
  std::string all;
  for (const auto& msg : pending_) all += Frame(msg);
  Status st = WriteAll(fd, all, tmp);
  if (st.ok() && ::fsync(fd) != 0) st = DataLossError("fsync " + tmp + ": " + Errno());
  ::close(fd);
  RETURN_IF_ERROR(st);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return InternalError("renaming " + tmp + ": " + Errno());
  if (fd_ >= 0) ::close(fd_);
  fd_ = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd_ < 0) return InternalError("reopening spool " + path + ": " + Errno());
  records_in_file_ = pending_.size();
  file_bytes_ = all.size();
  return Status::Ok();
}

bool Spool::Fits(uint64_t bytes) {
  if (max_bytes_ == 0 || file_bytes_ + bytes <= max_bytes_) return true;
  if (records_in_file_ > pending_.size()) {
    if (Status st = Rewrite(); !st.ok()) spdlog::error("spool: compacting: {}", st.ToString());
  }
  return file_bytes_ + bytes <= max_bytes_;
}

}  // namespace anneal::agent
