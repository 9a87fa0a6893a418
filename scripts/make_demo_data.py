#!/usr/bin/env python3
"""Writes the demo's instruction dataset (alpaca format) and its dataset_info.json into examples/data/.

The tasks are small and regular (reverse a list of words, add two numbers, uppercase a word, name a
colour's opposite) so that a tiny model's loss visibly falls within a few minutes on a CPU. Deterministic.
"""
import json
import os
import random

WORDS = ["apple", "river", "stone", "cloud", "green", "tiger", "piano", "candle", "orbit", "maple", "quiet",
         "silver", "window", "forest", "lemon", "rocket", "shadow", "garden", "planet", "copper"]
OPPOSITES = {"black": "white", "hot": "cold", "up": "down", "left": "right", "day": "night", "fast": "slow",
             "big": "small", "open": "closed", "early": "late", "full": "empty"}


def rows(n, seed):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            ws = rng.sample(WORDS, 3)
            out.append({"instruction": "Reverse the order of these words.", "input": " ".join(ws),
                        "output": " ".join(reversed(ws))})
        elif kind == 1:
            a, b = rng.randint(1, 99), rng.randint(1, 99)
            out.append({"instruction": f"What is {a} plus {b}?", "input": "", "output": f"{a} plus {b} is {a + b}."})
        elif kind == 2:
            w = rng.choice(WORDS)
            out.append({"instruction": "Write this word in capital letters.", "input": w, "output": w.upper()})
        else:
            k = rng.choice(sorted(OPPOSITES))
            out.append({"instruction": f"What is the opposite of {k}?", "input": "", "output": f"The opposite of {k} is {OPPOSITES[k]}."})
    return out


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    d = os.path.join(root, "examples", "data")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "demo_train.json"), "w") as f:
        json.dump(rows(400, 1), f, indent=1)
    with open(os.path.join(d, "demo_eval.json"), "w") as f:
        json.dump(rows(40, 2), f, indent=1)
    info = {"demo_train": {"file_name": "demo_train.json"}, "demo_eval": {"file_name": "demo_eval.json"}}
    with open(os.path.join(d, "dataset_info.json"), "w") as f:
        json.dump(info, f, indent=2)
    print(f"wrote {d}/demo_train.json (400 rows), demo_eval.json (40 rows), dataset_info.json")


if __name__ == "__main__":
    main()
