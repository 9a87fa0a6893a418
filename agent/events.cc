#include "agent/events.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

namespace anneal::agent {
namespace {

using nlohmann::json;

void CopyValues(const json& values, google::protobuf::Map<std::string, double>* out) {
  if (!values.is_object()) return;
  for (const auto& [k, v] : values.items()) {
    if (v.is_number()) (*out)[k] = v.get<double>();
  }
}

pb::MetricBatch* NewMetricBatch(TrainerEvent* ev, const TaskIdentity& id) {
  ev->report.emplace();
  pb::MetricBatch* batch = ev->report->mutable_metric_batch();
  batch->set_job_id(id.job_id);
  batch->set_attempt(id.attempt);
  batch->set_epoch(id.epoch);
  return batch;
}

// A report carrying one job event (a notable trainer message) of this task's attempt.
void AddJobEvent(TrainerEvent* ev, const TaskIdentity& id, const std::string& kind, const std::string& message) {
  pb::JobEvent* e = NewMetricBatch(ev, id)->add_events();
  e->set_job_id(id.job_id);
  e->set_time_ms(ev->time_ms);
  e->set_attempt(id.attempt);
  e->set_epoch(id.epoch);
  e->set_kind(kind);
  e->set_message(message);
}

std::string OptionalString(const json& j, const char* key) {
  return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : std::string();
}

// "eval of adapter A on dataset D: eval_loss=2.3" when the event names what was evaluated (an eval job),
// "eval at step N: eval_loss=2.3" otherwise (training's periodic evaluation).
std::string EvalText(const json& j, uint64_t step) {
  const std::string adapter = OptionalString(j, "adapter");
  const std::string model = OptionalString(j, "model");
  const std::string dataset = OptionalString(j, "dataset");
  std::string text;
  if (!adapter.empty() || !model.empty()) {
    text = adapter.empty() ? "eval of model " + model : "eval of adapter " + adapter;
    if (!dataset.empty()) text += " on dataset " + dataset;
  } else {
    text = "eval at step " + std::to_string(step);
    if (!dataset.empty()) text += " on dataset " + dataset;
  }
  text += ":";
  if (j.contains("values") && j["values"].is_object()) {
    for (const auto& [k, v] : j["values"].items()) {
      text += " " + k + "=" + (v.is_number() ? fmt::format("{:.4g}", v.get<double>()) : v.dump());
    }
  }
  return text;
}

// An integer field; a float is truncated only when it fits (converting 5e32 to int64 is undefined behaviour).
int64_t IntField(const json& j, const char* key, int64_t fallback) {
  if (!j.contains(key)) return fallback;
  const json& v = j[key];
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (d >= -9.2e18 && d <= 9.2e18) return static_cast<int64_t>(d);
  }
  return fallback;
}

}  // namespace

StatusOr<TrainerEvent> ParseTrainerEvent(std::string_view line, const TaskIdentity& id) {
  const auto where = [&](const std::string& what) {
    std::string shown(line.substr(0, 200));
    return InvalidArgumentError("trainer event of job " + id.job_id + ": " + what + " in line '" + shown + "'");
  };
  json j = json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return where("malformed JSON");
  if (!j.is_object()) return where("not a JSON object");
  if (!j.contains("type") || !j["type"].is_string()) return where("missing string field 'type'");
  TrainerEvent ev;
  ev.type = j["type"].get<std::string>();
  if (j.contains("rank") && j["rank"].is_number_integer()) ev.rank = j["rank"].get<int>();
  ev.time_ms = IntField(j, "time_ms", 0);
  try {
    if (ev.type == "started") {
      ev.pid = static_cast<int>(IntField(j, "pid", 0));
    } else if (ev.type == "metrics" || ev.type == "eval") {
      if (!j.contains("step") || !j["step"].is_number_integer()) return where("missing integer field 'step'");
      pb::MetricBatch* batch = NewMetricBatch(&ev, id);
      pb::MetricPoint* p = batch->add_points();
      p->set_job_id(id.job_id);
      p->set_step(j["step"].get<uint64_t>());
      p->set_time_ms(ev.time_ms);
      p->set_attempt(id.attempt);
      p->set_total_steps(j.value("total_steps", uint64_t{0}));
      if (j.contains("values")) CopyValues(j["values"], p->mutable_values());
      if (ev.type == "eval") {
        pb::JobEvent* e = batch->add_events();
        e->set_job_id(id.job_id);
        e->set_time_ms(ev.time_ms);
        e->set_attempt(id.attempt);
        e->set_epoch(id.epoch);
        e->set_kind("eval");
        e->set_message(EvalText(j, p->step()));
      }
    } else if (ev.type == "checkpoint") {
      if (!j.contains("step") || !j["step"].is_number_integer()) return where("missing integer field 'step'");
      if (!j.contains("path") || !j["path"].is_string()) return where("missing string field 'path'");
      ev.report.emplace();
      pb::CheckpointRecord* c = ev.report->mutable_checkpoint_committed()->mutable_checkpoint();
      c->set_job_id(id.job_id);
      c->set_step(j["step"].get<uint64_t>());
      c->set_path(j["path"].get<std::string>());
      if (j.contains("files") && j["files"].is_array()) {
        for (const auto& f : j["files"]) {
          pb::CheckpointFile* file = c->add_files();
          file->set_path(f.value("path", ""));
          file->set_size_bytes(f.value("size", uint64_t{0}));
          file->set_sha256(f.value("sha256", ""));
        }
      }
      if (j.contains("layout") && j["layout"].is_object()) {
        const json& l = j["layout"];
        pb::ResolvedResources* r = c->mutable_layout();
        r->set_world_size(l.value("world_size", 0u));
        r->set_tensor_parallel(l.value("tensor_parallel", 0u));
        r->set_pipeline_parallel(l.value("pipeline_parallel", 0u));
        r->set_data_parallel(l.value("data_parallel", 0u));
      }
      if (j.contains("metrics")) CopyValues(j["metrics"], c->mutable_metrics());
      c->set_state(pb::CHECKPOINT_COMMITTED);
      c->set_attempt(id.attempt);
      c->set_epoch(id.epoch);
      c->set_committed_at_ms(ev.time_ms);
      c->set_node_id(id.node_id);
    } else if (ev.type == "message") {
      ev.message = j.value("text", "");
      AddJobEvent(&ev, id, "message",
                  fmt::format("[{}] rank {}: {}", j.value("level", std::string("info")), ev.rank, ev.message));
    } else if (ev.type == "preempted") {
      // The gang agreed to stop on a preemption: a job event, so the history says where it stopped.
      const std::string path = OptionalString(j, "checkpoint");
      AddJobEvent(&ev, id, "preempted",
                  fmt::format("preempted at step {}: {}", IntField(j, "step", 0),
                              path.empty() ? std::string("no checkpoint was written") : "checkpoint " + path));
    } else if (ev.type == "finished") {
      ev.finished_status = j.value("status", std::string("ok"));
      ev.message = j.value("message", "");
    }
  } catch (const json::exception& e) {
    return where(std::string("wrong field type (") + e.what() + ")");
  }
  return ev;
}

std::vector<std::string> LineSplitter::Feed(std::string_view bytes) {
  std::vector<std::string> lines;
  while (!bytes.empty()) {
    const auto nl = bytes.find('\n');
    const std::string_view chunk = bytes.substr(0, nl);
    if (!skipping_) partial_.append(chunk);
    if (partial_.size() > max_line_) {
      partial_.clear();
      skipping_ = true;
      ++dropped_;
    }
    if (nl == std::string_view::npos) break;
    if (!skipping_ && !partial_.empty()) lines.push_back(std::move(partial_));
    partial_.clear();
    skipping_ = false;
    bytes.remove_prefix(nl + 1);
  }
  return lines;
}

std::string LineSplitter::TakeRest() {
  std::string rest = skipping_ ? std::string() : std::move(partial_);
  partial_.clear();
  skipping_ = false;
  return rest;
}

}  // namespace anneal::agent
