// `anneal team quota` through the coordinator's client channel: a cluster admin sets a team's weight and its
// guaranteed/max slots per pool; guarantees never add up to more than a pool's registered slots; every refusal
// names what was refused and why, changes nothing, is audited, and the coordinator goes on serving.
#include <gtest/gtest.h>

#include "teams_harness.h"

namespace anneal::coordinator {
namespace {

using testing::TeamsTest;

class TeamQuotaTest : public TeamsTest {
 protected:
  void SetUp() override {
    TeamsTest::SetUp();
    RegisterWithLabel("h1", 8, "gpu", "h100");
    RegisterWithLabel("a1", 4, "gpu", "a100");
  }

  void RegisterWithLabel(const std::string& node, uint32_t slots, const std::string& key, const std::string& value) {
    pb::AgentToCoordinator msg = testing::Harness::RegisterMessage(node, slots);
    (*msg.mutable_register_()->mutable_inventory()->mutable_labels())[key] = value;
    msg.mutable_register_()->set_join_token(h_.JoinToken());
    h_.SendRegister(node, msg);
    ASSERT_NE(h_.core().FindNode(node), nullptr) << node << " did not register";
  }

  static pb::ClientRequest Quota(const std::string& team, double weight, const std::string& label = "",
                                 int64_t guaranteed = -1, uint32_t max = 0) {
    pb::ClientRequest r;
    r.mutable_set_team_quota()->set_team(team);
    r.mutable_set_team_quota()->set_weight(weight);
    if (guaranteed >= 0) {
      auto* q = r.mutable_set_team_quota()->add_quotas();
      q->set_label(label);
      q->set_guaranteed(static_cast<uint32_t>(guaranteed));
      q->set_max(max);
    }
    return r;
  }

  pb::TeamRecord Team(const std::string& name) {
    pb::ClientRequest ls;
    ls.mutable_list_teams();
    pb::ClientReply reply = Admin(ls);
    for (const auto& t : reply.list_teams().teams()) {
      if (t.name() == name) return t;
    }
    ADD_FAILURE() << "no team " << name;
    return {};
  }

  // The newest audit record.
  pb::AuditRecord LastAudit() {
    pb::ClientRequest audit;
    audit.mutable_list_audit()->set_limit(1);
    pb::ClientReply reply = Admin(audit);
    EXPECT_EQ(reply.list_audit().records_size(), 1);
    return reply.list_audit().records_size() > 0 ? reply.list_audit().records(0) : pb::AuditRecord();
  }
};

TEST_F(TeamQuotaTest, AClusterAdminSetsWeightAndQuotasWhichPersistAndAreAudited) {
  pb::ClientReply reply = Admin(Quota("nlp", 2.5, "gpu=h100", 6, 8));
  ASSERT_EQ(reply.error().code(), pb::OK) << reply.error().message();
  ASSERT_EQ(reply.set_team_quota().teams_size(), 1);
  EXPECT_EQ(reply.set_team_quota().teams(0).weight(), 2.5);
  Done(Admin(Quota("nlp", 0, "", 4, 0)));  // weight 0: unchanged; the whole cluster, no max
  h_.Restart();
  pb::TeamRecord nlp = Team("nlp");
  EXPECT_EQ(nlp.weight(), 2.5);
  ASSERT_EQ(nlp.quotas_size(), 2);
  EXPECT_EQ(nlp.quotas(0).label(), "");  // sorted by label
  EXPECT_EQ(nlp.quotas(0).guaranteed(), 4u);
  EXPECT_EQ(nlp.quotas(0).max(), 0u);
  EXPECT_EQ(nlp.quotas(1).label(), "gpu=h100");
  EXPECT_EQ(nlp.quotas(1).guaranteed(), 6u);
  EXPECT_EQ(nlp.quotas(1).max(), 8u);
  const pb::AuditRecord audit = LastAudit();
  EXPECT_EQ(audit.operation(), "team.quota");
  EXPECT_EQ(audit.team(), "nlp");
  EXPECT_EQ(audit.result(), pb::OK);
  EXPECT_NE(audit.message().find("gpu=h100 guaranteed 6 max 8"), std::string::npos) << audit.message();

  // guaranteed = max = 0 removes the entry.
  Done(Admin(Quota("nlp", 0, "gpu=h100", 0, 0)));
  ASSERT_EQ(Team("nlp").quotas_size(), 1);
  EXPECT_EQ(Team("nlp").quotas(0).label(), "");
}

TEST_F(TeamQuotaTest, OnlyAClusterAdminMaySetQuotas) {
  const std::string message = Refusal(As("tess", Quota("nlp", 3)), pb::PERMISSION_DENIED);  // nlp's team admin
  EXPECT_NE(message.find("set team weights and quotas"), std::string::npos) << message;
  EXPECT_NE(message.find("tess"), std::string::npos) << message;
  EXPECT_EQ(Team("nlp").weight(), 0);  // unchanged
  const pb::AuditRecord audit = LastAudit();
  EXPECT_EQ(audit.operation(), "team.quota");
  EXPECT_EQ(audit.user(), "tess");
  EXPECT_EQ(audit.result(), pb::PERMISSION_DENIED);
}

TEST_F(TeamQuotaTest, GuaranteesAboveAPoolsSlotsAreRefusedNamingThePoolTheSumAndTheCapacity) {
  Done(Admin(Quota("vision", 0, "gpu=h100", 5, 0)));
  std::string message = Refusal(Admin(Quota("nlp", 0, "gpu=h100", 4, 8)), pb::FAILED_PRECONDITION);
  EXPECT_NE(message.find("pool 'gpu=h100'"), std::string::npos) << message;
  EXPECT_NE(message.find("add up to 9 slots"), std::string::npos) << message;
  EXPECT_NE(message.find("the 8 slots"), std::string::npos) << message;
  EXPECT_EQ(Team("nlp").quotas_size(), 0);
  Done(Admin(Quota("nlp", 0, "gpu=h100", 3, 8)));  // exactly the pool

  // The whole cluster is both nodes: 12 slots.
  Done(Admin(Quota("vision", 0, "", 10, 0)));
  message = Refusal(Admin(Quota("nlp", 0, "", 3, 0)), pb::FAILED_PRECONDITION);
  EXPECT_NE(message.find("the whole cluster"), std::string::npos) << message;
  EXPECT_NE(message.find("13 slots"), std::string::npos) << message;
  EXPECT_NE(message.find("12 slots"), std::string::npos) << message;

  // A pool no node carries has no slots.
  message = Refusal(Admin(Quota("nlp", 0, "gpu=b200", 1, 0)), pb::FAILED_PRECONDITION);
  EXPECT_NE(message.find("pool 'gpu=b200'"), std::string::npos) << message;
  EXPECT_NE(message.find("the 0 slots"), std::string::npos) << message;

  // Lowering a guarantee is always allowed, even when the pool shrank below the sum.
  pb::ClientRequest remove;
  remove.mutable_remove_node()->set_node_id("a1");
  Done(Admin(remove));
  Done(Admin(Quota("vision", 0, "", 9, 0)));
  EXPECT_EQ(Team("vision").quotas(0).guaranteed(), 9u);
}

TEST_F(TeamQuotaTest, BadValuesAreRefusedNamingTheValueAndTheServerGoesOn) {
  struct Case {
    pb::ClientRequest request;
    pb::ErrorCode code;
    std::string says;
  };
  pb::ClientRequest twice = Quota("nlp", 0, "gpu=h100", 1, 2);
  *twice.mutable_set_team_quota()->add_quotas() = twice.set_team_quota().quotas(0);
  std::vector<Case> cases = {
      {Quota("nlp", 0, "gpu", 1, 2), pb::INVALID_ARGUMENT, "label 'gpu': expected key=value"},
      {Quota("nlp", 0, "=h100", 1, 2), pb::INVALID_ARGUMENT, "label '=h100'"},
      {Quota("nlp", 0, "gpu=" + std::string(300, 'x'), 1, 2), pb::INVALID_ARGUMENT, "at most 256 bytes"},
      {Quota("nlp", 0, "gpu=h100", 4, 2), pb::INVALID_ARGUMENT, "max 2 is below guaranteed 4"},
      {Quota("nlp", -1), pb::INVALID_ARGUMENT, "weight -1 is not valid"},
      {Quota("nlp", 1000001), pb::INVALID_ARGUMENT, "weight 1000001 is not valid"},
      {Quota("nobody", 2), pb::NOT_FOUND, "no team 'nobody'"},
      {Quota(std::string(5000, 'x'), 2), pb::INVALID_ARGUMENT, "team name 'xxxxxxxx"},
      {twice, pb::INVALID_ARGUMENT, "pool 'gpu=h100' is given twice"},
  };
  for (const Case& c : cases) {
    const std::string message = Refusal(Admin(c.request), c.code);
    EXPECT_NE(message.find(c.says), std::string::npos) << message;
  }
  // At most 16 entries per team.
  for (int i = 0; i < 16; ++i) Done(Admin(Quota("nlp", 0, "zone=z" + std::to_string(i), 0, 4)));
  const std::string message = Refusal(Admin(Quota("nlp", 0, "zone=z16", 0, 4)), pb::INVALID_ARGUMENT);
  EXPECT_NE(message.find("17 quota entries, above the limit of 16"), std::string::npos) << message;
  EXPECT_EQ(Team("nlp").quotas_size(), 16);
  EXPECT_EQ(Team("nlp").weight(), 0);
  Done(Admin(Quota("nlp", 2)));  // still serving
  EXPECT_EQ(Team("nlp").weight(), 2);
}

}  // namespace
}  // namespace anneal::coordinator
