// The shared state names and predicates of protocol/states.h, checked against every enum value.
#include "protocol/states.h"

#include <gtest/gtest.h>

namespace anneal::protocol {
namespace {

TEST(StateNames, DropThePrefixOfEveryEnum) {
  EXPECT_EQ(StateName(pb::JOB_RUNNING), "RUNNING");
  EXPECT_EQ(StateName(pb::JOB_STATE_UNSPECIFIED), "STATE_UNSPECIFIED");
  EXPECT_EQ(StateName(pb::TASK_LOST), "LOST");
  EXPECT_EQ(StateName(pb::NODE_DRAINING), "DRAINING");
  EXPECT_EQ(StateName(pb::CHECKPOINT_DELETING), "DELETING");
}

TEST(JobStatePredicates, OnlySucceededFailedAndCancelledAreTerminal) {
  for (int i = pb::JobState_MIN; i <= pb::JobState_MAX; ++i) {
    const auto state = static_cast<pb::JobState>(i);
    const bool terminal = state == pb::JOB_SUCCEEDED || state == pb::JOB_FAILED || state == pb::JOB_CANCELLED;
    EXPECT_EQ(IsTerminal(state), terminal) << StateName(state);
  }
}

TEST(TaskStatePredicates, EndedAndUnsuccessfulFollowTheTable) {
  struct Row {
    pb::TaskState state;
    bool ended;
    bool unsuccessful;
  };
  const Row rows[] = {
      {pb::TASK_STATE_UNSPECIFIED, false, false},
      {pb::TASK_LAUNCHING, false, false},
      {pb::TASK_RUNNING, false, false},
      {pb::TASK_SUCCEEDED, true, false},
      {pb::TASK_FAILED, true, true},
      {pb::TASK_STOPPED, true, true},
      {pb::TASK_LOST, true, true},
      {pb::TASK_PREEMPTED, true, true},
  };
  ASSERT_EQ(std::size(rows), static_cast<size_t>(pb::TaskState_MAX + 1)) << "a new TaskState needs a row";
  for (const Row& row : rows) {
    EXPECT_EQ(TaskEnded(row.state), row.ended) << StateName(row.state);
    EXPECT_EQ(TaskEndedUnsuccessfully(row.state), row.unsuccessful) << StateName(row.state);
  }
}

TEST(ParseJobState, AcceptsAnyCaseWithOrWithoutThePrefix) {
  for (const char* text : {"running", "RUNNING", "JOB_RUNNING", "Running"}) {
    auto state = ParseJobState(text);
    ASSERT_TRUE(state.ok()) << text << ": " << state.status().ToString();
    EXPECT_EQ(*state, pb::JOB_RUNNING);
  }
  for (int i = pb::JobState_MIN + 1; i <= pb::JobState_MAX; ++i) {
    const auto state = static_cast<pb::JobState>(i);
    auto parsed = ParseJobState(StateName(state));
    ASSERT_TRUE(parsed.ok()) << StateName(state);
    EXPECT_EQ(*parsed, state);
  }
}

TEST(ParseJobState, RefusesUnknownNamesAndUnspecifiedNamingTheText) {
  for (const char* text : {"runing", "", "STATE_UNSPECIFIED", "TASK_RUNNING"}) {
    auto state = ParseJobState(text);
    ASSERT_FALSE(state.ok()) << text;
    EXPECT_EQ(state.status().code(), StatusCode::kInvalidArgument);
    const std::string quoted = std::string("'").append(text).append("'");
    EXPECT_NE(state.status().message().find(quoted), std::string::npos) << state.status().message();
    EXPECT_NE(state.status().message().find("PENDING"), std::string::npos) << state.status().message();
  }
}

}  // namespace
}  // namespace anneal::protocol
