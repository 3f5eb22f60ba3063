# Sourced at the end of a call: every small file under $OUT into one texts.tar (at most 8 files come back).
( cd "$OUT" && shopt -s nullglob && small=(*.txt *.md *.json *.tsv) \
  && tar -cf texts.tar "${small[@]}" && rm -f "${small[@]}" )
ls -la $OUT
