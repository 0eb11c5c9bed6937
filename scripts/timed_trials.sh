#!/usr/bin/env bash
# Run pending trials on a machine lent for a limited time (a GPU machine, say), then pack the trials
# it finished so that they can be merged into results/ back home.
#
#   bash scripts/timed_trials.sh DURATION OUT_DIR [run_all options...]
#
#   # the pending ResNet trials of the exp1xx milestone, six side by side on one GPU, for 8 minutes:
#   bash scripts/timed_trials.sh 8m "$OUT" --only exp110 exp111 exp112 exp113 exp114 --trials 2 \
#       --round-robin --jobs 6 --data-dir .data/fashion-mnist
#
#   # back home: file the finished trials under results/ (identical ones are skipped)
#   mkdir -p /tmp/lent && tar xzf trials.tar.gz -C /tmp/lent && python -m common.merge /tmp/lent/results
#
# DURATION is what `timeout` takes (90s, 8m, 2h). When it is up, run_all is interrupted: the running
# trials save their last finished epoch and exit, so that packing and copying back fit in the lease.
# Only the trials this run finished are packed (metrics.json, history.csv, predictions.npz: tens of
# KB each) into OUT_DIR/trials.tar.gz, beside the run's output; unfinished ones stay behind.
# PACK_WEIGHTS=1 packs each trial's trained weights too (model.weights.h5, megabytes each): what an
# evaluation-only experiment (exp207 scores exp206's weights) needs back home, where merge files them. Each
# trial records its hardware, and the results table says which rows mix CPU and GPU trials.
# Trials go to results/ (or $FASHION_MNIST_RESULTS_DIR), where run_all sees which are finished.
# $PYTHON names the interpreter (default: python3). Try it on a CPU first: add --smoke.
set -euo pipefail
usage="usage: bash scripts/timed_trials.sh DURATION OUT_DIR [run_all options...]   (DURATION: 90s, 8m, 2h)"
if [ $# -lt 2 ] || ! [[ $1 =~ ^[0-9]+[smh]?$ ]]; then
    echo "$usage" >&2
    exit 2
fi
duration=$1
mkdir -p "$2"
out=$(cd "$2" && pwd)
shift 2
for arg in "$@"; do
    if [[ $arg == --results-dir* ]]; then
        echo "error: set FASHION_MNIST_RESULTS_DIR instead of --results-dir (this script reads it too)" >&2
        exit 2
    fi
done
python=${PYTHON:-python3}
repo=$(cd "$(dirname "$0")/.." && pwd)
results=$(realpath -m "${FASHION_MNIST_RESULTS_DIR:-$repo/results}")
mkdir -p "$results"
cd "$repo"

"$python" - <<'EOF'
import sys
try:
    from common.tensorflow_setup import tf
except ImportError:
    sys.exit("error: TensorFlow is not installed here: pip install -r requirements.txt "
             "(and 'tensorflow[and-cuda]' for an NVIDIA GPU)")
gpus = tf.config.list_physical_devices("GPU")
print(f"TensorFlow {tf.__version__}; GPUs: {[g.name for g in gpus] or 'none, the trials run on the CPU'}")
EOF

stamp=$(mktemp)  # trials finished after this moment are this run's
status=0
timeout --signal=INT --kill-after=60 "$duration" \
    "$python" -m common.run_all --no-readme --results-dir "$results" "$@" 2>&1 | tee "$out/run_all.out" \
    || status=$?

mapfile -t finished < <(cd "$results" && find . -name metrics.json -newer "$stamp" -printf '%h\n' | sort)
rm -f "$stamp"
if [ ${#finished[@]} -eq 0 ]; then
    echo "no trial finished within $duration; nothing packed (run_all exit $status)"
    exit "$status"
fi
files=()
for trial in "${finished[@]}"; do
    names=(metrics.json history.csv predictions.npz)
    if [ "${PACK_WEIGHTS:-0}" = 1 ]; then names+=(model.weights.h5); fi
    for name in "${names[@]}"; do
        if [ -e "$results/$trial/$name" ]; then files+=("$trial/$name"); fi
    done
done
tar czf "$out/trials.tar.gz" -C "$results" --transform 's,^\./,results/,' "${files[@]}"
echo "packed ${#finished[@]} finished trial(s) into $out/trials.tar.gz ($(du -h "$out/trials.tar.gz" | cut -f1));" \
     "run_all exit $status (124 or 130: stopped at the time limit, unfinished trials left behind)"
