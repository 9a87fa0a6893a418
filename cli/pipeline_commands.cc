// anneal pipeline submit|ls|show|cancel|retry (docs/pipelines.md).
#include <fmt/format.h>

#include <iostream>

#include "cli/commands.h"
#include "cli/output.h"
#include "jobspec/pipeline.h"
#include "protocol/states.h"

namespace anneal::cli {
namespace {

struct SubmitOptions {
  std::string file;
  std::string team;
  std::vector<std::string> sets;
};

int Submit(const GlobalOptions& g, const SubmitOptions& o) {
  std::map<std::string, std::string> overrides;
  for (const auto& set : o.sets) {
    const size_t eq = set.find('=');
    if (eq == std::string::npos) {
      std::cerr << "anneal pipeline submit: --set '" << set << "' must read STEP.KEY=VALUE\n";
      return kExitUsage;
    }
    overrides[set.substr(0, eq)] = set.substr(eq + 1);
  }
  // Validated here first (with the overrides), then sent self-contained: step job files inlined.
  if (auto checked = jobspec::ParsePipelineFile(o.file, overrides); !checked.ok()) {
    std::cerr << "anneal pipeline submit: " << checked.status().message() << "\n";
    return kExitUsage;
  }
  auto pipeline = jobspec::ParsePipelineFile(o.file);
  if (!pipeline.ok()) return ReportError("pipeline submit", pipeline.status());
  pb::ClientRequest req;
  auto* submit = req.mutable_submit_pipeline();
  submit->set_yaml(jobspec::EmitPipeline(*pipeline));
  submit->set_team(o.team);
  for (const auto& [key, value] : overrides) (*submit->mutable_overrides())[key] = value;
  auto client = MakeClient(g);
  if (!client.ok()) return ReportError("pipeline submit", client.status());
  auto reply = (*client)->Call(req);
  if (!reply.ok()) return ReportError("pipeline submit", reply.status());
  if (g.json) {
    std::cout << ToJson(reply->submit_pipeline()).dump() << "\n";
  } else {
    std::cout << reply->submit_pipeline().pipeline_id() << "\n";
  }
  return kExitOk;
}

std::string StepsSummary(const pb::PipelineRunRecord& run) {
  std::vector<std::string> parts;
  for (const auto& step : run.steps())
    parts.push_back(fmt::format("{}:{}", step.name(), protocol::StateName(step.state())));
  return fmt::format("{}", fmt::join(parts, " "));
}

int List(const GlobalOptions& g, const std::string& team, bool all, unsigned limit) {
  pb::ClientRequest req;
  req.mutable_list_pipelines()->set_team(team);
  req.mutable_list_pipelines()->set_include_ended(all);
  req.mutable_list_pipelines()->set_limit(limit);
  auto client = MakeClient(g);
  if (!client.ok()) return ReportError("pipeline ls", client.status());
  auto reply = (*client)->Call(req);
  if (!reply.ok()) return ReportError("pipeline ls", reply.status());
  if (g.json) {
    std::cout << ToJson(reply->list_pipelines()).dump(2) << "\n";
    return kExitOk;
  }
  const int64_t now = NowMs();
  Table t({"PIPELINE", "NAME", "TEAM", "OWNER", "STATE", "AGE", "STEPS"});
  for (const auto& run : reply->list_pipelines().runs()) {
    t.Add({run.pipeline_id(), run.name().empty() ? "-" : run.name(), run.team(), run.owner(),
           std::string(protocol::StateName(run.state())), Age(run.created_at_ms(), now), StepsSummary(run)});
  }
  t.Print(std::cout);
  return kExitOk;
}

int Show(const GlobalOptions& g, const std::string& id) {
  pb::ClientRequest req;
  req.mutable_get_pipeline()->set_pipeline_id(id);
  auto client = MakeClient(g);
  if (!client.ok()) return ReportError("pipeline show", client.status());
  auto reply = (*client)->Call(req);
  if (!reply.ok()) return ReportError("pipeline show", reply.status());
  const pb::PipelineRunRecord& run = reply->get_pipeline().run();
  if (g.json) {
    std::cout << ToJson(run).dump(2) << "\n";
    return kExitOk;
  }
  std::cout << fmt::format("pipeline  {} ({})\nteam      {}\nowner     {}\norigin    {}\nstate     {}\n",
                           run.pipeline_id(), run.name().empty() ? "-" : run.name(), run.team(), run.owner(),
                           run.origin(), protocol::StateName(run.state()));
  if (run.cancel_requested()) std::cout << "cancel    " << run.cancel_reason() << "\n";
  if (run.retries() > 0) std::cout << "retries   " << run.retries() << "\n";
  Table t({"STEP", "KIND", "NEEDS", "STATE", "JOB", "MESSAGE"});
  for (const auto& step : run.steps()) {
    t.Add({step.name(), step.kind(), step.needs().empty() ? "-" : fmt::format("{}", fmt::join(step.needs(), ",")),
           std::string(protocol::StateName(step.state())), step.job_id().empty() ? "-" : step.job_id(),
           step.message().empty() ? "-" : step.message()});
  }
  std::cout << "\n";
  t.Print(std::cout);
  for (const auto& step : run.steps()) {
    if (step.params().empty() && step.metrics().empty() && step.output_dir().empty()) continue;
    std::cout << "\n" << step.name() << ":\n";
    if (!step.output_dir().empty()) std::cout << "  output_dir  " << step.output_dir() << "\n";
    for (const auto& [ref, value] : step.params()) std::cout << "  ${" << ref << "} = " << value << "\n";
    for (const auto& [key, value] : step.metrics()) std::cout << "  " << key << " = " << value << "\n";
    if (step.kind() == "promote" && step.state() == pb::PIPELINE_STEP_SUCCEEDED) {
      std::cout << "  version " << step.model_version() << (step.promoted() ? " promoted" : " not promoted") << "\n";
    }
  }
  return kExitOk;
}

int CancelOrRetry(const GlobalOptions& g, const std::string& id, bool cancel) {
  pb::ClientRequest req;
  if (cancel) req.mutable_cancel_pipeline()->set_pipeline_id(id);
  if (!cancel) req.mutable_retry_pipeline()->set_pipeline_id(id);
  const std::string command = cancel ? "pipeline cancel" : "pipeline retry";
  auto client = MakeClient(g);
  if (!client.ok()) return ReportError(command, client.status());
  auto reply = (*client)->Call(req);
  if (!reply.ok()) return ReportError(command, reply.status());
  if (cancel) {
    std::cout << id << " " << protocol::StateName(reply->cancel_pipeline().state()) << "\n";
  } else {
    std::cout << id << " retrying: " << fmt::format("{}", fmt::join(reply->retry_pipeline().steps(), ", ")) << "\n";
  }
  return kExitOk;
}

}  // namespace

void AddPipelineCommands(CLI::App& app, GlobalOptions& g, Action* action) {
  auto* pipeline = app.add_subcommand("pipeline", "Pipelines: DAGs of train, eval and promote steps");
  pipeline->require_subcommand(1);
  {
    auto o = std::make_shared<SubmitOptions>();
    auto* cmd = pipeline->add_subcommand("submit", "Validate a pipeline YAML here, then submit it; prints its id");
    cmd->add_option("PIPELINE.yaml", o->file, "pipeline YAML (docs/pipelines.md)")->required();
    cmd->add_option("--team", o->team, "run it in this team (default: your only team where you are a member)");
    cmd->add_option("--set", o->sets, "override a step's key: STEP.KEY=VALUE; repeatable")->allow_extra_args(false);
    cmd->callback([&g, o, action] { *action = [&g, o] { return Submit(g, *o); }; });
  }
  {
    auto team = std::make_shared<std::string>();
    auto all = std::make_shared<bool>(false);
    auto limit = std::make_shared<unsigned>(0);
    auto* cmd = pipeline->add_subcommand("ls", "List pipeline runs, newest first (running ones; --all: ended too)");
    cmd->add_option("--team", *team, "only this team's runs");
    cmd->add_flag("--all", *all, "also runs that ended");
    cmd->add_option("--limit", *limit, "at most N runs (0: 100)");
    cmd->callback(
        [&g, team, all, limit, action] { *action = [&g, team, all, limit] { return List(g, *team, *all, *limit); }; });
  }
  for (const char* name : {"show", "cancel", "retry"}) {
    auto id = std::make_shared<std::string>();
    const std::string verb = name;
    auto* cmd = pipeline->add_subcommand(
        name, verb == "show"     ? "Show a run: steps, states, jobs, resolved parameters, metrics, the decision"
              : verb == "cancel" ? "Cancel a run: waiting steps are cancelled, running jobs cancelled"
                                 : "Re-run a run's failed, skipped and cancelled steps (succeeded ones are kept)");
    cmd->add_option("PIPELINE", *id, "pipeline run id (pipe-000001)")->required();
    cmd->callback([&g, id, verb, action] {
      *action = [&g, id, verb] { return verb == "show" ? Show(g, *id) : CancelOrRetry(g, *id, verb == "cancel"); };
    });
  }
}

}  // namespace anneal::cli
