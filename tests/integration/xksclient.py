#!/usr/bin/env python3
"""An independent XKS test client: SigV4 signer (standard library only) and
HTTPS sender.  Used by the integration tests for what curl cannot produce:
shifted dates, other services, unsigned headers, a body changed after
signing, slow senders.

  xksclient.py URL --akid ID --secret S [--body JSON] [--method POST]
               [--date-offset SECONDS] [--service NAME] [--region R]
               [--signed-headers host;x-amz-date] [--tamper-body]
               [--content-sha256 VALUE] [--slow-body SECONDS]
               [--cacert F] [--cert F --key F] [--no-auth]
Prints "<status> <body>" on one line; exits 0 when a response came back.
"""
import argparse, datetime, hashlib, hmac, json, socket, ssl, sys, time
from urllib.parse import urlsplit


def sign(method, host, path, query, headers, body, akid, secret, region,
         service, amz_date, signed):
    names = signed.split(';')
    canon_headers = ''.join('%s:%s\n' % (n, ' '.join(headers[n].split()))
                            for n in names)
    creq = '\n'.join([method, path, query, canon_headers, signed,
                      hashlib.sha256(body).hexdigest()])
    scope = '%s/%s/%s/aws4_request' % (amz_date[:8], region, service)
    sts = '\n'.join(['AWS4-HMAC-SHA256', amz_date, scope,
                     hashlib.sha256(creq.encode()).hexdigest()])
    k = ('AWS4' + secret).encode()
    for part in (amz_date[:8], region, service, 'aws4_request'):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
    return 'AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s' % (
        akid, scope, signed, sig)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('url')
    ap.add_argument('--akid', default='')
    ap.add_argument('--secret', default='')
    ap.add_argument('--body', default='{}')
    ap.add_argument('--method', default='POST')
    ap.add_argument('--date-offset', type=int, default=0)
    ap.add_argument('--service', default='kms-xks-proxy')
    ap.add_argument('--region', default='us-east-1')
    ap.add_argument('--signed-headers', default='content-type;host;x-amz-date')
    ap.add_argument('--tamper-body', action='store_true')
    ap.add_argument('--content-sha256')
    ap.add_argument('--slow-body', type=float, default=0)
    ap.add_argument('--cacert')
    ap.add_argument('--cert')
    ap.add_argument('--key')
    ap.add_argument('--no-auth', action='store_true')
    ap.add_argument('--timeout', type=float, default=10)
    a = ap.parse_args()

    u = urlsplit(a.url)
    body = a.body.encode()
    now = datetime.datetime.now(datetime.timezone.utc) + \
        datetime.timedelta(seconds=a.date_offset)
    amz_date = now.strftime('%Y%m%dT%H%M%SZ')
    host = u.netloc
    headers = {'host': host, 'x-amz-date': amz_date,
               'content-type': 'application/json'}
    if a.content_sha256:
        headers['x-amz-content-sha256'] = a.content_sha256
    if not a.no_auth:
        headers['authorization'] = sign(a.method, host, u.path, u.query,
                                        headers, body, a.akid, a.secret,
                                        a.region, a.service, amz_date,
                                        a.signed_headers)
    if a.tamper_body:
        body = body.replace(b'"', b' "', 1)
    target = u.path + ('?' + u.query if u.query else '')
    head = '%s %s HTTP/1.1\r\n' % (a.method, target)
    for k, v in headers.items():
        head += '%s: %s\r\n' % (k, v)
    head += 'Content-Length: %d\r\nConnection: close\r\n\r\n' % len(body)

    ctx = ssl.create_default_context(cafile=a.cacert)
    if a.cert:
        ctx.load_cert_chain(a.cert, a.key)
    raw = socket.create_connection((u.hostname, u.port or 443), timeout=a.timeout)
    s = ctx.wrap_socket(raw, server_hostname=u.hostname)
    if a.slow_body:
        half = len(body) // 2
        s.sendall(head.encode() + body[:half])
        print('SENT-HALF', flush=True, file=sys.stderr)
        time.sleep(a.slow_body)
        s.sendall(body[half:])
    else:
        s.sendall(head.encode() + body)
    data = b''
    while True:
        try:
            chunk = s.recv(65536)
        except (ssl.SSLError, ConnectionError):
            break
        if not chunk:
            break
        data += chunk
    s.close()
    if not data:
        print('000 no-response')
        return 1
    status = data.split(b' ', 2)[1].decode()
    resp_body = data.split(b'\r\n\r\n', 1)[1].decode(errors='replace')
    print(status, resp_body)
    return 0


if __name__ == '__main__':
    sys.exit(main())
