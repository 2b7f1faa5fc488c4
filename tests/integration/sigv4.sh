#!/bin/sh
# SigV4 from outside with independent signers: curl --aws-sigv4 and a
# standard-library Python signer for what curl cannot produce.
. "${top_srcdir:-$(dirname "$0")/../..}/tests/integration/lib.sh"
xks_init
# credential B retires by itself 4 s after start (no reload)
NA=$(date -u -d '+6 seconds' +%Y-%m-%dT%H:%M:%SZ)
B_NOT_AFTER=", \"not_after\": \"$NA\""
xks_standard
xks_start "$T/xksproxy.conf"
P=/example/kms/xks/v1
HB='{"requestMetadata":{"kmsRequestId":"rq-sig","kmsOperation":"KmsHealthCheck"}}'
U="https://localhost:$PORT$P/health"
py() { $XKSCLIENT "$U" --cacert "$T/server.pem" --body "$HB" "$@" > "$T/py"; STATUS=$(cut -d' ' -f1 "$T/py"); BODY=$(cut -d' ' -f2- "$T/py"); }

xks_curl "$A_AKID" "$A_SECRET" $P/health "$HB"; expect "curl, credential A" 200
xks_curl "$B_AKID" "$B_SECRET" $P/health "$HB"; expect "curl, credential B (same key store)" 200
xks_curl "$C_AKID" "$C_SECRET" $P/health "$HB"; expect "curl, credential of another key store" 401 AuthenticationFailedException
xks_curl "$C_AKID" "$C_SECRET" /other/kms/xks/v1/health "$HB"; expect "curl, credential C on its own key store" 200
xks_curl "$A_AKID" "$B_SECRET" $P/health "$HB"; expect "curl, wrong secret" 401 AuthenticationFailedException

py --akid "$A_AKID" --secret "$A_SECRET"; expect "python signer, A" 200
py --akid "$A_AKID" --secret "$A_SECRET" --date-offset -240; expect "4 minutes old: inside the window" 200
py --akid "$A_AKID" --secret "$A_SECRET" --date-offset 240; expect "4 minutes ahead: inside the window" 200
py --akid "$A_AKID" --secret "$A_SECRET" --date-offset -360; expect "6 minutes old" 401 AuthenticationFailedException
py --akid "$A_AKID" --secret "$A_SECRET" --date-offset 360; expect "6 minutes ahead" 401 AuthenticationFailedException
py --akid "$A_AKID" --secret "$A_SECRET" --service kms; expect "another service" 401 AuthenticationFailedException
py --akid "$A_AKID" --secret "$A_SECRET" --signed-headers "content-type;x-amz-date"; expect "host not signed" 401 AuthenticationFailedException
py --akid "$A_AKID" --secret "$A_SECRET" --signed-headers "content-type;host"; expect "x-amz-date not signed" 401 AuthenticationFailedException
py --akid "$A_AKID" --secret "$A_SECRET" --tamper-body; expect "body changed after signing" 401 AuthenticationFailedException
py --akid "$A_AKID" --secret "$A_SECRET" --content-sha256 0000000000000000000000000000000000000000000000000000000000000000
expect "x-amz-content-sha256 not matching the body" 401 AuthenticationFailedException
py --akid "$A_AKID" --secret "$A_SECRET" --no-auth; expect "no Authorization" 401 AuthenticationFailedException
py --akid "AAAAAAAAAAAAAAAAAAAAAAAAAA" --secret "$A_SECRET"; expect "unknown access key id" 401 AuthenticationFailedException
py --akid "$A_AKID" --secret "$A_SECRET" --region eu-west-3; expect "any region accepted" 200

# not_after: B is refused once its time has passed, without a reload
while [ "$(date -u +%s)" -le "$(date -u -d "$NA" +%s)" ]; do sleep 0.5; done
xks_curl "$B_AKID" "$B_SECRET" $P/health "$HB"; expect "credential B after not_after" 401 AuthenticationFailedException
xks_curl "$A_AKID" "$A_SECRET" $P/health "$HB"; expect "credential A still accepted" 200

# the log names access key ids and reasons, never a secret or the PIN
grep -q "accessKeyId=$B_AKID" "$T/daemon.log" && ok "log names the access key id" || not_ok "akid not logged"
hits=0
for s in "$A_SECRET" "$B_SECRET" "$C_SECRET" "$PIN"; do
	grep -qF -- "$s" "$T/daemon.log" && hits=$((hits + 1))
done
expect_eq "secrets and PIN in the log" "$hits" 0
xks_stop
xks_done
