// ScheduleManager: the due-fire decision (pure), the concurrency and missed-fire policies, the lifecycle edge
// by edge, data triggers, and exactly-once fires across a simulated restart (a real StateStore in a temp dir,
// reloaded; a FakeClock). The pipeline side is a stand-in that writes one Table::kPipelines record per run into
// the same round batch, as the coordinator's pipelines do.
#include "coordinator/schedules.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>

namespace anneal::coordinator {
namespace {

namespace fs = std::filesystem;
using storage::Table;

constexpr int64_t kMinute = 60'000;
// 2026-01-05T00:00:00Z, a Monday.
constexpr int64_t kMonday = 1'767'571'200'000;

// Stand-in for the coordinator's pipelines: a run is a record in Table::kPipelines (key = run id, value =
// "<origin>|<yaml>", prefixed "ended|" once it ended) written into the round batch; it is active until End(),
// also across a restart (recovered from the store).
class StoreLauncher final : public PipelineLauncher {
 public:
  StoreLauncher(storage::WriteBatch* batch, const storage::StateStore* store) : batch_(batch), store_(store) {
    EXPECT_TRUE(store_
                    ->Scan(Table::kPipelines, "",
                           [&](std::string_view key, std::string_view value) {
                             if (value.substr(0, 6) != "ended|") active_.insert(std::string(key));
                             return true;
                           })
                    .ok());
  }
  Status Validate(const std::string& yaml, const std::string&, const std::string&,
                  const std::map<std::string, std::string>&) override {
    if (yaml.find("steps:") == std::string::npos) return InvalidArgumentError("pipeline YAML has no 'steps:'");
    return Status::Ok();
  }
  StatusOr<std::string> Create(const std::string& yaml, const std::string&, const std::string& owner,
                               const std::map<std::string, std::string>&, const std::string& origin) override {
    if (owner == "gone") return PermissionDeniedError("user 'gone' no longer exists");
    const std::string id = "run-" + std::to_string(CountRuns() + pending_++ + 1);
    batch_->PutRaw(Table::kPipelines, id, origin + "|" + yaml);
    active_.insert(id);
    return id;
  }
  bool Active(const std::string& run_id) const override { return active_.count(run_id) > 0; }
  Status Cancel(const std::string& run_id, const std::string& reason) override {
    End(run_id);
    cancelled_[run_id] = reason;
    return Status::Ok();
  }
  void End(const std::string& run_id) {
    active_.erase(run_id);
    batch_->PutRaw(Table::kPipelines, run_id, "ended|");
  }
  void Committed() { pending_ = 0; }
  size_t CountRuns() const {
    size_t n = 0;
    EXPECT_TRUE(store_
                    ->Scan(Table::kPipelines, "",
                           [&](std::string_view, std::string_view) {
                             ++n;
                             return true;
                           })
                    .ok());
    return n;
  }
  std::vector<std::string> Origins() const {
    std::vector<std::string> out;
    EXPECT_TRUE(store_
                    ->Scan(Table::kPipelines, "",
                           [&](std::string_view, std::string_view value) {
                             out.emplace_back(value.substr(0, value.find('|')));
                             return true;
                           })
                    .ok());
    return out;
  }
  std::map<std::string, std::string> cancelled_;

 private:
  storage::WriteBatch* batch_;
  const storage::StateStore* store_;
  std::set<std::string> active_;
  size_t pending_ = 0;
};

// Hashes on the calling thread (a real read of the files): results wait for the next TakeResults.
class InlineHasher final : public DatasetHasher {
 public:
  void Request(const std::string& key, const std::vector<std::string>& paths) override {
    std::string content;
    for (const auto& path : paths) {
      std::ifstream in(path, std::ios::binary);
      if (!in) {
        results_.push_back({key, NotFoundError("cannot read " + path)});
        return;
      }
      content += std::string(std::istreambuf_iterator<char>(in), {});
    }
    results_.push_back({key, std::to_string(std::hash<std::string>{}(content))});
    ++requests;
  }
  std::vector<Result> TakeResults() override { return std::exchange(results_, {}); }
  int requests = 0;

 private:
  std::vector<Result> results_;
};

class Schedules : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("anneal-schedules-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    Open();
  }
  void TearDown() override {
    manager_.reset();
    launcher_.reset();
    store_.reset();
    fs::remove_all(dir_);
  }
  void Open() {
    auto store = storage::StateStore::Open((dir_ / "state").string());
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(*store);
    batch_.Clear();
    launcher_ = std::make_unique<StoreLauncher>(&batch_, store_.get());
    manager_ = std::make_unique<ScheduleManager>(&batch_, store_.get(), &clock_, launcher_.get(), &hasher_, options_);
    ASSERT_TRUE(manager_->Recover().ok());
  }
  // The coordinator's Flush.
  void Commit() {
    ASSERT_TRUE(store_->Commit(batch_).ok());
    batch_.Clear();
    launcher_->Committed();
  }
  // kill -9: whatever the round had not committed is lost; the process starts again from the store.
  void CrashAndRestart() {
    manager_.reset();
    launcher_.reset();
    store_.reset();
    Open();
  }
  void Round() {
    manager_->Tick();
    Commit();
  }
  pb::CreateScheduleRequest CronRequest(const std::string& name, const std::string& cron) {
    pb::CreateScheduleRequest request;
    request.set_name(name);
    request.set_cron(cron);
    request.set_pipeline_yaml("name: retrain\nsteps:\n  train: {}\n");
    return request;
  }
  pb::ScheduleRecord CreateOk(const pb::CreateScheduleRequest& request, const std::string& owner = "alice") {
    auto created = manager_->Create(request, "nlp", owner);
    EXPECT_TRUE(created.ok()) << created.status().ToString();
    Commit();
    return created.ok() ? *created : pb::ScheduleRecord{};
  }
  const pb::ScheduleRecord& Record(const std::string& name) {
    const pb::ScheduleRecord* record = manager_->Find("nlp", name);
    EXPECT_NE(record, nullptr) << name;
    static pb::ScheduleRecord empty;
    return record ? *record : empty;
  }

  fs::path dir_;
  FakeClock clock_{kMonday + 30 * kMinute};  // Monday 00:30Z
  ScheduleOptions options_;
  storage::WriteBatch batch_;
  std::unique_ptr<storage::StateStore> store_;
  std::unique_ptr<StoreLauncher> launcher_;
  InlineHasher hasher_;
  std::unique_ptr<ScheduleManager> manager_;
};

// ---- the pure decision

pb::ScheduleRecord ActiveAt(int64_t cursor, pb::ScheduleMissedPolicy missed = pb::MISSED_RUN_ONCE) {
  pb::ScheduleRecord record;
  record.set_state(pb::SCHEDULE_ACTIVE);
  record.set_cursor_ms(cursor);
  record.set_missed(missed);
  return record;
}

TEST(DecideCronFire, NothingBeforeTheFirstFireTime) {
  auto cron = ParseCron("0 * * * *");
  ASSERT_TRUE(cron.ok());
  auto d = DecideCronFire(ActiveAt(kMonday), *cron, kMonday + 59 * kMinute, kMinute);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->action, CronDecision::Action::kNothing);
}

TEST(DecideCronFire, RunsTheFireTimeOnceItIsReached) {
  auto cron = ParseCron("0 * * * *");
  ASSERT_TRUE(cron.ok());
  auto d = DecideCronFire(ActiveAt(kMonday), *cron, kMonday + 60 * kMinute, kMinute);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->action, CronDecision::Action::kRun);
  EXPECT_EQ(d->fire_time_ms, kMonday + 60 * kMinute);
  EXPECT_EQ(d->missed_count, 0u);
  EXPECT_EQ(d->new_cursor_ms, kMonday + 60 * kMinute);
  // With the cursor moved there, the same instant decides nothing: a fire time is decided once.
  auto again = DecideCronFire(ActiveAt(d->new_cursor_ms), *cron, kMonday + 60 * kMinute + 500, kMinute);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->action, CronDecision::Action::kNothing);
}

TEST(DecideCronFire, PausedSchedulesDecideNothing) {
  auto cron = ParseCron("* * * * *");
  ASSERT_TRUE(cron.ok());
  pb::ScheduleRecord record = ActiveAt(kMonday);
  record.set_state(pb::SCHEDULE_PAUSED);
  auto d = DecideCronFire(record, *cron, kMonday + 10 * kMinute, kMinute);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->action, CronDecision::Action::kNothing);
}

TEST(DecideCronFire, DowntimeRunOnceStandsForAllMissedFires) {
  auto cron = ParseCron("0 * * * *");
  ASSERT_TRUE(cron.ok());
  // Down from 00:30 to 03:20: 01:00, 02:00, 03:00 were missed (03:00 is 20 minutes late).
  auto d = DecideCronFire(ActiveAt(kMonday + 30 * kMinute), *cron, kMonday + 200 * kMinute, kMinute);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->action, CronDecision::Action::kRun);
  EXPECT_EQ(d->missed_count, 3u);
  EXPECT_EQ(d->fire_time_ms, kMonday + 180 * kMinute);
  EXPECT_EQ(d->new_cursor_ms, kMonday + 180 * kMinute);
}

TEST(DecideCronFire, DowntimeSkipRunsNothing) {
  auto cron = ParseCron("0 * * * *");
  ASSERT_TRUE(cron.ok());
  auto d = DecideCronFire(ActiveAt(kMonday + 30 * kMinute, pb::MISSED_SKIP), *cron, kMonday + 200 * kMinute, kMinute);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->action, CronDecision::Action::kSkipMissed);
  EXPECT_EQ(d->missed_count, 3u);
  EXPECT_EQ(d->new_cursor_ms, kMonday + 180 * kMinute);
}

TEST(DecideCronFire, AnOnTimeFireRunsEvenAfterMissedOnesUnderSkip) {
  auto cron = ParseCron("0 * * * *");
  ASSERT_TRUE(cron.ok());
  // Back at 03:00:30: 01:00 and 02:00 were missed, 03:00 is on time.
  auto d = DecideCronFire(ActiveAt(kMonday + 30 * kMinute, pb::MISSED_SKIP), *cron, kMonday + 180 * kMinute + 30'000,
                          kMinute);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->action, CronDecision::Action::kRun);
  EXPECT_EQ(d->missed_count, 2u);
  EXPECT_EQ(d->fire_time_ms, kMonday + 180 * kMinute);
}

TEST(DecideConcurrency, EveryPolicyWithAndWithoutAnActiveRun) {
  pb::ScheduleRecord record;
  for (auto policy : {pb::CONCURRENCY_FORBID, pb::CONCURRENCY_QUEUE, pb::CONCURRENCY_REPLACE}) {
    record.set_concurrency(policy);
    EXPECT_EQ(DecideConcurrency(record, false), ConcurrencyAction::kStart) << policy;
  }
  record.set_concurrency(pb::CONCURRENCY_FORBID);
  EXPECT_EQ(DecideConcurrency(record, true), ConcurrencyAction::kSkip);
  record.set_concurrency(pb::CONCURRENCY_REPLACE);
  EXPECT_EQ(DecideConcurrency(record, true), ConcurrencyAction::kReplace);
  record.set_concurrency(pb::CONCURRENCY_QUEUE);
  EXPECT_EQ(DecideConcurrency(record, true), ConcurrencyAction::kQueue);
  record.set_queued_fire_ms(1);
  EXPECT_EQ(DecideConcurrency(record, true), ConcurrencyAction::kCoalesce);
}

// ---- exactly once with a real store

TEST_F(Schedules, FiresOncePerFireTimeAndRecordsIt) {
  CreateOk(CronRequest("hourly", "0 * * * *"));
  Round();
  EXPECT_EQ(launcher_->CountRuns(), 0u);
  clock_.Advance(30 * kMinute);  // 01:00
  Round();
  Round();
  EXPECT_EQ(launcher_->CountRuns(), 1u);
  const auto& record = Record("hourly");
  ASSERT_EQ(record.history_size(), 1);
  EXPECT_EQ(record.history(0).outcome(), pb::FIRE_STARTED);
  EXPECT_EQ(record.history(0).fire_time_ms(), kMonday + 60 * kMinute);
  EXPECT_EQ(record.last_run_id(), record.history(0).run_id());
  EXPECT_EQ(record.fire_count(), 1u);
  EXPECT_EQ(launcher_->Origins().front(), "schedule nlp/hourly fire at 2026-01-05T01:00:00Z");
}

TEST_F(Schedules, CrashBeforeTheCommitFiresAfterRestartExactlyOnce) {
  CreateOk(CronRequest("hourly", "0 * * * *"));
  clock_.Advance(30 * kMinute);
  manager_->Tick();  // the fire and its run are in the batch ... and the process dies before Flush
  EXPECT_FALSE(batch_.empty());
  CrashAndRestart();
  EXPECT_EQ(launcher_->CountRuns(), 0u);  // neither the run nor the fire record reached the disk
  clock_.Advance(1000);
  Round();
  Round();
  EXPECT_EQ(launcher_->CountRuns(), 1u);
  EXPECT_EQ(Record("hourly").history(0).fire_time_ms(), kMonday + 60 * kMinute);
}

TEST_F(Schedules, CrashAfterTheCommitNeverFiresTwice) {
  CreateOk(CronRequest("hourly", "0 * * * *"));
  clock_.Advance(30 * kMinute);
  Round();
  CrashAndRestart();
  Round();
  clock_.Advance(59 * kMinute);  // 01:59: the next fire time (02:00) not reached
  Round();
  EXPECT_EQ(launcher_->CountRuns(), 1u);
  launcher_->End(Record("hourly").last_run_id());  // (else policy forbid skips the next fire)
  clock_.Advance(kMinute);                         // 02:00
  Round();
  EXPECT_EQ(launcher_->CountRuns(), 2u);
}

TEST_F(Schedules, DowntimeRunOnceStartsOneRunForAllMissedFires) {
  CreateOk(CronRequest("hourly", "0 * * * *"));
  CrashAndRestart();
  clock_.Advance(5 * 60 * kMinute);  // down until 05:30: 01:00 .. 05:00 missed
  Round();
  EXPECT_EQ(launcher_->CountRuns(), 1u);
  const auto& fire = Record("hourly").history(0);
  EXPECT_EQ(fire.outcome(), pb::FIRE_STARTED);
  EXPECT_EQ(fire.missed_count(), 5u);
  EXPECT_NE(fire.message().find("run-once"), std::string::npos) << fire.message();
}

TEST_F(Schedules, DowntimeSkipRecordsTheMissedFiresAndRunsNothing) {
  auto request = CronRequest("hourly", "0 * * * *");
  request.set_missed(pb::MISSED_SKIP);
  CreateOk(request);
  CrashAndRestart();
  clock_.Advance(5 * 60 * kMinute);
  Round();
  EXPECT_EQ(launcher_->CountRuns(), 0u);
  ASSERT_EQ(Record("hourly").history_size(), 1);
  EXPECT_EQ(Record("hourly").history(0).outcome(), pb::FIRE_SKIPPED_MISSED);
  EXPECT_EQ(Record("hourly").history(0).missed_count(), 5u);
  clock_.Advance(30 * kMinute);  // 06:00 is on time again
  Round();
  EXPECT_EQ(launcher_->CountRuns(), 1u);
}

// ---- concurrency

TEST_F(Schedules, ForbidSkipsAFireWhileThePreviousRunIsActive) {
  CreateOk(CronRequest("minutely", "* * * * *"));
  clock_.Advance(kMinute);
  Round();
  clock_.Advance(kMinute);
  Round();
  EXPECT_EQ(launcher_->CountRuns(), 1u);
  const auto& record = Record("minutely");
  ASSERT_EQ(record.history_size(), 2);
  EXPECT_EQ(record.history(1).outcome(), pb::FIRE_SKIPPED_ACTIVE);
  EXPECT_NE(record.history(1).message().find(record.last_run_id()), std::string::npos);
  launcher_->End(record.last_run_id());
  clock_.Advance(kMinute);
  Round();
  EXPECT_EQ(launcher_->CountRuns(), 2u);
}

TEST_F(Schedules, QueueStartsTheWaitingFireWhenThePreviousRunEnds) {
  auto request = CronRequest("minutely", "* * * * *");
  request.set_concurrency(pb::CONCURRENCY_QUEUE);
  CreateOk(request);
  clock_.Advance(kMinute);
  Round();
  const std::string first = Record("minutely").last_run_id();
  clock_.Advance(kMinute);
  Round();  // queued
  clock_.Advance(kMinute);
  Round();  // coalesced into the waiting one
  EXPECT_EQ(launcher_->CountRuns(), 1u);
  EXPECT_EQ(Record("minutely").history(1).outcome(), pb::FIRE_QUEUED);
  EXPECT_EQ(Record("minutely").history(2).outcome(), pb::FIRE_COALESCED);
  const int64_t queued_time = Record("minutely").queued_fire_ms();
  EXPECT_EQ(queued_time, kMonday + 32 * kMinute);
  CrashAndRestart();  // the waiting fire is durable
  clock_.Advance(10'000);
  Round();
  EXPECT_EQ(launcher_->CountRuns(), 1u);  // the first run is still active
  launcher_->End(first);
  clock_.Advance(10'000);
  Round();
  EXPECT_EQ(launcher_->CountRuns(), 2u);
  EXPECT_EQ(Record("minutely").queued_fire_ms(), 0);
  EXPECT_EQ(Record("minutely").history(3).fire_time_ms(), queued_time);
}

TEST_F(Schedules, ReplaceCancelsThePreviousRunAndStartsTheNewOne) {
  auto request = CronRequest("minutely", "* * * * *");
  request.set_concurrency(pb::CONCURRENCY_REPLACE);
  CreateOk(request);
  clock_.Advance(kMinute);
  Round();
  const std::string first = Record("minutely").last_run_id();
  clock_.Advance(kMinute);
  Round();
  EXPECT_EQ(launcher_->CountRuns(), 2u);
  ASSERT_TRUE(launcher_->cancelled_.count(first));
  EXPECT_NE(launcher_->cancelled_[first].find("replaced by the fire of schedule nlp/minutely"), std::string::npos);
  EXPECT_EQ(Record("minutely").history(1).replaced_run_id(), first);
  EXPECT_NE(Record("minutely").last_run_id(), first);
}

TEST_F(Schedules, ARefusedRunIsRecordedAsFailedAndTheFireIsConsumed) {
  CreateOk(CronRequest("hourly", "0 * * * *"), "gone");
  clock_.Advance(30 * kMinute);
  Round();
  Round();
  EXPECT_EQ(launcher_->CountRuns(), 0u);
  ASSERT_EQ(Record("hourly").history_size(), 1);
  EXPECT_EQ(Record("hourly").history(0).outcome(), pb::FIRE_FAILED);
  EXPECT_NE(Record("hourly").history(0).message().find("no longer exists"), std::string::npos);
}

TEST_F(Schedules, HistoryKeepsTheNewestEntries) {
  auto request = CronRequest("minutely", "* * * * *");
  CreateOk(request);
  for (int i = 0; i < 25; ++i) {
    clock_.Advance(kMinute);
    Round();
  }
  const auto& record = Record("minutely");
  EXPECT_EQ(record.history_size(), static_cast<int>(options_.history_limit));
  EXPECT_EQ(record.history(record.history_size() - 1).fire_time_ms(), kMonday + 55 * kMinute);
}

// ---- lifecycle, edge by edge

TEST_F(Schedules, LifecycleEdges) {
  // create -> ACTIVE
  EXPECT_EQ(CreateOk(CronRequest("weekly", "0 3 * * 1")).state(), pb::SCHEDULE_ACTIVE);
  // ACTIVE -> PAUSED
  auto paused = manager_->Pause("nlp", "weekly");
  ASSERT_TRUE(paused.ok());
  EXPECT_EQ(paused->state(), pb::SCHEDULE_PAUSED);
  // PAUSED -> pause: refused
  EXPECT_EQ(manager_->Pause("nlp", "weekly").status().code(), StatusCode::kFailedPrecondition);
  // PAUSED -> ACTIVE
  auto resumed = manager_->Resume("nlp", "weekly");
  ASSERT_TRUE(resumed.ok());
  EXPECT_EQ(resumed->state(), pb::SCHEDULE_ACTIVE);
  // ACTIVE -> resume: refused, naming why
  auto again = manager_->Resume("nlp", "weekly");
  EXPECT_EQ(again.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(again.status().message().find("not paused"), std::string::npos);
  // ACTIVE -> DELETED
  auto deleted = manager_->Delete("nlp", "weekly");
  ASSERT_TRUE(deleted.ok());
  EXPECT_EQ(deleted->state(), pb::SCHEDULE_DELETED);
  Commit();
  // DELETED -> anything: NOT_FOUND, also after a restart
  CrashAndRestart();
  EXPECT_EQ(manager_->Pause("nlp", "weekly").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(manager_->Resume("nlp", "weekly").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(manager_->Delete("nlp", "weekly").status().code(), StatusCode::kNotFound);
  // PAUSED -> DELETED, and the name is free again
  CreateOk(CronRequest("weekly", "0 3 * * 1"));
  ASSERT_TRUE(manager_->Pause("nlp", "weekly").ok());
  ASSERT_TRUE(manager_->Delete("nlp", "weekly").ok());
  CreateOk(CronRequest("weekly", "0 4 * * 1"));
  EXPECT_EQ(Record("weekly").cron(), "0 4 * * 1");
}

TEST_F(Schedules, PausedDoesNotFireAndResumeDoesNotCatchUp) {
  CreateOk(CronRequest("hourly", "0 * * * *"));
  ASSERT_TRUE(manager_->Pause("nlp", "hourly").ok());
  Commit();
  CrashAndRestart();  // paused is durable
  clock_.Advance(3 * 60 * kMinute);
  Round();
  EXPECT_EQ(launcher_->CountRuns(), 0u);
  auto next = manager_->NextFireTimes(Record("hourly"), 3);
  ASSERT_TRUE(next.ok());
  EXPECT_TRUE(next->empty());
  ASSERT_TRUE(manager_->Resume("nlp", "hourly").ok());
  Round();
  EXPECT_EQ(launcher_->CountRuns(), 0u);  // 01:00-03:00 belonged to the pause
  next = manager_->NextFireTimes(Record("hourly"), 2);
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(*next, (std::vector<int64_t>{kMonday + 240 * kMinute, kMonday + 300 * kMinute}));
  clock_.Advance(30 * kMinute);
  Round();
  EXPECT_EQ(launcher_->CountRuns(), 1u);
}

TEST_F(Schedules, ATriggerFiresNowAsTheUserAskedAndLeavesTheCronCursorAlone) {
  CreateOk(CronRequest("hourly", "0 * * * *"));
  const int64_t cursor = Record("hourly").cursor_ms();
  clock_.Advance(10 * kMinute);  // 00:40
  auto fired = manager_->Trigger("nlp", "hourly", "bob");
  ASSERT_TRUE(fired.ok()) << fired.status().ToString();
  Commit();
  ASSERT_EQ(fired->history_size(), 1);
  EXPECT_EQ(fired->history(0).outcome(), pb::FIRE_STARTED);
  EXPECT_EQ(fired->history(0).triggered_by(), "bob");
  EXPECT_EQ(fired->history(0).fire_time_ms(), kMonday + 40 * kMinute);
  EXPECT_EQ(fired->last_run_id(), fired->history(0).run_id());
  EXPECT_EQ(fired->cursor_ms(), cursor);
  EXPECT_EQ(launcher_->Origins().front(), "schedule nlp/hourly triggered by bob at 2026-01-05T00:40:00Z");
  // The scheduled fire still happens at 01:00 (once), its policy applied: forbid skips while the run is active.
  clock_.Advance(20 * kMinute);
  Round();
  EXPECT_EQ(launcher_->CountRuns(), 1u);
  ASSERT_EQ(Record("hourly").history_size(), 2);
  EXPECT_EQ(Record("hourly").history(1).outcome(), pb::FIRE_SKIPPED_ACTIVE);
  EXPECT_EQ(Record("hourly").history(1).fire_time_ms(), kMonday + 60 * kMinute);
  // A trigger while the run is active follows the policy too; the reply's newest entry says so.
  auto skipped = manager_->Trigger("nlp", "hourly", "bob");
  ASSERT_TRUE(skipped.ok());
  EXPECT_EQ(skipped->history().rbegin()->outcome(), pb::FIRE_SKIPPED_ACTIVE);
  EXPECT_EQ(launcher_->CountRuns(), 1u);
}

TEST_F(Schedules, APausedScheduleCanBeTriggeredAndStaysPaused) {
  CreateOk(CronRequest("weekly", "0 3 * * 1"));
  ASSERT_TRUE(manager_->Pause("nlp", "weekly").ok());
  auto fired = manager_->Trigger("nlp", "weekly", "alice");
  ASSERT_TRUE(fired.ok()) << fired.status().ToString();
  Commit();
  EXPECT_EQ(fired->state(), pb::SCHEDULE_PAUSED);
  EXPECT_EQ(fired->history().rbegin()->outcome(), pb::FIRE_STARTED);
  EXPECT_EQ(launcher_->CountRuns(), 1u);
  CrashAndRestart();  // the fire and its run are durable
  EXPECT_EQ(Record("weekly").fire_count(), 1u);
  EXPECT_EQ(Record("weekly").history(0).triggered_by(), "alice");
  EXPECT_EQ(manager_->Trigger("nlp", "absent", "alice").status().code(), StatusCode::kNotFound);
}

TEST_F(Schedules, CreateRefusalsNameTheField) {
  CreateOk(CronRequest("weekly", "0 3 * * 1"));
  struct Case {
    std::function<void(pb::CreateScheduleRequest&)> edit;
    StatusCode code;
    std::string mentions;
  };
  const std::vector<Case> cases = {
      {[](auto&) {}, StatusCode::kAlreadyExists, "already has a schedule 'weekly'"},
      {[](auto& r) { r.set_name("Bad Name"); }, StatusCode::kInvalidArgument, "schedule name"},
      {[](auto& r) { r.set_cron("0 3 * *"); }, StatusCode::kInvalidArgument, "4 field(s)"},
      {[](auto& r) { r.set_cron("0 3 * * 9"); }, StatusCode::kInvalidArgument, "day-of-week"},
      {[](auto& r) { r.set_time_zone("Europe/Berln"); }, StatusCode::kInvalidArgument, "'Europe/Berln'"},
      {[](auto& r) { r.add_dataset_paths("/data/x"); }, StatusCode::kInvalidArgument, "not both"},
      {[](auto& r) { r.clear_cron(); }, StatusCode::kInvalidArgument, "not neither"},
      {[](auto& r) { r.set_pipeline_yaml("name: x\n"); }, StatusCode::kInvalidArgument, "its pipeline"},
      {[](auto& r) { r.clear_pipeline_yaml(); }, StatusCode::kInvalidArgument, "no pipeline YAML"},
      {[](auto& r) {
         r.clear_cron();
         r.add_dataset_paths("/data/x");
         r.set_check_interval_ms(1000);
       },
       StatusCode::kInvalidArgument, "check interval 1000 ms"},
      {[](auto& r) {
         r.clear_cron();
         r.add_dataset_paths("data/x");
         r.set_check_interval_ms(60'000);
       },
       StatusCode::kInvalidArgument, "'data/x' is not absolute"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    auto request = CronRequest("weekly", "0 3 * * 1");
    if (i > 0) request.set_name("other");
    cases[i].edit(request);
    auto created = manager_->Create(request, "nlp", "alice");
    ASSERT_FALSE(created.ok()) << "case " << i;
    EXPECT_EQ(created.status().code(), cases[i].code) << "case " << i << ": " << created.status().ToString();
    EXPECT_NE(created.status().message().find(cases[i].mentions), std::string::npos)
        << "case " << i << ": '" << created.status().message() << "' lacks '" << cases[i].mentions << "'";
  }
  EXPECT_EQ(manager_->List("nlp").size(), 1u);  // nothing half-created
}

TEST_F(Schedules, NextWakeupIsTheNextFireTime) {
  CreateOk(CronRequest("hourly", "0 * * * *"));
  EXPECT_EQ(manager_->NextWakeupMs(), kMonday + 60 * kMinute);
  clock_.Advance(30 * kMinute);
  Round();
  EXPECT_EQ(manager_->NextWakeupMs(), kMonday + 120 * kMinute);
  ASSERT_TRUE(manager_->Pause("nlp", "hourly").ok());
  EXPECT_EQ(manager_->NextWakeupMs(), std::numeric_limits<int64_t>::max());
}

// ---- data triggers

class DataTriggers : public Schedules {
 protected:
  void Write(const std::string& text) {
    std::ofstream out(dir_ / "train.jsonl", std::ios::trunc);
    out << text;
  }
  pb::CreateScheduleRequest DataRequest() {
    pb::CreateScheduleRequest request = CronRequest("on-data", "");
    request.add_dataset_paths((dir_ / "train.jsonl").string());
    request.set_check_interval_ms(10 * kMinute);
    return request;
  }
};

TEST_F(DataTriggers, FiresOnlyWhenTheContentChanges) {
  Write("{\"a\": 1}\n");
  CreateOk(DataRequest());
  Round();  // first check: the baseline
  Round();  // its result
  EXPECT_EQ(launcher_->CountRuns(), 0u);
  ASSERT_EQ(Record("on-data").history_size(), 1);
  EXPECT_EQ(Record("on-data").history(0).outcome(), pb::FIRE_BASELINE);
  clock_.Advance(10 * kMinute);
  Round();
  Round();
  EXPECT_EQ(launcher_->CountRuns(), 0u);  // unchanged
  EXPECT_EQ(hasher_.requests, 2);
  Write("{\"a\": 1}\n{\"a\": 2}\n");
  clock_.Advance(5 * kMinute);
  Round();
  EXPECT_EQ(hasher_.requests, 2);  // not before the interval
  clock_.Advance(5 * kMinute);
  Round();
  Round();
  EXPECT_EQ(launcher_->CountRuns(), 1u);
  EXPECT_EQ(Record("on-data").history(1).outcome(), pb::FIRE_STARTED);
  EXPECT_EQ(Record("on-data").history(1).data_hash(), Record("on-data").data_trigger().last_hash());
}

TEST_F(DataTriggers, ACrashBeforeTheCommitFiresTheChangeOnceAfterRestart) {
  Write("v1");
  CreateOk(DataRequest());
  Round();
  Round();
  Write("v2");
  clock_.Advance(10 * kMinute);
  Round();
  manager_->Tick();  // the changed hash fires ... and the process dies before Flush
  CrashAndRestart();
  EXPECT_EQ(launcher_->CountRuns(), 0u);
  Round();
  Round();
  EXPECT_EQ(launcher_->CountRuns(), 1u);
  CrashAndRestart();
  clock_.Advance(10 * kMinute);
  Round();
  Round();
  EXPECT_EQ(launcher_->CountRuns(), 1u);  // recorded: the same content never fires again
}

TEST_F(DataTriggers, AnUnreadableDatasetIsRecordedOnceAndFiresNothing) {
  Write("v1");
  CreateOk(DataRequest());
  fs::remove(dir_ / "train.jsonl");
  for (int i = 0; i < 3; ++i) {
    Round();
    Round();
    clock_.Advance(10 * kMinute);
  }
  EXPECT_EQ(launcher_->CountRuns(), 0u);
  ASSERT_EQ(Record("on-data").history_size(), 1);
  EXPECT_EQ(Record("on-data").history(0).outcome(), pb::FIRE_FAILED);
  EXPECT_NE(Record("on-data").history(0).message().find("cannot read"), std::string::npos);
}

}  // namespace
}  // namespace anneal::coordinator
