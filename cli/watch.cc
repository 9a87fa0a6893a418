// watch: follows a job through WatchJob long polls: events as lines, metrics as a live progress bar (on a
// terminal) or one line per metric point (in a pipe), and the final state with the result.
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <optional>
#include <thread>

#include "cli/commands.h"
#include "cli/output.h"
#include "protocol/states.h"

namespace anneal::cli {
namespace {

constexpr uint32_t kPollMs = 2000;

// Throughput seen by this watcher, for the ETA: steps per ms between the first and the latest metric point.
struct Rate {
  std::optional<std::pair<uint64_t, int64_t>> first;  // (step, time_ms)
  uint64_t last_step = 0;
  int64_t last_ms = 0;

  void Observe(const pb::MetricPoint& m) {
    if (!first) first = {m.step(), m.time_ms()};
    last_step = m.step();
    last_ms = m.time_ms();
  }
  std::string Eta(uint64_t total) const {
    if (!first || total <= last_step || last_step <= first->first || last_ms <= first->second) return "-";
    double ms_per_step = double(last_ms - first->second) / double(last_step - first->first);
    return Duration(static_cast<int64_t>(ms_per_step * double(total - last_step)));
  }
};

double Value(const pb::MetricPoint& m, const std::string& key, double fallback = -1) {
  auto it = m.values().find(key);
  return it == m.values().end() ? fallback : it->second;
}

std::string ProgressText(const pb::MetricPoint& m, const Rate& rate, bool bar) {
  std::string s;
  if (bar && m.total_steps() > 0) {
    constexpr int kWidth = 30;
    int filled = static_cast<int>(kWidth * std::min<double>(1.0, double(m.step()) / double(m.total_steps())));
    s += "[" + std::string(filled, '#') + std::string(kWidth - filled, '.') + "] ";
  }
  s += m.total_steps() > 0 ? fmt::format("step {}/{}", m.step(), m.total_steps()) : fmt::format("step {}", m.step());
  if (double loss = Value(m, "loss", NAN); !std::isnan(loss)) s += "  loss " + Metric(loss);
  if (double lr = Value(m, "lr", NAN); !std::isnan(lr)) s += "  lr " + Metric(lr);
  if (double tps = Value(m, "tokens_per_s", NAN); !std::isnan(tps)) s += fmt::format("  {:.0f} tok/s", tps);
  if (double el = Value(m, "eval_loss", NAN); !std::isnan(el)) s += "  eval_loss " + Metric(el);
  if (m.total_steps() > 0) s += "  ETA " + rate.Eta(m.total_steps());
  return s;
}

std::string EventText(const pb::JobEvent& e) {
  // State changes show the new state; other events (error, checkpoint, message) their kind.
  std::string s = Timestamp(e.time_ms());
  const bool state_change = (e.kind().empty() || e.kind() == "state") && e.to_state() != pb::JOB_STATE_UNSPECIFIED;
  if (state_change)
    s += "  " + std::string(protocol::StateName(e.to_state()));
  else
    s += "  " + (e.kind().empty() ? std::string("event") : e.kind());
  if (e.attempt() > 0) s += fmt::format("  attempt {}", e.attempt());
  if (!e.message().empty()) s += ": " + e.message();
  return s;
}

}  // namespace

int WatchJob(const GlobalOptions& g, const std::string& job_id) {
  auto client = MakeClient(g);
  if (!client.ok()) return ReportError("watch", client.status());
  const bool live = !g.json && ::isatty(STDOUT_FILENO);
  uint64_t after_event = 0, after_metric = 0;
  Rate rate;
  bool progress_shown = false;
  bool answered_once = false;
  bool lost = false;
  std::chrono::steady_clock::time_point lost_since{};
  // The long poll is at most --timeout, so a short --timeout also notices a lost coordinator quickly.
  const uint32_t poll_ms = static_cast<uint32_t>(std::min<double>(kPollMs, g.timeout_s * 1000));
  const auto reconnect = std::chrono::milliseconds(static_cast<int64_t>(g.reconnect_s * 1000));
  auto clear_progress = [&] {
    if (progress_shown) std::cout << "\r\033[K";
    progress_shown = false;
  };
  while (true) {
    pb::ClientRequest req;
    auto* w = req.mutable_watch();
    w->set_job_id(job_id);
    w->set_after_event_seq(after_event);
    w->set_after_metric_step(after_metric);
    w->set_timeout_ms(poll_ms);
    auto reply = (*client)->Call(req, std::chrono::milliseconds(poll_ms));
    if (!reply.ok()) {
      // A coordinator that answered before and then went away (a restart, a network blip) is waited for; one
      // that never answered is reported at once.
      const auto now = std::chrono::steady_clock::now();
      const bool retry =
          reply.status().code() == StatusCode::kUnavailable && answered_once && (!lost || now - lost_since < reconnect);
      if (!retry) {
        clear_progress();
        return ReportError("watch", reply.status());
      }
      if (!lost) {
        clear_progress();
        lost = true;
        lost_since = now;
        std::cerr << "anneal watch: " << reply.status().message() << "; retrying for up to "
                  << std::chrono::duration_cast<std::chrono::seconds>(reconnect).count() << " s\n";
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      continue;
    }
    answered_once = true;
    if (lost) {
      std::cerr << "anneal watch: reconnected to " << (*client)->address() << "\n";
      lost = false;
    }
    const pb::WatchJobReply& r = reply->watch();
    for (const pb::JobEvent& e : r.events()) {
      after_event = std::max(after_event, e.seq());
      if (g.json) {
        nlohmann::json j = ToJson(e);
        j["type"] = "event";
        std::cout << j.dump() << "\n";
      } else {
        clear_progress();
        std::cout << EventText(e) << "\n";
      }
    }
    const pb::MetricPoint* latest = nullptr;
    for (const pb::MetricPoint& m : r.metrics()) {
      after_metric = std::max(after_metric, m.step());
      rate.Observe(m);
      latest = &m;
      if (g.json) {
        nlohmann::json j = ToJson(m);
        j["type"] = "metric";
        std::cout << j.dump() << "\n";
      } else if (!live) {
        std::cout << ProgressText(m, rate, /*bar=*/false) << "\n";
      }
    }
    if (live && latest) {
      std::cout << "\r\033[K" << ProgressText(*latest, rate, /*bar=*/true);
      progress_shown = true;
    }
    std::cout.flush();
    const pb::JobRecord& job = r.job();
    if (protocol::IsTerminal(job.state())) {
      clear_progress();
      const std::string state = std::string(protocol::StateName(job.state()));
      if (g.json) {
        std::cout << nlohmann::json{{"type", "final"},
                                    {"job_id", job.job_id()},
                                    {"state", state},
                                    {"result", job.result()},
                                    {"output_dir", job.output_dir()}}
                         .dump()
                  << "\n";
      } else {
        std::string line = fmt::format("{} {}", job.job_id().empty() ? job_id : job.job_id(), state);
        if (!job.result().empty()) line += ": " + job.result();
        if (job.state() == pb::JOB_SUCCEEDED && !job.output_dir().empty())
          line += " (output: " + job.output_dir() + ")";
        std::cout << line << "\n";
      }
      std::cout.flush();
      return job.state() == pb::JOB_SUCCEEDED ? kExitOk : kExitFailed;
    }
  }
}

void AddWatchCommand(CLI::App& app, GlobalOptions& g, Action* action) {
  auto job = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand("watch", "Follow a job live: progress, loss, tokens/s, ETA; exit 0 if it succeeds");
  cmd->add_option("job", *job, "job id")->required();
  cmd->add_option("--reconnect", g.reconnect_s, "seconds to keep retrying when the coordinator goes away")
      ->capture_default_str();
  cmd->callback([&g, job, action] { *action = [&g, job] { return WatchJob(g, *job); }; });
}

}  // namespace anneal::cli
