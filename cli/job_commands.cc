// submit, ls, show, logs, cancel, checkpoints.
#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "cli/commands.h"
#include "cli/output.h"
#include "jobspec/jobspec.h"
#include "protocol/states.h"

namespace anneal::cli {
namespace {

// ---- submit ------------------------------------------------------------------------------------------------

struct SubmitOptions {
  std::string file;
  std::vector<std::string> overrides;
  std::string name;
  std::string team;
  bool follow = false;
};

// "key=/abs/path" overrides for every relative path of the spec (model, adapter, data, output, cache, tasks),
// and the resolved ZeRO stage.
std::vector<std::string> AbsolutePathOverrides(const jobspec::JobSpec& spec) {
  std::vector<std::string> out;
  auto add = [&](const char* key, const std::string& value) {
    if (value.empty() || value == "latest" || std::filesystem::path(value).is_absolute()) return;
    out.push_back(std::string(key) + "=" + std::filesystem::absolute(value).lexically_normal().string());
  };
  add("model.model_name_or_path", spec.model.model_name_or_path);
  add("model.adapter_name_or_path", spec.model.adapter_name_or_path);
  add("data.dataset_dir", spec.data.dataset_dir);
  add("data.tokenized_cache_dir", spec.data.tokenized_cache_dir);
  add("train.output_dir", spec.train.output_dir);
  add("train.resume_from_checkpoint", spec.train.resume_from_checkpoint);
  add("eval.task_dir", spec.eval.task_dir);
  add("eval.output_file", spec.eval.output_file);
  // A `deepspeed` JSON is read here, where its relative path means something; the coordinator gets the stage and
  // offload and bucket sizes it named (an override replaces the deepspeed key, so the coordinator never opens it).
  for (const auto& [key, size] : {std::pair{"reduce_bucket_size", spec.resources.reduce_bucket_size},
                                  std::pair{"gather_bucket_size", spec.resources.gather_bucket_size}}) {
    out.push_back(std::string("resources.") + key + "=" + (size == -1 ? "auto" : std::to_string(size)));
  }
  out.push_back("resources.offload=" + spec.resources.offload);
  out.push_back("resources.zero_stage=" + std::to_string(spec.resources.zero_stage));
  return out;
}

int Submit(const GlobalOptions& g, const SubmitOptions& o) {
  // Validate here first: a bad spec is reported before anything is sent, with the same messages the
  // coordinator would give.
  auto spec = jobspec::LoadJobSpecFile(o.file, o.overrides);
  if (!spec.ok()) {
    std::cerr << "anneal submit: " << spec.status().message() << "\n";
    return kExitUsage;
  }
  for (const std::string& w : spec->warnings) std::cerr << "anneal submit: warning: " << w << "\n";
  std::ifstream in(o.file, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();

  auto client = MakeClient(g);
  if (!client.ok()) return ReportError("submit", client.status());
  pb::ClientRequest req;
  auto* submit = req.mutable_submit();
  submit->set_team(o.team);
  submit->set_spec_yaml(text.str());
  for (const std::string& ov : o.overrides) submit->add_overrides(ov);
  // Agents run elsewhere (another directory, another node): relative paths are resolved here, against the
  // directory `anneal submit` runs in, as LLaMA-Factory resolves them against its working directory.
  for (const std::string& ov : AbsolutePathOverrides(*spec)) submit->add_overrides(ov);
  submit->set_name(o.name);
  auto reply = (*client)->Call(req);
  if (!reply.ok()) return ReportError("submit", reply.status());
  const pb::SubmitJobReply& r = reply->submit();
  if (g.json) {
    nlohmann::json j = {{"job_id", r.job_id()}, {"warnings", nlohmann::json::array()}};
    for (const auto& w : r.warnings()) j["warnings"].push_back(w);
    std::cout << j.dump() << "\n";
  } else {
    std::cout << r.job_id() << "\n";
  }
  std::cout.flush();
  if (o.follow) return WatchJob(g, r.job_id());
  return kExitOk;
}

// ---- ls ----------------------------------------------------------------------------------------------------

struct ListOptions {
  std::vector<std::string> states;
  unsigned limit = 0;
  std::string team;
  std::string page_token;
};

std::string Ranks(const pb::ResolvedResources& r) {
  if (r.world_size() == 0) return "-";
  return fmt::format("{}x{}", r.nodes(), r.gpus_per_node());
}

std::string Shorten(const std::string& s, size_t n) {
  return s.size() <= n ? s : s.substr(0, n - 3) + "...";
}

int List(const GlobalOptions& g, const ListOptions& o) {
  pb::ClientRequest req;
  auto* list = req.mutable_list_jobs();
  for (const std::string& s : o.states) {
    auto state = protocol::ParseJobState(s);
    if (!state.ok()) {
      std::cerr << "anneal ls: unknown state '" << s
                << "' (pending, starting, running, restarting, succeeded, failed, cancelling, cancelled)\n";
      return kExitUsage;
    }
    list->add_states(*state);
  }
  list->set_limit(o.limit);
  list->set_team(o.team);
  list->set_page_token(o.page_token);
  auto client = MakeClient(g);
  if (!client.ok()) return ReportError("ls", client.status());
  auto reply = (*client)->Call(req);
  if (!reply.ok()) return ReportError("ls", reply.status());
  if (g.json) {
    nlohmann::json jobs = nlohmann::json::array();
    for (const auto& job : reply->list_jobs().jobs()) jobs.push_back(ToJson(job));
    std::cout << jobs.dump(2) << "\n";
    return kExitOk;
  }
  const int64_t now = NowMs();
  Table t({"JOB", "NAME", "TEAM", "OWNER", "STATE", "ATTEMPT", "RANKS", "AGE", "RESULT"});
  for (const auto& job : reply->list_jobs().jobs()) {
    t.Add({job.job_id(), job.name().empty() ? "-" : job.name(), job.team().empty() ? "default" : job.team(),
           job.owner().empty() ? "-" : job.owner(), std::string(protocol::StateName(job.state())),
           fmt::format("{}/{}", job.attempt(), job.max_attempts()), Ranks(job.resources()),
           Age(job.submitted_at_ms(), now), Shorten(job.result(), 60)});
  }
  t.Print(std::cout);
  if (!reply->list_jobs().next_page_token().empty()) {
    std::cerr << "(older jobs: anneal ls --page-token " << reply->list_jobs().next_page_token() << ")\n";
  }
  return kExitOk;
}

// ---- show --------------------------------------------------------------------------------------------------

struct ShowOptions {
  std::string job;
  bool spec = false;
};

void PrintCheckpoints(const google::protobuf::RepeatedPtrField<pb::CheckpointRecord>& cps, std::ostream& out) {
  const int64_t now = NowMs();
  Table t({"STEP", "STATE", "SIZE", "FILES", "METRICS", "AGE", "PATH"});
  for (const auto& cp : cps) {
    uint64_t size = 0;
    for (const auto& f : cp.files()) size += f.size_bytes();
    std::string metrics;
    for (const auto& [k, v] : cp.metrics()) metrics += (metrics.empty() ? "" : " ") + k + "=" + Metric(v);
    t.Add({std::to_string(cp.step()), std::string(protocol::StateName(cp.state())), Bytes(size),
           std::to_string(cp.files_size()), metrics.empty() ? "-" : metrics, Age(cp.committed_at_ms(), now),
           cp.path()});
  }
  t.Print(out);
}

std::string Placement(const pb::Placement& p) {
  std::string s;
  for (const auto& node : p.nodes()) {
    if (!s.empty()) s += "; ";
    std::vector<std::string> ranks;
    for (const auto& r : node.ranks()) ranks.push_back(std::to_string(r.global_rank()));
    s += fmt::format("{} ranks {}", node.node_id(), fmt::join(ranks, ","));
  }
  if (s.empty()) return "-";
  if (!p.master_addr().empty()) s += fmt::format("  (master {}:{})", p.master_addr(), p.master_port());
  return s;
}

// GetJob answers with the job's first events (up to the coordinator's max_watch_items): page through the rest
// with immediate WatchJob calls until the record's next_event_seq is reached.
Status ReadAllEvents(CoordinatorClient& client, pb::GetJobReply* r) {
  constexpr uint64_t kNoMetrics = uint64_t{1} << 62;  // "metrics after this step": none
  while (true) {
    const uint64_t last = r->events().empty() ? 0 : r->events(r->events_size() - 1).seq();
    if (last + 1 >= r->job().next_event_seq()) return Status::Ok();
    pb::ClientRequest req;
    auto* watch = req.mutable_watch();
    watch->set_job_id(r->job().job_id());
    watch->set_after_event_seq(last);
    watch->set_after_metric_step(kNoMetrics);
    watch->set_timeout_ms(0);
    ASSIGN_OR_RETURN(pb::ClientReply reply, client.Call(req));
    for (const auto& e : reply.watch().events()) {
      if (e.seq() > last) *r->add_events() = e;
    }
    if (r->events().empty() || r->events(r->events_size() - 1).seq() == last) return Status::Ok();  // no progress
  }
}

// Every attempt that failed: each one's move to RESTARTING (the only way out of a failed attempt, whether a
// retry or the end of the job follows), with the reason.
nlohmann::json FailedAttempts(const google::protobuf::RepeatedPtrField<pb::JobEvent>& events) {
  nlohmann::json failed = nlohmann::json::array();
  for (const auto& e : events) {
    if (e.kind() == "state" && e.to_state() == pb::JOB_RESTARTING && e.from_state() != pb::JOB_RESTARTING) {
      failed.push_back({{"attempt", e.attempt()}, {"time_ms", e.time_ms()}, {"reason", e.message()}});
    }
  }
  return failed;
}

int Show(const GlobalOptions& g, const ShowOptions& o) {
  auto client = MakeClient(g);
  if (!client.ok()) return ReportError("show", client.status());
  pb::ClientRequest req;
  req.mutable_get_job()->set_job_id(o.job);
  auto reply = (*client)->Call(req);
  if (!reply.ok()) return ReportError("show", reply.status());
  pb::GetJobReply& r = *reply->mutable_get_job();
  if (Status st = ReadAllEvents(**client, &r); !st.ok()) return ReportError("show", st);
  const pb::JobRecord& job = r.job();
  const nlohmann::json failed = FailedAttempts(r.events());
  if (g.json) {
    nlohmann::json j = ToJson(r);
    j["failed_attempts"] = failed;
    std::cout << j.dump(2) << "\n";
    return kExitOk;
  }
  if (o.spec) {
    std::cout << job.spec_yaml();
    return kExitOk;
  }
  const int64_t now = NowMs();
  auto line = [](const std::string& label, const std::string& value) {
    std::cout << fmt::format("{:<13}{}\n", label + ":", value);
  };
  line("Job", job.job_id() + (job.name().empty() ? "" : "  (" + job.name() + ")"));
  line("State", fmt::format("{}  attempt {}/{}, epoch {}", protocol::StateName(job.state()), job.attempt(),
                            job.max_attempts(), job.epoch()));
  std::vector<std::string> failures;
  for (const auto& f : failed) {
    failures.push_back(fmt::format("attempt {}: {}", f["attempt"].get<uint32_t>(), f["reason"].get<std::string>()));
  }
  line("Failed", failures.empty() ? "no attempt failed"
                                  : fmt::format("{} attempt(s): {}", failures.size(), fmt::join(failures, "; ")));
  // Attempts ended by a lost node: their own budget, not the attempts' (coordinator/job_state_machine.h).
  std::cout << fmt::format("Infrastructure restarts: {} of {}\n", job.infra_restarts(), job.max_infra_restarts());
  auto spec = jobspec::ParseJobSpec(job.spec_yaml(), job.job_id());
  if (spec.ok()) {
    line("Kind",
         std::string(jobspec::JobKindName(spec->kind)) + " / " +
             std::string(jobspec::FinetuningTypeName(spec->finetuning.type)) +
             (spec->finetuning.type == jobspec::FinetuningType::kLora
                  ? fmt::format(" (rank {}, alpha {})", spec->finetuning.lora_rank, Metric(spec->finetuning.lora_alpha))
                  : ""));
    line("Model", spec->model.model_name_or_path);
    if (!spec->data.dataset.empty()) line("Data", fmt::format("{}", fmt::join(spec->data.dataset, ", ")));
  }
  const auto& res = job.resources();
  line("Resources", fmt::format("{} node(s) x {} = {} ranks (tp {}, pp {}, dp {})", res.nodes(), res.gpus_per_node(),
                                res.world_size(), res.tensor_parallel(), res.pipeline_parallel(), res.data_parallel()));
  line("Team", fmt::format("{} (submitted by {})", job.team().empty() ? "default" : job.team(),
                           job.owner().empty() ? "-" : job.owner()));
  line("Priority", std::to_string(job.priority()));
  for (const auto& [label, value] : SchedulingLines(job, now)) line(label, value);
  line("Output", job.output_dir().empty() ? "-" : job.output_dir());
  line("Submitted", fmt::format("{} ({} ago)", Timestamp(job.submitted_at_ms()), Age(job.submitted_at_ms(), now)));
  if (job.started_at_ms() > 0) line("Started", Timestamp(job.started_at_ms()));
  if (job.finished_at_ms() > 0) {
    line("Finished", job.started_at_ms() > 0 ? fmt::format("{} (ran {})", Timestamp(job.finished_at_ms()),
                                                           Duration(job.finished_at_ms() - job.started_at_ms()))
                                             : Timestamp(job.finished_at_ms()) + " (never started)");
  }
  if (!job.result().empty()) line("Result", job.result());
  line("Placement", Placement(job.placement()));
  if (!job.resume_checkpoint().empty()) line("Resumed from", job.resume_checkpoint());
  if (!job.task_states().empty()) {
    std::string tasks;
    for (const auto& [node, state] : job.task_states()) {
      tasks += (tasks.empty() ? "" : ", ") + node + "=" + std::string(protocol::StateName(state));
    }
    line("Tasks", tasks);
  }
  if (!r.last_metrics().empty()) {
    const pb::MetricPoint& m = r.last_metrics(r.last_metrics_size() - 1);
    std::string values;
    for (const auto& [k, v] : m.values()) values += fmt::format("  {}={}", k, Metric(v));
    line("Metrics",
         fmt::format("step {}{}{}", m.step(), m.total_steps() ? "/" + std::to_string(m.total_steps()) : "", values));
  }
  if (!r.checkpoints().empty()) {
    std::cout << "\nCheckpoints:\n";
    PrintCheckpoints(r.checkpoints(), std::cout);
  }
  if (!r.events().empty()) {
    std::cout << "\nEvents:\n";
    Table t({"TIME", "ATTEMPT", "KIND", "STATE", "MESSAGE"});
    for (const auto& e : r.events()) {
      std::string state = e.to_state() == pb::JOB_STATE_UNSPECIFIED
                              ? "-"
                              : (e.from_state() == pb::JOB_STATE_UNSPECIFIED
                                     ? ""
                                     : std::string(protocol::StateName(e.from_state())) + "->") +
                                    std::string(protocol::StateName(e.to_state()));
      t.Add({Timestamp(e.time_ms()), std::to_string(e.attempt()), e.kind(), state, e.message()});
    }
    t.Print(std::cout);
  }
  return kExitOk;
}

// ---- logs --------------------------------------------------------------------------------------------------

constexpr std::chrono::milliseconds kAgentFetchWait{6000};

struct LogsOptions {
  std::string job;
  unsigned rank = 0;
  bool follow = false;
};

int Logs(const GlobalOptions& g, const LogsOptions& o) {
  auto client = MakeClient(g);
  if (!client.ok()) return ReportError("logs", client.status());
  uint64_t offset = 0;
  while (true) {
    pb::ClientRequest req;
    auto* logs = req.mutable_get_logs();
    logs->set_job_id(o.job);
    logs->set_rank(o.rank);
    logs->set_offset(offset);
    logs->set_max_bytes(1 << 20);
    // The coordinator fetches the log from the rank's agent and waits up to its log_fetch_timeout_ms (5 s by
    // default) for it: wait past that, so a slow agent is reported as such, not as an unreachable coordinator.
    auto reply = (*client)->Call(req, kAgentFetchWait);
    if (!reply.ok()) return ReportError("logs", reply.status());
    const pb::GetLogsReply& r = reply->get_logs();
    std::cout << r.data();
    std::cout.flush();
    offset = std::max(r.next_offset(), offset + r.data().size());
    if (r.eof()) return kExitOk;
    if (r.data().empty()) {
      if (!o.follow) return kExitOk;
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
  }
}

// ---- cancel, checkpoints -----------------------------------------------------------------------------------

int Cancel(const GlobalOptions& g, const std::string& job) {
  auto client = MakeClient(g);
  if (!client.ok()) return ReportError("cancel", client.status());
  pb::ClientRequest req;
  req.mutable_cancel()->set_job_id(job);
  auto reply = (*client)->Call(req);
  if (!reply.ok()) return ReportError("cancel", reply.status());
  const std::string state = std::string(protocol::StateName(reply->cancel().state()));
  if (g.json) {
    std::cout << nlohmann::json{{"job_id", job}, {"state", state}}.dump() << "\n";
  } else {
    std::cout << job << ": " << state << "\n";
  }
  return kExitOk;
}

int Checkpoints(const GlobalOptions& g, const std::string& job) {
  auto client = MakeClient(g);
  if (!client.ok()) return ReportError("checkpoints", client.status());
  pb::ClientRequest req;
  req.mutable_list_checkpoints()->set_job_id(job);
  auto reply = (*client)->Call(req);
  if (!reply.ok()) return ReportError("checkpoints", reply.status());
  if (g.json) {
    nlohmann::json cps = nlohmann::json::array();
    for (const auto& cp : reply->list_checkpoints().checkpoints()) cps.push_back(ToJson(cp));
    std::cout << cps.dump(2) << "\n";
    return kExitOk;
  }
  PrintCheckpoints(reply->list_checkpoints().checkpoints(), std::cout);
  return kExitOk;
}

}  // namespace

void AddJobCommands(CLI::App& app, GlobalOptions& g, Action* action) {
  {
    auto o = std::make_shared<SubmitOptions>();
    auto* cmd = app.add_subcommand("submit", "Validate a job spec here, then submit it; prints the job id");
    cmd->add_option("JOB.yaml", o->file, "job spec (YAML; docs/job-spec.md)")->required();
    cmd->add_option("--set", o->overrides, "override a key: key=value (flat or dotted); repeatable")
        ->allow_extra_args(false);
    cmd->add_option("--name", o->name, "display name (default: scheduling.name)");
    cmd->add_option("--team", o->team, "submit to this team (default: your only team where you are a member)");
    cmd->add_flag("-f,--follow", o->follow, "watch the job until it ends (like anneal watch)");
    cmd->callback([&g, o, action] { *action = [&g, o] { return Submit(g, *o); }; });
  }
  {
    auto o = std::make_shared<ListOptions>();
    auto* cmd = app.add_subcommand("ls", "List the most recent jobs, in submission order");
    cmd->add_option("--state", o->states, "only jobs in these states (pending, running, failed, ...)")
        ->delimiter(',')
        ->allow_extra_args(false);
    cmd->add_option("--limit", o->limit, "the N most recent jobs (0: the coordinator's default, 100)");
    cmd->add_option("--team", o->team, "only this team's jobs");
    cmd->add_option("--page-token", o->page_token, "the jobs submitted before this one (the previous page's hint)");
    cmd->callback([&g, o, action] { *action = [&g, o] { return List(g, *o); }; });
  }
  {
    auto o = std::make_shared<ShowOptions>();
    auto* cmd =
        app.add_subcommand("show", "Show a job: spec summary, attempts, placement, metrics, checkpoints, events");
    cmd->add_option("job", o->job, "job id")->required();
    cmd->add_flag("--spec", o->spec, "print the stored (resolved) spec YAML instead");
    cmd->callback([&g, o, action] { *action = [&g, o] { return Show(g, *o); }; });
  }
  {
    auto o = std::make_shared<LogsOptions>();
    auto* cmd = app.add_subcommand("logs", "Print a rank's log (stdout and stderr of the trainer)");
    cmd->add_option("job", o->job, "job id")->required();
    cmd->add_option("--rank", o->rank, "global rank (default 0)");
    cmd->add_flag("-f,--follow", o->follow, "keep printing until the rank's log ends");
    cmd->callback([&g, o, action] { *action = [&g, o] { return Logs(g, *o); }; });
  }
  {
    auto job = std::make_shared<std::string>();
    auto* cmd = app.add_subcommand("cancel", "Cancel a job (the whole gang is stopped)");
    cmd->add_option("job", *job, "job id")->required();
    cmd->callback([&g, job, action] { *action = [&g, job] { return Cancel(g, *job); }; });
  }
  {
    auto job = std::make_shared<std::string>();
    auto* cmd = app.add_subcommand("checkpoints", "List a job's checkpoints");
    cmd->add_option("job", *job, "job id")->required();
    cmd->callback([&g, job, action] { *action = [&g, job] { return Checkpoints(g, *job); }; });
  }
}

}  // namespace anneal::cli
