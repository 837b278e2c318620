"""Summarise a py-spy profile (``--format raw``, collapsed stacks) as text.

``python -m bench.flame PROFILE.txt [--top 25]`` prints the functions with the
most samples on the stack (inclusive) and on top of it (self), as shares of
all samples, which is what was needed to decide what to remove from the hot
paths (see bench/README.md). Line numbers are dropped so one function is one
row.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")


def _name(frame: str) -> str:
    match = _FRAME.match(frame)
    if match is None:
        return frame
    return f"{match['function']} ({match['file']})"


def summarise(path: Path, top: int, within: str | None = None) -> str:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        count = int(match["count"])
        frames = [_name(f) for f in match["stack"].split(";") if f]
        if within is not None and not any(within in f for f in frames):
            continue
        total += count
        for name in set(frames):
            inclusive[name] += count
        if frames:
            own[frames[-1]] += count
    if not total:
        return f"{path}: no samples"
    out = [f"{path.name}: {total} samples", "", "inclusive:"]
    out += [f"  {n / total:6.1%}  {name}" for name, n in inclusive.most_common(top)]
    out += ["", "self:"]
    out += [f"  {n / total:6.1%}  {name}" for name, n in own.most_common(top)]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("profiles", type=Path, nargs="+")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--within", help="count only samples with a frame containing this text, e.g. redeem_link"
    )
    args = parser.parse_args()
    for path in args.profiles:
        print(summarise(path, args.top, args.within))
        print()


if __name__ == "__main__":
    main()
