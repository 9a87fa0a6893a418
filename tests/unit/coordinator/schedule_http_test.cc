// GET /api/schedules and /api/schedules/<team>/<name>: the bodies rendered from the coordinator's schedules
// and the routes that serve them (read-only; 404 names the schedule it did not find).
#include "coordinator/schedule_http.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "coordinator/http_router.h"
#include "teams_harness.h"

namespace anneal::coordinator {
namespace {

using testing::TeamsTest;

class ScheduleHttp : public TeamsTest {
 protected:
  HttpResponse Get(const HttpSnapshot& snapshot, const std::string& target) {
    HttpRouteOptions options;
    options.authenticate = [](std::string_view) { return Status::Ok(); };
    return RouteHttpRequest({.method = "GET", .target = target, .authorization = "Bearer t"}, snapshot, options);
  }
};

TEST_F(ScheduleHttp, ListsSchedulesAndServesEachInFull) {
  pb::ClientRequest create;
  auto* c = create.mutable_create_schedule();
  c->set_team("nlp");
  c->set_name("nightly");
  c->set_cron("0 3 * * *");
  c->set_time_zone("Europe/Berlin");
  c->set_pipeline_yaml(
      "name: nightly\nsteps:\n  - name: train\n    job:\n      model_name_or_path: /models/tiny\n"
      "      dataset: alpaca\n      output_dir: /out/http-${pipeline.id}\n");
  Done(As("nina", create));
  HttpSnapshot snapshot;
  snapshot.schedules = RenderSchedules(h_.core(), &snapshot.schedule_details);

  HttpResponse list = Get(snapshot, "/api/schedules");
  ASSERT_EQ(list.status, 200);
  EXPECT_EQ(list.content_type, "application/json");
  auto json = nlohmann::json::parse(list.body);
  ASSERT_EQ(json["schedules"].size(), 1u);
  EXPECT_EQ(json["schedules"][0]["name"], "nightly");
  EXPECT_EQ(json["schedules"][0]["pipeline_yaml"], "");  // the list leaves the YAML out
  EXPECT_EQ(json["next_fire_ms"].size(), 1u);

  HttpResponse one = Get(snapshot, "/api/schedules/nlp/nightly");
  ASSERT_EQ(one.status, 200);
  auto detail = nlohmann::json::parse(one.body);
  EXPECT_EQ(detail["schedule"]["time_zone"], "Europe/Berlin");
  EXPECT_NE(detail["schedule"]["pipeline_yaml"].get<std::string>().find("steps:"), std::string::npos);
  EXPECT_EQ(detail["next_fire_ms"].size(), 5u);

  HttpResponse missing = Get(snapshot, "/api/schedules/nlp/weekly");
  EXPECT_EQ(missing.status, 404);
  EXPECT_NE(missing.body.find("no schedule nlp/weekly"), std::string::npos) << missing.body;
}

}  // namespace
}  // namespace anneal::coordinator
