// Tagged answers (stage kto): a prompt with one answer marked desirable or undesirable (kto_tag), encoded as
// LLaMA-Factory's FeedbackDatasetProcessor does (processor/feedback.py, v0.9.5), with the KL completion beside it:
//
//   target   input_ids = prompt[:s] + answer[:t]        labels = [-100] * s + answer[:t]
//   KL       input_ids = prompt[:s'] + kl_answer[:t']   labels = [-100] * s' + kl_answer[:t']
//   (s, t) = infer_seqlen(len(prompt), len(answer), cutoff_len), the KL row's its own
//
// The KL answer of row i is row i-1's answer (mismatched pairs: "a +1 offset to the order of completions"),
// rotated within each batch of LLaMA-Factory's map: the rows are cut into preprocessing_num_workers contiguous
// shards (HF datasets' contiguous sharding) and each shard into batches of preprocessing_batch_size; the first
// row of a batch takes the batch's last answer. The KL prompt is row i's prompt (with its system). Each answer
// goes through encode_oneturn, and the template's efficient_eos appends EOS, as for the target.
//
// The trainer's token cache keeps each example as three consecutive rows: the target, the KL row, and a tag row
// (one token: 1 desirable, 0 undesirable).
//
// Ownership: values in, values out; the tokenizer and template are borrowed.
// Thread-safety: pure functions.
//
// Example:
//   std::vector<int64_t> partner = KlPartners(rows.size(), /*batch_size=*/1000, /*shards=*/1);
//   ASSIGN_OR_RETURN(FeedbackExample f, EncodeFeedback(tmpl, *tok, rows[i], rows[partner[i]].messages.back(), 1024));
#pragma once

#include <cstdint>
#include <vector>

#include "common/status.h"
#include "trainer/data/chat_template.h"
#include "trainer/data/dataset.h"
#include "trainer/data/sft.h"

namespace anneal::data {

struct FeedbackExample {
  SftExample target, kl;
  bool desirable = false;
};

// For each of n rows, the row whose answer is its KL completion (see the file comment).
std::vector<int64_t> KlPartners(int64_t n, int batch_size, int shards);

// `c` is a tagged row (c.kto_tag set; c.messages = prompt turns then the answer); `kl_answer` is its KL
// completion. INVALID_ARGUMENT when the row is not tagged or has no answer after an odd number of prompt turns.
StatusOr<FeedbackExample> EncodeFeedback(const ChatTemplate& t, const Tokenizer& tok, const Conversation& c,
                                         const Message& kl_answer, int cutoff_len);

}  // namespace anneal::data
