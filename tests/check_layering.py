#!/usr/bin/env python3
"""The include graph of lathe's areas follows the dependencies CMakeLists.txt declares.

An area (src/<area>, include/lathe/<area>) may include its own headers and those of the areas
it reaches through the `set(LATHE_DEPS_<area> ...)` declarations. The declarations must form no
cycle. Exit 1, naming every offending #include, otherwise 0.
"""
import pathlib
import re
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).resolve().parent.parent)
cmake = (root / "CMakeLists.txt").read_text()
deps = {m.group(1): m.group(2).split() for m in re.finditer(r"set\(LATHE_DEPS_(\w+)([^)]*)\)", cmake)}
if not deps:
    sys.exit("check_layering: no set(LATHE_DEPS_<area> ...) in CMakeLists.txt")

problems = []


def reach(area, seen=None, path=()):
    seen = set() if seen is None else seen
    for d in deps.get(area, []):
        if d in path or d == area:
            problems.append(f"dependency cycle: {' -> '.join(path + (area, d))}")
            continue
        if d not in seen:
            seen.add(d)
            reach(d, seen, path + (area,))
    return seen


allowed = {a: reach(a) | {a} for a in deps}
include = re.compile(r'^\s*#\s*include\s+"lathe/(\w+)/', re.M)
for area in deps:
    files = [*(root / "src" / area).rglob("*.[ch]pp"), *(root / "include" / "lathe" / area).rglob("*.hpp")]
    for f in files:
        for m in include.finditer(f.read_text()):
            used = m.group(1)
            if used not in allowed[area]:
                line = f.read_text().count("\n", 0, m.start()) + 1
                problems.append(f"{f.relative_to(root)}:{line}: area '{area}' includes lathe/{used}/, "
                                f"which is not among its dependencies ({', '.join(sorted(allowed[area] - {area})) or 'none'})")
areas_on_disk = {p.name for p in (root / "src").iterdir() if p.is_dir() and p.name != "pch"}
for a in sorted(areas_on_disk - set(deps)):
    problems.append(f"src/{a}/ has no set(LATHE_DEPS_{a} ...) in CMakeLists.txt")

for p in dict.fromkeys(problems):
    print(p)
sys.exit(1 if problems else 0)
