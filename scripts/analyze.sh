#!/usr/bin/env bash
# Re-run the analysis on an existing results CSV without training anything.
#   scripts/analyze.sh results/demo/results.csv [overrides...]   (outputs in results/demo/analysis/)
#   scripts/analyze.sh theirs.csv columns.params="Model Size" columns.flops="Training FLOP" out=theirs_analysis
set -euo pipefail
if [[ $# -lt 1 || "$1" == -h || "$1" == --help ]]; then
    echo "usage: $0 RESULTS.csv [hydra overrides, e.g. out=DIR params=nonembedding metric=val_loss bootstrap=200]" >&2
    exit 2
fi
results=$1
shift
if [[ -d "$results" ]]; then
    out="$results/analysis"
else
    out="$(dirname -- "$results")/analysis"
fi
for arg in "$@"; do
    if [[ "$arg" == out=* ]]; then
        out=""
    fi
done
args=("results=$results")
if [[ -n "$out" ]]; then
    args+=("out=$out")
fi
if command -v harness-analyze >/dev/null 2>&1; then
    exec harness-analyze "${args[@]}" "$@"
fi
here="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
exec env PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" "${PYTHON:-python3}" -c "from harness.cli import analyze_main; analyze_main()" "${args[@]}" "$@"
