// A `kind: clean` job (jobspec.h CleanSpec): `data clean` run by the agent like any other job kind, and the
// pieces `data clean` / `data split` share for what they write.
//
// `anneal-train clean --config JOB.yaml [--set key=value ...]` (also anneal-data) loads data.dataset from
// data.dataset_dir (max_samples, skip_bad_rows, mix_strategy, interleave_probs, seed as a train job loads them),
// cleans it with the `clean` keys (clean.h), and writes into train.output_dir:
//   <clean.dataset_name>.jsonl   the kept conversations (sharegpt messages; tokenized rows as input_ids/labels)
//   dataset_info.json            naming it <clean.dataset_name>, so a later job reads it with
//                                `dataset_dir: <output_dir>` and `dataset: <clean.dataset_name>`
//   clean_report.json            the report (`data clean --report`'s JSON)
// Events (docs/trainer-contract.md, on ANNEAL_EVENTS_FD): started; a `metrics` event at step 0 whose values are
// the report's counts (rows, kept, dropped, dropped_<reason>, skipped_bad_rows), so the job record carries them
// and `${steps.NAME.metrics.kept}` resolves; a `message` with the one-line summary; finished (status ok and
// output, or error and the message). Exit status 0; 2 for a bad spec; 1 when cleaning or writing fails.
//
// Thread-safety: RunCleanJob is a pure function of the spec and the files. AddCleanJobCommand: call once.
//
// Example:
//   ASSIGN_OR_RETURN(jobspec::JobSpec spec, jobspec::LoadJobSpecFile("clean.yaml"));
//   ASSIGN_OR_RETURN(CleanJobResult r, RunCleanJob(spec));  // r.report["kept"]
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "common/status.h"
#include "jobspec/jobspec.h"
#include "trainer/data/clean.h"
#include "trainer/data/dataset.h"

namespace anneal::data {

struct CleanJobResult {
  nlohmann::json report;   // clean_report.json
  nlohmann::json counts;   // the metrics event's values: rows, kept, dropped, dropped_<reason>, skipped_bad_rows
  std::string summary;     // "120 rows, 100 kept, 20 dropped, 15 exact_duplicate, ..."
  std::string output_dir;  // absolute
};

CleanOptions CleanOptionsOf(const jobspec::CleanSpec& spec);
StatusOr<CleanJobResult> RunCleanJob(const jobspec::JobSpec& spec);

// Shared with `data clean` and `data split`:
// A conversation as a JSON line that loads back as sharegpt messages (a system prompt as the leading system turn).
nlohmann::json ConversationJson(const Conversation& c);
// The dataset_info.json entry of a file of such lines (formatting tokenized for pre-tokenized rows).
nlohmann::json ConversationsDatasetInfo(const std::string& file_name, bool tokenized);
// The report of `data clean --report`.
nlohmann::json CleanReportJson(size_t rows, int64_t skipped_bad_rows, const CleanResult& result);
std::string CleanSummary(size_t rows, const CleanResult& result);

// Registers `clean --config JOB.yaml [--set key=value]` on `app` (anneal-train's subcommand of kind clean).
void AddCleanJobCommand(CLI::App& app);

}  // namespace anneal::data
