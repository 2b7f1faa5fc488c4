#!/bin/sh
# test.sh -- install, build and run the whole test suite on a fresh Debian 12
# machine: once plainly, once under ASan+UBSan, then `make distcheck`.
# Build trees go to build/ (ignored by git).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
sh scripts/install-deps.sh
[ -x configure ] || autoreconf -fi
jobs=$(nproc 2>/dev/null || echo 2)

run() {   # run NAME CONFIGURE-FLAGS...
	name=$1; shift
	echo "=== $name build: $*"
	mkdir -p "build/$name"
	(cd "build/$name" && "$top/configure" --enable-werror "$@" >configure.log &&
	    make -j"$jobs" >make.log 2>&1 || { tail -40 make.log; exit 1; }
	 if ! make -j"$jobs" check >check.log 2>&1; then
		cat test-suite.log 2>/dev/null || tail -60 check.log
		echo "=== $name: FAILED"; exit 1
	 fi
	 grep -E '^# (TOTAL|PASS|SKIP|XFAIL|FAIL|XPASS|ERROR):' check.log)
	pass=$(sed -n 's/^# PASS: *//p' "build/$name/check.log")
	skip=$(sed -n 's/^# SKIP: *//p' "build/$name/check.log")
	total_pass=$((total_pass + pass)); total_skip=$((total_skip + skip))
	echo "=== $name: passed"
}

total_pass=0
total_skip=0
run plain
LSAN_OPTIONS="suppressions=$top/tests/lsan.supp:print_suppressions=0" \
ASAN_OPTIONS="detect_leaks=1:abort_on_error=1" \
UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
    run sanitizers --enable-debug --enable-sanitizers
if [ "${XKS_SKIP_DISTCHECK:-0}" != 1 ]; then
	echo "=== distcheck"
	(cd build/plain && make -j"$jobs" distcheck >distcheck.log 2>&1) ||
	    { tail -60 build/plain/distcheck.log; echo "=== distcheck: FAILED"; exit 1; }
	echo "=== distcheck: passed"
fi
echo "all tests passed"
echo "$total_pass passed, 0 failed, $total_skip skipped"
