"""Near-dedup throughput, `anneal-data data clean --near-dedup` vs datasketch's MinHash + MinHashLSH, on the same
corpus with the same parameters, one run, one table (issue 21).

Corpus: N documents of 30-60 words (the clean parity test's generator) with 10% planted near-duplicates. Rows
are {"instruction": "doc i", "output": text}; both sides hash the conversation text ("doc i\\n" + text) as
character shingles of 5 code points, num_perm 128, seed 1, threshold 0.8. datasketch: MinHash.update_batch
(its vectorized path) per document, then the usual query / insert loop, timed in-process (no file reading).
anneal: the whole command (process start, JSON reading, the same loop, writing the output), --normalize none.
Both must keep the same documents; the table says whether they do.

Usage: clean_bench.py ANNEAL_DATA_BINARY [--docs 20000] [--repeats 2]
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

from datasketch import MinHash, MinHashLSH

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "parity", "data"))
from clean_parity import make_corpus, shingles  # noqa: E402

THRESHOLD, NUM_PERM, SEED, SHINGLE = 0.8, 128, 1, 5


def datasketch_dedup(texts):
    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
    kept = []
    for i, t in enumerate(texts):
        m = MinHash(num_perm=NUM_PERM, seed=SEED)
        m.update_batch([s.encode("utf-8") for s in shingles(t, SHINGLE)])
        if lsh.query(m):
            continue
        lsh.insert(str(i), m)
        kept.append(i)
    return kept


def anneal_dedup(binary, path, work):
    out, report = os.path.join(work, "out.jsonl"), os.path.join(work, "report.json")
    res = subprocess.run([binary, "data", "clean", "--dataset", path, "--out", out, "--report", report,
                          "--near-dedup", "--jaccard", str(THRESHOLD), "--num-perm", str(NUM_PERM),
                          "--minhash-seed", str(SEED), "--shingle", str(SHINGLE), "--normalize", "none",
                          "--no-exact-dedup"], capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"anneal-data data clean failed: {res.stderr}")
    kept = [json.loads(line)["messages"][0]["content"] for line in open(out)]
    return [int(k.split()[1]) for k in kept]


def best_of(repeats, fn):
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--docs", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    rng = random.Random(20261202)
    docs, planted = make_corpus(rng, n_docs=a.docs, n_near=a.docs // 10)
    texts = [f"doc {i}\n{d}" for i, d in enumerate(docs)]
    mbytes = sum(len(t.encode()) for t in texts) / 1e6
    with tempfile.TemporaryDirectory() as work:
        path = os.path.join(work, "corpus.jsonl")
        with open(path, "w") as f:
            for i, d in enumerate(docs):
                f.write(json.dumps({"instruction": f"doc {i}", "output": d}) + "\n")
        t_ours, ours = best_of(a.repeats, lambda: anneal_dedup(a.binary, path, work))
        t_peer, peer = best_of(a.repeats, lambda: datasketch_dedup(texts))
    same = "yes" if ours == peer else f"NO ({len(ours)} vs {len(peer)})"
    print(f"{len(docs)} documents ({len(planted)} planted near-duplicates), {mbytes:.1f} MB; shingles of {SHINGLE}, "
          f"num_perm {NUM_PERM}, threshold {THRESHOLD}; best of {a.repeats}\n")
    print("| near-dedup | seconds | documents/s | MB/s | kept | same kept set |")
    print("|---|---:|---:|---:|---:|---|")
    for name, t, kept in (("anneal-data data clean (whole command)", t_ours, ours),
                          ("datasketch 2.0 MinHash.update_batch + MinHashLSH (in-process)", t_peer, peer)):
        print(f"| {name} | {t:.2f} | {len(docs) / t:,.0f} | {mbytes / t:.2f} | {len(kept)} | {same} |")
    print(f"\nanneal / datasketch: {t_peer / t_ours:.2f}x the documents per second")
    return 0 if ours == peer else 1


if __name__ == "__main__":
    sys.exit(main())
