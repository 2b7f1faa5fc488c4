#!/bin/sh
# demo.sh -- on a fresh Debian 12 machine: install what is needed, build,
# provision a throwaway SoftHSMv2 token (a demo key and the health canary
# key), generate a self-signed certificate and a SigV4 credential, print a
# working curl command and the KMS console proxy configuration JSON, and
# run xksproxyd in the foreground on https://localhost:8443 (Ctrl-C stops it).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
sh scripts/install-deps.sh
[ -x configure ] || autoreconf -fi >/dev/null 2>&1
mkdir -p build/demo
(cd build/demo && { [ -f Makefile ] || "$top/configure" >configure.log; } &&
    make -j"$(nproc)" >make.log 2>&1) || { tail -30 build/demo/make.log; exit 1; }

D=${XKS_DEMO_DIR:-$top/build/demo-run}
PORT=${XKS_DEMO_PORT:-8443}
LBPORT=${XKS_DEMO_LB_PORT:-8080}
XKS_PATH=/demo/kms/xks/v1
rm -rf "$D"; mkdir -p "$D"; chmod 700 "$D"
sh scripts/provision-softhsm.sh "$D/hsm" xks-demo >/dev/null
export SOFTHSM2_CONF="$D/hsm/softhsm2.conf"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$D/server.key" -out "$D/server.pem" -days 30 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
build/demo/xksctl credential new --path "$XKS_PATH" --output "$D/secret" >"$D/credential.txt" 2>/dev/null || {
	# fallback while xksctl is not built: the same formats KMS accepts
	python3 -c 'import secrets; print("".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(26)))' > "$D/akid"
	(umask 077; openssl rand -base64 32 > "$D/secret")
}
[ -s "$D/akid" ] || sed -n 's/.*"access_key_id": *"\([A-Z2-7]*\)".*/\1/p' "$D/credential.txt" | head -1 > "$D/akid"
AKID=$(cat "$D/akid"); SECRET=$(cat "$D/secret")
cat > "$D/xksproxy.conf" <<CONF
// xksproxy demo configuration (throwaway)
{
  "listen": [{ "address": "127.0.0.1", "port": $PORT }],
  "tls": { "certificates": [{ "certificate_file": "$D/server.pem",
                              "private_key_file": "$D/server.key" }] },
  "health_listen": { "address": "127.0.0.1", "port": $LBPORT, "path": "/ping" },
  "hsm": { "module": "/usr/lib/softhsm/libsofthsm2.so",
           "tokens": ["pkcs11:token=xks-demo"],
           "pin_file": "$D/hsm/hsm.pin", "sessions_per_token": 4,
           "health_key": "xks-health" },
  "health": { "interval_seconds": 10 },
  "keystores": [
    { "paths": ["$XKS_PATH"],
      "credentials": [ { "access_key_id": "$AKID", "secret_access_key_file": "$D/secret" } ],
      "keys": ["demo-key"] }
  ],
  "log": { "level": "info", "format": "text" }
}
CONF
CURL="curl -sS --cacert $D/server.pem --aws-sigv4 aws:amz:us-east-1:kms-xks-proxy --user $AKID:\$(cat $D/secret) -H Content-Type:application/json"
cat > "$D/roundtrip.sh" <<RT
#!/bin/sh
# health, metadata, encrypt, decrypt through curl --aws-sigv4
set -eu
U=https://localhost:$PORT$XKS_PATH
MD='"requestMetadata":{"kmsRequestId":"demo-1","kmsOperation":"Encrypt","awsPrincipalArn":"arn:aws:iam::111122223333:user/demo","kmsKeyArn":"arn:aws:kms:us-east-1:111122223333:key/demo"}'
echo "== GetHealthStatus"; $CURL --data '{"requestMetadata":{"kmsRequestId":"demo-0","kmsOperation":"KmsHealthCheck"}}' \$U/health; echo
echo "== GetKeyMetadata";  $CURL --data "{\$MD}" \$U/keys/demo-key/metadata; echo
PT=\$(printf 'hello from xksproxy' | base64)
echo "== Encrypt \"hello from xksproxy\""
ENC=\$($CURL --data "{\$MD,\"plaintext\":\"\$PT\",\"encryptionAlgorithm\":\"AES_GCM\",\"ciphertextDataIntegrityValueAlgorithm\":\"SHA_256\"}" \$U/keys/demo-key/encrypt)
echo "\$ENC"
DEC=\$(printf '%s' "\$ENC" | python3 -c 'import json,sys; e=json.load(sys.stdin); print(json.dumps({k:e[k] for k in ("ciphertext","initializationVector","authenticationTag","ciphertextMetadata")}))')
echo "== Decrypt"
OUT=\$($CURL --data "{\$MD,\"encryptionAlgorithm\":\"AES_GCM\",\${DEC#?}" \$U/keys/demo-key/decrypt)
echo "\$OUT"
printf '%s' "\$OUT" | python3 -c 'import json,sys,base64; print("plaintext:", base64.b64decode(json.load(sys.stdin)["plaintext"]).decode())'
RT
chmod +x "$D/roundtrip.sh"

cat <<MSG

xksproxy demo
  config:      $D/xksproxy.conf
  HSM:         SoftHSMv2 token "xks-demo" (SOFTHSM2_CONF=$SOFTHSM2_CONF), keys demo-key and xks-health
  endpoint:    https://localhost:$PORT$XKS_PATH   (load balancer check: http://127.0.0.1:$LBPORT/ping)

Try it (in another terminal):
  $CURL \\
    --data '{"requestMetadata":{"kmsRequestId":"demo-0","kmsOperation":"KmsHealthCheck"}}' \\
    https://localhost:$PORT$XKS_PATH/health

Full round trip (health, metadata, encrypt, decrypt):
  $D/roundtrip.sh

KMS console proxy configuration file:
{"XksProxyUriPath": "$XKS_PATH", "XksProxyAuthenticationCredential": {"AccessKeyId": "$AKID", "RawSecretAccessKey": "$SECRET"}}

Starting xksproxyd (Ctrl-C to stop)...
MSG
extra=
[ "$(id -u)" = 0 ] && extra=--allow-root
exec build/demo/xksproxyd -c "$D/xksproxy.conf" $extra
