"""`anneal-data data split` against HF datasets (PyPI), and `data clean`'s PII masking and script filter.

Split: for several row counts, ratios and seeds, the rows in each of train / val / test (in order) equal what HF
datasets gives for the same rows: held = ds.train_test_split(test_size=(val+test)/total, seed), then
held["test"].train_test_split(test_size=test/(val+test), seed) (val = its train part, test = its test part).
The dataset_info.json written beside the parts loads them back (`data load --dataset NAME_val`) unchanged.
Refusals: malformed ratios and too few rows exit non-zero naming the problem.

Clean: --mask-pii and --scripts on a small mixed corpus: what the report counts and what the output holds.

Usage: split_parity.py ANNEAL_DATA_BINARY WORK_DIR
"""
import json
import os
import shutil
import subprocess
import sys

from datasets import Dataset


def run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def write_rows(path, n):
    rows = [{"instruction": f"question {i}", "input": "", "output": f"answer {i}"} for i in range(n)]
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return rows


def hf_split(rows, ratios, seed):
    train, val, test = ratios
    total = train + val + test
    ds = Dataset.from_list(rows)
    held = ds.train_test_split(test_size=(val + test) / total, seed=seed)
    parts = {"train": held["train"]}
    if val > 0 and test > 0:
        vt = held["test"].train_test_split(test_size=test / (val + test), seed=seed)
        parts["val"], parts["test"] = vt["train"], vt["test"]
    elif val > 0:
        parts["val"] = held["test"]
    else:
        parts["test"] = held["test"]
    return {k: [r["instruction"] for r in v] for k, v in parts.items()}


def our_split(binary, work, src, ratios, seed):
    out = os.path.join(work, "out")
    shutil.rmtree(out, ignore_errors=True)
    text = ":".join(str(r) for r in ratios)
    res = run([binary, "data", "split", "--dataset", src, "--ratios", text, "--seed", str(seed), "--out-dir", out,
               "--name", "demo"])
    assert res.returncode == 0, res.stderr
    got = {}
    for part in ("train", "val", "test"):
        path = os.path.join(out, f"demo_{part}.jsonl")
        if os.path.exists(path):
            got[part] = [json.loads(line)["messages"][0]["content"] for line in open(path)]
    return got, out


def check_split(binary, work):
    cases = 0
    for n in (10, 97, 1000):
        src = os.path.join(work, f"rows{n}.jsonl")
        rows = write_rows(src, n)
        for ratios in ((8, 1, 1), (9, 1, 0), (7, 0, 3), (0.7, 0.2, 0.1)):
            for seed in (42, 7):
                want = hf_split(rows, ratios, seed)
                got, out = our_split(binary, work, src, ratios, seed)
                assert got == want, f"n={n} ratios={ratios} seed={seed}: {got} != {want}"
                cases += 1
        # The written dataset_info.json loads the parts back.
        res = run([binary, "data", "load", "--dataset", "demo_train", "--dataset-dir", out])
        assert res.returncode == 0, res.stderr
        loaded = [json.loads(line) for line in res.stdout.splitlines()]
        assert [m["messages"][0]["content"] for m in loaded] == got["train"], "demo_train does not load back"
    print(f"split: {cases} cases equal HF datasets' train_test_split; parts load back through dataset_info.json")

    src = os.path.join(work, "rows10.jsonl")
    for bad, why in (("8:x:1", "not a non-negative number"), ("0:1:1", "train part must be > 0"),
                     ("8:0:0", "nothing is held out"), ("8:1:1:1", "4 part(s)")):
        res = run([binary, "data", "split", "--dataset", src, "--ratios", bad, "--out-dir", os.path.join(work, "b")])
        assert res.returncode != 0 and why in res.stderr, (bad, res.stderr)
    tiny = os.path.join(work, "rows1.jsonl")
    write_rows(tiny, 1)
    res = run([binary, "data", "split", "--dataset", tiny, "--out-dir", os.path.join(work, "b")])
    assert res.returncode != 0 and "leaves a part empty" in res.stderr, res.stderr
    print("split refusals: malformed ratios and too few rows name the problem")


def check_clean(binary, work):
    rows = [
        {"instruction": "Contact me at jane.doe@example.com or +1 415 555 0100", "input": "", "output": "Sure."},
        {"instruction": "我的手机是13812345678，身份证11010519491231002X", "input": "", "output": "好的"},
        {"instruction": "Привет, как дела?", "input": "", "output": "Хорошо, спасибо"},
        {"instruction": "Released on 2024-01-15, build 1700000000123", "input": "", "output": "ok"},
    ]
    src = os.path.join(work, "pii.jsonl")
    with open(src, "w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    out, report = os.path.join(work, "pii-out.jsonl"), os.path.join(work, "pii-report.json")
    res = run([binary, "data", "clean", "--dataset", src, "--out", out, "--report", report,
               "--mask-pii", "email,phone,id", "--scripts", "Latin,zh"])
    assert res.returncode == 0, res.stderr
    rep = json.load(open(report))
    assert rep["pii_masked"] == {"email": 1, "phone": 2, "id": 1}, rep["pii_masked"]
    assert rep["dropped"] == {"wrong_script": 1}, rep["dropped"]
    kept = [json.loads(line)["messages"][0]["content"] for line in open(out)]
    assert kept == ["Contact me at <EMAIL> or <PHONE>", "我的手机是<PHONE>，身份证<ID>",
                    "Released on 2024-01-15, build 1700000000123"], kept
    res = run([binary, "data", "clean", "--dataset", src, "--out", out, "--scripts", "en"])
    assert res.returncode != 0 and "--languages en" in res.stderr, res.stderr
    res = run([binary, "data", "clean", "--dataset", src, "--out", out, "--mask-pii", "address"])
    assert res.returncode != 0 and "unknown kind 'address'" in res.stderr, res.stderr
    print("clean: PII masked by kind as reported, the Cyrillic row dropped as wrong_script, refusals named")


def main():
    binary, work = sys.argv[1], sys.argv[2]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    check_split(binary, work)
    check_clean(binary, work)
    print("PASS")


if __name__ == "__main__":
    main()
