#!/usr/bin/env python3
"""test_sass_hist.py -- bench/sass_hist.py, which counts a kernel's executed
warp instructions by opcode from ncu's SASS page as CSV (gpu_check.sh
bwdsass): predicates and modifiers are not part of the opcode, counts with
thousands separators add up, lines before the header are skipped, and a file
that is not such a page is refused with a message. No torch, no GPU.
"""
import os
import sys
import tempfile

from harness import SOURCE_DIR, main, raises, test

sys.path.insert(0, os.path.join(SOURCE_DIR, "bench"))
import sass_hist  # noqa: E402


def write(text):
    f = tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False)
    f.write(text)
    f.close()
    return f.name


@test()
def counts_by_opcode_without_predicates_or_modifiers():
    path = write('==PROF== a line before the header\n'
                 '"Address","Source","Warp Stall Sampling (All Samples)","Instructions Executed"\n'
                 '"0x0","@P0 IADD3 R1, R2, R3, RZ","4","1,000"\n'
                 '"0x10","HGMMA.64x64x16.F32.BF16 R24, gdesc[UR4], R24","9","200"\n'
                 '"0x20","@!PT IADD3.X R4, R4, 1, RZ","1","500"\n'
                 '"0x30","STS.U16 [R1], R2","0",""\n')
    try:
        col, lines, total, hist = sass_hist.histogram(path)
    finally:
        os.unlink(path)
    assert col == "Instructions Executed", col
    assert (lines, total) == (3, 1700), (lines, total)
    assert hist == {"IADD3": 1500, "HGMMA": 200}, hist


@test()
def a_file_without_the_sass_header_is_refused():
    path = write("Metric Name,Metric Value\nsm__cycles,10\n")
    try:
        raises(SystemExit, lambda: sass_hist.histogram(path), "no header", "instructions-executed")
    finally:
        os.unlink(path)


@test()
def a_page_without_executed_counts_is_refused():
    path = write('"Source","Instructions Executed"\n"NOP",""\n')
    try:
        raises(SystemExit, lambda: sass_hist.histogram(path), "no executed instructions")
    finally:
        os.unlink(path)


if __name__ == "__main__":
    sys.exit(main(header="bench/sass_hist.py"))
