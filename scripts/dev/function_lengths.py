#!/usr/bin/env python3
"""Lists the functions in C++ sources longer than a limit (lines from the signature to the closing brace).

    scripts/dev/function_lengths.py [--max 80] [paths...]      (default: src include)

Exit status 1 when any function is over the limit. A heuristic brace scanner: comments, strings and character
literals are blanked first; a block counts as a function body when it opens at namespace or class level and
the text before it has a parameter list and is not a class, struct, enum, union or namespace head."""
import argparse
import pathlib
import re
import sys

HEADS = re.compile(r"\b(namespace|class|struct|enum|union)\b")


def blank(text):
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i)); i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j])); i = j
        elif text.startswith('R"', i):
            m = re.match(r'R"([^(]*)\(', text[i:])
            end = text.find(")" + m.group(1) + '"', i)
            j = end + len(m.group(1)) + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j])); i = j
        elif c in "\"'":
            if c == "'" and i > 0 and (text[i - 1].isalnum()):  # digit separator 1'000
                out.append(" "); i += 1; continue
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            out.append(c + " " * (j - i - 1) + c); i = j + 1
        else:
            out.append(c); i += 1
    return "".join(out)


def functions(path):
    text = blank(path.read_text())
    stack = []  # (kind, start_line)
    last_stop = 0
    line = 1
    for i, c in enumerate(text):
        if c == "\n":
            line += 1
        elif c in ";":
            last_stop = i + 1
        elif c == "{":
            head = text[last_stop:i]
            outer_ok = all(k == "scope" for k, _, _ in stack)
            if outer_ok and "(" in head and not HEADS.search(head.split("(")[0]) and "=" not in head.split("(")[0]:
                lead = len(head) - len(head.lstrip())
                start = line - head.count("\n") + head[:lead].count("\n")
                name = re.findall(r"([~\w:<>]+)\s*\(", head)
                stack.append(("func", start, name[0] if name else "?"))
            elif outer_ok and (HEADS.search(head) or head.strip().startswith("extern")):
                stack.append(("scope", line, ""))
            else:
                stack.append(("block", line, ""))
            last_stop = i + 1
        elif c == "}":
            kind, start, name = stack.pop() if stack else ("block", line, "")
            if kind == "func":
                yield name, start, line
            last_stop = i + 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--max", type=int, default=80)
    ap.add_argument("paths", nargs="*", default=["src", "include"])
    args = ap.parse_args()
    over = []
    for root in args.paths:
        p = pathlib.Path(root)
        files = [p] if p.is_file() else sorted(list(p.rglob("*.cpp")) + list(p.rglob("*.hpp")))
        for f in files:
            for name, start, end in functions(f):
                if end - start + 1 > args.max:
                    over.append((end - start + 1, f"{f}:{start}", name))
    for length, where, name in sorted(over, reverse=True):
        print(f"{length:5d}  {where}  {name}")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
