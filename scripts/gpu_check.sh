#!/usr/bin/env bash
# One prepared check for a GPU machine (an H100; under 11 minutes in all):
#   1. installs what that machine lacks from the wheels in .whl/ (passed along by the caller), no network;
#   2. prints the card;
#   3. smoke-trains both tasks on CUDA in bf16-mixed, and frcnn once in 16-mixed (GradScaler path);
#   4. runs the CUDA benchmark (VGG16 at 600 px, SAM ViT-B geometry at 1024, bf16) -> bench_frcnn.json and
#      bench_sam.json;
#   5. profiles the VGG16 detector's inference step (data pipeline alone, model alone, top kernels and host ops),
#      the GPU target it misses (120 images/s);
#   6. the detect -> segment row (VGG16 detector + SAM ViT-B geometry against the detector per image and
#      transformers' SAM per box) -> bench_detseg.json;
#   7. trains SAM, SAM-HQ (ViT-B) and SAM 2 (Hiera-T) at 1024 with random weights, decoder alone and with LoRA
#      on the encoder: images/s and peak memory of each (python -m benchmarks.family -> bench_family.json);
#   8. the segment-everything and scene rows (amg_predict, scene_predict) -> bench_amg_scene.json, and the
#      prompt-free rows (semantic_scene, ais_predict: the dense decoder on the ViT-B encoder) -> bench_semantic.json;
#   9. with what is left (up to 2 more minutes), times SAM's encoder with the folded attention experiment
#      (experiments/ab_vision_attention.py).
# Everything goes under $OUT (default outputs/gpu_check) and is tee'd to $OUT/gpu_check.log. Each stage has its
# own time limit and the benchmark gets what is left of 7 minutes (it writes its JSON after every row, so a cut
# keeps the rows done); a failed stage is reported and the next one still runs; exit status 1 if any failed.
#
#   OUT=/some/dir bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-outputs/gpu_check}"
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: > "$LOG"
FAILED=()
START=$SECONDS

stage() {  # stage NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  if [ "$limit" -lt 1 ]; then  # timeout 0 would mean no limit at all
    echo "=== $name: skipped, no time left" | tee -a "$LOG"
    FAILED+=("$name(no time left)")
    return 0
  fi
  echo "=== $name (limit ${limit}s, at $((SECONDS - START))s)" | tee -a "$LOG"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  echo "=== $name: exit $rc after $((SECONDS - t0))s" | tee -a "$LOG"
  if [ "$rc" -ne 0 ]; then FAILED+=("$name(rc=$rc)"); fi
  return 0
}

BUDGET=${BUDGET:-415}  # seconds for the whole script (7 minutes, less a margin)

stage install 45 python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

stage card 15 nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv
stage imports 40 python3 -c "
import sys, torch, torchvision, transformers
print('python', sys.version.split()[0], 'torch', torch.__version__, 'torchvision', torchvision.__version__,
      'transformers', transformers.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))
import albumentations, monai, hydra, omegaconf, pycocotools, cv2, matplotlib, tensorboard  # what segdet imports
import segdet.tasks.sam, segdet.tasks.frcnn, segdet.commands.train
print('imports ok')
"

smoke() {  # smoke TASK PRECISION
  stage "smoke_$1_$2" 50 python3 -m segdet train "task=$1" experiment=smoke trainer.device=cuda \
    "trainer.precision=$2" "hydra.run.dir=$OUT/smoke_$1_$2"
}
smoke sam bf16-mixed
smoke frcnn bf16-mixed
smoke frcnn 16-mixed

# The detector rows first: the SAM rows compile the encoder and decoder (minutes at ViT-B size), and a cut must
# not cost the rows that need no compiling.
LEFT=$((BUDGET - (SECONDS - START)))
stage bench_frcnn "$LEFT" python3 -m benchmarks --device cuda --repeats 2 \
  --only frcnn_train,frcnn_infer,frcnn_memory --out "$OUT/bench_frcnn.json"
LEFT=$((BUDGET - (SECONDS - START)))
stage profile_frcnn_eval $((LEFT < 60 ? LEFT : 60)) python3 scripts/profile_step.py --device cuda --task frcnn --eval \
  --steps 5
LEFT=$((BUDGET - (SECONDS - START)))
stage bench_detseg $((LEFT < 120 ? LEFT : 120)) python3 -m benchmarks --device cuda --repeats 2 \
  --only detseg_predict --out "$OUT/bench_detseg.json"
LEFT=$((BUDGET - (SECONDS - START)))
stage bench_sam "$LEFT" python3 -m benchmarks --device cuda --repeats 2 --only sam_train,sam_cache \
  --out "$OUT/bench_sam.json"
# Segment everything and whole scenes on the ViT-B geometry (the scene row needs rasterio among the wheels in .whl/;
# without it the stage fails on one line and the next one runs).
LEFT=$((BUDGET - (SECONDS - START)))
stage bench_amg_scene $((LEFT < 150 ? LEFT : 150)) python3 -m benchmarks --device cuda --repeats 1 \
  --only amg_predict,scene_predict --out "$OUT/bench_amg_scene.json"
# The dense decoder on the ViT-B encoder: a scene's class map and its instances against segment everything.
LEFT=$((BUDGET + 120 - (SECONDS - START)))
stage bench_semantic $((LEFT < 120 ? LEFT : 120)) python3 -m benchmarks --device cuda --repeats 1 \
  --only semantic_scene,ais_predict --out "$OUT/bench_semantic.json"
# The SAM family's training rows: SAM-HQ and SAM 2 beside SAM, the decoder alone and LoRA on the encoder.
stage bench_family 150 python3 -m benchmarks.family --device cuda --repeats 2 --out "$OUT/bench_family.json"
# The lever the H100 profile points at (54 % of a step builds the dense relative-position bias): the bias folded
# into query and key, against transformers' attention, on the frozen ViT-B encoder (eager and compiled).
LEFT=$((BUDGET + 270 - (SECONDS - START)))
stage ab_attention "$LEFT" python3 experiments/ab_vision_attention.py --device cuda

echo "=== done in $((SECONDS - START))s; failed: ${FAILED[*]:-none}" | tee -a "$LOG"
[ ${#FAILED[@]} -eq 0 ]
