#!/bin/sh
# The front door from outside: routing errors, methods, body limits, TLS
# versions, the load-balancer check, config errors, graceful stop.
. "${top_srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
xks_init
xks_standard
xks_start "$T/xksproxy.conf"
P=/example/kms/xks/v1
HB='{"requestMetadata":{"kmsRequestId":"rq-1","kmsOperation":"KmsHealthCheck"}}'

xks_curl "$A_AKID" "$A_SECRET" /nowhere/kms/xks/v1/health "$HB"
expect "unknown path" 404 InvalidUriPathException
xks_curl "$A_AKID" "$A_SECRET" $P/keys/demo-key/sign "$HB"
expect "unknown operation" 404 InvalidUriPathException
xks_curl "$A_AKID" "$A_SECRET" $P/health "$HB"
expect "health with credential A" 200
expect_eq "health fleet size" "$(json xksProxyFleetSize)" 1

# GET on every operation URI: 405 with Allow: POST
for u in $P/health $P/keys/demo-key/metadata $P/keys/demo-key/encrypt $P/keys/demo-key/decrypt; do
	STATUS=$(curl -sS --cacert "$T/server.pem" -o "$T/resp" -D "$T/hdr" -w '%{http_code}' "https://localhost:$PORT$u")
	BODY=$(cat "$T/resp")
	expect "GET $u" 405 UnsupportedOperationException
	grep -qi '^Allow: POST' "$T/hdr" && ok "GET $u: Allow: POST" || not_ok "GET $u: no Allow header"
	grep -qi '^Content-Type: application/json' "$T/hdr" && ok "GET $u: JSON error body" || not_ok "GET $u: content type"
done

# unsigned request
STATUS=$(curl -sS --cacert "$T/server.pem" -H 'Content-Type: application/json' \
    --data-binary "$HB" -o "$T/resp" -w '%{http_code}' "https://localhost:$PORT$P/health")
BODY=$(cat "$T/resp")
expect "unsigned request" 401 AuthenticationFailedException

# a 3 MB body is refused before it is read (curl sends Expect: 100-continue)
head -c 3000000 /dev/zero | tr '\0' 'a' > "$T/big"
STATUS=$(curl -sS --cacert "$T/server.pem" -H 'Content-Type: application/json' \
    --data-binary @"$T/big" -o "$T/resp" -w '%{http_code}' "https://localhost:$PORT$P/health") || STATUS=000
BODY=$(cat "$T/resp" 2>/dev/null || true)
expect "3 MB body" 413 ValidationException
# the same without Expect: the server answers and closes without reading it
STATUS=$(curl -sS --cacert "$T/server.pem" -H 'Content-Type: application/json' -H 'Expect:' \
    --data-binary @"$T/big" -o "$T/resp" -w '%{http_code}' "https://localhost:$PORT$P/health" 2>/dev/null) || true
case "$STATUS" in 413) ok "3 MB body without Expect: 413";; *) not_ok "3 MB body without Expect: got $STATUS";; esac

# TLS versions: 1.0 and 1.1 refused, 1.2 and 1.3 accepted with the XKS suites
for v in tls1 tls1_1; do
	if openssl s_client -connect "127.0.0.1:$PORT" -$v -cipher 'DEFAULT@SECLEVEL=0' </dev/null >"$T/s" 2>&1; then
		not_ok "$v accepted"
	else
		ok "$v refused"
	fi
done
openssl s_client -connect "127.0.0.1:$PORT" -tls1_2 -cipher ECDHE-ECDSA-AES256-GCM-SHA384 </dev/null >"$T/s" 2>&1 &&
    grep -q 'Cipher is ECDHE-ECDSA-AES256-GCM-SHA384' "$T/s" && ok "TLS 1.2 ECDHE-ECDSA-AES256-GCM-SHA384" || not_ok "TLS 1.2"
for cs in TLS_AES_256_GCM_SHA384 TLS_CHACHA20_POLY1305_SHA256; do
	openssl s_client -connect "127.0.0.1:$PORT" -tls1_3 -ciphersuites $cs </dev/null >"$T/s" 2>&1 &&
	    grep -q "Cipher is $cs" "$T/s" && ok "TLS 1.3 $cs" || not_ok "TLS 1.3 $cs"
done
if openssl s_client -connect "127.0.0.1:$PORT" -tls1_2 -cipher AES256-SHA </dev/null >"$T/s" 2>&1; then
	not_ok "TLS 1.2 non-ECDHE cipher accepted"
else
	ok "TLS 1.2 non-ECDHE cipher refused"
fi

# malformed HTTP gets a JSON 400 and the connection closes
printf 'POST /example/kms/xks/v1/health HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab' |
    openssl s_client -connect "127.0.0.1:$PORT" -quiet 2>/dev/null >"$T/raw" || true
head -1 "$T/raw" | grep -q '^HTTP/1.1 400 ' && ok "two Content-Length: 400" || not_ok "two Content-Length: $(head -1 "$T/raw")"

# the load-balancer check (plain HTTP), and the same path over HTTPS
STATUS=$(curl -sS -o /dev/null -w '%{http_code}' "http://127.0.0.1:$LB_PORT/ping")
expect_eq "load balancer check on health_listen" "$STATUS" 200
STATUS=$(curl -sS -o /dev/null -w '%{http_code}' "http://127.0.0.1:$LB_PORT/other")
expect_eq "other path on health_listen" "$STATUS" 404
STATUS=$(curl -sS --cacert "$T/server.pem" -o /dev/null -w '%{http_code}' "https://localhost:$PORT/ping")
expect_eq "load balancer check over HTTPS" "$STATUS" 200

# keep-alive: two requests on one connection
curl -sS --cacert "$T/server.pem" --aws-sigv4 "aws:amz:us-east-1:kms-xks-proxy" \
    --user "$A_AKID:$A_SECRET" -H 'Content-Type: application/json' --data-binary "$HB" \
    -o /dev/null -o /dev/null -w '%{http_code} %{num_connects}\n' \
    "https://localhost:$PORT$P/health" "https://localhost:$PORT$P/health" > "$T/ka"
expect_eq "keep-alive reuses the connection" "$(tr '\n' ' ' < "$T/ka")" "200 1 200 0 "

# SIGTERM with a request in flight: the request completes, exit status 0
$XKSCLIENT "https://localhost:$PORT$P/health" --akid "$A_AKID" --secret "$A_SECRET" \
    --cacert "$T/server.pem" --body "$HB" --slow-body 1 >"$T/inflight" 2>"$T/inflight.err" &
CPID=$!
i=0; while ! grep -q SENT-HALF "$T/inflight.err" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
xks_stop
wait $CPID || true
expect_eq "request in flight during SIGTERM completes" "$(cut -c1-3 "$T/inflight")" 200
expect_eq "exit status after SIGTERM" "$STOP_RC" 0
grep -q 'draining' "$T/daemon.log" && ok "drain logged" || not_ok "drain not logged"

# -t names a misspelt key with its path
sed 's/"sessions_per_token"/"sesions_per_token"/' "$T/xksproxy.conf" > "$T/bad.conf"
if "$XKSPROXYD" -t -c "$T/bad.conf" >"$T/t.out" 2>&1; then
	not_ok "-t accepted a misspelt key"
else
	grep -q "bad.conf: hsm.sesions_per_token: unknown key" "$T/t.out" && ok "-t names the misspelt key" ||
	    not_ok "-t message: $(cat "$T/t.out")"
fi
"$XKSPROXYD" -t -c "$T/xksproxy.conf" >"$T/t.out" 2>&1 && ok "-t accepts the good config" || not_ok "-t: $(cat "$T/t.out")"
"$XKSPROXYD" --version | grep -q '^xksproxyd ' && ok "--version" || not_ok "--version"
xks_done
