#!/usr/bin/env bash
# Run a sweep end to end: plan -> train every planned run (Hydra multirun) -> fit -> report.
#   IsoFLOP sweeps (demo, cpu, gpu): trained in rounds too (harness.adapt): round 0 is the planned grid; each later
#   round adds sizes beyond the edge of a budget whose parabola minimum is not bracketed (sweep.adapt.*), and the
#   last one only says whether every budget is usable. Then the held-out validation run and the scaling-law report.
#   The LR sweep (sweep=lr): trained in rounds (each refines the LRs of the one before), then the LR rule.
# Any Hydra override passes through, e.g.
#   scripts/sweep.sh                                  # the default demo on the embedded corpus
#   scripts/sweep.sh sweep=lr                         # fit the LR rule (results/lr/lr_rule.json)
#   scripts/sweep.sh sweep=cpu                        # a larger CPU sweep
#   scripts/sweep.sh hydra/launcher=basic train.threads=0   # sequential, all cores per run
#   scripts/sweep.sh hydra/launcher=slurm             # SLURM through hydra-submitit-launcher
#   scripts/sweep.sh data=text data.path=/my/corpus  # your own data
# Killed at any moment, the same command resumes: runs with an ok row are skipped.
set -euo pipefail
for arg in "$@"; do
  case "$arg" in
    print=*) echo "error: scripts/sweep.sh trains the sweep; '${arg}' is harness-sweep's dry run: run" \
                  "'harness-sweep <same overrides> ${arg}' to see the plan without training" >&2
             exit 2 ;;
  esac
done
export HARNESS_SWEEP_START="${HARNESS_SWEEP_START:-$(date +%s)}"
export PYTHONUNBUFFERED=1

rounds=1
round=0
while [ "$round" -lt "$rounds" ]; do
  # 1. Plan (also validates every input before anything is trained), in one harness-sweep start: print=plan
  #    prints the table, then the lines count=N, results_dir=DIR and rounds=R for this script.
  plan=$(harness-sweep "$@" sweep_round="$round" print=plan)
  grep -v -e '^count=' -e '^results_dir=' -e '^rounds=' <<<"$plan"
  n=$(sed -n 's/^count=//p' <<<"$plan" | tail -n 1)
  results_dir=$(sed -n 's/^results_dir=//p' <<<"$plan" | tail -n 1)
  rounds=$(sed -n 's/^rounds=//p' <<<"$plan" | tail -n 1)
  echo "[sweep.sh] ${n} jobs -> ${results_dir}"
  [ "$n" -gt 0 ] || break

  # 2. Train all planned runs through Hydra's launcher (joblib by default: one job per core).
  harness-sweep --multirun "$@" sweep_round="$round" "plan_index=range(0,${n})"
  round=$((round + 1))
done

# 3. Fit the scaling laws, 4. train the held-out run and compare, 5. write the report (an LR sweep: the rule).
# HARNESS_VALIDATE_PREFIX runs it elsewhere, e.g. "srun -c 4 --mem=8G -t 120" off a SLURM login node.
${HARNESS_VALIDATE_PREFIX:-} harness-validate "$@"
