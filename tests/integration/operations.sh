#!/bin/sh
# The four XKS operations end to end: real daemon, real SoftHSMv2 token,
# curl --aws-sigv4 as the client; every errorName the setup can produce.
. "${top_srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
xks_init
xks_tokens xks-a
KEY=000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
xks_key xks-a enc-only "$KEY" encrypt=1 decrypt=0
xks_key xks-a dec-only "$KEY" encrypt=0 decrypt=1
xks_key xks-a no-usage "$KEY" encrypt=0 decrypt=0
xks_key xks-a aes128 000102030405060708090a0b0c0d0e0f
# SoftHSMv2 2.6 cannot read the dates of a private object back: a public one
xks_key xks-a expired "$KEY" start=20200101 end=20210101 private=0
xks_key xks-a secret-key "$KEY"
xks_key xks-a all-usage "$KEY" encrypt=1 decrypt=1 wrap=1 unwrap=1 sign=1 verify=1 derive=1
xks_cert server
xks_cred A; xks_cred B; xks_cred C
PORT=$(xks_free_port); LB_PORT=$(xks_free_port)
xks_config
xks_start "$T/xksproxy.conf"
P=/example/kms/xks/v1
MD='"requestMetadata":{"kmsRequestId":"REQ-ID-1","kmsOperation":"Encrypt","awsPrincipalArn":"arn:aws:iam::111122223333:user/alice","kmsKeyArn":"arn:aws:kms:us-east-1:111122223333:key/1","kmsViaService":"ebs"}'
call() { xks_curl "$A_AKID" "$A_SECRET" "$P/keys/$1/$2" "$3"; }
b64() { printf '%s' "$1" | base64 -w0; }
PLAIN="the plaintext that must never be logged 7f3a"
PT=$(b64 "$PLAIN")
AAD=$(b64 "project=nile,department=marketing")

# --- GetKeyMetadata
call demo-key metadata "{$MD}"
expect "metadata" 200
expect_eq "keySpec" "$(json keySpec)" AES_256
expect_eq "keyStatus" "$(json keyStatus)" ENABLED
call all-usage metadata "{$MD}"
expect_eq "keyUsage of a key with every usage, in spec order" "$(json keyUsage)" '["ENCRYPT", "DECRYPT", "WRAP", "UNWRAP", "SIGN", "VERIFY", "DERIVE"]'
call enc-only metadata "{$MD}"; expect_eq "encrypt-only keyUsage" "$(json keyUsage)" '["ENCRYPT"]'
call no-usage metadata "{$MD}"; expect_eq "no-usage keyUsage" "$(json keyUsage)" '[]'
call aes128 metadata "{$MD}"; expect_eq "AES-128 keySpec" "$(json keySpec)" AES_128
call expired metadata "{$MD}"; expect_eq "key outside its dates" "$(json keyStatus)" DISABLED
call missing-key metadata "{$MD}"; expect "metadata of a missing key" 404 KeyNotFoundException
xks_curl "$C_AKID" "$C_SECRET" /other/kms/xks/v1/keys/secret-key/metadata "{$MD}"
expect "key on the token but not in the key store's list" 404 KeyNotFoundException
xks_curl "$C_AKID" "$C_SECRET" /other/kms/xks/v1/keys/demo-key/metadata "{$MD}"
expect "key in the key store's list" 200

# --- Encrypt / Decrypt round trip with AAD and CDIV
call demo-key encrypt "{$MD,\"plaintext\":\"$PT\",\"encryptionAlgorithm\":\"AES_GCM\",\"additionalAuthenticatedData\":\"$AAD\",\"ciphertextDataIntegrityValueAlgorithm\":\"SHA_256\"}"
expect "encrypt with AAD and CDIV" 200
CT=$(json ciphertext); IV=$(json initializationVector); TAG=$(json authenticationTag); CM=$(json ciphertextMetadata); CDIV=$(json ciphertextDataIntegrityValue)
expect_eq "ciphertext length = plaintext length" "$(printf %s "$CT" | base64 -d | wc -c)" "$(printf %s "$PLAIN" | wc -c)"
expect_eq "IV is 12 bytes" "$(printf %s "$IV" | base64 -d | wc -c)" 12
expect_eq "tag is 16 bytes" "$(printf %s "$TAG" | base64 -d | wc -c)" 16
expect_eq "ciphertextMetadata is format version 1" "$(printf %s "$CM" | base64 -d | od -An -tx1 | tr -d ' ')" 01
WANT=$(python3 -c 'import base64,hashlib,sys
d=b"".join(base64.b64decode(x) for x in sys.argv[1:])
print(base64.b64encode(hashlib.sha256(d).digest()).decode())' "$AAD" "$CM" "$IV" "$CT" "$TAG")
expect_eq "CDIV computed independently" "$CDIV" "$WANT"
DEC="\"ciphertext\":\"$CT\",\"encryptionAlgorithm\":\"AES_GCM\",\"initializationVector\":\"$IV\",\"authenticationTag\":\"$TAG\""
call demo-key decrypt "{$MD,$DEC,\"additionalAuthenticatedData\":\"$AAD\",\"ciphertextMetadata\":\"$CM\"}"
expect "decrypt" 200
expect_eq "decrypted plaintext" "$(json plaintext | base64 -d)" "$PLAIN"

# --- InvalidCiphertextException for every corruption
flip() { python3 -c 'import base64,sys; b=bytearray(base64.b64decode(sys.argv[1])); b[0]^=1; print(base64.b64encode(bytes(b)).decode())' "$1"; }
call demo-key decrypt "{$MD,\"ciphertext\":\"$CT\",\"encryptionAlgorithm\":\"AES_GCM\",\"initializationVector\":\"$IV\",\"authenticationTag\":\"$(flip "$TAG")\",\"additionalAuthenticatedData\":\"$AAD\",\"ciphertextMetadata\":\"$CM\"}"
expect "changed tag" 400 InvalidCiphertextException
call demo-key decrypt "{$MD,\"ciphertext\":\"$CT\",\"encryptionAlgorithm\":\"AES_GCM\",\"initializationVector\":\"$(flip "$IV")\",\"authenticationTag\":\"$TAG\",\"additionalAuthenticatedData\":\"$AAD\",\"ciphertextMetadata\":\"$CM\"}"
expect "changed IV" 400 InvalidCiphertextException
call demo-key decrypt "{$MD,\"ciphertext\":\"$(flip "$CT")\",\"encryptionAlgorithm\":\"AES_GCM\",\"initializationVector\":\"$IV\",\"authenticationTag\":\"$TAG\",\"additionalAuthenticatedData\":\"$AAD\",\"ciphertextMetadata\":\"$CM\"}"
expect "changed ciphertext" 400 InvalidCiphertextException
call demo-key decrypt "{$MD,$DEC,\"additionalAuthenticatedData\":\"$(flip "$AAD")\",\"ciphertextMetadata\":\"$CM\"}"
expect "different AAD" 400 InvalidCiphertextException
call demo-key decrypt "{$MD,$DEC,\"ciphertextMetadata\":\"$CM\"}"
expect "absent AAD" 400 InvalidCiphertextException
call demo-key decrypt "{$MD,$DEC,\"additionalAuthenticatedData\":\"$AAD\"}"
expect "absent ciphertextMetadata" 400 InvalidCiphertextException
call demo-key decrypt "{$MD,$DEC,\"additionalAuthenticatedData\":\"$AAD\",\"ciphertextMetadata\":\"Ag==\"}"
expect "unknown ciphertextMetadata version" 400 InvalidCiphertextException
call demo-key decrypt "{$MD,$DEC,\"additionalAuthenticatedData\":\"$AAD\",\"ciphertextMetadata\":\"AQE=\"}"
expect "ciphertextMetadata with extra bytes" 400 InvalidCiphertextException
call demo-key encrypt "{$MD,\"plaintext\":\"$PT\",\"encryptionAlgorithm\":\"AES_GCM\"}"
CT2=$(json ciphertext); IV2=$(json initializationVector); TAG2=$(json authenticationTag)
call demo-key decrypt "{$MD,\"ciphertext\":\"$CT2\",\"encryptionAlgorithm\":\"AES_GCM\",\"initializationVector\":\"$IV2\",\"authenticationTag\":\"$TAG2\",\"ciphertextMetadata\":\"AQ==\"}"
expect "round trip without AAD" 200
call secret-key decrypt "{$MD,\"ciphertext\":\"$CT2\",\"encryptionAlgorithm\":\"AES_GCM\",\"initializationVector\":\"$IV2\",\"authenticationTag\":\"$TAG2\",\"ciphertextMetadata\":\"AQ==\"}"
expect "decrypt with another key" 400 InvalidCiphertextException

# --- InvalidKeyUsageException
ENC="\"plaintext\":\"$PT\",\"encryptionAlgorithm\":\"AES_GCM\""
call dec-only encrypt "{$MD,$ENC}"; expect "encrypt with a decrypt-only key" 400 InvalidKeyUsageException
call no-usage encrypt "{$MD,$ENC}"; expect "encrypt with a no-usage key" 400 InvalidKeyUsageException
call enc-only encrypt "{$MD,$ENC}"; expect "encrypt with an encrypt-only key" 200
call enc-only encrypt "{$MD,$ENC,\"ciphertextDataIntegrityValueAlgorithm\":\"SHA_256\"}"
expect "encrypt+CDIV with an encrypt-only key (the check needs decrypt)" 400 InvalidKeyUsageException
call enc-only decrypt "{$MD,$DEC,\"additionalAuthenticatedData\":\"$AAD\",\"ciphertextMetadata\":\"$CM\"}"
expect "decrypt with an encrypt-only key" 400 InvalidKeyUsageException
call missing-key encrypt "{$MD,$ENC}"; expect "encrypt with a missing key" 404 KeyNotFoundException

# --- sizes: 4300-byte plaintext with 8192-byte AAD; above the maxima 501
BIGPT=$(head -c 4300 /dev/urandom | base64 -w0); BIGAAD=$(head -c 8192 /dev/urandom | base64 -w0)
call demo-key encrypt "{$MD,\"plaintext\":\"$BIGPT\",\"encryptionAlgorithm\":\"AES_GCM\",\"additionalAuthenticatedData\":\"$BIGAAD\",\"ciphertextDataIntegrityValueAlgorithm\":\"SHA_256\"}"
expect "4300-byte plaintext, 8192-byte AAD" 200
BCT=$(json ciphertext); BIV=$(json initializationVector); BTAG=$(json authenticationTag)
call demo-key decrypt "{$MD,\"ciphertext\":\"$BCT\",\"encryptionAlgorithm\":\"AES_GCM\",\"initializationVector\":\"$BIV\",\"authenticationTag\":\"$BTAG\",\"additionalAuthenticatedData\":\"$BIGAAD\",\"ciphertextMetadata\":\"AQ==\"}"
expect "decrypt of 4300 bytes" 200
expect_eq "4300 bytes back" "$(json plaintext)" "$BIGPT"
call demo-key encrypt "{$MD,\"plaintext\":\"$(head -c 4301 /dev/zero | base64 -w0)\",\"encryptionAlgorithm\":\"AES_GCM\"}"
expect "4301-byte plaintext" 501 UnsupportedOperationException
call demo-key encrypt "{$MD,$ENC,\"additionalAuthenticatedData\":\"$(head -c 8193 /dev/zero | base64 -w0)\"}"
expect "8193-byte AAD" 501 UnsupportedOperationException

# --- ValidationException, one per rule
v() { call demo-key "$1" "$2"; expect "validation: $3" 400 ValidationException; }
v encrypt "{$ENC}" "no requestMetadata"
v encrypt '{"requestMetadata":{"kmsOperation":"Encrypt","awsPrincipalArn":"a","kmsKeyArn":"k"},'"$ENC}" "no kmsRequestId"
v encrypt '{"requestMetadata":{"kmsRequestId":"r","awsPrincipalArn":"a","kmsKeyArn":"k"},'"$ENC}" "no kmsOperation"
v encrypt '{"requestMetadata":{"kmsRequestId":"r","kmsOperation":"Encrypt","kmsKeyArn":"k"},'"$ENC}" "no awsPrincipalArn"
v encrypt '{"requestMetadata":{"kmsRequestId":"r","kmsOperation":"Encrypt","awsPrincipalArn":"a"},'"$ENC}" "no kmsKeyArn"
v metadata '{"requestMetadata":{"kmsRequestId":"r","kmsOperation":"DescribeKey"}}' "metadata without awsPrincipalArn"
v encrypt '{"requestMetadata":{"kmsRequestId":"r","kmsOperation":"Encrypt","awsPrincipalArn":5,"kmsKeyArn":"k"},'"$ENC}" "awsPrincipalArn not a string"
v encrypt "{\"requestMetadata\":{\"kmsRequestId\":\"r\",\"kmsOperation\":\"Encrypt\",\"awsPrincipalArn\":\"$(head -c 2049 /dev/zero | tr '\0' a)\",\"kmsKeyArn\":\"k\"},$ENC}" "awsPrincipalArn over 2048"
v encrypt "{$MD,\"encryptionAlgorithm\":\"AES_GCM\"}" "no plaintext"
v encrypt "{$MD,\"plaintext\":\"$PT\"}" "no encryptionAlgorithm"
v encrypt "{$MD,\"plaintext\":\"$PT\",\"encryptionAlgorithm\":\"AES_CBC\"}" "encryptionAlgorithm AES_CBC"
v encrypt "{$MD,$ENC,\"ciphertextDataIntegrityValueAlgorithm\":\"SHA_512\"}" "CDIV algorithm SHA_512"
v encrypt "{$MD,\"plaintext\":\"aGVsbG8\",\"encryptionAlgorithm\":\"AES_GCM\"}" "Base64 without padding"
v encrypt "{$MD,\"plaintext\":\"aGV sbG8=\",\"encryptionAlgorithm\":\"AES_GCM\"}" "Base64 with a space"
v encrypt "{$MD,\"plaintext\":\"aGVs-G8=\",\"encryptionAlgorithm\":\"AES_GCM\"}" "Base64 url alphabet"
v encrypt "{$MD,\"plaintext\":\"aGVsbG9=\",\"encryptionAlgorithm\":\"AES_GCM\"}" "Base64 non-canonical padding bits"
v decrypt "{$MD,\"ciphertext\":\"$CT\",\"encryptionAlgorithm\":\"AES_GCM\",\"initializationVector\":\"AAAAAAAAAAA=\",\"authenticationTag\":\"$TAG\"}" "8-byte IV"
v decrypt "{$MD,\"ciphertext\":\"$CT\",\"encryptionAlgorithm\":\"AES_GCM\",\"initializationVector\":\"$IV\",\"authenticationTag\":\"AAAAAAAAAAAAAAAAAAAA\"}" "15-byte tag"
v decrypt "{$MD,$DEC,\"ciphertextMetadata\":\"$(head -c 21 /dev/zero | base64 -w0)\"}" "21-byte ciphertextMetadata"
v decrypt "{$MD,\"encryptionAlgorithm\":\"AES_GCM\",\"initializationVector\":\"$IV\",\"authenticationTag\":\"$TAG\"}" "no ciphertext"
v encrypt "[1,2]" "body not an object"
v encrypt "{$MD,$ENC" "truncated JSON"
call demo-key encrypt '{"requestMetadata":{"kmsRequestId":"r","kmsOperation":"SomeFutureOperation","awsPrincipalArn":"a","kmsKeyArn":"k","newField":1},"newTop":true,'"$ENC}"
expect "unknown kmsOperation and unknown fields accepted" 200
xks_curl "$A_AKID" "$A_SECRET" $P/health '{"requestMetadata":{"kmsOperation":"KmsHealthCheck"}}'
expect "health without kmsRequestId" 400 ValidationException

# --- GetHealthStatus
xks_curl "$A_AKID" "$A_SECRET" $P/health '{"requestMetadata":{"kmsRequestId":"h1","kmsOperation":"UpdateCustomKeyStore"}}'
expect "GetHealthStatus" 200
expect_eq "one fleet entry" "$(json ekmFleetDetails | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" 1
expect_eq "token ACTIVE" "$(json ekmFleetDetails.0.healthStatus)" ACTIVE

# --- the request log: kmsRequestId yes, plaintext never
grep -q 'kmsRequestId=REQ-ID-1' "$T/daemon.log" && ok "log has the kmsRequestId" || not_ok "kmsRequestId not logged"
grep -q 'awsPrincipalArn=arn:aws:iam::111122223333:user/alice' "$T/daemon.log" && ok "log has the principal" || not_ok "principal not logged"
hits=0
for s in "$PLAIN" "$PT" "$AAD" "$BIGPT" "$A_SECRET" "$PIN"; do
	grep -qF -- "$s" "$T/daemon.log" && hits=$((hits + 1))
done
expect_eq "plaintext, AAD, secret or PIN in the log" "$hits" 0
xks_stop
expect_eq "clean exit" "$STOP_RC" 0
xks_done
