// The data subcommands of anneal-train (and of the test tool anneal-data):
//   tokenize --tokenizer DIR (--text T | --file F) [--json] [--add-special-tokens]
//       prints the ids (space separated, or {"ids": [...]} with --json)
//   tokenize --tokenizer DIR --jsonl F          one JSON per line: {"text": s} or {"hex": bytes}
//       -> {"ids": [...], "decoded": "..."} per line (batch mode for parity tests)
//   data preview --config job.yaml [--num N]    rendered examples of the job's datasets with their label masks
//   data encode --tokenizer DIR --template NAME --jsonl F [--cutoff-len N] [--train-on-prompt]
//       [--mask-history] [--pack]                 {"messages": [...], "system": s} per line (a line may also
//                                                 set cutoff_len, train_on_prompt, mask_history)
//       -> {"input_ids": [...], "labels": [...]} per line (template parity tests); with --pack, packed
//       sequences {"input_ids", "labels", "position_ids", "segment_ids"} of cutoff_len + 1 tokens instead
//   clean --config job.yaml [--set key=value]   a kind: clean job (clean_job.h): the agent's `clean` subcommand
//   data load / data clean / data split          (docs/data.md); data load --stream reads through the
//                                                bounded-memory ConversationStream (stream.h) where it can
//   data prepare ...                             the tokenized cache as the trainer builds it (prepare_command.h)
// Errors print one line to stderr and exit with status 2.
//
// Ownership: the registered callbacks own their parsed arguments (shared_ptr captured by the lambdas).
// Thread-safety: registers callbacks on the given CLI::App; call once from main().
//
// Example:
//   CLI::App app{"anneal-train"};
//   anneal::data::AddDataCommands(app);
//   CLI11_PARSE(app, argc, argv);
#pragma once

#include <CLI/CLI.hpp>

namespace anneal::data {

void AddDataCommands(CLI::App& app);

}  // namespace anneal::data
