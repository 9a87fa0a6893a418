// The schedules' read-only HTTP bodies (coordinator/http_router.h): GET /api/schedules lists every schedule
// (without its pipeline YAML and history) with its next fire time; GET /api/schedules/<team>/<name> is one
// schedule in full with its next 5 fire times. JSON in protobuf's mapping with the .proto field names (as the
// CLI's --json: int64 as strings, enums by name).
//
// Thread-safety: called on the event loop (HttpServer::Publish) with the coordinator's in-memory view.
// Example: snapshot.schedules = RenderSchedules(core, &snapshot.schedule_details);
#pragma once

#include <map>
#include <string>

namespace anneal::coordinator {

class Coordinator;

// The list body; `details` gets one body per schedule, keyed "<team>/<name>".
std::string RenderSchedules(const Coordinator& core, std::map<std::string, std::string>* details);

}  // namespace anneal::coordinator
