#!/usr/bin/env bash
# Writes data/kjv/pairs.jsonl, preference pairs for the dpo recipes: the user gives a verse of the
# King James Bible (data/kjv/kjv.txt, from data/prepare_kjv.sh); the chosen answer is the verse
# that follows it in the same chapter, the rejected one a verse from about 9000 verses away. One
# {"prompt": [...], "chosen": [...], "rejected": [...]} object of chat messages per line.
# Idempotent: does nothing when the file exists.
#
#   data/prepare_kjv_pairs.sh [OUT_FILE]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/kjv/pairs.jsonl}
[ -s "$out" ] && exit 0
"$here/prepare_kjv.sh"
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
awk '
  BEGIN { n = 0; chapter = 0 }
  function esc(s) { gsub(/\\/, "\\\\", s); gsub(/"/, "\\\"", s); return s }
  function msg(role, text) { return "[{\"role\": \"" role "\", \"content\": \"" esc(text) "\"}]" }
  /^$/ { chapter++; next }
  { verse[n] = $0; chap[n] = chapter; n++ }
  END {
    for (i = 0; i + 1 < n; i++) {
      if (chap[i + 1] != chap[i]) continue
      j = (i + 9001) % n
      print "{\"prompt\": " msg("user", verse[i]) ", \"chosen\": " msg("assistant", verse[i + 1]) \
            ", \"rejected\": " msg("assistant", verse[j]) "}"
    }
  }' "$here/kjv/kjv.txt" > "$tmp"
[ -s "$tmp" ] || { echo "prepare_kjv_pairs: no pair written" >&2; exit 1; }
mv "$tmp" "$out"
trap - EXIT
echo "prepare_kjv_pairs: wrote $out ($(wc -l < "$out") pairs)"
