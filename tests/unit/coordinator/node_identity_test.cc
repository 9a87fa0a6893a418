// Node identity: join tokens, node credentials, which reports a node may send, bounds, node removal. Each
// refusal is checked for what it names, for leaving state unchanged, and for the coordinator still serving.
#include <gtest/gtest.h>

#include <functional>
#include <limits>

#include "common/secret.h"
#include "coordinator/store_keys.h"
#include "harness.h"

namespace anneal::coordinator {
namespace {

using testing::BaseSpec;
using testing::Harness;

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

pb::ClientRequest CreateToken(int64_t ttl_ms = 0) {
  pb::ClientRequest req;
  req.mutable_create_join_token()->set_ttl_ms(ttl_ms);
  req.mutable_create_join_token()->set_description("rack 3");
  return req;
}

// The coordinator still answers a client after whatever was refused.
void ExpectServing(Harness& h) {
  pb::ClientRequest req;
  req.mutable_list_nodes();
  EXPECT_EQ(h.Call(req).error().code(), pb::OK);
}

TEST(JoinToken, CreateReturnsTheTokenOnceWithTheJoinBundleAndStoresOnlyItsHash) {
  CoordinatorOptions options;
  options.coordinator_addresses = {"tcp://10.0.0.1:7070"};
  options.server_public_key = "Z85KEY";
  Harness h(options);
  pb::ClientReply reply = h.Call(CreateToken());
  ASSERT_EQ(reply.error().code(), pb::OK) << reply.error().message();
  const auto& created = reply.create_join_token();
  auto parts = ParseJoinToken(created.token());
  ASSERT_TRUE(parts.ok()) << created.token();
  EXPECT_EQ(parts->id, created.record().id());
  EXPECT_TRUE(created.record().secret_hash().empty());
  EXPECT_EQ(created.record().expires_at_ms() - created.record().created_at_ms(), 24LL * 3600 * 1000);
  EXPECT_EQ(created.coordinator_addresses(0), "tcp://10.0.0.1:7070");
  EXPECT_EQ(created.server_public_key(), "Z85KEY");
  // Nothing in the store holds the secret.
  pb::JoinTokenRecord stored;
  ASSERT_TRUE(h.store().Get(storage::Table::kMeta, JoinTokenKey(parts->id), &stored).ok());
  EXPECT_TRUE(SecretEquals(stored.secret_hash(), SecretHash(parts->secret)));
  EXPECT_FALSE(Contains(stored.SerializeAsString(), parts->secret));
  pb::ClientRequest list;
  list.mutable_list_join_tokens();
  pb::ClientReply listed = h.Call(list);
  ASSERT_EQ(listed.list_join_tokens().tokens_size(), 1);
  EXPECT_TRUE(listed.list_join_tokens().tokens(0).secret_hash().empty());
  EXPECT_EQ(listed.list_join_tokens().tokens(0).description(), "rack 3");
}

TEST(JoinToken, RegistrationWithoutCredentialOrTokenIsRefusedNamingTheNode) {
  Harness h;
  h.SendRegister("n1", Harness::RegisterMessage("n1", 4));
  pb::RegisterReply reply = h.LastRegisterReply("n1");
  EXPECT_FALSE(reply.accepted());
  EXPECT_EQ(reply.error().code(), pb::UNAUTHENTICATED);
  EXPECT_TRUE(Contains(reply.error().message(), "node 'n1'")) << reply.error().message();
  EXPECT_TRUE(Contains(reply.error().message(), "join token")) << reply.error().message();
  EXPECT_EQ(h.core().FindNode("n1"), nullptr);
  ExpectServing(h);
}

TEST(JoinToken, ExpiredRevokedMalformedAndUnknownTokensAreRefused) {
  Harness h;
  const std::string expiring = h.Call(CreateToken(1000)).create_join_token().token();
  const std::string revoked = h.Call(CreateToken()).create_join_token().token();
  pb::ClientRequest revoke;
  revoke.mutable_revoke_join_token()->set_id(ParseJoinToken(revoked)->id);
  ASSERT_EQ(h.Call(revoke).error().code(), pb::OK);
  h.Advance(1000);
  const std::string unknown = FormatJoinToken(RandomHex(kJoinTokenIdBytes), RandomHex(kSecretBytes));
  const std::string wrong_secret = FormatJoinToken(ParseJoinToken(revoked)->id, RandomHex(kSecretBytes));
  const std::pair<std::string, std::string> cases[] = {{expiring, "expired"},
                                                       {revoked, "revoked"},
                                                       {"anj_short", "malformed"},
                                                       {unknown, "not valid"},
                                                       {wrong_secret, "not valid"}};
  for (const auto& [token, why] : cases) {
    pb::AgentToCoordinator msg = Harness::RegisterMessage("n1", 4);
    msg.mutable_register_()->set_join_token(token);
    h.SendRegister("n1", msg);
    pb::RegisterReply reply = h.LastRegisterReply("n1");
    EXPECT_FALSE(reply.accepted()) << why;
    EXPECT_EQ(reply.error().code(), pb::UNAUTHENTICATED) << why;
    EXPECT_TRUE(Contains(reply.error().message(), why)) << reply.error().message();
    EXPECT_FALSE(Contains(reply.error().message(), ParseJoinToken(revoked)->secret));
  }
  EXPECT_EQ(h.core().FindNode("n1"), nullptr);
  pb::ClientRequest unknown_revoke;
  unknown_revoke.mutable_revoke_join_token()->set_id("nope");
  pb::ClientReply refused = h.Call(unknown_revoke);
  EXPECT_EQ(refused.error().code(), pb::NOT_FOUND);
  EXPECT_TRUE(Contains(refused.error().message(), "nope"));
}

TEST(NodeIdentity, JoinIssuesACredentialThatAloneRegistersTheNodeAgainEvenAfterARestart) {
  Harness h;
  h.Register("n1", 4);
  const std::string credential = h.Credential("n1");
  ASSERT_TRUE(ParseNodeCredential(credential).ok()) << credential;
  EXPECT_TRUE(h.core().Nodes()[0].credential_hash().empty()) << "a client must never see the hash";
  h.Restart();
  pb::AgentToCoordinator msg = Harness::RegisterMessage("n1", 4);
  msg.mutable_register_()->set_node_credential(credential);
  h.SendRegister("n1", msg);
  pb::RegisterReply reply = h.LastRegisterReply("n1");
  EXPECT_TRUE(reply.accepted()) << reply.error().message();
  EXPECT_TRUE(reply.node_credential().empty()) << "a credential is shown once, at the join";
  EXPECT_EQ(reply.session(), 2u);
}

TEST(NodeIdentity, AJoinRetriedWithTheProposedCredentialIsAcceptedAndAnotherIsNot) {
  Harness h;
  const std::string proposed = FormatNodeCredential(RandomHex(kSecretBytes));
  pb::AgentToCoordinator join = Harness::RegisterMessage("n1", 1);
  join.mutable_register_()->set_join_token(h.JoinToken());
  join.mutable_register_()->set_node_credential(proposed);
  h.SendRegister("n1", join);
  EXPECT_TRUE(h.LastRegisterReply("n1").accepted()) << h.LastRegisterReply("n1").error().message();
  EXPECT_TRUE(h.LastRegisterReply("n1").node_credential().empty()) << "the agent's own credential is kept";
  h.SendRegister("n1", join, "peer-n1-new-socket");  // the first reply was lost; the agent retries
  bool accepted = false;
  for (const auto& m : h.sent()) {
    if (m.routing_id == "peer-n1-new-socket") {
      accepted = std::get<pb::CoordinatorToAgent>(m.message).register_reply().accepted();
    }
  }
  EXPECT_TRUE(accepted);
  join.mutable_register_()->set_node_credential(FormatNodeCredential(RandomHex(kSecretBytes)));
  h.SendRegister("n1", join);
  EXPECT_EQ(h.LastRegisterReply("n1").error().code(), pb::PERMISSION_DENIED);
}

TEST(NodeIdentity, RegistrationUnderAnExistingIdWithoutItsCredentialIsRefusedAndTheNodeKeepsItsRouting) {
  Harness h;
  h.Register("n1", 1);
  const uint64_t session = h.core().FindNode("n1")->session();
  for (const std::string& credential : {std::string(), FormatNodeCredential(RandomHex(kSecretBytes))}) {
    pb::AgentToCoordinator forged = Harness::RegisterMessage("n1", 8);
    forged.mutable_register_()->set_join_token(h.JoinToken());  // a valid token does not take over a node
    forged.mutable_register_()->set_node_credential(credential);
    h.SendRegister("n1", forged, "peer-attacker");
    bool refused = false;
    for (const auto& m : h.sent()) {
      if (m.routing_id != "peer-attacker") continue;
      const auto& reply = std::get<pb::CoordinatorToAgent>(m.message).register_reply();
      refused = !reply.accepted() && reply.error().code() == pb::PERMISSION_DENIED &&
                Contains(reply.error().message(), "node 'n1'");
      EXPECT_TRUE(refused) << reply.ShortDebugString();
    }
    EXPECT_TRUE(refused);
  }
  EXPECT_EQ(h.core().FindNode("n1")->session(), session);
  EXPECT_EQ(h.core().FindNode("n1")->inventory().slots(), 1u);
  h.Submit(BaseSpec());
  ASSERT_EQ(h.Launches("n1").size(), 1u) << "the launch goes to the real node's peer";
}

TEST(NodeIdentity, ForgedCheckpointForAnotherNodesJobChangesNothing) {
  Harness h;
  h.Register("n1", 1);
  h.Register("n2", 1);
  const std::string job = h.Submit(BaseSpec("save_total_limit: 1\nmax_attempts: 2\n"));
  const std::string victim = h.Job(job).placement().nodes(0).node_id();
  const std::string forger = victim == "n1" ? "n2" : "n1";
  h.ReportAll(job, pb::TASK_RUNNING);
  h.ReportCheckpoint(victim, job, 10);
  // The forger reports a newer checkpoint of the victim's job: retention would delete step 10 on the victim.
  const uint64_t seq = h.ReportCheckpoint(forger, job, 20);
  EXPECT_EQ(h.Acks(forger), std::vector<uint64_t>{seq}) << "acknowledged, so a real stream would not wedge";
  EXPECT_TRUE(h.AgentMessages(victim).empty()) << "no delete order";
  pb::ClientRequest list;
  list.mutable_list_checkpoints()->set_job_id(job);
  pb::ClientReply listed = h.Call(list);
  ASSERT_EQ(listed.list_checkpoints().checkpoints_size(), 1);
  EXPECT_EQ(listed.list_checkpoints().checkpoints(0).step(), 10u);
  EXPECT_EQ(listed.list_checkpoints().checkpoints(0).state(), pb::CHECKPOINT_COMMITTED);
  h.ReportAll(job, pb::TASK_FAILED);
  EXPECT_EQ(h.Job(job).resume_checkpoint(), h.Job(job).output_dir() + "/checkpoint-10");
}

TEST(NodeIdentity, CheckpointOutsideTheJobsOutputDirIsRefused) {
  Harness h;
  h.Register("n1", 1);
  const std::string job = h.Submit(BaseSpec("max_attempts: 2\n"));
  h.ReportAll(job, pb::TASK_RUNNING);
  for (const std::string path : {"/", "/out/run/../other/checkpoint-5", "/out/run/checkpoint-6", "/etc"}) {
    pb::AgentToCoordinator msg;
    msg.mutable_checkpoint_committed()->set_seq(h.NextSeq("n1"));
    auto* c = msg.mutable_checkpoint_committed()->mutable_checkpoint();
    c->set_job_id(job);
    c->set_step(5);
    c->set_epoch(h.Job(job).epoch());
    c->set_path(path);
    h.core().OnAgentMessage(Harness::Peer("n1"), msg);
    h.Round();
    EXPECT_EQ(h.Acks("n1").size(), 1u) << path;
  }
  h.ReportCheckpoint("n1", job, 7);  // the real one, normalized path
  h.ReportAll(job, pb::TASK_FAILED);
  EXPECT_EQ(h.Job(job).resume_checkpoint(), h.Job(job).output_dir() + "/checkpoint-7");
}

TEST(NodeIdentity, MetricsDeletionsAndLogsAreAcceptedOnlyFromTheNodeTheyConcern) {
  Harness h;
  h.Register("n1", 1);
  h.Register("n2", 1);
  const std::string job = h.Submit(BaseSpec("save_total_limit: 1\n"));
  const pb::JobRecord r = h.Job(job);
  const std::string owner = r.placement().nodes(0).node_id();
  const std::string other = owner == "n1" ? "n2" : "n1";
  h.ReportAll(job, pb::TASK_RUNNING);
  // Metrics from the other node: not stored.
  pb::AgentToCoordinator metrics;
  metrics.mutable_metric_batch()->set_seq(h.NextSeq(other));
  metrics.mutable_metric_batch()->set_job_id(job);
  metrics.mutable_metric_batch()->set_epoch(r.epoch());
  metrics.mutable_metric_batch()->add_points()->set_step(3);
  h.core().OnAgentMessage(Harness::Peer(other), metrics);
  h.Round();
  pb::ClientRequest get;
  get.mutable_get_job()->set_job_id(job);
  EXPECT_EQ(h.Call(get).get_job().last_metrics_size(), 0);
  // A deletion the other node was never asked for: the checkpoint stays DELETING.
  h.ReportCheckpoint(owner, job, 10);
  h.ReportCheckpoint(owner, job, 20);
  h.ReportCheckpointDeleted(other, job, 10, true);
  pb::ClientRequest list;
  list.mutable_list_checkpoints()->set_job_id(job);
  EXPECT_EQ(h.Call(list).list_checkpoints().checkpoints(0).state(), pb::CHECKPOINT_DELETING);
  // A LogChunk for a fetch sent to the owner, from the other node: ignored; the owner's answer goes through.
  pb::ClientRequest logs;
  logs.mutable_get_logs()->set_job_id(job);
  logs.set_request_id(77);
  logs.set_token(h.admin_token());
  h.core().OnClientRequest("client-logs", logs);
  h.Round();
  uint64_t fetch_id = 0;
  for (const auto& m : h.AgentMessages(owner)) {
    if (m.has_fetch_logs()) fetch_id = m.fetch_logs().request_id();
  }
  ASSERT_NE(fetch_id, 0u);
  pb::AgentToCoordinator chunk;
  chunk.mutable_log_chunk()->set_request_id(fetch_id);
  chunk.mutable_log_chunk()->set_data("forged");
  h.core().OnAgentMessage(Harness::Peer(other), chunk);
  h.Round();
  EXPECT_TRUE(h.sent().empty()) << "the client is not answered with the forged chunk";
  chunk.mutable_log_chunk()->set_data("real");
  h.core().OnAgentMessage(Harness::Peer(owner), chunk);
  h.Round();
  ASSERT_EQ(h.sent().size(), 1u);
  EXPECT_EQ(std::get<pb::ClientReply>(h.sent()[0].message).get_logs().data(), "real");
}

TEST(NodeIdentity, SeqFarAheadIsRefusedAndLaterRealReportsStillApply) {
  Harness h;
  h.Register("n1", 1);
  const std::string job = h.Submit(BaseSpec());
  pb::TaskStatus running = Harness::Task(h.Job(job), pb::TASK_RUNNING);
  h.ReportTask("n1", running, std::numeric_limits<uint64_t>::max());
  auto msgs = h.AgentMessages("n1");
  ASSERT_EQ(msgs.size(), 1u);
  ASSERT_TRUE(msgs[0].has_error());
  EXPECT_EQ(msgs[0].error().code(), pb::INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(msgs[0].error().message(), "18446744073709551615")) << msgs[0].error().message();
  EXPECT_EQ(h.State(job), pb::JOB_STARTING) << "not applied";
  h.ReportTask("n1", running, 1);
  EXPECT_EQ(h.Acks("n1"), std::vector<uint64_t>{1});
  EXPECT_EQ(h.State(job), pb::JOB_RUNNING);
}

TEST(NodeBounds, HugeSlotCountsAreRefusedAndSubmitKeepsWorking) {
  Harness h;
  for (uint32_t slots : {4294967295u, 2147483648u, 1025u}) {
    h.Register("big", slots);
    pb::RegisterReply reply = h.LastRegisterReply("big");
    EXPECT_FALSE(reply.accepted());
    EXPECT_EQ(reply.error().code(), pb::INVALID_ARGUMENT);
    EXPECT_TRUE(Contains(reply.error().message(), std::to_string(slots))) << reply.error().message();
    EXPECT_TRUE(Contains(reply.error().message(), "max_slots_per_node")) << reply.error().message();
  }
  EXPECT_EQ(h.core().FindNode("big"), nullptr);
  h.Register("n1", 2);
  h.Submit(BaseSpec());
  h.Restart();
  h.Submit(BaseSpec());
}

TEST(NodeBounds, RecoverSkipsAStoredNodeOutOfBoundsInsteadOfFailingEverySubmit) {
  Harness h;
  pb::NodeRecord bad;
  bad.set_node_id("legacy");
  bad.mutable_inventory()->set_slots(2147483648u);
  bad.set_state(pb::NODE_UP);
  storage::WriteBatch batch;
  batch.Put(storage::Table::kNodes, "legacy", bad);
  ASSERT_TRUE(h.store().Commit(batch).ok());
  h.Restart();
  EXPECT_EQ(h.core().FindNode("legacy"), nullptr);
  h.Register("n1", 2);
  const std::string job = h.Submit(BaseSpec());
  EXPECT_EQ(h.State(job), pb::JOB_STARTING);
}

TEST(NodeBounds, NodeIdLabelsGpusAndNodeCountAreBounded) {
  CoordinatorOptions options;
  options.agent_limits.max_nodes = 1;
  Harness h(options);
  struct Case {
    std::string node;
    std::function<void(pb::RegisterRequest*)> edit;
    std::string named;
  };
  const std::vector<Case> cases = {
      {std::string(200, 'a'), [](pb::RegisterRequest*) {}, "max_node_id_length"},
      {"bad/id", [](pb::RegisterRequest*) {}, "letters, digits"},
      {"n1",
       [](pb::RegisterRequest* r) {
         for (int i = 0; i < 65; ++i) r->mutable_inventory()->add_gpus();
       },
       "max_gpus_per_node"},
      {"n1",
       [](pb::RegisterRequest* r) {
         for (int i = 0; i < 65; ++i)
           (*r->mutable_inventory()->mutable_labels())[std::string("k").append(std::to_string(i))] =
               std::string(1, 'v');
       },
       "max_labels_per_node"},
      {"n1", [](pb::RegisterRequest* r) { (*r->mutable_inventory()->mutable_labels())["k"] = std::string(300, 'v'); },
       "label 'k'"},
      {"n1", [](pb::RegisterRequest* r) { r->mutable_inventory()->set_hostname(std::string(2000, 'h')); }, "hostname"},
  };
  for (const auto& c : cases) {
    pb::AgentToCoordinator msg = Harness::RegisterMessage(c.node, 1);
    msg.mutable_register_()->set_join_token(h.JoinToken());
    c.edit(msg.mutable_register_());
    h.SendRegister(c.node, msg);
    pb::RegisterReply reply = h.LastRegisterReply(c.node);
    EXPECT_FALSE(reply.accepted()) << c.named;
    EXPECT_TRUE(Contains(reply.error().message(), c.named)) << reply.error().message();
  }
  EXPECT_TRUE(h.core().Nodes().empty());
  h.Register("n1", 1);
  h.Register("n2", 1);
  EXPECT_EQ(h.LastRegisterReply("n2").error().code(), pb::RESOURCE_EXHAUSTED);
  EXPECT_TRUE(Contains(h.LastRegisterReply("n2").error().message(), "max_nodes"));
  EXPECT_EQ(h.core().Nodes().size(), 1u);
}

TEST(NodeRemoval, RefusedWhileTasksRunUnlessForcedThenTheNodeMustJoinAgain) {
  Harness h;
  h.Register("n1", 1);
  const std::string job = h.Submit(BaseSpec("max_attempts: 1\n"));
  h.ReportAll(job, pb::TASK_RUNNING);
  pb::ClientRequest remove;
  remove.mutable_remove_node()->set_node_id("n1");
  pb::ClientReply refused = h.Call(remove);
  EXPECT_EQ(refused.error().code(), pb::FAILED_PRECONDITION);
  EXPECT_TRUE(Contains(refused.error().message(), job)) << refused.error().message();
  EXPECT_TRUE(Contains(refused.error().message(), "--force")) << refused.error().message();
  EXPECT_NE(h.core().FindNode("n1"), nullptr);
  remove.mutable_remove_node()->set_force(true);
  pb::ClientReply removed = h.Call(remove);
  ASSERT_EQ(removed.error().code(), pb::OK) << removed.error().message();
  EXPECT_EQ(removed.remove_node().tasks_lost(), 1u);
  EXPECT_EQ(h.core().FindNode("n1"), nullptr);
  // A removed node is an infrastructure fault: the job waits for another node, no attempt used.
  EXPECT_EQ(h.State(job), pb::JOB_PENDING);
  EXPECT_EQ(h.Job(job).infra_restarts(), 1u);
  // Its old credential is void now; the join token admits it again (a new credential).
  const std::string old = h.Credential("n1");
  pb::AgentToCoordinator msg = Harness::RegisterMessage("n1", 1);
  msg.mutable_register_()->set_node_credential(old);
  h.SendRegister("n1", msg);
  EXPECT_EQ(h.LastRegisterReply("n1").error().code(), pb::UNAUTHENTICATED);
  EXPECT_TRUE(Contains(h.LastRegisterReply("n1").error().message(), "not known"));
  h.Restart();
  EXPECT_EQ(h.core().FindNode("n1"), nullptr) << "the removal is durable";
  h.ForgetCredential("n1");
  h.Register("n1", 1);
  EXPECT_TRUE(h.LastRegisterReply("n1").accepted());
  EXPECT_NE(h.Credential("n1"), old);
  pb::ClientRequest unknown;
  unknown.mutable_remove_node()->set_node_id("ghost");
  EXPECT_EQ(h.Call(unknown).error().code(), pb::NOT_FOUND);
}

TEST(JoinToken, BootstrapStoresTheGivenTokenOnAFreshClusterOnly) {
  Harness h;
  const std::string token = FormatJoinToken(RandomHex(kJoinTokenIdBytes), RandomHex(kSecretBytes));
  auto stored = h.core().BootstrapJoinToken(token);
  ASSERT_TRUE(stored.ok()) << stored.status().ToString();
  EXPECT_TRUE(*stored);
  pb::AgentToCoordinator msg = Harness::RegisterMessage("n1", 1);
  msg.mutable_register_()->set_join_token(token);
  h.SendRegister("n1", msg);
  EXPECT_TRUE(h.LastRegisterReply("n1").accepted()) << h.LastRegisterReply("n1").error().message();
  h.Restart();
  auto again = h.core().BootstrapJoinToken(FormatJoinToken(RandomHex(kJoinTokenIdBytes), RandomHex(kSecretBytes)));
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(*again) << "a cluster with nodes never mints a bootstrap token";
}

}  // namespace
}  // namespace anneal::coordinator
