// anneal models ls|show|register|promote|archive: the model registry (coordinator/model_registry.h;
// docs/user-guide.md "Models"). A model is named TEAM/NAME, or NAME with --team (or alone when only one team
// you may read has a model of that name).
#include <fmt/format.h>

#include <iostream>

#include "cli/commands.h"
#include "cli/output.h"
#include "protocol/states.h"

namespace anneal::cli {

namespace {

struct ModelRef {
  std::string team, name;
};

// "nlp/summarizer" -> {nlp, summarizer}; "summarizer" -> {--team, summarizer}. INVALID_ARGUMENT on "a/b/c".
StatusOr<ModelRef> ParseModelRef(const std::string& text, const std::string& team_flag) {
  const auto slash = text.find('/');
  if (slash == std::string::npos) return ModelRef{team_flag, text};
  if (text.find('/', slash + 1) != std::string::npos || slash == 0 || slash + 1 == text.size()) {
    return InvalidArgumentError(
        fmt::format("'{}' is not a model name: expected TEAM/NAME or NAME (with --team)", text));
  }
  if (!team_flag.empty() && team_flag != text.substr(0, slash)) {
    return InvalidArgumentError(
        fmt::format("'{}' names team '{}' but --team says '{}'", text, text.substr(0, slash), team_flag));
  }
  return ModelRef{text.substr(0, slash), text.substr(slash + 1)};
}

// "-" for a stage the record does not set (protocol::StateName says "unspecified" in sentences).
std::string StageText(pb::ModelStage stage) {
  return stage == pb::MODEL_STAGE_UNSPECIFIED ? "-" : std::string(protocol::StateName(stage));
}

std::string ArtifactText(pb::ModelArtifact a) {
  return a == pb::MODEL_PEFT_ADAPTER ? "adapter" : a == pb::MODEL_MERGED ? "merged" : "-";
}

// The version's metrics on its newest eval set: "eval_loss 0.81, eval_accuracy 0.6".
std::string LatestMetrics(const pb::ModelVersionRecord& v) {
  if (v.evals().empty()) return "-";
  std::map<std::string, double> sorted(v.evals().rbegin()->metrics().begin(), v.evals().rbegin()->metrics().end());
  std::vector<std::string> parts;
  for (const auto& [k, value] : sorted) parts.push_back(k + " " + Metric(value));
  return parts.empty() ? "-" : fmt::format("{}", fmt::join(parts, ", "));
}

template <typename Fill>
StatusOr<pb::ClientReply> Call(const GlobalOptions& g, Fill fill) {
  ASSIGN_OR_RETURN(auto client, MakeClient(g));
  pb::ClientRequest req;
  fill(req);
  return client->Call(req);
}

int List(const GlobalOptions& g, const std::string& team) {
  auto reply = Call(g, [&](pb::ClientRequest& r) { r.mutable_list_models()->set_team(team); });
  if (!reply.ok()) return ReportError("models ls", reply.status());
  const pb::ListModelsReply& list = reply->list_models();
  if (g.json) {
    std::cout << ToJson(list).dump(2) << "\n";
    return kExitOk;
  }
  if (list.models().empty()) {
    std::cout << "no models yet (a pipeline's promote step or anneal models register makes one)\n";
    return kExitOk;
  }
  const int64_t now = NowMs();
  Table t({"MODEL", "VERSIONS", "PRODUCTION", "FROM JOB", "PROMOTED", "METRICS"});
  for (const auto& m : list.models()) {
    const pb::ModelVersionRecord* prod = nullptr;
    for (const auto& p : list.production()) {
      if (p.team() == m.team() && p.model() == m.name()) prod = &p;
    }
    t.Add({m.team() + "/" + m.name(), std::to_string(m.latest_version()),
           prod == nullptr ? "-" : "v" + std::to_string(prod->version()), prod == nullptr ? "-" : prod->source_job_id(),
           prod == nullptr ? "-" : Age(prod->promoted_at_ms(), now) + " ago",
           prod == nullptr ? "-" : LatestMetrics(*prod)});
  }
  t.Print(std::cout);
  return kExitOk;
}

void PrintVersion(const pb::ModelVersionRecord& v) {
  std::cout << fmt::format("\nv{}  {}  {} {}\n", v.version(), StageText(v.stage()), ArtifactText(v.artifact()),
                           v.path());
  std::cout << fmt::format(
      "  from job {}{}; base {}; created {} by {}\n", v.source_job_id(),
      v.pipeline_id().empty() ? "" : fmt::format(" (pipeline {} step {})", v.pipeline_id(), v.pipeline_step()),
      v.base_model().empty() ? "-" : v.base_model(), Timestamp(v.created_at_ms()), v.created_by());
  if (!v.datasets().empty()) {
    std::vector<std::string> parts;
    for (const auto& d : v.datasets()) {
      parts.push_back(d.name() + (d.content_hash().empty() ? " (not hashed)" : " " + d.content_hash().substr(0, 19)));
    }
    std::cout << fmt::format("  data: {}\n", fmt::join(parts, ", "));
  }
  std::cout << fmt::format("  files: {} ({}){}\n", v.files_size(), Bytes(v.total_bytes()),
                           v.files_note().empty() ? "" : "; " + v.files_note());
  for (const auto& e : v.evals()) {
    std::map<std::string, double> sorted(e.metrics().begin(), e.metrics().end());
    std::vector<std::string> parts;
    for (const auto& [k, value] : sorted) parts.push_back(k + " " + Metric(value));
    std::cout << fmt::format("  eval {}: {}{}\n", e.eval_set().empty() ? "(unnamed set)" : e.eval_set(),
                             fmt::join(parts, ", "), e.job_id().empty() ? "" : " (job " + e.job_id() + ")");
  }
  if (!v.decision().text().empty()) std::cout << "  decision: " << v.decision().text() << "\n";
  for (const auto& h : v.history()) {
    std::cout << fmt::format("  {} {} -> {} by {}{}\n", Timestamp(h.time_ms()), StageText(h.from()), StageText(h.to()),
                             h.actor(), h.reason().empty() ? "" : ": " + h.reason());
  }
}

int Show(const GlobalOptions& g, const std::string& ref_text, const std::string& team) {
  auto ref = ParseModelRef(ref_text, team);
  if (!ref.ok()) return ReportError("models show", ref.status());
  auto reply = Call(g, [&](pb::ClientRequest& r) {
    r.mutable_get_model()->set_team(ref->team);
    r.mutable_get_model()->set_name(ref->name);
  });
  if (!reply.ok()) return ReportError("models show", reply.status());
  const pb::GetModelReply& got = reply->get_model();
  if (g.json) {
    std::cout << ToJson(got).dump(2) << "\n";
    return kExitOk;
  }
  const pb::ModelRecord& m = got.model();
  std::cout << fmt::format("{}/{}: {} version(s), production {}; created {} by {}\n", m.team(), m.name(),
                           m.latest_version(),
                           m.production_version() == 0 ? "none" : "v" + std::to_string(m.production_version()),
                           Timestamp(m.created_at_ms()), m.created_by());
  for (const auto& v : got.versions()) PrintVersion(v);
  return kExitOk;
}

// register / promote / archive: one version reply.
template <typename Fill>
int Change(const GlobalOptions& g, const std::string& command, Fill fill) {
  auto reply = Call(g, fill);
  if (!reply.ok()) return ReportError(command, reply.status());
  const pb::ModelVersionReply& out = reply->has_register_model()  ? reply->register_model()
                                     : reply->has_promote_model() ? reply->promote_model()
                                                                  : reply->archive_model();
  if (g.json) {
    std::cout << ToJson(out).dump(2) << "\n";
  } else {
    std::cout << out.message() << " (now " << StageText(out.version().stage()) << ")\n";
  }
  return kExitOk;
}

struct ModelArgs {
  std::string team, model, job, reason;
  uint32_t version = 0;
};

}  // namespace

void AddModelRegistryCommands(CLI::App& app, GlobalOptions& g, Action* action) {
  auto a = std::make_shared<ModelArgs>();
  auto* models = app.add_subcommand("models", "The model registry: versions, stages, promotions");
  models->require_subcommand(1);

  auto* ls = models->add_subcommand("ls", "Models with their production version");
  ls->add_option("--team", a->team, "only this team (default: every team you may read)");
  ls->callback([&g, a, action] { *action = [&g, a] { return List(g, a->team); }; });

  auto* show = models->add_subcommand("show", "A model's versions: files, data, metrics, decisions, stage history");
  show->add_option("model", a->model, "TEAM/NAME, or NAME")->required();
  show->add_option("--team", a->team, "the model's team");
  show->callback([&g, a, action] { *action = [&g, a] { return Show(g, a->model, a->team); }; });

  auto* reg = models->add_subcommand("register", "Register a succeeded train job's output as a candidate version");
  reg->add_option("--job", a->job, "the SUCCEEDED train job")->required();
  reg->add_option("--model", a->model, "TEAM/NAME or NAME (created on first use)")->required();
  reg->add_option("--team", a->team, "the model's team (default: your only team)");
  reg->callback([&g, a, action] {
    *action = [&g, a] {
      auto ref = ParseModelRef(a->model, a->team);
      if (!ref.ok()) return ReportError("models register", ref.status());
      return Change(g, "models register", [&](pb::ClientRequest& r) {
        r.mutable_register_model()->set_team(ref->team);
        r.mutable_register_model()->set_name(ref->name);
        r.mutable_register_model()->set_job_id(a->job);
      });
    };
  });

  for (const bool promote : {true, false}) {
    auto* cmd = models->add_subcommand(promote ? "promote" : "archive",
                                       promote ? "Put a version in production (a candidate, or an archived one: "
                                                 "rollback); the production one is archived"
                                               : "Archive a candidate version");
    cmd->add_option("model", a->model, "TEAM/NAME, or NAME")->required();
    cmd->add_option("version", a->version, "the version number (anneal models show lists them)")->required();
    cmd->add_option("--reason", a->reason, "why (recorded in the version's history and the audit log)");
    cmd->add_option("--team", a->team, "the model's team");
    const std::string command = promote ? "models promote" : "models archive";
    cmd->callback([&g, a, action, promote, command] {
      *action = [&g, a, promote, command] {
        auto ref = ParseModelRef(a->model, a->team);
        if (!ref.ok()) return ReportError(command, ref.status());
        return Change(g, command, [&](pb::ClientRequest& r) {
          if (promote) {
            auto* p = r.mutable_promote_model();
            p->set_team(ref->team), p->set_name(ref->name), p->set_version(a->version), p->set_reason(a->reason);
          } else {
            auto* p = r.mutable_archive_model();
            p->set_team(ref->team), p->set_name(ref->name), p->set_version(a->version), p->set_reason(a->reason);
          }
        });
      };
    });
  }
}

}  // namespace anneal::cli
