#!/bin/sh
# Mutual TLS: only the allowed client certificate gets in, every other one
# is refused during the handshake with an alert the client sees, in TLS 1.2
# and 1.3; SigV4 still required; reload switches the allowed subject.
. "${top_srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
xks_init
TLS_EXTRA=", \"client_ca_file\": \"$T/ca.pem\", \"client_subjects\": [\"cks.kms.*.amazonaws.com\"]"
xks_standard
P=/example/kms/xks/v1
HB='{"requestMetadata":{"kmsRequestId":"rq-mtls","kmsOperation":"KmsHealthCheck"}}'
KMS_CN=cks.kms.us-east-1.amazonaws.com

# a test CA, another CA, and client certificates
mkca() {
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/$1.key" \
	    -out "$T/$1.pem" -days 2 -subj "/CN=$1 test CA" \
	    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
	mkdir -p "$T/$1.db"; : > "$T/$1.db/index"; echo 1000 > "$T/$1.db/serial"
	cat > "$T/$1.cnf" <<CNF
[ca]
default_ca = d
[d]
dir = $T/$1.db
database = \$dir/index
serial = \$dir/serial
new_certs_dir = \$dir
default_md = sha256
policy = p
unique_subject = no
copy_extensions = copy
[p]
commonName = supplied
[ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
CNF
}
# mkclient NAME CA CN [startdate enddate]
mkclient() {
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/$1.key" \
	    -out "$T/$1.csr" -subj "/CN=$3" 2>/dev/null
	if [ $# -ge 5 ]; then d="-startdate $4 -enddate $5"; else d="-days 2"; fi
	openssl ca -batch -config "$T/$2.cnf" -cert "$T/$2.pem" -keyfile "$T/$2.key" \
	    -extensions ext $d -in "$T/$1.csr" -out "$T/$1.pem" >/dev/null 2>&1
}
mkca ca; mkca otherca
mkclient good ca "$KMS_CN"
mkclient wrongcn ca "attacker.example.com"
mkclient expired ca "$KMS_CN" 20200101000000Z 20200201000000Z
mkclient future ca "$KMS_CN" 20990101000000Z 20990201000000Z
mkclient foreign otherca "$KMS_CN"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/self.key" \
    -out "$T/self.pem" -days 2 -subj "/CN=$KMS_CN" 2>/dev/null
for c in good wrongcn expired future foreign self; do
	[ -s "$T/$c.pem" ] || { echo "FAIL: could not make test certificate $c"; exit 1; }
done

grep -q client_ca_file "$T/xksproxy.conf" || { echo "FAIL: config edit"; cat "$T/xksproxy.conf"; exit 1; }
xks_start "$T/xksproxy.conf"

# s_client: send a request after the handshake so a TLS 1.3 client reads the alert
sclient() {   # sclient VERSION [cert] -> output in $T/s
	v=$1; shift
	if [ $# -gt 0 ]; then set -- -cert "$T/$1.pem" -key "$T/$1.key"; fi
	(printf 'POST %s/health HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}' "$P"; sleep 2) |
	    openssl s_client -connect "127.0.0.1:$PORT" -servername localhost -CAfile "$T/server.pem" \
	    -$v "$@" >"$T/s" 2>&1 || true
}
for v in tls1_2 tls1_3; do
	for c in none self expired future foreign wrongcn; do
		if [ $c = none ]; then sclient $v; else sclient $v $c; fi
		if grep -q 'alert handshake failure' "$T/s"; then
			ok "$v, client certificate '$c': handshake_failure alert seen by the client"
		elif [ $c = none ] && [ $v = tls1_3 ] && grep -q 'alert certificate required' "$T/s"; then
			# RFC 8446 4.4.2.4: a TLS 1.3 server aborts a missing certificate with certificate_required
			ok "$v, no client certificate: certificate_required alert seen by the client"
		else
			not_ok "$v, client certificate '$c': no alert seen: $(grep -i -m2 'alert\|error' "$T/s")"
		fi
	done
	sclient $v good
	grep -q 'HTTP/1.1 401 ' "$T/s" && ok "$v, good certificate, no signature: 401" ||
	    not_ok "$v good certificate: no 401 in the s_client output"
done
grep -q 'client certificate refused.*reason="subject not in tls.client_subjects".*attacker.example.com' "$T/daemon.log" &&
    ok "refusal logged with reason and subject" || not_ok "refusal log line missing"
grep -q 'client certificate refused.*reason="no client certificate"' "$T/daemon.log" &&
    ok "missing certificate logged" || not_ok "missing certificate not logged"

# curl with the good certificate and a signature: 200
xks_curl "$A_AKID" "$A_SECRET" $P/health "$HB" --cert "$T/good.pem" --key "$T/good.key"
expect "good certificate and SigV4" 200
xks_curl "$A_AKID" "$A_SECRET" $P/health "$HB"
expect_eq "curl without a certificate fails" "$STATUS" 000

# sessions made with the good certificate, to try to resume after the reload
for v in tls1_2 tls1_3; do
	(sleep 0.5) | openssl s_client -connect "127.0.0.1:$PORT" -servername localhost -CAfile "$T/server.pem" \
	    -$v -cert "$T/good.pem" -key "$T/good.key" -sess_out "$T/sess.$v" >/dev/null 2>&1 || true
	(sleep 0.5) | openssl s_client -connect "127.0.0.1:$PORT" -servername localhost -CAfile "$T/server.pem" \
	    -$v -cert "$T/good.pem" -key "$T/good.key" -sess_in "$T/sess.$v" 2>/dev/null | grep -q '^Reused,' &&
	    ok "$v session resumed before the reload" || not_ok "$v session not resumed before the reload"
done

# reload: another allowed subject; the KMS certificate is now refused
sed -i 's/"cks.kms.\*.amazonaws.com"/"attacker.example.com"/' "$T/xksproxy.conf"
kill -HUP "$DAEMON_PID"; sleep 0.5
xks_curl "$A_AKID" "$A_SECRET" $P/health "$HB" --cert "$T/good.pem" --key "$T/good.key"
expect_eq "after reload the old subject is refused" "$STATUS" 000
for v in tls1_2 tls1_3; do
	(printf 'x'; sleep 1) | openssl s_client -connect "127.0.0.1:$PORT" -servername localhost -CAfile "$T/server.pem" \
	    -$v -cert "$T/good.pem" -key "$T/good.key" -sess_in "$T/sess.$v" >"$T/s" 2>&1 || true
	if grep -q '^Reused,' "$T/s"; then
		not_ok "$v: a session from before the reload skipped the new subject check"
	elif grep -q 'alert handshake failure' "$T/s"; then
		ok "$v: a session from before the reload is not resumed; full handshake refused"
	else
		not_ok "$v: resumption attempt after reload: $(grep -i -m2 'alert\|error' "$T/s")"
	fi
done
xks_curl "$A_AKID" "$A_SECRET" $P/health "$HB" --cert "$T/wrongcn.pem" --key "$T/wrongcn.key"
expect "after reload the new subject is accepted" 200
# reload: mTLS off
python3 - "$T/xksproxy.conf" <<'PY'
import re, sys
s = open(sys.argv[1]).read()
s = re.sub(r',\s*"client_ca_file": "[^"]*", "client_subjects": \[[^]]*\]', '', s)
open(sys.argv[1], 'w').write(s)
PY
kill -HUP "$DAEMON_PID"; sleep 0.5
xks_curl "$A_AKID" "$A_SECRET" $P/health "$HB"
expect "mTLS turned off by reload" 200
xks_stop
xks_done
