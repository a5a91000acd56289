r"""Adaptive IsoFLOP grids on corpora unlike the default (README "Adaptive grids on other corpora").

The corpora, assembled on the measuring machine (from the worktree, so site-packages is the project's venv):

    mkdir -p C/pkgdocs; declare -A seen; i=0
    find .venv/lib/python3*/site-packages -type f \( -name "*.md" -o -name "*.rst" -o -name METADATA \
        -o -iname "LICENSE*" -o -iname "README*" -o -iname "AUTHORS*" \) | sort | while read -r f; do
      h=$(md5sum < "$f" | cut -c1-32); [ -n "${seen[$h]:-}" ] && continue; seen[$h]=1
      i=$((i+1)); cp "$f" C/pkgdocs/$(printf %05d $i).txt; done            # distinct files only
    find /usr/share/doc -type f -name copyright | sort | xargs cat | head -c 1000000 > C/copyright.txt
    # and /usr/include/linux as it is, with data.pattern='**/*.h'

Then one scripts/sweep.sh per corpus (README "Adaptive grids on other corpora" has each command), timed, and

    python benchmarks/adapt_corpora.py summary results/bench/adapt_corpora.json NAME=RESULTS_DIR:SECONDS ...

`summary` reads what each sweep wrote (results.csv, adapt.json, fits.json) and records, per corpus: budgets
usable after the planned grid and after the adaptive rounds, the extra runs, the held-out errors and the wall
time measured around scripts/sweep.sh (given as :SECONDS). Nothing here trains; the numbers are the sweeps'.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path


def _rel(c: dict) -> float | None:
    """A comparison's relative error, or None."""
    return None if c.get("rel_error") is None else round(float(c["rel_error"]), 4)


def summarize(where: Path, seconds: float | None) -> dict:
    """One sweep's adaptive rounds, usable budgets and held-out errors, from its results directory."""
    rounds = json.loads((where / "adapt.json").read_text())["rounds"] if (where / "adapt.json").exists() else {}
    with open(where / "results.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["role"] == "sweep"]
    first = rounds.get("1", {}).get("notes", [])
    out = {
        "results_dir": str(where), "sweep_runs": len(rows), "budgets": sorted({float(r["budget_flops"]) for r in rows}),
        "after_grid": [n.split(": ", 1)[1] for n in first if n.split(": ", 1)[1].startswith("budget")],
        "extra_runs": [run for r in rounds.values() for run in r.get("runs", [])],
        "last_round": rounds[max(rounds, key=int)]["notes"] if rounds else [],
        "data_fingerprint": sorted({r["data_fingerprint"] for r in rows}), "wall_seconds": seconds,
    }
    fits = where / "fits.json"
    if fits.exists():
        doc = json.loads(fits.read_text())
        out["budgets_used"] = doc["approach2"]["budgets_used"]
        out["holdout"] = [{"model": v["model"], "budget": v["budget"], "actual": v["actual"],
                           **{a: {"rel_error": _rel(c), "inside": c.get("inside")} for a, c in v["comparison"].items()}}
                          for v in doc.get("validation", [])]
    else:
        out["budgets_used"], out["holdout"] = None, "no fits.json: validation refused the sweep (see last_round)"
    return out


def main(argv: list[str]) -> int:
    """summary OUT.json NAME=DIR[:SECONDS] ..."""
    if len(argv) >= 3 and argv[0] == "summary":
        doc = {}
        for spec in argv[2:]:
            name, _, rest = spec.partition("=")
            path, _, secs = rest.partition(":")
            doc[name] = summarize(Path(path), float(secs) if secs else None)
        Path(argv[1]).parent.mkdir(parents=True, exist_ok=True)
        Path(argv[1]).write_text(json.dumps(doc, indent=1) + "\n")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
