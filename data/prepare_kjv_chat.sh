#!/usr/bin/env bash
# Writes data/kjv/chat.jsonl, conversations for the sft recipes: the user gives a verse of the King
# James Bible (data/kjv/kjv.txt, from data/prepare_kjv.sh), the assistant answers with the verse
# that follows it in the same chapter. One {"messages": [...]} object per line; every fifth
# conversation has a second turn (the verse after that). Idempotent: does nothing when the file
# exists.
#
#   data/prepare_kjv_chat.sh [OUT_FILE]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/kjv/chat.jsonl}
[ -s "$out" ] && exit 0
"$here/prepare_kjv.sh"
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
awk '
  function esc(s) { gsub(/\\/, "\\\\", s); gsub(/"/, "\\\"", s); return s }
  function msg(role, text) { return "{\"role\": \"" role "\", \"content\": \"" esc(text) "\"}" }
  /^$/ { n = 0; next }                       # a new chapter
  { v[n++] = $0
    if (n < 3) next
    line = msg("user", v[n - 3]) ", " msg("assistant", v[n - 2])
    if (++k % 5 == 0) line = line ", " msg("user", "And then?") ", " msg("assistant", v[n - 1])
    print "{\"messages\": [" line "]}" }' "$here/kjv/kjv.txt" > "$tmp"
[ -s "$tmp" ] || { echo "prepare_kjv_chat: no conversation written" >&2; exit 1; }
mv "$tmp" "$out"
trap - EXIT
echo "prepare_kjv_chat: wrote $out ($(wc -l < "$out") conversations)"
