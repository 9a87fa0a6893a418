// Request/reply against a scripted coordinator: what each command sends, what it prints (tables and --json),
// and how errors from the coordinator become exit codes.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli_harness.h"

namespace anneal::cli::testing {
namespace {

const std::string kExamples = std::string(ANNEAL_SOURCE_DIR) + "/examples";

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::stringstream in(text);
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

pb::JobRecord Job(const std::string& id, pb::JobState state) {
  pb::JobRecord job;
  job.set_job_id(id);
  job.set_name("demo-" + id);
  job.set_state(state);
  job.set_attempt(1);
  job.set_max_attempts(3);
  job.mutable_resources()->set_nodes(1);
  job.mutable_resources()->set_gpus_per_node(2);
  job.mutable_resources()->set_world_size(2);
  job.mutable_resources()->set_tensor_parallel(1);
  job.mutable_resources()->set_pipeline_parallel(1);
  job.mutable_resources()->set_data_parallel(2);
  job.set_output_dir("/out/" + id);
  return job;
}

TEST(CliCoordinator, SubmitSendsTheFileTextOverridesAndTokenAndPrintsTheJobId) {
  TempDir home;
  FakeCoordinator coordinator([](const pb::ClientRequest&) {
    pb::ClientReply reply;
    reply.mutable_submit()->set_job_id("j-000042");
    return reply;
  });
  const std::string spec = kExamples + "/tiny_cpu_lora.yaml";
  RunResult r = RunAnneal({"--coordinator", coordinator.address(), "--token", "s3cret", "submit", spec, "--set",
                           "lora_rank=16", "--set", "train.learning_rate=3e-4", "--name", "tiny"},
                          home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "j-000042\n");
  auto requests = coordinator.requests();
  ASSERT_EQ(requests.size(), 1u);
  const pb::ClientRequest& req = requests[0];
  EXPECT_EQ(req.token(), "s3cret");
  ASSERT_TRUE(req.has_submit());
  EXPECT_EQ(req.submit().spec_yaml(), ReadFile(spec));
  // The user's overrides first, then the spec's relative paths resolved against the CLI's working directory
  // (agents run elsewhere), then the bucket sizes, the offload and the ZeRO stage (a deepspeed JSON is read by
  // the CLI, not the coordinator).
  ASSERT_GE(req.submit().overrides_size(), 4);
  EXPECT_EQ(req.submit().overrides(0), "lora_rank=16");
  EXPECT_EQ(req.submit().overrides(1), "train.learning_rate=3e-4");
  const int last = req.submit().overrides_size() - 1;
  EXPECT_EQ(req.submit().overrides(last), "resources.zero_stage=0");
  EXPECT_EQ(req.submit().overrides(last - 1), "resources.offload=none");
  EXPECT_EQ(req.submit().overrides(last - 2), "resources.gather_bucket_size=0");  // no deepspeed: ddp_bucket_cap_mb
  EXPECT_EQ(req.submit().overrides(last - 3), "resources.reduce_bucket_size=0");
  bool dataset_dir_resolved = false;
  for (int i = 2; i < last - 3; ++i) {
    const std::string& ov = req.submit().overrides(i);
    const auto eq = ov.find('=');
    ASSERT_NE(eq, std::string::npos) << ov;
    EXPECT_EQ(ov[eq + 1], '/') << "not an absolute path: " << ov;
    if (ov.rfind("data.dataset_dir=", 0) == 0) dataset_dir_resolved = true;
  }
  EXPECT_TRUE(dataset_dir_resolved) << "the example's relative dataset_dir was not resolved";
  EXPECT_EQ(req.submit().name(), "tiny");

  RunResult j = RunAnneal({"--coordinator", coordinator.address(), "--json", "submit", spec}, home.path());
  ASSERT_EQ(j.exit_code, 0) << j.err;
  auto parsed = nlohmann::json::parse(j.out);
  EXPECT_EQ(parsed["job_id"], "j-000042");
}

TEST(CliCoordinator, SubmitSendsTheZeroStageOfTheDeepSpeedConfigItRead) {
  TempDir home;
  FakeCoordinator coordinator([](const pb::ClientRequest&) {
    pb::ClientReply reply;
    reply.mutable_submit()->set_job_id("j-1");
    return reply;
  });
  const std::string ds = home.Write("ds_z1.json", R"({"zero_optimization": {"stage": 1}})");
  const std::string spec =
      home.Write("job.yaml", "model_name_or_path: /m\ndataset: d\noutput_dir: /o\ndeepspeed: " + ds + "\n");
  RunResult r = RunAnneal({"--coordinator", coordinator.address(), "submit", spec}, home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto requests = coordinator.requests();
  ASSERT_EQ(requests.size(), 1u);
  const auto& overrides = requests[0].submit().overrides();
  ASSERT_GE(overrides.size(), 1);
  // The coordinator (elsewhere, without the file) gets the stage as an override that replaces the deepspeed key.
  EXPECT_EQ(overrides[overrides.size() - 1], "resources.zero_stage=1");
  EXPECT_EQ(overrides[overrides.size() - 2], "resources.offload=none");
  // And its bucket sizes (DeepSpeed's defaults, in elements, when the file names none).
  EXPECT_EQ(overrides[overrides.size() - 3], "resources.gather_bucket_size=500000000");
  EXPECT_EQ(overrides[overrides.size() - 4], "resources.reduce_bucket_size=500000000");
}

TEST(CliCoordinator, SubmitPrintsLocalWarnings) {
  TempDir home;
  FakeCoordinator coordinator([](const pb::ClientRequest&) {
    pb::ClientReply reply;
    reply.mutable_submit()->set_job_id("j-1");
    return reply;
  });
  RunResult r =
      RunAnneal({"--coordinator", coordinator.address(), "submit", kExamples + "/llamafactory/llama3_lora_sft.yaml"},
                home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(Contains(r.err, "anneal submit: warning: key 'trust_remote_code' at ")) << r.err;
}

TEST(CliCoordinator, CoordinatorRejectionOfASpecExitsTwo) {
  TempDir home;
  FakeCoordinator coordinator([](const pb::ClientRequest&) {
    return ErrorReply(pb::INVALID_ARGUMENT, "resources.nodes is 4 but the cluster has only 1 node(s)");
  });
  RunResult r =
      RunAnneal({"--coordinator", coordinator.address(), "submit", kExamples + "/tiny_cpu_lora.yaml"}, home.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "anneal submit: resources.nodes is 4 but the cluster has only 1 node(s)\n");
}

TEST(CliCoordinator, WrongTokenExitsFourWithTheMessage) {
  TempDir home;
  FakeCoordinator coordinator([](const pb::ClientRequest& req) {
    if (req.token() != "right") {
      return ErrorReply(pb::UNAUTHENTICATED, "the request's token is not valid for this coordinator");
    }
    pb::ClientReply reply;
    reply.mutable_list_jobs();
    return reply;
  });
  RunResult bad = RunAnneal({"--coordinator", coordinator.address(), "--token", "wrong", "ls"}, home.path());
  EXPECT_EQ(bad.exit_code, 4);
  EXPECT_EQ(bad.err, "anneal ls: UNAUTHENTICATED: the request's token is not valid for this coordinator\n");
  EXPECT_TRUE(bad.out.empty());
  RunResult good = RunAnneal({"--coordinator", coordinator.address(), "--token", "right", "ls"}, home.path());
  EXPECT_EQ(good.exit_code, 0) << good.err;
}

TEST(CliCoordinator, TokenAndAddressPrecedenceIsFlagThenEnvThenConfig) {
  TempDir home;
  FakeCoordinator coordinator([](const pb::ClientRequest&) {
    pb::ClientReply reply;
    reply.mutable_list_nodes();
    return reply;
  });
  home.Write(".anneal/config", "coordinator: " + coordinator.address() + "\ntoken: from-file\n");
  ASSERT_EQ(RunAnneal({"nodes"}, home.path()).exit_code, 0);
  ASSERT_EQ(RunAnneal({"nodes"}, home.path(), {{"ANNEAL_TOKEN", "from-env"}}).exit_code, 0);
  ASSERT_EQ(RunAnneal({"--token", "from-flag", "nodes"}, home.path(), {{"ANNEAL_TOKEN", "from-env"}}).exit_code, 0);
  auto requests = coordinator.requests();
  ASSERT_EQ(requests.size(), 3u);
  EXPECT_EQ(requests[0].token(), "from-file");
  EXPECT_EQ(requests[1].token(), "from-env");
  EXPECT_EQ(requests[2].token(), "from-flag");

  // The environment's address beats the file's; the flag beats both.
  const std::string dead = DeadAddress();
  RunResult env = RunAnneal({"--timeout", "0.5", "nodes"}, home.path(), {{"ANNEAL_COORDINATOR", dead}});
  EXPECT_EQ(env.exit_code, 3);
  EXPECT_TRUE(Contains(env.err, dead)) << env.err;
  RunResult flag =
      RunAnneal({"--coordinator", coordinator.address(), "nodes"}, home.path(), {{"ANNEAL_COORDINATOR", dead}});
  EXPECT_EQ(flag.exit_code, 0) << flag.err;
}

TEST(CliCoordinator, LsPrintsAnAlignedTableAndJson) {
  TempDir home;
  FakeCoordinator coordinator([](const pb::ClientRequest&) {
    pb::ClientReply reply;
    *reply.mutable_list_jobs()->add_jobs() = Job("j-1", pb::JOB_RUNNING);
    pb::JobRecord failed = Job("j-000002", pb::JOB_FAILED);
    failed.set_result("rank 1 exited with status 1");
    *reply.mutable_list_jobs()->add_jobs() = failed;
    return reply;
  });
  RunResult r = RunAnneal({"--coordinator", coordinator.address(), "ls", "--state", "running,failed"}, home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 3u) << r.out;
  EXPECT_EQ(lines[0].rfind("JOB", 0), 0u);
  const size_t state_col = lines[0].find("STATE");
  ASSERT_NE(state_col, std::string::npos);
  EXPECT_EQ(lines[1].find("RUNNING"), state_col) << r.out;
  EXPECT_EQ(lines[2].find("FAILED"), state_col) << r.out;
  EXPECT_TRUE(Contains(lines[1], "1/3")) << r.out;
  EXPECT_TRUE(Contains(lines[1], "1x2")) << r.out;
  EXPECT_TRUE(Contains(lines[2], "rank 1 exited with status 1")) << r.out;
  auto requests = coordinator.requests();
  ASSERT_EQ(requests.size(), 1u);
  ASSERT_EQ(requests[0].list_jobs().states_size(), 2);
  EXPECT_EQ(requests[0].list_jobs().states(0), pb::JOB_RUNNING);
  EXPECT_EQ(requests[0].list_jobs().states(1), pb::JOB_FAILED);

  RunResult j = RunAnneal({"--coordinator", coordinator.address(), "--json", "ls"}, home.path());
  ASSERT_EQ(j.exit_code, 0) << j.err;
  auto parsed = nlohmann::json::parse(j.out);
  ASSERT_EQ(parsed.size(), 2u);
  EXPECT_EQ(parsed[0]["job_id"], "j-1");
  EXPECT_EQ(parsed[0]["state"], "JOB_RUNNING");
  EXPECT_EQ(parsed[1]["result"], "rank 1 exited with status 1");
}

TEST(CliCoordinator, ShowPrintsSummaryPlacementMetricsCheckpointsAndEvents) {
  TempDir home;
  FakeCoordinator coordinator([](const pb::ClientRequest& req) {
    if (req.get_job().job_id() != "j-7")
      return ErrorReply(pb::NOT_FOUND, "job " + req.get_job().job_id() + " not found");
    pb::ClientReply reply;
    auto* r = reply.mutable_get_job();
    *r->mutable_job() = Job("j-7", pb::JOB_RUNNING);
    r->mutable_job()->set_finished_at_ms(1'700'000'000'000);  // finished without ever starting
    r->mutable_job()->set_infra_restarts(2);
    r->mutable_job()->set_max_infra_restarts(10);
    r->mutable_job()->set_spec_yaml("model_name_or_path: /models/tiny\ndataset: alpaca\noutput_dir: /out/j-7\n");
    auto* node = r->mutable_job()->mutable_placement()->add_nodes();
    node->set_node_id("node-a");
    node->add_ranks()->set_global_rank(0);
    node->add_ranks()->set_global_rank(1);
    auto* m = r->add_last_metrics();
    m->set_step(40);
    m->set_total_steps(100);
    (*m->mutable_values())["loss"] = 1.25;
    auto* cp = r->add_checkpoints();
    cp->set_step(20);
    cp->set_state(pb::CHECKPOINT_COMMITTED);
    cp->set_path("/out/j-7/checkpoint-20");
    cp->add_files()->set_size_bytes(2048);
    auto* e = r->add_events();
    e->set_seq(1);
    e->set_kind("state");
    e->set_from_state(pb::JOB_PENDING);
    e->set_to_state(pb::JOB_STARTING);
    e->set_message("placed on node-a");
    return reply;
  });
  RunResult r = RunAnneal({"--coordinator", coordinator.address(), "show", "j-7"}, home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* text :
       {"Job:         j-7  (demo-j-7)", "State:       RUNNING  attempt 1/3", "Model:       /models/tiny",
        "Kind:        train / lora (rank 8, alpha 16)", "node-a ranks 0,1", "step 40/100", "loss=1.25",
        "Checkpoints:", "/out/j-7/checkpoint-20", "2.0 KiB", "Events:", "PENDING->STARTING", "placed on node-a",
        "(never started)", "Failed:      no attempt failed", "Infrastructure restarts: 2 of 10"}) {
    EXPECT_TRUE(Contains(r.out, text)) << "missing '" << text << "' in:\n" << r.out;
  }
  RunResult missing = RunAnneal({"--coordinator", coordinator.address(), "show", "j-9"}, home.path());
  EXPECT_EQ(missing.exit_code, 4);
  EXPECT_EQ(missing.err, "anneal show: job j-9 not found\n");
}

pb::JobEvent StateEvent(uint64_t seq, uint32_t attempt, pb::JobState from, pb::JobState to, const std::string& why) {
  pb::JobEvent e;
  e.set_seq(seq);
  e.set_attempt(attempt);
  e.set_kind("state");
  e.set_from_state(from);
  e.set_to_state(to);
  e.set_message(why);
  return e;
}

TEST(CliCoordinator, ShowCountsFailedAttemptsOverEveryPageOfEvents) {
  TempDir home;
  // GetJob answers with the first 3 of 6 events (as a coordinator with max_watch_items 3 would); the failure
  // is on the second page, which only an immediate WatchJob from seq 3 returns.
  FakeCoordinator coordinator([](const pb::ClientRequest& req) {
    pb::ClientReply reply;
    if (req.has_get_job()) {
      auto* r = reply.mutable_get_job();
      *r->mutable_job() = Job("j-3", pb::JOB_SUCCEEDED);
      r->mutable_job()->set_attempt(2);
      r->mutable_job()->set_next_event_seq(7);
      *r->add_events() = StateEvent(1, 0, pb::JOB_STATE_UNSPECIFIED, pb::JOB_PENDING, "submitted");
      *r->add_events() = StateEvent(2, 1, pb::JOB_PENDING, pb::JOB_STARTING, "placed");
      *r->add_events() = StateEvent(3, 1, pb::JOB_STARTING, pb::JOB_RUNNING, "all 2 task(s) running");
    } else if (req.has_watch() && req.watch().after_event_seq() == 3 && req.watch().timeout_ms() == 0) {
      auto* w = reply.mutable_watch();
      *w->add_events() = StateEvent(4, 1, pb::JOB_RUNNING, pb::JOB_RESTARTING, "rank 0 exited with code 1: boom");
      *w->add_events() = StateEvent(5, 1, pb::JOB_RESTARTING, pb::JOB_PENDING, "retrying");
      *w->add_events() = StateEvent(6, 2, pb::JOB_RUNNING, pb::JOB_SUCCEEDED, "every task exited 0");
    } else {
      return ErrorReply(pb::INVALID_ARGUMENT, "unexpected request");
    }
    return reply;
  });
  RunResult r = RunAnneal({"--coordinator", coordinator.address(), "show", "j-3"}, home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(Contains(r.out, "Failed:      1 attempt(s): attempt 1: rank 0 exited with code 1: boom\n")) << r.out;
  EXPECT_TRUE(Contains(r.out, "every task exited 0")) << "the second page of events is shown:\n" << r.out;

  RunResult j = RunAnneal({"--coordinator", coordinator.address(), "--json", "show", "j-3"}, home.path());
  ASSERT_EQ(j.exit_code, 0) << j.err;
  auto parsed = nlohmann::json::parse(j.out);
  ASSERT_EQ(parsed["failed_attempts"].size(), 1u) << j.out;
  EXPECT_EQ(parsed["failed_attempts"][0]["attempt"], 1);
  EXPECT_EQ(parsed["failed_attempts"][0]["reason"], "rank 0 exited with code 1: boom");
  EXPECT_EQ(parsed["events"].size(), 6u);
}

TEST(CliCoordinator, NodesDrainCancelAndCheckpoints) {
  TempDir home;
  FakeCoordinator coordinator([](const pb::ClientRequest& req) {
    pb::ClientReply reply;
    if (req.has_list_nodes()) {
      auto* n = reply.mutable_list_nodes()->add_nodes();
      n->set_node_id("local-0");
      n->set_state(pb::NODE_UP);
      n->mutable_inventory()->set_slots(2);
      n->set_agent_version("0.1.0");
    } else if (req.has_drain()) {
      reply.mutable_drain()->set_state(req.drain().undrain() ? pb::NODE_UP : pb::NODE_DRAINING);
    } else if (req.has_cancel()) {
      reply.mutable_cancel()->set_state(pb::JOB_CANCELLING);
    } else if (req.has_list_checkpoints()) {
      auto* cp = reply.mutable_list_checkpoints()->add_checkpoints();
      cp->set_step(10);
      cp->set_state(pb::CHECKPOINT_COMMITTED);
      cp->set_path("/out/checkpoint-10");
    }
    return reply;
  });
  const std::string addr = coordinator.address();
  RunResult nodes = RunAnneal({"--coordinator", addr, "nodes"}, home.path());
  ASSERT_EQ(nodes.exit_code, 0) << nodes.err;
  auto lines = Lines(nodes.out);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0].rfind("NODE", 0), 0u);
  EXPECT_EQ(lines[1].rfind("local-0", 0), 0u);
  EXPECT_EQ(lines[1].find("UP"), lines[0].find("STATE"));
  RunResult drain = RunAnneal({"--coordinator", addr, "drain", "local-0"}, home.path());
  EXPECT_EQ(drain.out, "local-0: DRAINING\n");
  RunResult cancel = RunAnneal({"--coordinator", addr, "--json", "cancel", "j-3"}, home.path());
  EXPECT_EQ(nlohmann::json::parse(cancel.out)["state"], "CANCELLING");
  RunResult cps = RunAnneal({"--coordinator", addr, "checkpoints", "j-3"}, home.path());
  EXPECT_TRUE(Contains(cps.out, "/out/checkpoint-10")) << cps.out;
  EXPECT_TRUE(Contains(cps.out, "COMMITTED")) << cps.out;
  RunResult undrain = RunAnneal({"--coordinator", addr, "drain", "--undrain", "local-0"}, home.path());
  EXPECT_EQ(undrain.out, "local-0: UP\n");
  auto requests = coordinator.requests();
  ASSERT_EQ(requests.size(), 5u);
  EXPECT_EQ(requests[1].drain().node_id(), "local-0");
  EXPECT_FALSE(requests[1].drain().undrain());
  EXPECT_EQ(requests[2].cancel().job_id(), "j-3");
  EXPECT_EQ(requests[3].list_checkpoints().job_id(), "j-3");
  EXPECT_TRUE(requests[4].drain().undrain());
}

TEST(CliCoordinator, LogsReadsChunksUntilEof) {
  TempDir home;
  FakeCoordinator coordinator([](const pb::ClientRequest& req) {
    pb::ClientReply reply;
    auto* logs = reply.mutable_get_logs();
    if (req.get_logs().offset() == 0) {
      logs->set_data("step 1 loss 2.0\n");
      logs->set_next_offset(16);
    } else {
      logs->set_data("done\n");
      logs->set_next_offset(21);
      logs->set_eof(true);
    }
    return reply;
  });
  RunResult r = RunAnneal({"--coordinator", coordinator.address(), "logs", "j-1", "--rank", "1"}, home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "step 1 loss 2.0\ndone\n");
  auto requests = coordinator.requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[0].get_logs().rank(), 1u);
  EXPECT_EQ(requests[1].get_logs().offset(), 16u);
}

// Logs that have one line, then nothing new once, then a last line and the end.
FakeCoordinator::Handler GrowingLog() {
  auto empty_replies = std::make_shared<int>(0);
  return [empty_replies](const pb::ClientRequest& req) {
    pb::ClientReply reply;
    auto* logs = reply.mutable_get_logs();
    if (req.get_logs().offset() == 0) {
      logs->set_data("first\n");
      logs->set_next_offset(6);
    } else if ((*empty_replies)++ == 0) {
      logs->set_next_offset(6);  // nothing new yet, not the end
    } else {
      logs->set_data("second\n");
      logs->set_next_offset(13);
      logs->set_eof(true);
    }
    return reply;
  };
}

TEST(CliCoordinator, LogsFollowWaitsForMoreOutput) {
  TempDir home;
  FakeCoordinator once_coordinator(GrowingLog());
  RunResult once = RunAnneal({"--coordinator", once_coordinator.address(), "logs", "j-1"}, home.path());
  EXPECT_EQ(once.exit_code, 0) << once.err;
  EXPECT_EQ(once.out, "first\n");  // without -f it stops at the first empty chunk
  FakeCoordinator follow_coordinator(GrowingLog());
  RunResult follow = RunAnneal({"--coordinator", follow_coordinator.address(), "logs", "j-1", "-f"}, home.path());
  EXPECT_EQ(follow.exit_code, 0) << follow.err;
  EXPECT_EQ(follow.out, "first\nsecond\n");
  EXPECT_EQ(follow_coordinator.requests().size(), 3u);
}

TEST(CliCoordinator, AReplyWithTheWrongBodyIsAnError) {
  TempDir home;
  FakeCoordinator coordinator([](const pb::ClientRequest&) {
    pb::ClientReply reply;
    reply.mutable_list_nodes();
    return reply;
  });
  RunResult r = RunAnneal({"--coordinator", coordinator.address(), "cancel", "j-1"}, home.path());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(Contains(r.err, "anneal cancel: coordinator at " + coordinator.address() + " answered request")) << r.err;
}

TEST(CliCoordinator, GlobalFlagsMayFollowTheCommand) {
  TempDir home;
  FakeCoordinator coordinator([](const pb::ClientRequest&) {
    pb::ClientReply reply;
    reply.mutable_submit()->set_job_id("j-2");
    return reply;
  });
  RunResult r = RunAnneal({"submit", "--set", "seed=3", kExamples + "/tiny_cpu_lora.yaml", "--json", "--coordinator",
                           coordinator.address()},
                          home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["job_id"], "j-2");
  ASSERT_EQ(coordinator.requests().size(), 1u);
  EXPECT_EQ(coordinator.requests()[0].submit().overrides(0), "seed=3");
}

// A watch that sees two metric points while running, then the final state.
FakeCoordinator::Handler WatchScript(pb::JobState final_state, const std::string& result) {
  auto calls = std::make_shared<int>(0);
  return [calls, final_state, result](const pb::ClientRequest& req) {
    pb::ClientReply reply;
    auto* w = reply.mutable_watch();
    if ((*calls)++ == 0) {
      *w->mutable_job() = Job(req.watch().job_id(), pb::JOB_RUNNING);
      auto* e = w->add_events();
      e->set_seq(1);
      e->set_to_state(pb::JOB_RUNNING);
      e->set_attempt(1);
      e->set_message("all ranks up");
      auto* warn = w->add_events();
      warn->set_seq(1);
      warn->set_kind("message");
      warn->set_from_state(pb::JOB_RUNNING);
      warn->set_to_state(pb::JOB_RUNNING);
      warn->set_attempt(1);
      warn->set_message("rank 0: tokenizer has no chat template");
      for (int i = 1; i <= 2; ++i) {
        auto* m = w->add_metrics();
        m->set_step(10 * i);
        m->set_total_steps(100);
        m->set_time_ms(1'000'000 + 1000 * i);
        (*m->mutable_values())["loss"] = 3.0 - i;
        (*m->mutable_values())["tokens_per_s"] = 5100;
      }
    } else {
      pb::JobRecord job = Job(req.watch().job_id(), final_state);
      job.set_result(result);
      *w->mutable_job() = job;
      auto* e = w->add_events();
      e->set_seq(2);
      e->set_to_state(final_state);
      e->set_message(result);
    }
    return reply;
  };
}

TEST(CliCoordinator, WatchFollowsToSuccessAndExitsZero) {
  TempDir home;
  FakeCoordinator coordinator(WatchScript(pb::JOB_SUCCEEDED, "adapter written to /out/j-5"));
  RunResult r = RunAnneal({"--coordinator", coordinator.address(), "watch", "j-5"}, home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* text :
       {"RUNNING  attempt 1: all ranks up", "message  attempt 1: rank 0: tokenizer has no chat template",
        "step 10/100  loss 2", "step 20/100  loss 1", "5100 tok/s", "ETA 8s",
        "j-5 SUCCEEDED: adapter written to /out/j-5 (output: /out/j-5)"}) {
    EXPECT_TRUE(Contains(r.out, text)) << "missing '" << text << "' in:\n" << r.out;
  }
  auto requests = coordinator.requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[0].watch().after_event_seq(), 0u);
  EXPECT_EQ(requests[1].watch().after_event_seq(), 1u);
  EXPECT_EQ(requests[1].watch().after_metric_step(), 20u);
  EXPECT_GT(requests[1].watch().timeout_ms(), 0u);
}

TEST(CliCoordinator, WatchWaitsForACoordinatorThatWentAwayAndGivesUpLater) {
  TempDir home;
  auto script = WatchScript(pb::JOB_SUCCEEDED, "done");
  auto calls = std::make_shared<int>(0);
  FakeCoordinator coordinator([script, calls](const pb::ClientRequest& req) {
    const int n = (*calls)++;
    if (n == 1 || n == 2) return DropReply();  // the coordinator is away for two polls
    return script(req);
  });
  RunResult r = RunAnneal({"--coordinator", coordinator.address(), "--timeout", "0.5", "watch", "j-5"}, home.path());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(Contains(r.err, "anneal watch: coordinator not reachable at " + coordinator.address())) << r.err;
  EXPECT_TRUE(Contains(r.err, "retrying for up to 60 s")) << r.err;
  EXPECT_TRUE(Contains(r.err, "anneal watch: reconnected to " + coordinator.address())) << r.err;
  EXPECT_TRUE(Contains(r.out, "j-5 SUCCEEDED: done")) << r.out;

  // Away for good: the watch gives up after --reconnect and exits 3.
  auto first = std::make_shared<bool>(true);
  FakeCoordinator gone([script = WatchScript(pb::JOB_SUCCEEDED, "done"), first](const pb::ClientRequest& req) {
    if (!*first) return DropReply();
    *first = false;
    return script(req);
  });
  RunResult g =
      RunAnneal({"--coordinator", gone.address(), "--timeout", "0.5", "watch", "j-5", "--reconnect", "1"}, home.path());
  EXPECT_EQ(g.exit_code, 3) << g.err;
  EXPECT_TRUE(Contains(g.err, "retrying for up to 1 s")) << g.err;
  EXPECT_LT(g.seconds, 8.0);
}

TEST(CliCoordinator, WatchOnATerminalRedrawsAProgressBar) {
  TempDir home;
  FakeCoordinator coordinator(WatchScript(pb::JOB_SUCCEEDED, "done"));
  RunResult r = RunAnnealInTerminal({"--coordinator", coordinator.address(), "watch", "j-5"}, home.path());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  // The bar of the latest point (20 of 100 steps: 6 of 30 cells), drawn in place, then cleared for the end line.
  EXPECT_TRUE(Contains(r.out, "\r\033[K[######........................] step 20/100  loss 1")) << r.out;
  EXPECT_TRUE(Contains(r.out, "ETA 8s\r\033[K")) << r.out;  // cleared before the next event line
  EXPECT_TRUE(Contains(r.out, "j-5 SUCCEEDED: done (output: /out/j-5)")) << r.out;
  EXPECT_FALSE(Contains(r.out, "step 10/100")) << "a terminal shows only the latest point:\n" << r.out;
}

TEST(CliCoordinator, WatchOfAFailedJobExitsOneAndJsonEndsWithTheFinalState) {
  TempDir home;
  FakeCoordinator coordinator(WatchScript(pb::JOB_FAILED, "rank 0 exited with status 1"));
  RunResult r = RunAnneal({"--coordinator", coordinator.address(), "--json", "watch", "j-6"}, home.path());
  EXPECT_EQ(r.exit_code, 1) << r.err;
  auto lines = Lines(r.out);
  ASSERT_GE(lines.size(), 4u) << r.out;
  auto last = nlohmann::json::parse(lines.back());
  EXPECT_EQ(last["type"], "final");
  EXPECT_EQ(last["state"], "FAILED");
  EXPECT_EQ(last["result"], "rank 0 exited with status 1");
  EXPECT_EQ(nlohmann::json::parse(lines[0])["type"], "event");
  EXPECT_EQ(nlohmann::json::parse(lines[2])["type"], "metric");
}

TEST(CliCoordinator, SubmitFollowWatchesTheNewJob) {
  TempDir home;
  auto watch = WatchScript(pb::JOB_SUCCEEDED, "done");
  FakeCoordinator coordinator([watch](const pb::ClientRequest& req) {
    if (req.has_submit()) {
      pb::ClientReply reply;
      reply.mutable_submit()->set_job_id("j-8");
      return reply;
    }
    return watch(req);
  });
  RunResult r = RunAnneal(
      {"--coordinator", coordinator.address(), "submit", kExamples + "/tiny_cpu_lora.yaml", "--follow"}, home.path());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("j-8\n", 0), 0u) << r.out;
  EXPECT_TRUE(Contains(r.out, "j-8 SUCCEEDED: done")) << r.out;
  auto requests = coordinator.requests();
  ASSERT_EQ(requests.size(), 3u);
  EXPECT_EQ(requests[1].watch().job_id(), "j-8");
}

}  // namespace
}  // namespace anneal::cli::testing
