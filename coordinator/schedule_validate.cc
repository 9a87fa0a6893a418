// Creating a schedule (every field checked, each refusal naming the field) and the bounds of the schedule
// requests (coordinator/schedules.h).
#include <fmt/format.h>

#include "coordinator/identity.h"
#include "coordinator/schedules.h"

namespace anneal::coordinator {
namespace {

constexpr size_t kMaxOverrides = 64;
constexpr size_t kMaxDatasetPaths = 16;
constexpr size_t kMaxCronBytes = 256;
constexpr int64_t kMaxCheckIntervalMs = 30LL * 24 * 3600 * 1000;

Status CheckRef(const pb::ScheduleRef& ref, const Limits& limits) {
  RETURN_IF_ERROR(CheckNameLength("the schedule's team", ref.team(), limits));
  return CheckNameLength("the schedule name", ref.name(), limits);
}

Status CheckCreateLimits(const pb::CreateScheduleRequest& create, const Limits& limits) {
  RETURN_IF_ERROR(CheckNameLength("the schedule's team", create.team(), limits));
  RETURN_IF_ERROR(CheckNameLength("the schedule name", create.name(), limits));
  RETURN_IF_ERROR(CheckNameLength("the time zone", create.time_zone(), limits));
  if (create.cron().size() > kMaxCronBytes) {
    return InvalidArgumentError(
        fmt::format("the cron expression is {} bytes, above the limit of {}", create.cron().size(), kMaxCronBytes));
  }
  size_t spec_bytes = create.pipeline_yaml().size();
  for (const auto& [key, value] : create.overrides()) spec_bytes += key.size() + value.size() + 1;
  if (spec_bytes > limits.max_spec_bytes) {
    return InvalidArgumentError(
        fmt::format("the pipeline YAML (with its --set overrides) is {} bytes, above the "
                    "limit of {} bytes (max_spec_bytes)",
                    spec_bytes, limits.max_spec_bytes));
  }
  if (create.overrides_size() > static_cast<int>(kMaxOverrides)) {
    return InvalidArgumentError(
        fmt::format("{} --set overrides, above the limit of {}", create.overrides_size(), kMaxOverrides));
  }
  if (create.dataset_paths_size() > static_cast<int>(kMaxDatasetPaths)) {
    return InvalidArgumentError(
        fmt::format("{} dataset paths, above the limit of {}", create.dataset_paths_size(), kMaxDatasetPaths));
  }
  for (const auto& path : create.dataset_paths()) RETURN_IF_ERROR(CheckNameLength("a dataset path", path, limits));
  return Status::Ok();
}

}  // namespace

Status CheckScheduleRequestLimits(const pb::ClientRequest& request, const Limits& limits) {
  switch (request.body_case()) {
    case pb::ClientRequest::kCreateSchedule:
      return CheckCreateLimits(request.create_schedule(), limits);
    case pb::ClientRequest::kListSchedules:
      return CheckNameLength("the team", request.list_schedules().team(), limits);
    case pb::ClientRequest::kGetSchedule:
      return CheckRef(request.get_schedule().schedule(), limits);
    case pb::ClientRequest::kPauseSchedule:
      return CheckRef(request.pause_schedule().schedule(), limits);
    case pb::ClientRequest::kResumeSchedule:
      return CheckRef(request.resume_schedule().schedule(), limits);
    case pb::ClientRequest::kDeleteSchedule:
      return CheckRef(request.delete_schedule().schedule(), limits);
    case pb::ClientRequest::kTriggerSchedule:
      return CheckRef(request.trigger_schedule().schedule(), limits);
    default:
      return Status::Ok();
  }
}

StatusOr<pb::ScheduleRecord> ScheduleManager::Create(const pb::CreateScheduleRequest& request, const std::string& team,
                                                     const std::string& owner, const PathCheck& check_paths) {
  RETURN_IF_ERROR(ValidateIdentityName("schedule name", request.name()));
  if (Find(team, request.name()) != nullptr) {
    return AlreadyExistsError(
        fmt::format("team '{}' already has a schedule '{}' (delete it first, or pick another "
                    "name)",
                    team, request.name()));
  }
  const bool has_cron = !request.cron().empty();
  const bool has_data = request.dataset_paths_size() > 0;
  if (has_cron == has_data) {
    return InvalidArgumentError(
        fmt::format("schedule '{}' needs exactly one trigger: a cron expression (--cron) or "
                    "dataset paths (--on-data-change), not {}",
                    request.name(), has_cron ? "both" : "neither"));
  }
  Entry entry;
  pb::ScheduleRecord& record = entry.record;
  if (has_cron) {
    ASSIGN_OR_RETURN(entry.cron, ParseCron(request.cron()));
    RETURN_IF_ERROR(CheckTimeZone(request.time_zone()));
    record.set_cron(entry.cron->text);
    record.set_time_zone(request.time_zone());
  } else {
    if (!request.time_zone().empty()) {
      return InvalidArgumentError("--tz applies to cron schedules only (a data trigger checks at an interval)");
    }
    const int64_t interval = request.check_interval_ms();
    if (interval < options_.min_check_interval_ms || interval > kMaxCheckIntervalMs) {
      return InvalidArgumentError(fmt::format("check interval {} ms is outside {} ms - {} ms (30 days)", interval,
                                              options_.min_check_interval_ms, kMaxCheckIntervalMs));
    }
    auto* trigger = record.mutable_data_trigger();
    for (const auto& path : request.dataset_paths()) {
      if (path.empty() || path.front() != '/') {
        return InvalidArgumentError(fmt::format("dataset path '{}' is not absolute", path));
      }
      if (check_paths) RETURN_IF_ERROR(check_paths(team, path));
      trigger->add_dataset_paths(path);
    }
    trigger->set_check_interval_ms(interval);
  }
  if (request.pipeline_yaml().empty()) return InvalidArgumentError("the schedule has no pipeline YAML");
  std::map<std::string, std::string> overrides(request.overrides().begin(), request.overrides().end());
  if (Status st = launcher_->Validate(request.pipeline_yaml(), team, owner, overrides); !st.ok()) {
    return st.WithContext(fmt::format("schedule '{}': its pipeline", request.name()));
  }
  const int64_t now = clock_->NowMs();
  record.set_team(team);
  record.set_name(request.name());
  record.set_owner(owner);
  record.set_pipeline_yaml(request.pipeline_yaml());
  *record.mutable_overrides() = request.overrides();
  record.set_concurrency(request.concurrency() == pb::CONCURRENCY_UNSPECIFIED ? pb::CONCURRENCY_FORBID
                                                                              : request.concurrency());
  record.set_missed(request.missed() == pb::MISSED_UNSPECIFIED ? pb::MISSED_RUN_ONCE : request.missed());
  record.set_state(pb::SCHEDULE_ACTIVE);
  record.set_created_ms(now);
  record.set_cursor_ms(now);  // the first fire is the first fire time after creation
  RefreshNextFire(entry);
  Put(entry);
  auto [it, inserted] = entries_.emplace(Key(team, request.name()), std::move(entry));
  return it->second.record;
}

}  // namespace anneal::coordinator
