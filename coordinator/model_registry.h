// ModelRegistry: named models per team, each with numbered versions made from a succeeded train job's output
// (a PEFT adapter or a merged model in its output_dir), their stages, and the promote-if-better decision.
//
// A version records: the source job, the pipeline and step that made it, the base model, adapter or merged,
// its directory and top-level files (sizes, sha256 of small ones), the training datasets with content hashes,
// eval metrics per eval set, the resolved spec, its stage with every change (who, when, why) and the promote
// decision with both numbers. Stored in storage Table::kModels (keys: ModelKey / VersionKey below), every
// write into the caller's batch: the coordinator's round batch, so it commits with the rest of that round.
//
// Stages (pb::ModelStage; at most one PRODUCTION version per model):
//
//        register ──▶ CANDIDATE ──promote (better, or by hand)──▶ PRODUCTION
//                         │                                        │    ▲
//                         │ archive                 replaced by a  │    │ promote by hand
//                         ▼                         promotion      ▼    │ (rollback)
//                      ARCHIVED ◀──────────────────────────────── ARCHIVED
//   Edges (CheckStageChange; each has a test): CANDIDATE->PRODUCTION, CANDIDATE->ARCHIVED,
//   PRODUCTION->ARCHIVED (only when another version is promoted), ARCHIVED->PRODUCTION (rollback).
//   Refused with FAILED_PRECONDITION naming the version, its stage and what to do instead: any edge into
//   CANDIDATE, a stage to itself (promoting the production version, archiving an archived one), archiving the
//   production version by hand (promote another version; the production one is then archived).
//
// Outcomes of RegisterAndPromoteIfBetter (the pipeline's promote step):
//   INVALID_ARGUMENT  a bad team/model name (CheckModelName), an empty metric, a negative or non-finite margin;
//   FAILED_PRECONDITION  the source job is not a SUCCEEDED train job, has no output_dir, or is of another team;
//   OK, promoted      no production version yet (first version), or better than production by > margin: the
//                     candidate is PRODUCTION, the old production version ARCHIVED;
//   OK, not promoted  worse, a tie, within the margin, missing/NaN metric, or not comparable (production has no
//                     number for this eval set and the pipeline did not evaluate it): the version stays CANDIDATE.
//   Either way the version records the decision (PromoteDecision: both numbers, the text) and the candidate's
//   metrics under `eval_set`; production_metrics, when given, are recorded on the production version too.
//   Idempotent per source job: a second call for a job already registered in this model returns that version
//   and its recorded decision unchanged (a pipeline retried after a crash never makes two versions).
// The comparison is the pure DecidePromotion (coordinator/promotion.h).
//
// Protection: a registered version's directory (any stage: an archived one may be rolled back) is never
// deleted by checkpoint retention (CheckpointRegistry asks Protects) and never written again: CheckOutputDir
// refuses an output_dir that equals, contains or lies inside a version's directory.
//
// Thread-safety: none; the coordinator's loop owns it. Ownership: owns its in-memory copy; borrows the batch
// for each call only. Files: the FileInspector (default: InspectLocalFiles) reads the version's directory and
// datasets when they are visible on the coordinator's machine, bounded by kMaxInlineHashBytes.
//
// Example:
//   ModelRegistry models;
//   RETURN_IF_ERROR(models.Load(*store));
//   ASSIGN_OR_RETURN(PromoteResult r, models.RegisterAndPromoteIfBetter(request, clock.NowMs(), batch));
//   // r.promoted, r.version.version(), r.decision ("promoted: better by 0.04: candidate eval_loss 0.81 ...")
//   if (models.Protects(checkpoint.path())) { /* keep it */ }
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "jobspec/jobspec.h"
#include "protocol/anneal.pb.h"
#include "storage/state_store.h"

namespace anneal::coordinator {

struct PromoteRequest {
  std::string team, model;        // the registry model (created on first use in the team)
  pb::JobRecord source_job;       // the SUCCEEDED train job whose output (output_dir) becomes the new version
  std::string pipeline_id, step;  // provenance
  std::string metric;             // e.g. "eval_loss", "mmlu_accuracy"
  bool higher_is_better = false;
  double margin = 0;  // candidate must be better than production by more than this (absolute)
  std::map<std::string, double> candidate_metrics;  // the candidate's eval job's final metrics
  // The production version evaluated in the same pipeline on the same eval set, when the pipeline did so.
  std::optional<std::map<std::string, double>> production_metrics;
  std::string eval_set;                // fingerprint of the eval set: dataset names + content hashes (dataset_hash.h)
  std::string actor;                   // who (the pipeline's owner)
  std::string candidate_eval_job_id;   // optional: the eval job that measured candidate_metrics
  std::string production_eval_job_id;  // optional: the one that measured production_metrics
  // Optional: the training datasets' hashes when the caller has them; otherwise the registry hashes the
  // source spec's datasets itself (bounded, see FileInspector).
  std::vector<pb::DatasetFingerprint> datasets;
  // Optional: the train job whose output the source (an export job) merged; its spec's training datasets are
  // the version's, since the export itself reads none.
  std::optional<pb::JobRecord> trained_by;
};

struct PromoteResult {
  pb::ModelVersionRecord version;  // as stored after this call
  bool promoted = false;
  std::string decision;  // the decision text (also version.decision().text())
};

// Reading a version's files and training data on the coordinator's machine. Injected so tests and embedders
// decide what is read; both must return (never throw) and bound their work.
struct FileInspector {
  struct Files {
    std::vector<pb::CheckpointFile> files;  // relative to the directory
    uint64_t total_bytes = 0;
    std::string note;  // why the list is empty or partial
  };
  std::function<Files(const std::string& dir)> files;
  std::function<std::vector<pb::DatasetFingerprint>(const jobspec::DataSpec& data,
                                                    const std::vector<std::string>& names)>
      datasets;
};
// Files: the directory's top-level regular files (checkpoint-N/ and dot files skipped) with sizes, sha256 for
// those while the running total stays within kMaxInlineHashBytes. Datasets: each name with its content hash,
// or an empty hash when unreadable here or larger than kMaxInlineHashBytes.
inline constexpr uint64_t kMaxInlineHashBytes = 256ull << 20;
FileInspector InspectLocalFiles();

// INVALID_ARGUMENT unless 1-64 characters of [A-Za-z0-9._-], not starting with '.' or '-'. `what` names it.
Status CheckModelName(const std::string& name, const std::string& what = "model name");
// OK when the version may move to `to` (the edges drawn above); FAILED_PRECONDITION naming why not.
Status CheckStageChange(const pb::ModelVersionRecord& version, pb::ModelStage to);

// Keys in Table::kModels.
std::string ModelKey(const std::string& team, const std::string& name);
std::string VersionKey(const std::string& team, const std::string& name, uint32_t version);

class ModelRegistry {
 public:
  explicit ModelRegistry(FileInspector inspector = InspectLocalFiles());

  // Loads every model and version (at Coordinator::Recover). DATA_LOSS naming the key of a bad record.
  Status Load(const storage::StateStore& store);

  StatusOr<PromoteResult> RegisterAndPromoteIfBetter(const PromoteRequest& request, int64_t now_ms,
                                                     storage::WriteBatch& batch);
  // `anneal models register`: the job's output as a CANDIDATE version (no decision). Same checks on the job and
  // the same idempotency per source job as above.
  StatusOr<pb::ModelVersionRecord> Register(const std::string& team, const std::string& model,
                                            const pb::JobRecord& source_job, const std::string& actor, int64_t now_ms,
                                            storage::WriteBatch& batch);
  // By hand: the version into PRODUCTION (from CANDIDATE or ARCHIVED), the production one ARCHIVED.
  StatusOr<pb::ModelVersionRecord> Promote(const std::string& team, const std::string& model, uint32_t version,
                                           const std::string& actor, const std::string& reason, int64_t now_ms,
                                           storage::WriteBatch& batch);
  // By hand: a CANDIDATE version to ARCHIVED.
  StatusOr<pb::ModelVersionRecord> Archive(const std::string& team, const std::string& model, uint32_t version,
                                           const std::string& actor, const std::string& reason, int64_t now_ms,
                                           storage::WriteBatch& batch);

  const pb::ModelVersionRecord* Production(const std::string& team, const std::string& model) const;
  const pb::ModelRecord* FindModel(const std::string& team, const std::string& model) const;
  const pb::ModelVersionRecord* FindVersion(const std::string& team, const std::string& model, uint32_t version) const;
  std::vector<pb::ModelVersionRecord> Versions(const std::string& team, const std::string& model) const;
  std::vector<pb::ModelRecord> Models(const std::string& team = "") const;  // empty team: all, by (team, name)
  size_t size() const { return models_.size(); }

  // Is `path` inside (or equal to) a registered version's directory, or does it contain one? Checkpoint
  // retention must not delete it.
  bool Protects(const std::string& path) const;
  // The version whose directory `dir` equals, contains or lies inside; nullptr when none.
  const pb::ModelVersionRecord* Overlapping(const std::string& dir) const;
  // FAILED_PRECONDITION naming the version when `output_dir` overlaps one (a run must not overwrite it).
  Status CheckOutputDir(const std::string& output_dir) const;

 private:
  struct Model {
    pb::ModelRecord record;
    std::map<uint32_t, pb::ModelVersionRecord> versions;
  };
  Model* Find(const std::string& team, const std::string& model);
  const Model* Find(const std::string& team, const std::string& model) const;
  StatusOr<pb::ModelVersionRecord*> FindVersionForChange(const std::string& team, const std::string& model,
                                                         uint32_t version);
  // Checks the job and returns the model's version of it (registered before) or a fresh CANDIDATE.
  StatusOr<std::pair<Model*, pb::ModelVersionRecord*>> RegisterVersion(const std::string& team,
                                                                       const std::string& model,
                                                                       const pb::JobRecord& job,
                                                                       const std::string& actor, int64_t now_ms,
                                                                       bool* existed, storage::WriteBatch& batch);
  void ChangeStage(pb::ModelVersionRecord& version, pb::ModelStage to, const std::string& actor,
                   const std::string& reason, int64_t now_ms);
  // `version` into PRODUCTION, the current production one ARCHIVED ("replaced by vN"); writes both.
  void MakeProduction(Model& model, pb::ModelVersionRecord& version, const std::string& actor,
                      const std::string& reason, int64_t now_ms, storage::WriteBatch& batch);
  void Write(const Model& model, storage::WriteBatch& batch) const;
  void Write(const pb::ModelVersionRecord& version, storage::WriteBatch& batch) const;

  FileInspector inspector_;
  std::map<std::pair<std::string, std::string>, Model> models_;  // (team, name)
};

}  // namespace anneal::coordinator
