#!/usr/bin/env bash
# A one-node SLURM cluster on this machine (loopback only), and a proof that sweeps run through it.
#
#   scripts/slurm_local.sh                 # start (or reuse) the cluster, run a tiny sweep through
#                                          # hydra/launcher=slurm, check results.csv, then check that a job
#                                          # signalled like a timeout is requeued and resumes its checkpoint
#   scripts/slurm_local.sh --no-requeue    # ... without the requeue check
#   scripts/slurm_local.sh --up            # only start (or reuse) the cluster and wait until it is idle
#   scripts/slurm_local.sh --stop          # stop the daemons this script started
#   scripts/slurm_local.sh -- OVERRIDES    # extra Hydra overrides for the tiny sweep
#
# Setup (root, Debian/Ubuntu): apt-get install slurm-wlm munge, a munge key, a minimal slurm.conf
# (/etc/slurm/slurm.conf, marked as ours; an existing foreign one is never touched), then munged,
# slurmctld and slurmd started directly (no systemd needed). Everything listens on 127.0.0.1 only.
# Rerunning it reuses the running cluster (a foreign cluster that answers `sinfo` is used as it is).
# Exit status: 0 when every planned run has an ok row (and the requeue check passed), non-zero otherwise.
# Environment: SLURM_LOCAL_WORK (default /tmp/harness-slurm-local) holds the sweeps' results and logs.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${SLURM_LOCAL_WORK:-/tmp/harness-slurm-local}
CONF=/etc/slurm/slurm.conf
MARK="# written by harness scripts/slurm_local.sh"
LOGDIR=/var/log/slurm
SPOOL=/var/spool/slurm-local
CTLD_PID=/run/slurm-local/slurmctld.pid
SLURMD_PID=/run/slurm-local/slurmd.pid
MUNGE_PID=/run/munge/munged.pid
NODE=localhost

mode=all
requeue=1
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --stop) mode=stop ;;
    --up) mode=up ;;
    --no-requeue) requeue=0 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
log() { echo "[slurm_local] $*"; }
die() { echo "[slurm_local] error: $*" >&2; exit 1; }

stop_pidfile() {  # stop_pidfile NAME PIDFILE: TERM the process named in PIDFILE (if it is NAME), wait
  local name=$1 file=$2 pid
  [ -s "$file" ] || return 0
  pid=$(cat "$file")
  if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]; then
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    log "stopped $name (pid $pid)"
  fi
  rm -f "$file"
}

running() {  # running NAME PIDFILE
  local pid
  [ -s "$2" ] && pid=$(cat "$2") && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ]
}

node_state() { timeout 3 sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n 1; }  # sinfo retries ~10 s without a controller
cluster_idle() { command -v sinfo >/dev/null && [[ "$(node_state)" =~ ^(idle|mixed|allocated)$ ]]; }

if [ "$mode" = stop ]; then
  stop_pidfile slurmd "$SLURMD_PID"
  stop_pidfile slurmctld "$CTLD_PID"
  if grep -qF "$MARK" "$CONF" 2>/dev/null; then stop_pidfile munged "$MUNGE_PID"; fi
  exit 0
fi

# ---------------------------------------------------------------------------------------------------------
# 1. The cluster: reuse, or install + configure + start.
t_setup=$(now)
ours=1
if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then ours=0; fi
if cluster_idle && { [ "$ours" = 0 ] || [ "$(id -u)" != 0 ]; }; then
  log "reusing the running cluster as it is: $(sinfo -h -o '%P %D nodes %T' | head -n 1)"
elif [ "$ours" = 0 ]; then
  die "$CONF was not written by this script and its cluster has no idle node $NODE; start that cluster yourself"
else
  # Ours (or none yet): make sure of each piece; a running cluster with the same slurm.conf is left running.
  [ "$(id -u)" = 0 ] || die "no idle SLURM node answers sinfo, and starting one needs root"
  if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    log "installing slurm-wlm and munge (apt-get)"
    t=$(now)
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
    log "installed in $(since "$t") s: $(slurmctld -V)"
  fi

  # munge: a key (the Debian package usually makes one) and the daemon, as user munge where it exists.
  if [ ! -s /etc/munge/munge.key ]; then
    if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key
    else dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; fi
  fi
  mkdir -p /run/munge /var/lib/munge /var/log/munge
  if id munge >/dev/null 2>&1; then
    chown munge:munge /etc/munge/munge.key /run/munge /var/lib/munge /var/log/munge
  fi
  chmod 0400 /etc/munge/munge.key
  if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    if id munge >/dev/null 2>&1; then runuser -u munge -- munged --force
    else munged --force; fi
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
    munge -n | unmunge >/dev/null || die "munged does not answer"
    log "munged started"
  fi

  # slurm.conf: one node (this machine, named localhost, 127.0.0.1), one partition, no cgroups, no
  # accounting database (so no sacct); finished jobs go to a text file (jobcomp) for timings.
  # cred_expire=10: a requeued job may start again 11 s after the requeue (default 120 s + 1);
  # sched_interval/bf_interval=5: pending jobs that became eligible are started within 5 s (default 60/30 s).
  cpus=$(nproc)
  mem_mb=$(awk '/MemTotal/ { printf "%d", $2 / 1024 * 0.9 }' /proc/meminfo)
  mkdir -p "$(dirname "$CONF")" "$LOGDIR" "$SPOOL/ctld" "$SPOOL/d" "$(dirname "$CTLD_PID")"
  new_conf=$(cat <<EOF
$MARK
ClusterName=local
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=6817
SlurmdPort=6818
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
AuthType=auth/munge
AuthInfo=cred_expire=10
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/d
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5,bf_interval=5
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$LOGDIR/jobcomp.log
MinJobAge=600
KillWait=10
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
)
  if [ "$(cat "$CONF" 2>/dev/null)" != "$new_conf" ]; then
    echo "$new_conf" > "$CONF"
    log "wrote $CONF ($cpus CPUs, ${mem_mb} MB)"
    stop_pidfile slurmd "$SLURMD_PID"     # running daemons would keep the old configuration
    stop_pidfile slurmctld "$CTLD_PID"
  fi
  if ! running slurmctld "$CTLD_PID"; then slurmctld; log "slurmctld started"; fi
  if ! running slurmd "$SLURMD_PID"; then slurmd -N "$NODE"; log "slurmd started"; fi

  for i in $(seq 120); do
    cluster_idle && break
    state=$(node_state || true)
    if [[ "$state" =~ ^(down|drained|draining) ]] && [ "$i" -gt 5 ]; then
      scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true
    fi
    sleep 0.5
  done
  cluster_idle || die "node $NODE is not idle after 60 s (state: $(node_state || echo '?')); see $LOGDIR/"
fi
log "cluster ready in $(since "$t_setup") s: $(sinfo -h -N -o '%N %T %c CPUs %m MB' | head -n 1)"
[ "$mode" = up ] && exit 0

# ---------------------------------------------------------------------------------------------------------
# 2. The harness, and the bare cost of a job.
if ! command -v harness-sweep >/dev/null; then
  [ -f "$REPO/.venv/bin/activate" ] || die "harness-sweep not found; pip install -e '.[slurm]' first"
  # shellcheck disable=SC1091
  . "$REPO/.venv/bin/activate"
fi
python -c "import hydra_plugins.hydra_submitit_launcher" 2>/dev/null \
  || die "hydra-submitit-launcher is missing: pip install -e '.[slurm]'"
mkdir -p "$WORK"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1

t=$(now); srun -N1 -n1 true; log "empty job (srun true): $(awk -v a="$t" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }') s"
python - "$WORK/empty" <<'EOF'
import sys, time
import submitit
ex = submitit.AutoExecutor(folder=sys.argv[1], cluster="slurm")
ex.update_parameters(timeout_min=5, cpus_per_task=1, mem_gb=1, name="harness-empty")
t = time.time()
job = ex.submit(int, 0)
job.result()
print(f"[slurm_local] empty submitit job (submit -> result back): {time.time() - t:.1f} s")
EOF

# ---------------------------------------------------------------------------------------------------------
# 3. A tiny sweep through the launcher: 2 budgets x 3 sizes of nano-width models, a few seconds each.
TINY=(sweep.budgets="[1e10,2e10]" sweep.sizes_per_budget=3 sweep.d_model_min=8 sweep.d_model_max=64
      model.seq_len=32 train.batch_size=32 train.eval_windows=16 train.progress=false train.threads=1)
launcher="" current=""
cleanup() {  # interrupted: stop the launcher we started and cancel its jobs
  if [ -n "$launcher" ] && kill -0 "$launcher" 2>/dev/null; then
    kill "$launcher" 2>/dev/null || true
    scancel --name "harness-$current" 2>/dev/null || true
  fi
}
trap cleanup EXIT
watch_launcher() {  # watch_launcher PID NAME: wait for the launcher; fail if it waits on jobs SLURM forgot
  # Without an accounting database (sacct), submitit cannot see a job that ended without writing its result
  # (killed, failed to start) and would wait forever: give up once no job of the sweep has been queued for 30 s.
  local pid=$1 name=$2 idle=0
  while kill -0 "$pid" 2>/dev/null; do
    if [ -z "$(squeue -h -n "harness-$name" -o '%i' 2>/dev/null)" ]; then idle=$((idle + 1)); else idle=0; fi
    if [ "$idle" -ge 60 ]; then
      kill "$pid" 2>/dev/null || true
      echo "[slurm_local] error: no job of sweep $name is queued but the launcher still waits for results" >&2
      return 1
    fi
    sleep 0.5
  done
  wait "$pid"
}
run_sweep() {  # run_sweep NAME OVERRIDES...: plan, then launch plan_index=range(0,N) on SLURM; sets $n
  local name=$1; shift
  local args=(sweep.name="$name" results_dir="$WORK/$name" "$@")
  n=$(harness-sweep "${args[@]}" print=count | tail -n 1)
  log "sweep $name: $n planned runs -> $WORK/$name"
  harness-sweep --multirun hydra/launcher=slurm hydra.launcher.mem_gb=1 "${args[@]}" "plan_index=range(0,$n)" &
  launcher=$! current=$name
  watch_launcher "$launcher" "$name"
}
check_sweep() {  # check_sweep NAME OVERRIDES...: every planned run has an ok row; print job overheads
  python - "$LOGDIR/jobcomp.log" sweep.name="$1" results_dir="$WORK/$1" "${@:2}" <<'EOF'
import os, re, sys
from datetime import datetime
from pathlib import Path
from hydra import compose, initialize_config_dir
import harness.cli
from harness.data import load_corpus
from harness.plan import plan_sweep
from harness.results import read_records
from harness.sweep import planned_ids

with initialize_config_dir(config_dir=harness.cli.CONF_DIR, version_base=None):
    cfg = compose("sweep_run", overrides=sys.argv[2:])
corpus = load_corpus(cfg.data, int(cfg.model.seq_len))
runs, _ = plan_sweep(cfg, corpus.vocab_size)
ids = planned_ids(cfg, runs, corpus.fingerprint, corpus.vocab_size)[: int(os.environ.get("CHECK_N") or 10**9)]
records = read_records(Path(str(cfg.results_dir)))
ok = [records[i] for i in ids if records.get(i, {}).get("status") == "ok"]
print(f"[slurm_local] {cfg.sweep.name}: {len(ok)}/{len(ids)} planned runs have an ok row")
# Timings per job: SLURM's start/end (jobcomp text file, whole seconds), the Python process inside the job
# (submitit's log: "Starting with" .. "Exiting after successful completion") and the trainer's wall_seconds.
def stamp(line):
    m = re.search(r"\((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\)", line)
    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() if m else None
slurm = {}
jobcomp = Path(sys.argv[1])
for line in jobcomp.read_text().splitlines() if jobcomp.exists() else []:
    f = dict(re.findall(r"(\w+)=(\S*)", line))
    if f.get("Name") == f"harness-{cfg.sweep.name}" and f.get("JobState") == "COMPLETED":
        t = {k: datetime.fromisoformat(f[k]).timestamp() for k in ("SubmitTime", "StartTime", "EndTime")}
        slurm[int(f.get("ArrayTaskId") or 0)] = t
rows = []
for logf in Path(str(cfg.results_dir)).glob(".hydra/*/.submitit/*/*_0_log.out"):
    _, _, task = logf.parent.name.partition("_")  # ARRAYID_k (ARRAYID alone for a one-job array)
    k = int(task or 0)  # array task k = Hydra job k = plan_index k
    lines = logf.read_text().splitlines()
    start = [stamp(x) for x in lines if "Starting with JobEnvironment" in x and stamp(x)]
    end = [stamp(x) for x in lines if "Exiting after successful completion" in x and stamp(x)]
    rec = records.get(ids[k], {}) if k < len(ids) else {}
    if start and end and k in slurm and rec.get("status") == "ok":
        rows.append((slurm[k]["EndTime"] - slurm[k]["StartTime"], end[-1] - start[-1], float(rec["wall_seconds"]),
                     slurm[k]["StartTime"] - slurm[k]["SubmitTime"]))
if rows:
    mean = [sum(r[i] for r in rows) / len(rows) for i in range(4)]
    print(f"[slurm_local] per job (mean of {len(rows)}): SLURM elapsed {mean[0]:.1f} s | Python process in the job "
          f"{mean[1]:.2f} s | trainer wall_seconds {mean[2]:.2f} s")
    print(f"[slurm_local]   overhead per job: {mean[0] - mean[2]:.1f} s in all = {mean[1] - mean[2]:.2f} s in the "
          f"process (unpickle, imports, Hydra job setup, progress line) + {mean[0] - mean[1]:.1f} s outside it "
          f"(srun step, interpreter start; jobcomp times are whole seconds); queue wait {mean[3]:.1f} s")
sys.exit(0 if len(ok) == len(ids) else 1)
EOF
}

name=slurm-local
rm -rf "${WORK:?}/$name"
t=$(now)
run_sweep "$name" "${TINY[@]}" "${extra[@]}" || die "sweep $name failed"
log "sweep $name: $n jobs done in $(since "$t") s (submit -> all results back)"
check_sweep "$name" "${TINY[@]}" "${extra[@]}" || die "sweep $name is missing ok rows (logs: $WORK/$name/.hydra)"

# ---------------------------------------------------------------------------------------------------------
# 4. Timeout -> requeue -> resume. One longer run; once it has written a checkpoint, send the job the signal
# SLURM sends signal_delay_s before its time limit (SIGUSR2, like submitit's job._interrupt(timeout=True)).
# submitit's handler resubmits the same Hydra job and runs `scontrol requeue`; the requeued job must resume
# from results_dir/checkpoints/<run_id>.pt and finish with an ok row.
if [ "$requeue" = 1 ]; then
  name=slurm-requeue
  RQ=(sweep.budgets="[3e10]" sweep.sizes_per_budget=3 sweep.d_model_min=8 sweep.d_model_max=64
      model.seq_len=32 train.batch_size=32 train.eval_windows=16 train.progress=false train.threads=1
      train.checkpoint_every_s=2)
  rm -rf "${WORK:?}/$name"
  mkdir -p "$WORK/$name"
  t=$(now)
  harness-sweep --multirun hydra/launcher=slurm hydra.launcher.mem_gb=1 sweep.name="$name" \
    results_dir="$WORK/$name" hydra.launcher.max_num_timeout=3 "${RQ[@]}" "plan_index=range(0,1)" \
    > "$WORK/$name.out" 2>&1 &
  launcher=$! current=$name
  jid=""
  for _ in $(seq 240); do
    jid=$(squeue -h -n "harness-$name" -t RUNNING -o '%i' | head -n 1)
    [ -n "$jid" ] && compgen -G "$WORK/$name/checkpoints/*.pt" >/dev/null && break
    kill -0 "$launcher" 2>/dev/null || break
    sleep 0.5
  done
  [ -n "$jid" ] && compgen -G "$WORK/$name/checkpoints/*.pt" >/dev/null \
    || { kill "$launcher" 2>/dev/null || true; cat "$WORK/$name.out"; die "the requeue job never wrote a checkpoint"; }
  log "job $jid has a checkpoint; sending SIGUSR2 (what SLURM sends signal_delay_s before the time limit)"
  t_sig=$(now)
  scancel --signal=USR2 "$jid"
  watch_launcher "$launcher" "$name" || { cat "$WORK/$name.out"; die "the requeue sweep failed"; }
  joblog=$(ls "$WORK/$name"/.hydra/*/.submitit/*/*_log.out | head -n 1)
  grep -h "Starting with\|Requeued job\|resuming run\|preempted at\|Caught signal" "$joblog" \
    | grep -v '^[A-Z]' | sed 's/^/    /'
  grep -q "Requeued job" "$joblog" || die "no 'Requeued job' in $joblog"
  grep -q "resuming run" "$joblog" || die "the requeued job did not resume from its checkpoint ($joblog)"
  stopped=$(sed -n 's/.*preempted at step \([0-9]*\).*/\1/p' "$joblog" | head -n 1)
  resumed=$(sed -n 's/.*from checkpoint at step \([0-9]*\).*/\1/p' "$joblog" | head -n 1)
  if [ -n "$stopped" ]; then
    log "the trainer checkpointed at step $stopped on SIGUSR2; the requeued job resumed at step $resumed"
  else
    log "warning: the trainer did not checkpoint on SIGUSR2 (it does not catch it); the requeued job resumed" \
        "from its last periodic checkpoint (step $resumed), losing up to train.checkpoint_every_s of work"
  fi
  CHECK_N=1 check_sweep "$name" "${RQ[@]}" || die "the requeued run has no ok row"
  log "requeue: signal -> requeued -> resumed -> ok row in $(since "$t_sig") s (cred_expire=10: 11 s hold)"
fi
log "all checks passed"
