// The agents' GPU figures and slots in use as clients see them (ListNodesReply, the web console's cluster page):
// kept in memory from each heartbeat, never a RocksDB write per heartbeat.
#include <gtest/gtest.h>

#include "harness.h"

namespace anneal::coordinator {
namespace {

using storage::Table;
using testing::BaseSpec;
using testing::Harness;

pb::GpuInfo Gpu(uint32_t index, uint32_t utilization, uint64_t used) {
  pb::GpuInfo g;
  g.set_index(index);
  g.set_name("NVIDIA H200");
  g.set_uuid("GPU-" + std::to_string(index));
  g.set_memory_total_bytes(141ull << 30);
  g.set_memory_used_bytes(used);
  g.set_utilization_percent(utilization);
  return g;
}

void RegisterWithGpus(Harness& h, const std::string& node) {
  pb::AgentToCoordinator msg = Harness::RegisterMessage(node, 2);
  *msg.mutable_register_()->mutable_inventory()->add_gpus() = Gpu(0, 0, 0);
  *msg.mutable_register_()->mutable_inventory()->add_gpus() = Gpu(1, 0, 0);
  msg.mutable_register_()->set_join_token(h.JoinToken());
  h.SendRegister(node, msg);
}

void HeartbeatWithGpus(Harness& h, const std::string& node, std::vector<pb::GpuInfo> gpus) {
  pb::AgentToCoordinator msg;
  msg.mutable_heartbeat()->set_node_id(node);
  msg.mutable_heartbeat()->set_session(h.core().FindNode(node)->session());
  for (auto& g : gpus) *msg.mutable_heartbeat()->add_gpus() = std::move(g);
  h.core().OnAgentMessage(Harness::Peer(node), msg);
  h.Round();
}

pb::NodeRecord Listed(Harness& h, const std::string& node) {
  pb::ClientRequest req;
  req.mutable_list_nodes();
  pb::ClientReply reply = h.Call(req);
  EXPECT_EQ(reply.error().code(), pb::OK) << reply.error().message();
  for (const auto& n : reply.list_nodes().nodes()) {
    if (n.node_id() == node) return n;
  }
  ADD_FAILURE() << "ListNodes has no node " << node;
  return {};
}

TEST(NodeGpus, HeartbeatFiguresShowInListNodesWithoutAStoreWrite) {
  Harness h;
  RegisterWithGpus(h, "n1");
  HeartbeatWithGpus(h, "n1", {Gpu(0, 87, 40ull << 30)});
  pb::NodeRecord listed = Listed(h, "n1");
  ASSERT_EQ(listed.inventory().gpus_size(), 2);
  EXPECT_EQ(listed.inventory().gpus(0).utilization_percent(), 87u);
  EXPECT_EQ(listed.inventory().gpus(0).memory_used_bytes(), 40ull << 30);
  EXPECT_EQ(listed.inventory().gpus(1).utilization_percent(), 0u);  // not in this heartbeat: unchanged
  EXPECT_TRUE(listed.credential_hash().empty());
  // The stored record still holds the registration's figures: heartbeats stay in memory.
  pb::NodeRecord stored;
  ASSERT_TRUE(h.store().Get(Table::kNodes, "n1", &stored).ok());
  EXPECT_EQ(stored.inventory().gpus(0).utilization_percent(), 0u);
  // A newer heartbeat replaces the figures.
  HeartbeatWithGpus(h, "n1", {Gpu(0, 12, 1ull << 30), Gpu(1, 55, 2ull << 30)});
  listed = Listed(h, "n1");
  EXPECT_EQ(listed.inventory().gpus(0).utilization_percent(), 12u);
  EXPECT_EQ(listed.inventory().gpus(1).utilization_percent(), 55u);
  EXPECT_EQ(listed.inventory().gpus(1).memory_used_bytes(), 2ull << 30);
}

TEST(NodeGpus, UnknownGpuIndexInAHeartbeatIsIgnored) {
  Harness h;
  RegisterWithGpus(h, "n1");
  HeartbeatWithGpus(h, "n1", {Gpu(7, 99, 1)});
  pb::NodeRecord listed = Listed(h, "n1");
  ASSERT_EQ(listed.inventory().gpus_size(), 2);  // the inventory decides which GPUs exist
  EXPECT_EQ(listed.inventory().gpus(0).utilization_percent(), 0u);
  EXPECT_EQ(listed.inventory().gpus(1).utilization_percent(), 0u);
}

TEST(NodeGpus, SlotsUsedCountsTheRunningTasksSlots) {
  Harness h;
  h.Register("n1", 2);
  EXPECT_EQ(Listed(h, "n1").slots_used(), 0u);
  const std::string job = h.Submit(BaseSpec());
  h.ReportAll(job, pb::TASK_RUNNING);
  EXPECT_EQ(Listed(h, "n1").slots_used(), 1u);
  h.ReportAll(job, pb::TASK_SUCCEEDED);
  EXPECT_EQ(h.State(job), pb::JOB_SUCCEEDED);
  EXPECT_EQ(Listed(h, "n1").slots_used(), 0u);
}

}  // namespace
}  // namespace anneal::coordinator
