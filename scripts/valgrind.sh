#!/bin/sh
# valgrind.sh -- run integration tests with the daemon under valgrind
# (memcheck, full leak check) and report errors and leaks per daemon process.
#
#   scripts/valgrind.sh [-b BUILDDIR] [-o OUTDIR] [TEST...]
#
# BUILDDIR: a plain build (not --enable-sanitizers), default the current
# directory.  TEST: integration script names (default: operations.sh
# frontdoor.sh).  lib.sh runs the daemon as  $XKS_VALGRIND xksproxyd ...;
# each daemon process writes OUTDIR/vg.PID.log.  The tests' own assertions
# still run (a valgrind error makes the daemon exit 99, which fails the
# test's "clean exit" check); timing assertions may fail because everything
# runs 20-50 times slower under valgrind: such failures are listed but are
# not memory findings.  Exit status: 0 when no daemon had a memcheck error or
# a definite/indirect leak, 1 otherwise.  Slow (minutes); not part of
# `make check`.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
build=$PWD
out=
while getopts b:o: o; do
	case $o in
	b) build=$(cd "$OPTARG" && pwd) ;;
	o) out=$OPTARG ;;
	*) echo "usage: $0 [-b BUILDDIR] [-o OUTDIR] [TEST...]" >&2; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || set -- operations.sh frontdoor.sh
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 2; }
[ -x "$build/xksproxyd" ] || { echo "$build/xksproxyd: not built" >&2; exit 2; }
if nm -D "$build/xksproxyd" 2>/dev/null | grep -q __asan_init; then
	echo "$build is a sanitizer build: use a plain one" >&2; exit 2
fi
[ -x "$build/tests/p11key" ] || make -C "$build" tests/p11key >/dev/null
[ -n "$out" ] || out=$(mktemp -d "${TMPDIR:-/tmp}/xks-valgrind.XXXXXX")
mkdir -p "$out"
out=$(cd "$out" && pwd)

# Errors in our code only count; leaks are reported with full stacks.
XKS_VALGRIND="valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite,indirect,possible \
--errors-for-leak-kinds=definite,indirect --error-exitcode=99 --track-origins=yes \
--num-callers=30 --log-file=$out/vg.%p.log"
export XKS_VALGRIND
top_builddir=$build top_srcdir=$top XKS_SHIM=$build/.libs/xks-shim.so
export top_builddir top_srcdir XKS_SHIM

bad=0
for t in "$@"; do
	t=${t##*/}
	before=$(ls "$out" | grep -c '^vg\.' || true)
	start=$(date +%s)
	rc=0
	sh "$top/tests/integration/$t" > "$out/${t%.sh}.out" 2>&1 || rc=$?
	secs=$(( $(date +%s) - start ))
	echo "=== $t: exit $rc in ${secs}s, $(grep -c '^ok' "$out/${t%.sh}.out" || true) ok," \
	    "$(grep -c '^not ok' "$out/${t%.sh}.out" || true) not ok (output: $out/${t%.sh}.out)"
	grep '^not ok' "$out/${t%.sh}.out" | sed 's/^/    /' || true
	# the logs written by this test's daemons
	for f in $(ls -tr "$out" | grep '^vg\.' | tail -n +$((before + 1))); do
		f=$out/$f
		grep -q 'Command: .*xksproxyd' "$f" || continue
		errs=$(sed -n 's/.*ERROR SUMMARY: \([0-9,]*\) errors.*/\1/p' "$f" | tr -d , | tail -1)
		def=$(sed -n 's/.*definitely lost: \([0-9,]*\) bytes.*/\1/p' "$f" | tr -d , | tail -1)
		ind=$(sed -n 's/.*indirectly lost: \([0-9,]*\) bytes.*/\1/p' "$f" | tr -d , | tail -1)
		pos=$(sed -n 's/.*possibly lost: \([0-9,]*\) bytes.*/\1/p' "$f" | tr -d , | tail -1)
		rea=$(sed -n 's/.*still reachable: \([0-9,]*\) bytes.*/\1/p' "$f" | tr -d , | tail -1)
		grep -q 'All heap blocks were freed' "$f" && { def=0; ind=0; pos=0; rea=0; }
		echo "    daemon $(basename "$f"): errors ${errs:-?}, definitely lost ${def:-0} B," \
		    "indirectly lost ${ind:-0} B, possibly lost ${pos:-0} B, still reachable ${rea:-0} B"
		if [ "${errs:-1}" != 0 ] || [ "${def:-0}" != 0 ] || [ "${ind:-0}" != 0 ]; then
			bad=1
			grep -E '^==[0-9]+== (Invalid|Conditional|Use of|Syscall param|Mismatched|[0-9,]+ bytes in [0-9,]+ blocks are (definitely|indirectly))' "$f" |
			    sort | uniq -c | head -20 | sed 's/^/      /'
		fi
	done
done
echo "valgrind logs: $out"
[ $bad -eq 0 ] && echo "valgrind: no memcheck errors, no definite or indirect leaks" ||
    echo "valgrind: FINDINGS (see above)"
exit $bad
