"""Builds LLaMA-2 / Mistral-style tokenizer.json files from the real Mistral-7B v0.1 SentencePiece model that the
PyPI package mistral-common ships (mistral_common/data/tokenizer.model.v1), with HF tokenizers' own classes.

Two spellings, both found in published tokenizer.json files of that family:
  legacy:    normalizer Sequence[Prepend("▁"), Replace(" ", "▁")], no pre-tokenizer (LLaMA-2, Mistral-7B v0.1);
  metaspace: no normalizer, Metaspace(prepend_scheme="first", split=False) pre-tokenizer (newer conversions).
Decoders: Sequence[Replace("▁", " "), ByteFallback, Fuse, Strip(" ", 1, 0)] and Metaspace respectively.

Usage: make_sp_tokenizers.py OUT_DIR  ->  OUT_DIR/sp-legacy/tokenizer.json, OUT_DIR/sp-metaspace/tokenizer.json
"""
import importlib.resources
import os
import sys

from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import BPE
from transformers.convert_slow_tokenizer import SentencePieceExtractor


def sp_model_path():
    return str(importlib.resources.files("mistral_common") / "data" / "tokenizer.model.v1")


def build(variant):
    kw = SentencePieceExtractor(sp_model_path()).extract(BPE)
    vocab, merges = kw["vocab"], kw["merges"]
    tok = Tokenizer(BPE(vocab, merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in ("<unk>", "<s>", "</s>")])
    if variant == "legacy":
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    return tok


def main():
    out = sys.argv[1]
    for variant in ("legacy", "metaspace"):
        d = os.path.join(out, "sp-" + variant)
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, "tokenizer.json")
        if not os.path.exists(path):
            tmp = path + ".tmp%d" % os.getpid()
            build(variant).save(tmp)
            os.replace(tmp, path)
        print(path)


if __name__ == "__main__":
    main()
