// `data prepare`: builds (or opens) the tokenized cache of datasets as the trainer does (pipeline.h), without a
// job spec, and reports what it cost. Used by the bounded-memory tests and bench/data/prepare_memory.py.
//
//   data prepare --tokenizer DIR --template NAME --dataset a,b [--dataset-dir D] --cache-dir C
//       [--stage sft|pt|dpo] [--no-packing] [--preprocessing-batch-size N] [--preprocessing-num-workers N]
//       [--cutoff-len N] [--max-samples N] [--mix-strategy S] [--interleave-probs p,q]
//       [--seed N] [--skip-bad-rows] [--threads N] [--chunk-rows N] [--in-memory]
//   -> one JSON object on stdout: {"cache": dir, "key", "examples", "tokens", "streamed", "built",
//      "rows", "skipped", "seconds", "peak_rss_kib"} (peak_rss_kib: VmHWM of this process, /proc/self/status)
//   --in-memory loads every row before encoding (DataConfig::bounded_memory = false): the reference the
//   bounded-memory build is compared with. Errors print one line to stderr and exit with status 2.
//
// Thread-safety: registers a callback; call once from main(). Example:
//   CLI::App* data = app.add_subcommand("data"); AddPrepareCommand(*data);
#pragma once

#include <CLI/CLI.hpp>

namespace anneal::data {

void AddPrepareCommand(CLI::App& data);

}  // namespace anneal::data
