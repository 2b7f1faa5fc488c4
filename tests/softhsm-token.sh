#!/bin/sh
# softhsm-token.sh DIR [TOKEN...] -- a throwaway SoftHSMv2 HSM "cluster".
#
# Makes DIR/softhsm2.conf (tokendir DIR/tokens), the PIN file DIR/hsm.pin
# (mode 0600, PIN $XKS_TEST_PIN or 1234) and, for each token label (default:
# xks-a xks-b), a token holding the SAME key material for every key, so that
# the tokens behave as one HSM cluster:
#   KEYS="label ..." (default "demo-key xks-health"): AES-256 keys that may
#   encrypt and decrypt (pkcs11-tool cannot set CKA_ENCRYPT and CKA_DECRYPT
#   apart; tests/unit/hsm-fixture.h makes keys with exact attributes through
#   C_CreateObject); the raw key of each label is DIR/keys/<label>.bin (32
#   random bytes, made once and imported into every token).
# Prints "export SOFTHSM2_CONF=..." for eval.  Exit 77 when SoftHSMv2 or
# pkcs11-tool is missing (the test is then skipped).
set -eu
dir=${1:?usage: softhsm-token.sh DIR [TOKEN...]}
shift
[ $# -gt 0 ] || set -- xks-a xks-b
module=${SOFTHSM_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
keys=${KEYS:-demo-key xks-health}
pin=${XKS_TEST_PIN:-1234}
for tool in softhsm2-util pkcs11-tool openssl; do
	command -v "$tool" >/dev/null 2>&1 || { echo "$tool missing" >&2; exit 77; }
done
[ -r "$module" ] || { echo "$module missing" >&2; exit 77; }
mkdir -p "$dir/tokens" "$dir/keys"
dir=$(cd "$dir" && pwd)
cat > "$dir/softhsm2.conf" <<CONF
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF
SOFTHSM2_CONF="$dir/softhsm2.conf"
export SOFTHSM2_CONF
umask 077
printf '%s\n' "$pin" > "$dir/hsm.pin"
for label in $keys; do
	[ -f "$dir/keys/$label.bin" ] || openssl rand -out "$dir/keys/$label.bin" 32
done
for token in "$@"; do
	softhsm2-util --init-token --free --label "$token" \
	    --so-pin "$(openssl rand -hex 8)" --pin "$pin" >/dev/null
	for label in $keys; do
		pkcs11-tool --module "$module" --token-label "$token" --login \
		    --pin "$pin" --write-object "$dir/keys/$label.bin" \
		    --type secrkey --key-type AES:32 --label "$label" \
		    --usage-decrypt --private --sensitive >/dev/null 2>&1 || {
			echo "cannot import $label into $token" >&2; exit 1; }
	done
done
echo "export SOFTHSM2_CONF=$SOFTHSM2_CONF"
