# Sourced at the end of a call: every small file under $OUT into one texts.tar (at most 8 files come back).
( cd $OUT && ls *.txt *.md *.json *.tsv 2>/dev/null | tar -cf texts.tar -T - && ls *.txt *.md *.json *.tsv 2>/dev/null | xargs rm -f )
ls -la $OUT
