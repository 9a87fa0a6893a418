"""Test corpus for tokenizer parity: fixed hand-written cases plus a seeded random mix (same every run)."""
import random

FIXED = [
    "Hello world!",
    "The quick brown fox jumps over the lazy dog. It's 5 o'clock; we'll see—won't we?",
    "你好，世界！这是一个测试句子，包含中文标点。",
    "日本語のテキストとカタカナ、ひらがな。한국어 문장도 있습니다. مرحبا بالعالم",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "#include <vector>\nint main() { std::vector<int> v{1,2,3}; for (auto& x : v) x *= 2; return 0; }\r\n",
    "Emoji: 😀🎉👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️ and symbols ©®™ ∑∫√ → ⇒",
    "odd   whitespace\t\ttabs\n\n\nnewlines  \r\n  trailing   ",
    "\u00a0nbsp\u00a0and\u3000ideographic space\u2003em space\u200bzero-width",
    "   leading spaces",
    "trailing spaces   ",
    "\n\nstarts with newlines",
    "1234567890123456789012345678901234567890 and 3.14159265358979 and 1,000,000",
    "phone: +1 (555) 123-4567, ip: 192.168.0.1, hex: 0xDEADBEEF",
    "combining: e\u0301 a\u0308 n\u0303 — precomposed: é ä ñ; ligature ﬁ; fullwidth ＡＢＣ１２３",
    "URL https://example.com/path?q=1&x=%20y#frag and email a.b@c.io",
    "MiXeD CaSe WORDS and ALLCAPS and camelCaseIdentifiers and snake_case_names",
    "quotes: \"double\" 'single' `back` «guillemets» „low“",
    "",
    " ",
    "a",
    "\t",
    "<unk> <s> </s> inside text",
    "<s>starts with a special token",
    "<s> space after special</s>",
    "</s></s>adjacent<s><s>",
    "<｜begin▁of▁sentence｜>Hello<｜end▁of▁sentence｜> world <｜begin▁of▁sentence｜>",
    "User: hi<｜end▁of▁sentence｜>\n\nAssistant: ok",
    "<｜begin▁of▁sentence｜>starts special",
    "▁already▁has▁metaspace ▁ x",
    "Ünïcödé façade naïve coöperate Zürich Ελληνικά русский текст",
    "Math: ∀x∈ℝ, x² ≥ 0; ∫₀¹ f(x)dx ≈ ½",
    "long " * 200,
    "word" * 150,
    "。" * 50 + "！？" * 10,
    "mixed中English混合text123数字",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙 astral plane 𠀀𠀁",
]

# Byte strings that are not valid UTF-8: compared with HF on bytes.decode("utf-8", "replace").
INVALID = [
    b"abc\xffdef",
    b"\xc3\x28 broken two-byte",
    b"\xe2\x82 truncated three-byte",
    b"\xf0\x9f\x98 truncated emoji",
    b"\xed\xa0\x80 surrogate",
    b"\x80\x80\x80 lone continuations",
    b"ok \xc0\xaf overlong",
    b"tail \xf4\x90\x80\x80 above max",
    b"end with \xe4\xbd",
]

ALPHABETS = [
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "0123456789",
    " \t\n\r  ",
    ".,;:!?'\"()[]{}<>/\\|@#$%^&*-_=+~`",
    "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年",
    "😀😂🥲🎉🚀🌍👍🏽✨🔥💡",
    "àéîõüçñßøåæœ",
    "ひらがなカタカナ",
    "\u00a0\u3000\u2028\u200b",
]


def random_corpus(n=300, seed=1234):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 12)):
            alpha = rng.choice(ALPHABETS)
            parts.append("".join(rng.choice(alpha) for _ in range(rng.randint(1, 10))))
            if rng.random() < 0.3:
                parts.append(" ")
        out.append("".join(parts))
    return out


def texts():
    return FIXED + random_corpus()
