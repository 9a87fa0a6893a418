// Preference pairs (stage dpo): a prompt with a chosen and a rejected answer, encoded exactly as LLaMA-Factory's
// PairwiseDatasetProcessor does (processor/pairwise.py, v0.9.5): each answer is encoded after the prompt with
// encode_oneturn (the template renders prompt + answer; everything before the last answer is the prompt), the
// template's efficient_eos appends EOS to both answers, and cutoff_len is shared through infer_seqlen with the
// longer answer as the target ("the response is more important"), so the prompt is cut once for both:
//
//   chosen   input_ids = prompt[:s] + chosen[:t]     labels = [-100] * s + chosen[:t]
//   rejected input_ids = prompt[:s] + rejected[:t]   labels = [-100] * s + rejected[:t]
//   (s, t) = infer_seqlen(len(prompt), max(len(chosen), len(rejected)), cutoff_len)
//
// A batch of n pairs is the n chosen sequences then the n rejected ones (PairwiseDataCollatorWithPadding); the
// trainer's token cache keeps each pair as two consecutive rows, chosen first.
//
// Ownership: values in, values out; the tokenizer and template are borrowed.
// Thread-safety: pure functions.
//
// Example:
//   ASSIGN_OR_RETURN(PairExample p, EncodePairwise(tmpl, *tok, conversation, /*cutoff_len=*/1024));
//   cache.Add(p.chosen.input_ids, p.chosen.labels); cache.Add(p.rejected.input_ids, p.rejected.labels);
#pragma once

#include "common/status.h"
#include "trainer/data/chat_template.h"
#include "trainer/data/dataset.h"
#include "trainer/data/sft.h"

namespace anneal::data {

struct PairExample {
  SftExample chosen, rejected;
};

// LLaMA-Factory's encode_oneturn: (prompt ids, answer ids) for prompt turns followed by one answer (reasoning
// templates drop the thoughts of earlier answers and add the empty thought to the last, as LLaMA-Factory).
StatusOr<EncodedPair> EncodeOneturn(const ChatTemplate& t, const Tokenizer& tok, const std::vector<Message>& messages,
                                    std::string_view system);

// One training example from a prompt and an answer, each cut to its length from InferSeqlen (longer ones are
// truncated, shorter ones kept): input_ids = prompt + answer, labels = kIgnoreIndex over the prompt then the answer,
// as LLaMA-Factory's pairwise and feedback processors build them.
SftExample PromptAnswerExample(std::vector<int32_t> prompt, std::vector<int32_t> answer, int prompt_len,
                               int answer_len);

// `c` is a ranking row: c.messages = prompt turns then the chosen answer, c.rejected the rejected answer.
// INVALID_ARGUMENT when it is not (no rejected answer, or an even number of prompt turns).
StatusOr<PairExample> EncodePairwise(const ChatTemplate& t, const Tokenizer& tok, const Conversation& c,
                                     int cutoff_len);

}  // namespace anneal::data
