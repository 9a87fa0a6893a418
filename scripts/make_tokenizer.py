#!/usr/bin/env python3
"""Trains a small byte-level BPE tokenizer (Qwen2-style special tokens) with HF `tokenizers`, for demos and
tests that cannot download a real one. Writes tokenizer.json and tokenizer_config.json into --out.

    .venv/bin/python scripts/make_tokenizer.py --out DIR [--vocab-size 1024] [--corpus FILE ...]

The corpus defaults to the texts of examples/data/*.json plus a few built-in lines, so the result is the same
on every machine (the trainer is deterministic for a fixed input).
"""
import argparse
import glob
import json
import os

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
BUILTIN = [
    "The quick brown fox jumps over the lazy dog.",
    "Fine-tuning adapts a pretrained language model to a task with a small dataset.",
    "def add(a, b):\n    return a + b\n",
    "1234567890 + 9876543210 = 11111111100",
    "Anneal runs LoRA and full fine-tuning on a GPU cluster.",
]


def corpus_texts(files):
    texts = list(BUILTIN)
    for path in files:
        with open(path, encoding="utf-8") as f:
            rows = json.load(f) if path.endswith(".json") else [json.loads(l) for l in f if l.strip()]
        for row in rows if isinstance(rows, list) else []:
            if isinstance(row, dict):
                texts.extend(str(v) for v in row.values() if isinstance(v, str))
    return texts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--vocab-size", type=int, default=1024)
    ap.add_argument("--corpus", nargs="*")
    args = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    files = args.corpus if args.corpus else sorted(glob.glob(os.path.join(root, "examples/data/*.json")))
    files = [f for f in files if not f.endswith("dataset_info.json")]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=args.vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus_texts(files), trainer=trainer)
    os.makedirs(args.out, exist_ok=True)
    tok.save(os.path.join(args.out, "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": None, "eos_token": "<|im_end|>",
              "pad_token": "<|endoftext|>", "model_max_length": 4096, "clean_up_tokenization_spaces": False}
    with open(os.path.join(args.out, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    print(f"tokenizer with {tok.get_vocab_size()} tokens written to {args.out}")


if __name__ == "__main__":
    main()
