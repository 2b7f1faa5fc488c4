#!/bin/sh
# xksctl end to end: "credential new" (KMS formats, the 0600 secret file,
# the console JSON, both snippets accepted verbatim by the daemon) and
# "probe" (passing against a healthy daemon; failing with a credential not
# in the config, a removed credential, a wrong path and a stopped HSM;
# --same-keys-as through an alias path; --json).
. "${top_srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
xks_init
[ -x "$XKSCTL" ] || { echo "FAIL: $XKSCTL is not built"; exit 1; }
P=/example/kms/xks/v1

# run CMD...: runs it (lib.sh has set -e) and sets RC
run() { RC=0; "$@" || RC=$?; }

# jcheck PYTHON-EXPR < JSON: prints "ok" when the expression holds for j
jcheck() {
	python3 -c 'import json,sys
try:
    j = json.load(sys.stdin)
    print("ok" if eval(sys.argv[1]) else "no: " + json.dumps(j)[:300])
except Exception as e:
    print("error: %s" % e)' "$1"
}

# --- credential new: formats
run "$XKSCTL" credential new --path $P >"$T/cred-a.txt" 2>"$T/cred-a.err"
expect_eq "credential new: exit 0" $RC 0
expect_eq "credential new: two lines on stdout" "$(wc -l <"$T/cred-a.txt")" 2
A_AKID=$(sed -n 's/.*"access_key_id": *"\([A-Z2-7]*\)".*/\1/p' "$T/cred-a.txt" | head -1)
expect_eq "access key id is 26 of A-Z2-7" "$(printf '%s\n' "$A_AKID" | grep -Ec '^[A-Z2-7]{26}$')" 1
expect_eq "line 1 is a credentials entry with exactly access_key_id, secret_access_key" \
    "$(sed -n 1p "$T/cred-a.txt" | jcheck 'sorted(j) == ["access_key_id", "secret_access_key"]')" ok
A_SECRET=$(sed -n 1p "$T/cred-a.txt" | python3 -c 'import json,sys; print(json.load(sys.stdin)["secret_access_key"])')
expect_eq "secret is Base64 of 32 bytes" "$(printf %s "$A_SECRET" | python3 -c 'import base64,sys; print(len(base64.b64decode(sys.stdin.read(), validate=True)))')" 32
expect_eq "console JSON, exactly" "$(sed -n 2p "$T/cred-a.txt")" \
    "{\"XksProxyUriPath\": \"$P\", \"XksProxyAuthenticationCredential\": {\"AccessKeyId\": \"$A_AKID\", \"RawSecretAccessKey\": \"$A_SECRET\"}}"
expect_eq "console JSON parses with exactly the KMS keys" \
    "$(sed -n 2p "$T/cred-a.txt" | jcheck 'sorted(j) == ["XksProxyAuthenticationCredential", "XksProxyUriPath"] and sorted(j["XksProxyAuthenticationCredential"]) == ["AccessKeyId", "RawSecretAccessKey"]')" ok
X_AKID=$("$XKSCTL" credential new 2>/dev/null | sed -n 's/.*"access_key_id": *"\([A-Z2-7]*\)".*/\1/p')
[ -n "$X_AKID" ] && [ "$X_AKID" != "$A_AKID" ] && ok "a second run draws another key id" || not_ok "second key id '$X_AKID'"
expect_eq "without --path: the placeholder path" \
    "$("$XKSCTL" credential new 2>/dev/null | sed -n 2p | jcheck 'j["XksProxyUriPath"] == "/example/kms/xks/v1"')" ok
run "$XKSCTL" credential new --path /not/a/xks/path >/dev/null 2>&1
expect_eq "credential new: a bad --path is a usage error" $RC 2

# --- credential new --output: the secret file
run "$XKSCTL" credential new --path $P --output "$T/secret-b" >"$T/cred-b.txt" 2>/dev/null
expect_eq "credential new --output: exit 0" $RC 0
expect_eq "secret file mode 0600" "$(stat -c %a "$T/secret-b")" 600
B_FILE_AKID=$(sed -n 's/.*"access_key_id": *"\([A-Z2-7]*\)".*/\1/p' "$T/cred-b.txt" | head -1)
B_FILE_SECRET=$(cat "$T/secret-b")
expect_eq "the file holds the console's RawSecretAccessKey" \
    "$(sed -n 2p "$T/cred-b.txt" | jcheck "j['XksProxyAuthenticationCredential']['RawSecretAccessKey'] == '$B_FILE_SECRET' and j['XksProxyAuthenticationCredential']['AccessKeyId'] == '$B_FILE_AKID'")" ok
expect_eq "snippet names the file (absolute), no inline secret" \
    "$(sed -n 1p "$T/cred-b.txt" | jcheck "j == {'access_key_id': '$B_FILE_AKID', 'secret_access_key_file': '$(realpath "$T/secret-b")'}")" ok
SUM=$(sha256sum <"$T/secret-b")
run "$XKSCTL" credential new --output "$T/secret-b" >/dev/null 2>"$T/overwrite.err"
expect_eq "refuses to overwrite: exit 1" $RC 1
expect_eq "refuses to overwrite: file unchanged" "$(sha256sum <"$T/secret-b")" "$SUM"
grep -q "refusing to overwrite" "$T/overwrite.err" && ok "refusal explained" || not_ok "refusal message: $(cat "$T/overwrite.err")"

# --- a daemon with both credentials, taken verbatim from xksctl
xks_tokens xks-a
xks_cert server
xks_cred B; xks_cred C; xks_cred N
PORT=$(xks_free_port); LB_PORT=$(xks_free_port)
EXTRA_PATHS=', "/alias/kms/xks/v1"'
HEALTH_INTERVAL=1
if [ -f "${XKS_SHIM:-}" ]; then
	# The PKCS#11 shim in front of SoftHSM lets the test stop the HSM.
	HSM_MODULE=$XKS_SHIM
	XKS_SHIM_TARGET=$SOFTHSM_MODULE; XKS_SHIM_CONTROL=$T/shim.control
	export XKS_SHIM_TARGET XKS_SHIM_CONTROL
fi
# with_file_cred: credential B's line becomes xksctl's secret-file snippet
with_file_cred() {
	python3 - "$T/xksproxy.conf" "$B_AKID" "$(sed -n 1p "$T/cred-b.txt")" <<'EOF'
import sys
path, akid, snippet = sys.argv[1:]
out = []
for line in open(path).read().split("\n"):
    if akid in line:
        indent = line[:len(line) - len(line.lstrip())]
        line = indent + snippet + ("," if line.rstrip().endswith(",") else "")
    out.append(line)
open(path, "w").write("\n".join(out))
EOF
}
xks_config
with_file_cred
grep -q "secret_access_key_file" "$T/xksproxy.conf" && ok "config holds the file snippet" || not_ok "config not rewritten"
xks_start "$T/xksproxy.conf"
U=https://localhost:$PORT$P
probe() { "$XKSCTL" probe --cacert "$T/server.pem" "$@"; }

xks_curl "$A_AKID" "$A_SECRET" $P/health '{"requestMetadata":{"kmsRequestId":"1","kmsOperation":"KmsHealthCheck"}}'
expect "daemon accepts the inline credential from credential new (curl)" 200
xks_curl "$B_FILE_AKID" "$B_FILE_SECRET" $P/health '{"requestMetadata":{"kmsRequestId":"2","kmsOperation":"KmsHealthCheck"}}'
expect "daemon accepts the secret-file credential from credential new (curl)" 200

# --- probe: passing
printf '%s\n' "$A_SECRET" >"$T/secret-a"; chmod 600 "$T/secret-a"
run probe "$U" --access-key-id "$A_AKID" --secret-file "$T/secret-a" --key demo-key >"$T/p1.out" 2>&1
rc=$RC
expect_eq "probe --key demo-key: exit 0" $rc 0
[ $rc -eq 0 ] || cat "$T/p1.out"
for s in GetHealthStatus GetKeyMetadata Encrypt Decrypt; do
	grep -Eq "^$s +1 +200  - .* OK( |\$)" "$T/p1.out" && ok "probe: $s 200 OK" || not_ok "probe: $s line: $(grep "^$s " "$T/p1.out")"
done
grep -q "CDIV verified" "$T/p1.out" && ok "probe checked the CDIV" || not_ok "no CDIV check shown"
grep -q "^result: OK" "$T/p1.out" && ok "probe: result OK" || not_ok "probe: no result OK line"
grep -q "$A_SECRET" "$T/p1.out" && not_ok "probe printed the secret" || ok "probe never prints the secret"
run probe "$U" --access-key-id "$B_FILE_AKID" --secret-file "$T/secret-b" --key demo-key >"$T/p2.out" 2>&1
expect_eq "probe with the secret file from --output: exit 0" $RC 0
run probe "$U" --access-key-id "$A_AKID" --secret-file "$T/secret-a" >"$T/p3.out" 2>&1
expect_eq "probe without --key: exit 0" $RC 0
expect_eq "probe without --key: health only" "$(grep -Ec '^(GetKeyMetadata|Encrypt|Decrypt) ' "$T/p3.out")" 0

# --- --json
run probe "$U" --access-key-id "$A_AKID" --secret-file "$T/secret-a" --key demo-key --json >"$T/p4.json" 2>/dev/null
expect_eq "probe --json: exit 0" $RC 0
expect_eq "probe --json: one object, four OK steps, timings within budget" \
    "$(jcheck 'j["ok"] is True and j["budgetMs"] == 250 and [s["step"] for s in j["steps"]] == ["GetHealthStatus", "GetKeyMetadata", "Encrypt", "Decrypt"] and all(s["ok"] and s["httpStatus"] == 200 and s["errorName"] is None and s["withinBudget"] and s["totalMs"] <= 250 for s in j["steps"])' <"$T/p4.json")" ok

# --- --same-keys-as: the alias path reaches the same key
run probe "$U" --access-key-id "$A_AKID" --secret-file "$T/secret-a" --key demo-key \
    --same-keys-as "https://localhost:$PORT/alias/kms/xks/v1" >"$T/p5.out" 2>&1
rc=$RC
expect_eq "probe --same-keys-as alias: exit 0" $rc 0
[ $rc -eq 0 ] || cat "$T/p5.out"
grep -Eq '^Decrypt\(from 1\) +2 +200 .* OK  plaintext matches: same key material' "$T/p5.out" && ok "alias decrypts what the path encrypted" || not_ok "from 1 to 2: $(grep 'from 1' "$T/p5.out")"
grep -Eq '^Decrypt\(from 2\) +1 +200 .* OK  plaintext matches: same key material' "$T/p5.out" && ok "the path decrypts what the alias encrypted" || not_ok "from 2 to 1: $(grep 'from 2' "$T/p5.out")"
run probe "$U" --access-key-id "$A_AKID" --secret-file "$T/secret-a" --key demo-key \
    --same-keys-as "https://localhost:$PORT/wrong/kms/xks/v1" --json >"$T/p6.json" 2>/dev/null
expect_eq "probe --same-keys-as an unknown path: exit 1" $RC 1
expect_eq "--same-keys-as an unknown path: endpoint 1 fine, endpoint 2 404 InvalidUriPathException" \
    "$(jcheck 'j["ok"] is False and all(s["ok"] for s in j["steps"] if s["endpoint"] == 1 and not s["step"].startswith("Decrypt(")) and [s["errorName"] for s in j["steps"] if s["endpoint"] == 2 and s["httpStatus"]] == ["InvalidUriPathException"] * 4' <"$T/p6.json")" ok

# --- probe: failing
printf '%s\n' "$N_SECRET" >"$T/secret-n"; chmod 600 "$T/secret-n"
run probe "$U" --access-key-id "$N_AKID" --secret-file "$T/secret-n" --key demo-key >"$T/f1.out" 2>&1
expect_eq "credential not in the config: exit 1" $RC 1
grep -Eq '^GetHealthStatus +1 +401  AuthenticationFailedException .* FAIL' "$T/f1.out" && ok "not in the config: GetHealthStatus 401 AuthenticationFailedException" || not_ok "not in the config: $(cat "$T/f1.out")"
grep -q "^result: FAIL" "$T/f1.out" && ok "not in the config: result FAIL" || not_ok "no result FAIL line"

run probe "https://localhost:$PORT/wrong/kms/xks/v1" --access-key-id "$A_AKID" --secret-file "$T/secret-a" --key demo-key >"$T/f2.out" 2>&1
expect_eq "wrong path: exit 1" $RC 1
for s in GetHealthStatus GetKeyMetadata Encrypt; do
	grep -Eq "^$s +1 +404  InvalidUriPathException .* FAIL" "$T/f2.out" && ok "wrong path: $s 404 InvalidUriPathException" || not_ok "wrong path: $s: $(grep "^$s " "$T/f2.out")"
done
grep -Eq '^Decrypt +1 +- .* SKIP  Encrypt failed' "$T/f2.out" && ok "wrong path: Decrypt skipped" || not_ok "wrong path: Decrypt: $(grep '^Decrypt' "$T/f2.out")"

run probe "https://127.0.0.1:$PORT$P" --access-key-id "$A_AKID" --secret-file "$T/secret-a" >"$T/f3.out" 2>&1
expect_eq "by IP address: the certificate's IP SAN verifies" $RC 0
run "$XKSCTL" probe "$U" --access-key-id "$A_AKID" --secret-file "$T/secret-a" >"$T/f4.out" 2>&1
expect_eq "untrusted certificate (system store): exit 1" $RC 1
grep -q "certificate verification failed" "$T/f4.out" && ok "untrusted certificate: named" || not_ok "untrusted certificate: $(cat "$T/f4.out")"
run probe "$U" --access-key-id "$A_AKID" >/dev/null 2>&1
expect_eq "probe without --secret-file: usage error 2" $RC 2
run probe "http://localhost:$PORT$P" --access-key-id "$A_AKID" --secret-file "$T/secret-a" >/dev/null 2>&1
expect_eq "probe of a non-https URL: usage error 2" $RC 2

# --- a removed credential (reload without the --output one)
xks_config                                  # B is xks_cred's again: the file credential is gone
kill -HUP "$DAEMON_PID"
i=0
while :; do
	xks_curl "$B_FILE_AKID" "$B_FILE_SECRET" $P/health '{"requestMetadata":{"kmsRequestId":"3","kmsOperation":"KmsHealthCheck"}}'
	[ "$STATUS" = 401 ] || [ $i -ge 50 ] && break
	i=$((i + 1)); sleep 0.1
done
run probe "$U" --access-key-id "$B_FILE_AKID" --secret-file "$T/secret-b" --key demo-key >"$T/f5.out" 2>&1
expect_eq "removed credential: exit 1" $RC 1
grep -Eq '^GetHealthStatus +1 +401  AuthenticationFailedException .* FAIL' "$T/f5.out" && ok "removed credential: 401 AuthenticationFailedException" || not_ok "removed credential: $(cat "$T/f5.out")"

# --- a stopped HSM (needs the PKCS#11 shim)
if [ -n "${XKS_SHIM_CONTROL:-}" ]; then
	printf 'error CKR_DEVICE_ERROR C_Encrypt,C_EncryptInit,C_Decrypt,C_DecryptInit,C_OpenSession,C_GetAttributeValue,C_FindObjectsInit\n' >"$T/shim.tmp"
	mv "$T/shim.tmp" "$XKS_SHIM_CONTROL"
	sleep 2.5                                  # two health intervals
	run probe "$U" --access-key-id "$A_AKID" --secret-file "$T/secret-a" --key demo-key --json >"$T/f6.json" 2>/dev/null
	expect_eq "stopped HSM: exit 1" $RC 1
	expect_eq "stopped HSM: GetHealthStatus reports every key manager UNAVAILABLE" \
	    "$(jcheck '(s := j["steps"][0])["step"] == "GetHealthStatus" and s["httpStatus"] == 200 and not s["ok"] and "0 ACTIVE, 0 DEGRADED" in s["detail"]' <"$T/f6.json")" ok
	expect_eq "stopped HSM: Encrypt fails with an XKS errorName" \
	    "$(jcheck 'not (s := [x for x in j["steps"] if x["step"] == "Encrypt"][0])["ok"] and s["httpStatus"] in (500, 503) and s["errorName"] in ("InternalException", "DependencyTimeoutException")' <"$T/f6.json")" ok
	: >"$T/shim.tmp"; mv "$T/shim.tmp" "$XKS_SHIM_CONTROL"
	i=0
	until probe "$U" --access-key-id "$A_AKID" --secret-file "$T/secret-a" --key demo-key >"$T/p7.out" 2>&1 || [ $i -ge 30 ]; do
		i=$((i + 1)); sleep 0.2
	done
	expect_eq "HSM back: probe passes again" "$(grep -c '^result: OK' "$T/p7.out")" 1
else
	echo "# stopped HSM: skipped (no PKCS#11 shim at XKS_SHIM='${XKS_SHIM:-}')"
fi

xks_stop
expect_eq "daemon exits cleanly" "$STOP_RC" 0
xks_done
