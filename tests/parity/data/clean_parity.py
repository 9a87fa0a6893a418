"""`anneal-data data clean` against datasketch (PyPI) and plain Python on the same corpus.

A corpus of distinct documents with planted near-duplicates (a few words changed), exact duplicates, HTML,
short and long rows, and non-NFC text. Checks:
  - MinHash-LSH near-dedup keeps exactly the documents the usual datasketch loop keeps (MinHash(num_perm,
    seed) over the same character shingles, MinHashLSH(threshold, num_perm): query, drop on any candidate,
    else insert), for several thresholds, num_perm values and seeds; the LSH (bands, rows) equal datasketch's;
  - every planted near-duplicate above the threshold is caught, and the report names what it duplicates;
  - exact duplicates, length filters, markup stripping and NFC normalization do what the report says.

Usage: clean_parity.py ANNEAL_DATA_BINARY WORK_DIR
"""
import json
import os
import random
import shutil
import subprocess
import sys
import unicodedata

from datasketch import MinHash, MinHashLSH

WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau "
         "upsilon phi chi psi omega model data train token layer weight batch loss step epoch shard node rank "
         "queue cluster agent gradient optimizer schedule checkpoint adapter merge export eval metric").split()


def run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def shingles(text, k):
    if not text:
        return []
    if len(text) <= k:
        return [text]
    return [text[i:i + k] for i in range(len(text) - k + 1)]


def conversation_text(row):
    return "\n".join(m["content"] for m in row["messages"])


def datasketch_keep(texts, threshold, num_perm, seed, k):
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    kept = []
    for i, t in enumerate(texts):
        m = MinHash(num_perm=num_perm, seed=seed)
        for s in shingles(t, k):
            m.update(s.encode("utf-8"))
        if lsh.query(m):
            continue
        lsh.insert(str(i), m)
        kept.append(i)
    return kept, (lsh.b, lsh.r)


def make_corpus(rng, n_docs=150, n_near=40):
    docs = []
    for _ in range(n_docs):
        docs.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(30, 60))))
    planted = []
    for _ in range(n_near):
        src = rng.randrange(len(docs))
        words = docs[src].split()
        for _ in range(rng.randint(1, 3)):  # change one to three words
            words[rng.randrange(len(words))] = rng.choice(WORDS)
        planted.append((len(docs), src))
        docs.append(" ".join(words))
    return docs, planted


def main():
    binary, work = sys.argv[1], sys.argv[2]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    rng = random.Random(20261202)
    docs, planted = make_corpus(rng)
    path = os.path.join(work, "corpus.jsonl")
    with open(path, "w") as f:
        for i, d in enumerate(docs):
            f.write(json.dumps({"instruction": "doc %d" % i, "output": d}) + "\n")
    loaded = [json.loads(line) for line in run([binary, "data", "load", "--dataset", path]).stdout.split("\n") if line]
    texts = [conversation_text(r) for r in loaded]
    assert len(texts) == len(docs)

    checked = 0
    for threshold, num_perm, seed, k in ((0.8, 128, 1, 5), (0.7, 128, 1, 5), (0.9, 64, 7, 4), (0.5, 256, 3, 6)):
        out = os.path.join(work, "clean.jsonl")
        report_path = os.path.join(work, "report.json")
        res = run([binary, "data", "clean", "--dataset", path, "--out", out, "--report", report_path, "--near-dedup",
                   "--jaccard", str(threshold), "--num-perm", str(num_perm), "--minhash-seed", str(seed),
                   "--shingle", str(k)])
        assert res.returncode == 0, res.stderr
        report = json.load(open(report_path))
        kept_rows = [json.loads(line) for line in open(out)]
        kept = [int(r["messages"][0]["content"].split()[1]) for r in kept_rows]
        want, (b, r) = datasketch_keep(texts, threshold, num_perm, seed, k)
        assert (report["lsh"]["bands"], report["lsh"]["rows"]) == (b, r), (report["lsh"], b, r)
        assert kept == want, (threshold, num_perm, seed, sorted(set(kept) ^ set(want)))
        assert report["kept"] == len(kept) and report["rows"] == len(docs)
        dropped = {d["origin"].rsplit(":", 1)[1]: d for d in report["dropped_rows"]}
        assert len(dropped) == len(docs) - len(kept)
        assert all(d["reason"] == "near_duplicate" and d["duplicate_of"] for d in dropped.values())
        if threshold <= 0.8:
            for dup, src in planted:  # a few changed words stay far above 0.8 Jaccard on 5-shingles...
                s1, s2 = set(shingles(texts[dup], k)), set(shingles(texts[src], k))
                if len(s1 & s2) / len(s1 | s2) >= threshold + 0.1:  # ...unless the edit was large
                    assert dup not in kept or src not in kept, (dup, src)
        checked += 1
        print("near-dedup threshold %.1f num_perm %d seed %d shingle %d: %d kept, (b, r) = (%d, %d), as datasketch"
              % (threshold, num_perm, seed, k, len(kept), b, r))

    # Exact dedup, length filters, markup, normalization.
    rows = [
        {"instruction": "<p>Hello <b>world</b></p>", "output": "a &amp; b &lt; c &#x263A;<script>x()</script>"},
        {"instruction": "<p>Hello <b>world</b></p>", "output": "a &amp; b &lt; c &#x263A;<script>x()</script>"},
        {"instruction": "e\u0301", "output": "ok"},
        {"instruction": "s", "output": "t"},
        {"instruction": "long " * 100, "output": "x"},
    ]
    path2 = os.path.join(work, "misc.jsonl")
    with open(path2, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    out, report_path = os.path.join(work, "misc_clean.jsonl"), os.path.join(work, "misc_report.json")
    res = run([binary, "data", "clean", "--dataset", path2, "--out", out, "--report", report_path, "--strip-markup",
               "--min-chars", "4", "--max-chars", "200"])
    assert res.returncode == 0, res.stderr
    report = json.load(open(report_path))
    assert report["dropped"] == {"exact_duplicate": 1, "too_short": 1, "too_long": 1}, report
    reasons = {d["origin"].rsplit(":", 1)[1]: d["reason"] for d in report["dropped_rows"]}
    assert reasons == {"2": "exact_duplicate", "4": "too_short", "5": "too_long"}, reasons
    kept = [json.loads(line) for line in open(out)]
    assert kept[0]["messages"][0]["content"] == "\nHello world\n", kept[0]
    assert kept[0]["messages"][1]["content"] == "a & b < c \u263a", kept[0]
    assert kept[1]["messages"][0]["content"] == unicodedata.normalize("NFC", "e\u0301") == "\u00e9", kept[1]
    back = run([binary, "data", "load", "--dataset", out])  # the output loads back as a dataset
    assert back.returncode == 0 and len(back.stdout.splitlines()) == 2, back.stderr
    bad = run([binary, "data", "clean", "--dataset", path2, "--out", out, "--normalize", "NFX"])
    assert bad.returncode == 2 and "normalize 'NFX'" in bad.stderr, bad.stderr
    bad = run([binary, "data", "clean", "--dataset", path2, "--out", out, "--near-dedup", "--jaccard", "1.5"])
    assert bad.returncode == 2 and "jaccard threshold 1.5" in bad.stderr, bad.stderr
    print("exact dedup, length filters, markup stripping, NFC: as the report says")
    print("OK")


if __name__ == "__main__":
    main()
