// Writes the seed corpora of the fuzz targets from real messages (bench/fuzz/corpus/<target>/), in each
// target's input format. Run by hand after a protocol change; its output is committed:
//   build-sanitize/bin/fuzz_make_seeds bench/fuzz/corpus
// (the jobspec seeds are copies of examples/**/*.yaml; the tokenizer seed is scripts/make_tokenizer.py --vocab-size
// 300 output: tokenizer.json, a NUL byte, tokenizer_config.json: docs/development.md "Fuzzing".)
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "bench/fuzz/fuzz_support.h"
#include "protocol/anneal.pb.h"
#include "protocol/framing.h"

namespace pb = anneal::pb;
using anneal::fuzz::AppendChunk;

namespace {

std::string root;

void Write(const std::string& target, const std::string& name, const std::string& bytes) {
  const std::string dir = root + "/" + target;
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/" + name, std::ios::binary) << bytes;
}

pb::TaskStatus Task(const std::string& job, pb::TaskState state, uint64_t epoch = 1) {
  pb::TaskStatus t;
  t.set_job_id(job);
  t.set_attempt(1);
  t.set_epoch(epoch);
  t.set_state(state);
  return t;
}

pb::AgentToCoordinator Register(const std::string& node, uint32_t slots) {
  pb::AgentToCoordinator m;
  auto* reg = m.mutable_register_();
  reg->set_node_id(node);
  reg->set_agent_version("0.1.0");
  reg->mutable_inventory()->set_slots(slots);
  reg->mutable_inventory()->set_address(node + ".cluster");
  reg->mutable_inventory()->set_hostname(node);
  reg->mutable_inventory()->set_rendezvous_port_begin(29500);
  reg->mutable_inventory()->set_rendezvous_port_end(29510);
  return m;
}

pb::AgentToCoordinator Heartbeat(const std::string& node, uint64_t session, std::vector<pb::TaskStatus> tasks) {
  pb::AgentToCoordinator m;
  m.mutable_heartbeat()->set_node_id(node);
  m.mutable_heartbeat()->set_session(session);
  for (auto& t : tasks) *m.mutable_heartbeat()->add_tasks() = t;
  return m;
}

pb::AgentToCoordinator Update(uint64_t seq, pb::TaskStatus status) {
  pb::AgentToCoordinator m;
  m.mutable_task_update()->set_seq(seq);
  *m.mutable_task_update()->mutable_status() = status;
  return m;
}

pb::AgentToCoordinator Checkpoint(uint64_t seq, const std::string& job, uint64_t step) {
  pb::AgentToCoordinator m;
  m.mutable_checkpoint_committed()->set_seq(seq);
  auto* c = m.mutable_checkpoint_committed()->mutable_checkpoint();
  c->set_job_id(job);
  c->set_step(step);
  c->set_attempt(1);
  c->set_path("/out/run/checkpoint-" + std::to_string(step));
  (*c->mutable_metrics())["loss"] = 2.5;
  return m;
}

pb::AgentToCoordinator Metrics(uint64_t seq, const std::string& job, uint64_t step) {
  pb::AgentToCoordinator m;
  auto* b = m.mutable_metric_batch();
  b->set_seq(seq);
  b->set_job_id(job);
  b->set_attempt(1);
  b->set_epoch(1);
  auto* p = b->add_points();
  p->set_step(step);
  (*p->mutable_values())["loss"] = 2.25;
  return m;
}

pb::ClientRequest Submit(const std::string& yaml) {
  pb::ClientRequest r;
  r.set_request_id(1);
  r.mutable_submit()->set_spec_yaml(yaml);
  return r;
}

const char* kSpec =
    "model_name_or_path: /models/tiny\ndataset: alpaca\noutput_dir: /out/run\nnodes: 1\ngpus_per_node: 2\n"
    "save_steps: 10\nsave_total_limit: 1\n";

// The coordinator target's script: op byte, then its operands.
struct Script {
  std::string bytes;
  void Agent(int peer, const pb::AgentToCoordinator& m) {
    bytes += char(0);
    bytes += char(peer);
    AppendChunk(&bytes, m.SerializeAsString());
  }
  void Client(int peer, const pb::ClientRequest& r) {
    bytes += char(1);
    bytes += char(peer);
    AppendChunk(&bytes, r.SerializeAsString());
  }
  void Advance(uint16_t units) {
    bytes += char(2);
    bytes += char(units & 0xff);
    bytes += char(units >> 8);
  }
  void Round() { bytes += char(3); }
  void Restart() { bytes += char(4); }
};

void CoordinatorSeeds() {
  // A job's whole life: two nodes register, a submit is placed, runs, checkpoints (retention deletes the
  // older one), succeeds; reads in between. Job ids are sequential ("job-000001"...), sessions start at 1.
  const std::string job = "job-000001";
  Script s;
  s.Agent(0, Register("node-0", 2));
  s.Agent(1, Register("node-1", 2));
  s.Round();
  s.Client(0, Submit(kSpec));
  s.Round();
  s.Agent(0, Update(1, Task(job, pb::TASK_RUNNING)));
  s.Agent(0, Metrics(2, job, 5));
  s.Agent(0, Checkpoint(3, job, 10));
  s.Agent(0, Checkpoint(4, job, 20));
  s.Round();
  pb::AgentToCoordinator deleted;
  deleted.mutable_checkpoint_deleted()->set_seq(5);
  deleted.mutable_checkpoint_deleted()->set_job_id(job);
  deleted.mutable_checkpoint_deleted()->set_step(10);
  deleted.mutable_checkpoint_deleted()->set_ok(true);
  s.Agent(0, deleted);
  pb::ClientRequest get;
  get.set_request_id(2);
  get.mutable_get_job()->set_job_id(job);
  s.Client(1, get);
  pb::ClientRequest watch;
  watch.set_request_id(3);
  watch.mutable_watch()->set_job_id(job);
  watch.mutable_watch()->set_timeout_ms(1000);
  s.Client(1, watch);
  pb::ClientRequest logs;
  logs.set_request_id(4);
  logs.mutable_get_logs()->set_job_id(job);
  s.Client(0, logs);
  s.Round();
  pb::AgentToCoordinator chunk;
  chunk.mutable_log_chunk()->set_request_id(1);
  chunk.mutable_log_chunk()->set_job_id(job);
  chunk.mutable_log_chunk()->set_data("step 1\n");
  chunk.mutable_log_chunk()->set_eof(true);
  s.Agent(0, chunk);
  s.Agent(0, Update(6, Task(job, pb::TASK_SUCCEEDED)));
  s.Agent(0, Heartbeat("node-0", 1, {}));
  s.Round();
  pb::ClientRequest list;
  list.set_request_id(5);
  list.mutable_list_jobs();
  s.Client(0, list);
  pb::ClientRequest checkpoints;
  checkpoints.set_request_id(6);
  checkpoints.mutable_list_checkpoints()->set_job_id(job);
  s.Client(0, checkpoints);
  pb::ClientRequest nodes;
  nodes.set_request_id(7);
  nodes.mutable_list_nodes();
  s.Client(0, nodes);
  s.Round();
  Write("coordinator", "job-lifecycle", s.bytes);

  // A node goes silent: its task is lost, the job retries on the other node after a restart of the
  // coordinator; then a drain and a cancel.
  Script f;
  f.Agent(0, Register("node-0", 2));
  f.Agent(1, Register("node-1", 2));
  f.Client(0, Submit(kSpec));
  f.Round();
  f.Agent(0, Update(1, Task(job, pb::TASK_RUNNING)));
  f.Round();
  f.Restart();
  f.Agent(1, Register("node-1", 2));
  f.Advance(1000);  // 16 s: past the heartbeat timeout
  f.Round();
  pb::ClientRequest drain;
  drain.set_request_id(8);
  drain.mutable_drain()->set_node_id("node-1");
  f.Client(0, drain);
  pb::ClientRequest cancel;
  cancel.set_request_id(9);
  cancel.mutable_cancel()->set_job_id(job);
  f.Client(0, cancel);
  f.Round();
  f.Agent(1, Update(1, Task(job, pb::TASK_STOPPED, 2)));
  f.Round();
  Write("coordinator", "node-failure-drain-cancel", f.bytes);

  Script bad;
  bad.Agent(2, Heartbeat("node-2", 77, {Task(job, pb::TASK_RUNNING)}));  // unknown session
  bad.Client(0, Submit("model_name_or_path: /m\n"));                     // missing keys
  bad.Round();
  Write("coordinator", "refusals", bad.bytes);
}

void FrameSeeds() {
  using anneal::protocol::EncodeHeader;
  using anneal::protocol::MessageKind;
  const auto frame = [](MessageKind kind, const google::protobuf::Message& m, uint32_t version = 0) {
    std::string header = version ? EncodeHeader(kind, version) : EncodeHeader(kind);
    std::string bytes;
    bytes += char(header.size());
    bytes += header;
    bytes += char(0);  // no extra parts
    bytes += m.SerializeAsString();
    return bytes;
  };
  Write("frame", "register", frame(MessageKind::kAgentToCoordinator, Register("node-0", 8)));
  Write("frame", "task-update", frame(MessageKind::kAgentToCoordinator, Update(3, Task("job-1", pb::TASK_FAILED))));
  Write("frame", "submit", frame(MessageKind::kClientRequest, Submit(kSpec)));
  pb::CoordinatorToAgent launch;
  launch.mutable_launch()->set_job_id("job-1");
  launch.mutable_launch()->set_epoch(2);
  launch.mutable_launch()->add_ranks()->set_global_rank(0);
  Write("frame", "launch", frame(MessageKind::kCoordinatorToAgent, launch));
  pb::ClientReply reply;
  reply.mutable_error()->set_code(pb::NOT_FOUND);
  reply.mutable_error()->set_message("no job job-9");
  Write("frame", "error-reply", frame(MessageKind::kClientReply, reply));
  Write("frame", "old-version", frame(MessageKind::kClientRequest, Submit(kSpec), 1));
}

void AgentSeeds() {
  std::string s;
  const auto order = [&s](const pb::CoordinatorToAgent& m) {
    s += char(0);
    AppendChunk(&s, m.SerializeAsString());
  };
  for (int i = 0; i < 3; ++i) s += std::string{char(1), char(i), char(0)};  // three spooled reports
  pb::CoordinatorToAgent m;
  m.mutable_register_reply()->set_accepted(true);
  m.mutable_register_reply()->set_session(1);
  m.mutable_register_reply()->set_last_acked_seq(1);
  order(m);
  m.Clear();
  m.mutable_ack()->set_seq(2);
  order(m);
  m.Clear();
  m.mutable_stop()->set_job_id("job-1");
  m.mutable_stop()->set_epoch(3);
  order(m);
  m.Clear();
  m.mutable_fetch_logs()->set_job_id("job-1");
  m.mutable_fetch_logs()->set_max_bytes(8);
  m.mutable_fetch_logs()->set_offset(4);
  order(m);
  m.Clear();
  // The fuzz target's sandbox path is not known here: a relative and an outside path are refused.
  m.mutable_delete_checkpoint()->set_job_id("job-1");
  m.mutable_delete_checkpoint()->set_step(10);
  m.mutable_delete_checkpoint()->set_path("/tmp/out/checkpoint-10");
  m.mutable_delete_checkpoint()->set_output_dir("/tmp/out/../");
  order(m);
  s += std::string{char(2), char(0xe8), char(0x03)};  // 1 s later
  Write("agent", "orders", s);
}

std::string SpoolRecord(const pb::AgentToCoordinator& m) {
  const std::string body = m.SerializeAsString();
  std::string out;
  for (int shift = 24; shift >= 0; shift -= 8) out += char((body.size() >> shift) & 0xff);
  return out + body;
}

void SpoolSeeds() {
  std::string acked;
  AppendChunk(&acked, "2\n");
  std::string log = SpoolRecord(Update(1, Task("job-1", pb::TASK_RUNNING))) + SpoolRecord(Metrics(2, "job-1", 5)) +
                    SpoolRecord(Checkpoint(3, "job-1", 10)) + SpoolRecord(Update(4, Task("job-1", pb::TASK_SUCCEEDED)));
  Write("spool", "acked-2-of-4", acked + log);
  std::string none;
  AppendChunk(&none, "");
  Write("spool", "torn-tail", none + log.substr(0, log.size() - 3));
}

void TrainerEventSeeds() {
  Write("trainer_events", "lifecycle",
        std::string(1, char(16)) +
            R"({"type":"started","rank":0,"time_ms":1,"world_size":2,"pid":1234})"
            "\n"
            R"({"type":"metrics","rank":0,"time_ms":5,"step":10,"total_steps":100,"values":{"loss":2.1,"lr":1e-4}})"
            "\n"
            R"({"type":"checkpoint","rank":0,"time_ms":6,"step":10,"path":"/abs/out/checkpoint-10",)"
            R"("files":[{"path":"model-tp0-pp0.safetensors","size":123,"sha256":"ff"}],)"
            R"("layout":{"world_size":4,"tensor_parallel":2,"pipeline_parallel":1,"data_parallel":2},)"
            R"("metrics":{"loss":2.1}})"
            "\n"
            R"({"type":"eval","rank":0,"time_ms":7,"step":10,"model":"/m/base","adapter":"/out/lora",)"
            R"("dataset":"demo_eval","values":{"eval_loss":3.2,"eval_perplexity":25.0}})"
            "\n"
            R"({"type":"message","rank":1,"time_ms":8,"level":"warn","text":"slow disk"})"
            "\n"
            R"({"type":"finished","rank":0,"time_ms":9,"status":"ok","message":"done","output":"/abs/out"})"
            "\n");
}

void SafetensorsSeeds() {
  const auto file = [](const std::string& header, size_t data_bytes) {
    std::string out;
    for (int i = 0; i < 8; ++i) out += char((header.size() >> (8 * i)) & 0xff);
    return out + header + std::string(data_bytes, '\x01');
  };
  Write("safetensors_header", "two-tensors",
        file(R"({"__metadata__":{"format":"pt"},"a.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
             R"("b.bias":{"dtype":"BF16","shape":[4],"data_offsets":[24,32]}})",
             32));
  Write(
      "safetensors_header", "empty-and-scalar",
      file(
          R"({"e":{"dtype":"I64","shape":[0,5],"data_offsets":[0,0]},"s":{"dtype":"U8","shape":[],"data_offsets":[0,1]}})",
          1));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: fuzz_make_seeds CORPUS_DIR\n";
    return 2;
  }
  root = argv[1];
  CoordinatorSeeds();
  FrameSeeds();
  AgentSeeds();
  SpoolSeeds();
  TrainerEventSeeds();
  SafetensorsSeeds();
  std::cout << "seeds written under " << root << "\n";
  return 0;
}
