// Fuzz target: tokenizer.json loading (trainer/data/tokenizer.h). Input: the tokenizer.json text, optionally
// followed by a NUL byte and a tokenizer_config.json text. An accepted tokenizer must encode a few fixed texts
// (special tokens, invalid UTF-8, whitespace runs) to ids inside its vocabulary, and decode them.
#include <cstdint>
#include <string>
#include <string_view>

#include "bench/fuzz/fuzz_support.h"
#include "trainer/data/tokenizer.h"

using anneal::fuzz::FuzzCheck;
using namespace std::string_view_literals;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string_view json = input.substr(0, nul);
  const std::string_view config = nul == std::string_view::npos ? std::string_view() : input.substr(nul + 1);
  auto tokenizer = anneal::data::Tokenizer::FromJsonText(json, "fuzz/tokenizer.json", config);
  if (!tokenizer.ok()) {
    FuzzCheck(!tokenizer.status().message().empty(), "a refused tokenizer has an error message");
    return 0;
  }
  static const std::string_view kTexts[] = {"Hello world, 123!", "<|im_start|>user\nhi<|im_end|>\n",
                                            "  two  spaces\t\ttabs\n\n", "bad \xff\xfe utf8 \xe2\x82"sv,
                                            "\xc3\xa9t\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87"};
  const int32_t vocab = (*tokenizer)->vocab_size();
  for (const std::string_view text : kTexts) {
    for (const bool special : {false, true}) {
      auto ids = (*tokenizer)->Encode(text, special);
      if (!ids.ok()) continue;
      for (const int32_t id : *ids) FuzzCheck(id >= 0 && id < vocab, "encoded ids are inside the vocabulary");
      (void)(*tokenizer)->Decode(*ids, /*skip_special_tokens=*/special);
    }
  }
  return 0;
}
