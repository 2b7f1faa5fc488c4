#!/bin/sh
# Secrets never reach the log: the suite's requests (health, metadata,
# encrypt with AAD and CDIV, decrypt, failures) with log.level "debug", in
# text and in json; then every line the daemon wrote is searched for the
# plaintexts (raw, Base64, hex), the AAD, the SigV4 secrets and the signing
# keys derived from them, a signature that would be valid for a tampered
# request, the key material and the PIN.  Also: loose permissions on a
# secret file and on the PIN file are warned about by name, and the daemon
# refuses to run as root without --allow-root.
. "${top_srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
xks_init
xks_tokens xks-a
KEY=5ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e70001
xks_key xks-a sec-key "$KEY"
xks_cert server
xks_cred A; xks_cred B; xks_cred C
PORT=$(xks_free_port); LB_PORT=$(xks_free_port)
LOG_LEVEL=debug
P=/example/kms/xks/v1
MD='"requestMetadata":{"kmsRequestId":"rq-secrets","kmsOperation":"Encrypt","awsPrincipalArn":"arn:aws:iam::111122223333:user/s","kmsKeyArn":"k"}'
PLAIN="Attack at dawn: launch code 0xC0FFEE-secret-plaintext"
PT=$(printf '%s' "$PLAIN" | base64 -w0)
AADRAW="aad-tenant=secret-project-nightingale"
AAD=$(printf '%s' "$AADRAW" | base64 -w0)
BIGPLAIN=$(head -c 3000 /dev/urandom | base64 -w0 | head -c 3000)
BIGPT=$(printf '%s' "$BIGPLAIN" | base64 -w0)
MARK="NotBase64-marker-Zq9!"

# credential A from a file (mode 0600), B and C inline
configure() {
	LOG_FORMAT=$1
	xks_config
	printf '%s\n' "$A_SECRET" > "$T/a.secret"
	chmod 600 "$T/a.secret"
	python3 - "$T/xksproxy.conf" "$A_SECRET" "$T/a.secret" <<'PY'
import json, sys
f, sec, path = sys.argv[1:]
c = json.load(open(f))
for cr in c['keystores'][0]['credentials']:
    if cr.get('secret_access_key') == sec:
        del cr['secret_access_key']
        cr['secret_access_key_file'] = path
json.dump(c, open(f, 'w'), indent=1)
PY
}

# tampered REQUEST: sends a body changed after signing; prints the
# signature that the daemon computes for what it received (valid for it)
cat > "$T/tamper.py" <<'PY'
import datetime, socket, ssl, sys
sys.path.insert(0, sys.argv[1])
from xksclient import sign
port, path, akid, secret, ca, body = int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7].encode()
host = 'localhost:%d' % port
d = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%SZ')
h = {'host': host, 'x-amz-date': d, 'content-type': 'application/json'}
sent = body.replace(b'"', b' "', 1)
auth = sign('POST', host, path, '', h, body, akid, secret, 'us-east-1', 'kms-xks-proxy', d, 'content-type;host;x-amz-date')
good = sign('POST', host, path, '', h, sent, akid, secret, 'us-east-1', 'kms-xks-proxy', d, 'content-type;host;x-amz-date')
h['authorization'] = auth
req = 'POST %s HTTP/1.1\r\n' % path + ''.join('%s: %s\r\n' % kv for kv in h.items()) + 'Content-Length: %d\r\nConnection: close\r\n\r\n' % len(sent)
s = ssl.create_default_context(cafile=ca).wrap_socket(socket.create_connection(('127.0.0.1', port)), server_hostname='localhost')
s.sendall(req.encode() + sent)
data = b''
while True:
    c = s.recv(65536)
    if not c: break
    data += c
print(data.split(b' ')[1].decode(), good.rsplit('Signature=', 1)[1])
PY

# needles: every secret in the forms a log could carry it
needles() {
	python3 - "$@" <<'PY'
import base64, datetime, hashlib, hmac, sys
plain = sys.argv[1:8]
secrets = sys.argv[8:11]
extra = sys.argv[11:]
out = set()
for p in plain:
    b = p.encode()
    out.update([p, base64.b64encode(b).decode(), b.hex(), b.hex().upper()])
d = datetime.datetime.now(datetime.timezone.utc)
for s in secrets:
    out.add(s)
    for day in (d - datetime.timedelta(days=1), d, d + datetime.timedelta(days=1)):
        k = ('AWS4' + s).encode()
        for part in (day.strftime('%Y%m%d'), 'us-east-1', 'kms-xks-proxy', 'aws4_request'):
            k = hmac.new(k, part.encode(), hashlib.sha256).digest()
        out.update([k.hex(), k.hex().upper(), base64.b64encode(k).decode()])
out.update(extra)
for n in sorted(out):
    if len(n) >= 8:
        print(n)
        if '/' in n:
            print(n.replace('/', '\\/'))   # JSON-escaped
PY
}

run_suite() {
	xks_curl "$A_AKID" "$A_SECRET" $P/health '{"requestMetadata":{"kmsRequestId":"rq-h","kmsOperation":"KmsHealthCheck"}}'
	expect "$LOG_FORMAT: health" 200
	xks_curl "$A_AKID" "$A_SECRET" $P/keys/sec-key/metadata "{$MD}"
	expect "$LOG_FORMAT: metadata" 200
	xks_curl "$B_AKID" "$B_SECRET" $P/keys/sec-key/encrypt "{$MD,\"plaintext\":\"$PT\",\"encryptionAlgorithm\":\"AES_GCM\",\"additionalAuthenticatedData\":\"$AAD\",\"ciphertextDataIntegrityValueAlgorithm\":\"SHA_256\"}"
	expect "$LOG_FORMAT: encrypt with AAD and CDIV (credential B)" 200
	CT=$(json ciphertext); IV=$(json initializationVector); TAG=$(json authenticationTag); CM=$(json ciphertextMetadata)
	DEC="\"ciphertext\":\"$CT\",\"encryptionAlgorithm\":\"AES_GCM\",\"initializationVector\":\"$IV\",\"authenticationTag\":\"$TAG\",\"ciphertextMetadata\":\"$CM\""
	xks_curl "$A_AKID" "$A_SECRET" $P/keys/sec-key/decrypt "{$MD,$DEC,\"additionalAuthenticatedData\":\"$AAD\"}"
	expect "$LOG_FORMAT: decrypt" 200
	expect_eq "$LOG_FORMAT: plaintext back" "$(json plaintext)" "$PT"
	xks_curl "$A_AKID" "$A_SECRET" $P/keys/sec-key/encrypt "{$MD,\"plaintext\":\"$BIGPT\",\"encryptionAlgorithm\":\"AES_GCM\"}"
	expect "$LOG_FORMAT: encrypt of 3000 bytes" 200
	xks_curl "$C_AKID" "$C_SECRET" /other/kms/xks/v1/keys/demo-key/encrypt "{$MD,\"plaintext\":\"$PT\",\"encryptionAlgorithm\":\"AES_GCM\"}"
	expect "$LOG_FORMAT: encrypt on the other key store (credential C)" 200
	# failures
	xks_curl "$A_AKID" "$B_SECRET" $P/keys/sec-key/encrypt "{$MD,\"plaintext\":\"$PT\",\"encryptionAlgorithm\":\"AES_GCM\"}"
	expect "$LOG_FORMAT: signed with another credential's secret" 401 AuthenticationFailedException
	set -- $(python3 "$T/tamper.py" "$top_srcdir/tests/integration" "$PORT" "$P/keys/sec-key/encrypt" "$A_AKID" "$A_SECRET" "$T/server.pem" \
	    "{$MD,\"plaintext\":\"$PT\",\"encryptionAlgorithm\":\"AES_GCM\",\"additionalAuthenticatedData\":\"$AAD\"}")
	expect_eq "$LOG_FORMAT: body changed after signing" "$1" 401
	TAMPER_SIGS="$TAMPER_SIGS $2"
	xks_curl "$A_AKID" "$A_SECRET" $P/keys/sec-key/decrypt "{$MD,$DEC,\"additionalAuthenticatedData\":\"$(printf 'other' | base64)\"}"
	expect "$LOG_FORMAT: decrypt with another AAD" 400 InvalidCiphertextException
	xks_curl "$A_AKID" "$A_SECRET" $P/keys/sec-key/encrypt "{$MD,\"plaintext\":\"$MARK\",\"encryptionAlgorithm\":\"AES_GCM\"}"
	expect "$LOG_FORMAT: plaintext that is not Base64" 400 ValidationException
	xks_curl "$A_AKID" "$A_SECRET" $P/keys/sec-key/encrypt "{$MD,\"plaintext\":\"$PT\",\"encryptionAlgorithm\":\"AES_GCM\",\"additionalAuthenticatedData\":\"$MARK\"}"
	expect "$LOG_FORMAT: AAD that is not Base64" 400 ValidationException
	xks_curl "$A_AKID" "$A_SECRET" $P/keys/no-such-key/encrypt "{$MD,\"plaintext\":\"$PT\",\"encryptionAlgorithm\":\"AES_GCM\"}"
	expect "$LOG_FORMAT: missing key" 404 KeyNotFoundException
	xks_curl "$A_AKID" "$A_SECRET" $P/keys/sec-key/encrypt "{$MD,\"plaintext\":\"$PT\",\"encryptionAlgorithm\":\"AES_GCM\""
	expect "$LOG_FORMAT: truncated JSON with a plaintext in it" 400 ValidationException
	STATUS=$(curl -sS --cacert "$T/server.pem" -H 'Content-Type: application/json' -H "Authorization: AWS4-HMAC-SHA256 Credential=$A_AKID/20200101/us-east-1/kms-xks-proxy/aws4_request, SignedHeaders=host, Signature=$A_SECRET" \
	    --data-binary "{$MD,\"plaintext\":\"$PT\"}" -o /dev/null -w '%{http_code}' "https://localhost:$PORT$P/keys/sec-key/encrypt")
	expect_eq "$LOG_FORMAT: a secret pasted as the signature" "$STATUS" 401
	kill -HUP "$DAEMON_PID"          # a reload reads the secret file again
	sleep 0.5
	xks_curl "$A_AKID" "$A_SECRET" $P/keys/sec-key/encrypt "{$MD,\"plaintext\":\"$PT\",\"encryptionAlgorithm\":\"AES_GCM\",\"additionalAuthenticatedData\":\"$AAD\"}"
	expect "$LOG_FORMAT: encrypt after a reload" 200
}

# memscan PID NEEDLE...: "needle-prefix count" for each needle found in the
# process's writable memory (heap, thread arenas and stacks)
cat > "$T/memscan.py" <<'PY'
import sys
pid, needles = int(sys.argv[1]), [n.encode() for n in sys.argv[2:]]
found = dict.fromkeys(needles, 0)
with open('/proc/%d/maps' % pid) as maps, open('/proc/%d/mem' % pid, 'rb', 0) as mem:
    for line in maps:
        f = line.split()
        if not f[1].startswith('rw'):
            continue
        a, b = (int(x, 16) for x in f[0].split('-'))
        if b - a > 1 << 30:         # sanitizer shadow memory
            continue
        try:
            mem.seek(a)
            data = mem.read(b - a)
        except (OSError, ValueError, OverflowError):
            continue
        for n in needles:
            found[n] += data.count(n)
for n, c in found.items():
    print(n.decode()[:16], c)
PY

TAMPER_SIGS=
for fmt in text json; do
	configure $fmt
	: > "$T/daemon.log"
	xks_start "$T/xksproxy.conf"
	run_suite
	if [ $fmt = text ]; then
		# the requests are over: no plaintext (raw or Base64), no PIN left in
		# the daemon's memory -- wiped when freed (needs ptrace access: root)
		sleep 0.3
		if python3 "$T/memscan.py" "$DAEMON_PID" "$PLAIN" "$PT" "$BIGPLAIN" "$BIGPT" "$PIN" "$A_SECRET" "$AAD" > "$T/mem" 2>"$T/mem.err"; then
			sed 's/^/# in memory: /' "$T/mem"
			expect_eq "plaintexts (raw, Base64) and PIN left in the daemon's memory after the requests" \
			    "$(head -5 "$T/mem" | awk '{ s += $2 } END { print s }')" 0
		else
			echo "# SKIP memory scan: $(tail -1 "$T/mem.err")"
		fi
	fi
	xks_stop
	cp "$T/daemon.log" "$T/log.$fmt"
	lines=$(wc -l < "$T/log.$fmt")
	dbg=$(grep -c 'debug' "$T/log.$fmt" || true)
	reqs=$(grep -c 'rq-secrets' "$T/log.$fmt" || true)
	[ "$dbg" -gt 0 ] && [ "$reqs" -ge 9 ] && ok "$fmt log: $lines lines, $dbg at debug level, $reqs request lines" ||
	    not_ok "$fmt log: $lines lines, $dbg debug, $reqs request lines (the search below would prove nothing)"
	if [ $fmt = json ]; then
		bad=$(python3 -c 'import json,sys
n = 0
for l in open(sys.argv[1]):
    try: json.loads(l)
    except Exception: n += 1
print(n)' "$T/log.json")
		expect_eq "json log: lines that are not one JSON object" "$bad" 0
	fi
done

needles "$PLAIN" "$PT" "$AADRAW" "$AAD" "$BIGPLAIN" "$BIGPT" "$MARK" "$A_SECRET" "$B_SECRET" "$C_SECRET" \
    "$PIN" "$KEY" $TAMPER_SIGS > "$T/needles"
n=$(wc -l < "$T/needles")
for fmt in text json; do
	hits=$(grep -cF -f "$T/needles" "$T/log.$fmt" || true)
	expect_eq "$fmt log at debug: lines holding any of $n secret forms (plaintexts raw/Base64/hex, AAD, 3 SigV4 secrets and their derived signing keys, the signature valid for a tampered body, key material, PIN)" "$hits" 0
	[ "$hits" -eq 0 ] || grep -nF -f "$T/needles" "$T/log.$fmt" | head -5 | sed 's/^/# HIT: /'
done

# --- loose permissions on a secret file and on the PIN file
cp "$T/a.secret" "$T/loose.secret"; chmod 644 "$T/loose.secret"
cp "$PIN_FILE" "$T/loose.pin"; chmod 644 "$T/loose.pin"
sed -e "s|$T/a.secret|$T/loose.secret|" -e "s|\"$PIN_FILE\"|\"$T/loose.pin\"|" "$T/xksproxy.conf" > "$T/loose.conf"
"$XKSPROXYD" -t -c "$T/loose.conf" > "$T/loose.out" 2>&1 || true
grep -q "$T/loose.secret: secret file is accessible by group or others (mode 0644)" "$T/loose.out" &&
    ok "secret file with mode 0644: warning names it" || not_ok "no warning for the 0644 secret file: $(cat "$T/loose.out")"
grep -q "hsm.pin_file: $T/loose.pin is accessible by group or others (mode 0644)" "$T/loose.out" &&
    ok "PIN file with mode 0644: warning names it" || not_ok "no warning for the 0644 PIN file: $(cat "$T/loose.out")"
grep -q "$T/a.secret\|$PIN_FILE" "$T/loose.out" && not_ok "warning about a 0600 file" || ok "no warning for the 0600 files"
hits=$(grep -cF -f "$T/needles" "$T/loose.out" || true)
expect_eq "secrets in the -t output" "$hits" 0

# --- root
if [ "$(id -u)" = 0 ]; then
	rc=0
	timeout 10 "$XKSPROXYD" -c "$T/xksproxy.conf" > "$T/root.out" 2>&1 || rc=$?
	expect_eq "as root without --allow-root: exit status" "$rc" 1
	grep -q 'refusing to run as root' "$T/root.out" && ok "as root: refusal says why" || not_ok "as root: $(cat "$T/root.out")"
	grep -q ' ready: ' "$T/root.out" && not_ok "as root: it started" || ok "as root: it never became ready"
	# the same with --allow-root (what xks_start passes): it runs
	: > "$T/daemon.log"     # xks_start waits for a " ready: " line
	xks_start "$T/xksproxy.conf"
	kill -0 "$DAEMON_PID" && ok "as root with --allow-root: runs" || not_ok "--allow-root did not run"
	xks_stop
else
	echo "# SKIP the root check: not running as root (uid $(id -u))"
fi
xks_done
