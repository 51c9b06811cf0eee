#!/usr/bin/env bash
# The GPU checks of issue 12 (item 7: sparse fine-tuning on whole sets) and issue 13 (item 6: a hub of
# full modules and the proxy correlation with it), prepared as one call of the device tool.
#
# A task lent a device has 15 minutes of device time in all (the machine's start, about a minute,
# included) and at most 10 minutes a call, so both checks are cut to fit one call: each part runs
# under its own `timeout` (SIGINT, so that a benchmark's own clean-up still writes its report) and
# prints its rows as it goes, so a part that runs out still reports what it finished. The sizes are
# guesses made without a GPU; the step times the first part prints say how far off the issues' full
# sizes are (3 seeds, every set, up to 100 epochs; the paper's 80-epoch hub).
#
# Here, once (the device reaches no registry, and ../shared does not travel):
#   ../shared/tools/gpu-wheels.sh .gpu-wheels        # 44 MB of wheels (sevenn carries SevenNet-0)
#   bench/device_checks.sh stage                     # .device-data/data.tar.xz, the data subset, 3.3 MB
# (both folders are git-ignored, so they travel only as carried paths)
#   bench/device_checks.sh rehearse                  # the same commands on this CPU, about 5 minutes
# Then one device call:
#   run(command="bash bench/device_checks.sh run", carry=[".gpu-wheels", ".device-data"], timeout_s=600)
# and read $OUT/sparse.log, $OUT/hub.log, $OUT/correlation.log and the two report.json files.
set -uo pipefail
cd "$(dirname "$0")/.."

SPARSE_S=${SPARSE_S:-200}       # part 1: sparse_mlip.py on two mlearn sets, four methods, seed 0
HUB_S=${HUB_S:-220}             # part 2: 14 full modules, 15 epochs, at most 1,500 structures each
CORRELATION_S=${CORRELATION_S:-100}  # part 3: each module fine-tuned alone on three few-shot tasks
HUB_SIZE=${HUB_SIZE:---epochs 15 --max-train 1500}

stage() {
  local shared=../shared/data
  test -d "$shared" || { echo "no $shared to stage from" >&2; exit 2; }
  mkdir -p .device-data
  tar -C "$shared/.." -cJf .device-data/data.tar.xz \
    data/mlip/mlearn_Si_training.extxyz data/mlip/mlearn_Si_test.extxyz \
    data/mlip/mlearn_Mo_training.extxyz data/mlip/mlearn_Mo_test.extxyz \
    data/mlip/alexandria_val.extxyz data/matminer data/upstream
  du -h .device-data/data.tar.xz
}

checks() {
  export PYTHONUNBUFFERED=1
  mkdir -p "$OUT"
  timeout -s INT -k 15 "$SPARSE_S" "$PYTHON" bench/sparse_mlip.py --device "$DEVICE" --sets mlearn_Si mlearn_Mo \
    --methods full lora sparse-L sparse-H --seeds 0 --epochs 30 -o "$OUT/sparse" 2>&1 | tee "$OUT/sparse.log"
  timeout -s INT -k 15 "$HUB_S" "$PYTHON" bench/build_hub.py --device "$DEVICE" --kind full --matminer $HUB_SIZE \
    -o "$HUB" 2>&1 | tee "$OUT/hub.log"
  timeout -s INT -k 15 "$CORRELATION_S" "$PYTHON" bench/moma_matminer.py --device "$DEVICE" --quick --hub "$HUB" \
    --tasks --correlation-tasks jarvis_2d_gap_opt jarvis_2d_dielectric_opt jarvis_2d_exfoliation \
    -o "$OUT/correlation" 2>&1 | tee "$OUT/correlation.log"
}

run() {
  : "${OUT:?run on the device machine, where the tool sets OUT}"
  python3 -m pip install -q --no-index --no-deps .gpu-wheels/*.whl \
    && python3 -m pip install -q --no-deps --no-build-isolation -e . || exit 1
  if [ ! -d ../shared/data ]; then
    mkdir -p ../shared && tar -C ../shared -xJf .device-data/data.tar.xz || exit 1
  fi
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  PYTHON=python3 DEVICE=cuda HUB=/tmp/hub_full checks
}

# The same three commands here on the CPU, a few minutes in all and with a three-module hub, so that an
# argument error costs no device time.
rehearse() {
  local out=bench/out/device_rehearsal
  rm -rf "$out"
  HUB_SIZE="--epochs 1 --max-train 8 --only matminer_jarvis_2d_gap_tbmbj matminer_jarvis_2d_dielectric_tbmbj
    matminer_jarvis_2d_exfoliation" OUT=$out HUB=$out/hub PYTHON=.venv/bin/python DEVICE=cpu \
    SPARSE_S=60 HUB_S=150 CORRELATION_S=90 checks
}

case "${1:-}" in
  stage) stage ;;
  run) run ;;
  rehearse) rehearse ;;
  *) echo "usage: bench/device_checks.sh stage|run|rehearse" >&2; exit 2 ;;
esac
