#!/usr/bin/env bash
# `duet bench` on a real GPU lent through this workplace's device tool (a bare x86-64 machine with an
# NVIDIA H100/H200 and no Node: Dawn's Vulkan backend). Two halves:
#
#   scripts/device-bench.sh pack        here: npm run build, then put into .device/ (git-ignored) what
#                                       the GPU machine lacks: node (xz), the webgpu and @huggingface
#                                       packages, and the Vulkan/EGL loaders as amd64 .deb files.
#   scripts/device-bench.sh run         there, as the device tool's command, with carry
#                                       [".device", "dist"]: unpacks, runs a tiny GPU bench as a check,
#                                       then the offload suite with the GPU as the main device
#                                       (llama-3-8b's attention shape at 4K, 16K and 64K: full
#                                       attention on the GPU vs MagicPIG's host store), then the GPU
#                                       benchmark of llama-3.2-1b (all 16 layers: with only GPU
#                                       placements the CPU side holds no weights), one suite at a
#                                       time under its own time limit. Results: $OUT/results.tar.gz
#                                       (results.json or offload.json, text and SVG per suite) and
#                                       $OUT/run.log.
#
# Time: the whole run fits one 600-s device call. The check gets at most 120 s; every suite ends by
# a deadline DUET_TOTAL_S (default 560) seconds after `run` starts (what is left of the call packs
# the results): the offload suite first, at most DUET_OFFLOAD_LIMIT_S (default 100; on an H100 it
# should need well under a minute: drawing the projections' random weights is most of it), then
# kernels, e2e and memory at most DUET_SUITE_LIMIT_S each (default 150), each cut to the time left
# (a suite with under 20 s left is skipped, and the log says so).
#
# Environment for `run`: DUET_BENCH_ARGS replaces the model/context arguments of the kernels, e2e
# and memory suites, DUET_OFFLOAD_ARGS those of the offload suite (defaults below); the limits
# above; DUET_ALLOW_SOFTWARE_GPU=1 goes on when the adapter is a software GPU (to try the script
# out on a machine without a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."

pack() {
  npm run build
  rm -rf .device && mkdir -p .device/debs /tmp/duet-apt/partial
  xz -T0 -6 -c "$(command -v node)" > .device/node.xz
  tar -cJf .device/modules.tar.xz node_modules/webgpu/package.json node_modules/webgpu/index.js \
    node_modules/webgpu/dist/linux-x64 node_modules/@huggingface
  local o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/duet-apt)
  apt-get "${o[@]}" update -qq
  (cd .device/debs && apt-get "${o[@]}" download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
  du -sh .device dist
}

run() {
  local start=$SECONDS
  out="${OUT:-/tmp/duet-device-out}" work=/tmp/duet-device
  mkdir -p "$out" "$work/bin"
  exec > >(tee "$out/run.log") 2>&1
  [ -f .device/node.xz ] && [ -d dist ] || { echo "device-bench: .device/ or dist/ missing: run 'scripts/device-bench.sh pack' here and carry both" >&2; exit 2; }
  # The machine starts bare: Vulkan's loader only if it lacks one (unpacking over a system's own can break it).
  if ! ldconfig -p | grep -q 'libvulkan\.so\.1'; then
    for f in .device/debs/*.deb; do dpkg -x "$f" /; done
    ldconfig
  fi
  local icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  if [ -z "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ] && [ -f "$icd" ]; then export VK_DRIVER_FILES="$icd"; fi
  xz -dc .device/node.xz > "$work/bin/node" && chmod +x "$work/bin/node"
  export PATH="$work/bin:$PATH"
  [ -d node_modules/webgpu ] || tar -xJf .device/modules.tar.xz
  node --version
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

  results="$work/results"
  local limit="${DUET_SUITE_LIMIT_S:-150}" offload_limit="${DUET_OFFLOAD_LIMIT_S:-100}" deadline=$((start + ${DUET_TOTAL_S:-560}))
  rm -rf "$results" && mkdir -p "$results"
  trap 'tar -czf "$out/results.tar.gz" -C "$work" results' EXIT
  # A minute's check that the adapter is the real GPU and every GPU path runs.
  timeout 120 node bin/duet.mjs bench --shape tiny --contexts 64,256 --sparsities 0.5 --prefill-chunk 64 --prefill-max 64 \
    --sink 4 --recent 16 --decode-tokens 2 --warmup-tokens 1 --device gpu --out "$results/check" > "$results/check.txt"
  grep -m1 '^machine:' "$results/check.txt"
  if grep -q '"gpu_software": true' "$results/check/results.json" && [ -z "${DUET_ALLOW_SOFTWARE_GPU:-}" ]; then
    echo "device-bench: the adapter is a software GPU, not the machine's GPU; stopping" >&2
    exit 3
  fi
  # shellcheck disable=SC2206
  local args=(${DUET_BENCH_ARGS:---shape llama-3.2-1b --placements split,gpu --sparsities 0.5,0.75 --contexts 4096,16384,65536 --prefill-max 4096})
  # shellcheck disable=SC2206
  local offload_args=(${DUET_OFFLOAD_ARGS:---shape llama-3-8b --contexts 4096,16384,65536})
  for suite in offload kernels e2e memory; do
    local cap=$limit suite_args=("${args[@]}")
    if [ "$suite" = offload ]; then cap=$offload_limit suite_args=("${offload_args[@]}"); fi
    local left=$((deadline - SECONDS))
    if [ "$left" -lt "$cap" ]; then cap=$left; fi
    if [ "$cap" -lt 20 ]; then echo "== suite $suite skipped: ${left} s left of the run's ${DUET_TOTAL_S:-560}"; continue; fi
    echo "== suite $suite (limit ${cap} s), $(date -u +%T)"
    timeout "$cap" node bin/duet.mjs bench --suite "$suite" --device gpu "${suite_args[@]}" --out "$results/$suite" > "$results/$suite.txt" \
      || echo "device-bench: suite $suite ended with status $?"
    cat "$results/$suite.txt"
  done
}

case "${1:-}" in
  pack) pack ;;
  run) run ;;
  *) echo "usage: scripts/device-bench.sh pack|run" >&2; exit 2 ;;
esac
