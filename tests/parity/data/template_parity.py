"""Chat templates and SFT masking of anneal-data vs LLaMA-Factory itself.

LLaMA-Factory (PyPI llamafactory, installed with --no-deps) is imported with its heavy optional modules
(datasets, torchaudio) stubbed: only data/template.py, formatter.py and processor/supervised.py run. For every
shipped template, on a byte-level and a SentencePiece-style tokenizer, over single-turn, multi-turn, system,
observation and reasoning conversations, with default options, train_on_prompt, mask_history and a small
cutoff_len, the input_ids and labels must be identical.

Usage: template_parity.py ANNEAL_DATA_BINARY WORK_DIR [TOKENIZER_NAME_SUBSTRING]
"""
import copy
import json
import os
import subprocess
import sys
import types
from unittest import mock

os.environ.setdefault("LLAMAFACTORY_VERBOSITY", "ERROR")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tokenizer_parity  # noqa: E402

TEMPLATES = ["alpaca", "deepseek", "deepseek3", "deepseekr1", "default", "empty", "llama2", "llama3", "mistral", "qwen"]

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
    for _ in range(20):
        try:
            from llamafactory.data.template import get_template_and_fix_tokenizer
            from llamafactory.data.processor.supervised import SupervisedDatasetProcessor
            return get_template_and_fix_tokenizer, SupervisedDatasetProcessor
        except ModuleNotFoundError as e:
            parts = e.name.split(".")
            if parts[0] == "llamafactory":
                raise
            for i in range(1, len(parts) + 1):
                n = ".".join(parts[:i])
                if n not in sys.modules:
                    m = mock.MagicMock()
                    m.__path__ = []
                    m.__spec__ = None
                    sys.modules[n] = m
            for k in list(sys.modules):
                if k.startswith("llamafactory"):
                    del sys.modules[k]
    raise RuntimeError("cannot import llamafactory")


PACK_TEMPLATES = ["qwen", "llama2", "default"]


def check_packing(binary, work, chosen, get_template, lf_template, pristine, tokenizer_class):
    """Packed sequences (neat packing) equal LLaMA-Factory's PackedSupervisedDatasetProcessor output."""
    from llamafactory.data.processor.supervised import PackedSupervisedDatasetProcessor
    convs = []
    for k in range(4):  # varied lengths so bins hold several examples
        for c in CONVERSATIONS:
            msgs = [dict(m, content=m["content"] + " x" * k) for m in c["messages"]]
            convs.append({"messages": msgs, "system": c.get("system", "")})
    jsonl = os.path.join(work, "pack.jsonl")
    with open(jsonl, "w") as f:
        for c in convs:
            f.write(json.dumps(c) + "\n")
    failures = 0
    cutoff = 96
    for tname, tdir in chosen.items():
        for template in PACK_TEMPLATES:
            out = subprocess.run([binary, "data", "encode", "--tokenizer", tdir, "--template", template, "--jsonl", jsonl,
                                  "--cutoff-len", str(cutoff), "--pack"], capture_output=True, text=True, timeout=120)
            if out.returncode != 0:
                print("FAIL pack %s/%s: %s" % (tname, template, out.stderr.strip()))
                failures += 1
                continue
            ours = [json.loads(l) for l in out.stdout.split("\n") if l]
            lf_template.TEMPLATES.clear()
            lf_template.TEMPLATES.update(copy.deepcopy(pristine))
            tok = tokenizer_class.from_pretrained(tdir)
            args = types.SimpleNamespace(template=template, tool_format=None, default_system=None, enable_thinking=True,
                                         preserve_thinking=False, cutoff_len=cutoff, train_on_prompt=False,
                                         mask_history=False, neat_packing=True)
            tmpl = get_template(tok, args)
            proc = PackedSupervisedDatasetProcessor(template=tmpl, tokenizer=tok, processor=None, data_args=args)
            examples = {"_prompt": [c["messages"][:-1] for c in convs], "_response": [c["messages"][-1:] for c in convs],
                        "_system": [c["system"] for c in convs], "_tools": [""] * len(convs),
                        "_images": [None] * len(convs), "_videos": [None] * len(convs), "_audios": [None] * len(convs)}
            lf = proc.preprocess_dataset(examples)
            want = [{"input_ids": a, "labels": b, "position_ids": c, "segment_ids": d} for a, b, c, d in
                    zip(lf["input_ids"], lf["labels"], lf["position_ids"], lf["attention_mask"])]
            if ours != want:
                failures += 1
                print("FAIL pack %s/%s: %d ours vs %d LLaMA-Factory sequences; first differing: %s" % (
                    tname, template, len(ours), len(want),
                    next(((i, o, w) for i, (o, w) in enumerate(zip(ours, want)) if o != w), None)))
            else:
                print("pack %s/%s: %d packed sequences identical (ids, labels, position ids, segment ids)" % (
                    tname, template, len(ours)))
    return failures


def main():
    binary, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    try:
        get_template, Processor = import_llamafactory()
    except ModuleNotFoundError as e:
        # llamafactory is installed with --no-deps (its pins conflict with ours); without it there is no peer.
        print("SKIP: llamafactory is not installed (%s): .venv/bin/pip install --no-deps llamafactory==0.9.5" % e)
        sys.exit(77)
    from transformers import PreTrainedTokenizerFast
    import llamafactory.data.template as lf_template

    dirs = tokenizer_parity.tokenizer_dirs(work)
    which = sys.argv[3] if len(sys.argv) > 3 else ""
    chosen = {k: v for k, v in dirs.items() if (k.startswith("deepseek (") or "sp-legacy" in k) and which in k}
    # One anneal-data run per (tokenizer, template): every option set rides on the lines.
    cases = [dict(c, **o) for o in OPTIONS for c in CONVERSATIONS]
    jsonl = os.path.join(work, "conversations.jsonl")
    with open(jsonl, "w") as f:
        for c in cases:
            f.write(json.dumps(c) + "\n")
    failures = checked = 0
    pristine = copy.deepcopy(lf_template.TEMPLATES)
    for tname, tdir in chosen.items():
        for template in TEMPLATES:
            out = subprocess.run([binary, "data", "encode", "--tokenizer", tdir, "--template", template, "--jsonl", jsonl],
                                 capture_output=True, text=True, timeout=120)
            if out.returncode != 0:
                print("FAIL %s/%s: %s" % (tname, template, out.stderr.strip()))
                failures += 1
                continue
            ours = [json.loads(l) for l in out.stdout.split("\n") if l]
            lf_template.TEMPLATES.clear()
            lf_template.TEMPLATES.update(copy.deepcopy(pristine))
            tok = PreTrainedTokenizerFast.from_pretrained(tdir)
            base = types.SimpleNamespace(template=template, tool_format=None, default_system=None,
                                         enable_thinking=True, preserve_thinking=False, **OPTIONS[0])
            tmpl = get_template(tok, base)
            for case, mine in zip(cases, ours):
                args = types.SimpleNamespace(**dict(vars(base), **{k: case[k] for k in OPTIONS[0]}))
                proc = Processor(template=tmpl, tokenizer=tok, processor=None, data_args=args)
                msgs = case["messages"]
                ids, labels = proc._encode_data_example(prompt=msgs[:-1], response=msgs[-1:],
                                                        system=case.get("system", ""), tools="", images=[],
                                                        videos=[], audios=[])
                checked += 1
                if mine["input_ids"] != ids or mine["labels"] != labels:
                    failures += 1
                    if failures < 10:
                        print("FAIL %s/%s conv %r opts %s\n  ours ids %s\n  lf   ids %s\n  ours lab %s\n  lf   lab %s" % (
                            tname, template, msgs[0]["content"][:30], {k: case[k] for k in OPTIONS[0]},
                            mine["input_ids"][:60], ids[:60], mine["labels"][:60], labels[:60]))
    failures += check_packing(binary, work, chosen, get_template, lf_template, pristine, PreTrainedTokenizerFast)
    print("%d examples checked (%d templates x %d tokenizers x %d option sets x %d conversations), %d failures" % (
        checked, len(TEMPLATES), len(chosen), len(OPTIONS), len(CONVERSATIONS), failures))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
