"""Encode throughput, anneal vs HF tokenizers, same corpus and thread count, one run, one table.

Corpus: the parity corpus (English, Chinese, code, emoji, odd whitespace, digits) plus English-like prose,
repeated and shuffled (seeded) into documents. Each side: a warm-up run then the best of N timed runs of a
batch encode (HF: Tokenizer.encode_batch with RAYON_NUM_THREADS; anneal: Tokenizer::EncodeBatch).

Usage: tokenize_bench.py BENCH_BINARY [--mb 8] [--threads 1,2] [--repeats 3]
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "parity", "data"))
import corpus  # noqa: E402
import tokenizer_parity  # noqa: E402

HF_RUNNER = r"""
import json, sys, time
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
texts = [json.loads(l)["text"] for l in open(sys.argv[2]) if l.strip()]
repeats = int(sys.argv[3])
nbytes = sum(len(t.encode()) for t in texts)
best = 1e30
for r in range(repeats + 1):
    t0 = time.perf_counter()
    enc = tok.encode_batch(texts, add_special_tokens=False)
    s = time.perf_counter() - t0
    if r > 0:
        best = min(best, s)
print(json.dumps({"bytes": nbytes, "tokens": sum(len(e.ids) for e in enc), "seconds": best, "mb_per_s": nbytes / 1e6 / best}))
"""

WORDS = ("the of and to in is was for that with as on by at from his her an it which be this are or had not but "
         "training model data token language learning network system method result large small time first new "
         "used work number also two may between such through each where most other than many these").split()


def build_corpus(path, mb, seed=7):
    rng = random.Random(seed)
    pieces = corpus.texts()
    docs, size = [], 0
    while size < mb * 1e6:
        if rng.random() < 0.6:
            sent = " ".join(rng.choice(WORDS) for _ in range(rng.randint(200, 600)))
            doc = sent[0].upper() + sent[1:] + "."
        else:
            doc = "\n".join(rng.choice(pieces) for _ in range(rng.randint(5, 30)))
        docs.append(doc)
        size += len(doc.encode())
    with open(path, "w") as f:
        for d in docs:
            f.write(json.dumps({"text": d}) + "\n")
    return len(docs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--mb", type=float, default=8)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="anneal-bench-data-")
    dirs = tokenizer_parity.tokenizer_dirs(work)
    path = os.path.join(work, "corpus.jsonl")
    ndocs = build_corpus(path, a.mb)
    rows = []
    for name, d in dirs.items():
        if "deepseek vocab" in name:
            continue
        for th in [int(x) for x in a.threads.split(",")]:
            ours = json.loads(subprocess.check_output([a.binary, "--tokenizer", d, "--corpus", path, "--threads", str(th),
                                                       "--repeats", str(a.repeats)], text=True))
            env = dict(os.environ, RAYON_NUM_THREADS=str(th), TOKENIZERS_PARALLELISM="true")
            hf = json.loads(subprocess.check_output([sys.executable, "-c", HF_RUNNER, os.path.join(d, "tokenizer.json"),
                                                     path, str(a.repeats)], text=True, env=env))
            if ours["tokens"] != hf["tokens"]:
                print("WARNING: token counts differ on %s: ours %d, HF %d" % (name, ours["tokens"], hf["tokens"]))
            rows.append((name, th, ours["mb_per_s"], hf["mb_per_s"], ours["tokens"]))
    print("\nEncode throughput, %.1f MB corpus in %d documents (best of %d after warm-up)\n" % (a.mb, ndocs, a.repeats))
    print("| tokenizer | threads | anneal MB/s | HF tokenizers MB/s | anneal / HF | tokens |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, th, o, h, n in rows:
        print("| %s | %d | %.2f | %.2f | %.2fx | %d |" % (name, th, o, h, o / h, n))


if __name__ == "__main__":
    main()
