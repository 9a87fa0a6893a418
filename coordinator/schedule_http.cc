#include "coordinator/schedule_http.h"

#include "coordinator/coordinator.h"
#include "protocol/json.h"

namespace anneal::coordinator {

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
    (*details)[ScheduleManager::Key(record->team(), record->name())] = protocol::MessageToJson(one).dump();
    pb::ScheduleRecord summary = *record;
    summary.clear_pipeline_yaml();
    summary.clear_history();
    *list.add_schedules() = std::move(summary);
    list.add_next_fire_ms(next.ok() && !next->empty() ? next->front() : 0);
  }
  return protocol::MessageToJson(list).dump();
}

}  // namespace anneal::coordinator
