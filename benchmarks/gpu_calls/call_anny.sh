# Issue 22: retrain the default model on anny data (the carried tarball), eval gen before/after.
source benchmarks/gpu_calls/setup.sh
timeout ${ANNY_T:-530} benchmarks/default_model_anny.sh out/default_anny > $OUT/log.txt 2>&1  # RECIPE_EXTRA resizes it
echo "rc=$? after $((SECONDS-T0)) s" >> $OUT/log.txt
A=out/default_anny
cp $A/summary.txt $A/timings.tsv $OUT/ 2>/dev/null
cp $A/data_preview.png $OUT/ 2>/dev/null
cp $A/gen_after/contact_sheet.png $OUT/contact_sheet_after.png 2>/dev/null
cp $A/gen_before/contact_sheet.png $OUT/contact_sheet_before.png 2>/dev/null
[ -d $A/model ] && tar -cf - -C $A model | split -b 15M - $OUT/model.tar.part-
tail -5 $OUT/log.txt; head -40 $OUT/summary.txt
source benchmarks/gpu_calls/pack.sh
