// CheckFitsCluster: the submit-time check of specs that no placement can ever satisfy on this cluster.
#include <fmt/format.h>

#include "jobspec/jobspec.h"

namespace anneal::jobspec {

Status CheckFitsCluster(const JobSpec& spec, const ClusterShape& cluster) {
  const ResourceSpec& r = spec.resources;
  if (cluster.node_count <= 0) {
    return InvalidArgumentError(fmt::format(
        "the job needs {} node(s) x {} slot(s) but the cluster has no nodes registered (start an agent first)",
        r.nodes, r.gpus_per_node));
  }
  if (r.nodes > cluster.node_count) {
    return InvalidArgumentError(fmt::format("resources.nodes is {} but the cluster has only {} node(s)", r.nodes,
                                            cluster.node_count));
  }
  if (r.gpus_per_node > cluster.max_slots_per_node) {
    return InvalidArgumentError(fmt::format(
        "resources.gpus_per_node is {} but the largest node has {} slot(s)", r.gpus_per_node,
        cluster.max_slots_per_node));
  }
  if (r.world_size() > cluster.total_slots) {
    return InvalidArgumentError(fmt::format(
        "the job needs {} slots (nodes {} x gpus_per_node {}) but the cluster has {} in total", r.world_size(),
        r.nodes, r.gpus_per_node, cluster.total_slots));
  }
  if (r.gpus_per_node % r.tensor_parallel != 0) {
    return InvalidArgumentError(fmt::format(
        "tensor parallel (tp={}) does not fit in one node: gpus_per_node is {} and tensor-parallel ranks must "
        "share a node (tp must divide gpus_per_node)",
        r.tensor_parallel, r.gpus_per_node));
  }
  const int model_parallel = r.tensor_parallel * r.pipeline_parallel;
  if (r.world_size() % model_parallel != 0) {
    return InvalidArgumentError(fmt::format(
        "tensor parallel (tp={}) x pipeline parallel (pp={}) = {} does not divide the world size {} (nodes {} x "
        "gpus_per_node {})",
        r.tensor_parallel, r.pipeline_parallel, model_parallel, r.world_size(), r.nodes, r.gpus_per_node));
  }
  return Status::Ok();
}

}  // namespace anneal::jobspec
