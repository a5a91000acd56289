#!/usr/bin/env bash
# Trainer speed benchmark (benchmarks/throughput.py): this machine's matmul peak per precision, then for each
# model preset x precision the training step's tokens/s, FLOP/s (exact count), MFU and peak memory, the data
# sampler's share of a step and torch.compile off/on; table on stdout, JSON in results/bench/throughput.json.
#   scripts/bench.sh                                          # nano, micro, mini, small x fp32, bf16, all cores
#   scripts/bench.sh --presets mini --dtypes bf16 --profile   # plus torch.profiler's top ops
#   scripts/bench.sh --threads 1,2 --out results/bench/threads.json
#   scripts/bench.sh --help                                   # every option
# The box may be shared: each row notes the cores other processes kept busy while it was timed.
set -euo pipefail
here="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
exec env PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" "${PYTHON:-python3}" "$here/benchmarks/throughput.py" "$@"
