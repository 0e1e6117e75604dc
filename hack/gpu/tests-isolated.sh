#!/usr/bin/env bash
# Runs each engine_cuda_tests test matching FILTER in its own process (GPU machine), so that one kernel fault (a
# sticky CUDA error) does not fail every later test of the same binary, and prints one line per test.
#   hack/gpu/tests-isolated.sh FILTER [VAR=value ...]   (after a build of worker/native/build-gpu with tests)
set -u
cd "$(dirname "$0")/../.."
filter=$1; shift
bin=worker/native/build-gpu/engine_cuda_tests
pass=0 fail=0 skip=0
for t in $($bin --gtest_filter="$filter" --gtest_list_tests | awk '/^[^ ]/{s=$1} /^  /{print s $1}'); do
  log=$(env "$@" timeout 120 $bin --gtest_filter="$t" 2>&1)
  if grep -q '^\[  PASSED  \] 1 test' <<<"$log"; then pass=$((pass + 1))
  elif grep -q '^\[  SKIPPED \] 1 test' <<<"$log"; then skip=$((skip + 1)); echo "SKIPPED $t"
  else
    fail=$((fail + 1)); echo "FAILED $t"; grep -E 'Failure|exception|Expected|Which is|differs|diff' <<<"$log" | head -6 | sed 's/^/    /'
  fi
done
echo "== $filter $*: $pass passed, $fail failed, $skip skipped"
