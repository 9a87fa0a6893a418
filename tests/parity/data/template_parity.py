"""Chat templates and SFT masking of anneal-data vs LLaMA-Factory itself.

LLaMA-Factory (PyPI llamafactory, installed with --no-deps) is imported with its heavy optional modules
(datasets, torchaudio) stubbed: only data/template.py, formatter.py and processor/supervised.py run. For every
shipped template, on a byte-level and a SentencePiece-style tokenizer, over single-turn, multi-turn, system,
observation and reasoning conversations, with default options, train_on_prompt, mask_history and a small
cutoff_len, the input_ids and labels must be identical.

When llamafactory is not installed (CI's fresh virtualenv: it needs pip install --no-deps), the expected
outputs come from llamafactory_expected.json.gz, which this script wrote from LLaMA-Factory itself
(--write-fixture); with llamafactory present the comparison is always live.

Usage: template_parity.py ANNEAL_DATA_BINARY WORK_DIR [TOKENIZER_NAME_SUBSTRING] [--write-fixture]
"""
import copy
import gzip
import json
import os
import subprocess
import sys
import types

os.environ.setdefault("LLAMAFACTORY_VERBOSITY", "ERROR")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tokenizer_parity  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from testlib import import_stubbing  # noqa: E402

TEMPLATES = ["alpaca", "deepseek", "deepseek3", "deepseekr1", "default", "empty", "llama2", "llama3", "mistral", "qwen",
             "qwen3", "qwen3_nothink"]

CONVERSATIONS = [
    {"messages": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4."}]},
    {"system": "You are terse.", "messages": [{"role": "user", "content": "Name a color"},
                                              {"role": "assistant", "content": "Blue"}]},
    {"system": "Be kind. 你好", "messages": [
        {"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a joke\nplease"}, {"role": "assistant", "content": "Why did the chicken cross the road?"},
        {"role": "user", "content": "中文问题？"}, {"role": "assistant", "content": "中文回答。 With English."}]},
    {"messages": [{"role": "user", "content": "Call the tool"}, {"role": "assistant", "content": "calling"},
                  {"role": "observation", "content": "{\"temp\": 21}"}, {"role": "assistant", "content": "It is 21 degrees."}]},
    {"messages": [{"role": "user", "content": "Think first"},
                  {"role": "assistant", "content": "<think>\nLet me think.\n</think>\n\nThe answer is 7."},
                  {"role": "user", "content": "Again"}, {"role": "assistant", "content": "Sure: 8"}]},
    {"messages": [{"role": "user", "content": "long " * 40}, {"role": "assistant", "content": "answer " * 30}]},
]

OPTIONS = [
    {"cutoff_len": 2048, "train_on_prompt": False, "mask_history": False},
    {"cutoff_len": 2048, "train_on_prompt": True, "mask_history": False},
    {"cutoff_len": 2048, "train_on_prompt": False, "mask_history": True},
    {"cutoff_len": 24, "train_on_prompt": False, "mask_history": False},
    {"cutoff_len": 40, "train_on_prompt": False, "mask_history": True},
]


def import_llamafactory():
    def do_import():
        from llamafactory.data.template import get_template_and_fix_tokenizer
        from llamafactory.data.processor.supervised import SupervisedDatasetProcessor
        return get_template_and_fix_tokenizer, SupervisedDatasetProcessor
    return import_stubbing(do_import)


PACK_TEMPLATES = ["qwen", "llama2", "default"]
PACK_CUTOFF = 96
FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "llamafactory_expected.json.gz")


def cases():
    return [dict(c, **o) for o in OPTIONS for c in CONVERSATIONS]


def pack_convs():
    convs = []
    for k in range(4):  # varied lengths so bins hold several examples
        for c in CONVERSATIONS:
            msgs = [dict(m, content=m["content"] + " x" * k) for m in c["messages"]]
            convs.append({"messages": msgs, "system": c.get("system", "")})
    return convs


def llamafactory_expected(chosen):
    """{key: outputs} computed by LLaMA-Factory itself; key "encode|<tokenizer>|<template>" or "pack|...".
    Raises ModuleNotFoundError when llamafactory is absent (or ANNEAL_PARITY_USE_FIXTURE=1 asks for the fixture)."""
    if os.environ.get("ANNEAL_PARITY_USE_FIXTURE") == "1":
        raise ModuleNotFoundError("ANNEAL_PARITY_USE_FIXTURE=1")
    get_template, Processor = import_llamafactory()
    from llamafactory.data.processor.supervised import PackedSupervisedDatasetProcessor
    from transformers import PreTrainedTokenizerFast
    import llamafactory.data.template as lf_template
    pristine = copy.deepcopy(lf_template.TEMPLATES)

    def fresh(tdir, template, **opts):
        lf_template.TEMPLATES.clear()
        lf_template.TEMPLATES.update(copy.deepcopy(pristine))
        tok = PreTrainedTokenizerFast.from_pretrained(tdir)
        args = types.SimpleNamespace(template=template, tool_format=None, default_system=None, enable_thinking=True,
                                     preserve_thinking=False, neat_packing=True, **opts)
        return tok, get_template(tok, args), args

    expected = {}
    for tname, tdir in chosen.items():
        for template in TEMPLATES:
            tok, tmpl, base = fresh(tdir, template, **OPTIONS[0])
            rows = []
            for case in cases():
                args = types.SimpleNamespace(**dict(vars(base), **{k: case[k] for k in OPTIONS[0]}))
                proc = Processor(template=tmpl, tokenizer=tok, processor=None, data_args=args)
                msgs = case["messages"]
                ids, labels = proc._encode_data_example(prompt=msgs[:-1], response=msgs[-1:],
                                                        system=case.get("system", ""), tools="", images=[],
                                                        videos=[], audios=[])
                rows.append({"input_ids": ids, "labels": labels})
            expected["encode|%s|%s" % (tname, template)] = rows
        for template in PACK_TEMPLATES:
            tok, tmpl, args = fresh(tdir, template, cutoff_len=PACK_CUTOFF, train_on_prompt=False, mask_history=False)
            proc = PackedSupervisedDatasetProcessor(template=tmpl, tokenizer=tok, processor=None, data_args=args)
            convs = pack_convs()
            n = len(convs)
            lf = proc.preprocess_dataset({"_prompt": [c["messages"][:-1] for c in convs],
                                          "_response": [c["messages"][-1:] for c in convs],
                                          "_system": [c["system"] for c in convs], "_tools": [""] * n,
                                          "_images": [None] * n, "_videos": [None] * n, "_audios": [None] * n})
            expected["pack|%s|%s" % (tname, template)] = [
                {"input_ids": a, "labels": b, "position_ids": c, "segment_ids": d}
                for a, b, c, d in zip(lf["input_ids"], lf["labels"], lf["position_ids"], lf["attention_mask"])]
    return expected


def ours(binary, work, chosen):
    jsonl = os.path.join(work, "conversations.jsonl")
    with open(jsonl, "w") as f:
        for c in cases():
            f.write(json.dumps(c) + "\n")
    pack_jsonl = os.path.join(work, "pack.jsonl")
    with open(pack_jsonl, "w") as f:
        for c in pack_convs():
            f.write(json.dumps(c) + "\n")
    got = {}
    for tname, tdir in chosen.items():
        runs = [("encode", t, jsonl, []) for t in TEMPLATES]
        runs += [("pack", t, pack_jsonl, ["--cutoff-len", str(PACK_CUTOFF), "--pack"]) for t in PACK_TEMPLATES]
        for kind, template, path, extra in runs:
            # One anneal-data run per (tokenizer, template): every option set rides on the lines.
            out = subprocess.run([binary, "data", "encode", "--tokenizer", tdir, "--template", template, "--jsonl", path]
                                 + extra, capture_output=True, text=True, timeout=300)
            key = "%s|%s|%s" % (kind, tname, template)
            got[key] = ([json.loads(l) for l in out.stdout.split("\n") if l] if out.returncode == 0
                        else "anneal-data failed: " + out.stderr.strip())
    return got


def main():
    args = [a for a in sys.argv[1:] if a != "--write-fixture"]
    write_fixture = "--write-fixture" in sys.argv
    binary, work = args[0], args[1]
    which = args[2] if len(args) > 2 else ""
    os.makedirs(work, exist_ok=True)
    dirs = tokenizer_parity.tokenizer_dirs(work)
    chosen = {k: v for k, v in dirs.items() if (k.startswith("deepseek (") or "sp-legacy" in k) and which in k}
    try:
        expected = llamafactory_expected(chosen)
        source = "LLaMA-Factory (live)"
        if write_fixture:
            with gzip.open(FIXTURE, "wt") as f:
                json.dump(expected, f, separators=(",", ":"), sort_keys=True)
            print("wrote", FIXTURE)
    except ModuleNotFoundError as e:
        if not os.path.exists(FIXTURE):
            print("SKIP: llamafactory is not installed (%s) and there is no fixture" % e)
            sys.exit(77)
        with gzip.open(FIXTURE, "rt") as f:
            expected = {k: v for k, v in json.load(f).items() if k.split("|")[1] in chosen}
        source = "LLaMA-Factory outputs recorded in %s (llamafactory not installed)" % os.path.basename(FIXTURE)
    got = ours(binary, work, chosen)
    failures = checked = 0
    for key, want in sorted(expected.items()):
        mine = got.get(key)
        if isinstance(mine, str) or mine is None:
            print("FAIL %s: %s" % (key, mine))
            failures += 1
            continue
        if len(mine) != len(want):
            print("FAIL %s: %d rows, expected %d" % (key, len(mine), len(want)))
            failures += 1
            continue
        for i, (m, w) in enumerate(zip(mine, want)):
            checked += 1
            if m != w:
                failures += 1
                if failures < 10:
                    print("FAIL %s row %d\n  ours %s\n  want %s" % (key, i, json.dumps(m)[:300], json.dumps(w)[:300]))
    print("reference: %s" % source)
    print("%d rows checked (%d templates x %d option sets x %d conversations, and packing for %s), over %s: "
          "%d failures" % (checked, len(TEMPLATES), len(OPTIONS), len(CONVERSATIONS), ",".join(PACK_TEMPLATES),
                           ", ".join(chosen), failures))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
