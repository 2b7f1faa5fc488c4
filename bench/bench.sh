#!/bin/sh
# bench.sh -- the xksproxyd benchmark (results and analysis: docs/performance.md)
#
#   make bench                 from a configured build tree
#   sh bench/bench.sh          from the source tree: configures and builds in
#                              build/bench first
#
# Provisions a throwaway SoftHSMv2 token, an ECDSA P-256 certificate and a
# credential, starts xksproxyd on loopback and measures, with bench/xksload
# (real SigV4-signed requests over TLS) and bench/p11rate (raw PKCS#11):
#   raw       the token's own AES-GCM encrypt rate from a plain C loop
#   keepalive encrypt, encrypt+CDIV, decrypt, GetKeyMetadata, GetHealthStatus
#             over keep-alive connections: req/s, p50/p99/p99.9, errors
#   spt       keep-alive encrypt against hsm.sessions_per_token (no latency)
#   open      p99 at a fixed 1800 encrypt requests/s
#   handshake full TLS handshakes/s (new connection per request), and
#             whether TLS session resumption (tickets) works
#   idle      peak RSS (VmHWM) of a fresh daemon holding 1000 idle TLS
#             connections
#   nginx     the reference: nginx on the same machine, same certificate
#             and TLS settings, answering every request with a static
#             encrypt-sized JSON reply; the same keep-alive and handshake
#             loads (skipped when nginx is not installed: apt-get install
#             nginx-light)
#   shim      with 1 ms added to each C_Encrypt by pkcs11/xks-shim:
#             throughput against sessions_per_token 1..16 and the ideal
#             tokens x sessions / 1 ms, plus the latency of unauthenticated
#             requests (answered by the event loop) during the run
# Everything runs on 127.0.0.1 and is stopped at the end; the whole run
# takes about 3 minutes.
#
# Environment:
#   BENCH_SECONDS   measured seconds per load run (default 5)
#   BENCH_CONNS     keep-alive connections (default 16)
#   BENCH_ONLY      comma-separated sections to run (default: all)
#   BENCH_LOG_LEVEL the daemon's log.level (default info: one line a request)
#   BENCH_SPT       sessions_per_token of the main daemon (default: the
#                   daemon's own default)
#   XKSPROXYD       another daemon binary to measure
#   BENCH_OUT       also write the RESULT lines to this file
#   BENCH_REPEAT    pairs of (raw 1-session encrypt, keep-alive encrypt)
#                   run back to back for the encrypt ratio (default 3; the
#                   goal uses the median of the pairs' ratios)
#   BENCH_PERF      1: after the keep-alive rows, profile the daemon with
#                   perf(1) during one more encrypt run and print where its
#                   CPU goes, by thread and by symbol (needs perf)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
: "${top_srcdir:=$(cd "$here/.." && pwd)}"
if [ -z "${top_builddir:-}" ]; then
	top_builddir="$top_srcdir/build/bench"
	echo "== building in $top_builddir"
	mkdir -p "$top_builddir"
	(cd "$top_srcdir" && { [ -x configure ] || autoreconf -fi >/dev/null; })
	(cd "$top_builddir" && { [ -f Makefile ] ||
	    "$top_srcdir/configure" >configure.log; } &&
	    make -j"$(nproc 2>/dev/null || echo 2)" xksproxyd xks-shim.la \
	    bench/xksload bench/p11rate >make.log 2>&1) ||
	    { echo "build failed: see $top_builddir/make.log"; exit 1; }
fi

SECS=${BENCH_SECONDS:-5}
CONNS=${BENCH_CONNS:-16}
ONLY=${BENCH_ONLY:-raw,keepalive,spt,open,handshake,nginx,idle,shim}
LOG_LEVEL=${BENCH_LOG_LEVEL:-info}
XKSPROXYD=${XKSPROXYD:-$top_builddir/xksproxyd}
XKSLOAD=$top_builddir/bench/xksload
P11RATE=$top_builddir/bench/p11rate
SHIM=$top_builddir/.libs/xks-shim.so
SOFTHSM_MODULE=${SOFTHSM_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
HZ=$(getconf CLK_TCK 2>/dev/null || echo 100)
NCPU=$(nproc 2>/dev/null || echo 1)

for t in "$XKSPROXYD" "$XKSLOAD" "$P11RATE"; do
	[ -x "$t" ] || { echo "missing $t (run: make bench)"; exit 1; }
done
for t in openssl softhsm2-util pkcs11-tool; do
	command -v "$t" >/dev/null 2>&1 || { echo "missing $t"; exit 1; }
done
[ -r "$SOFTHSM_MODULE" ] || { echo "missing $SOFTHSM_MODULE (softhsm2)"; exit 1; }

T=$(mktemp -d "${TMPDIR:-/tmp}/xks-bench.XXXXXX")
DPID=
BGPIDS=
cleanup() {
	rc=$?
	for p in $BGPIDS; do kill "$p" 2>/dev/null || true; done
	[ -z "${NPID:-}" ] || kill -QUIT "$NPID" 2>/dev/null || true
	if [ -n "$DPID" ] && kill -0 "$DPID" 2>/dev/null; then
		kill -TERM "$DPID" 2>/dev/null || true
		wait "$DPID" 2>/dev/null || true
	fi
	rm -rf "$T"
	exit $rc
}
trap cleanup EXIT INT TERM

# 1000 idle connections need more than the usual 1024 descriptors
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 4096 2>/dev/null || true
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge 2200 ] ||
    echo "warning: ulimit -n is $(ulimit -n): the idle test needs 2200"

want() { case ",$ONLY," in *",$1,"*) return 0 ;; esac; return 1; }
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }
# field NAME: a key=value field of $R
field() { printf '%s\n' "$R" | tr ' ' '\n' | sed -n "s/^$1=//p" | head -n 1; }
note() { [ -z "${BENCH_OUT:-}" ] || printf '%s\n' "$*" >>"$BENCH_OUT"; }

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
	    echo $((20000 + $$ % 20000))
}

# --- fixtures: token, certificate, credential
echo "== xksproxyd benchmark: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "machine: $NCPU CPU ($(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -n 1)), $(uname -sr), $(openssl version | cut -d' ' -f1-2), SoftHSM $(softhsm2-util --version)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
sh "$top_srcdir/scripts/provision-softhsm.sh" "$T/hsm" xks-a >/dev/null
SOFTHSM2_CONF="$T/hsm/softhsm2.conf"
export SOFTHSM2_CONF
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$T/server.key" -out "$T/server.pem" -days 2 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
chmod 600 "$T/server.key"
AKID=$(openssl rand -hex 32 | tr 0-9a-f A-P | cut -c1-26)
(umask 077; openssl rand -base64 32 >"$T/secret")
PORT=$(free_port)

# conf FILE MODULE [SPT]: one key store, the daemon's defaults elsewhere
conf() {
	spt=${3:-}
	cat >"$1" <<CONF
{
  "listen": [{ "address": "127.0.0.1", "port": $PORT }],
  "tls": { "certificates": [{ "certificate_file": "$T/server.pem",
                              "private_key_file": "$T/server.key" }] },
  "hsm": { "module": "$2", "tokens": ["pkcs11:token=xks-a"],
           "pin_file": "$T/hsm/hsm.pin", "health_key": "xks-health"${spt:+, \"sessions_per_token\": $spt} },
  "keystores": [ { "paths": ["/example/kms/xks/v1"],
                   "credentials": [ { "access_key_id": "$AKID",
                                      "secret_access_key_file": "$T/secret" } ],
                   "keys": ["*"] } ],
  "log": { "level": "$LOG_LEVEL" }
}
CONF
}

# daemon_start NAME CONF [VAR=value...]: start and wait until it listens
daemon_start() {
	name=$1; cf=$2; shift 2
	extra=
	[ "$(id -u)" = 0 ] && extra=--allow-root
	env "$@" "$XKSPROXYD" -c "$cf" $extra >"$T/$name.log" 2>&1 &
	DPID=$!
	i=0
	until grep -q ' ready: ' "$T/$name.log" 2>/dev/null ||
	    { [ "$LOG_LEVEL" != info ] && [ "$LOG_LEVEL" != debug ] &&
	      ss -ltn 2>/dev/null | grep -q "127.0.0.1:$PORT "; }; do
		i=$((i + 1))
		if [ $i -gt 100 ] || ! kill -0 "$DPID" 2>/dev/null; then
			echo "daemon did not start:"; tail -n 20 "$T/$name.log"
			exit 1
		fi
		sleep 0.1
	done
}

daemon_stop() {
	kill -TERM "$DPID"
	wait "$DPID" || true
	DPID=
	# the next daemon binds the same port
	i=0
	while ss -ltn 2>/dev/null | grep -q "127.0.0.1:$PORT " && [ $i -lt 50 ]; do
		i=$((i + 1)); sleep 0.1
	done
}

# CPU ticks of the measured server: the daemon, or nginx's processes
MPIDS=
dticks() {
	for p in ${MPIDS:-$DPID}; do cat "/proc/$p/stat" 2>/dev/null; done |
	    awk '{ t += $14 + $15 } END { print t + 0 }'
}
# busy ticks of the whole machine, all CPUs
sticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
now() { date +%s.%N; }

# load ARGS...: run xksload against the daemon; sets R (its RESULT line),
# DCPU (the daemon's CPU use over the run, in cores) and OCPU (what the
# rest of the machine used besides the daemon and this client: other
# processes disturbing the figures)
load() {
	c0=$(dticks); s0=$(sticks); w0=$(now)
	R=$("$XKSLOAD" -p "$PORT" -k "$AKID" -s "$T/secret" -C "$T/server.pem" \
	    "$@" | grep '^RESULT' || true)
	c1=$(dticks); s1=$(sticks); w1=$(now)
	[ -n "$R" ] || R="RESULT failed=1 errors=1 client_cpu=0"
	DCPU=$(calc "($c1 - $c0) / $HZ / ($w1 - $w0)")
	OCPU=$(calc "($s1 - $s0 - $c1 + $c0) / $HZ / ($w1 - $w0) - $(field client_cpu)")
	case $OCPU in -*) OCPU=0.00 ;; esac
	note "$R daemon_cpu=$DCPU other_cpu=$OCPU"
}

# p11 ARGS...: run p11rate; sets R
p11() {
	R=$("$P11RATE" -T xks-a -f "$T/hsm/hsm.pin" "$@" | grep '^RESULT' || true)
	[ -n "$R" ] || R="RESULT p11 failed=1 rate=0"
	note "$R"
}

row_head() {
	printf '%-20s %9s %8s %8s %9s %6s %6s %6s %6s\n' "$1" "req/s" "p50 ms" \
	    "p99 ms" "p99.9 ms" errors daemon client other
}
row() {
	printf '%-20s %9s %8s %8s %9s %6s %6s %6s %6s\n' "$1" "$(field rps)" \
	    "$(field p50_ms)" "$(field p99_ms)" "$(field p999_ms)" \
	    "$(field errors)" "$DCPU" "$(field client_cpu)" "$OCPU"
}

RAW1=; ENC=; ENCCPU=; RATIO_MED=; P99_1800=; HS=; HSCPU=; HWM=; SHIM_WORST=

# --- raw PKCS#11: the HSM limit
if want raw; then
	echo
	echo "== raw PKCS#11 AES-GCM on the same token (bench/p11rate, 256-byte plaintext, 3 s each)"
	printf '%-36s %10s\n' "loop" "ops/s"
	p11 -m "$SOFTHSM_MODULE" -o encrypt -n 1 -d 3
	RAW1=$(field rate)
	printf '%-36s %10s\n' "encrypt, 1 session" "$RAW1"
	p11 -m "$SOFTHSM_MODULE" -o decrypt -n 1 -d 3
	printf '%-36s %10s\n' "decrypt, 1 session" "$(field rate)"
	p11 -m "$SOFTHSM_MODULE" -o encrypt -n 2 -d 3
	printf '%-36s %10s\n' "encrypt, 2 threads x 2 sessions" "$(field rate)"
	p11 -m "$SOFTHSM_MODULE" -o encrypt -n 8 -d 3
	printf '%-36s %10s\n' "encrypt, 8 threads x 8 sessions" "$(field rate)"
fi

# --- keep-alive throughput of the four operations
if want keepalive || want open || want handshake; then
	conf "$T/main.conf" "$SOFTHSM_MODULE" "${BENCH_SPT:-}"
	daemon_start main "$T/main.conf"
	echo
	echo "== daemon: $(sed -n 's/.*ready: //p' "$T/main.log")," \
	    "$(sed -n 's/.*hsm: \(1 token.*\), queue.*/\1/p' "$T/main.log")," \
	    "log.level $LOG_LEVEL"
fi
if want keepalive; then
	echo
	echo "== keep-alive, closed loop: $CONNS connections, 1 client thread, ${SECS} s after 1 s warm-up"
	echo "   (daemon, client, other: CPU cores used by the daemon, the load generator and"
	echo "   anything else on the machine; encrypt is 2 PKCS#11 calls, encrypt+CDIV 4)"
	row_head operation
	for op in encrypt encrypt+cdiv decrypt metadata health; do
		case $op in
		encrypt+cdiv) load -o encrypt -D -c "$CONNS" -d "$SECS" -w 1 ;;
		*) load -o "$op" -c "$CONNS" -d "$SECS" -w 1 ;;
		esac
		row "$op"
		[ "$op" = encrypt ] && { ENC=$(field rps); ENCCPU=$DCPU; }
	done
	if [ -n "$RAW1" ] && [ -n "$ENC" ]; then
		echo "encrypt over keep-alive / raw 1-session encrypt: $ENC / $RAW1 = $(calc "$ENC / $RAW1")"
	fi
	# the ratio again, in pairs run back to back: this VM's speed moves
	# by up to 20 % from minute to minute, and both sides of a pair see
	# the same machine
	if want raw && [ "${BENCH_REPEAT:-3}" -gt 0 ]; then
		echo
		echo "== the encrypt ratio in ${BENCH_REPEAT:-3} back-to-back pairs (raw 1-session encrypt 3 s, then keep-alive encrypt ${SECS} s)"
		printf '%-6s %10s %10s %7s\n' pair raw proxy ratio
		ratios=
		i=1
		while [ $i -le "${BENCH_REPEAT:-3}" ]; do
			p11 -m "$SOFTHSM_MODULE" -o encrypt -n 1 -d 3
			raw=$(field rate)
			load -o encrypt -c "$CONNS" -d "$SECS" -w 1
			ratio=$(calc "$(field rps) / $raw")
			ratios="$ratios $ratio"
			printf '%-6s %10s %10s %7s\n' $i "$raw" "$(field rps)" "$ratio"
			i=$((i + 1))
		done
		RATIO_MED=$(printf '%s\n' $ratios | sort -n |
		    awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
		echo "median ratio: $RATIO_MED"
	fi
	if [ "${BENCH_PERF:-0}" = 1 ] && command -v perf >/dev/null 2>&1; then
		echo
		echo "== profile: perf record -F 999 -g on the daemon during ${SECS} s of keep-alive encrypt"
		perf record -F 999 -g -p "$DPID" -o "$T/perf.data" -- sleep "$SECS" \
		    >"$T/perf.log" 2>&1 &
		ppid=$!
		load -o encrypt -c "$CONNS" -d "$SECS" -w 0
		wait "$ppid" || true
		echo "(this run: $(field rps) req/s; the profiler costs some)"
		if ! perf report -i "$T/perf.data" --stdio >/dev/null 2>&1; then
			echo "perf failed:"; tail -n 5 "$T/perf.log"
		fi
		echo "-- by thread (samples %)"
		perf report -i "$T/perf.data" --no-children --sort comm --stdio \
		    -g none 2>/dev/null | grep -E '^ +[0-9]' | head -n 8
		echo "-- by library"
		perf report -i "$T/perf.data" --no-children --sort dso --stdio \
		    -g none 2>/dev/null | grep -E '^ +[0-9]' | head -n 10
		echo "-- top symbols"
		perf report -i "$T/perf.data" --no-children --sort sym --stdio \
		    -g none 2>/dev/null | grep -E '^ +[0-9]' | head -n 25
	fi
fi

# --- p99 at a fixed rate
if want open; then
	echo
	echo "== open loop: encrypt at a fixed 1800 req/s, 32 connections, 10 s after 1 s warm-up"
	echo "   (latency from the scheduled send time)"
	row_head "rate"
	load -o encrypt -m open -r 1800 -c 32 -d 10 -w 1
	row "1800 req/s"
	P99_1800=$(field p99_ms)
	[ "$(field dropped)" = 0 ] || echo "dropped (could not be sent): $(field dropped)"
fi

# --- handshakes
if want handshake; then
	echo
	echo "== new connection per request (GetHealthStatus, Connection: close), ${SECS} s after 1 s warm-up"
	echo "   ECDSA P-256 certificate, TLS 1.3, X25519; the client verifies the chain"
	printf '%-20s %9s %8s %8s %6s %6s %6s %6s %11s\n' "" "conn/s" "p50 ms" \
	    "p99 ms" errors daemon client other resumed
	for mode in full resumed; do
		if [ $mode = full ]; then
			load -o health -m handshake -c 8 -t 2 -d "$SECS" -w 1
			HS=$(field hs_per_s); HSCPU=$DCPU
		else
			load -o health -m handshake -R -c 8 -t 2 -d "$SECS" -w 1
		fi
		printf '%-20s %9s %8s %8s %6s %6s %6s %6s %11s\n' "$mode" \
		    "$(field hs_per_s)" "$(field p50_ms)" "$(field p99_ms)" \
		    "$(field errors)" "$DCPU" "$(field client_cpu)" "$OCPU" \
		    "$(field resumed)/$(field handshakes)"
	done
	echo "full handshakes per second of daemon CPU: $(calc "$HS / $HSCPU" 0)" \
	    "(x $NCPU cores = $(calc "$HS / $HSCPU * $NCPU" 0)/s if the client ran elsewhere)"
fi
if [ -n "$DPID" ]; then
	daemon_stop
fi

# --- the reference: nginx with a static reply, same TLS, same loads
NGX=$(command -v nginx 2>/dev/null || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true)
NGX_KA=; NGX_HS=
if want nginx && [ -z "$NGX" ]; then
	echo
	echo "== nginx reference: skipped, nginx is not installed (apt-get install nginx-light)"
elif want nginx; then
	mkdir -p "$T/nginx"
	# an encrypt reply of the same size as the daemon's (256-byte plaintext)
	reply="{\"ciphertext\":\"$(head -c 256 /dev/zero | openssl base64 -A)\",\"initializationVector\":\"AAAAAAAAAAAAAAAA\",\"authenticationTag\":\"AAAAAAAAAAAAAAAAAAAAAA==\"}"
	cat >"$T/nginx/nginx.conf" <<NGINX
worker_processes $NCPU;
pid $T/nginx/nginx.pid;
error_log $T/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log $T/nginx/access.log;
  client_body_temp_path $T/nginx/body;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$PORT ssl reuseport;
    ssl_certificate $T/server.pem;
    ssl_certificate_key $T/server.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ciphers ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256;
    ssl_conf_command Ciphersuites TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256;
    ssl_ecdh_curve X25519:P-256:P-384;
    ssl_prefer_server_ciphers on;
    ssl_session_tickets on;
    location / { default_type application/json; return 200 '$reply'; }
  }
}
NGINX
	"$NGX" -p "$T/nginx" -e "$T/nginx/error.log" -c "$T/nginx/nginx.conf" ||
	    { echo "nginx did not start"; cat "$T/nginx/error.log"; exit 1; }
	i=0
	until ss -ltn 2>/dev/null | grep -q "127.0.0.1:$PORT "; do
		i=$((i + 1)); [ $i -le 50 ] || { echo "nginx did not listen"; exit 1; }
		sleep 0.1
	done
	NPID=$(cat "$T/nginx/nginx.pid")
	MPIDS="$NPID $(ps -o pid= --ppid "$NPID" | tr '\n' ' ')"
	echo
	echo "== the reference: nginx $("$NGX" -v 2>&1 | sed 's|.*nginx/||'), $NCPU workers, same certificate and TLS"
	echo "   settings, a static encrypt-sized reply to the same signed requests, access log on"
	row_head "nginx"
	load -o encrypt -c "$CONNS" -d "$SECS" -w 1
	row "keep-alive"
	NGX_KA=$(field rps); NGX_KACPU=$DCPU
	printf '%-20s %9s %8s %8s %6s %6s %6s %6s %11s\n' "" "conn/s" "p50 ms" \
	    "p99 ms" errors daemon client other resumed
	load -o health -m handshake -c 8 -t 2 -d "$SECS" -w 1
	printf '%-20s %9s %8s %8s %6s %6s %6s %6s %11s\n' "full handshakes" \
	    "$(field hs_per_s)" "$(field p50_ms)" "$(field p99_ms)" \
	    "$(field errors)" "$DCPU" "$(field client_cpu)" "$OCPU" \
	    "$(field resumed)/$(field handshakes)"
	NGX_HS=$(field hs_per_s); NGX_HSCPU=$DCPU
	kill -QUIT "$NPID" 2>/dev/null || true
	i=0
	while kill -0 "$NPID" 2>/dev/null && [ $i -lt 50 ]; do i=$((i + 1)); sleep 0.1; done
	NPID=; MPIDS=
	if [ -n "$ENC" ] && [ -n "$ENCCPU" ]; then
		echo "CPU per request: xksproxyd encrypt $(calc "$ENCCPU / $ENC * 1000000" 1) us" \
		    "(HSM work included), nginx static reply $(calc "$NGX_KACPU / $NGX_KA * 1000000" 1) us;" \
		    "xksproxyd encrypt req/s / nginx static req/s = $(calc "$ENC / $NGX_KA")"
	fi
	if [ -n "$HS" ] && [ -n "$HSCPU" ]; then
		echo "full handshakes per CPU-second: xksproxyd $(calc "$HS / $HSCPU" 0), nginx $(calc "$NGX_HS / $NGX_HSCPU" 0)"
	fi
fi

# --- sessions_per_token on the plain token
if want spt; then
	echo
	echo "== keep-alive encrypt against hsm.sessions_per_token (no added latency), ${SECS} s each"
	row_head "sessions_per_token"
	for spt in 1 2 4 8; do
		conf "$T/spt.conf" "$SOFTHSM_MODULE" $spt
		daemon_start "spt$spt" "$T/spt.conf"
		load -o encrypt -c "$CONNS" -d "$SECS" -w 1
		row "$spt"
		daemon_stop
	done
fi

# --- memory with idle connections
if want idle; then
	echo
	echo "== 1000 idle keep-alive TLS connections on a fresh daemon (each sent one GetHealthStatus)"
	conf "$T/idle.conf" "$SOFTHSM_MODULE" "${BENCH_SPT:-}"
	daemon_start idle "$T/idle.conf"
	sleep 0.5
	base=$(awk '/^VmHWM:/ { print $2 }' "/proc/$DPID/status")
	"$XKSLOAD" -p "$PORT" -k "$AKID" -s "$T/secret" -C "$T/server.pem" \
	    -o health -m idle -n 1000 -d 8 >"$T/idle.out" 2>&1 &
	lpid=$!
	BGPIDS="$BGPIDS $lpid"
	i=0
	until grep -q IDLE_READY "$T/idle.out" || [ $i -gt 100 ]; do
		i=$((i + 1)); sleep 0.1
	done
	sleep 1
	HWM=$(awk '/^VmHWM:/ { print $2 }' "/proc/$DPID/status")
	rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$DPID/status")
	wait "$lpid" || true
	R=$(grep '^RESULT' "$T/idle.out" || echo "RESULT failed=1")
	note "$R vmhwm_kb=$HWM base_kb=$base"
	echo "$(sed -n 's/^IDLE_READY //p' "$T/idle.out"), still open after 8 s: $(field alive), errors: $(field errors)"
	echo "VmHWM: $(calc "$base / 1024" 1) MB after start, $(calc "$HWM / 1024" 1) MB with 1000 idle connections" \
	    "(VmRSS $(calc "$rss / 1024" 1) MB; $(calc "($HWM - $base) / 1000" 1) kB per connection)"
	daemon_stop
fi

# --- 1 ms HSM latency through the shim
if want shim; then
	echo
	echo "== 1 ms added to every C_Encrypt (pkcs11/xks-shim), keep-alive encrypt, ${SECS} s each;"
	echo "   ideal = 1 token x sessions / 1 ms; probe = unauthenticated requests at 100/s on"
	echo "   2 other connections during the run (answered 401 on the event loop)"
	printf '%-5s %7s %9s %9s %7s %8s %7s | %9s %9s %9s\n' spt ideal "raw p11" \
	    "proxy" "/ideal" "p99 ms" errors "probe p50" "probe p99" "probe max"
	echo "latency 1000 C_Encrypt" >"$T/shim.ctl"
	for spt in 1 2 4 8 16; do
		conf "$T/shim.conf" "$SHIM" $spt
		daemon_start "shim$spt" "$T/shim.conf" XKS_SHIM_TARGET="$SOFTHSM_MODULE" \
		    XKS_SHIM_CONTROL="$T/shim.ctl"
		c=$((spt * 4)); [ $c -ge 16 ] || c=16
		"$XKSLOAD" -p "$PORT" -o unauth -m open -r 100 -c 2 -d "$SECS" -w 1 \
		    >"$T/probe.out" 2>&1 &
		ppid=$!
		BGPIDS="$BGPIDS $ppid"
		load -o encrypt -c $c -d "$SECS" -w 1
		PR=$R
		wait "$ppid" || true
		R=$(grep '^RESULT' "$T/probe.out" || echo "RESULT failed=1")
		note "$R probe_for_spt=$spt"
		pp50=$(field p50_ms); pp99=$(field p99_ms); pmax=$(field max_ms)
		perr=$(field errors)
		R=$PR
		daemon_stop
		XKS_SHIM_TARGET="$SOFTHSM_MODULE" XKS_SHIM_CONTROL="$T/shim.ctl" \
		    p11 -m "$SHIM" -o encrypt -n $spt -d 2
		raw=$(field rate)
		R=$PR
		ideal=$((spt * 1000))
		ratio=$(calc "$(field rps) / $ideal")
		case $SHIM_WORST in
		'') SHIM_WORST=$ratio ;;
		*) SHIM_WORST=$(awk "BEGIN { print ($ratio < $SHIM_WORST) ? $ratio : $SHIM_WORST }") ;;
		esac
		printf '%-5s %7s %9s %9s %7s %8s %7s | %9s %9s %9s\n' $spt $ideal \
		    "$raw" "$(field rps)" "$ratio" "$(field p99_ms)" \
		    "$(( ${perr:-1} + $(field errors | sed 's/^$/1/') ))" \
		    "$pp50" "$pp99" "$pmax"
	done
fi

# --- the goals of issue 8
echo
echo "== goals"
goal() {  # goal TEXT VALUE OP LIMIT
	if [ -z "$2" ]; then
		printf '%-58s %10s\n' "$1" "not run"
	elif awk "BEGIN { exit !($2 $3 $4) }"; then
		printf '%-58s %10s  met\n' "$1" "$2"
	else
		printf '%-58s %10s  MISSED\n' "$1" "$2"
	fi
}
r=; [ -n "$RAW1" ] && [ -n "$ENC" ] && r=$(calc "$ENC / $RAW1")
[ -z "$RATIO_MED" ] || r=$RATIO_MED
goal "encrypt keep-alive / raw 1-session PKCS#11, median (>= 0.50)" "$r" '>=' 0.5
goal "p99 ms at 1800 encrypt req/s (<= 2)" "$P99_1800" '<=' 2
goal "full TLS handshakes/s, ECDSA P-256 (>= 2000)" "$HS" '>=' 2000
m=; [ -n "$HWM" ] && m=$(calc "$HWM / 1024" 1)
goal "peak RSS MB, 1000 idle TLS connections (<= 40)" "$m" '<=' 40
goal "1 ms HSM: worst proxy/ideal over spt 1..16 (>= 0.80)" "$SHIM_WORST" '>=' 0.8
