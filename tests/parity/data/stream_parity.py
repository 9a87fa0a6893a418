"""Bounded-memory cache building (trainer/data/stream.h) against loading every row first.

1. Same cache: `anneal-data data prepare` (bounded memory, small chunks so every file spans many) and
   `data prepare --in-memory` write byte-identical input_ids.bin / labels.bin / index.bin for json arrays with
   multi-line elements, jsonl with bad rows (skip_bad_rows), csv, parquet in many row groups, arrow IPC stream
   and file formats in many record batches, a directory of shards, max_samples, every mix_strategy with and
   without interleave_probs, a dpo ranking dataset (pairs) and stage pt (packing in map batches of one or
   several contiguous shards, and without packing); split slices and num_samples fall back to the
   in-memory path (reported "streamed": false) and still match.
2. Bounded memory: the peak resident set (VmHWM) of a bounded-memory build stays flat while the jsonl and the
   parquet file grow 4x, while loading every row first grows with the file; under a 64 MiB RLIMIT_DATA cap the
   bounded build of the largest jsonl succeeds and loading it whole runs out of memory. A csv whose column changes type after the first 16 MiB block is refused by name.

The datasets library's rows for the streamed readers are checked by formats_parity.py run with
ANNEAL_LOAD_STREAM=1 (ctest data_formats_parity_streamed).

Usage: stream_parity.py ANNEAL_DATA_BINARY WORK_DIR [--part same|memory|all] [--sizes-mib 8,32] [--json]
(ctest: data_stream_parity runs --part same, data_stream_memory --part memory; bench/data/prepare_memory.sh
runs --part memory with larger sizes and prints the table for docs/benchmarks.md.)
"""
import json
import os
import random
import resource
import shutil
import subprocess
import sys

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq


def bytes_to_unicode():
    """GPT-2's byte -> printable character table (the ByteLevel alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def write_tokenizer(d):
    """One token per byte plus <s> and </s> (as pipeline_test.cc's): every text encodes, ids are exact."""
    os.makedirs(d, exist_ok=True)
    vocab = {ch: b for b, ch in bytes_to_unicode().items()}
    tok = {"added_tokens": [{"id": 256, "content": "<s>", "special": True},
                            {"id": 257, "content": "</s>", "special": True}],
           "normalizer": None,
           "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
           "decoder": {"type": "ByteLevel"},
           "model": {"type": "BPE", "vocab": vocab, "merges": []}}
    with open(os.path.join(d, "tokenizer.json"), "w") as f:
        json.dump(tok, f)
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<s>", "eos_token": "</s>"}, f)


def prepare(binary, tok, data_dir, cache, *args, env=None):
    cmd = [binary, "data", "prepare", "--tokenizer", tok, "--template", "default", "--dataset-dir", data_dir,
           "--cache-dir", cache, "--threads", "2", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, (args, out.stderr)
    return json.loads(out.stdout)


def cache_bytes(result):
    return {name: open(os.path.join(result["cache"], name), "rb").read()
            for name in ("input_ids.bin", "labels.bin", "index.bin")}


def alpaca_rows(n, seed, bad_every=0):
    rnd = random.Random(seed)
    rows = []
    for i in range(n):
        r = {"instruction": f"q{i} " + "x" * rnd.randint(0, 40), "input": rnd.choice(["", "ctx\nline"]),
             "output": f"a{i} \u4e16\u754c " + "y" * rnd.randint(1, 30), "system": rnd.choice(["", "be brief"])}
        if bad_every and i % bad_every == 3:
            r["output"] = 7  # not a string: an error, or skipped with skip_bad_rows
        rows.append(r)
    return rows


def check_same_cache(binary, work, tok):
    d = os.path.join(work, "same")
    os.makedirs(d)
    rows = alpaca_rows(300, 1)
    with open(os.path.join(d, "a.json"), "w") as f:
        json.dump(rows, f, ensure_ascii=False, indent=2)  # multi-line elements
    with open(os.path.join(d, "bad.jsonl"), "w") as f:
        for r in alpaca_rows(200, 2, bad_every=17):
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
        f.write("{not json\n")
    table = pa.Table.from_pylist(alpaca_rows(250, 3))
    pcsv.write_csv(table, os.path.join(d, "c.csv"))
    pq.write_table(table, os.path.join(d, "p.parquet"), row_group_size=7)
    with pa.OSFile(os.path.join(d, "s.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        for b in table.to_batches(max_chunksize=11):
            w.write_batch(b)
    with pa.OSFile(os.path.join(d, "f.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        for b in table.to_batches(max_chunksize=13):
            w.write_batch(b)
    os.makedirs(os.path.join(d, "shards"))
    for k in range(3):
        pq.write_table(pa.Table.from_pylist(alpaca_rows(40, 10 + k)), os.path.join(d, "shards", f"part-{k}.parquet"),
                       row_group_size=5)
    with open(os.path.join(d, "t.txt"), "w") as f:
        for i in range(157):
            f.write(f"line {i} " + "z" * (i % 23) + ("\r\n" if i % 5 == 0 else "\n"))
    sharegpt = [{"conversations": [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": f"a{i}"}]}
                for i in range(90)]
    pq.write_table(pa.Table.from_pylist(sharegpt), os.path.join(d, "g.parquet"), row_group_size=4)
    pairs = [{"instruction": f"p{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(60)]
    with open(os.path.join(d, "pairs.jsonl"), "w") as f:
        for r in pairs:
            f.write(json.dumps(r) + "\n")
    info = {"pairs": {"file_name": "pairs.jsonl", "ranking": True,
                      "columns": {"prompt": "instruction", "chosen": "chosen", "rejected": "rejected"}},
            "sliced": {"file_name": "a.json", "split": "train[10%:60%]"},
            "sampled": {"file_name": "c.csv", "num_samples": 400}}
    with open(os.path.join(d, "dataset_info.json"), "w") as f:
        json.dump(info, f)

    cases = [
        (["--dataset", "a.json"], True),
        (["--dataset", "bad.jsonl", "--skip-bad-rows"], True),
        (["--dataset", "c.csv"], True),
        (["--dataset", "p.parquet"], True),
        (["--dataset", "s.arrow,f.arrow"], True),
        (["--dataset", "shards"], True),
        (["--dataset", "g.parquet", "--max-samples", "50"], True),
        (["--dataset", "a.json,p.parquet,g.parquet", "--mix-strategy", "interleave_under"], True),
        (["--dataset", "a.json,g.parquet", "--mix-strategy", "interleave_over", "--interleave-probs", "0.2,0.8",
          "--seed", "7"], True),
        (["--dataset", "bad.jsonl,s.arrow", "--skip-bad-rows", "--mix-strategy", "interleave_once",
          "--interleave-probs", "0.5,0.5"], True),
        (["--dataset", "pairs", "--stage", "dpo"], True),
        (["--dataset", "t.txt", "--stage", "pt", "--cutoff-len", "32", "--preprocessing-batch-size", "10"], True),
        (["--dataset", "t.txt,a.json", "--stage", "pt", "--cutoff-len", "24", "--preprocessing-batch-size", "7",
          "--preprocessing-num-workers", "3"], True),
        (["--dataset", "t.txt", "--stage", "pt", "--cutoff-len", "16", "--no-packing"], True),
        (["--dataset", "sliced"], False),
        (["--dataset", "sampled,a.json"], False),
    ]
    for n, (args, streams) in enumerate(cases):
        ref = prepare(binary, tok, d, os.path.join(work, f"ref{n}"), "--in-memory", *args)
        got = prepare(binary, tok, d, os.path.join(work, f"got{n}"), "--chunk-rows", "16", *args)
        assert not ref["streamed"] and got["streamed"] == streams, (args, ref, got)
        assert got["key"] == ref["key"] and got["examples"] == ref["examples"] > 0, (args, ref, got)
        assert (got["rows"], got["skipped"]) == (ref["rows"], ref["skipped"]), (args, ref, got)
        assert cache_bytes(got) == cache_bytes(ref), (args, "cache bytes differ")
        print(f"same cache: {' '.join(args)}: {got['examples']} examples, {got['skipped']} skipped, "
              f"streamed={got['streamed']}")
    # Without skip_bad_rows both paths name the first bad row.
    for extra in ([], ["--in-memory"]):
        out = subprocess.run([binary, "data", "prepare", "--tokenizer", tok, "--template", "default", "--dataset-dir", d,
                              "--cache-dir", os.path.join(work, "err"), "--dataset", "bad.jsonl", *extra],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and "bad.jsonl:4: field 'output': must be a string" in out.stderr, out.stderr


def write_big(path, mib, seed):
    """Alpaca jsonl rows until the file holds `mib` MiB."""
    rnd = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "\u4e16\u754c", "epsilon", "zeta", "eta"]
    target = mib << 20
    size = 0
    with open(path, "w") as f:
        i = 0
        while size < target:
            r = {"instruction": " ".join(rnd.choice(words) for _ in range(rnd.randint(5, 60))),
                 "input": "", "output": " ".join(rnd.choice(words) for _ in range(rnd.randint(5, 80))), "id": i}
            line = json.dumps(r, ensure_ascii=False) + "\n"
            f.write(line)
            size += len(line.encode())
            i += 1


def check_memory(binary, work, tok, sizes, cap_mib=64):
    d = os.path.join(work, "big")
    os.makedirs(d)
    results = []
    for mib in sizes:
        jsonl = os.path.join(d, f"big{mib}.jsonl")
        write_big(jsonl, mib, mib)
        parquet = os.path.join(d, f"big{mib}.parquet")
        pq.write_table(pa.Table.from_pylist([json.loads(l) for l in open(jsonl)]), parquet, row_group_size=20000)
        for name, path in (("jsonl", jsonl), ("parquet", parquet)):
            streamed = prepare(binary, tok, d, os.path.join(work, f"cache-s-{name}-{mib}"), "--dataset", path,
                               "--cutoff-len", "512")
            whole = prepare(binary, tok, d, os.path.join(work, f"cache-m-{name}-{mib}"), "--dataset", path,
                            "--cutoff-len", "512", "--in-memory")
            assert cache_bytes(streamed) == cache_bytes(whole), (name, mib)
            file_mib = os.path.getsize(path) / 2**20
            row = {"format": name, "file_mib": round(file_mib, 1), "examples": streamed["examples"],
                   "streamed_peak_mib": round(streamed["peak_rss_kib"] / 1024, 1),
                   "in_memory_peak_mib": round(whole["peak_rss_kib"] / 1024, 1),
                   "streamed_rows_per_s": round(streamed["examples"] / streamed["seconds"]),
                   "in_memory_rows_per_s": round(whole["examples"] / whole["seconds"])}
            results.append(row)
            print("memory:", json.dumps(row))
            os.remove(os.path.join(streamed["cache"], "input_ids.bin"))  # keep the work dir small
            shutil.rmtree(whole["cache"])
    # Under a data-segment cap (RLIMIT_DATA: heap and private mappings) of `cap_mib`, the bounded build of the
    # largest jsonl succeeds and loading it whole runs out of memory.
    largest = os.path.join(d, f"big{sizes[-1]}.jsonl")
    for whole, want_ok in (([], True), (["--in-memory"], False)):
        cmd = [binary, "data", "prepare", "--tokenizer", tok, "--template", "default", "--dataset", largest,
               "--cache-dir", os.path.join(work, "cache-cap" + "".join(whole)), "--cutoff-len", "512", *whole]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                             preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_DATA, (cap_mib << 20,) * 2))
        assert (out.returncode == 0) == want_ok, (whole, out.returncode, out.stderr[-300:])
        results.append({"format": "jsonl under RLIMIT_DATA", "cap_mib": cap_mib, "file_mib": sizes[-1],
                        "in_memory": bool(whole), "ok": out.returncode == 0})
        print(f"cap {cap_mib} MiB, {sizes[-1]} MiB jsonl, {'whole' if whole else 'bounded'}: "
              f"{'ok' if out.returncode == 0 else 'out of memory'}")
        shutil.rmtree(os.path.join(work, "cache-cap" + "".join(whole)), ignore_errors=True)
    for name in ("jsonl", "parquet"):
        rows = [r for r in results if r["format"] == name]
        small, large = rows[0], rows[-1]
        # Flat: the 4x file adds at most 15% + 24 MiB to the peak (thread stacks, allocator noise) ...
        assert large["streamed_peak_mib"] <= small["streamed_peak_mib"] * 1.15 + 24, rows
        # ... while loading everything first grows with the file.
        assert large["in_memory_peak_mib"] > small["in_memory_peak_mib"] + large["file_mib"] - small["file_mib"], rows
    return results


def check_csv_type_change(binary, work, tok):
    """A column that is an integer in the first 16 MiB block and text later: refused by name when streamed."""
    d = os.path.join(work, "csvtype")
    os.makedirs(d)
    path = os.path.join(d, "t.csv")
    with open(path, "w") as f:
        f.write("instruction,output,n\n")
        line = "q " + "x" * 200 + ",a,1\n"
        for _ in range((17 << 20) // len(line)):
            f.write(line)
        f.write("q,a,many\n")
    out = subprocess.run([binary, "data", "prepare", "--tokenizer", tok, "--template", "default", "--dataset-dir", d,
                          "--cache-dir", os.path.join(work, "csvcache"), "--dataset", "t.csv"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out
    assert "t.csv" in out.stderr and "infers column types from the first one" in out.stderr, out.stderr
    print("csv type change refused:", out.stderr.strip()[:200])


def main():
    binary, work = sys.argv[1], sys.argv[2]
    sizes = [8, 32]
    if "--sizes-mib" in sys.argv:
        sizes = [int(s) for s in sys.argv[sys.argv.index("--sizes-mib") + 1].split(",")]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    tok = os.path.join(work, "tok")
    write_tokenizer(tok)
    part = sys.argv[sys.argv.index("--part") + 1] if "--part" in sys.argv else "all"
    if part in ("same", "all"):
        check_same_cache(binary, work, tok)
        check_csv_type_change(binary, work, tok)
    if part in ("memory", "all"):
        results = check_memory(binary, work, tok, sizes)
        if "--json" in sys.argv:
            print(json.dumps(results))
    shutil.rmtree(work, ignore_errors=True)
    print("stream parity: ok")


if __name__ == "__main__":
    main()
