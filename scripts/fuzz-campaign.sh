#!/usr/bin/env bash
# The long fuzz campaign of BENCHMARKS.md ("Fuzzing"): every property of the fuzz
# suites (tests/it/fuzz/, src/reader/fuzz_tests.rs, src/detect/*/fuzz_tests.rs) run
# alone with PROPTEST_CASES cases, one test thread pinned to one core, printing
# `property <TAB> cases <TAB> seconds <TAB> ok|FAILED` (and the minimal failing input).
# CI runs the same properties with the small case counts in the code.
#
#   scripts/fuzz-campaign.sh            # the campaign of BENCHMARKS.md (~15 min)
#   SCALE=10 scripts/fuzz-campaign.sh   # a tenth of the cases
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SCALE=${SCALE:-1}
CORE=${CORE:-1}

# Build once, then run the binaries directly (not holding cargo's lock while they run).
built=$(cargo test --features lab --lib --test it --no-run 2>&1) || {
  echo "$built"
  exit 1
}
LIB=$(echo "$built" | sed -n 's/.*Executable unittests src\/lib.rs (\(.*\))/\1/p')
IT=$(echo "$built" | sed -n 's/.*Executable tests\/it\/main.rs (\(.*\))/\1/p')

failed=0
run() { # binary cases property
  local cases=$(($2 / SCALE)) t0 out rc
  t0=$(date +%s.%N)
  out=$(PROPTEST_CASES=$cases taskset -c "$CORE" "$1" --test-threads=1 --exact "$3" 2>&1)
  rc=$?
  printf "%s\t%s\t%.1f\t%s\n" "$3" "$cases" "$(echo "$(date +%s.%N) - $t0" | bc)" \
    "$([ $rc = 0 ] && echo ok || echo FAILED)"
  if [ $rc != 0 ]; then
    failed=1
    echo "$out" | grep -E "Test failed|minimal failing input|panicked at" | head -5
  fi
}

run "$LIB" 20000 reader::fuzz_tests::edited_answers_decode_or_fail_typed
run "$LIB" 20000 reader::fuzz_tests::arbitrary_bytes_decode_or_fail_typed
run "$LIB" 20000 reader::fuzz_tests::generated_matrices_decode_as_written
run "$IT" 20000 fuzz::config::mutated_configs_load_or_name_the_file
run "$IT" 20000 fuzz::config::arbitrary_text_is_refused_with_the_file_named
run "$IT" 20000 fuzz::config::generated_groups_load_as_written
run "$IT" 20000 fuzz::config::env_expansion_is_total
run "$IT" 20000 fuzz::config::env_references_expand_to_values_and_defaults
run "$IT" 20000 fuzz::config::any_string_is_a_duration_or_a_clear_error
run "$IT" 20000 fuzz::config::durations_round_trip
run "$IT" 20000 fuzz::csv::edited_tables_parse_or_name_file_and_line
run "$IT" 20000 fuzz::csv::edited_load_tests_parse_or_name_the_file
run "$IT" 20000 fuzz::csv::arbitrary_text_never_panics
run "$IT" 20000 fuzz::csv::generated_tables_round_trip
run "$IT" 20000 fuzz::api::any_request_gets_an_answer_with_a_reason
run "$IT" 20000 fuzz::api::edited_label_bodies_are_applied_only_when_valid
run "$IT" 20000 fuzz::api::edited_check_bodies_parse_or_are_bad_requests
run "$IT" 20000 fuzz::csv::detect_zscore_exits_cleanly_on_edited_input
run "$IT" 20000 fuzz::csv::regress_exits_cleanly_on_edited_input
run "$LIB" 4000 detect::uniad::fuzz_tests::damaged_files_load_or_are_refused_clearly
run "$LIB" 4000 detect::uniad::fuzz_tests::edited_graphs_load_or_are_refused_clearly
run "$LIB" 2000 detect::regress::fuzz_tests::damaged_files_load_or_are_refused_clearly
run "$LIB" 20000 detect::regress::fuzz_tests::edited_graphs_give_weights_or_typed_errors
run "$LIB" 1500 detect::regress::fuzz_tests::hostile_weights_are_refused_or_harmless
exit $failed
