#!/usr/bin/env python3
"""requirements.lock is in step with requirements.txt: every package requirements.txt pins is in
the lock at the same version, the lock says which interpreter and platform it was resolved for,
and every line of it is one exact pin (scripts/setup.sh installs it with --no-deps, so a loose
line would install whatever is newest). Exit 1, naming each difference, otherwise 0.
Regenerate with scripts/dev/lock_requirements.py."""
import pathlib
import re
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).resolve().parent.parent)


def normalise(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path, bad):
    found = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        spec = line.split("#", 1)[0].strip()
        if not spec:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!-]+)", spec)
        if not m:
            bad.append(f"{path.name}:{number}: '{spec}' is not one exact pin (name==version)")
            continue
        found[normalise(m.group(1))] = (m.group(2), number)
    return found


bad = []
wanted = pins(root / "requirements.txt", bad)
lock_path = root / "requirements.lock"
locked = pins(lock_path, bad)
if not re.search(r"^# for: cp\d+ \S+$", lock_path.read_text(), re.M):
    bad.append("requirements.lock: no '# for: cpXY PLATFORM' line")
for name, (version, number) in sorted(wanted.items()):
    if name not in locked:
        bad.append(f"requirements.txt:{number}: {name} is not in requirements.lock")
    elif locked[name][0] != version:
        bad.append(f"requirements.txt:{number}: {name}=={version}, requirements.lock:{locked[name][1]} "
                   f"has {locked[name][0]}")
for b in bad:
    print(b)
if bad:
    print("regenerate the lock: .venv/bin/python scripts/dev/lock_requirements.py")
sys.exit(1 if bad else 0)
