#!/usr/bin/env bash
# Writes the default corpus, data/kjv/kjv.txt: the King James Bible from Debian's bible-kjv
# package, one verse per line (verse numbers removed), one chapter per paragraph (blank line
# between chapters). About 4.3 MB of English text. Idempotent: does nothing when the file exists.
#
#   data/prepare_kjv.sh [OUT_FILE]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/kjv/kjv.txt}
[ -s "$out" ] && exit 0

if ! command -v bible >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get install -y -qq bible-kjv >/dev/null || {
    $sudo apt-get update -qq && $sudo apt-get install -y -qq bible-kjv >/dev/null; }
fi

mkdir -p "$(dirname "$out")"
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
bible "Gen1:1-Rev22:21" | awk '
  /^[[:space:]]*$/ { next }
  /^[1-3A-Z][A-Za-z ]* [0-9]+$/ {                      # chapter heading, e.g. "1 Samuel 3"
    if (verse != "") print verse; verse = ""
    if (chapters++) print ""
    next }
  /^ +[0-9]+ / {                                        # a verse starts: "  12 And ..."
    if (verse != "") print verse
    sub(/^ +[0-9]+ /, ""); verse = $0; next }
  { verse = verse " " $0 }                              # continuation of the verse
  END { if (verse != "") print verse }' > "$tmp"
[ -s "$tmp" ] || { echo "prepare_kjv: bible printed nothing" >&2; exit 1; }
mv "$tmp" "$out"
trap - EXIT
echo "prepare_kjv: wrote $out ($(wc -c < "$out") bytes, $(grep -c . "$out") verses)"
