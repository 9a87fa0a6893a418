// PipelineManager: pipeline runs (docs/pipelines.md) in memory and in Table::kPipelines, and the state
// machines of a run and of its steps. The steps' jobs are ordinary jobs; the manager creates, watches and
// cancels them through a PipelineHost (the Coordinator: coordinator/pipeline_requests.cc), so that every job
// goes through the normal submit path (spec prepared, path policy of the team, authz as the run's owner).
//
// A step (pb::PipelineStepState):
//
//     WAITING ──(every need SUCCEEDED; job created / promote decided)──> RUNNING
//     WAITING ──(a need FAILED, SKIPPED or CANCELLED)─────────────────> SKIPPED
//     WAITING ──(the run was cancelled)───────────────────────────────> CANCELLED
//     WAITING ──(its job was refused: a reference or the spec)───────> FAILED
//     RUNNING ──(job SUCCEEDED; promote recorded its decision)───────> SUCCEEDED
//     RUNNING ──(job FAILED; the registry refused)───────────────────> FAILED
//     RUNNING ──(job CANCELLED)──────────────────────────────────────> CANCELLED
//     FAILED / SKIPPED / CANCELLED ──(retry)─────────────────────────> WAITING
//
// A run (pb::PipelineRunState):
//
//     RUNNING ──(every step ended)──> SUCCEEDED (all succeeded) | CANCELLED (cancel requested) | FAILED
//     FAILED / CANCELLED ──(retry)──> RUNNING      (succeeded steps are kept; the others wait again)
//
// The promote step is decided in the round its needs succeeded (WAITING -> RUNNING -> SUCCEEDED or FAILED in
// one Advance). Not being promoted is a success (the decision is in the step's message); an error of the
// registry is a failure.
//
// Rounds and durability: Advance() runs in every Tick. A step's state change, its job's creation and the run
// record are put into the same round batch, so a restart never creates a step's job twice. A job's end is
// taken only once it is committed (PipelineHost::JobOutcome reads it from the store, with the metrics the job
// reported), so a step never succeeds on metrics that a crash could lose. Recover() reloads every run not
// ended; the next Advance continues them.
//
// Thread-safety: none; the coordinator's loop owns it.
// Ownership: borrows the batch, the store, the clock and the host; all must outlive it.
//
// Example:
//   PipelineManager pipelines(&batch, store, &clock, &host);
//   RETURN_IF_ERROR(pipelines.Recover());
//   std::string id = pipelines.NextId();
//   pipelines.Create(std::move(run_with_id));  // steps WAITING
//   pipelines.Advance();                         // creates the jobs of the steps with no needs
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "coordinator/clock.h"
#include "protocol/anneal.pb.h"
#include "storage/state_store.h"

namespace anneal::coordinator {

// A step's job once its end is committed.
struct StepJobOutcome {
  pb::JobState state = pb::JOB_STATE_UNSPECIFIED;  // SUCCEEDED, FAILED or CANCELLED
  std::string output_dir;
  std::map<std::string, double> metrics;  // the last value of each key the job reported
  std::string result;                     // the job's final message
};

// The promote step's result.
struct PromoteOutcome {
  bool promoted = false;
  std::string version;  // the version registered
  std::string message;  // the decision, both numbers
};

// A step's job as created.
struct StartedStepJob {
  std::string job_id;
  std::string output_dir;  // the job's resolved output_dir (RunOutputDir)
};

// What the manager asks of the coordinator. Every call happens on the loop, inside the current round.
class PipelineHost {
 public:
  virtual ~PipelineHost() = default;
  // Creates the step's job from `spec_yaml` (references substituted) and `overrides`, its output_dir made the
  // run's own (RunOutputDir); the job, or the refusal.
  virtual StatusOr<StartedStepJob> StartStepJob(const pb::PipelineRunRecord& run, const pb::PipelineStepRecord& step,
                                                const std::string& spec_yaml,
                                                const std::vector<std::string>& overrides) = 0;
  // nullopt while the job has not ended or its end is not committed yet.
  virtual std::optional<StepJobOutcome> JobOutcome(const std::string& job_id) = 0;
  virtual void CancelJob(const std::string& job_id, const std::string& reason) = 0;
  // ${models.NAME.production.path}: the files of the team's production version (NOT_FOUND when none).
  virtual StatusOr<std::string> ProductionPath(const std::string& team, const std::string& model) = 0;
  // The promote step (its train and eval steps SUCCEEDED): registers the version and decides.
  virtual StatusOr<PromoteOutcome> Promote(const pb::PipelineRunRecord& run, const pb::PipelineStepRecord& step) = 0;
};

class PipelineManager {
 public:
  PipelineManager(storage::WriteBatch* batch, const storage::StateStore* store, const Clock* clock, PipelineHost* host);

  // Loads the id counter and every run not ended. Call once, after the jobs are recovered.
  Status Recover();

  // The id of the next run (pipe-000001, ...); the counter moves on.
  std::string NextId();
  std::string PeekNextId() const;  // what NextId will return
  // Enters a validated run (id set by NextId, steps from its YAML): RUNNING, every step WAITING.
  void Create(pb::PipelineRunRecord run);
  // Moves every run as far as it can go now (see the diagrams). Call once per round.
  void Advance();
  // Cancels a run: waiting steps CANCELLED, running jobs cancelled (their steps follow when they end). A run
  // that already ended is left as it is. NOT_FOUND for an unknown id. Returns the run's state.
  StatusOr<pb::PipelineRunState> Cancel(const std::string& run_id, const std::string& reason);
  // Re-runs the FAILED, SKIPPED and CANCELLED steps of an ended run (and so what depends on them); returns
  // their names. FAILED_PRECONDITION for a run still running or one that succeeded; NOT_FOUND.
  StatusOr<std::vector<std::string>> Retry(const std::string& run_id);

  // A run not ended (nullptr otherwise).
  const pb::PipelineRunRecord* FindActive(const std::string& run_id) const;
  // A run, in memory or from the store; NOT_FOUND "no pipeline run '<id>'".
  StatusOr<pb::PipelineRunRecord> Get(const std::string& run_id) const;
  // Runs newest first: the active ones, and with `include_ended` the ended ones too, at most `limit`, filtered
  // by `keep`.
  StatusOr<std::vector<pb::PipelineRunRecord>> List(
      bool include_ended, size_t limit, const std::function<bool(const pb::PipelineRunRecord&)>& keep) const;
  size_t ActiveCount() const { return runs_.size(); }

 private:
  bool AdvanceRun(pb::PipelineRunRecord& run);  // true when anything changed
  bool AdvanceStep(pb::PipelineRunRecord& run, pb::PipelineStepRecord& step);
  void StartStep(pb::PipelineRunRecord& run, pb::PipelineStepRecord& step);
  void EndStep(pb::PipelineStepRecord& step, pb::PipelineStepState state, const std::string& message);
  // The values of the references the step's spec uses; the first that cannot be resolved is the status.
  StatusOr<std::map<std::string, std::string>> ResolveReferences(const pb::PipelineRunRecord& run,
                                                                 const pb::PipelineStepRecord& step);
  void Write(const pb::PipelineRunRecord& run);

  storage::WriteBatch* batch_;
  const storage::StateStore* store_;
  const Clock* clock_;
  PipelineHost* host_;
  std::map<std::string, pb::PipelineRunRecord> runs_;  // the runs not ended
  uint64_t next_number_ = 1;
};

// The step's record in `run` (nullptr when it has no such step).
pb::PipelineStepRecord* FindStep(pb::PipelineRunRecord& run, const std::string& name);
const pb::PipelineStepRecord* FindStep(const pb::PipelineRunRecord& run, const std::string& name);
bool StepEnded(pb::PipelineStepState state);  // SUCCEEDED, FAILED, SKIPPED, CANCELLED
bool RunEnded(pb::PipelineRunState state);    // SUCCEEDED, FAILED, CANCELLED

// The output_dir a step's job gets: the spec's, with "/<run id>" appended unless one of its components is
// already the run id (a spec that uses ${pipeline.id}, or the output_dir of an earlier step of the run), so a
// later run never writes over an earlier one's files.
std::string RunOutputDir(const std::string& spec_output_dir, const std::string& run_id);

}  // namespace anneal::coordinator
