#include "coordinator/schedule_http.h"

#include <google/protobuf/util/json_util.h>

#include "coordinator/coordinator.h"

namespace anneal::coordinator {
namespace {

std::string Json(const google::protobuf::Message& message) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;  // as the CLI's --json
  if (!google::protobuf::util::MessageToJsonString(message, &out, options).ok()) return "{}";
  return out;
}

}  // namespace

std::string RenderSchedules(const Coordinator& core, std::map<std::string, std::string>* details) {
  const ScheduleManager& schedules = core.schedules();
  pb::ListSchedulesReply list;
  for (const pb::ScheduleRecord* record : schedules.List("")) {
    pb::ScheduleReply one;
    *one.mutable_schedule() = *record;
    auto next = schedules.NextFireTimes(*record, 5);
    if (next.ok()) {
      for (int64_t ms : *next) one.add_next_fire_ms(ms);
    }
    (*details)[ScheduleManager::Key(record->team(), record->name())] = Json(one);
    pb::ScheduleRecord summary = *record;
    summary.clear_pipeline_yaml();
    summary.clear_history();
    *list.add_schedules() = std::move(summary);
    list.add_next_fire_ms(next.ok() && !next->empty() ? next->front() : 0);
  }
  return Json(list);
}

}  // namespace anneal::coordinator
