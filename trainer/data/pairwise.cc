#include "trainer/data/pairwise.h"

#include <algorithm>
#include <string>

namespace anneal::data {

StatusOr<EncodedPair> EncodeOneturn(const ChatTemplate& t, const Tokenizer& tok, const std::vector<Message>& messages,
                                    std::string_view system) {
  // encode_multiturn with the history's thoughts discarded is encode_oneturn split per turn (template.py).
  ASSIGN_OR_RETURN(std::vector<EncodedPair> turns, EncodeMultiturn(t, tok, messages, system,
                                                                   /*discard_history_cot=*/true));
  EncodedPair out;
  for (size_t k = 0; k < turns.size(); ++k) {
    out.first.insert(out.first.end(), turns[k].first.begin(), turns[k].first.end());
    if (k + 1 < turns.size()) {
      out.first.insert(out.first.end(), turns[k].second.begin(), turns[k].second.end());
    } else {
      out.second = std::move(turns[k].second);
    }
  }
  return out;
}

StatusOr<PairExample> EncodePairwise(const ChatTemplate& t, const Tokenizer& tok, const Conversation& c,
                                     int cutoff_len) {
  if (!c.rejected) return InvalidArgumentError("not a preference pair: the row has no rejected answer");
  if (c.messages.size() % 2 != 0 || c.messages.empty()) {
    return InvalidArgumentError("a preference pair needs prompt turns ending with a user turn, then the answers (" +
                                std::to_string(c.messages.size()) + " messages with the chosen answer)");
  }
  ASSIGN_OR_RETURN(EncodedPair chosen, EncodeOneturn(t, tok, c.messages, c.system));
  std::vector<Message> with_rejected(c.messages.begin(), c.messages.end() - 1);
  with_rejected.push_back(*c.rejected);
  ASSIGN_OR_RETURN(EncodedPair rejected, EncodeOneturn(t, tok, with_rejected, c.system));
  std::vector<int32_t> prompt = std::move(chosen.first);
  std::vector<int32_t>& chosen_ids = chosen.second;
  std::vector<int32_t>& rejected_ids = rejected.second;
  if (t.efficient_eos) {
    const int32_t eos = tok.eos_id().value_or(kIgnoreIndex);
    chosen_ids.push_back(eos);
    rejected_ids.push_back(eos);
  }
  const auto [source_len, target_len] = InferSeqlen(
      static_cast<int>(prompt.size()), static_cast<int>(std::max(chosen_ids.size(), rejected_ids.size())), cutoff_len);
  return PairExample{PromptAnswerExample(prompt, std::move(chosen_ids), source_len, target_len),
                     PromptAnswerExample(std::move(prompt), std::move(rejected_ids), source_len, target_len)};
}

SftExample PromptAnswerExample(std::vector<int32_t> prompt, std::vector<int32_t> answer, int prompt_len,
                               int answer_len) {
  prompt.resize(std::min<size_t>(prompt.size(), static_cast<size_t>(std::max(prompt_len, 0))));
  answer.resize(std::min<size_t>(answer.size(), static_cast<size_t>(std::max(answer_len, 0))));
  SftExample ex;
  ex.labels.assign(prompt.size(), kIgnoreIndex);
  ex.labels.insert(ex.labels.end(), answer.begin(), answer.end());
  ex.input_ids = std::move(prompt);
  ex.input_ids.insert(ex.input_ids.end(), answer.begin(), answer.end());
  return ex;
}

}  // namespace anneal::data
