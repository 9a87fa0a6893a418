// The evaluation job (`anneal-train eval`): loss and perplexity on a dataset, multiple-choice accuracy by
// log-likelihood (MMLU-style CSV), and greedy generation of samples. Results go to events ("eval") and to a
// JSON file (eval.output_file, default <output_dir>/eval_results.json).
//
//   loss     : sum of token losses / label tokens over eval_dataset (else dataset), perplexity = exp(loss)
//   mmlu     : <task_dir>/<subject>_test.csv rows "question,A,B,C,D,answer" (no header), n_shot examples from
//              <subject>_dev.csv; the prompt is
//                "The following are multiple choice questions (with answers) about <subject>.\n\n"
//                + shots ("<q>\nA. ..\nB. ..\nC. ..\nD. ..\nAnswer: X\n\n") + "<q>\nA. ..\nD. ..\nAnswer:"
//              and the prediction is the choice whose token (" A" .. " D", last token of each) has the highest
//              logit at the last position. Accuracy per subject and overall.
//   generate : the first num_samples prompts of the eval data, rendered with the chat template, answered greedily
//              (max_new_tokens).
// The model is model_name_or_path plus, when given, the PEFT adapter adapter_name_or_path.
//
// Thread-safety: runs on the calling thread.
#pragma once

#include <nlohmann/json.hpp>

#include "common/status.h"
#include "jobspec/jobspec.h"

namespace anneal::eval {

StatusOr<nlohmann::json> RunEvaluation(const jobspec::JobSpec& spec);

}  // namespace anneal::eval
