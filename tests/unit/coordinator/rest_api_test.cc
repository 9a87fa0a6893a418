// The REST API's pure half (coordinator/rest_api.h): routes to ClientRequests, replies and errors to HTTP.
#include "coordinator/rest_api.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace anneal::coordinator {
namespace {

HttpRequest Req(std::string method, std::string target, std::string body = "", std::string type = "") {
  HttpRequest r;
  r.method = std::move(method);
  r.target = std::move(target);
  r.authorization = "Bearer tok";
  r.body = std::move(body);
  r.content_type = std::move(type);
  return r;
}

nlohmann::json Error(const HttpResponse& r) {
  auto body = nlohmann::json::parse(r.body);
  return body.at("error");
}

TEST(RestApi, ListJobsTakesRepeatedStatesByShortNameTeamLimitAndPageToken) {
  RestCall call;
  auto refused = BuildRestCall(Req("GET",
                                   "/api/v1/jobs?state=RUNNING&state=pending&team=nlp&limit=5&page_token="
                                   "job-000009"),
                               &call);
  ASSERT_FALSE(refused.has_value()) << refused->body;
  EXPECT_EQ(call.request.token(), "tok");
  const auto& list = call.request.list_jobs();
  ASSERT_EQ(list.states_size(), 2);
  EXPECT_EQ(list.states(0), pb::JOB_RUNNING);
  EXPECT_EQ(list.states(1), pb::JOB_PENDING);
  EXPECT_EQ(list.team(), "nlp");
  EXPECT_EQ(list.limit(), 5u);
  EXPECT_EQ(list.page_token(), "job-000009");
  EXPECT_EQ(call.route->success_status, 200);
}

TEST(RestApi, SubmitTakesAYamlBodyOrAJsonOneAndIsCreated) {
  RestCall yaml;
  ASSERT_FALSE(BuildRestCall(Req("POST", "/api/v1/jobs?name=n1&team=nlp", "max_steps: 3\n", "text/yaml"), &yaml));
  EXPECT_EQ(yaml.request.submit().spec_yaml(), "max_steps: 3\n");
  EXPECT_EQ(yaml.request.submit().name(), "n1");
  EXPECT_EQ(yaml.route->success_status, 201);
  RestCall json;
  ASSERT_FALSE(BuildRestCall(
      Req("POST", "/api/v1/jobs", R"({"spec_yaml": "a: 1", "overrides": ["x=1"]})", "application/json"), &json));
  EXPECT_EQ(json.request.submit().spec_yaml(), "a: 1");
  ASSERT_EQ(json.request.submit().overrides_size(), 1);
}

TEST(RestApi, PathFieldsFillNestedMessagesAndWatchWaitsItsTimeout) {
  RestCall schedule;
  ASSERT_FALSE(BuildRestCall(Req("POST", "/api/v1/schedules/nlp/night%20ly/pause"), &schedule));
  EXPECT_EQ(schedule.request.pause_schedule().schedule().team(), "nlp");
  EXPECT_EQ(schedule.request.pause_schedule().schedule().name(), "night ly");
  RestCall watch;
  ASSERT_FALSE(BuildRestCall(Req("GET", "/api/v1/jobs/job-000001/watch?after_event_seq=4&timeout_ms=2500"), &watch));
  EXPECT_EQ(watch.request.watch().job_id(), "job-000001");
  EXPECT_EQ(watch.request.watch().after_event_seq(), 4u);
  EXPECT_EQ(watch.extra_wait.count(), 2500);
  RestCall drain;
  ASSERT_FALSE(BuildRestCall(Req("POST", "/api/v1/nodes/n1/drain", R"({"evict": true})"), &drain));
  EXPECT_EQ(drain.request.drain().node_id(), "n1");
  EXPECT_TRUE(drain.request.drain().evict());
}

TEST(RestApi, RefusalsNameWhatWasRefused) {
  RestCall call;
  auto unknown = BuildRestCall(Req("GET", "/api/v1/jobs?colour=red"), &call);
  ASSERT_TRUE(unknown.has_value());
  EXPECT_EQ(unknown->status, 400);
  EXPECT_EQ(Error(*unknown)["code"], "INVALID_ARGUMENT");
  EXPECT_NE(Error(*unknown)["message"].get<std::string>().find("colour"), std::string::npos);

  auto bad_state = BuildRestCall(Req("GET", "/api/v1/jobs?state=sleeping"), &call);
  ASSERT_TRUE(bad_state.has_value());
  EXPECT_NE(Error(*bad_state)["message"].get<std::string>().find("sleeping"), std::string::npos);

  auto bad_json = BuildRestCall(Req("POST", "/api/v1/teams", "{nope", "application/json"), &call);
  ASSERT_TRUE(bad_json.has_value());
  EXPECT_EQ(bad_json->status, 400);

  // A megabyte of nesting is refused by its depth, not converted recursively (which would overflow the stack).
  const std::string deep = "{\"name\": " + std::string(500000, '[') + std::string(500000, ']') + "}";
  auto too_deep = BuildRestCall(Req("POST", "/api/v1/jobs", deep, "application/json"), &call);
  ASSERT_TRUE(too_deep.has_value());
  EXPECT_EQ(too_deep->status, 400);
  EXPECT_NE(Error(*too_deep)["message"].get<std::string>().find("deeper than 64"), std::string::npos) << too_deep->body;
  const std::string nested_ok = R"({"name": [[[1]]]})";
  auto shallow = BuildRestCall(Req("POST", "/api/v1/teams", nested_ok, "application/json"), &call);
  ASSERT_TRUE(shallow.has_value()) << "a shallow body is converted (and refused only for not fitting)";
  EXPECT_EQ(shallow->status, 400);
  EXPECT_EQ(Error(*shallow)["message"].get<std::string>().find("deeper"), std::string::npos);

  auto wrong_field = BuildRestCall(Req("POST", "/api/v1/teams", R"({"nmae": "x"})", "application/json"), &call);
  ASSERT_TRUE(wrong_field.has_value());
  EXPECT_NE(Error(*wrong_field)["message"].get<std::string>().find("nmae"), std::string::npos) << wrong_field->body;

  auto method = BuildRestCall(Req("PUT", "/api/v1/jobs"), &call);
  ASSERT_TRUE(method.has_value());
  EXPECT_EQ(method->status, 405);
  ASSERT_EQ(method->headers.size(), 1u);
  EXPECT_EQ(method->headers[0].second, "GET, POST");

  auto nowhere = BuildRestCall(Req("GET", "/api/v1/nothing"), &call);
  ASSERT_TRUE(nowhere.has_value());
  EXPECT_EQ(nowhere->status, 404);

  HttpRequest anonymous = Req("GET", "/api/v1/whoami");
  anonymous.authorization = "";
  auto none = BuildRestCall(anonymous, &call);
  ASSERT_TRUE(none.has_value());
  EXPECT_EQ(none->status, 401);
  EXPECT_EQ(Error(*none)["code"], "UNAUTHENTICATED");
  anonymous.authorization = "Basic eDp5";
  EXPECT_EQ(BuildRestCall(anonymous, &call)->status, 401);
  anonymous.authorization = "Bearer   ";
  EXPECT_EQ(BuildRestCall(anonymous, &call)->status, 401);
  // The scheme is case-insensitive; spaces around the token are not part of it.
  anonymous.authorization = "bearer  tok ";
  EXPECT_FALSE(BuildRestCall(anonymous, &call).has_value());
  EXPECT_EQ(call.request.token(), "tok");
}

TEST(RestApi, ErrorCodesMapToHttpStatuses) {
  EXPECT_EQ(RestHttpStatus(StatusCode::kInvalidArgument), 400);
  EXPECT_EQ(RestHttpStatus(StatusCode::kUnauthenticated), 401);
  EXPECT_EQ(RestHttpStatus(StatusCode::kPermissionDenied), 403);
  EXPECT_EQ(RestHttpStatus(StatusCode::kNotFound), 404);
  EXPECT_EQ(RestHttpStatus(StatusCode::kAlreadyExists), 409);
  EXPECT_EQ(RestHttpStatus(StatusCode::kFailedPrecondition), 409);
  EXPECT_EQ(RestHttpStatus(StatusCode::kResourceExhausted), 429);
  EXPECT_EQ(RestHttpStatus(StatusCode::kUnavailable), 503);
  EXPECT_EQ(RestHttpStatus(StatusCode::kDeadlineExceeded), 504);
  HttpResponse r = RestErrorResponse(PermissionDeniedError("you may not"));
  EXPECT_EQ(r.status, 403);
  EXPECT_EQ(Error(r)["code"], "PERMISSION_DENIED");
  EXPECT_EQ(Error(r)["message"], "you may not");
}

TEST(RestApi, RepliesAreProto3JsonWithLogsAsTextAndWireErrorsAsErrors) {
  pb::ClientReply reply;
  reply.mutable_get_logs()->set_data("step 1 loss 2.5\n");
  reply.mutable_get_logs()->set_next_offset(16);
  HttpResponse ok = RestReplyResponse(reply, 200);
  EXPECT_EQ(ok.status, 200);
  auto body = nlohmann::json::parse(ok.body);
  EXPECT_EQ(body["data"], "step 1 loss 2.5\n");
  EXPECT_EQ(body["next_offset"], "16") << "uint64 is a string in proto3 JSON";
  EXPECT_EQ(body["eof"], false);

  pb::ClientReply refused;
  refused.mutable_error()->set_code(pb::NOT_FOUND);
  refused.mutable_error()->set_message("no job 'x'");
  HttpResponse missing = RestReplyResponse(refused, 200);
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(Error(missing)["message"], "no job 'x'");
  EXPECT_EQ(RestReplyResponse(DeadlineExceededError("slow"), 200).status, 504);
}

TEST(RestApi, EveryRouteNamesARealRequestField) {
  for (const auto& route : RestRoutes()) {
    if (*route.body_field == '\0') continue;
    EXPECT_NE(pb::ClientRequest::descriptor()->FindFieldByName(route.body_field), nullptr) << route.pattern;
  }
}

}  // namespace
}  // namespace anneal::coordinator
