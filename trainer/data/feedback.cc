#include "trainer/data/feedback.h"

#include <algorithm>
#include <string>

#include "trainer/data/pairwise.h"

namespace anneal::data {
namespace {

// The prompt turns + one answer encoded with encode_oneturn, efficient_eos, and cut by infer_seqlen.
StatusOr<SftExample> EncodeAnswer(const ChatTemplate& t, const Tokenizer& tok, std::vector<Message> messages,
                                  const std::string& system, int cutoff_len) {
  ASSIGN_OR_RETURN(EncodedPair pair, EncodeOneturn(t, tok, messages, system));
  std::vector<int32_t>& prompt = pair.first;
  std::vector<int32_t>& answer = pair.second;
  if (t.efficient_eos) answer.push_back(tok.eos_id().value_or(kIgnoreIndex));
  const auto [prompt_len, answer_len] =
      InferSeqlen(static_cast<int>(prompt.size()), static_cast<int>(answer.size()), cutoff_len);
  return PromptAnswerExample(std::move(prompt), std::move(answer), prompt_len, answer_len);
}

}  // namespace

std::vector<int64_t> KlPartners(int64_t n, int batch_size, int shards) {
  std::vector<int64_t> partner(static_cast<size_t>(n));
  const int64_t num_shards = std::max<int64_t>(1, std::min<int64_t>(shards, n));
  const int64_t batch = std::max(1, batch_size);
  int64_t begin = 0;
  for (int64_t s = 0; s < num_shards; ++s) {  // HF datasets' contiguous shards: the first n % shards get one more
    const int64_t size = n / num_shards + (s < n % num_shards ? 1 : 0);
    for (int64_t lo = begin; lo < begin + size; lo += batch) {
      const int64_t hi = std::min(begin + size, lo + batch);
      for (int64_t i = lo; i < hi; ++i) partner[static_cast<size_t>(i)] = i == lo ? hi - 1 : i - 1;
    }
    begin += size;
  }
  return partner;
}

StatusOr<FeedbackExample> EncodeFeedback(const ChatTemplate& t, const Tokenizer& tok, const Conversation& c,
                                         const Message& kl_answer, int cutoff_len) {
  if (!c.kto_tag) return InvalidArgumentError("not a KTO row: it has no kto_tag");
  if (c.messages.size() % 2 != 0 || c.messages.empty()) {
    return InvalidArgumentError("a KTO row needs prompt turns ending with a user turn, then the answer (" +
                                std::to_string(c.messages.size()) + " messages)");
  }
  FeedbackExample out;
  out.desirable = *c.kto_tag;
  ASSIGN_OR_RETURN(out.target, EncodeAnswer(t, tok, c.messages, c.system, cutoff_len));
  std::vector<Message> kl(c.messages.begin(), c.messages.end() - 1);
  kl.push_back(kl_answer);
  ASSIGN_OR_RETURN(out.kl, EncodeAnswer(t, tok, std::move(kl), c.system, cutoff_len));
  return out;
}

}  // namespace anneal::data
