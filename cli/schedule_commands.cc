// anneal schedule create|ls|show|pause|resume|trigger|delete|next: pipelines run at cron times or when datasets change
// (docs/pipelines.md "Schedules").
//
//   anneal schedule create NAME --cron "0 3 * * 1" [--tz Europe/Berlin] [--concurrency forbid|queue|replace]
//                               [--missed run-once|skip] [--set k=v]... [--team T] PIPELINE.yaml
//   anneal schedule create NAME --on-data-change PATH... --check-interval 10m [...] PIPELINE.yaml
//   anneal schedule ls [--team T] | show NAME | pause NAME | resume NAME | delete NAME | next NAME [-n N]
//   anneal schedule trigger NAME   (fire now, by hand: prints what the fire did, e.g. the run it started)
#include <fmt/format.h>

#include <filesystem>
#include <iostream>
#include <map>

#include "cli/commands.h"
#include "cli/output.h"
#include "jobspec/pipeline.h"

namespace anneal::cli {
namespace {

struct CreateOptions {
  std::string name;
  std::string team;
  std::string cron;
  std::string tz;
  std::vector<std::string> data_paths;
  std::string check_interval = "10m";
  std::string concurrency = "forbid";
  std::string missed = "run-once";
  std::vector<std::string> overrides;
  std::string file;
};

struct RefOptions {
  std::string name;
  std::string team;
  uint32_t count = 5;
};

std::string ConcurrencyName(pb::ScheduleConcurrency c) {
  switch (c) {
    case pb::CONCURRENCY_QUEUE:
      return "queue";
    case pb::CONCURRENCY_REPLACE:
      return "replace";
    default:
      return "forbid";
  }
}

std::string StateName(pb::ScheduleState s) {
  switch (s) {
    case pb::SCHEDULE_ACTIVE:
      return "active";
    case pb::SCHEDULE_PAUSED:
      return "paused";
    case pb::SCHEDULE_DELETED:
      return "deleted";
    default:
      return "?";
  }
}

std::string OutcomeName(pb::FireOutcome o) {
  switch (o) {
    case pb::FIRE_STARTED:
      return "started";
    case pb::FIRE_SKIPPED_ACTIVE:
      return "skipped (previous run active)";
    case pb::FIRE_QUEUED:
      return "queued";
    case pb::FIRE_COALESCED:
      return "coalesced";
    case pb::FIRE_SKIPPED_MISSED:
      return "skipped (missed)";
    case pb::FIRE_FAILED:
      return "failed";
    case pb::FIRE_BASELINE:
      return "baseline";
    default:
      return "?";
  }
}

std::string Trigger(const pb::ScheduleRecord& s) {
  if (!s.cron().empty()) return fmt::format("cron \"{}\" {}", s.cron(), s.time_zone().empty() ? "UTC" : s.time_zone());
  return fmt::format("on change of {} (every {})", fmt::join(s.data_trigger().dataset_paths(), " "),
                     Duration(s.data_trigger().check_interval_ms()));
}

StatusOr<pb::ClientRequest> BuildCreate(const CreateOptions& o) {
  pb::ClientRequest req;
  auto* c = req.mutable_create_schedule();
  c->set_name(o.name);
  c->set_team(o.team);
  if (o.cron.empty() == o.data_paths.empty()) {
    return InvalidArgumentError("give exactly one of --cron or --on-data-change");
  }
  c->set_cron(o.cron);
  c->set_time_zone(o.tz);
  for (const auto& path : o.data_paths) c->add_dataset_paths(std::filesystem::absolute(path).lexically_normal());
  if (!o.data_paths.empty()) {
    ASSIGN_OR_RETURN(int64_t interval, ParseDurationMs(o.check_interval));
    c->set_check_interval_ms(interval);
  }
  if (o.concurrency == "forbid") {
    c->set_concurrency(pb::CONCURRENCY_FORBID);
  } else if (o.concurrency == "queue") {
    c->set_concurrency(pb::CONCURRENCY_QUEUE);
  } else if (o.concurrency == "replace") {
    c->set_concurrency(pb::CONCURRENCY_REPLACE);
  } else {
    return InvalidArgumentError(fmt::format("--concurrency {}: use forbid, queue or replace", o.concurrency));
  }
  if (o.missed == "run-once") {
    c->set_missed(pb::MISSED_RUN_ONCE);
  } else if (o.missed == "skip") {
    c->set_missed(pb::MISSED_SKIP);
  } else {
    return InvalidArgumentError(fmt::format("--missed {}: use run-once or skip", o.missed));
  }
  for (const auto& ov : o.overrides) {
    const size_t eq = ov.find('=');
    if (eq == std::string::npos || eq == 0) {
      return InvalidArgumentError(fmt::format("--set {}: expected key=value", ov));
    }
    (*c->mutable_overrides())[ov.substr(0, eq)] = ov.substr(eq + 1);
  }
  // Validated here first (with the overrides), then stored self-contained: step job files inlined, as
  // `anneal pipeline submit` sends it.
  std::map<std::string, std::string> overrides(c->overrides().begin(), c->overrides().end());
  if (auto checked = jobspec::ParsePipelineFile(o.file, overrides); !checked.ok()) return checked.status();
  ASSIGN_OR_RETURN(jobspec::PipelineSpec pipeline, jobspec::ParsePipelineFile(o.file));
  c->set_pipeline_yaml(jobspec::EmitPipeline(pipeline));
  return req;
}

void PrintSchedule(const pb::ScheduleReply& reply) {
  const pb::ScheduleRecord& s = reply.schedule();
  std::cout << fmt::format("Schedule     {}/{} ({})\n", s.team(), s.name(), StateName(s.state()));
  std::cout << fmt::format("Owner        {}\n", s.owner());
  std::cout << fmt::format("Trigger      {}\n", Trigger(s));
  std::cout << fmt::format("Policies     concurrency {}, missed fires {}\n", ConcurrencyName(s.concurrency()),
                           s.missed() == pb::MISSED_SKIP ? "skip" : "run-once");
  for (const auto& [key, value] : s.overrides()) std::cout << fmt::format("Set          {}={}\n", key, value);
  std::cout << fmt::format("Runs         {} started; last run {}\n", s.fire_count(),
                           s.last_run_id().empty() ? "-" : s.last_run_id());
  if (s.queued_fire_ms() > 0) std::cout << fmt::format("Queued       fire of {}\n", Timestamp(s.queued_fire_ms()));
  for (int64_t ms : reply.next_fire_ms()) std::cout << fmt::format("Next         {}\n", Timestamp(ms));
  if (s.history().empty()) return;
  Table t({"FIRE TIME", "OUTCOME", "RUN", "MISSED", "MESSAGE"});
  for (const auto& fire : s.history()) {
    std::string message = fire.message().empty() ? "-" : fire.message();
    if (!fire.triggered_by().empty()) message = fmt::format("triggered by {}; {}", fire.triggered_by(), message);
    t.Add({Timestamp(fire.fire_time_ms()), OutcomeName(fire.outcome()), fire.run_id().empty() ? "-" : fire.run_id(),
           std::to_string(fire.missed_count()), message});
  }
  std::cout << "\n";
  t.Print(std::cout);
}

int RunRequest(const GlobalOptions& g, const std::string& command, pb::ClientRequest req, bool show_all) {
  auto client = MakeClient(g);
  if (!client.ok()) return ReportError(command, client.status());
  auto reply = (*client)->Call(std::move(req));
  if (!reply.ok()) return ReportError(command, reply.status());
  if (g.json) {
    std::cout << ToJson(reply->schedule()).dump(2) << "\n";
    return kExitOk;
  }
  const auto& history = reply->schedule().schedule().history();
  if (show_all) {
    PrintSchedule(reply->schedule());
  } else if (command == "schedule trigger" && !history.empty()) {
    const pb::ScheduleFire& fire = *history.rbegin();
    std::cout << fmt::format("schedule {}/{} fired: {}", reply->schedule().schedule().team(),
                             reply->schedule().schedule().name(), OutcomeName(fire.outcome()));
    if (!fire.run_id().empty()) std::cout << fmt::format(", pipeline run {}", fire.run_id());
    if (!fire.message().empty()) std::cout << fmt::format(": {}", fire.message());
    std::cout << "\n";
  } else {
    const auto& s = reply->schedule().schedule();
    std::cout << fmt::format("schedule {}/{} {}\n", s.team(), s.name(), StateName(s.state()));
    for (int64_t ms : reply->schedule().next_fire_ms()) std::cout << fmt::format("  next {}\n", Timestamp(ms));
  }
  return kExitOk;
}

int List(const GlobalOptions& g, const std::string& team) {
  auto client = MakeClient(g);
  if (!client.ok()) return ReportError("schedule ls", client.status());
  pb::ClientRequest req;
  req.mutable_list_schedules()->set_team(team);
  auto reply = (*client)->Call(req);
  if (!reply.ok()) return ReportError("schedule ls", reply.status());
  const auto& list = reply->list_schedules();
  if (g.json) {
    std::cout << ToJson(list).dump(2) << "\n";
    return kExitOk;
  }
  Table t({"TEAM", "NAME", "STATE", "TRIGGER", "NEXT", "LAST RUN", "RUNS"});
  for (int i = 0; i < list.schedules_size(); ++i) {
    const auto& s = list.schedules(i);
    const int64_t next = i < list.next_fire_ms_size() ? list.next_fire_ms(i) : 0;
    t.Add({s.team(), s.name(), StateName(s.state()), Trigger(s), next > 0 ? Timestamp(next) : "-",
           s.last_run_id().empty() ? "-" : s.last_run_id(), std::to_string(s.fire_count())});
  }
  if (t.empty()) {
    std::cout << "no schedules\n";
  } else {
    t.Print(std::cout);
  }
  return kExitOk;
}

void AddRefCommand(CLI::App& schedule, GlobalOptions& g, Action* action, const std::string& name,
                   const std::string& help) {
  auto o = std::make_shared<RefOptions>();
  auto* cmd = schedule.add_subcommand(name, help);
  cmd->add_option("NAME", o->name, "the schedule")->required();
  cmd->add_option("--team", o->team, "the schedule's team (default: your only team)");
  if (name == "next") cmd->add_option("-n", o->count, "how many fire times (default 5, at most 100)");
  cmd->callback([&g, o, action, name] {
    *action = [&g, o, name] {
      pb::ClientRequest req;
      pb::ScheduleRef* ref = nullptr;
      if (name == "show" || name == "next") {
        req.mutable_get_schedule()->set_next_count(o->count);
        ref = req.mutable_get_schedule()->mutable_schedule();
      } else if (name == "pause") {
        ref = req.mutable_pause_schedule()->mutable_schedule();
      } else if (name == "resume") {
        ref = req.mutable_resume_schedule()->mutable_schedule();
      } else if (name == "trigger") {
        ref = req.mutable_trigger_schedule()->mutable_schedule();
      } else {
        ref = req.mutable_delete_schedule()->mutable_schedule();
      }
      ref->set_team(o->team);
      ref->set_name(o->name);
      return RunRequest(g, "schedule " + name, std::move(req), name == "show");
    };
  });
}

}  // namespace

void AddScheduleCommands(CLI::App& app, GlobalOptions& g, Action* action) {
  auto* schedule = app.add_subcommand("schedule", "Run a pipeline at cron times or when datasets change");
  schedule->require_subcommand(1);
  auto o = std::make_shared<CreateOptions>();
  auto* create = schedule->add_subcommand("create", "Create a schedule for a pipeline YAML");
  create->add_option("NAME", o->name, "the schedule's name (unique in its team)")->required();
  create->add_option("PIPELINE", o->file, "the pipeline YAML")->required();
  create->add_option("--team", o->team, "the team (default: your only team)");
  create->add_option("--cron", o->cron, "5-field cron expression or @daily/@weekly/...: \"0 3 * * 1\"");
  create->add_option("--tz", o->tz, "IANA time zone of the cron expression (default UTC)");
  create->add_option("--on-data-change", o->data_paths, "fire when these datasets' content changes")->expected(1, -1);
  create->add_option("--check-interval", o->check_interval, "how often the data is hashed (default 10m)");
  create->add_option("--concurrency", o->concurrency, "forbid | queue | replace (default forbid)");
  create->add_option("--missed", o->missed, "after coordinator downtime: run-once | skip (default run-once)");
  create->add_option("--set", o->overrides, "override a pipeline key: STEP.KEY=value; repeatable");
  create->callback([&g, o, action] {
    *action = [&g, o] {
      auto req = BuildCreate(*o);
      if (!req.ok()) return ReportError("schedule create", req.status());
      return RunRequest(g, "schedule create", std::move(*req), true);
    };
  });
  auto team = std::make_shared<std::string>();
  auto* ls = schedule->add_subcommand("ls", "List schedules with their next fire time");
  ls->add_option("--team", *team, "only this team");
  ls->callback([&g, team, action] { *action = [&g, team] { return List(g, *team); }; });
  AddRefCommand(*schedule, g, action, "show", "A schedule: trigger, policies, next fire times, fire history");
  AddRefCommand(*schedule, g, action, "next", "The next fire times of a schedule");
  AddRefCommand(*schedule, g, action, "pause", "Pause a schedule (no fires until resumed)");
  AddRefCommand(*schedule, g, action, "resume", "Resume a paused schedule (the pause's fires are not caught up)");
  AddRefCommand(*schedule, g, action, "trigger",
                "Fire a schedule now, by hand (its policies apply; its next fire times do not change)");
  AddRefCommand(*schedule, g, action, "delete", "Delete a schedule (its runs are kept)");
}

}  // namespace anneal::cli
