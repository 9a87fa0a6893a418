// NodeRegistry (coordinator/node_registry.h): node records, connections, liveness, slots and ports, seqs.
#include "coordinator/node_registry.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>

#include "coordinator/store_keys.h"
#include "protocol/states.h"

namespace anneal::coordinator {

using storage::Table;

NodeRegistry::NodeRegistry(storage::WriteBatch* batch, const storage::StateStore* store, const Clock* clock,
                           PortRange default_ports, AgentLimits limits)
    : batch_(batch), store_(store), clock_(clock), default_ports_(default_ports), limits_(limits) {}

namespace {

Status CheckLength(const std::string& node, const char* field, const std::string& value, uint32_t max) {
  if (value.size() <= max) return Status::Ok();
  return InvalidArgumentError(
      fmt::format("register: node {}: {} is {} bytes long (at most {})", node, field, value.size(), max));
}

bool ValidNodeId(const std::string& id) {
  if (id.empty() || !std::isalnum(static_cast<unsigned char>(id[0]))) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
  });
}

// The inventory within the limits (a registration, or a record found in the store).
Status CheckInventory(const std::string& id, const pb::NodeInventory& inv, const AgentLimits& limits) {
  if (inv.slots() == 0) return InvalidArgumentError(fmt::format("register: node {} offers 0 slots", id));
  if (inv.slots() > limits.max_slots_per_node) {
    return InvalidArgumentError(fmt::format("register: node {} offers {} slots (at most {}: max_slots_per_node)", id,
                                            inv.slots(), limits.max_slots_per_node));
  }
  if (static_cast<uint32_t>(inv.gpus_size()) > limits.max_gpus_per_node) {
    return InvalidArgumentError(fmt::format("register: node {} lists {} GPUs (at most {}: max_gpus_per_node)", id,
                                            inv.gpus_size(), limits.max_gpus_per_node));
  }
  if (inv.labels_size() > static_cast<int>(limits.max_labels_per_node)) {
    return InvalidArgumentError(fmt::format("register: node {} has {} labels (at most {}: max_labels_per_node)", id,
                                            inv.labels_size(), limits.max_labels_per_node));
  }
  for (const auto& [key, value] : inv.labels()) {
    RETURN_IF_ERROR(CheckLength(id, "a label key", key, limits.max_label_length));
    RETURN_IF_ERROR(
        CheckLength(id, fmt::format("label '{}'", key.substr(0, 64)).c_str(), value, limits.max_label_length));
  }
  const uint32_t max = limits.max_inventory_string_length;
  RETURN_IF_ERROR(CheckLength(id, "hostname", inv.hostname(), max));
  RETURN_IF_ERROR(CheckLength(id, "address", inv.address(), max));
  RETURN_IF_ERROR(CheckLength(id, "work_dir", inv.work_dir(), max));
  for (const auto& gpu : inv.gpus()) {
    RETURN_IF_ERROR(CheckLength(id, "a GPU name", gpu.name(), max));
    RETURN_IF_ERROR(CheckLength(id, "a GPU uuid", gpu.uuid(), max));
  }
  return Status::Ok();
}

}  // namespace

Status NodeRegistry::Validate(const pb::RegisterRequest& request) const {
  const std::string& id = request.node_id();
  if (id.size() > limits_.max_node_id_length) {
    return InvalidArgumentError(fmt::format("register: node_id is {} bytes long (at most {}: max_node_id_length)",
                                            id.size(), limits_.max_node_id_length));
  }
  if (!ValidNodeId(id)) {
    return InvalidArgumentError(
        fmt::format("register: node_id '{}' must be a non-empty name of letters, digits, "
                    "'.', '_' and '-', starting with a letter or digit",
                    id.substr(0, 64)));
  }
  RETURN_IF_ERROR(CheckInventory(id, request.inventory(), limits_));
  RETURN_IF_ERROR(CheckLength(id, "agent_version", request.agent_version(), limits_.max_inventory_string_length));
  if (static_cast<uint32_t>(request.running_tasks_size()) > limits_.max_running_tasks) {
    return InvalidArgumentError(fmt::format("register: node {} lists {} running tasks (at most {})", id,
                                            request.running_tasks_size(), limits_.max_running_tasks));
  }
  if (Find(id) == nullptr && nodes_.size() >= limits_.max_nodes) {
    return ResourceExhaustedError(
        fmt::format("register: node {} would exceed the cluster's {} nodes (max_nodes); "
                    "remove a node first (anneal node remove)",
                    id, limits_.max_nodes));
  }
  return Status::Ok();
}

Status NodeRegistry::Recover() {
  const int64_t now = clock_->NowMs();
  Status error;
  RETURN_IF_ERROR(store_->ScanRecords<pb::NodeRecord>(Table::kNodes, "", [&](const pb::NodeRecord& record) {
    if (Status bounds = CheckInventory(record.node_id(), record.inventory(), limits_); !bounds.ok()) {
      // Stored by an older coordinator that did not check: loading it would break placement and submit.
      spdlog::warn("skipping stored node '{}': {} (it must register again)", record.node_id().substr(0, 64),
                   bounds.message());
      return true;
    }
    Node node;
    node.record = record;
    node.last_heartbeat_ms = now;  // a full timeout to re-register after a coordinator restart
    auto seq = store_->GetU64(Table::kMeta, NodeSeqKey(record.node_id()));
    if (!seq.ok()) {
      error = seq.status();
      return false;
    }
    node.last_applied_seq = seq->value_or(0);
    nodes_.emplace(record.node_id(), std::move(node));
    return true;
  }));
  return error;
}

void NodeRegistry::Persist(const Node& node) {
  batch_->Put(Table::kNodes, node.record.node_id(), node.record);
}

StatusOr<Node*> NodeRegistry::Register(const std::string& peer, const pb::RegisterRequest& request,
                                       const NodeIdentity* joined) {
  RETURN_IF_ERROR(Validate(request));
  const std::string& id = request.node_id();
  const int64_t now = clock_->NowMs();
  Node& node = nodes_[id];
  const pb::NodeState previous = node.record.state();
  if (!node.routing_id.empty()) node_by_peer_.erase(node.routing_id);
  if (auto other = node_by_peer_.find(peer); other != node_by_peer_.end() && other->second != id) {
    nodes_[other->second].routing_id.clear();
  }
  node.routing_id = peer;
  node_by_peer_[peer] = id;
  node.last_heartbeat_ms = now;
  node.record.set_node_id(id);
  *node.record.mutable_inventory() = request.inventory();
  const bool drained = previous == pb::NODE_DRAINING || node.record.drain_requested();
  node.record.set_state(drained ? pb::NODE_DRAINING : pb::NODE_UP);
  node.record.set_registered_at_ms(now);
  node.record.set_last_heartbeat_ms(now);
  node.record.set_agent_version(request.agent_version());
  node.record.set_session(node.record.session() + 1);
  if (joined != nullptr) {
    node.record.set_credential_hash(joined->credential_hash);
    node.record.set_joined_with(joined->joined_with);
    node.record.set_joined_at_ms(now);
    node.last_applied_seq = joined->spool_acked_seq;
    batch_->PutU64(Table::kMeta, NodeSeqKey(id), node.last_applied_seq);
  }
  Persist(node);
  return &node;
}

void NodeRegistry::Remove(const std::string& node_id) {
  auto it = nodes_.find(node_id);
  if (it == nodes_.end()) return;
  if (!it->second.routing_id.empty()) node_by_peer_.erase(it->second.routing_id);
  nodes_.erase(it);
  batch_->Delete(Table::kNodes, node_id);
  batch_->Delete(Table::kMeta, NodeSeqKey(node_id));
}

void NodeRegistry::Heartbeat(Node& node, const pb::Heartbeat& heartbeat) {
  node.last_heartbeat_ms = clock_->NowMs();
  for (const auto& gpu : heartbeat.gpus()) {
    for (auto& known : *node.record.mutable_inventory()->mutable_gpus()) {
      if (known.index() == gpu.index()) known = gpu;
    }
  }
}

std::vector<std::string> NodeRegistry::SilentNodes(int64_t heartbeat_timeout_ms) const {
  const int64_t now = clock_->NowMs();
  std::vector<std::string> silent;
  for (const auto& [id, node] : nodes_) {
    if (node.record.state() != pb::NODE_DOWN && now - node.last_heartbeat_ms > heartbeat_timeout_ms) {
      silent.push_back(id);
    }
  }
  return silent;
}

void NodeRegistry::MarkDown(Node& node) {
  // A drain outlives the outage (records stored before drain_requested existed carry it in their state).
  if (node.record.state() == pb::NODE_DRAINING) node.record.set_drain_requested(true);
  node.record.set_state(pb::NODE_DOWN);
  node.record.set_last_heartbeat_ms(node.last_heartbeat_ms);
  if (!node.routing_id.empty()) node_by_peer_.erase(node.routing_id);
  node.routing_id.clear();
  Persist(node);
}

StatusOr<pb::NodeState> NodeRegistry::SetDraining(const std::string& node_id, bool undrain) {
  Node* node = Find(node_id);
  if (node == nullptr) return NotFoundError(fmt::format("no node '{}'", node_id));
  const pb::NodeState from = node->record.state();
  node->record.set_drain_requested(!undrain);
  if (!undrain && from == pb::NODE_UP) {
    node->record.set_state(pb::NODE_DRAINING);
    spdlog::info("node {} draining", node_id);
  } else if (undrain && from == pb::NODE_DRAINING) {
    node->record.set_state(pb::NODE_UP);
    spdlog::info("node {} back in service", node_id);
  } else if (from == pb::NODE_DOWN) {
    spdlog::info("node {} is down: it {} when it registers again", node_id,
                 undrain ? "comes back in service" : "comes back draining");
  }
  Persist(*node);
  return node->record.state();
}

bool NodeRegistry::ApplySeq(Node& node, uint64_t seq) {
  if (seq <= node.last_applied_seq) return false;
  node.last_applied_seq = seq;
  batch_->PutU64(Table::kMeta, NodeSeqKey(node.record.node_id()), seq);
  return true;
}

void NodeRegistry::ReserveTasks(const pb::JobRecord& job) {
  const pb::Placement& placement = job.placement();
  for (int i = 0; i < placement.nodes_size(); ++i) {
    const std::string& node_id = placement.nodes(i).node_id();
    auto task = job.task_states().find(node_id);
    if (task == job.task_states().end() || protocol::TaskEnded(task->second)) continue;
    Node* node = Find(node_id);
    if (node == nullptr) continue;
    for (const auto& rank : placement.nodes(i).ranks()) node->used_slots.insert(rank.slot());
    if (i == 0) node->used_ports.insert(placement.master_port());
    node->task_jobs.insert(job.job_id());
  }
}

void NodeRegistry::ReleaseTask(const pb::JobRecord& job, const std::string& node_id) {
  Node* node = Find(node_id);
  if (node == nullptr) return;
  const pb::Placement& placement = job.placement();
  for (int i = 0; i < placement.nodes_size(); ++i) {
    if (placement.nodes(i).node_id() != node_id) continue;
    for (const auto& rank : placement.nodes(i).ranks()) node->used_slots.erase(rank.slot());
    if (i == 0) node->used_ports.erase(placement.master_port());
    node->task_jobs.erase(job.job_id());
  }
}

PortRange NodeRegistry::PortsOf(const Node& node) const {
  const pb::NodeInventory& inv = node.record.inventory();
  if (inv.rendezvous_port_end() > inv.rendezvous_port_begin()) {
    return {inv.rendezvous_port_begin(), inv.rendezvous_port_end()};
  }
  return default_ports_;
}

uint32_t NodeRegistry::FreePort(const Node& node) const {
  const PortRange ports = PortsOf(node);
  uint32_t port = ports.begin;
  while (port < ports.end && node.used_ports.count(port)) ++port;
  return port;
}

std::vector<NodeCapacity> NodeRegistry::Capacities() const {
  std::vector<NodeCapacity> out;
  out.reserve(nodes_.size());
  for (const auto& [id, node] : nodes_) {
    // Only nodes that are up and connected to this process get work: an order to an unconnected agent is lost.
    if (node.record.state() != pb::NODE_UP || node.routing_id.empty()) continue;
    NodeCapacity cap;
    cap.node_id = id;
    cap.total_slots = node.record.inventory().slots();
    for (uint32_t slot = 0; slot < cap.total_slots; ++slot) {
      if (!node.used_slots.count(slot)) cap.free_slots.push_back(slot);
    }
    const PortRange ports = PortsOf(node);
    cap.has_free_port = node.used_ports.size() < ports.end - ports.begin;
    out.push_back(std::move(cap));
  }
  return out;
}

Node* NodeRegistry::Find(const std::string& node_id) {
  auto it = nodes_.find(node_id);
  return it == nodes_.end() ? nullptr : &it->second;
}

const Node* NodeRegistry::Find(const std::string& node_id) const {
  auto it = nodes_.find(node_id);
  return it == nodes_.end() ? nullptr : &it->second;
}

Node* NodeRegistry::FindByPeer(const std::string& peer) {
  auto it = node_by_peer_.find(peer);
  return it == node_by_peer_.end() ? nullptr : Find(it->second);
}

jobspec::ClusterShape NodeRegistry::Shape() const {
  jobspec::ClusterShape shape;
  for (const auto& [id, node] : nodes_) {
    const int slots = static_cast<int>(node.record.inventory().slots());
    ++shape.node_count;
    shape.max_slots_per_node = std::max(shape.max_slots_per_node, slots);
    shape.total_slots += slots;
  }
  return shape;
}

int64_t NodeRegistry::NextSilenceDeadlineMs(int64_t heartbeat_timeout_ms) const {
  int64_t deadline = INT64_MAX;
  for (const auto& [id, node] : nodes_) {
    if (node.record.state() != pb::NODE_DOWN) {
      deadline = std::min(deadline, node.last_heartbeat_ms + heartbeat_timeout_ms + 1);
    }
  }
  return deadline;
}

}  // namespace anneal::coordinator
