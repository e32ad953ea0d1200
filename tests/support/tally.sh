# The tally of a bash test script: `pass` and `fail MESSAGE` count checks, `finish NAME` prints
# the counts and, as the script's last command, gives its exit status.
failures=0 passed=0
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}
pass() { passed=$((passed + 1)); }
finish() {
  echo "$1: $passed passed, $failures failed"
  ((failures == 0))
}
