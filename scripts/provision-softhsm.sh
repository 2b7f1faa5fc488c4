#!/bin/sh
# provision-softhsm.sh DIR [TOKEN...]
# Makes a throwaway SoftHSMv2 token store in DIR: DIR/softhsm2.conf, a PIN
# file DIR/hsm.pin (mode 0600), and for each token label (default xks-a)
# an AES-256 demo key "demo-key" and the health canary key "xks-health".
# Prints the SOFTHSM2_CONF to export.
set -eu
dir=${1:?usage: provision-softhsm.sh DIR [TOKEN...]}
shift
[ $# -gt 0 ] || set -- xks-a
module=${SOFTHSM_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
mkdir -p "$dir/tokens"
dir=$(cd "$dir" && pwd)
cat > "$dir/softhsm2.conf" <<CONF
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF
SOFTHSM2_CONF="$dir/softhsm2.conf"
export SOFTHSM2_CONF
pin=${XKS_DEMO_PIN:-$(openssl rand -hex 8)}
umask 077
printf '%s\n' "$pin" > "$dir/hsm.pin"
for label in "$@"; do
	softhsm2-util --init-token --free --label "$label" \
	    --so-pin "$(openssl rand -hex 8)" --pin "$pin" >/dev/null
	for key in demo-key xks-health; do
		pkcs11-tool --module "$module" --token-label "$label" --login \
		    --pin "$pin" --keygen --key-type AES:32 --label "$key" \
		    >/dev/null 2>&1
	done
done
echo "SOFTHSM2_CONF=$SOFTHSM2_CONF"
