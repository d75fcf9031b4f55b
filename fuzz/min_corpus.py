#!/usr/bin/env python3
"""Shrinks fuzz/corpus/<target> to at most LIMIT files (default 200) by edge coverage.

`cargo fuzz cmin` keeps every input that owns an edge; this keeps the `seed-*` files, then
greedily the input that adds the most edges not yet covered (smaller first on ties), until
LIMIT files or full coverage. Run from fuzz/ after `cargo fuzz build`:

    python3 min_corpus.py <target> [LIMIT]
"""
import os
import shutil
import subprocess
import sys
import tempfile

target = sys.argv[1]
limit = int(sys.argv[2]) if len(sys.argv) > 2 else 200
binary = f"target/x86_64-unknown-linux-gnu/release/{target}"
corpus = f"corpus/{target}"

with tempfile.TemporaryDirectory() as tmp:
    ctl = os.path.join(tmp, "control")
    os.mkdir(os.path.join(tmp, "empty"))
    subprocess.run(
        [binary, "-merge=1", "-use_counters=0", f"-merge_control_file={ctl}",
         os.path.join(tmp, "empty"), corpus],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    lines = open(ctl).read().split("\n")
    n = int(lines[0])
    files = lines[2:2 + n]
    features = {}
    for line in lines[2 + n:]:
        parts = line.split()
        if parts and parts[0] == "FT":
            features[int(parts[1])] = set(map(int, parts[2:]))
    size = {i: os.path.getsize(f) for i, f in enumerate(files)}
    every = set().union(*features.values()) if features else set()
    chosen = [i for i, f in enumerate(files) if os.path.basename(f).startswith("seed-")]
    covered = set().union(*(features.get(i, set()) for i in chosen)) if chosen else set()
    while len(chosen) < limit:
        gains = [i for i in features if i not in chosen and features[i] - covered]
        if not gains:
            break
        best = max(gains, key=lambda i: (len(features[i] - covered), -size[i]))
        chosen.append(best)
        covered |= features[best]
    keep = os.path.join(tmp, "keep")
    os.mkdir(keep)
    for i in chosen:
        shutil.copy(files[i], keep)
    shutil.rmtree(corpus)
    shutil.copytree(keep, corpus)
    pct = 100 * len(covered) / max(1, len(every))
    print(f"{target}: kept {len(chosen)} of {n} files, "
          f"{sum(size[i] for i in chosen)} bytes, {len(covered)}/{len(every)} edges ({pct:.1f}%)")
