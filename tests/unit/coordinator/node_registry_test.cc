// NodeRegistry (coordinator/node_registry.h) over a real store: registration, liveness, draining, seqs, slots.
#include "coordinator/node_registry.h"

#include <gtest/gtest.h>

#include "temp_store.h"

namespace anneal::coordinator {
namespace {

using testing::TempStore;

pb::RegisterRequest Request(const std::string& id, uint32_t slots) {
  pb::RegisterRequest request;
  request.set_node_id(id);
  request.mutable_inventory()->set_slots(slots);
  request.mutable_inventory()->set_hostname(id + ".cluster");
  return request;
}

TEST(NodeRegistry, RegisterBindsThePeerAndBumpsTheSession) {
  TempStore t;
  NodeRegistry nodes(t.batch(), t.store(), t.clock(), {29500, 30000});
  auto first = nodes.Register("peer-a", Request("n1", 4));
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ((*first)->record.state(), pb::NODE_UP);
  EXPECT_EQ((*first)->record.session(), 1u);
  EXPECT_TRUE((*first)->Connected());
  EXPECT_EQ(nodes.FindByPeer("peer-a"), *first);
  auto again = nodes.Register("peer-b", Request("n1", 4));  // the agent reconnected
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->record.session(), 2u);
  EXPECT_EQ(nodes.FindByPeer("peer-a"), nullptr);
  EXPECT_EQ(nodes.FindByPeer("peer-b"), *again);
}

TEST(NodeRegistry, RegisterRefusesAnEmptyNameOrZeroSlotsNamingTheProblem) {
  TempStore t;
  NodeRegistry nodes(t.batch(), t.store(), t.clock(), {29500, 30000});
  auto unnamed = nodes.Register("p", Request("", 4));
  ASSERT_FALSE(unnamed.ok());
  EXPECT_EQ(unnamed.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(unnamed.status().message().find("node_id"), std::string::npos);
  auto empty = nodes.Register("p", Request("n1", 0));
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.status().message().find("n1 offers 0 slots"), std::string::npos);
  EXPECT_TRUE(nodes.empty());
}

TEST(NodeRegistry, SilentNodesGoDownAndComeBackUpButDrainingStaysDraining) {
  TempStore t;
  NodeRegistry nodes(t.batch(), t.store(), t.clock(), {29500, 30000});
  ASSERT_TRUE(nodes.Register("p1", Request("n1", 1)).ok());
  ASSERT_TRUE(nodes.Register("p2", Request("n2", 1)).ok());
  ASSERT_EQ(*nodes.SetDraining("n2", false), pb::NODE_DRAINING);
  t.clock()->Advance(5000);
  nodes.Heartbeat(*nodes.Find("n1"), pb::Heartbeat());
  t.clock()->Advance(5001);
  EXPECT_EQ(nodes.SilentNodes(10000), std::vector<std::string>{"n2"});
  nodes.MarkDown(*nodes.Find("n2"));
  EXPECT_EQ(nodes.Find("n2")->record.state(), pb::NODE_DOWN);
  EXPECT_FALSE(nodes.Find("n2")->Connected());
  EXPECT_EQ(nodes.FindByPeer("p2"), nullptr);
  EXPECT_TRUE(nodes.SilentNodes(10000).empty());  // DOWN is not silent again
  auto back = nodes.Register("p2", Request("n2", 1));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ((*back)->record.state(), pb::NODE_DRAINING);  // a drained node that was DOWN (a reboot) stays drained
  ASSERT_TRUE(nodes.Register("p3", Request("n2", 1)).ok());
  EXPECT_EQ(nodes.Find("n2")->record.state(), pb::NODE_DRAINING);  // a re-register keeps the drain
  EXPECT_EQ(*nodes.SetDraining("n2", true), pb::NODE_UP);
  // Undrained while DOWN: it comes back UP; drained while DOWN: it comes back DRAINING.
  nodes.MarkDown(*nodes.Find("n2"));
  EXPECT_EQ(*nodes.SetDraining("n2", false), pb::NODE_DOWN);
  ASSERT_TRUE(nodes.Register("p4", Request("n2", 1)).ok());
  EXPECT_EQ(nodes.Find("n2")->record.state(), pb::NODE_DRAINING);
  nodes.MarkDown(*nodes.Find("n2"));
  EXPECT_EQ(*nodes.SetDraining("n2", true), pb::NODE_DOWN);
  ASSERT_TRUE(nodes.Register("p5", Request("n2", 1)).ok());
  EXPECT_EQ(nodes.Find("n2")->record.state(), pb::NODE_UP);
  auto unknown = nodes.SetDraining("n9", false);
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), StatusCode::kNotFound);
}

TEST(NodeRegistry, ApplySeqAppliesEachReportOnceAndSurvivesARestart) {
  TempStore t;
  {
    NodeRegistry nodes(t.batch(), t.store(), t.clock(), {29500, 30000});
    Node& node = **nodes.Register("p", Request("n1", 1));
    EXPECT_TRUE(nodes.ApplySeq(node, 1));
    EXPECT_TRUE(nodes.ApplySeq(node, 2));
    EXPECT_FALSE(nodes.ApplySeq(node, 2));  // a resend
    EXPECT_FALSE(nodes.ApplySeq(node, 1));
    t.Commit();
  }
  t.Reopen();
  NodeRegistry nodes(t.batch(), t.store(), t.clock(), {29500, 30000});
  ASSERT_TRUE(nodes.Recover().ok());
  Node* node = nodes.Find("n1");
  ASSERT_NE(node, nullptr);
  EXPECT_EQ(node->last_applied_seq, 2u);
  EXPECT_FALSE(node->Connected());                         // until it registers with this process
  EXPECT_EQ(node->last_heartbeat_ms, t.clock()->NowMs());  // a full timeout to come back
  EXPECT_FALSE(nodes.ApplySeq(*node, 2));
}

TEST(NodeRegistry, ReservedSlotsAndPortsLeaveTheCapacityUntilReleased) {
  TempStore t;
  NodeRegistry nodes(t.batch(), t.store(), t.clock(), {29500, 29502});
  ASSERT_TRUE(nodes.Register("p1", Request("n1", 4)).ok());
  ASSERT_TRUE(nodes.Register("p2", Request("n2", 2)).ok());
  pb::JobRecord job;
  job.set_job_id("job-000001");
  auto* placement = job.mutable_placement();
  placement->set_master_port(nodes.FreePort(*nodes.Find("n1")));
  auto* on_n1 = placement->add_nodes();
  on_n1->set_node_id("n1");
  on_n1->add_ranks()->set_slot(0);
  on_n1->add_ranks()->set_slot(1);
  placement->add_nodes()->set_node_id("n2");
  placement->mutable_nodes(1)->add_ranks()->set_slot(0);
  (*job.mutable_task_states())["n1"] = pb::TASK_RUNNING;
  (*job.mutable_task_states())["n2"] = pb::TASK_RUNNING;
  nodes.ReserveTasks(job);
  EXPECT_EQ(placement->master_port(), 29500u);
  EXPECT_EQ(nodes.FreePort(*nodes.Find("n1")), 29501u);
  auto caps = nodes.Capacities();
  ASSERT_EQ(caps.size(), 2u);
  EXPECT_EQ(caps[0].free_slots, (std::vector<uint32_t>{2, 3}));
  EXPECT_EQ(caps[1].free_slots, (std::vector<uint32_t>{1}));
  EXPECT_EQ(nodes.Find("n1")->task_jobs.count("job-000001"), 1u);
  nodes.ReleaseTask(job, "n1");
  EXPECT_EQ(nodes.Capacities()[0].free_slots, (std::vector<uint32_t>{0, 1, 2, 3}));
  EXPECT_EQ(nodes.FreePort(*nodes.Find("n1")), 29500u);
  EXPECT_EQ(nodes.Find("n1")->task_jobs.count("job-000001"), 0u);
  ASSERT_EQ(*nodes.SetDraining("n2", false), pb::NODE_DRAINING);
  EXPECT_EQ(nodes.Capacities().size(), 1u);  // a draining node gets no new work
}

}  // namespace
}  // namespace anneal::coordinator
