// The client channel: token, submit errors, get/list, WatchJob long poll, GetLogs through the agent, bad frames.
#include <gtest/gtest.h>

#include "harness.h"

namespace anneal::coordinator {
namespace {

using testing::BaseSpec;
using testing::Harness;

TEST(ClientApi, WrongTokenIsUnauthenticated) {
  Harness h;
  pb::ClientRequest req;
  req.mutable_list_nodes();
  pb::ClientReply none = h.CallExactly(req);
  EXPECT_EQ(none.error().code(), pb::UNAUTHENTICATED);
  EXPECT_NE(none.error().message().find("no token"), std::string::npos) << none.error().message();
  req.set_token("nope");
  pb::ClientReply malformed = h.CallExactly(req);
  EXPECT_EQ(malformed.error().code(), pb::UNAUTHENTICATED);
  EXPECT_NE(malformed.error().message().find("ant_<12 hex digits>_<64 hex digits>"), std::string::npos)
      << malformed.error().message();
  std::string forged = h.admin_token();
  forged.back() = forged.back() == '0' ? '1' : '0';  // the right id, a wrong secret
  req.set_token(forged);
  EXPECT_EQ(h.CallExactly(req).error().code(), pb::UNAUTHENTICATED);
  req.set_token(h.admin_token());
  EXPECT_EQ(h.CallExactly(req).error().code(), pb::OK);
}

TEST(ClientApi, InvalidSpecIsRejectedNamingTheKey) {
  Harness h;
  pb::ClientRequest req;
  req.mutable_submit()->set_spec_yaml(BaseSpec("lora_rnak: 8\n"));
  pb::ClientReply reply = h.Call(req);
  EXPECT_EQ(reply.error().code(), pb::INVALID_ARGUMENT);
  EXPECT_NE(reply.error().message().find("lora_rnak"), std::string::npos) << reply.error().message();
  EXPECT_EQ(h.core().ActiveJobCount(), 0u);
}

TEST(ClientApi, SubmitStoresTheResolvedSpecAndOverrides) {
  Harness h;
  pb::ClientRequest req;
  const std::string spec = BaseSpec();
  req.mutable_submit()->set_spec_yaml(spec);
  req.mutable_submit()->add_overrides("learning_rate=0.001");
  req.mutable_submit()->set_name("my-run");
  pb::ClientReply reply = h.Call(req);
  ASSERT_EQ(reply.error().code(), pb::OK) << reply.error().message();
  pb::JobRecord r = h.Job(reply.submit().job_id());
  EXPECT_EQ(r.name(), "my-run");
  EXPECT_NE(r.spec_yaml().find("learning_rate"), std::string::npos);
  EXPECT_NE(r.spec_yaml().find("lora_rank"), std::string::npos);  // defaults are explicit
  EXPECT_EQ(r.submitted_spec_yaml(), spec);
  EXPECT_EQ(r.max_attempts(), 3u);
}

TEST(ClientApi, EmptyListsAreStillRepliesOfTheirKind) {
  // A client matches the reply's body to its request: an empty list must still set the body.
  Harness h;
  const std::string job = h.Submit(BaseSpec());
  pb::ClientRequest ck;
  ck.mutable_list_checkpoints()->set_job_id(job);
  pb::ClientReply reply = h.Call(ck);
  EXPECT_EQ(reply.body_case(), pb::ClientReply::kListCheckpoints);
  EXPECT_EQ(reply.list_checkpoints().checkpoints_size(), 0);
  pb::ClientRequest jobs;
  jobs.mutable_list_jobs()->add_states(pb::JOB_SUCCEEDED);
  EXPECT_EQ(h.Call(jobs).body_case(), pb::ClientReply::kListJobs);
}

TEST(ClientApi, GetJobAndListJobs) {
  Harness h;
  const std::string a = h.Submit(BaseSpec());
  const std::string b = h.Submit(BaseSpec());
  h.Cancel(a);
  pb::ClientRequest get;
  get.mutable_get_job()->set_job_id(b);
  pb::ClientReply reply = h.Call(get);
  EXPECT_EQ(reply.get_job().job().job_id(), b);
  ASSERT_GE(reply.get_job().events_size(), 1);
  EXPECT_EQ(reply.get_job().events(0).to_state(), pb::JOB_PENDING);
  get.mutable_get_job()->set_job_id("job-999999");
  EXPECT_EQ(h.Call(get).error().code(), pb::NOT_FOUND);

  pb::ClientRequest list;
  list.mutable_list_jobs();
  EXPECT_EQ(h.Call(list).list_jobs().jobs_size(), 2);
  list.mutable_list_jobs()->add_states(pb::JOB_PENDING);
  auto pending = h.Call(list).list_jobs();
  ASSERT_EQ(pending.jobs_size(), 1);
  EXPECT_EQ(pending.jobs(0).job_id(), b);
  list.mutable_list_jobs()->clear_states();
  list.mutable_list_jobs()->add_states(pb::JOB_CANCELLED);
  EXPECT_EQ(h.Call(list).list_jobs().jobs_size(), 1);
}

TEST(ClientApi, WatchAnswersAtOnceWhenSomethingIsNew) {
  Harness h;
  const std::string job = h.Submit(BaseSpec());
  pb::ClientRequest watch;
  watch.mutable_watch()->set_job_id(job);
  watch.mutable_watch()->set_after_event_seq(0);
  watch.mutable_watch()->set_timeout_ms(30000);
  pb::ClientReply reply = h.Call(watch);
  ASSERT_GE(reply.watch().events_size(), 1);
  EXPECT_EQ(reply.watch().events(0).to_state(), pb::JOB_PENDING);
}

TEST(ClientApi, WatchLongPollsUntilNewsOrTimeout) {
  Harness h;
  const std::string job = h.Submit(BaseSpec());
  pb::ClientRequest watch;
  watch.set_request_id(77);
  watch.mutable_watch()->set_job_id(job);
  watch.mutable_watch()->set_after_event_seq(h.Job(job).next_event_seq() - 1);  // caught up
  watch.mutable_watch()->set_timeout_ms(5000);
  watch.set_token(h.admin_token());
  h.core().OnClientRequest("watcher", watch);
  h.Round();
  auto replies_to_watcher = [&] {
    int n = 0;
    for (const auto& m : h.sent()) n += m.routing_id == "watcher";
    return n;
  };
  EXPECT_EQ(replies_to_watcher(), 0);  // nothing new: parked, the loop goes on
  h.Register("n1", 1);                  // placement: a new event
  ASSERT_EQ(replies_to_watcher(), 1);
  for (const auto& m : h.sent()) {
    if (m.routing_id != "watcher") continue;
    const auto& r = std::get<pb::ClientReply>(m.message);
    EXPECT_EQ(r.request_id(), 77u);
    ASSERT_GE(r.watch().events_size(), 1);
    EXPECT_EQ(r.watch().events(0).to_state(), pb::JOB_STARTING);
  }
  // Caught up: answered empty after the timeout.
  watch.mutable_watch()->set_after_event_seq(h.Job(job).next_event_seq() - 1);
  watch.set_token(h.admin_token());
  h.core().OnClientRequest("watcher", watch);
  h.Advance(4999);
  EXPECT_EQ(replies_to_watcher(), 0);
  h.Advance(2);
  EXPECT_EQ(replies_to_watcher(), 1);
}

TEST(ClientApi, WatchSeesMetricsAfterAStep) {
  Harness h;
  h.Register("n1", 1);
  const std::string job = h.Submit(BaseSpec());
  h.ReportAll(job, pb::TASK_RUNNING);
  pb::JobRecord r = h.Job(job);
  pb::AgentToCoordinator batch;
  batch.mutable_metric_batch()->set_seq(100);
  batch.mutable_metric_batch()->set_job_id(job);
  batch.mutable_metric_batch()->set_epoch(r.epoch());
  for (uint64_t step : {10, 20}) {
    auto* p = batch.mutable_metric_batch()->add_points();
    p->set_step(step);
    (*p->mutable_values())["loss"] = 3.0 - step / 10.0;
  }
  h.core().OnAgentMessage(Harness::Peer("n1"), batch);
  h.Round();
  pb::ClientRequest watch;
  watch.mutable_watch()->set_job_id(job);
  watch.mutable_watch()->set_after_event_seq(r.next_event_seq());
  watch.mutable_watch()->set_after_metric_step(10);
  watch.mutable_watch()->set_timeout_ms(10000);
  auto reply = h.Call(watch);
  ASSERT_EQ(reply.watch().metrics_size(), 1);
  EXPECT_EQ(reply.watch().metrics(0).step(), 20u);
  EXPECT_DOUBLE_EQ(reply.watch().metrics(0).values().at("loss"), 1.0);
}

TEST(ClientApi, GetLogsIsFetchedFromTheAgentThatHoldsThem) {
  Harness h;
  h.Register("n1", 1);
  const std::string job = h.Submit(BaseSpec());
  pb::ClientRequest req;
  req.set_request_id(5);
  req.mutable_get_logs()->set_job_id(job);
  req.mutable_get_logs()->set_rank(0);
  req.mutable_get_logs()->set_offset(100);
  req.set_token(h.admin_token());
  h.core().OnClientRequest("cli", req);
  h.Round();
  pb::FetchLogs fetch;
  for (const auto& m : h.AgentMessages("n1")) if (m.has_fetch_logs()) fetch = m.fetch_logs();
  ASSERT_EQ(fetch.job_id(), job);
  EXPECT_EQ(fetch.offset(), 100u);
  pb::AgentToCoordinator chunk;
  chunk.mutable_log_chunk()->set_request_id(fetch.request_id());
  chunk.mutable_log_chunk()->set_offset(100);
  chunk.mutable_log_chunk()->set_data("hello\n");
  h.core().OnAgentMessage(Harness::Peer("n1"), chunk);
  h.Round();
  ASSERT_EQ(h.sent().size(), 1u);
  const auto& reply = std::get<pb::ClientReply>(h.sent()[0].message);
  EXPECT_EQ(h.sent()[0].routing_id, "cli");
  EXPECT_EQ(reply.request_id(), 5u);
  EXPECT_EQ(reply.get_logs().data(), "hello\n");
  EXPECT_EQ(reply.get_logs().next_offset(), 106u);
}

TEST(ClientApi, GetLogsFromADownNodeIsUnavailable) {
  CoordinatorOptions o;
  o.heartbeat_timeout_ms = 1000;
  o.heartbeat_interval_ms = 100;
  Harness h(o);
  h.Register("n1", 1);
  const std::string job = h.Submit(BaseSpec());
  h.Advance(1001);
  pb::ClientRequest req;
  req.mutable_get_logs()->set_job_id(job);
  pb::ClientReply reply = h.Call(req);
  EXPECT_EQ(reply.error().code(), pb::UNAVAILABLE);
  EXPECT_NE(reply.error().message().find("n1"), std::string::npos);
}

TEST(ClientApi, GetLogsTimesOutWhenTheAgentNeverAnswers) {
  Harness h;
  h.Register("n1", 1);
  const std::string job = h.Submit(BaseSpec());
  pb::ClientRequest req;
  req.mutable_get_logs()->set_job_id(job);
  req.set_token(h.admin_token());
  h.core().OnClientRequest("cli", req);
  h.Round();
  h.Heartbeat("n1");
  h.Advance(5001);
  ASSERT_EQ(h.sent().size(), 1u);
  EXPECT_EQ(std::get<pb::ClientReply>(h.sent()[0].message).error().code(), pb::DEADLINE_EXCEEDED);
}

TEST(ClientApi, BadFramesGetErrorsOfTheExpectedType) {
  Harness h;
  h.core().OnBadClientMessage("cli", 3, InvalidArgumentError("not an Anneal message"));
  h.core().OnBadAgentMessage("agent", VersionMismatchError("peer speaks version 2"));
  h.Round();
  ASSERT_EQ(h.sent().size(), 2u);
  EXPECT_EQ(std::get<pb::ClientReply>(h.sent()[0].message).error().code(), pb::INVALID_ARGUMENT);
  EXPECT_EQ(std::get<pb::CoordinatorToAgent>(h.sent()[1].message).error().code(), pb::VERSION_MISMATCH);
}

}  // namespace
}  // namespace anneal::coordinator
