#!/usr/bin/env bash
# Writes the documents of the KJV evaluation tasks (recipes/tasks/kjv_*.yaml) under
# data/kjv/tasks/, from the King James Bible (data/kjv/kjv.txt, from data/prepare_kjv.sh):
#   next_verse_{train,test}.jsonl  a verse and four candidates for the verse after it: the true one
#                                  and three from far away ({"verse", "endings", "label"})
#   last_word.jsonl                whole verses, the last word to be predicted ({"text"})
#   chapters.jsonl                 whole chapters, one verse per line, for rolling perplexity ({"page"})
#   next_word_{train,test}.jsonl   the start of a verse and its next word ({"context", "answer"})
# Documents are taken at fixed strides through the book, so every run writes the same files.
# Idempotent: does nothing when the files exist.
#
#   data/prepare_kjv_tasks.sh [OUT_DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/kjv/tasks}
[ -s "$out/next_word_test.jsonl" ] && exit 0
"$here/prepare_kjv.sh"
mkdir -p "$out"
tmp="$out/.tmp.$$"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
awk -v dir="$tmp" '
  function esc(s) { gsub(/\\/, "\\\\", s); gsub(/"/, "\\\"", s); return s }
  /^$/ { if (n > 0 && chap[n - 1] == chapter) chapter++; next }
  { verse[n] = $0; chap[n] = chapter; n++ }
  END {
    # Multiple choice: the verse after verse i among three far-away verses.
    made = 0
    for (i = 0; i + 1 < n && made < 500; i += 61) {
      if (chap[i + 1] != chap[i]) continue
      gold = made % 4; k = 0; endings = ""
      for (c = 0; c < 4; c++) {
        e = (c == gold) ? verse[i + 1] : verse[(i + 7919 * (++k)) % n]
        endings = endings (c ? ", " : "") "\"" esc(e) "\""
      }
      file = (made < 100) ? dir "/next_verse_train.jsonl" : dir "/next_verse_test.jsonl"
      print "{\"verse\": \"" esc(verse[i]) "\", \"endings\": [" endings "], \"label\": " gold "}" > file
      made++
    }
    # Last word: verses of at least six words.
    made = 0
    for (i = 5; i < n && made < 500; i += 53) {
      if (split(verse[i], w, " ") < 6) continue
      print "{\"text\": \"" esc(verse[i]) "\"}" > (dir "/last_word.jsonl")
      made++
    }
    # Rolling perplexity: 40 whole chapters.
    made = 0
    for (c = 3; made < 40; c += 29) {
      page = ""; found = 0
      for (i = 0; i < n; i++) if (chap[i] == c) { page = page (found ? "\\n" : "") esc(verse[i]); found = 1 }
      if (!found) break
      print "{\"page\": \"" page "\"}" > (dir "/chapters.jsonl")
      made++
    }
    # Next word: the first words of a verse and the word after them.
    made = 0
    for (i = 7; i < n && made < 250; i += 89) {
      m = split(verse[i], w, " ")
      if (m < 6) continue
      cut = 3 + made % 3; context = w[1]
      for (j = 2; j <= cut; j++) context = context " " w[j]
      answer = w[cut + 1]; gsub(/[^A-Za-z]/, "", answer)
      if (answer == "") continue
      file = (made < 50) ? dir "/next_word_train.jsonl" : dir "/next_word_test.jsonl"
      print "{\"context\": \"" esc(context) "\", \"answer\": \"" answer "\"}" > file
      made++
    }
  }' "$here/kjv/kjv.txt"
for f in next_verse_train next_verse_test last_word chapters next_word_train next_word_test; do
  [ -s "$tmp/$f.jsonl" ] || { echo "prepare_kjv_tasks: no $f.jsonl written" >&2; exit 1; }
done
mv "$tmp"/*.jsonl "$out/"
