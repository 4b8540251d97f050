#!/usr/bin/env bash
# Benchmark the restorers on a clean clip: degrade it, restore it with each engine, measure every
# result against the clean clip, and put it all side by side in a small Markdown report.
#
#   examples/benchmark.sh CLEAN.mp4 OUT_DIR
#
# Environment (all optional):
#   PRESET      degradation preset (light, medium, strong, realworld; default medium)
#   SEED        degradation seed (default 0)
#   CKPT_DIR    Vivid-VR checkpoint folder: adds the vivid engine (needs the weights; see README)
#   VIVID_ARGS  extra options for the vivid engine (e.g. "--steps 25 --tile-size 64")
#   VIVIDVR     the vividvr command (default: vividvr on PATH)
#
# OUT_DIR gets degraded.mp4, restored_<engine>.mp4, <name>.json/.csv/.png per measured video,
# compare.mp4 (all of them side by side), stills.png (a contact sheet) and report.md.
set -euo pipefail
clean=${1:?usage: benchmark.sh CLEAN_VIDEO OUT_DIR}
out=${2:?usage: benchmark.sh CLEAN_VIDEO OUT_DIR}
preset=${PRESET:-medium}
seed=${SEED:-0}
vividvr=${VIVIDVR:-vividvr}
mkdir -p "$out"

engines=(classic)
if [ -n "${CKPT_DIR:-}" ]; then
  engines+=(vivid)
fi

"$vividvr" degrade "$clean" -o "$out/degraded.mp4" --preset "$preset" --seed "$seed" --overwrite --quiet
names=(degraded)
for engine in "${engines[@]}"; do
  extra=()
  if [ "$engine" = vivid ]; then
    # shellcheck disable=SC2206  # VIVID_ARGS is a list of options, split on purpose
    extra=(--ckpt-dir "$CKPT_DIR" ${VIVID_ARGS:-})
  fi
  # --upscale 1 keeps the clean clip's size, so every result is measured against it directly
  "$vividvr" restore "$out/degraded.mp4" -o "$out/restored_$engine.mp4" --engine "$engine" --upscale 1 \
    --overwrite --quiet "${extra[@]}"
  names+=("restored_$engine")
done

for name in "${names[@]}"; do
  "$vividvr" eval "$out/$name.mp4" --ref "$clean" --json --quiet --overwrite \
    --per-frame "$out/$name.csv" --plot "$out/$name.png" > "$out/$name.json"
done

videos=("$clean")
labels=clean
for name in "${names[@]}"; do
  videos+=("$out/$name.mp4")
  labels+=",${name#restored_}"
done
"$vividvr" compare "${videos[@]}" -o "$out/compare.mp4" --labels "$labels" --overwrite --quiet
"$vividvr" compare "${videos[@]}" -o "$out/stills.png" --png --labels "$labels" --overwrite --quiet

python3 - "$out" "$clean" "$preset" "$seed" "${names[@]}" <<'PY'
import json
import sys
from pathlib import Path

out, clean, preset, seed, names = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]


def fmt(value, spec):
    return "-" if value is None else format(value, spec)


lines = [f"# Restoration benchmark: {Path(clean).name}", "",
         f"Degradation: `vividvr degrade --preset {preset} --seed {seed}`; every video is measured against "
         "the clean clip with `vividvr eval` (PSNR/SSIM on RGB; warping error and flicker from the clean "
         "clip's optical flow; docs/metrics.md).", "",
         "| video | PSNR (dB) | PSNR Y (dB) | SSIM | warping error | flicker |", "|---|---:|---:|---:|---:|---:|"]
for name in names:
    s = json.loads((out / f"{name}.json").read_text())
    lines.append(f"| {name} | {fmt(s['psnr'], '.2f')} | {fmt(s['psnr_y'], '.2f')} | {fmt(s['ssim'], '.4f')} | "
                 f"{fmt(s['warp_error'], '.3e')} | {fmt(s['flicker'], '.3f')} |")
lines += ["", "Side by side: [compare.mp4](compare.mp4)", "", "![stills](stills.png)", ""]
for name in names:
    lines += [f"## {name}", "", f"![{name}]({name}.png)", "", f"Per frame: [{name}.csv]({name}.csv)", ""]
(out / "report.md").write_text("\n".join(lines))
print(out / "report.md")
PY
