// TeamsTest: a coordinator (testing::Harness) with teams nlp and vision and users nina (nlp member), vic (nlp
// viewer), walt (vision member) and tess (nlp admin), each with a token; requests as the admin or as a user.
// Shared by teams_test.cc, team_quota_test.cc and queue_requests_test.cc.
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <string>

#include "harness.h"

namespace anneal::coordinator::testing {

class TeamsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Done(Admin(CreateTeam("nlp")));
    Done(Admin(CreateTeam("vision")));
    for (const char* user : {"nina", "vic", "walt", "tess"}) Done(Admin(CreateUser(user)));
    Done(Admin(SetRole("nlp", "nina", pb::ROLE_MEMBER)));
    Done(Admin(SetRole("nlp", "vic", pb::ROLE_VIEWER)));
    Done(Admin(SetRole("vision", "walt", pb::ROLE_MEMBER)));
    Done(Admin(SetRole("nlp", "tess", pb::ROLE_ADMIN)));
    for (const char* user : {"nina", "vic", "walt", "tess"}) tokens_[user] = NewToken(user);
  }

  static pb::ClientRequest CreateTeam(const std::string& name) {
    pb::ClientRequest r;
    r.mutable_create_team()->set_name(name);
    return r;
  }
  static pb::ClientRequest CreateUser(const std::string& name) {
    pb::ClientRequest r;
    r.mutable_create_user()->set_name(name);
    return r;
  }
  static pb::ClientRequest SetRole(const std::string& team, const std::string& user, pb::Role role) {
    pb::ClientRequest r;
    r.mutable_set_role()->set_team(team);
    r.mutable_set_role()->set_user(user);
    r.mutable_set_role()->set_role(role);
    return r;
  }
  static pb::ClientRequest SubmitTo(const std::string& team, const std::string& extra_spec = "") {
    pb::ClientRequest r;
    r.mutable_submit()->set_spec_yaml(BaseSpec(extra_spec));
    r.mutable_submit()->set_team(team);
    return r;
  }
  pb::ClientReply Admin(pb::ClientRequest r) { return h_.Call(std::move(r)); }
  pb::ClientReply As(const std::string& user, pb::ClientRequest r) {
    r.set_token(tokens_.at(user));
    return h_.CallExactly(std::move(r));
  }
  static void Done(const pb::ClientReply& reply) { ASSERT_EQ(reply.error().code(), pb::OK) << reply.error().message(); }
  std::string NewToken(const std::string& user) {
    pb::ClientRequest r;
    r.mutable_create_token()->set_user(user);
    pb::ClientReply reply = Admin(r);
    EXPECT_EQ(reply.error().code(), pb::OK) << reply.error().message();
    return reply.create_token().token();
  }
  std::string Refusal(const pb::ClientReply& reply, pb::ErrorCode code) {
    EXPECT_EQ(reply.error().code(), code) << reply.error().message();
    return reply.error().message();
  }

  Harness h_;
  std::map<std::string, std::string> tokens_;
};

}  // namespace anneal::coordinator::testing
