#!/usr/bin/env bash
# Sets up lathe (scripts/setup.sh) and runs the whole test suite with CTest.
#
#   scripts/test.sh                 # everything; [gpu] cases report "skipped" without a GPU, then
#                                   # scripts/gpu/check.sh --dry-run
#   scripts/test.sh -R recipe       # extra arguments go to ctest
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
start=$SECONDS
"$root/scripts/setup.sh"
cd "${LATHE_BUILD_DIR:-$root/build}"
status=0
ctest --output-on-failure -j"$(nproc)" "$@" || status=$?
# The GPU check's dry run: the same targets, the [gpu] cases skipped, the table it prints.
if [ $# -eq 0 ]; then
  "$root/scripts/gpu/check.sh" --dry-run --out "${LATHE_BUILD_DIR:-$root/build}/gpu-check" || status=1
fi
echo "test: finished in $((SECONDS - start)) s (setup, build and tests)"
exit $status
