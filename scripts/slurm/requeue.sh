#!/bin/bash
# Runs a command (the job's srun line) so that a long vmc run survives its time limit and
# preemption. Used by the *.sbatch scripts beside it:
#
#   exec "$SLURM_SUBMIT_DIR/scripts/slurm/requeue.sh" srun vmc --config ... "$@"
#
# - SIGUSR1, sent by `#SBATCH --signal=B:USR1@SECONDS` that long before the time limit:
#   vmc is sent SIGTERM (it finishes its step, writes a checkpoint and exits), then the
#   job is put back in the queue with `scontrol requeue`. When it starts again, the same
#   command resumes from the newest checkpoint in log.save_path.
# - SIGTERM (preemption, or scancel): passed on to vmc, which checkpoints; with
#   `#SBATCH --requeue` SLURM itself queues the job again.
# The exit status is the command's.
set -u

"$@" &
child=$!
requeue=0

stop_run() {
  if [ -n "${SLURM_JOB_ID:-}" ] && command -v scancel > /dev/null; then
    scancel --signal=TERM "$SLURM_JOB_ID"  # every task of every step of this job
  else
    kill -TERM "$child"
  fi
}
trap 'echo "requeue.sh: time limit near: checkpointing, then requeueing"; requeue=1; stop_run' USR1
trap 'echo "requeue.sh: SIGTERM: checkpointing"; stop_run' TERM

status=0
while :; do
  wait "$child"
  status=$?
  kill -0 "$child" 2> /dev/null || break  # else a signal interrupted wait: wait again
done

if [ "$requeue" = 1 ]; then
  echo "requeue.sh: run stopped with status $status; requeueing job $SLURM_JOB_ID"
  scontrol requeue "$SLURM_JOB_ID"
fi
exit "$status"
