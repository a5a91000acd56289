#!/usr/bin/env bash
# Run an IsoFLOP sweep end to end: plan -> train every planned run (Hydra multirun) -> analysis ->
# held-out validation run -> report. Any Hydra override passes through, e.g.
#   scripts/sweep.sh                                  # the default demo on the embedded corpus
#   scripts/sweep.sh sweep=cpu                        # a larger CPU sweep
#   scripts/sweep.sh hydra/launcher=basic train.threads=0   # sequential, all cores per run
#   scripts/sweep.sh hydra/launcher=slurm             # SLURM through hydra-submitit-launcher
#   scripts/sweep.sh data=text data.path=/my/corpus  # your own data
# Killed at any moment, the same command resumes: runs with an ok row are skipped.
set -euo pipefail
export HARNESS_SWEEP_START="${HARNESS_SWEEP_START:-$(date +%s)}"
export PYTHONUNBUFFERED=1

# 1. Plan (also validates every input before anything is trained).
plan=$(harness-sweep "$@" print=table)
echo "$plan"
n=$(harness-sweep "$@" print=count | tail -n 1)
results_dir=$(harness-sweep "$@" print=results_dir | tail -n 1)

# 2. Train all planned runs through Hydra's launcher (joblib by default: one job per core).
harness-sweep --multirun "$@" "plan_index=range(0,${n})"

# 3. Fit the scaling laws, 4. train the held-out run and compare, 5. write the report.
# HARNESS_VALIDATE_PREFIX runs it elsewhere, e.g. "srun -c 4 --mem=8G -t 120" off a SLURM login node.
${HARNESS_VALIDATE_PREFIX:-} harness-validate "$@"
