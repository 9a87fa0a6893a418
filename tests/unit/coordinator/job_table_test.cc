// JobTable (coordinator/job_table.h) over a real store: numbering, events, the queue, persistence, recovery.
#include "coordinator/job_table.h"

#include <gtest/gtest.h>

#include "coordinator/store_keys.h"
#include "storage/keys.h"
#include "temp_store.h"

namespace anneal::coordinator {
namespace {

using storage::Table;
using testing::TempStore;

pb::JobRecord NewRecord(int64_t priority = 0, const std::string& name = "") {
  pb::JobRecord r;
  r.set_priority(priority);
  r.set_name(name);
  r.set_max_attempts(1);
  return r;
}

std::vector<pb::JobEvent> StoredEvents(TempStore& t, const std::string& job_id) {
  std::vector<pb::JobEvent> out;
  EXPECT_TRUE(t.store()
                  ->ScanRecords<pb::JobEvent>(Table::kEvents, storage::IdPrefix(job_id),
                                              [&](const pb::JobEvent& e) {
                                                out.push_back(e);
                                                return true;
                                              })
                  .ok());
  return out;
}

TEST(JobTable, SubmitNumbersJobsAndEntersPendingWithItsEvent) {
  TempStore t;
  JobTable jobs(t.batch(), t.store(), t.clock());
  ASSERT_TRUE(jobs.Recover(1000).ok());
  Job& first = jobs.Submit(NewRecord());
  Job& second = jobs.Submit(NewRecord(0, "named"));
  EXPECT_EQ(first.record.job_id(), "job-000001");
  EXPECT_EQ(first.record.name(), "job-000001");  // no name: the id
  EXPECT_EQ(second.record.job_id(), "job-000002");
  EXPECT_EQ(second.record.name(), "named");
  EXPECT_EQ(first.record.state(), pb::JOB_PENDING);
  EXPECT_EQ(first.record.submitted_at_ms(), t.clock()->NowMs());
  jobs.WriteChanged();
  t.Commit();
  auto events = StoredEvents(t, "job-000001");
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].seq(), 1u);
  EXPECT_EQ(events[0].kind(), "state");
  EXPECT_EQ(events[0].from_state(), pb::JOB_STATE_UNSPECIFIED);
  EXPECT_EQ(events[0].to_state(), pb::JOB_PENDING);
  EXPECT_EQ(events[0].message(), "submitted");
  pb::JobRecord stored;
  ASSERT_TRUE(t.store()->Get(Table::kJobs, "job-000002", &stored).ok());
  EXPECT_EQ(stored.next_event_seq(), 2u);
}

TEST(JobTable, PendingOrderIsPriorityThenSubmission) {
  TempStore t;
  JobTable jobs(t.batch(), t.store(), t.clock());
  ASSERT_TRUE(jobs.Recover(1000).ok());
  jobs.Submit(NewRecord(0));
  jobs.Submit(NewRecord(5));
  jobs.Submit(NewRecord(0));
  EXPECT_TRUE(jobs.TakeQueueGrew());
  EXPECT_FALSE(jobs.TakeQueueGrew());
  EXPECT_EQ(jobs.PendingInOrder(), (std::vector<std::string>{"job-000002", "job-000001", "job-000003"}));
  jobs.Transition(*jobs.Find("job-000002"), pb::JOB_STARTING, "placed");
  EXPECT_EQ(jobs.PendingInOrder(), (std::vector<std::string>{"job-000001", "job-000003"}));
}

TEST(JobTable, EventsCountUpAndEveryChangedRecordIsWrittenOnce) {
  TempStore t;
  JobTable jobs(t.batch(), t.store(), t.clock());
  ASSERT_TRUE(jobs.Recover(1000).ok());
  Job& job = jobs.Submit(NewRecord());
  jobs.AddEvent(job, "placement", "not placed yet: no node");
  jobs.Transition(job, pb::JOB_STARTING, "placed");
  jobs.WriteChanged();
  EXPECT_EQ(t.batch()->count(), 6u);  // counter, active key, 3 events, the record once
  t.Commit();
  auto events = StoredEvents(t, job.record.job_id());
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[1].kind(), "placement");
  EXPECT_EQ(events[1].to_state(), pb::JOB_PENDING);
  EXPECT_EQ(events[2].seq(), 3u);
  EXPECT_EQ(events[2].to_state(), pb::JOB_STARTING);
}

TEST(JobTable, ATaskThatEndedNeverChangesAgain) {
  TempStore t;
  JobTable jobs(t.batch(), t.store(), t.clock());
  ASSERT_TRUE(jobs.Recover(1000).ok());
  Job& job = jobs.Submit(NewRecord());
  (*job.record.mutable_task_states())["n1"] = pb::TASK_LAUNCHING;
  EXPECT_FALSE(jobs.SetTaskState(job, "n1", pb::TASK_RUNNING));  // changed, not ended
  EXPECT_FALSE(jobs.SetTaskState(job, "n1", pb::TASK_RUNNING));  // no change
  EXPECT_TRUE(jobs.SetTaskState(job, "n1", pb::TASK_FAILED));    // ended now
  EXPECT_FALSE(jobs.SetTaskState(job, "n1", pb::TASK_RUNNING));
  EXPECT_EQ(job.record.task_states().at("n1"), pb::TASK_FAILED);
  EXPECT_FALSE(jobs.SetTaskState(job, "n9", pb::TASK_RUNNING));  // not a task of this job
  EXPECT_EQ(job.record.task_states().count("n9"), 0u);
}

TEST(JobTable, ATerminalJobLeavesAfterTheCommitAndStaysReadableFromTheStore) {
  TempStore t;
  JobTable jobs(t.batch(), t.store(), t.clock());
  ASSERT_TRUE(jobs.Recover(1000).ok());
  Job& job = jobs.Submit(NewRecord());
  const std::string id = job.record.job_id();
  jobs.Transition(job, pb::JOB_CANCELLING, "cancel requested");
  jobs.Transition(job, pb::JOB_CANCELLED, "every task stopped");
  EXPECT_NE(jobs.Find(id), nullptr);  // until the commit
  jobs.WriteChanged();
  t.Commit();
  EXPECT_EQ(jobs.EraseEnded(), std::vector<std::string>{id});
  EXPECT_EQ(jobs.Find(id), nullptr);
  auto record = jobs.GetRecord(id);
  ASSERT_TRUE(record.ok());
  EXPECT_EQ(record->state(), pb::JOB_CANCELLED);
  EXPECT_GT(record->finished_at_ms(), 0);
  auto missing = jobs.GetRecord("job-999999");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("job-999999"), std::string::npos);
}

TEST(JobTable, RecoverLoadsActiveJobsCountersAndStopDeadlines) {
  TempStore t;
  {
    JobTable jobs(t.batch(), t.store(), t.clock());
    ASSERT_TRUE(jobs.Recover(1000).ok());
    jobs.Submit(NewRecord());
    Job& restarting = jobs.Submit(NewRecord());
    restarting.record.set_epoch(jobs.NextEpoch());
    jobs.Transition(restarting, pb::JOB_STARTING, "placed");
    jobs.Transition(restarting, pb::JOB_RESTARTING, "a task failed");
    Job& done = jobs.Submit(NewRecord());
    jobs.Transition(done, pb::JOB_CANCELLING, "cancel requested");
    jobs.Transition(done, pb::JOB_CANCELLED, "every task stopped");
    jobs.WriteChanged();
    t.Commit();
  }
  t.Reopen();
  JobTable jobs(t.batch(), t.store(), t.clock());
  ASSERT_TRUE(jobs.Recover(1000).ok());
  EXPECT_EQ(jobs.all().size(), 2u);  // the cancelled one is not active
  EXPECT_EQ(jobs.PendingInOrder(), std::vector<std::string>{"job-000001"});
  EXPECT_EQ(jobs.Find("job-000002")->stop_deadline_ms, t.clock()->NowMs() + 1000);
  EXPECT_EQ(jobs.Submit(NewRecord()).record.job_id(), "job-000004");
  EXPECT_EQ(jobs.NextEpoch(), 2u);
}

}  // namespace
}  // namespace anneal::coordinator
