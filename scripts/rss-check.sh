#!/bin/sh
# rss-check.sh -- memory stability of a running daemon: VmRSS (and threads,
# open file descriptors) after a warm-up of 1000 requests, after each of
# three more rounds of 1000, across 100 reloads (SIGHUP, alternating two
# configs that differ in credentials, paths and hsm.sessions_per_token, so
# that every reload also builds a new HSM pool and retires the old one),
# and after 1000 requests more.
#
#   scripts/rss-check.sh [-b BUILDDIR] [-r RELOADS] [-n REQUESTS]
#
# A round: encrypts with AAD (keep-alive), decrypts, metadata, health,
# unsigned requests (401), and new TLS connections.  Prints the figures;
# exits 1 when RSS grew more than 1024 kB over the three rounds after the
# warm-up, or more than 4096 kB from before to after the reloads, or when
# threads or descriptors did not come back to their level before.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
build=$PWD
RELOADS=100
N=1000
while getopts b:r:n: o; do
	case $o in
	b) build=$(cd "$OPTARG" && pwd) ;;
	r) RELOADS=$OPTARG ;;
	n) N=$OPTARG ;;
	*) echo "usage: $0 [-b BUILDDIR] [-r RELOADS] [-n REQUESTS]" >&2; exit 2 ;;
	esac
done
top_builddir=$build
top_srcdir=$top
. "$top/tests/integration/lib.sh"
xks_init
xks_standard
xks_start "$T/xksproxy.conf"
P=/example/kms/xks/v1
MD='"requestMetadata":{"kmsRequestId":"rq-rss","kmsOperation":"Encrypt","awsPrincipalArn":"arn:aws:iam::111122223333:user/r","kmsKeyArn":"k"}'
AAD=$(printf 'rss aad' | base64)
ENC="{$MD,\"plaintext\":\"$(head -c 3000 /dev/urandom | base64 -w0)\",\"encryptionAlgorithm\":\"AES_GCM\",\"additionalAuthenticatedData\":\"$AAD\",\"ciphertextDataIntegrityValueAlgorithm\":\"SHA_256\"}"
xks_curl "$A_AKID" "$A_SECRET" $P/keys/demo-key/encrypt "$ENC"
[ "$STATUS" = 200 ] || { echo "encrypt failed: $STATUS $BODY"; exit 1; }
DEC="{$MD,\"ciphertext\":\"$(json ciphertext)\",\"encryptionAlgorithm\":\"AES_GCM\",\"initializationVector\":\"$(json initializationVector)\",\"authenticationTag\":\"$(json authenticationTag)\",\"ciphertextMetadata\":\"$(json ciphertextMetadata)\",\"additionalAuthenticatedData\":\"$AAD\"}"
HB='{"requestMetadata":{"kmsRequestId":"rq-rss-h","kmsOperation":"KmsHealthCheck"}}'

# many URL+output pairs on one keep-alive connection
urls() { # COUNT PATH
	i=0
	while [ $i -lt "$1" ]; do
		printf 'url = "https://localhost:%s%s"\noutput = "/dev/null"\n' "$PORT" "$2"
		i=$((i + 1))
	done
}
signed() { # COUNT PATH BODY
	urls "$1" "$2" > "$T/urls"
	curl -sS --cacert "$T/server.pem" --aws-sigv4 "aws:amz:us-east-1:kms-xks-proxy" \
	    --user "$A_AKID:$A_SECRET" -H 'Content-Type: application/json' \
	    --data-binary "$3" -w '%{http_code}\n' -K "$T/urls" >> "$T/codes"
}
# round TOTAL: TOTAL requests in the mix above
round() {
	n=$1
	: > "$T/codes"
	signed $((n * 40 / 100)) $P/keys/demo-key/encrypt "$ENC"
	signed $((n * 25 / 100)) $P/keys/demo-key/decrypt "$DEC"
	signed $((n * 15 / 100)) $P/keys/demo-key/metadata "{$MD}"
	signed $((n * 10 / 100)) $P/health "$HB"
	urls $((n * 5 / 100)) $P/health > "$T/urls"
	curl -sS --cacert "$T/server.pem" -H 'Content-Type: application/json' \
	    --data-binary "$HB" -w '%{http_code}\n' -K "$T/urls" >> "$T/codes"
	i=0
	while [ $i -lt $((n * 5 / 100)) ]; do
		curl -sS --cacert "$T/server.pem" --aws-sigv4 "aws:amz:us-east-1:kms-xks-proxy" \
		    --user "$A_AKID:$A_SECRET" -H 'Content-Type: application/json' \
		    --data-binary "$HB" -o /dev/null -w '%{http_code}\n' "https://localhost:$PORT$P/health" >> "$T/codes"
		i=$((i + 1))
	done
	want=$((n * 95 / 100))
	got=$(grep -c '^200$' "$T/codes" || true)
	[ "$got" -eq "$want" ] || { echo "round: $got of $want signed requests answered 200"; sort "$T/codes" | uniq -c; exit 1; }
	[ "$(grep -c '^401$' "$T/codes" || true)" -eq $((n * 5 / 100)) ] || { echo "round: unsigned requests not all 401"; exit 1; }
}
rss() { awk '/^VmRSS/ { print $2 }' "/proc/$DAEMON_PID/status"; }
threads() { awk '/^Threads/ { print $2 }' "/proc/$DAEMON_PID/status"; }
fds() { ls "/proc/$DAEMON_PID/fd" | wc -l; }
report() { printf '%-34s VmRSS %6s kB  threads %3s  fds %4s\n' "$1" "$(rss)" "$(threads)" "$(fds)"; }

report "started"
round "$N"
sleep 0.5
report "after warm-up ($N requests)"
R0=$(rss); TH0=$(threads); FD0=$(fds)
for k in 1 2 3; do
	round "$N"
	sleep 0.5
	report "after $((N * (k + 1))) requests"
done
R1=$(rss)

# 100 reloads, alternating two configs; each one changes the HSM pool
cp "$T/xksproxy.conf" "$T/conf.a"
python3 - "$T/conf.a" "$T/conf.b" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c['hsm']['sessions_per_token'] = 3
c['keystores'][0]['paths'].append('/alias/kms/xks/v1')
c['keystores'][0]['credentials'] = c['keystores'][0]['credentials'][:1]
json.dump(c, open(sys.argv[2], 'w'), indent=1)
PY
reloaded() { grep -c ' reloaded \|"msg":"reloaded ' "$T/daemon.log" || true; }
base=$(reloaded)
RB=$(rss)
i=1
while [ $i -le "$RELOADS" ]; do
	if [ $((i % 2)) -eq 1 ]; then cp "$T/conf.b" "$T/xksproxy.conf"; else cp "$T/conf.a" "$T/xksproxy.conf"; fi
	kill -HUP "$DAEMON_PID"
	w=0
	while [ "$(reloaded)" -lt $((base + i)) ]; do
		w=$((w + 1))
		[ $w -lt 100 ] || { echo "reload $i not done after 10 s"; tail -5 "$T/daemon.log"; exit 1; }
		sleep 0.1
	done
	# a request on the new pool lets the old one retire
	xks_curl "$A_AKID" "$A_SECRET" $P/keys/demo-key/encrypt "$ENC"
	[ "$STATUS" = 200 ] || { echo "encrypt after reload $i: $STATUS $BODY"; exit 1; }
	case $i in 10|50|$RELOADS) sleep 0.5; report "after $i reloads";; esac
	i=$((i + 1))
done
sleep 1
report "after $RELOADS reloads, 1 s later"
R2=$(rss)
round "$N"
sleep 0.5
report "after $N more requests"
R3=$(rss); TH3=$(threads); FD3=$(fds)
xks_stop
echo "daemon exit status: $STOP_RC; HSM pools built by reloads: $(grep -c 'starting a new HSM pool' "$T/daemon.log" || true)," \
    "retired: $(grep -c 'old HSM pool retired' "$T/daemon.log" || true)"
echo "growth over $((3 * N)) requests after warm-up: $((R1 - R0)) kB;" \
    "across $RELOADS reloads: $((R2 - RB)) kB; end vs warm-up: $((R3 - R0)) kB;" \
    "threads $TH0 -> $TH3, fds $FD0 -> $FD3"
rc=0
[ $((R1 - R0)) -le 1024 ] || { echo "FAIL: RSS grew $((R1 - R0)) kB over $((3 * N)) requests"; rc=1; }
[ $((R2 - RB)) -le 4096 ] || { echo "FAIL: RSS grew $((R2 - RB)) kB across $RELOADS reloads"; rc=1; }
[ "$TH3" -eq "$TH0" ] || { echo "FAIL: threads $TH0 -> $TH3"; rc=1; }
[ "$FD3" -eq "$FD0" ] || { echo "FAIL: descriptors $FD0 -> $FD3"; rc=1; }
[ "$STOP_RC" -eq 0 ] || rc=1
[ $rc -eq 0 ] && echo "rss-check: stable"
exit $rc
