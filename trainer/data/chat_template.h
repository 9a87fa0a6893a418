// Chat templates as code: the LLaMA-Factory templates llama3, qwen, qwen3, qwen3_nothink, deepseek, deepseek3,
// deepseekr1, mistral, llama2, alpaca, empty and default, rendering exactly what LLaMA-Factory v0.9.5
// (src/llamafactory/data/template.py, formatter.py) renders: the same slot strings, default system, stop words,
// efficient_eos and replace_eos, the Llama2 class (system folded into the first user turn) and the reasoning
// class (an empty "<think>\n\n</think>\n\n" prepended to answers that carry no thought).
//
// Like LLaMA-Factory, each slot string is tokenized on its own (add_special_tokens=false) and {bos,eos}
// slots become the tokenizer's ids, so token boundaries match too.
//
// Ownership: templates are values copied out of a static registry; the Tokenizer is borrowed.
// Thread-safety: templates are values; EncodeMultiturn is const over a shared Tokenizer.
//
// Example:
//   ASSIGN_OR_RETURN(ChatTemplate t, GetChatTemplate("qwen"));
//   RETURN_IF_ERROR(FixTokenizerForTemplate(t, tokenizer.get()));   // before sharing the tokenizer
//   ASSIGN_OR_RETURN(auto pairs, EncodeMultiturn(t, *tokenizer, messages, system));
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"
#include "trainer/data/tokenizer.h"

namespace anneal::data {

enum class Role { kUser, kAssistant, kSystem, kFunction, kObservation };
std::string_view RoleName(Role r);

struct Message {
  Role role = Role::kUser;
  std::string content;
};

// One formatter slot: literal text with {{content}}, or the tokenizer's BOS / EOS.
struct Slot {
  enum Kind { kText, kBos, kEos } kind = kText;
  std::string text;
};
using Slots = std::vector<Slot>;

struct ChatTemplate {
  enum class Class { kDefault, kLlama2, kReasoning };
  std::string name;
  Slots format_user, format_assistant, format_system, format_observation, format_prefix;
  std::string default_system;
  std::vector<std::string> stop_words;
  std::string thought_open = "<think>\n", thought_close = "\n</think>\n\n";
  bool efficient_eos = false;
  bool replace_eos = false;
  bool enable_thinking = true;
  Class cls = Class::kDefault;
};

std::vector<std::string> KnownChatTemplates();
// INVALID_ARGUMENT listing the known names when `name` is unknown.
StatusOr<ChatTemplate> GetChatTemplate(std::string_view name);

// LLaMA-Factory's fix_special_tokens: replace_eos makes stop_words[0] the EOS, the other stop words become
// special tokens, a missing EOS becomes <|endoftext|>, a missing pad becomes the EOS.
Status FixTokenizerForTemplate(const ChatTemplate& t, Tokenizer* tokenizer);

using EncodedPair = std::pair<std::vector<int32_t>, std::vector<int32_t>>;  // (prompt ids, response ids)

// encode_multiturn: messages alternate user/observation and assistant, ending with an assistant turn.
// `system` empty uses the template's default system. discard_history_cot: reasoning templates drop the
// thoughts of earlier answers (LLaMA-Factory does this when mask_history is on).
StatusOr<std::vector<EncodedPair>> EncodeMultiturn(const ChatTemplate& t, const Tokenizer& tok,
                                                   const std::vector<Message>& messages, std::string_view system,
                                                   bool discard_history_cot = false);

}  // namespace anneal::data
