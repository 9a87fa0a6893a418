// Trainer event lines -> reports (docs/trainer-contract.md examples).
#include "agent/events.h"

#include <gtest/gtest.h>

namespace anneal::agent {
namespace {

const TaskIdentity kId{"job-1", 2, 7, "node-a"};

TEST(TrainerEvents, MetricsBecomeAMetricBatch) {
  auto ev = ParseTrainerEvent(
      R"({"type":"metrics","rank":0,"time_ms":5,"step":10,"total_steps":100,"values":{"loss":2.1,"lr":1e-4}})", kId);
  ASSERT_TRUE(ev.ok()) << ev.status().ToString();
  ASSERT_TRUE(ev->report.has_value());
  const auto& b = ev->report->metric_batch();
  EXPECT_EQ(b.job_id(), "job-1");
  EXPECT_EQ(b.attempt(), 2u);
  EXPECT_EQ(b.epoch(), 7u);
  ASSERT_EQ(b.points_size(), 1);
  EXPECT_EQ(b.points(0).step(), 10u);
  EXPECT_EQ(b.points(0).total_steps(), 100u);
  EXPECT_DOUBLE_EQ(b.points(0).values().at("loss"), 2.1);
  EXPECT_EQ(b.points(0).time_ms(), 5);
}

TEST(TrainerEvents, PreemptedBecomesAJobEventNamingTheStepAndCheckpoint) {
  auto ev = ParseTrainerEvent(
      R"({"type":"preempted","rank":0,"time_ms":9,"step":12,"checkpoint":"/abs/out/checkpoint-12"})", kId);
  ASSERT_TRUE(ev.ok()) << ev.status().ToString();
  ASSERT_TRUE(ev->report.has_value());
  const auto& b = ev->report->metric_batch();
  EXPECT_EQ(b.job_id(), "job-1");
  EXPECT_EQ(b.points_size(), 0);
  ASSERT_EQ(b.events_size(), 1);
  EXPECT_EQ(b.events(0).kind(), "preempted");
  EXPECT_EQ(b.events(0).epoch(), 7u);
  EXPECT_EQ(b.events(0).time_ms(), 9);
  EXPECT_EQ(b.events(0).message(), "preempted at step 12: checkpoint /abs/out/checkpoint-12");
  // Step 0: nothing was trained, so nothing was saved.
  auto none = ParseTrainerEvent(R"({"type":"preempted","rank":0,"time_ms":9,"step":0,"checkpoint":""})", kId);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->report->metric_batch().events(0).message(), "preempted at step 0: no checkpoint was written");
}

TEST(TrainerEvents, CheckpointBecomesACommittedRecord) {
  auto ev = ParseTrainerEvent(
      R"({"type":"checkpoint","rank":0,"time_ms":1,"step":10,"path":"/abs/out/checkpoint-10",)"
      R"("files":[{"path":"model-tp0-pp0.safetensors","size":123,"sha256":"ff"}],)"
      R"("layout":{"world_size":4,"tensor_parallel":2,"pipeline_parallel":1,"data_parallel":2},"metrics":{"loss":2.1}})",
      kId);
  ASSERT_TRUE(ev.ok()) << ev.status().ToString();
  const auto& c = ev->report->checkpoint_committed().checkpoint();
  EXPECT_EQ(c.job_id(), "job-1");
  EXPECT_EQ(c.step(), 10u);
  EXPECT_EQ(c.path(), "/abs/out/checkpoint-10");
  ASSERT_EQ(c.files_size(), 1);
  EXPECT_EQ(c.files(0).size_bytes(), 123u);
  EXPECT_EQ(c.layout().tensor_parallel(), 2u);
  EXPECT_EQ(c.layout().data_parallel(), 2u);
  EXPECT_EQ(c.state(), pb::CHECKPOINT_COMMITTED);
  EXPECT_EQ(c.node_id(), "node-a");
  EXPECT_EQ(c.epoch(), 7u);
}

TEST(TrainerEvents, AnEvalJobsEventNamesTheAdapterAndTheDataset) {
  auto ev = ParseTrainerEvent(
      R"({"type":"eval","rank":0,"time_ms":1,"step":0,"model":"/m/base","adapter":"/out/demo/lora-sft",)"
      R"("dataset":"demo_eval","values":{"eval_loss":3.21987,"eval_perplexity":25.0265}})",
      kId);
  ASSERT_TRUE(ev.ok()) << ev.status().ToString();
  EXPECT_EQ(ev->report->metric_batch().events(0).message(),
            "eval of adapter /out/demo/lora-sft on dataset demo_eval: eval_loss=3.22 eval_perplexity=25.03");
  EXPECT_DOUBLE_EQ(ev->report->metric_batch().points(0).values().at("eval_loss"), 3.21987);

  // Without an adapter the model is named.
  auto model =
      ParseTrainerEvent(R"({"type":"eval","rank":0,"time_ms":1,"step":0,"model":"/m/base","dataset":"/tasks/mmlu",)"
                        R"("values":{"mmlu_accuracy":0.25}})",
                        kId);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  EXPECT_EQ(model->report->metric_batch().events(0).message(),
            "eval of model /m/base on dataset /tasks/mmlu: mmlu_accuracy=0.25");
}

TEST(TrainerEvents, EvalMessageAndFinished) {
  auto eval = ParseTrainerEvent(R"({"type":"eval","rank":0,"time_ms":1,"step":10,"values":{"eval_loss":2.3}})", kId);
  ASSERT_TRUE(eval.ok());
  EXPECT_EQ(eval->report->metric_batch().points(0).values().at("eval_loss"), 2.3);
  EXPECT_EQ(eval->report->metric_batch().events(0).kind(), "eval");
  EXPECT_EQ(eval->report->metric_batch().events(0).message(), "eval at step 10: eval_loss=2.3");

  auto msg = ParseTrainerEvent(R"({"type":"message","rank":1,"time_ms":1,"level":"warn","text":"slow disk"})", kId);
  ASSERT_TRUE(msg.ok());
  EXPECT_EQ(msg->report->metric_batch().events(0).message(), "[warn] rank 1: slow disk");

  auto fin = ParseTrainerEvent(R"({"type":"finished","rank":0,"time_ms":1,"status":"ok","message":"done"})", kId);
  ASSERT_TRUE(fin.ok());
  EXPECT_FALSE(fin->report.has_value());
  EXPECT_EQ(fin->finished_status, "ok");
  EXPECT_EQ(fin->message, "done");
}

TEST(TrainerEvents, BadLinesAreClearErrors) {
  EXPECT_NE(ParseTrainerEvent("{not json", kId).status().message().find("malformed JSON"), std::string::npos);
  EXPECT_NE(ParseTrainerEvent("[1,2]", kId).status().message().find("not a JSON object"), std::string::npos);
  EXPECT_NE(ParseTrainerEvent(R"({"rank":0})", kId).status().message().find("'type'"), std::string::npos);
  EXPECT_NE(ParseTrainerEvent(R"({"type":"metrics","rank":0})", kId).status().message().find("'step'"),
            std::string::npos);
  EXPECT_NE(ParseTrainerEvent(R"({"type":"checkpoint","step":1})", kId).status().message().find("'path'"),
            std::string::npos);
}

TEST(LineSplitter, ReassemblesLinesAcrossReadsAndDropsRunaways) {
  LineSplitter s(16);
  EXPECT_TRUE(s.Feed("{\"a\":").empty());
  auto lines = s.Feed("1}\n{\"b\":2}\n{\"c\"");
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0], "{\"a\":1}");
  EXPECT_EQ(lines[1], "{\"b\":2}");
  EXPECT_EQ(s.TakeRest(), "{\"c\"");
  lines = s.Feed("0123456789abcdefghij\nok\n");
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0], "ok");
  EXPECT_EQ(s.dropped(), 1u);
}

// Found by bench/fuzz/trainer_events_fuzz.cc (UBSan): a float time_ms or pid outside int64 was converted with
// undefined behaviour. Such a field now counts as absent; the event is still parsed.
TEST(TrainerEvents, OutOfRangeFloatTimesAndPidsCountAsAbsent) {
  const TaskIdentity id{"job-1", 1, 1, "node-a"};
  auto started = ParseTrainerEvent(R"({"type":"started","rank":0,"time_ms":5.1e32,"pid":1e300})", id);
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  EXPECT_EQ(started->time_ms, 0);
  EXPECT_EQ(started->pid, 0);
  auto metrics = ParseTrainerEvent(R"({"type":"metrics","rank":0,"time_ms":12.5,"step":3,"values":{"loss":2.0}})", id);
  ASSERT_TRUE(metrics.ok()) << metrics.status().ToString();
  EXPECT_EQ(metrics->time_ms, 12);
}

}  // namespace
}  // namespace anneal::agent
