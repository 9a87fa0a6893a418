// NodeRegistry: the nodes that ever registered, their connection (ZeroMQ routing id), failure detection by
// heartbeat, the slots and rendezvous ports their tasks hold, and the last applied report seq of each.
//
// Node states (protocol NodeState):
//   (new) ──Register──▶ UP ──drain──▶ DRAINING ──undrain──▶ UP
//   UP | DRAINING ──silent past the heartbeat timeout──▶ DOWN ──Register──▶ UP (DRAINING stays DRAINING)
//
// Contract per method (record changes go into the borrowed batch; the Coordinator commits it in Flush):
//   Recover        loads every node; each gets a full heartbeat timeout to re-register (a coordinator restart
//                  is not a node failure), and its last applied seq.
//   Validate       the registration within AgentLimits: node id (length, charset [A-Za-z0-9._-], starts with a
//                  letter or digit), 1..max_slots_per_node slots, GPU count, label count and lengths, inventory
//                  string lengths; else INVALID_ARGUMENT naming the node, the field, the value and the bound.
//                  A new node beyond max_nodes: RESOURCE_EXHAUSTED.
//   Register       (after Validate and the caller's credential check) binds the routing id (unbinding any
//                  other node from it), bumps the session, keeps DRAINING, otherwise UP. A new identity (a
//                  join) sets the credential hash and the seq watermark the agent declared.
//   Remove         forgets the node, its record, its seq watermark and its credential.
//   Heartbeat      refreshes the liveness and the GPU telemetry.
//   SilentNodes    the nodes not DOWN whose last heartbeat is older than the timeout.
//   MarkDown       DOWN, unbound; its tasks are the caller's to mark lost.
//   SetDraining    UP -> DRAINING, or back (undrain); the request is recorded (drain_requested) in every state, so
//                  a DOWN node registers DRAINING (or UP after an undrain) and a drained node that goes DOWN
//                  and comes back is still DRAINING.
//   ApplySeq       true (and the seq recorded durably) when a sequenced report is new; false for a resend.
//   SeqInWindow    seq <= last applied + max_seq_ahead (a seq far ahead would swallow every later report).
//   Recover        skips (with a warning) a stored node whose inventory is out of AgentLimits.
//   ReserveTasks / ReleaseTask   the slots (and the master's port) of a job's placement on a node.
//   Capacities     what the scheduler may use: nodes UP and connected to this process, their free slots.
//
// Thread-safety: none; the coordinator's loop owns it.
// Ownership: borrows the batch, the store and the clock; all must outlive it.
//
// Example:
//   NodeRegistry nodes(&batch, store, &clock, {29500, 30000});
//   ASSIGN_OR_RETURN(Node* node, nodes.Register(peer, request));
//   if (nodes.ApplySeq(*node, seq)) apply(report);
//   for (const auto& id : nodes.SilentNodes(timeout_ms)) nodes.MarkDown(*nodes.Find(id));
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "coordinator/clock.h"
#include "coordinator/scheduler.h"
#include "jobspec/jobspec.h"
#include "protocol/anneal.pb.h"
#include "storage/state_store.h"

namespace anneal::coordinator {

// One node in memory.
struct Node {
  pb::NodeRecord record;
  std::string routing_id;         // empty until the agent (re-)registers with this process
  uint64_t last_applied_seq = 0;  // sequenced reports up to this are applied (durable, meta table)
  int64_t last_heartbeat_ms = 0;
  std::set<uint32_t> used_slots;
  std::set<uint32_t> used_ports;
  std::set<std::string> task_jobs;  // jobs with a task here that has not ended (index for node events)

  // Orders can reach it: bound to a routing id of this process and not DOWN.
  bool Connected() const { return !routing_id.empty() && record.state() != pb::NODE_DOWN; }
};

// Bounds on what an agent may declare (coordinator/config.h documents each; docs/coordinator.md).
struct AgentLimits {
  uint32_t max_nodes = 10000;
  uint32_t max_slots_per_node = 1024;
  uint32_t max_gpus_per_node = 64;
  uint32_t max_labels_per_node = 64;
  uint32_t max_label_length = 256;  // a label's key or value, bytes
  uint32_t max_node_id_length = 128;
  uint32_t max_inventory_string_length = 1024;  // hostname, address, work dir, GPU name/uuid, agent version
  uint32_t max_running_tasks = 4096;            // tasks listed in one RegisterRequest or Heartbeat
  uint64_t max_seq_ahead = 1000000;             // a report's seq may be at most this far past the last applied one
};

// A node's identity, set when a join token admits it.
struct NodeIdentity {
  std::string credential_hash;
  std::string joined_with;  // the join token's id
  uint64_t spool_acked_seq = 0;
};

// Rendezvous ports [begin, end) used when a node's inventory advertises none.
struct PortRange {
  uint32_t begin = 29500;
  uint32_t end = 30000;
};

class NodeRegistry {
 public:
  NodeRegistry(storage::WriteBatch* batch, const storage::StateStore* store, const Clock* clock,
               PortRange default_ports, AgentLimits limits = {});

  Status Recover();
  Status Validate(const pb::RegisterRequest& request) const;
  // `joined`: the new identity when a join token admitted the node; nullptr for a node that proved its own.
  StatusOr<Node*> Register(const std::string& peer, const pb::RegisterRequest& request,
                           const NodeIdentity* joined = nullptr);
  void Remove(const std::string& node_id);
  bool SeqInWindow(const Node& node, uint64_t seq) const {
    return seq <= node.last_applied_seq || seq - node.last_applied_seq <= limits_.max_seq_ahead;
  }
  const AgentLimits& limits() const { return limits_; }
  void Heartbeat(Node& node, const pb::Heartbeat& heartbeat);
  std::vector<std::string> SilentNodes(int64_t heartbeat_timeout_ms) const;
  void MarkDown(Node& node);
  // NOT_FOUND "no node '<id>'" for an unknown node; otherwise the node's state afterwards.
  StatusOr<pb::NodeState> SetDraining(const std::string& node_id, bool undrain);
  bool ApplySeq(Node& node, uint64_t seq);

  void ReserveTasks(const pb::JobRecord& job);
  void ReleaseTask(const pb::JobRecord& job, const std::string& node_id);
  std::vector<NodeCapacity> Capacities() const;
  // The ports rendezvous may use on the node: its inventory's range, else the default.
  PortRange PortsOf(const Node& node) const;
  // The lowest port of the node's range that no task on it holds (the range's end when none is free).
  uint32_t FreePort(const Node& node) const;

  Node* Find(const std::string& node_id);
  const Node* Find(const std::string& node_id) const;
  Node* FindByPeer(const std::string& peer);
  const std::map<std::string, Node>& all() const { return nodes_; }
  bool empty() const { return nodes_.empty(); }
  // The shape of every registered node (for jobspec::CheckFitsCluster at submit).
  jobspec::ClusterShape Shape() const;
  // The earliest time a node that is not DOWN would count as silent.
  int64_t NextSilenceDeadlineMs(int64_t heartbeat_timeout_ms) const;

 private:
  void Persist(const Node& node);

  storage::WriteBatch* batch_;
  const storage::StateStore* store_;
  const Clock* clock_;
  PortRange default_ports_;
  AgentLimits limits_;
  std::map<std::string, Node> nodes_;
  std::map<std::string, std::string> node_by_peer_;  // routing id -> node id
};

}  // namespace anneal::coordinator
