// Artifacts without a shared filesystem (coordinator/artifacts.h): the pure rules, staging in LaunchTask, and
// the outputs ticket of `anneal fetch`.
#include "coordinator/artifacts.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>

#include "coordinator/authz.h"
#include "coordinator/coordinator.h"
#include "transfer/ticket.h"

namespace anneal::coordinator {

std::vector<StagedPath> InputsToStage(const jobspec::JobSpec& spec) {
  std::vector<StagedPath> out;
  if (spec.kind != jobspec::JobKind::kClean) {  // a clean job reads no model
    out.push_back({"model.model_name_or_path", spec.model.model_name_or_path});
  }
  if (spec.kind != jobspec::JobKind::kClean && !spec.model.adapter_name_or_path.empty()) {
    out.push_back({"model.adapter_name_or_path", spec.model.adapter_name_or_path});
  }
  if (spec.kind != jobspec::JobKind::kExport) {
    out.push_back({"data.dataset_dir", spec.data.dataset_dir});
    if (!spec.eval.task_dir.empty()) out.push_back({"eval.task_dir", spec.eval.task_dir});
  }
  const std::string& resume = spec.train.resume_from_checkpoint;
  if (!resume.empty() && resume != "latest") out.push_back({"train.resume_from_checkpoint", resume});
  return out;
}

std::string StageSource(const jobspec::JobSpec& spec, std::string_view default_source) {
  return spec.scheduling.stage_from.empty() ? std::string(default_source) : spec.scheduling.stage_from;
}

namespace {

// A dataset entry naming a path (it has a '/') must lie inside dataset_dir: only that directory is staged.
Status CheckDatasetEntries(const char* key, const std::vector<std::string>& entries, const std::string& dataset_dir) {
  for (const auto& entry : entries) {
    if (entry.find('/') == std::string::npos) continue;  // a name: dataset_info.json or a file in dataset_dir
    const std::filesystem::path p =
        entry[0] == '/' ? std::filesystem::path(entry) : std::filesystem::path(dataset_dir) / entry;
    const std::string normal = p.lexically_normal().string();
    const std::string dir = std::filesystem::path(dataset_dir).lexically_normal().string();
    if (normal.rfind(dir + "/", 0) != 0) {
      return InvalidArgumentError(fmt::format(
          "key '{}': entry '{}' lies outside data.dataset_dir ({}); without a shared filesystem only dataset_dir "
          "is staged to the nodes: move the file into it",
          key, entry, dataset_dir));
    }
  }
  return Status::Ok();
}

}  // namespace

Status CheckStageable(const jobspec::JobSpec& spec, std::string_view default_source) {
  if (StageSource(spec, default_source).empty()) {
    return InvalidArgumentError(
        "key 'scheduling.stage_from': the cluster has no shared filesystem and no artifact_source node, so the "
        "spec must name the node whose disk holds its model and dataset (stage_from: <node id>)");
  }
  // Pipeline stages and ZeRO-1 shards across nodes are fine: the trainer gathers the files other nodes wrote on
  // their own disks to rank 0 before it commits a checkpoint or joins an export (trainer/train/file_gather.h).
  if (spec.kind != jobspec::JobKind::kExport) {
    RETURN_IF_ERROR(CheckDatasetEntries("data.dataset", spec.data.dataset, spec.data.dataset_dir));
    RETURN_IF_ERROR(CheckDatasetEntries("data.eval_dataset", spec.data.eval_dataset, spec.data.dataset_dir));
  }
  return Status::Ok();
}

StatusOr<std::string> OutputSubpath(const std::string& output_dir, const std::string& sub) {
  if (sub.empty()) return output_dir;
  const std::filesystem::path p(sub);
  bool bad = p.is_absolute() || sub.size() > 4096;
  for (const auto& part : p) bad = bad || part == ".." || part == ".";
  if (bad) {
    return InvalidArgumentError(
        fmt::format("path '{}' must be relative to the job's output_dir, without '.' or '..' parts", sub));
  }
  return output_dir + "/" + p.lexically_normal().string();
}

// ---------------------------------------------------------------------------------------------------------
// Coordinator: tickets, staging orders and `anneal fetch`.

std::string Coordinator::SignTicket(const std::string& node_id, const std::string& root, const std::string& purpose,
                                    const pb::JobRecord& job) const {
  return options_.artifacts.signer->Sign({.node_id = node_id,
                                          .root = root,
                                          .expires_at_ms = clock_->NowMs() + options_.artifacts.ticket_ttl_ms,
                                          .purpose = purpose,
                                          .job_id = job.job_id(),
                                          .team = JobTeam(job)});
}

bool Coordinator::FillSource(const std::string& node_id, const std::string& path, const std::string& purpose,
                             const pb::JobRecord& job, pb::StageInput* input) const {
  const Node* source = nodes_.Find(node_id);
  if (source == nullptr || source->record.inventory().transfer_endpoint().empty()) return false;
  input->set_source_node(node_id);
  input->set_source_endpoint(source->record.inventory().transfer_endpoint());
  input->set_source_public_key(source->record.inventory().transfer_public_key());
  input->set_source_path(path);
  input->set_ticket(SignTicket(node_id, path, purpose, job));
  return true;
}

void Coordinator::AddStaging(Job& job, const std::string& node_id, pb::LaunchTask* launch) {
  const ArtifactOptions& a = options_.artifacts;
  if (a.shared_filesystem || a.signer == nullptr) return;
  const pb::JobRecord& r = job.record;
  auto spec = jobspec::ParseJobSpec(r.spec_yaml(), "stored spec of " + r.job_id());
  if (!spec.ok()) return;  // a stored spec that no longer parses: the trainer reports it
  const std::string source = StageSource(*spec, a.default_source);
  for (const StagedPath& in : InputsToStage(*spec)) {
    pb::StageInput* input = launch->add_stage();
    input->set_key(in.key);
    // An unknown source still yields an order: the agent fails the task naming the node (nothing else can).
    if (!FillSource(source, in.path, "stage", r, input)) input->set_source_node(source);
  }
  if (r.resume_checkpoint().empty()) return;
  const pb::CheckpointRecord* checkpoint = checkpoints_.FindByPath(r.job_id(), r.resume_checkpoint());
  if (checkpoint == nullptr) return;
  std::vector<std::string> holders = {checkpoint->node_id()};
  holders.insert(holders.end(), checkpoint->replica_nodes().begin(), checkpoint->replica_nodes().end());
  if (std::find(holders.begin(), holders.end(), node_id) != holders.end()) return;  // already there
  for (const auto& holder : holders) {  // the first holder that is up serves it
    const Node* n = nodes_.Find(holder);
    if (n == nullptr || !n->Connected()) continue;
    pb::StageInput input;
    input.set_key("checkpoint");
    input.set_dest_path(checkpoint->path());
    if (!FillSource(holder, checkpoint->path(), "stage", r, &input)) continue;
    *launch->add_stage() = std::move(input);
    // The copy makes this node a holder: retention deletes it there too.
    checkpoints_.AddHolder(r.job_id(), checkpoint->step(), node_id);
    return;
  }
  jobs_.AddEvent(job, "error",
                 fmt::format("no node holding checkpoint {} is up to copy it to {}: the ranks there will not find it",
                             checkpoint->path(), node_id));
}

void Coordinator::HandleFetchOutputs(const Principal& who, const std::string& peer, uint64_t request_id,
                                     const pb::FetchOutputsRequest& request) {
  auto answer = [&]() -> StatusOr<pb::FetchOutputsReply> {
    ASSIGN_OR_RETURN(pb::JobRecord job, ReadableJob(who, request.job_id()));
    if (options_.artifacts.signer == nullptr) {
      return UnavailableError("this coordinator signs no transfer tickets (it was started without a state dir)");
    }
    if (job.placement().nodes_size() == 0 || job.output_dir().empty()) {
      return FailedPreconditionError(fmt::format("job {} has not run yet: it has no outputs", job.job_id()));
    }
    const std::string node_id = job.placement().nodes(0).node_id();
    ASSIGN_OR_RETURN(std::string path, OutputSubpath(job.output_dir(), request.path()));
    pb::StageInput source;
    if (!FillSource(node_id, path, "fetch", job, &source)) {
      return UnavailableError(fmt::format(
          "node {} (global rank 0 of job {}) is unknown or serves no transfers (an agent older than this feature?)",
          node_id, job.job_id()));
    }
    pb::FetchOutputsReply reply;
    reply.set_node_id(node_id);
    reply.set_endpoint(source.source_endpoint());
    reply.set_server_public_key(source.source_public_key());
    reply.set_ticket(source.ticket());
    reply.set_path(path);
    reply.set_expires_at_ms(clock_->NowMs() + options_.artifacts.ticket_ttl_ms);
    return reply;
  }();
  if (!answer.ok()) {
    ReplyError(peer, request_id, answer.status());
    return;
  }
  pb::ClientReply reply;
  reply.set_request_id(request_id);
  *reply.mutable_fetch_outputs() = std::move(*answer);
  Reply(peer, std::move(reply));
}

}  // namespace anneal::coordinator
