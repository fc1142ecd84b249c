"""sass_hist.py -- reads the SASS page of an ncu report as CSV (ncu --import
R.ncu-rep --page source --csv --print-source sass > R.csv, gpu_check.sh
bwdsass) and prints the kernel's executed warp instructions by opcode, most
first: where one kernel executes more instructions than another (session 30:
sfa's dense backward 20% more than cuDNN's), which instructions they are.

    python3 bench/sass_hist.py R.csv [--top 30]

The count column is the first whose header names executed instructions
(\"Instructions Executed\" or inst_executed); the opcode is the first word of
the SASS text after any predicate (@P0, @!PT) and before its modifiers."""
import argparse
import csv
import re
import sys


def opcode(text):
    words = text.strip().split()
    if words and words[0].startswith("@"):
        words = words[1:]
    return words[0].split(".")[0] if words else "?"


def histogram(path):
    """(count column's header, SASS lines, total executed, {opcode: executed})
    of the CSV at path; SystemExit with a message when it is not such a page."""
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    for head, cols in enumerate(rows):  # ncu may print lines before the header
        src = next((j for j, c in enumerate(cols) if c.strip().lower() == "source"), None)
        cnt = next((j for j, c in enumerate(cols) if re.search(r"instructions executed|inst_executed", c, re.I)), None)
        if src is not None and cnt is not None:
            break
    else:
        raise SystemExit(f"sass_hist.py: {path}: no header with Source and an instructions-executed column")
    hist, total, lines = {}, 0, 0
    for r in rows[head + 1:]:
        if len(r) <= max(src, cnt):
            continue
        try:
            n = float(r[cnt].replace(",", ""))
        except ValueError:
            continue
        op = opcode(r[src])
        hist[op] = hist.get(op, 0) + n
        total += n
        lines += 1
    if not total:
        raise SystemExit(f"sass_hist.py: {path}: no executed instructions in {lines} SASS lines")
    return cols[cnt], lines, total, hist


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv")
    ap.add_argument("--top", type=int, default=30)
    a = ap.parse_args()
    col, lines, total, hist = histogram(a.csv)
    print(f"{a.csv}: {lines} SASS lines, {total:,.0f} warp instructions executed (column '{col}')")
    for op, n in sorted(hist.items(), key=lambda x: -x[1])[:a.top]:
        print(f"  {op:<12} {n:16,.0f}  {100 * n / total:5.1f}%")


if __name__ == "__main__":
    sys.exit(main())
