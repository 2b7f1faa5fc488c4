# lib.sh -- shared by the integration tests: a throwaway SoftHSMv2 token, a
# generated certificate and credential, the real daemon on a free loopback
# port, and curl --aws-sigv4 as the independent client.
# Exit 77 (skip) only when a tool is missing; never to hide a failure.
set -eu

: "${top_builddir:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${top_srcdir:=$top_builddir}"
XKSPROXYD="$top_builddir/xksproxyd"
XKSCTL="$top_builddir/xksctl"
XKSCLIENT="python3 $top_srcdir/tests/integration/xksclient.py"
SOFTHSM_MODULE=${SOFTHSM_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
PASS=0
FAIL=0

xks_require() {
	for t in "$@"; do
		command -v "$t" >/dev/null 2>&1 || { echo "SKIP: $t not installed"; exit 77; }
	done
	[ -r "$SOFTHSM_MODULE" ] || { echo "SKIP: SoftHSMv2 not installed"; exit 77; }
}

xks_init() {
	xks_require curl openssl softhsm2-util pkcs11-tool python3
	T=$(mktemp -d "${TMPDIR:-/tmp}/xks-test.XXXXXX")
	DAEMON_PID=
	trap xks_cleanup EXIT INT TERM
}

xks_cleanup() {
	rc=$?
	if [ -n "${DAEMON_PID:-}" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
		kill -TERM "$DAEMON_PID" 2>/dev/null || true
		wait "$DAEMON_PID" 2>/dev/null || true
	fi
	if [ $rc -ne 0 ] && [ -f "$T/daemon.log" ]; then
		echo "--- daemon log (last 40 lines)"
		tail -n 40 "$T/daemon.log"
	fi
	rm -rf "$T"
	exit $rc
}

# A free TCP port on loopback.
xks_free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# xks_token LABEL...: tokens with demo-key and xks-health; sets SOFTHSM2_CONF, PIN_FILE
xks_tokens() {
	sh "$top_srcdir/scripts/provision-softhsm.sh" "$T/hsm" "$@" >/dev/null
	SOFTHSM2_CONF="$T/hsm/softhsm2.conf"
	export SOFTHSM2_CONF
	PIN_FILE="$T/hsm/hsm.pin"
	PIN=$(cat "$PIN_FILE")
}

# xks_keygen TOKEN LABEL [pkcs11-tool options]: another AES-256 key
xks_keygen() {
	tok=$1; lab=$2; shift 2
	pkcs11-tool --module "$SOFTHSM_MODULE" --token-label "$tok" --login \
	    --pin "$PIN" --keygen --key-type AES:32 --label "$lab" "$@" >/dev/null 2>&1
}

# xks_cert NAME [CN]: EC P-256 self-signed, SAN localhost + 127.0.0.1
xks_cert() {
	cn=${2:-localhost}
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
	    -keyout "$T/$1.key" -out "$T/$1.pem" -days 2 -subj "/CN=$cn" \
	    -addext "subjectAltName=DNS:$cn,DNS:localhost,IP:127.0.0.1" 2>/dev/null
}

# xks_cred VAR: sets VAR_AKID and VAR_SECRET (KMS formats)
xks_cred() {
	akid=$(python3 -c 'import secrets; print("".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(26)))')
	secret=$(openssl rand -base64 32)
	eval "${1}_AKID=\$akid; ${1}_SECRET=\$secret"
}

# how many daemons have logged that they are ready
xks_ready_count() {
	_n=$(grep -c ' ready: ' "$T/daemon.log" 2>/dev/null || true)
	echo "${_n:-0}"
}

# xks_start CONF: run the daemon, wait until it answers
xks_start() {
	conf=$1
	extra=
	[ "$(id -u)" = 0 ] && extra=--allow-root
	# wait for a ready line of this daemon, not of an earlier one
	before=$(xks_ready_count)
	${XKS_VALGRIND:-} "$XKSPROXYD" -c "$conf" $extra >>"$T/daemon.log" 2>&1 &
	DAEMON_PID=$!
	i=0
	while [ "$(xks_ready_count)" -le "$before" ]; do
		i=$((i + 1))
		if [ $i -gt 100 ] || ! kill -0 "$DAEMON_PID" 2>/dev/null; then
			echo "FAIL: daemon did not start"; cat "$T/daemon.log"; exit 1
		fi
		sleep 0.1
	done
}

# xks_stop: SIGTERM, wait, sets STOP_RC
xks_stop() {
	kill -TERM "$DAEMON_PID"
	STOP_RC=0
	wait "$DAEMON_PID" || STOP_RC=$?
	DAEMON_PID=
}

# xks_curl AKID SECRET PATH BODY [curl args]: sets STATUS and BODY
xks_curl() {
	_akid=$1; _sec=$2; _path=$3; _body=$4; shift 4
	STATUS=$(curl -sS --cacert "$T/server.pem" \
	    --aws-sigv4 "aws:amz:us-east-1:kms-xks-proxy" --user "$_akid:$_sec" \
	    -H 'Content-Type: application/json' --data-binary "$_body" \
	    -o "$T/resp" -w '%{http_code}' "$@" "https://localhost:$PORT$_path") || STATUS=000
	BODY=$(cat "$T/resp" 2>/dev/null || true)
}

# json FIELD: a field of $BODY
json() {
	printf '%s' "$BODY" | python3 -c 'import json,sys
try:
    v = json.load(sys.stdin)
    for k in sys.argv[1].split("."):
        v = v[int(k)] if isinstance(v, list) else v[k]
    print(v if not isinstance(v, (dict, list)) else json.dumps(v))
except Exception:
    print("<none>")' "$1"
}

ok() { PASS=$((PASS + 1)); echo "ok - $*"; }
not_ok() { FAIL=$((FAIL + 1)); echo "not ok - $*"; }

# expect WHAT STATUS [ERRORNAME]: checks $STATUS and $BODY's errorName
expect() {
	what=$1; st=$2; en=${3:-}
	got_en=$(json errorName)
	if [ "$STATUS" = "$st" ] && { [ -z "$en" ] || [ "$got_en" = "$en" ]; }; then
		ok "$what: $st${en:+ $en}"
	else
		not_ok "$what: expected $st${en:+ $en}, got $STATUS $got_en ($BODY)"
	fi
}

# expect_eq WHAT GOT WANT
expect_eq() {
	if [ "$2" = "$3" ]; then ok "$1"; else not_ok "$1: got '$2', want '$3'"; fi
}

xks_done() {
	echo "$PASS passed, $FAIL failed"
	[ "$FAIL" -eq 0 ]
}

# A standard config: one key store at /example/kms/xks/v1 with credential A
# and B, a second key store at /other/kms/xks/v1 with credential C.
xks_config() {
	cat > "$T/xksproxy.conf" <<CONF
{
  "listen": [{ "address": "127.0.0.1", "port": $PORT }],
  "worker_threads": 2,
  "tls": { "certificates": [{ "certificate_file": "$T/server.pem",
                              "private_key_file": "$T/server.key" }]${TLS_EXTRA:-} },
  "health_listen": { "address": "127.0.0.1", "port": $LB_PORT, "path": "/ping" },
  "hsm": { "module": "${HSM_MODULE:-$SOFTHSM_MODULE}", "tokens": [${HSM_TOKENS:-"\"pkcs11:token=xks-a\""}],
           "pin_file": "$PIN_FILE", "sessions_per_token": 2,
           "health_key": "xks-health", "timeout_ms": ${HSM_TIMEOUT_MS:-200} },
  "health": { "interval_seconds": ${HEALTH_INTERVAL:-30} },
  "keystores": [
    { "paths": ["/example/kms/xks/v1"${EXTRA_PATHS:-}],
      "credentials": [
        { "access_key_id": "$A_AKID", "secret_access_key": "$A_SECRET" },
        { "access_key_id": "$B_AKID", "secret_access_key": "$B_SECRET"${B_NOT_AFTER:-} }
      ],
      "keys": [${KEYS:-"\"*\""}] },
    { "paths": ["/other/kms/xks/v1"],
      "credentials": [ { "access_key_id": "$C_AKID", "secret_access_key": "$C_SECRET" } ],
      "keys": ["demo-key"] }
  ],
  "limits": { "max_body_bytes": 65536, "header_timeout_ms": ${HEADER_TIMEOUT_MS:-5000},
              "idle_timeout_ms": ${IDLE_TIMEOUT_MS:-60000} },
  "log": { "level": "${LOG_LEVEL:-info}", "format": "${LOG_FORMAT:-text}" }
}
CONF
}

# Everything for a standard run: token, certificate, credentials, config.
xks_standard() {
	xks_tokens xks-a "$@"
	xks_cert server
	xks_cred A; xks_cred B; xks_cred C
	PORT=$(xks_free_port)
	LB_PORT=$(xks_free_port)
	xks_config
}

# xks_key TOKEN LABEL HEX [attr=0|1 ...]: an AES key with exact attributes
xks_key() {
	_t=$1; _l=$2; _h=$3; shift 3
	"$top_builddir/tests/p11key" "$SOFTHSM_MODULE" "$_t" "$PIN_FILE" "$_l" "$_h" "$@"
}
