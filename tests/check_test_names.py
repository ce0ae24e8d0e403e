#!/usr/bin/env python3
"""Every Catch2 test case can be run by its CTest entry: a name with ';' is cut in two by CMake's
list splitting, and the entry then matches no test and passes without running one. Exit 1, naming
each such TEST_CASE, otherwise 0."""
import pathlib
import re
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).resolve().parent.parent)
bad = []
for f in sorted((root / "tests").glob("*.cpp")):
    text = f.read_text()
    for m in re.finditer(r'TEST_CASE\(\s*"((?:[^"\\]|\\.)*)"', text):
        if ";" in m.group(1):
            bad.append(f"{f.relative_to(root)}:{text.count(chr(10), 0, m.start()) + 1}: '{m.group(1)}' holds ';'")
for b in bad:
    print(b)
sys.exit(1 if bad else 0)
