#!/usr/bin/env bash
# Builds and runs the CPU emulation of pynas's CUDA kernels (no GPU needed):
# every kernel of csrc/cuda/*_kernel.cu, compiled unchanged by the host
# compiler with AddressSanitizer and UndefinedBehaviorSanitizer, runs under
# the cuemu runtime (tests/cuda_emu/include, runtime/) and is checked through
# the launchers of csrc/cuda/kernels.h against float64 references.
#
#   bash tests/cuda_emu/run.sh            # build, self-test, launcher tests, coverage
#   bash tests/cuda_emu/run.sh TEST...    # build and run only these launcher tests
#
# Steps, each reported:
#   1. build (make -j$JOBS) into build/cuda_emu/
#   2. self-test: every deliberately broken kernel in selftest/ must be caught
#      (in its own process, with the expected finding) and its fixed twin must pass
#   3. launcher tests, one process per test, $JOBS at a time
#   4. coverage: every kernel instantiation and every launch site in csrc/cuda ran
# Exit status 0 only when every step passed. Needs g++ (or $CXX), make, sed,
# grep, awk and nm (binutils; Debian's g++ brings it).
set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
B=build/cuda_emu
LOGS=$B/logs
JOBS=${JOBS:-2}
START=$(date +%s)

# No leak check (not what this is about, and it needs ptrace), no fake stacks
# for use-after-return (slow with thousands of fibers); yours come after.
export ASAN_OPTIONS="detect_leaks=0:detect_stack_use_after_return=0:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:${UBSAN_OPTIONS:-}"

say() { printf '== cuda_emu: %s\n' "$*"; }
elapsed() { echo $(($(date +%s) - START)); }

for tool in "${CXX:-g++}" make sed grep awk nm; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    say "FAIL: '$tool' not found (Debian: apt-get install g++ make binutils)"
    exit 1
  fi
done

# ------------------------------------------------------------- 1. build
say "building (make -j$JOBS, sanitized; about 2 minutes from scratch on 2 cores)"
if ! make --no-print-directory -f tests/cuda_emu/Makefile -j"$JOBS" all; then
  say "FAIL: build failed"
  exit 1
fi
rm -rf "$LOGS"
mkdir -p "$LOGS"

if [ $# -gt 0 ]; then
  TESTS="$*"
  RUN_ALL=0
else
  TESTS=$("$B/cuemu_tests" --list | awk '{print $1}')
  RUN_ALL=1
fi

# ------------------------------------------------------------- 2. self-test
SELF_TOTAL=0
SELF_OK=0
if [ "$RUN_ALL" = 1 ]; then
  say "self-test: each broken kernel must be caught, each fixed twin must pass"
  while IFS='|' read -r name finding what; do
    SELF_TOTAL=$((SELF_TOTAL + 1))
    # (subshells: a run that aborts is reported in its log, not by this shell)
    ("$B/cuemu_selftest" "$name"; exit $?) >"$LOGS/selftest_$name.log" 2>&1
    rc_broken=$?
    ("$B/cuemu_selftest" "$name" --fixed; exit $?) >"$LOGS/selftest_${name}_fixed.log" 2>&1
    rc_fixed=$?
    caught=0
    if [ "$rc_broken" -ne 0 ] && grep -qF -- "$finding" "$LOGS/selftest_$name.log"; then caught=1; fi
    if [ "$caught" = 1 ] && [ "$rc_fixed" -eq 0 ]; then
      SELF_OK=$((SELF_OK + 1))
      printf '  PASS  %-26s caught (exit %3d): "%s"; fixed twin passes  [%s]\n' "$name" "$rc_broken" "$finding" "$what"
    else
      printf '  FAIL  %-26s broken: exit %d, finding "%s" %s; fixed: exit %d  [%s]\n' "$name" "$rc_broken" \
        "$finding" "$([ "$caught" = 1 ] && echo found || echo MISSING)" "$rc_fixed" "$what"
      echo "        --- broken run ($LOGS/selftest_$name.log):"
      tail -n 25 "$LOGS/selftest_$name.log" | sed 's/^/        | /'
      if [ "$rc_fixed" -ne 0 ]; then
        echo "        --- fixed run ($LOGS/selftest_${name}_fixed.log):"
        tail -n 25 "$LOGS/selftest_${name}_fixed.log" | sed 's/^/        | /'
      fi
    fi
  done < <("$B/cuemu_selftest" --list)
fi

# ------------------------------------------------------------- 3. launcher tests
say "launcher tests ($(echo $TESTS | wc -w) processes, $JOBS at a time; logs in $LOGS)"
run_one() {
  local t=$1
  ("$B/cuemu_tests" --symbols "$B/kernel_symbols.txt" --record "$LOGS/$t.rec" "$t"; exit $?) >"$LOGS/$t.log" 2>&1
  echo $? >"$LOGS/$t.rc"
}
for t in $TESTS; do
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
  run_one "$t" &
done
wait
TEST_TOTAL=0
TEST_OK=0
for t in $TESTS; do
  TEST_TOTAL=$((TEST_TOTAL + 1))
  rc=$(cat "$LOGS/$t.rc" 2>/dev/null || echo 99)
  line=$(grep -E '^\[ +(OK|FAIL) +\] ' "$LOGS/$t.log" | tail -n 1)
  if [ "$rc" = 0 ]; then
    TEST_OK=$((TEST_OK + 1))
    echo "  $line"
  elif [ -n "$line" ]; then
    echo "  $line"
    grep -E -A6 '^  FAIL ' "$LOGS/$t.log" | head -n 60 | sed 's/^/  /'
  else
    echo "  [ FAIL ] $t: the process died (exit $rc): a kernel or the harness was stopped by cuemu or a sanitizer"
    tail -n 40 "$LOGS/$t.log" | sed 's/^/        | /'
  fi
done

# ------------------------------------------------------------- 4. coverage
COVERAGE=skipped
if [ "$RUN_ALL" = 1 ]; then
  say "coverage (kernel instantiations and launch sites of csrc/cuda that ran)"
  recs=$(ls "$LOGS"/*.rec 2>/dev/null)
  if "$B/cuemu_tests" --symbols "$B/kernel_symbols.txt" --coverage "$B/launch_sites.txt" $recs \
    >"$LOGS/coverage.log" 2>&1; then
    COVERAGE=PASS
  else
    COVERAGE=FAIL
  fi
  sed 's/^/  /' "$LOGS/coverage.log"
fi

# ------------------------------------------------------------- summary
ok=1
[ "$SELF_OK" = "$SELF_TOTAL" ] || ok=0
[ "$TEST_OK" = "$TEST_TOTAL" ] || ok=0
[ "$COVERAGE" != FAIL ] || ok=0
summary="self-test $SELF_OK/$SELF_TOTAL caught, launcher tests $TEST_OK/$TEST_TOTAL passed, coverage $COVERAGE, $(elapsed) s"
if [ "$ok" = 1 ]; then
  say "PASS ($summary)"
  exit 0
fi
say "FAIL ($summary)"
exit 1
