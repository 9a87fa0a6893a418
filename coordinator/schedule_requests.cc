// The schedule requests (`anneal schedule create|ls|show|pause|resume|trigger|delete|next`) and the coordinator's side
// of the ScheduleManager (coordinator/schedules.h): the pipelines it fires, the hasher of its data triggers.
//
//   request            needs (coordinator/authz.h)          audited as
//   create             member in the schedule's team        schedule.create
//   pause / resume     member                               schedule.pause / schedule.resume
//   trigger            member (the run runs as the owner)   schedule.trigger
//   delete             member                               schedule.delete
//   list / get (next)  viewer                               (reads are not audited)
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "coordinator/authz.h"
#include "coordinator/coordinator.h"
#include "coordinator/schedule_hasher.h"

namespace anneal::coordinator {
namespace {

constexpr uint32_t kDefaultNextCount = 5;

// The team a request names, or the caller's only team (any role) when it names none.
StatusOr<std::string> ScheduleTeam(const Principal& who, const std::string& requested) {
  if (!requested.empty()) return requested;
  if (who.teams.size() == 1) return who.teams.begin()->first;
  if (who.teams.empty() && who.cluster_admin) return std::string(kDefaultTeam);
  std::vector<std::string> teams;
  for (const auto& [team, role] : who.teams) teams.push_back(team);
  return InvalidArgumentError(fmt::format("user '{}' is in {} teams ({}): name the schedule's team with --team",
                                          who.user, teams.size(), fmt::join(teams, ", ")));
}

std::string OperationOf(const pb::ClientRequest& request) {
  switch (request.body_case()) {
    case pb::ClientRequest::kCreateSchedule:
      return "schedule.create";
    case pb::ClientRequest::kPauseSchedule:
      return "schedule.pause";
    case pb::ClientRequest::kResumeSchedule:
      return "schedule.resume";
    case pb::ClientRequest::kTriggerSchedule:
      return "schedule.trigger";
    default:
      return "schedule.delete";
  }
}

const pb::ScheduleRef& RefOf(const pb::ClientRequest& request) {
  switch (request.body_case()) {
    case pb::ClientRequest::kPauseSchedule:
      return request.pause_schedule().schedule();
    case pb::ClientRequest::kResumeSchedule:
      return request.resume_schedule().schedule();
    case pb::ClientRequest::kDeleteSchedule:
      return request.delete_schedule().schedule();
    case pb::ClientRequest::kTriggerSchedule:
      return request.trigger_schedule().schedule();
    default:
      return request.get_schedule().schedule();
  }
}

// The pipelines side of the schedules: the Coordinator's pipeline runs (pipelines part, coordinator/pipelines.h).
class CoordinatorPipelines final : public PipelineLauncher {
 public:
  explicit CoordinatorPipelines(Coordinator* core) : core_(core) {}
  Status Validate(const std::string& yaml, const std::string& team, const std::string& owner,
                  const std::map<std::string, std::string>& overrides) override {
    return core_->ValidateScheduledPipeline(yaml, team, owner, overrides);
  }
  StatusOr<std::string> Create(const std::string& yaml, const std::string& team, const std::string& owner,
                               const std::map<std::string, std::string>& overrides,
                               const std::string& origin) override {
    return core_->CreateScheduledPipeline(yaml, team, owner, overrides, origin);
  }
  bool Active(const std::string& run_id) const override { return core_->ScheduledPipelineActive(run_id); }
  Status Cancel(const std::string& run_id, const std::string& reason) override {
    return core_->CancelScheduledPipeline(run_id, reason);
  }

 private:
  Coordinator* core_;
};

}  // namespace

std::unique_ptr<ScheduleManager> Coordinator::MakeScheduleManager() {
  schedule_launcher_ = std::make_unique<CoordinatorPipelines>(this);
  if (!dataset_hasher_) dataset_hasher_ = std::make_unique<ThreadedDatasetHasher>(HashScheduledDatasets);
  return std::make_unique<ScheduleManager>(&batch_, store_, clock_, schedule_launcher_.get(), dataset_hasher_.get(),
                                           options_.schedules);
}

StatusOr<Principal> Coordinator::ScheduleOwner(const std::string& owner, const std::string& team) const {
  const pb::UserRecord* user = identity_.FindUser(owner);
  if (user == nullptr) {
    return PermissionDeniedError(fmt::format("the schedule's owner '{}' no longer exists", owner));
  }
  Principal who{.user = owner, .cluster_admin = user->cluster_admin(), .teams = {}};
  for (const auto& [name, role] : user->teams()) who.teams[name] = role;
  RETURN_IF_ERROR(RequireTeamRole(who, pb::ROLE_MEMBER, team, "run scheduled pipelines in"));
  return who;
}

pb::ScheduleReply Coordinator::ScheduleReplyOf(const pb::ScheduleRecord& record, uint32_t next_count) const {
  pb::ScheduleReply reply;
  *reply.mutable_schedule() = record;
  auto next = schedules_->NextFireTimes(record, next_count == 0 ? kDefaultNextCount : next_count);
  if (next.ok()) {
    for (int64_t ms : *next) reply.add_next_fire_ms(ms);
  }
  return reply;
}

bool Coordinator::HandleScheduleRequest(const Principal& who, const std::string& peer,
                                        const pb::ClientRequest& request) {
  const uint64_t id = request.request_id();
  switch (request.body_case()) {
    case pb::ClientRequest::kCreateSchedule:
    case pb::ClientRequest::kPauseSchedule:
    case pb::ClientRequest::kResumeSchedule:
    case pb::ClientRequest::kDeleteSchedule:
    case pb::ClientRequest::kTriggerSchedule:
      MutateSchedule(who, peer, request);
      return true;
    case pb::ClientRequest::kListSchedules: {
      const std::string& team = request.list_schedules().team();
      if (!team.empty()) {
        if (Status st = RequireTeamRole(who, pb::ROLE_VIEWER, team, "read the schedules of"); !st.ok()) {
          ReplyError(peer, id, st);
          return true;
        }
      }
      pb::ClientReply reply;
      reply.set_request_id(id);
      auto* list = reply.mutable_list_schedules();
      for (const pb::ScheduleRecord* record : schedules_->List(team)) {
        if (!who.cluster_admin && RoleIn(who, record->team()) < pb::ROLE_VIEWER) continue;
        pb::ScheduleRecord summary = *record;
        summary.clear_pipeline_yaml();
        summary.clear_history();
        *list->add_schedules() = std::move(summary);
        auto next = schedules_->NextFireTimes(*record, 1);
        list->add_next_fire_ms(next.ok() && !next->empty() ? next->front() : 0);
      }
      Reply(peer, std::move(reply));
      return true;
    }
    case pb::ClientRequest::kGetSchedule: {
      const pb::ScheduleRef& ref = RefOf(request);
      auto team = ScheduleTeam(who, ref.team());
      Status st = team.status();
      if (st.ok()) st = RequireTeamRole(who, pb::ROLE_VIEWER, *team, "read the schedules of");
      const pb::ScheduleRecord* record = st.ok() ? schedules_->Find(*team, ref.name()) : nullptr;
      if (st.ok() && record == nullptr)
        st = NotFoundError(fmt::format("team '{}' has no schedule '{}'", *team, ref.name()));
      if (!st.ok()) {
        ReplyError(peer, id, st);
        return true;
      }
      pb::ClientReply reply;
      reply.set_request_id(id);
      *reply.mutable_schedule() = ScheduleReplyOf(*record, request.get_schedule().next_count());
      Reply(peer, std::move(reply));
      return true;
    }
    default:
      return false;
  }
}

// A data trigger's path must lie in the team's datasets or outputs roots (what its jobs may read).
Status Coordinator::CheckDataPath(const std::string& team, const std::string& path) const {
  if (!options_.path_policy) return Status::Ok();
  ASSIGN_OR_RETURN(jobspec::PathRoots roots, options_.path_policy->RootsFor(team));
  std::vector<std::string> allowed = roots.datasets;
  allowed.insert(allowed.end(), roots.outputs.begin(), roots.outputs.end());
  return jobspec::CheckPathUnderRoots("--on-data-change", path, allowed, "datasets or outputs", false);
}

void Coordinator::MutateSchedule(const Principal& who, const std::string& peer, const pb::ClientRequest& request) {
  const bool create = request.has_create_schedule();
  const std::string requested_team = create ? request.create_schedule().team() : RefOf(request).team();
  const std::string name = create ? request.create_schedule().name() : RefOf(request).name();
  auto team = create ? ResolveSubmitTeam(who, requested_team) : ScheduleTeam(who, requested_team);
  StatusOr<pb::ScheduleRecord> result = team.status();
  if (team.ok()) {
    const char* what = create ? "create schedules in" : "change the schedules of";
    if (Status allowed = RequireTeamRole(who, pb::ROLE_MEMBER, *team, what); !allowed.ok()) {
      result = allowed;
    } else if (create) {
      result =
          schedules_->Create(request.create_schedule(), *team, who.user,
                             [this](const std::string& t, const std::string& path) { return CheckDataPath(t, path); });
    } else if (request.has_pause_schedule()) {
      result = schedules_->Pause(*team, name);
    } else if (request.has_resume_schedule()) {
      result = schedules_->Resume(*team, name);
    } else if (request.has_trigger_schedule()) {
      result = schedules_->Trigger(*team, name, who.user);
    } else {
      result = schedules_->Delete(*team, name);
    }
  }
  const std::string team_name = team.ok() ? *team : requested_team;
  audit_.Append({.user = who.user,
                 .team = team_name,
                 .operation = OperationOf(request),
                 .target = name,
                 .message = result.ok() ? fmt::format("schedule {}/{}", team_name, name) : ""},
                result.status());
  if (!result.ok()) {
    if (result.status().code() == StatusCode::kPermissionDenied) spdlog::info("refused: {}", result.status().message());
    ReplyError(peer, request.request_id(), result.status());
    return;
  }
  pb::ClientReply reply;
  reply.set_request_id(request.request_id());
  *reply.mutable_schedule() = ScheduleReplyOf(*result, kDefaultNextCount);
  Reply(peer, std::move(reply));
}

}  // namespace anneal::coordinator
