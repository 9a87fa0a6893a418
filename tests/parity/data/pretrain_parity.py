"""Stage pt data parity with LLaMA-Factory: anneal-data's `data preview` of a `stage: pt` job against
LLaMA-Factory's own PretrainDatasetProcessor.preprocess_dataset (v0.9.5, imported as template_parity.py does)
on the same tiny text dataset and tokenizer: the blocks (packing, per map batch and contiguous shard, remainder
dropped), the unpacked cut texts, no bos even when tokenizer_config.json says add_bos_token (transformers 5
drops it when tokenizer.json exists), and the label mask
(LLaMA-Factory's DataCollatorForLanguageModeling: -100 on the pad token). datasets.map(batched=True,
batch_size, num_proc) is emulated here (HF `datasets` is not a dependency): contiguous shards, then batches.

Usage: pretrain_parity.py ANNEAL_DATA_BINARY WORK_DIR   (exit 77: llamafactory is not installed)
"""
import json
import os
import sys
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from template_parity import import_llamafactory  # noqa: E402
from testlib import make_tokenizer, run  # noqa: E402

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Hello", "Anneal trains models on a cluster.",
         "a b c d e f g h i j k l m n o p", "", "Short one.", "Another line of plain pre-training text here.",
         "x" * 57, "The end."]
CASES = [  # (packing, cutoff_len, preprocessing_batch_size, preprocessing_num_workers, template, add_bos_token)
    (True, 16, 1000, 1, "default", False),
    (True, 8, 3, 1, "default", False),
    (True, 8, 2, 3, "qwen", False),
    (True, 12, 4, 2, "default", True),
    (False, 12, 1000, 1, "default", False),
    (False, 10, 1000, 1, "default", True),
]


def contiguous_shard(n, shards, index):
    div, mod = divmod(n, shards)
    lo = div * index + min(index, mod)
    return lo, lo + div + (1 if index < mod else 0)


def llamafactory_blocks(tok_dir, packing, cutoff, batch, workers, template):
    import_llamafactory()
    from llamafactory.data.processor.pretrain import PretrainDatasetProcessor
    from llamafactory.data.template import get_template_and_fix_tokenizer
    from transformers import PreTrainedTokenizerFast
    tok = PreTrainedTokenizerFast.from_pretrained(tok_dir)
    args = types.SimpleNamespace(template=template, tool_format=None, default_system=None, enable_thinking=True,
                                 preserve_thinking=False, packing=packing, cutoff_len=cutoff,
                                 train_on_prompt=False, mask_history=False, neat_packing=False)
    tmpl = get_template_and_fix_tokenizer(tok, args)
    if tok.pad_token_id is None:  # LLaMA-Factory's patch_tokenizer / template fix
        tok.pad_token = tok.eos_token
    proc = PretrainDatasetProcessor(template=tmpl, tokenizer=tok, processor=None, data_args=args)
    rows = [[{"role": "user", "content": t}] for t in TEXTS]
    shards = max(1, min(workers, len(rows)))
    out = []
    for s in range(shards):
        lo, hi = contiguous_shard(len(rows), shards, s)
        for b in range(lo, hi, batch):
            out.extend(proc.preprocess_dataset({"_prompt": rows[b:min(hi, b + batch)]})["input_ids"])
    return out, tok.pad_token_id


def anneal_blocks(binary, work, tok_dir, packing, cutoff, batch, workers, template):
    data_dir = os.path.join(work, "data")
    os.makedirs(data_dir, exist_ok=True)
    with open(os.path.join(data_dir, "texts.jsonl"), "w") as f:
        for t in TEXTS:
            f.write(json.dumps({"text": t}) + "\n")
    with open(os.path.join(data_dir, "dataset_info.json"), "w") as f:
        json.dump({"texts": {"file_name": "texts.jsonl", "columns": {"prompt": "text"}}}, f)
    job = os.path.join(work, "job.yaml")
    with open(job, "w") as f:
        f.write(f"model_name_or_path: {tok_dir}\nstage: pt\ndataset: texts\ndataset_dir: {data_dir}\n"
                f"template: {template}\ncutoff_len: {cutoff}\npreprocessing_batch_size: {batch}\n"
                f"preprocessing_num_workers: {workers}\noutput_dir: {work}/out\n"
                + ("" if packing else "packing: false\n"))
    out = run([binary, "data", "preview", "--config", job, "--num", len(TEXTS)]).stdout
    ids = [list(map(int, line.split(":", 1)[1].split())) for line in out.splitlines() if line.startswith("input_ids:")]
    masks = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("label_mask")]
    return ids, masks


def main():
    binary, work = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    try:
        import_llamafactory()
    except (ModuleNotFoundError, RuntimeError) as e:
        print(f"SKIP: llamafactory is not importable ({e})")
        sys.exit(77)
    os.makedirs(work, exist_ok=True)
    failures = []
    for k, (packing, cutoff, batch, workers, template, add_bos) in enumerate(CASES):
        tok_dir = make_tokenizer(os.path.join(work, f"tok{k}"))
        cfg_path = os.path.join(tok_dir, "tokenizer_config.json")
        cfg = json.load(open(cfg_path))
        if add_bos:
            cfg.update({"bos_token": "<|endoftext|>", "add_bos_token": True})
        json.dump(cfg, open(cfg_path, "w"))
        want, pad = llamafactory_blocks(tok_dir, packing, cutoff, batch, workers, template)
        got, masks = anneal_blocks(binary, os.path.join(work, f"case{k}"), tok_dir, packing, cutoff, batch, workers,
                                   template)
        want_masks = ["".join("." if t == pad else "#" for t in ids) for ids in want]
        if got != want or masks != want_masks:
            failures.append(f"case {CASES[k]}:\n  anneal: {got}\n  llamafactory: {want}\n  masks {masks} vs {want_masks}")
        else:
            print(f"ok: case {CASES[k]}: {len(want)} examples")
    if failures:
        print("FAIL: stage pt blocks differ from LLaMA-Factory's\n" + "\n".join(failures), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
