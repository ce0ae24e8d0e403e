#!/usr/bin/env bash
# The one-shot GPU check: build for the GPU, run every [gpu] test, run the GPU training benchmark
# (lathe vs PyTorch eager vs torch.compile, GPT-2 124M, seq 1024, bf16) and print one table.
#
#   scripts/gpu/check.sh --fetch-debs   # here, with Debian's registry: the packages the build needs
#                                       # as .deb files in .deb/ (git-ignored, about 9 MB)
#   scripts/gpu/check.sh [--out DIR]    # on the lent GPU machine (one H200, no registry): unpacks
#                                       # .deb/ into /tmp/lathe-prefix, builds build-gpu/ with
#                                       # -DTORCH_CUDA_ARCH_LIST=9.0 against python3's torch, MPI off
#   scripts/gpu/check.sh --dry-run      # without a GPU (CI runs this): builds the same targets in the
#                                       # usual build directory, skips the GPU parts with a message
#
# The device call that runs it (the whole check fits one call):
#   run(command="scripts/gpu/check.sh --out $OUT", carry=[".deb"], timeout_s=590)
# It writes check.log, bench.json and table.txt to --out.
#
# Environment: PYTHON (default python3; the dry run uses the project's .venv), LATHE_BUILD_DIR,
# LATHE_GPU_PEAK_TFLOPS (bf16 dense peak for MFU; default 989, the H200's).
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
mode=gpu
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --fetch-debs) mode=fetch ;;
    --dry-run) mode=dry ;;
    --configure-only) mode=configure ;;
    --out) out=$2; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

# The Debian packages the build needs beyond what the GPU machine's image has (CMake, ninja, a
# C++ compiler, CUDA and python3 with torch are there).
debs=(libyaml-cpp-dev libyaml-cpp0.7 libcxxopts-dev libfmt-dev libfmt9 catch2 libonnx-dev libonnx1 libonnxifi
      libprotobuf-dev libprotobuf32 libprotobuf-lite32 protobuf-compiler libprotoc32 zlib1g-dev
      nlohmann-json3-dev libutf8proc-dev libutf8proc2 libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0
      libpcre2-posix3 pkgconf pkgconf-bin libpkgconf3)

if [ "$mode" = fetch ]; then
  mkdir -p "$root/.deb"
  cd "$root/.deb" && apt-get download "${debs[@]}" || exit 1
  echo "check.sh: $(ls "$root/.deb" | wc -l) packages, $(du -sh "$root/.deb" | cut -f1) in .deb/"
  exit 0
fi

out=${out:-$root/build-gpu-check}
mkdir -p "$out"
log=$out/check.log
: >"$log"
rows=()
row() { rows+=("$(printf '%-34s %-8s %s' "$1" "$2" "$3")"); }
say() { echo "check: $*" | tee -a "$log"; }
# Runs a step, its output into the log (and the terminal), and times it.
step() {
  local name=$1; shift
  local t0=$SECONDS
  say "$name: $*"
  "$@" >>"$log" 2>&1
  local rc=$?
  STEP_SECONDS=$((SECONDS - t0))
  return $rc
}

if [ "$mode" = dry ]; then
  build=${LATHE_BUILD_DIR:-$root/build}
  python=${PYTHON:-$root/.venv/bin/python}
  if [ ! -f "$build/build.ninja" ]; then
    echo "check.sh --dry-run: $build is not configured; run scripts/setup.sh first" >&2
    exit 1
  fi
else
  build=${LATHE_BUILD_DIR:-$root/build-gpu}
  python=${PYTHON:-python3}
  prefix=/tmp/lathe-prefix
  if [ ! -d "$root/.deb" ] || [ -z "$(ls "$root/.deb"/*.deb 2>/dev/null)" ]; then
    echo "check.sh: no .deb/ packages: run 'scripts/gpu/check.sh --fetch-debs' where Debian's registry is" \
         "reachable, and carry .deb to this machine" >&2
    exit 1
  fi
  mkdir -p "$prefix"
  for f in "$root"/.deb/*.deb; do dpkg -x "$f" "$prefix" || exit 1; done
  multiarch=$prefix/usr/lib/x86_64-linux-gnu
  export PATH=$prefix/usr/bin:$PATH
  export LD_LIBRARY_PATH=$multiarch${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export PKG_CONFIG_PATH=$multiarch/pkgconfig:$prefix/usr/share/pkgconfig
  export PKG_CONFIG_SYSROOT_DIR=$prefix  # the .pc files say /usr
  export CMAKE_PREFIX_PATH=$prefix/usr
  if [ ! -f "$build/build.ninja" ]; then
    step configure cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DTORCH_CUDA_ARCH_LIST=9.0 -DLATHE_WITH_MPI=OFF -DLATHE_PYTHON="$(command -v "$python")" \
      -DCMAKE_PREFIX_PATH="$prefix/usr" -DCMAKE_INCLUDE_PATH="$prefix/usr/include" \
      -DCMAKE_LIBRARY_PATH="$multiarch" || { tail -40 "$log"; exit 1; }
    row configure ok "${STEP_SECONDS}s"
  fi
  if [ "$mode" = configure ]; then
    grep -E "^(yaml-cpp_DIR|fmt_DIR|nlohmann_json_DIR|ONNX_DIR|Protobuf_PROTOC_EXECUTABLE|pkgcfg_lib_PCRE2_pcre2-8|pkgcfg_lib_UTF8PROC_utf8proc)" \
      "$build/CMakeCache.txt"
    exit 0
  fi
fi

gpu=false
if [ "$mode" = gpu ] && "$python" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  gpu=true
  say "GPU: $("$python" -c 'import torch; p = torch.cuda.get_device_properties(0); print(p.name, round(p.total_memory / 2**30), "GiB")')"
elif [ "$mode" = gpu ]; then
  say "no CUDA device visible to $python: building and skipping the GPU parts"
fi

targets=(lathe lathe_tests lathe_bench_train)
jobs=$(nproc)
if step build cmake --build "$build" --target "${targets[@]}" -- -j"$jobs"; then
  row "build (${targets[*]})" ok "${STEP_SECONDS}s"
else
  row "build (${targets[*]})" FAILED "see check.log"
  tail -60 "$log"
  printf '%s\n' "${rows[@]}" | tee "$out/table.txt"
  exit 1
fi

status=0
if $gpu; then
  step env "$build/lathe" env && row "lathe env" ok "$(grep -m1 -i 'cuda' "$log" | cut -c1-60)"
  if step "gpu tests" "$build/tests/lathe_tests" "[gpu]" --reporter compact; then
    row "[gpu] tests" passed "$(grep -E 'All tests passed|test cases' "$log" | tail -1 | cut -c1-70)"
  else
    row "[gpu] tests" FAILED "$(grep -E 'test cases' "$log" | tail -1 | cut -c1-70)"
    status=1
  fi
  peak=${LATHE_GPU_PEAK_TFLOPS:-989}
  if LATHE_BUILD_DIR=$build step "bench (124M, seq 1024, bf16)" "$python" "$root/scripts/bench/train_bench.py" \
      --device cuda --bf16 --layers 12 --width 768 --heads 12 --seq 1024 --batch 8 --vocab 50304 \
      --steps 20 --warmup 5 --rounds 1 --peak-tflops "$peak" --json "$out/bench.json"; then
    while read -r line; do row "  $line" "" ""; done < <("$python" - "$out/bench.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
rates = r.get("gemm_rate_flops", {})
print("F.linear rate: " + ", ".join(f"{k} {v / 1e12:.0f} TFLOP/s" for k, v in rates.items()))
for mode in ("step", "train"):
    peers = r.get(mode, {})
    lathe = peers.get("lathe", {}).get("tokens_per_s")
    for name, v in peers.items():
        mfu = f"MFU {100 * v['mfu']:.1f}%" if "mfu" in v else ""
        mfu += f" GEMM {100 * v['gemm_share']:.0f}%" if "gemm_share" in v else ""
        mem = f"peak {v['peak_gpu_mb']:.0f} MB" if "peak_gpu_mb" in v else ""
        ratio = f"lathe/this {lathe / v['tokens_per_s']:.2f}x" if lathe and name != "lathe" else ""
        print(f"{mode} {name}: {v['tokens_per_s']:.0f} tok/s {mfu} {mem} {ratio}")
EOF
)
    row "bench" ok "${STEP_SECONDS}s"
  else
    row "bench" FAILED "see check.log"
    status=1
  fi
else
  why="no GPU (dry run)"
  [ "$mode" = gpu ] && why="no CUDA device"
  # The [gpu] selection still runs: without a device the test binary lists the cases as
  # skipped and exits 77 (CTest's "skipped").
  step "gpu tests" "$build/tests/lathe_tests" "[gpu]" --reporter compact
  rc=$?
  if [ $rc -eq 77 ] || [ $rc -eq 0 ]; then
    row "[gpu] tests" skipped "$("$build/tests/lathe_tests" "[gpu]" --list-test-names-only | grep -c .) case(s): no CUDA device"
  else
    row "[gpu] tests" FAILED "exit $rc: $(tail -1 "$log" | cut -c1-60)"
    status=1
  fi
  row "bench (124M, seq 1024, bf16)" skipped "$why"
fi
echo
printf '%-34s %-8s %s\n' step result detail | tee "$out/table.txt"
printf '%s\n' "${rows[@]}" | tee -a "$out/table.txt"
exit $status
