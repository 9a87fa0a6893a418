#include "trainer/data/chat_template.h"

#include <map>

#include <fmt/format.h>

namespace anneal::data {
namespace {

Slot T(std::string s) { return {Slot::kText, std::move(s)}; }
Slot Bos() { return {Slot::kBos, ""}; }
Slot Eos() { return {Slot::kEos, ""}; }

// register_template(): fills the formatters LLaMA-Factory leaves at their defaults.
ChatTemplate Register(std::string name, Slots user, Slots assistant, Slots system, Slots observation, Slots prefix,
                      std::string default_system = "", std::vector<std::string> stop_words = {},
                      bool efficient_eos = false, bool replace_eos = false,
                      ChatTemplate::Class cls = ChatTemplate::Class::kDefault) {
  ChatTemplate t;
  t.name = std::move(name);
  Slots default_user = {T("{{content}}")};
  Slots default_assistant = efficient_eos ? Slots{T("{{content}}")} : Slots{T("{{content}}"), Eos()};
  t.format_user = user.empty() ? default_user : user;
  t.format_assistant = assistant.empty() ? default_assistant : assistant;
  t.format_system = system.empty() ? default_user : system;
  t.format_observation = !observation.empty() ? observation : t.format_user;
  t.format_prefix = std::move(prefix);
  t.default_system = std::move(default_system);
  t.stop_words = std::move(stop_words);
  t.efficient_eos = efficient_eos;
  t.replace_eos = replace_eos;
  t.cls = cls;
  return t;
}

const std::map<std::string, ChatTemplate>& Registry() {
  static const std::map<std::string, ChatTemplate> templates = [] {
    using C = ChatTemplate::Class;
    std::map<std::string, ChatTemplate> m;
    auto add = [&](ChatTemplate t) { m.emplace(t.name, std::move(t)); };
    add(Register("alpaca", {T("### Instruction:\n{{content}}\n\n### Response:\n")}, {T("{{content}}"), Eos(), T("\n\n")},
                 {}, {}, {},
                 "Below is an instruction that describes a task. Write a response that appropriately completes the "
                 "request.\n\n"));
    add(Register("deepseek", {T("User: {{content}}\n\nAssistant:")}, {}, {T("{{content}}\n\n")}, {}, {Bos()}));
    add(Register("deepseek3", {T("<\xEF\xBD\x9CUser\xEF\xBD\x9C>{{content}}<\xEF\xBD\x9C" "Assistant\xEF\xBD\x9C>")}, {},
                 {}, {}, {Bos()}));
    add(Register("deepseekr1", {T("<\xEF\xBD\x9CUser\xEF\xBD\x9C>{{content}}<\xEF\xBD\x9C" "Assistant\xEF\xBD\x9C>")}, {},
                 {}, {}, {Bos()}, "", {}, false, false, C::kReasoning));
    add(Register("default", {T("Human: {{content}}"), Eos(), T("\nAssistant:")}, {T("{{content}}"), Eos(), T("\n")},
                 {T("System: {{content}}"), Eos(), T("\n")}, {}, {}));
    add(Register("empty", {}, {T("{{content}}")}, {}, {}, {}));
    add(Register("llama2", {Bos(), T("[INST] {{content}} [/INST]")}, {}, {T("<<SYS>>\n{{content}}\n<</SYS>>\n\n")}, {},
                 {}, "", {}, false, false, C::kLlama2));
    add(Register("llama3",
                 {T("<|start_header_id|>user<|end_header_id|>\n\n{{content}}<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\n")},
                 {T("{{content}}<|eot_id|>")}, {T("<|start_header_id|>system<|end_header_id|>\n\n{{content}}<|eot_id|>")},
                 {T("<|start_header_id|>ipython<|end_header_id|>\n\n{{content}}<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\n")},
                 {Bos()}, "", {"<|eot_id|>", "<|eom_id|>"}, false, true));
    add(Register("mistral", {T("[INST] {{content}}[/INST]")}, {T(" {{content}}"), Eos()}, {T("{{content}}\n\n")},
                 {T("[TOOL_RESULTS] {\"content\": {{content}}}[/TOOL_RESULTS]")}, {Bos()}, "", {}, false, false,
                 C::kLlama2));
    add(Register("qwen", {T("<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n")},
                 {T("{{content}}<|im_end|>\n")}, {T("<|im_start|>system\n{{content}}<|im_end|>\n")},
                 {T("<|im_start|>user\n<tool_response>\n{{content}}\n</tool_response><|im_end|>\n<|im_start|>assistant\n")},
                 {}, "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.", {"<|im_end|>"}, false,
                 true));
    // Qwen3: qwen's slots without a default system; qwen3 is a reasoning template (an empty thought is
    // prepended to answers without one), qwen3_nothink a plain one (what LLaMA-Factory's examples use).
    for (const auto& [name, cls] : {std::pair{"qwen3", C::kReasoning}, std::pair{"qwen3_nothink", C::kDefault}}) {
      add(Register(name, {T("<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n")},
                   {T("{{content}}<|im_end|>\n")}, {T("<|im_start|>system\n{{content}}<|im_end|>\n")},
                   {T("<|im_start|>user\n<tool_response>\n{{content}}\n</tool_response><|im_end|>\n"
                      "<|im_start|>assistant\n")},
                   {}, "", {"<|im_end|>"}, false, true, cls));
    }
    return m;
  }();
  return templates;
}

// StringFormatter.apply: replaces the first {{content}} of each text slot.
Slots Apply(const Slots& slots, std::string_view content) {
  Slots out = slots;
  for (Slot& s : out) {
    if (s.kind != Slot::kText) continue;
    size_t p = s.text.find("{{content}}");
    if (p != std::string::npos) s.text.replace(p, 11, content);
  }
  return out;
}

Status AppendIds(const Tokenizer& tok, const Slots& elements, std::vector<int32_t>* ids) {
  for (const Slot& s : elements) {
    if (s.kind == Slot::kText) {
      if (s.text.empty()) continue;
      ASSIGN_OR_RETURN(auto part, tok.Encode(s.text, false));
      ids->insert(ids->end(), part.begin(), part.end());
    } else if (s.kind == Slot::kBos) {
      if (tok.bos_id()) ids->push_back(*tok.bos_id());
    } else if (tok.eos_id()) {
      ids->push_back(*tok.eos_id());
    }
  }
  return Status::Ok();
}

std::string Strip(std::string_view s) {
  size_t b = s.find_first_not_of(" \t\n\r\f\v"), e = s.find_last_not_of(" \t\n\r\f\v");
  return b == std::string_view::npos ? "" : std::string(s.substr(b, e - b + 1));
}

// remove_thought: drops every "<open>...<close>" (non-greedy, across lines), then leading newlines.
std::string RemoveThought(const ChatTemplate& t, const std::string& content) {
  std::string out;
  size_t pos = 0;
  while (true) {
    size_t b = content.find(t.thought_open, pos);
    if (b == std::string::npos) break;
    size_t e = content.find(t.thought_close, b + t.thought_open.size());
    if (e == std::string::npos) break;
    out.append(content, pos, b - pos);
    pos = e + t.thought_close.size();
  }
  out.append(content, pos);
  size_t lead = out.find_first_not_of('\n');
  return lead == std::string::npos ? "" : out.substr(lead);
}

}  // namespace

std::string_view RoleName(Role r) {
  switch (r) {
    case Role::kUser: return "user";
    case Role::kAssistant: return "assistant";
    case Role::kSystem: return "system";
    case Role::kFunction: return "function";
    case Role::kObservation: return "observation";
  }
  return "?";
}

std::vector<std::string> KnownChatTemplates() {
  std::vector<std::string> names;
  for (const auto& [n, t] : Registry()) names.push_back(n);
  return names;
}

StatusOr<ChatTemplate> GetChatTemplate(std::string_view name) {
  auto it = Registry().find(std::string(name));
  if (it == Registry().end())
    return InvalidArgumentError(fmt::format("unknown chat template '{}' (known: {})", name,
                                            fmt::join(KnownChatTemplates(), ", ")));
  return it->second;
}

Status FixTokenizerForTemplate(const ChatTemplate& t, Tokenizer* tok) {
  size_t first_stop = 0;
  if (t.replace_eos) {
    if (t.stop_words.empty()) return InvalidArgumentError("template " + t.name + ": replace_eos needs stop words");
    if (tok->eos_token() != t.stop_words[0]) tok->SetEosToken(t.stop_words[0]);
    first_stop = 1;
  }
  if (!tok->eos_id()) tok->SetEosToken("<|endoftext|>");
  if (!tok->pad_id()) tok->SetPadToken(tok->eos_token());
  for (size_t i = first_stop; i < t.stop_words.size(); ++i) tok->AddSpecialToken(t.stop_words[i]);
  return Status::Ok();
}

StatusOr<std::vector<EncodedPair>> EncodeMultiturn(const ChatTemplate& t, const Tokenizer& tok,
                                                   const std::vector<Message>& input, std::string_view system_in,
                                                   bool discard_history_cot) {
  std::vector<Message> messages = input;
  if (messages.empty() || messages.size() % 2 != 0)
    return InvalidArgumentError(fmt::format("a conversation needs prompt/response pairs, got {} messages", messages.size()));
  bool reasoning = t.cls == ChatTemplate::Class::kReasoning;
  if (reasoning) {
    if (!t.enable_thinking)
      for (size_t i = 1; i < messages.size(); i += 2) messages[i].content = RemoveThought(t, messages[i].content);
    if (discard_history_cot)
      for (size_t i = 1; i + 2 < messages.size(); i += 2) messages[i].content = RemoveThought(t, messages[i].content);
  }
  std::string system = system_in.empty() ? t.default_system : std::string(system_in);
  std::vector<std::vector<int32_t>> encoded;
  for (size_t i = 0; i < messages.size(); ++i) {
    const Message& m = messages[i];
    Slots elements;
    std::string content = m.content;
    if (i == 0) {
      elements = t.format_prefix;
      if (!system.empty()) {
        Slots sys = Apply(t.format_system, system);
        if (t.cls == ChatTemplate::Class::kLlama2) {
          // Llama2Template folds the (first slot of the) system formatter into the first user message.
          content = (sys.empty() ? std::string() : sys[0].text) + content;
        } else {
          elements.insert(elements.end(), sys.begin(), sys.end());
        }
      }
    }
    bool even = i % 2 == 0;
    Slots turn;
    switch (m.role) {
      case Role::kUser: turn = Apply(t.format_user, content); break;
      case Role::kObservation: turn = Apply(t.format_observation, content); break;
      case Role::kAssistant: turn = Apply(t.format_assistant, content); break;
      default:
        return InvalidArgumentError(fmt::format("message {}: role '{}' is not supported", i, RoleName(m.role)));
    }
    if (even != (m.role == Role::kUser || m.role == Role::kObservation))
      return InvalidArgumentError(fmt::format("message {}: role '{}' out of turn (user/observation, then assistant)", i,
                                              RoleName(m.role)));
    elements.insert(elements.end(), turn.begin(), turn.end());
    std::vector<int32_t> ids;
    RETURN_IF_ERROR(AppendIds(tok, elements, &ids));
    encoded.push_back(std::move(ids));
  }
  if (reasoning) {
    std::string open = Strip(t.thought_open), close = Strip(t.thought_close);
    std::vector<size_t> turns;
    if (discard_history_cot) turns.push_back(messages.size() - 2);
    else
      for (size_t i = 0; i < messages.size(); i += 2) turns.push_back(i);
    for (size_t i : turns) {
      const std::string& answer = messages[i + 1].content;
      if (answer.find(open) != std::string::npos || answer.find(close) != std::string::npos) continue;
      ASSIGN_OR_RETURN(auto thought, tok.Encode(t.thought_open + t.thought_close, false));
      if (!t.enable_thinking) encoded[i].insert(encoded[i].end(), thought.begin(), thought.end());
      else encoded[i + 1].insert(encoded[i + 1].begin(), thought.begin(), thought.end());
    }
  }
  std::vector<EncodedPair> pairs;
  for (size_t i = 0; i < encoded.size(); i += 2) pairs.emplace_back(std::move(encoded[i]), std::move(encoded[i + 1]));
  return pairs;
}

}  // namespace anneal::data
