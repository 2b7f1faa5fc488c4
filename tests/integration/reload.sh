#!/bin/sh
# Reload without downtime: while curl streams requests signed with credential
# A (keep-alive and fresh connections), 20 SIGHUP reloads add and remove
# credential B and an alias path, and change hsm.sessions_per_token (a new
# HSM pool is built beside the running one each time).  Zero failed requests allowed.  Then: a
# broken config keeps the old one serving, a removed credential is refused,
# an alias path is served, a new certificate is served.
. "${top_srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
xks_init
xks_standard
xks_start "$T/xksproxy.conf"
P=/example/kms/xks/v1
HB='{"requestMetadata":{"kmsRequestId":"rq-reload","kmsOperation":"KmsHealthCheck"}}'
MD='"requestMetadata":{"kmsRequestId":"rq-r","kmsOperation":"Encrypt","awsPrincipalArn":"a","kmsKeyArn":"k"}'
EB="{$MD,\"plaintext\":\"aGVsbG8gd29ybGQ=\",\"encryptionAlgorithm\":\"AES_GCM\"}"
CURLA="curl -sS --cacert $T/server.pem --aws-sigv4 aws:amz:us-east-1:kms-xks-proxy --user $A_AKID:$A_SECRET -H Content-Type:application/json"

# stream 1: keep-alive, 25 requests per connection; stream 2: a new connection each
stream_ka() {
	end=$1
	while [ "$(date +%s)" -lt "$end" ]; do
		set --
		for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25; do
			set -- "$@" -o /dev/null "https://localhost:$PORT$P/keys/demo-key/encrypt"
		done
		$CURLA --data-binary "$EB" -w '%{http_code}\n' "$@" || echo "curl-exit-$?"
	done
}
stream_new() {
	end=$1
	while [ "$(date +%s)" -lt "$end" ]; do
		$CURLA --data-binary "$HB" -o /dev/null -w '%{http_code}\n' "https://localhost:$PORT$P/health" || echo "curl-exit-$?"
	done
}
END=$(( $(date +%s) + 12 ))
stream_ka $END > "$T/ka.out" 2>&1 &
S1=$!
stream_new $END > "$T/new.out" 2>&1 &
S2=$!
cp "$T/xksproxy.conf" "$T/base.conf"
i=0
while [ $i -lt 20 ]; do
	if [ $((i % 2)) -eq 0 ]; then
		# version without B, with an alias path, and a new HSM pool size
		python3 - "$T/base.conf" "$T/xksproxy.conf" <<'PY'
import re, sys
s = open(sys.argv[1]).read()
s = re.sub(r',\s*\{ "access_key_id": "[A-Z2-7]+", "secret_access_key": "[^"]+" \}\s*\]', ' ]', s, count=1)
s = s.replace('"/example/kms/xks/v1"', '"/example/kms/xks/v1", "/alias/kms/xks/v1"')
s = s.replace('"sessions_per_token": 2', '"sessions_per_token": 3')
open(sys.argv[2], 'w').write(s)
PY
	else
		cp "$T/base.conf" "$T/xksproxy.conf"
	fi
	kill -HUP "$DAEMON_PID"
	sleep 0.4
	i=$((i + 1))
done
wait $S1 $S2
total=$(cat "$T/ka.out" "$T/new.out" | wc -l)
bad=$(cat "$T/ka.out" "$T/new.out" | grep -vc '^200$' || true)
echo "# $total requests during 20 reloads, $bad not 200"
[ "$total" -gt 200 ] && ok "stream ran ($total requests)" || not_ok "too few requests: $total"
expect_eq "failed or reset requests during 20 reloads" "$bad" 0
expect_eq "reloads logged" "$(grep -c 'reloaded ' "$T/daemon.log")" 20
expect_eq "HSM pools rebuilt beside the running one" "$(grep -c 'starting a new HSM pool' "$T/daemon.log")" 20
[ "$(grep -c 'old HSM pool retired' "$T/daemon.log")" -ge 19 ] && ok "old HSM pools retired" ||
    not_ok "old HSM pools retired: $(grep -c 'old HSM pool retired' "$T/daemon.log")"

# TLS sessions survive reloads: tickets are made with a process-wide key ring
for v in tls1_2 tls1_3; do
	(sleep 0.5) | openssl s_client -connect "127.0.0.1:$PORT" -servername localhost -CAfile "$T/server.pem" \
	    -$v -sess_out "$T/sess.$v" >/dev/null 2>&1 || true
done
kill -HUP "$DAEMON_PID"; sleep 0.5
for v in tls1_2 tls1_3; do
	(sleep 0.3) | openssl s_client -connect "127.0.0.1:$PORT" -servername localhost -CAfile "$T/server.pem" \
	    -$v -sess_in "$T/sess.$v" 2>/dev/null | grep -q '^Reused,' &&
	    ok "$v session resumed across a reload" || not_ok "$v session not resumed across a reload"
done

# last version is base (B present, no alias); switch to the alias version
python3 - "$T/base.conf" "$T/xksproxy.conf" <<'PY'
import re, sys
s = open(sys.argv[1]).read()
s = re.sub(r',\s*\{ "access_key_id": "[A-Z2-7]+", "secret_access_key": "[^"]+" \}\s*\]', ' ]', s, count=1)
s = s.replace('"/example/kms/xks/v1"', '"/example/kms/xks/v1", "/alias/kms/xks/v1"')
open(sys.argv[2], 'w').write(s)
PY
kill -HUP "$DAEMON_PID"; sleep 0.5
xks_curl "$B_AKID" "$B_SECRET" $P/health "$HB"; expect "removed credential B refused" 401 AuthenticationFailedException
xks_curl "$A_AKID" "$A_SECRET" /alias/kms/xks/v1/health "$HB"; expect "alias path served" 200

# a broken config: the old snapshot keeps serving, the log names the key
sed 's/"worker_threads"/"worker_thread"/' "$T/xksproxy.conf" > "$T/broken" && cp "$T/broken" "$T/xksproxy.conf"
kill -HUP "$DAEMON_PID"; sleep 0.5
grep -q 'reload failed, keeping the running configuration: .*worker_thread: unknown key' "$T/daemon.log" &&
    ok "broken reload logged with the key" || not_ok "broken reload not logged"
xks_curl "$A_AKID" "$A_SECRET" /alias/kms/xks/v1/health "$HB"; expect "still serving after a broken reload" 200
kill -0 "$DAEMON_PID" && ok "daemon alive" || not_ok "daemon died"

# a new certificate is served after reload
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/new.key" \
    -out "$T/new.pem" -days 2 -subj "/CN=renewed.example" -addext "subjectAltName=DNS:localhost" 2>/dev/null
python3 - "$T/base.conf" "$T/xksproxy.conf" "$T" <<'PY'
import sys
s = open(sys.argv[1]).read().replace(sys.argv[3] + '/server.pem', sys.argv[3] + '/new.pem').replace(sys.argv[3] + '/server.key', sys.argv[3] + '/new.key')
open(sys.argv[2], 'w').write(s)
PY
kill -HUP "$DAEMON_PID"; sleep 0.5
openssl s_client -connect "127.0.0.1:$PORT" -servername localhost </dev/null 2>/dev/null | grep -q 'subject=CN = renewed.example' &&
    ok "new certificate served after reload" || not_ok "old certificate still served"
xks_stop
expect_eq "clean exit" "$STOP_RC" 0
xks_done
