// No shared filesystem (coordinator/artifacts.h): submit-time rules, staging orders with signed tickets, the
// checkpoint replication state machine edge by edge, resume staging, and `anneal fetch`'s ticket.
#include "coordinator/artifacts.h"

#include <gtest/gtest.h>

#include "harness.h"
#include "transfer/ticket.h"

namespace anneal::coordinator {
namespace {

using testing::Harness;

std::shared_ptr<const transfer::TicketSigner> Signer() {
  static auto signer = std::make_shared<const transfer::TicketSigner>(transfer::TicketSigner::Generate());
  return signer;
}

CoordinatorOptions NoSharedFs(int replicas = 1, std::string source = "src") {
  CoordinatorOptions o;
  o.artifacts = {.shared_filesystem = false,
                 .default_source = std::move(source),
                 .replicas = replicas,
                 .ticket_ttl_ms = 3600000,
                 .signer = Signer()};
  return o;
}

void RegisterWithTransfers(Harness& h, const std::string& node, uint32_t slots) {
  pb::AgentToCoordinator msg = Harness::RegisterMessage(node, slots);
  msg.mutable_register_()->mutable_inventory()->set_transfer_endpoint("tcp://" + node + ":7072");
  msg.mutable_register_()->mutable_inventory()->set_transfer_public_key("key-of-" + node);
  msg.mutable_register_()->set_join_token(h.JoinToken());
  h.SendRegister(node, msg);
}

std::string Spec(const std::string& out, const std::string& extra = "") {
  return "model_name_or_path: /models/tiny\ndataset: alpaca\ndataset_dir: /data/sets\noutput_dir: " + out + "\n" +
         extra;
}

transfer::Ticket Verified(Harness& h, const pb::StageInput& in) {
  auto t = transfer::VerifyTicket(in.ticket(), Signer()->public_key(), in.source_node(), h.clock().NowMs());
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return t.ok() ? *t : transfer::Ticket{};
}

pb::CheckpointRecord Checkpoint(Harness& h, const std::string& job) {
  pb::ClientRequest req;
  req.mutable_list_checkpoints()->set_job_id(job);
  const pb::ClientReply reply = h.Call(req);
  EXPECT_EQ(reply.list_checkpoints().checkpoints_size(), 1);
  return reply.list_checkpoints().checkpoints_size() > 0 ? reply.list_checkpoints().checkpoints(0)
                                                         : pb::CheckpointRecord();
}

std::vector<pb::ReplicateCheckpoint> ReplicaOrders(const Harness& h, const std::string& node) {
  std::vector<pb::ReplicateCheckpoint> out;
  for (const auto& m : h.AgentMessages(node)) {
    if (m.has_replicate_checkpoint()) out.push_back(m.replicate_checkpoint());
  }
  return out;
}

void ReportReplicated(Harness& h, const std::string& node, const std::string& job, uint64_t step, bool ok) {
  pb::AgentToCoordinator msg;
  msg.mutable_checkpoint_replicated()->set_seq(h.NextSeq(node));
  msg.mutable_checkpoint_replicated()->set_job_id(job);
  msg.mutable_checkpoint_replicated()->set_step(step);
  msg.mutable_checkpoint_replicated()->set_ok(ok);
  if (!ok) msg.mutable_checkpoint_replicated()->set_error("disk full");
  h.core().OnAgentMessage(Harness::Peer(node), msg);
  h.Round();
}

TEST(ArtifactRules, InputsAreTheSpecsReadPaths) {
  auto spec = jobspec::ParseJobSpec(Spec("/out/a", "adapter_name_or_path: /models/lora\n"), "t");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  std::vector<std::string> keys;
  for (const auto& in : InputsToStage(*spec)) keys.push_back(in.key);
  EXPECT_EQ(keys,
            (std::vector<std::string>{"model.model_name_or_path", "model.adapter_name_or_path", "data.dataset_dir"}));
}

TEST(ArtifactRules, RefusesWhatCannotBeStagedNamingTheKey) {
  auto refusal = [](const std::string& yaml, const std::string& source) {
    auto spec = jobspec::ParseJobSpec(yaml, "t");
    EXPECT_TRUE(spec.ok()) << spec.status().ToString();
    return CheckStageable(*spec, source).message();
  };
  EXPECT_NE(refusal(Spec("/out/a"), "").find("stage_from"), std::string::npos);
  EXPECT_TRUE(CheckStageable(*jobspec::ParseJobSpec(Spec("/out/a", "stage_from: n1\n"), "t"), "").ok());
  const std::string outside =
      "model_name_or_path: /models/tiny\ndataset: /elsewhere/x.json\ndataset_dir: "
      "/data/sets\noutput_dir: /out/a\n";
  EXPECT_NE(refusal(outside, "src").find("outside data.dataset_dir"), std::string::npos);
  // Pipeline stages and ZeRO-1 shards over several nodes: the trainer gathers their files to rank 0.
  for (const char* layout :
       {"nodes: 2\npipeline_model_parallel_size: 1\n", "nodes: 2\ngpus_per_node: 2\npipeline_model_parallel_size: 2\n",
        "nodes: 2\nzero_stage: 1\n"}) {
    EXPECT_TRUE(CheckStageable(*jobspec::ParseJobSpec(Spec("/out/a", layout), "t"), "src").ok()) << layout;
  }
}

TEST(ArtifactRules, OutputSubpathStaysInsideTheOutputDirectory) {
  EXPECT_EQ(*OutputSubpath("/out/a", ""), "/out/a");
  EXPECT_EQ(*OutputSubpath("/out/a", "checkpoint-20"), "/out/a/checkpoint-20");
  EXPECT_FALSE(OutputSubpath("/out/a", "../b").ok());
  EXPECT_FALSE(OutputSubpath("/out/a", "/etc").ok());
  EXPECT_FALSE(OutputSubpath("/out/a", "x/./y").ok());
}

TEST(ArtifactStaging, SubmitWithoutASourceIsRefused) {
  Harness h(NoSharedFs(1, ""));
  RegisterWithTransfers(h, "n1", 1);
  pb::ClientRequest req;
  req.mutable_submit()->set_spec_yaml(Spec("/out/nosource"));
  const pb::ClientReply reply = h.Call(req);
  EXPECT_EQ(reply.error().code(), pb::INVALID_ARGUMENT);
  EXPECT_NE(reply.error().message().find("stage_from"), std::string::npos) << reply.error().message();
}

TEST(ArtifactStaging, EveryLaunchNamesItsInputsWithATicketForTheSourceNode) {
  Harness h(NoSharedFs());
  RegisterWithTransfers(h, "src", 1);
  RegisterWithTransfers(h, "n1", 1);
  const std::string job = h.Submit(Spec("/out/stage", "nodes: 2\ngpus_per_node: 1\n"));
  const pb::JobRecord record = h.Job(job);  // named: the loop must not outlive it
  ASSERT_EQ(record.placement().nodes_size(), 2);
  for (const auto& placed : record.placement().nodes()) {
    auto launches = h.Launches(placed.node_id());
    ASSERT_EQ(launches.size(), 1u) << placed.node_id();
    ASSERT_EQ(launches[0].stage_size(), 2);
    const pb::StageInput& model = launches[0].stage(0);
    EXPECT_EQ(model.key(), "model.model_name_or_path");
    EXPECT_EQ(model.source_node(), "src");
    EXPECT_EQ(model.source_endpoint(), "tcp://src:7072");
    EXPECT_EQ(model.source_public_key(), "key-of-src");
    const transfer::Ticket ticket = Verified(h, model);
    EXPECT_EQ(ticket.root, "/models/tiny");
    EXPECT_EQ(ticket.job_id, job);
    EXPECT_EQ(launches[0].stage(1).key(), "data.dataset_dir");
    EXPECT_EQ(Verified(h, launches[0].stage(1)).root, "/data/sets");
    // A ticket is for its node only.
    EXPECT_FALSE(transfer::VerifyTicket(model.ticket(), Signer()->public_key(), "n1", h.clock().NowMs()).ok());
  }
}

TEST(ArtifactStaging, WithASharedFilesystemNothingIsStagedOrReplicated) {
  CoordinatorOptions o;
  o.artifacts.signer = Signer();
  Harness h(o);
  RegisterWithTransfers(h, "n1", 1);
  RegisterWithTransfers(h, "n2", 1);
  const std::string job = h.Submit(Spec("/out/shared"));
  const std::string node = h.Job(job).placement().nodes(0).node_id();
  EXPECT_EQ(h.Launches(node).at(0).stage_size(), 0);
  h.ReportAll(job, pb::TASK_RUNNING);
  h.ReportCheckpoint(node, job, 10);
  EXPECT_EQ(Checkpoint(h, job).state(), pb::CHECKPOINT_COMMITTED);
}

// The two-node job's rank 0 writes checkpoint 10; the other node of the job copies it.
struct Replicating {
  Harness h{NoSharedFs()};
  std::string job, writer, other;
  Replicating() {
    RegisterWithTransfers(h, "src", 1);
    RegisterWithTransfers(h, "n1", 1);
    RegisterWithTransfers(h, "n2", 1);
    job = h.Submit(Spec("/out/replicate", "nodes: 2\ngpus_per_node: 1\nsave_total_limit: 1\n"));
    writer = h.Job(job).placement().nodes(0).node_id();
    other = h.Job(job).placement().nodes(1).node_id();
    h.ReportAll(job, pb::TASK_RUNNING);
    h.ReportCheckpoint(writer, job, 10);
  }
};

TEST(CheckpointReplication, ReportedIsReplicatingUntilACopyIsVerified) {
  Replicating r;
  auto orders = ReplicaOrders(r.h, r.other);  // the job's own other node first (read before the next round)
  EXPECT_EQ(Checkpoint(r.h, r.job).state(), pb::CHECKPOINT_REPLICATING);
  ASSERT_EQ(orders.size(), 1u);
  EXPECT_EQ(orders[0].step(), 10u);
  EXPECT_EQ(orders[0].source().source_node(), r.writer);
  EXPECT_EQ(orders[0].source().dest_path(), "/out/replicate/checkpoint-10");
  EXPECT_EQ(orders[0].output_dir(), "/out/replicate");
  EXPECT_EQ(Verified(r.h, orders[0].source()).root, "/out/replicate/checkpoint-10");
  // Not counted yet: a restart now would not resume from it.
  EXPECT_EQ(r.h.Job(r.job).resume_checkpoint(), "");
  ReportReplicated(r.h, r.other, r.job, 10, true);
  const pb::CheckpointRecord c = Checkpoint(r.h, r.job);
  EXPECT_EQ(c.state(), pb::CHECKPOINT_COMMITTED);
  ASSERT_EQ(c.replica_nodes_size(), 1);
  EXPECT_EQ(c.replica_nodes(0), r.other);
}

TEST(CheckpointReplication, AnAnswerNobodyOrderedIsIgnored) {
  Replicating r;
  const std::string stranger = r.other == "src" ? "n1" : "src";
  ReportReplicated(r.h, r.writer == stranger ? "n2" : stranger, r.job, 10, true);
  EXPECT_EQ(Checkpoint(r.h, r.job).state(), pb::CHECKPOINT_REPLICATING);
}

TEST(CheckpointReplication, AFailedCopyGoesToAnotherNodeThenCommitsWithAWarning) {
  Replicating r;
  ReportReplicated(r.h, r.other, r.job, 10, false);
  std::string third;
  for (const std::string n : {"src", "n1", "n2"}) {
    if (n != r.writer && n != r.other) third = n;
  }
  ASSERT_EQ(ReplicaOrders(r.h, third).size(), 1u);  // the next candidate
  EXPECT_EQ(Checkpoint(r.h, r.job).state(), pb::CHECKPOINT_REPLICATING);
  ReportReplicated(r.h, third, r.job, 10, false);  // no node left: it counts, with a warning
  EXPECT_EQ(Checkpoint(r.h, r.job).state(), pb::CHECKPOINT_COMMITTED);
  bool warned = false;
  for (const auto& e : r.h.Events(r.job)) warned |= e.message().find("0 of 1 copies") != std::string::npos;
  EXPECT_TRUE(warned);
}

TEST(CheckpointReplication, RetentionDeletesEveryCopy) {
  Replicating r;
  ReportReplicated(r.h, r.other, r.job, 10, true);
  r.h.ReportCheckpoint(r.writer, r.job, 20);
  ReportReplicated(r.h, r.other, r.job, 20, true);  // 20 counts: retention (keep 1) drops 10 on both holders
  bool writer_told = false, other_told = false;
  for (const auto& m : r.h.AgentMessages(r.writer)) writer_told |= m.has_delete_checkpoint();
  for (const auto& m : r.h.AgentMessages(r.other)) other_told |= m.has_delete_checkpoint();
  EXPECT_TRUE(writer_told);
  EXPECT_TRUE(other_told);
}

TEST(CheckpointReplication, ARestartElsewhereStagesTheCheckpointFromAHolder) {
  Harness h(NoSharedFs());
  RegisterWithTransfers(h, "src", 1);
  RegisterWithTransfers(h, "n1", 1);
  const std::string job = h.Submit(Spec("/out/resume"));
  const std::string first = h.Job(job).placement().nodes(0).node_id();
  const std::string copy = first == "src" ? "n1" : "src";
  h.ReportAll(job, pb::TASK_RUNNING);
  h.ReportCheckpoint(first, job, 10);
  ReportReplicated(h, copy, job, 10, true);
  RegisterWithTransfers(h, "n9", 1);
  // The first node fails the task; the retry lands on whichever node is free.
  h.ReportTask(first, Harness::Task(h.Job(job), pb::TASK_FAILED, 1));
  std::vector<pb::LaunchTask> launches;  // from the round that placed the retry
  std::string node;
  for (int round = 0; round < 5 && launches.empty(); ++round) {
    const pb::JobRecord now = h.Job(job);
    if (now.attempt() == 2) {
      node = now.placement().nodes(0).node_id();
      launches = h.Launches(node);
    }
    if (launches.empty()) h.Advance(1000);
  }
  ASSERT_FALSE(launches.empty()) << "the retry was never launched";
  EXPECT_EQ(h.Job(job).resume_checkpoint(), "/out/resume/checkpoint-10");
  const pb::LaunchTask& launch = launches.back();
  bool staged = false;
  for (const auto& in : launch.stage()) {
    if (in.key() != "checkpoint") continue;
    staged = true;
    EXPECT_EQ(in.dest_path(), "/out/resume/checkpoint-10");
    EXPECT_TRUE(in.source_node() == first || in.source_node() == copy);
  }
  // A holder resumes in place; any other node gets a copy.
  EXPECT_EQ(staged, node != first && node != copy) << node;
}

TEST(FetchOutputs, AViewerGetsATicketForRankZerosNode) {
  Harness h(NoSharedFs());
  RegisterWithTransfers(h, "src", 1);
  const std::string job = h.Submit(Spec("/out/fetch"));
  pb::ClientRequest req;
  req.mutable_fetch_outputs()->set_job_id(job);
  req.mutable_fetch_outputs()->set_path("checkpoint-10");
  const pb::ClientReply reply = h.Call(req);
  ASSERT_EQ(reply.error().code(), pb::OK) << reply.error().message();
  EXPECT_EQ(reply.fetch_outputs().node_id(), "src");
  EXPECT_EQ(reply.fetch_outputs().path(), "/out/fetch/checkpoint-10");
  auto ticket =
      transfer::VerifyTicket(reply.fetch_outputs().ticket(), Signer()->public_key(), "src", h.clock().NowMs());
  ASSERT_TRUE(ticket.ok()) << ticket.status().ToString();
  EXPECT_EQ(ticket->root, "/out/fetch/checkpoint-10");
  EXPECT_EQ(ticket->purpose, "fetch");
  req.mutable_fetch_outputs()->set_path("../other-job");
  EXPECT_EQ(h.Call(req).error().code(), pb::INVALID_ARGUMENT);
  req.mutable_fetch_outputs()->set_path("");
  req.set_token("ant_not_a_token");
  EXPECT_EQ(h.CallExactly(req).error().code(), pb::UNAUTHENTICATED);
}

TEST(FetchOutputs, AJobThatNeverRanHasNoOutputs) {
  Harness h(NoSharedFs());
  const std::string job = h.Submit(Spec("/out/never"));  // no node: it waits
  pb::ClientRequest req;
  req.mutable_fetch_outputs()->set_job_id(job);
  EXPECT_EQ(h.Call(req).error().code(), pb::FAILED_PRECONDITION);
}

}  // namespace
}  // namespace anneal::coordinator
