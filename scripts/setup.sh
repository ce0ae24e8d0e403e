#!/usr/bin/env bash
# Sets up everything lathe needs and builds it. Idempotent: a second run installs nothing,
# downloads nothing and rebuilds only what changed.
#
#   scripts/setup.sh            # Debian packages, .venv with torch==2.11.0, default corpus, build/
#
# Environment:
#   Torch_DIR=<libtorch>/share/cmake/Torch   build against a LibTorch zip instead of the wheel
#   LATHE_BUILD_DIR=build                    where to build
#   LATHE_BUILD_TYPE=Release                 CMake build type
#   LATHE_CMAKE_ARGS="-DLATHE_WITH_MPI=OFF"  extra CMake arguments (first configure only)
#   PYTHON=python3                           interpreter the venv is made from (3.10 - 3.13)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${LATHE_BUILD_DIR:-$root/build}
venv=$root/.venv
say() { echo "setup: $*"; }
# The long steps (the torch wheel download, the build) show their progress: pip's bars and
# ninja's status line on a terminal, a line per step otherwise (CI logs).
tty=false
[ -t 1 ] && tty=true

# ----------------------------------------------------------------------------- Debian packages
packages=(build-essential cmake ninja-build ccache pkg-config
          libyaml-cpp-dev libcxxopts-dev libfmt-dev catch2
          libonnx-dev libprotobuf-dev protobuf-compiler
          libopenmpi-dev openmpi-bin slurmctld slurmd slurm-client
          nlohmann-json3-dev libutf8proc-dev libpcre2-dev
          bible-kjv binutils)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
python=${PYTHON:-python3}
if ! command -v "$python" >/dev/null 2>&1; then
  missing+=(python3 python3-venv); python=python3
elif ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq -o Acquire::Retries=5
  $sudo apt-get install -y -qq -o Acquire::Retries=5 --no-install-recommends "${missing[@]}" >/dev/null
fi

# ----------------------------------------------------------------------------- Python venv
# torch is the LibTorch lathe links; the rest serve the reference tests and benchmarks.
if [ ! -x "$venv/bin/python" ]; then
  say "creating $venv"
  "$python" -m venv "$venv"
fi
# A dropped connection halfway through a large wheel (torch's CUDA libraries are up to 0.5 GB
# each) should not end the setup: pip 25.3 resumes an interrupted download where it stopped
# (--resume-retries), and each install is tried up to three times.
pip_pin=25.3
pip_net=(--disable-pip-version-check --retries 10 --timeout 60)
# A full disk otherwise shows up as a pip traceback halfway through a download, or a compiler
# error: check first, and name the folder and the sizes.
need_space() {  # need_space <GB> <folder> <what>
  local dir avail_kb
  dir=$2
  while [ ! -d "$dir" ]; do dir=$(dirname "$dir"); done
  avail_kb=$(df -Pk "$dir" | awk 'NR == 2 { print $4 }')
  if [ "$avail_kb" -lt $(($1 * 1024 * 1024)) ]; then
    say "error: $3 needs about $1 GB free in $dir; $((avail_kb / 1024 / 1024)) GB are free there"
    exit 1
  fi
}
retry() {
  local attempt
  for attempt in 1 2 3; do
    "$@" && return 0
    [ "$attempt" -lt 3 ] || break
    say "attempt $attempt failed; trying again in $((attempt * 20)) s"
    sleep $((attempt * 20))
  done
  say "failed three times: $*"
  return 1
}
if ! "$venv/bin/python" -c "import pip, sys; sys.exit(pip.__version__ != '$pip_pin')" 2>/dev/null; then
  say "installing pip $pip_pin into $venv"
  retry "$venv/bin/python" -m pip install -q "${pip_net[@]}" "pip==$pip_pin"
fi
# requirements.lock pins every package requirements.txt needs. On the interpreter and platform it
# was made for, it is installed with --no-deps, so a machine without a GPU can leave out the CUDA
# library wheels whose libraries its own CUDA toolkit already has (about 2.5 GB installed; torch
# only has to load them there) and triton (0.6 GB, GPU code generation only). Anywhere else pip
# resolves requirements.txt itself and installs everything.
lock=$root/requirements.lock
reqs=$venv/.lathe-install.txt
venv_tag=$("$venv/bin/python" -c 'import sys, sysconfig; print(f"cp{sys.version_info[0]}{sys.version_info[1]} {sysconfig.get_platform()}")')
# With a GPU, or where torch did not load without them once, every wheel is installed.
all_wheels=false
if nvidia-smi -L >/dev/null 2>&1 || [ -e /dev/nvidia0 ] || ls /proc/driver/nvidia/gpus/* >/dev/null 2>&1; then
  all_wheels=true
fi
[ -f "$venv/.lathe-all-wheels" ] && all_wheels=true
# The sonames the system's loader finds (ldconfig is in /sbin, off a user's PATH).
system_libs=" $({ ldconfig -p || /sbin/ldconfig -p; } 2>/dev/null | awk 'NR > 1 { printf "%s ", $1 }' || true)"
# lock_list: the lock's pins for this machine into $reqs.new; what it leaves out into `skipped`.
lock_list() {
  local line spec so have
  skipped=()
  : >"$reqs.new"
  while IFS= read -r line; do
    spec=${line%%#*}
    spec=${spec%% *}
    [ -n "$spec" ] || continue
    if ! $all_wheels; then
      case $line in
        *"# gpu-only"*) skipped+=("$spec"); continue ;;
        *"# cuda-libs:"*)
          have=true
          for so in ${line#*# cuda-libs:}; do
            case $system_libs in *" $so "*) ;; *) have=false ;; esac
          done
          if $have; then skipped+=("$spec"); continue; fi ;;
      esac
    fi
    echo "$spec" >>"$reqs.new"
  done <"$lock"
}
if grep -qxF "# for: $venv_tag" "$lock"; then
  lock_list
  deps=(--no-deps)
  space=(5 "installing the Python packages (3 GB installed, 4 GB while the downloads are kept)" 2)
else
  say "requirements.lock is for $(sed -n 's/^# for: //p' "$lock"), this venv is $venv_tag: pip resolves requirements.txt"
  cp "$root/requirements.txt" "$reqs.new"
  skipped=()
  deps=()
  space=(10 "installing the Python packages (6 GB installed, 9.5 GB while the downloads are kept)" 4)
fi
# The pins not installed yet (a venv an earlier setup made may hold them all already).
missing() {
  "$venv/bin/python" - "$reqs.new" <<'PY'
import importlib.metadata as md, re, sys
have = {re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower(): d.version for d in md.distributions()}
for line in open(sys.argv[1]):
    spec = line.split("#", 1)[0].strip()
    if not spec:
        continue
    if "==" not in spec:
        print(spec)
        continue
    name, version = spec.split("==", 1)
    if have.get(re.sub(r"[-_.]+", "-", name).lower()) != version:
        print(spec)
PY
}
if ! cmp -s "$reqs.new" "$reqs"; then
  if [ -n "$(missing)" ]; then
    need_space "${space[0]}" "$venv" "${space[1]}"
    # --no-cache-dir: pip keeps the downloaded wheels in TMPDIR until they are installed (and a
    # cached copy of each would double what the install takes on disk).
    need_space "${space[2]}" "${TMPDIR:-/tmp}" "keeping the downloaded wheels until they are installed"
    [ ${#skipped[@]} -eq 0 ] || say "no GPU: leaving out ${skipped[*]} (the system has their CUDA libraries, or GPU only)"
    say "installing Python packages ($(wc -l <"$reqs.new") lines) into $venv; the torch wheel is about 0.9 GB"
    progress=()
    $tty || progress=(--progress-bar off)
    retry "$venv/bin/python" -m pip install "${pip_net[@]}" --resume-retries 20 --no-cache-dir \
      "${progress[@]}" "${deps[@]}" -r "$reqs.new"
  fi
  # torch has to load: a system CUDA library too old for it, or one with a different ABI, shows
  # here and not in the first test. Install what was left out, then, and from now on.
  if ! "$venv/bin/python" -c "import torch" 2>"$venv/.lathe-import.log"; then
    [ ${#skipped[@]} -gt 0 ] || { cat "$venv/.lathe-import.log"; say "error: torch does not load in $venv"; exit 1; }
    say "torch does not load with the system's CUDA libraries ($(tail -1 "$venv/.lathe-import.log")); installing ${skipped[*]}"
    retry "$venv/bin/python" -m pip install -q "${pip_net[@]}" --no-cache-dir --no-deps "${skipped[@]}"
    "$venv/bin/python" -c "import torch" || { say "error: torch does not load in $venv"; exit 1; }
    touch "$venv/.lathe-all-wheels"
    all_wheels=true
    lock_list
  fi
  mv "$reqs.new" "$reqs"
fi
rm -f "$reqs.new" "$venv/.lathe-requirements"
# llama.cpp (llama-cpp-python, the runtime the GGUF tests and benchmark run) is built from its
# source for this CPU (GGML_NATIVE): its wheel is kept per CPU feature set, so a cached build
# never runs on a machine without the instructions it was compiled for.
llama_pin=0.3.36
cpu_key=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | sha256sum | cut -c1-16)
llama_stamp=$venv/.lathe-llama-cpp
if [ "$(cat "$llama_stamp" 2>/dev/null)" != "$llama_pin-$cpu_key" ]; then
  wheels=${XDG_CACHE_HOME:-$HOME/.cache}/lathe/wheels/llama-cpp-python-$llama_pin-$cpu_key
  if ! ls "$wheels"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    need_space 2 "$wheels" "building llama-cpp-python"
    say "building llama-cpp-python $llama_pin (llama.cpp) for this CPU; a few minutes, once per machine"
    CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAMA_CURL=OFF" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
      retry "$venv/bin/python" -m pip wheel -q "${pip_net[@]}" --no-deps -w "$wheels" "llama-cpp-python==$llama_pin"
  fi
  retry "$venv/bin/python" -m pip install -q "${pip_net[@]}" --force-reinstall --no-deps "$wheels"/llama_cpp_python-*.whl
  echo "$llama_pin-$cpu_key" > "$llama_stamp"
fi

# ----------------------------------------------------------------------------- default corpus
"$root/data/prepare_kjv.sh" >/dev/null
"$root/data/prepare_kjv_tasks.sh" >/dev/null  # the documents of recipes/tasks (awk, a second)

# ----------------------------------------------------------------------------- build
if [ ! -f "$build_dir/build.ninja" ]; then
  need_space 2 "$build_dir" "building lathe"
  say "configuring $build_dir"
  mkdir -p "$build_dir"
  # shellcheck disable=SC2086
  cmake -S "$root" -B "$build_dir" -G Ninja \
    -DCMAKE_BUILD_TYPE="${LATHE_BUILD_TYPE:-Release}" \
    -DLATHE_PYTHON="$venv/bin/python" \
    ${Torch_DIR:+-DTorch_DIR="$Torch_DIR"} \
    ${LATHE_CMAKE_ARGS:-} >"$build_dir/configure.log" 2>&1 || {
      cat "$build_dir/configure.log"; exit 1; }
fi
# ninja's own progress: its status line on a terminal, a line per step otherwise; one line
# ("no work to do") when nothing changed.
say "building $build_dir"
cmake --build "$build_dir"
