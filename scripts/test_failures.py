"""Prints why each failed ctest test failed, compactly, from ctest's JUnit report (scripts/test.sh runs it after a
failed ctest so the reasons are the last lines of the run: CI shows only the tail of the output).

    python3 scripts/test_failures.py build/Testing/junit.xml [--lines N]

For each failed test: its name, then the lines of its output that say why (Python's exception line, gtest's
"Failure" blocks, sanitizer summaries), else its last lines; each line cut to 300 characters."""
import argparse
import re
import sys
import xml.etree.ElementTree as ET

# What says why, best first (pattern, lines from it): our Python tests' "FAIL: " line (tests/testlib.py), a
# Python exception line, gtest's "Failure" block, a sanitizer's SUMMARY, ctest's timeout. Else the last lines.
PATTERNS = [
    (re.compile(r"^FAIL: "), 3),
    (re.compile(r"^([\w.]+)?(Error|Exception)\b.*?: "), 3),
    (re.compile(r": Failure$"), 4),
    (re.compile(r"^SUMMARY: \w+Sanitizer"), 1),
    (re.compile(r"\*\*\*Timeout|Killed"), 1),
]


def reasons(output, lines):
    text = [line.rstrip() for line in output.splitlines() if line.strip()]
    for pattern, after in PATTERNS:
        picked = []
        for i, line in enumerate(text):
            if pattern.search(line):
                picked += text[i:i + after]
            if len(picked) >= lines:
                break
        if picked:
            break
    chosen = picked[:lines] if picked else text[-lines:]
    return [line[:300] + ("..." if len(line) > 300 else "") for line in chosen]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("junit")
    ap.add_argument("--lines", type=int, default=6)
    args = ap.parse_args()
    try:
        root = ET.parse(args.junit).getroot()
    except (OSError, ET.ParseError) as e:
        print(f"test_failures.py: cannot read {args.junit}: {e}")
        return 0
    failed = [case for case in root.iter("testcase") if case.get("status") == "fail" or case.find("failure") is not
              None]
    if not failed:
        return 0
    print(f"\n== why {len(failed)} test(s) failed (scripts/test_failures.py; full output above) ==")
    for case in failed:
        out = case.find("system-out")
        seconds = float(case.get("time") or 0)
        print(f"-- {case.get('name')} ({seconds:.0f} s)")
        for line in reasons(out.text if out is not None and out.text else "", args.lines):
            print(f"   {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
