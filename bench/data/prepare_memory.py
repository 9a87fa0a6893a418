"""Tokenized-cache preparation: peak RSS and rows/s vs file size, bounded-memory build vs loading whole.

Generates alpaca jsonl files of the given sizes (and the same rows as parquet, 20k-row row groups), builds the
cache of each with `anneal-data data prepare` twice (bounded memory, then --in-memory), checks both caches are
byte-identical, and prints a markdown table for docs/benchmarks.md. The byte-level test tokenizer
(tests/parity/data/stream_parity.py) keeps tokenization cheap, so the figures are about reading and memory.

Usage: .venv/bin/python bench/data/prepare_memory.py build/bin/anneal-data [--sizes-mib 16,64,256] [--cap-mib 64] [--work DIR]
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "parity", "data"))
import stream_parity  # noqa: E402


def main():
    binary = sys.argv[1]
    sizes = [16, 64, 128]
    if "--sizes-mib" in sys.argv:
        sizes = [int(s) for s in sys.argv[sys.argv.index("--sizes-mib") + 1].split(",")]
    work = sys.argv[sys.argv.index("--work") + 1] if "--work" in sys.argv else "/tmp/anneal-prepare-bench"
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    tok = os.path.join(work, "tok")
    stream_parity.write_tokenizer(tok)
    cap = int(sys.argv[sys.argv.index("--cap-mib") + 1]) if "--cap-mib" in sys.argv else 64
    rows = stream_parity.check_memory(binary, work, tok, sizes, cap)
    capped = [r for r in rows if "cap_mib" in r]
    rows = [r for r in rows if "cap_mib" not in r]
    print("| format | file MiB | examples | peak RSS bounded MiB | peak RSS whole MiB | rows/s bounded | rows/s whole |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['format']} | {r['file_mib']} | {r['examples']} | {r['streamed_peak_mib']} | "
              f"{r['in_memory_peak_mib']} | {r['streamed_rows_per_s']} | {r['in_memory_rows_per_s']} |")
    for r in capped:
        print(f"\nUnder RLIMIT_DATA {r['cap_mib']} MiB, the {r['file_mib']} MiB jsonl: "
              f"{'loading whole' if r['in_memory'] else 'bounded build'} {'ok' if r['ok'] else 'runs out of memory'}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
