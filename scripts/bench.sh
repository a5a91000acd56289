#!/usr/bin/env bash
# Trainer speed benchmark (benchmarks/throughput.py): this machine's matmul peak per precision, then for each
# model preset x precision the training step's tokens/s, FLOP/s (exact count), MFU and peak memory, the data
# sampler's share of a step and torch.compile off/on; table on stdout, JSON in results/bench/throughput.json.
#   scripts/bench.sh                                          # nano, micro, mini, small x fp32, bf16, all cores
#   scripts/bench.sh --presets mini --dtypes bf16 --profile   # plus torch.profiler's top ops
#   scripts/bench.sh --threads 1,2 --out results/bench/threads.json
#   scripts/bench.sh --help                                   # every option
#   scripts/bench.sh tiny [--sizes 16,24 ...]                 # benchmarks/tiny.py instead: tiny family members vs a
#                                                             # plain nanoGPT-style loop, packed seeds vs sequential
#                                                             # (results/bench/tiny.json; README "Tiny-model speed")
# The box may be shared: each row notes the cores other processes kept busy while it was timed.
set -euo pipefail
here="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
script="$here/benchmarks/throughput.py"
if [ "${1:-}" = "tiny" ]; then
  script="$here/benchmarks/tiny.py"
  shift
fi
exec env PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" "${PYTHON:-python3}" "$script" "$@"
