// Stager (agent/stager.h) against a real TransferServer on loopback: a launch's inputs staged and its config
// rewritten to the local copies, checkpoint copies confined to the output directory and checked against the
// committed manifest, and a cancel that ends a staging stuck on an unreachable source.
#include "agent/stager.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "jobspec/jobspec.h"
#include "protocol/curve.h"
#include "transfer/client.h"
#include "transfer/manifest.h"
#include "transfer/server.h"
#include "transfer/ticket.h"

namespace anneal::agent {
namespace {

namespace fs = std::filesystem;

int64_t WallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void Write(const fs::path& p, const std::string& bytes) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << bytes;
}

std::string Read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

class StagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("anneal-stager-" + std::to_string(getpid()) + "-" + std::to_string(std::random_device{}()));
    fs::create_directories(dir_);
    auto keys = protocol::LoadOrCreateServerKeys((dir_ / "keys").string());
    ASSERT_TRUE(keys.ok()) << keys.status().ToString();
    transfer::ServerOptions options;
    options.bind_endpoint = "tcp://127.0.0.1:0";
    options.node_id = "src";
    options.signer_public_key = signer_.public_key();
    options.server_keys = *keys;
    auto server = transfer::TransferServer::Start(std::move(options));
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(*server);
    Write(dir_ / "models/tiny/config.json", "{\"hidden_size\": 8}");
    Write(dir_ / "models/tiny/model.safetensors", std::string(300000, 'w'));
    Write(dir_ / "data/train.json", "[]");
  }
  void TearDown() override {
    server_.reset();
    fs::remove_all(dir_);
  }

  pb::StageInput Input(const std::string& key, const fs::path& path, const std::string& dest = "") {
    pb::StageInput in;
    in.set_key(key);
    in.set_source_node("src");
    in.set_source_endpoint(server_->endpoint());
    in.set_source_public_key(server_->public_key());
    in.set_source_path(path.string());
    in.set_dest_path(dest);
    in.set_ticket(signer_.Sign({.node_id = "src",
                                .root = path.string(),
                                .expires_at_ms = WallMs() + 600000,
                                .purpose = "stage",
                                .job_id = "j1",
                                .team = ""}));
    return in;
  }
  pb::LaunchTask Launch() {
    pb::LaunchTask launch;
    launch.set_job_id("j1");
    launch.set_epoch(3);
    launch.set_attempt(1);
    launch.set_output_dir((dir_ / "out").string());
    launch.set_trainer_config_yaml(jobspec::ToYaml(*jobspec::ParseJobSpec(
        "model_name_or_path: /nowhere/model\ndataset: train\ndataset_dir: /nowhere/data\noutput_dir: " +
            (dir_ / "out").string() + "\n",
        "t")));
    launch.add_ranks()->set_global_rank(0);
    return launch;
  }
  Stager MakeStager(int64_t timeout_ms = 30000, const std::string& node_id = "dst") {
    StagerOptions options;
    options.node_id = node_id;
    options.store_dir = (dir_ / "store").string();
    options.request_timeout_ms = timeout_ms;
    return Stager(io_, std::move(options));
  }
  // Starts the staging of `launch` and runs the loop until its result arrives.
  StatusOr<pb::LaunchTask> StageAndWait(Stager& stager, const pb::LaunchTask& launch) {
    bool done = false;
    StatusOr<pb::LaunchTask> result = InternalError("not run");
    stager.Start(launch, [&](StatusOr<pb::LaunchTask> r) {
      result = std::move(r);
      done = true;
    });
    RunUntil(done);
    return result;
  }
  // Runs the loop until `done` is set (at most 20 s).
  void RunUntil(const bool& done) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!done && std::chrono::steady_clock::now() < until) {
      io_.restart();
      io_.run_for(std::chrono::milliseconds(20));
    }
    ASSERT_TRUE(done) << "the stager did not finish within 20 s";
  }

  fs::path dir_;
  transfer::TicketSigner signer_ = transfer::TicketSigner::Generate();
  std::unique_ptr<transfer::TransferServer> server_;
  boost::asio::io_context io_;
};

TEST(RewriteStagedPaths, PointsEachStagedKeyAtItsLocalCopy) {
  const std::string yaml = jobspec::ToYaml(*jobspec::ParseJobSpec(
      "model_name_or_path: /src/model\ndataset: a\ndataset_dir: /src/data\noutput_dir: /out/x\n", "t"));
  auto rewritten = RewriteStagedPaths(yaml, {{"model.model_name_or_path", "/cache/m"}, {"data.dataset_dir", "/c/d"}});
  ASSERT_TRUE(rewritten.ok()) << rewritten.status().ToString();
  auto spec = jobspec::ParseJobSpec(*rewritten, "t");
  ASSERT_TRUE(spec.ok());
  EXPECT_EQ(spec->model.model_name_or_path, "/cache/m");
  EXPECT_EQ(spec->data.dataset_dir, "/c/d");
  EXPECT_EQ(spec->train.output_dir, "/out/x");
  EXPECT_FALSE(RewriteStagedPaths(yaml, {{"train.output_dir", "/x"}}).ok());
}

TEST(RankCommandArgs, ResumesWhatTheCoordinatorNamesAndStartsLaterAttemptsOver) {
  pb::LaunchTask launch;
  launch.set_kind(pb::JOB_TRAIN);
  launch.set_attempt(1);
  EXPECT_EQ(RankCommandArgs(launch, "/t/config.yaml"),
            (std::vector<std::string>{"train", "--config", "/t/config.yaml"}))
      << "a first attempt keeps the trainer's refusal of a directory holding checkpoints";
  launch.set_attempt(3);
  EXPECT_EQ(RankCommandArgs(launch, "/t/c.yaml"),
            (std::vector<std::string>{"train", "--config", "/t/c.yaml", "--set", "overwrite_output_dir=true"}))
      << "a later attempt with no committed checkpoint starts over past an earlier attempt's uncommitted ones";
  launch.set_resume_checkpoint("/out/checkpoint-5");
  EXPECT_EQ(RankCommandArgs(launch, "/t/c.yaml"),
            (std::vector<std::string>{"train", "--config", "/t/c.yaml", "--set",
                                      "resume_from_checkpoint=/out/checkpoint-5"}));
  pb::LaunchTask eval;
  eval.set_kind(pb::JOB_EVAL);
  eval.set_attempt(2);
  EXPECT_EQ(RankCommandArgs(eval, "/t/c.yaml"), (std::vector<std::string>{"eval", "--config", "/t/c.yaml"}));
  pb::LaunchTask clean;  // kind clean: anneal-train clean; a retry rewrites its files, no overwrite flag
  clean.set_kind(pb::JOB_CLEAN);
  clean.set_attempt(2);
  EXPECT_EQ(RankCommandArgs(clean, "/t/c.yaml"), (std::vector<std::string>{"clean", "--config", "/t/c.yaml"}));
}

TEST_F(StagerTest, StagesInputsAndRewritesTheConfig) {
  Stager stager = MakeStager();
  pb::LaunchTask launch = Launch();
  *launch.add_stage() = Input("model.model_name_or_path", dir_ / "models/tiny");
  *launch.add_stage() = Input("data.dataset_dir", dir_ / "data");
  bool done = false;
  StatusOr<pb::LaunchTask> result = InternalError("not run");
  ASSERT_TRUE(stager.Start(launch, [&](StatusOr<pb::LaunchTask> r) {
    result = std::move(r);
    done = true;
  }));
  EXPECT_EQ(stager.Tasks().size(), 1u);
  EXPECT_EQ(stager.Tasks()[0].state(), pb::TASK_LAUNCHING);
  EXPECT_FALSE(stager.Start(launch, [](StatusOr<pb::LaunchTask>) {}));  // a resend of the same epoch
  RunUntil(done);
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(result->stage_size(), 0);
  auto spec = jobspec::ParseJobSpec(result->trainer_config_yaml(), "t");
  ASSERT_TRUE(spec.ok());
  EXPECT_NE(spec->model.model_name_or_path, "/nowhere/model");
  EXPECT_EQ(Read(fs::path(spec->model.model_name_or_path) / "model.safetensors"), std::string(300000, 'w'));
  EXPECT_EQ(Read(fs::path(spec->data.dataset_dir) / "train.json"), "[]");
  EXPECT_TRUE(stager.Tasks().empty());
}

TEST_F(StagerTest, AnInputOnThisNodeIsUsedInPlace) {
  Stager stager = MakeStager(30000, /*node_id=*/"src");
  pb::LaunchTask launch = Launch();
  *launch.add_stage() = Input("model.model_name_or_path", dir_ / "models/tiny");
  StatusOr<pb::LaunchTask> result = StageAndWait(stager, launch);
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(jobspec::ParseJobSpec(result->trainer_config_yaml(), "t")->model.model_name_or_path,
            (dir_ / "models/tiny").string());
}

TEST_F(StagerTest, ACheckpointOutsideTheOutputDirectoryIsRefused) {
  Stager stager = MakeStager();
  pb::LaunchTask launch = Launch();
  *launch.add_stage() = Input("checkpoint", dir_ / "models/tiny", (dir_ / "elsewhere/checkpoint-1").string());
  StatusOr<pb::LaunchTask> result = StageAndWait(stager, launch);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), StatusCode::kPermissionDenied) << result.status().ToString();
  EXPECT_FALSE(fs::exists(dir_ / "elsewhere"));
}

TEST_F(StagerTest, CancelEndsAStagingStuckOnAnUnreachableSource) {
  Stager stager = MakeStager(/*timeout_ms=*/20000);
  pb::LaunchTask launch = Launch();
  pb::StageInput in = Input("model.model_name_or_path", dir_ / "models/tiny");
  in.set_source_endpoint("tcp://127.0.0.1:9");  // discard port: nothing answers
  *launch.add_stage() = in;
  bool done = false;
  StatusOr<pb::LaunchTask> result = InternalError("not run");
  stager.Start(launch, [&](StatusOr<pb::LaunchTask> r) {
    result = std::move(r);
    done = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // the worker waits on a source that never answers
  const auto cancelled_at = std::chrono::steady_clock::now();
  stager.Cancel("j1", 3, "stopped: user cancel");
  RunUntil(done);
  EXPECT_LT(std::chrono::steady_clock::now() - cancelled_at, std::chrono::seconds(5));
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), StatusCode::kCancelled);
  EXPECT_NE(result.status().message().find("user cancel"), std::string::npos);
}

// A launch of a newer epoch while the older one still stages (seen when a node came back from a cut: the
// coordinator resent the old epoch's launch, then launched the next one): the old staging is cancelled and its
// thread joined once it ends; the agent crashed (std::terminate: a joinable thread dropped) before.
TEST_F(StagerTest, ANewerEpochSupersedesAStagingInProgress) {
  Stager stager = MakeStager(/*timeout_ms=*/20000);
  pb::LaunchTask stuck = Launch();
  pb::StageInput unreachable = Input("model.model_name_or_path", dir_ / "models/tiny");
  unreachable.set_source_endpoint("tcp://127.0.0.1:9");  // discard port: nothing answers
  *stuck.add_stage() = unreachable;
  bool old_done = false;
  StatusOr<pb::LaunchTask> old_result = InternalError("not run");
  ASSERT_TRUE(stager.Start(stuck, [&](StatusOr<pb::LaunchTask> r) {
    old_result = std::move(r);
    old_done = true;
  }));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the old worker waits on the silent source
  pb::LaunchTask newer = Launch();
  newer.set_epoch(4);
  *newer.add_stage() = Input("model.model_name_or_path", dir_ / "models/tiny");
  EXPECT_FALSE(stager.Start(stuck, [](StatusOr<pb::LaunchTask>) { ADD_FAILURE() << "a resend was started"; }));
  auto result = StageAndWait(stager, newer);
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  RunUntil(old_done);
  ASSERT_FALSE(old_result.ok());
  EXPECT_EQ(old_result.status().code(), StatusCode::kCancelled);
  EXPECT_NE(old_result.status().message().find("a newer attempt was launched"), std::string::npos);
  EXPECT_TRUE(stager.Idle());
}

TEST_F(StagerTest, AResentLaunchOfAnEpochWhoseStagingEndedIsIgnored) {
  Stager stager = MakeStager();
  pb::LaunchTask failing = Launch();
  *failing.add_stage() = Input("model.model_name_or_path", dir_ / "models/missing");  // the source has no such path
  auto result = StageAndWait(stager, failing);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), StatusCode::kNotFound) << result.status().ToString();
  // The coordinator resends it after a reconnect, before it reads the spooled failure: not staged again.
  EXPECT_FALSE(stager.Start(failing, [](StatusOr<pb::LaunchTask>) { ADD_FAILURE() << "staged again"; }));
  EXPECT_TRUE(stager.Idle());
  pb::LaunchTask next = Launch();
  next.set_epoch(4);
  *next.add_stage() = Input("model.model_name_or_path", dir_ / "models/tiny");
  auto staged = StageAndWait(stager, next);
  EXPECT_TRUE(staged.ok()) << staged.status().ToString();
}

TEST_F(StagerTest, DestroyingTheStagerJoinsSupersededStagingsStillRunning) {
  Stager stager = MakeStager(/*timeout_ms=*/20000);
  for (uint64_t epoch : {3, 4}) {
    pb::LaunchTask launch = Launch();
    launch.set_epoch(epoch);
    pb::StageInput in = Input("model.model_name_or_path", dir_ / "models/tiny");
    in.set_source_endpoint("tcp://127.0.0.1:9");
    *launch.add_stage() = in;
    ASSERT_TRUE(stager.Start(launch, [](StatusOr<pb::LaunchTask>) {}));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  // Leaving the scope destroys the stager with both workers waiting on the silent source: they are cancelled and
  // joined (a dropped joinable thread would abort the test binary).
}

TEST_F(StagerTest, ReplicateCopiesOnlyTheCommittedFiles) {
  Write(dir_ / "out-src/checkpoint-10/trainable-stage0.safetensors", "weights");
  Write(dir_ / "out-src/checkpoint-10/manifest.json", "{}");
  auto manifest = transfer::BuildManifest((dir_ / "out-src/checkpoint-10").string(), nullptr);
  ASSERT_TRUE(manifest.ok()) << manifest.status().ToString();
  pb::ReplicateCheckpoint order;
  order.set_job_id("j1");
  order.set_step(10);
  *order.mutable_source() = Input("checkpoint", dir_ / "out-src/checkpoint-10", (dir_ / "out/checkpoint-10").string());
  order.set_output_dir((dir_ / "out").string());
  for (const auto& f : manifest->files) {
    auto* c = order.add_files();
    c->set_path(f.path);
    c->set_size_bytes(f.size);
    c->set_sha256(f.sha256);
  }
  Stager stager = MakeStager();
  pb::CheckpointReplicated answer;
  bool done = false;
  pb::ReplicateCheckpoint forged = order;
  forged.mutable_files(0)->set_sha256(std::string(64, '0'));  // not what the trainer committed
  stager.Replicate(forged, [&](pb::CheckpointReplicated a) {
    answer = std::move(a);
    done = true;
  });
  RunUntil(done);
  EXPECT_FALSE(answer.ok());
  EXPECT_NE(answer.error().find("not the committed one"), std::string::npos) << answer.error();
  EXPECT_FALSE(fs::exists(dir_ / "out/checkpoint-10"));
  done = false;
  stager.Replicate(order, [&](pb::CheckpointReplicated a) {
    answer = std::move(a);
    done = true;
  });
  RunUntil(done);
  EXPECT_TRUE(answer.ok()) << answer.error();
  EXPECT_EQ(answer.step(), 10u);
  EXPECT_EQ(Read(dir_ / "out/checkpoint-10/trainable-stage0.safetensors"), "weights");
}

// A root server reads as the ticket's team: what that team's ranks cannot read is refused, not served.
TEST(TransferServerReadAs, ARootServerReadsAsTheTicketsTeam) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (setfsuid)";
  const fs::path dir = fs::temp_directory_path() / ("anneal-readas-" + std::to_string(getpid()));
  fs::create_directories(dir / "model");
  fs::permissions(dir, fs::perms::owner_all | fs::perms::group_exec | fs::perms::others_exec);
  Write(dir / "model/secret.bin", "root only");
  fs::permissions(dir / "model/secret.bin", fs::perms::owner_read | fs::perms::owner_write);
  Write(dir / "model/public.bin", "anyone");
  fs::permissions(dir / "model/public.bin", fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read);
  const transfer::TicketSigner signer = transfer::TicketSigner::Generate();
  transfer::ServerOptions options;
  options.bind_endpoint = "tcp://127.0.0.1:0";
  options.node_id = "src";
  options.signer_public_key = signer.public_key();
  options.server_keys = *protocol::GenerateCurveKeyPair();
  options.read_as = [](const std::string& team) -> StatusOr<std::pair<uid_t, gid_t>> {
    if (team != "nlp") return NotFoundError("unknown team " + team);
    return std::make_pair(uid_t{65534}, gid_t{65534});
  };
  auto server = transfer::TransferServer::Start(std::move(options));
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  auto source = [&](const std::string& team) {
    return transfer::Source{.endpoint = (*server)->endpoint(),
                            .server_public_key = (*server)->public_key(),
                            .ticket = signer.Sign({.node_id = "src",
                                                   .root = (dir / "model").string(),
                                                   .expires_at_ms = WallMs() + 60000,
                                                   .purpose = "stage",
                                                   .job_id = "j1",
                                                   .team = team})};
  };
  transfer::FetchOptions quick;
  quick.timeout_ms = 5000;
  quick.max_retries = 0;
  const fs::path out = dir / "out.bin";
  EXPECT_TRUE(transfer::FetchFile(source("nlp"), "public.bin", out.string(), quick).ok());
  EXPECT_EQ(Read(out), "anyone");
  Status refused = transfer::FetchFile(source("nlp"), "secret.bin", out.string(), quick);
  EXPECT_EQ(refused.code(), StatusCode::kPermissionDenied) << refused.ToString();
  Status unknown = transfer::FetchFile(source("vision"), "public.bin", out.string(), quick);
  EXPECT_EQ(unknown.code(), StatusCode::kPermissionDenied) << unknown.ToString();
  EXPECT_NE(unknown.message().find("vision"), std::string::npos);
  server->reset();
  fs::remove_all(dir);
}

}  // namespace
}  // namespace anneal::agent
