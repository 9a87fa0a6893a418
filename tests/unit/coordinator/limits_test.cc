// The request size and name limits (coordinator/limits.h): each refusal names the field, its size and the limit.
#include "coordinator/limits.h"

#include <gtest/gtest.h>

namespace anneal::coordinator {
namespace {

TEST(Limits, SpecAndOverridesTogetherAreBoundedBySpecBytes) {
  Limits limits;
  limits.max_spec_bytes = 100;
  pb::ClientRequest r;
  r.mutable_submit()->set_spec_yaml(std::string(60, 'x'));
  EXPECT_TRUE(CheckClientRequestLimits(r, limits).ok());
  r.mutable_submit()->add_overrides(std::string(50, 'o'));
  Status st = CheckClientRequestLimits(r, limits);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("110 bytes"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("max_spec_bytes"), std::string::npos) << st.message();
}

TEST(Limits, EveryNameAndIdIsBounded) {
  Limits limits;
  limits.max_name_bytes = 8;
  const std::string long_id(9, 'j');
  pb::ClientRequest submit;
  submit.mutable_submit()->set_name(long_id);
  pb::ClientRequest get;
  get.mutable_get_job()->set_job_id(long_id);
  pb::ClientRequest cancel;
  cancel.mutable_cancel()->set_job_id(long_id);
  pb::ClientRequest watch;
  watch.mutable_watch()->set_job_id(long_id);
  pb::ClientRequest logs;
  logs.mutable_get_logs()->set_job_id(long_id);
  pb::ClientRequest checkpoints;
  checkpoints.mutable_list_checkpoints()->set_job_id(long_id);
  pb::ClientRequest drain;
  drain.mutable_drain()->set_node_id(long_id);
  for (const auto* r : {&submit, &get, &cancel, &watch, &logs, &checkpoints, &drain}) {
    Status st = CheckClientRequestLimits(*r, limits);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << r->ShortDebugString();
    EXPECT_NE(st.message().find("9 bytes, above the limit of 8 bytes (max_name_bytes)"), std::string::npos)
        << st.message();
  }
  get.mutable_get_job()->set_job_id("12345678");
  EXPECT_TRUE(CheckClientRequestLimits(get, limits).ok());
}

TEST(Limits, AnAgentsNodeIdAndLabelsAreBounded) {
  Limits limits;
  limits.max_name_bytes = 8;
  pb::AgentToCoordinator m;
  m.mutable_register_()->set_node_id("node-1");
  (*m.mutable_register_()->mutable_inventory()->mutable_labels())["rack"] = "r1";
  EXPECT_TRUE(CheckAgentMessageLimits(m, limits).ok());
  (*m.mutable_register_()->mutable_inventory()->mutable_labels())["rack"] = std::string(100, 'v');
  Status st = CheckAgentMessageLimits(m, limits);
  EXPECT_NE(st.message().find("label 'rack'"), std::string::npos) << st.message();
  pb::AgentToCoordinator beat;
  beat.mutable_heartbeat()->set_node_id(std::string(9, 'n'));
  EXPECT_EQ(CheckAgentMessageLimits(beat, limits).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace anneal::coordinator
