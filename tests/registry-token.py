#!/usr/bin/env python3
"""registry-token.py: a Bearer token server for docker-registry's token auth, for the tests.

docker-registry (distribution 2.8) with `auth: token:` answers 401 with
`WWW-Authenticate: Bearer realm=...,service=...,scope=...`; the client gets a
token at the realm and retries with it.  This server plays that realm:

  GET /token?service=S&scope=repository:NAME:pull,push[&scope=...]

With Basic credentials that match a line of the users file it grants the
actions asked for that the user may do; anonymous requests get pull on the
repositories named public, nothing else; a wrong password or an unknown user
is 401.  The reply is {"token", "access_token", "expires_in": 300,
"issued_at"}.

The token is a JWT signed RS256 with KEY (openssl dgst, so nothing but the
standard library and the openssl CLI is needed), its certificate CERT in the
header's x5c: the registry verifies that certificate against its
rootcertbundle (the tests' throwaway CA), then the signature with its key,
then iss, aud (== service), exp and nbf (token.go in distribution 2.8).

Usage: registry-token.py --key KEY --cert CERT --issuer ISS --users FILE
           [--public REPO]... [--listen HOST:PORT] [--port-file F]
           [--tls-cert PEM --tls-key KEY] [--log FILE]

PORT 0 (the default) picks a free port, written to F once it listens (the
file appears whole).  The users file holds lines USER:PASSWORD[:ACTIONS]
(ACTIONS comma-separated, default pull,push).  Each request is one line in
the log: "METHOD PATH STATUS USER GRANTED", USER "-" when anonymous, GRANTED
the access given as type:name:actions joined by spaces, or "-".
"""

import argparse
import base64
import binascii
import datetime
import http.server
import json
import os
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid

TTL = 300


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def pem_der_b64(path):
    """The first certificate of a PEM file, as the standard base64 of its DER (what x5c holds)."""
    body, inside = [], False
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line == "-----BEGIN CERTIFICATE-----":
                inside = True
            elif line == "-----END CERTIFICATE-----":
                break
            elif inside:
                body.append(line)
    if not body:
        sys.exit(f"registry-token: {path}: no certificate")
    return "".join(body)


def load_users(path):
    users = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            parts = line.split(":")
            if len(parts) not in (2, 3) or not parts[0]:
                sys.exit(f"registry-token: {path}:{n}: want USER:PASSWORD[:ACTIONS]")
            actions = parts[2].split(",") if len(parts) == 3 else ["pull", "push"]
            users[parts[0]] = (parts[1], set(actions))
    return users


class Server:
    def __init__(self, args):
        self.key = args.key
        self.issuer = args.issuer
        self.x5c = [pem_der_b64(args.cert)]
        self.users = load_users(args.users)
        self.public = set(args.public)
        self.log = open(args.log, "a", buffering=1) if args.log else sys.stderr
        self.lock = threading.Lock()

    def sign(self, service, subject, access):
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": self.x5c}
        claims = {"iss": self.issuer, "sub": subject, "aud": service,
                  "exp": now + TTL, "nbf": now - 1, "iat": now,
                  "jti": uuid.uuid4().hex, "access": access}
        signed = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "." +
                  b64url(json.dumps(claims, separators=(",", ":")).encode()))
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.key],
                             input=signed.encode(), capture_output=True, check=True).stdout
        return signed + "." + b64url(sig), now

    def grant(self, scopes, allowed):
        """The access entries for the scopes asked: allowed(name) gives the actions permitted on NAME."""
        access = []
        for scope in scopes:
            # type:name:actions; a name may hold ':' in other resource types, so split at both ends.
            typ, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if not typ or not name:
                continue
            permitted = allowed(typ, name)
            given = [a for a in actions.split(",") if a in permitted]
            access.append({"type": typ, "name": name, "actions": given})
        return access

    def note(self, line):
        with self.lock:
            self.log.write(line + "\n")


def make_handler(srv):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_):
            pass

        def reply(self, status, body, user="-", granted="-", headers=()):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
            srv.note(f"{self.command} {self.path} {status} {user} {granted}")

        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            if url.path != "/token":
                return self.reply(404, {"errors": [{"code": "NOT_FOUND", "message": url.path}]})
            q = urllib.parse.parse_qs(url.query)
            service = q.get("service", [""])[0]
            scopes = q.get("scope", [])
            user = None
            auth = self.headers.get("Authorization", "")
            if auth[:6].lower() == "basic ":
                try:
                    user, _, password = base64.b64decode(auth[6:].strip(), validate=True).decode().partition(":")
                except (binascii.Error, UnicodeDecodeError):
                    user, password = "", None
                known = srv.users.get(user)
                if known is None or known[0] != password:
                    return self.reply(401, {"errors": [{"code": "UNAUTHORIZED",
                                                        "message": "wrong user name or password"}]},
                                      user=user or "?",
                                      headers=[("WWW-Authenticate", 'Basic realm="cfs-test-token"')])
                actions = known[1]
                access = srv.grant(scopes, lambda typ, name: actions if typ == "repository" else set())
            else:
                access = srv.grant(scopes, lambda typ, name:
                                   {"pull"} if typ == "repository" and name in srv.public else set())
            token, now = srv.sign(service, user or "", access)
            granted = " ".join(f"{a['type']}:{a['name']}:{','.join(a['actions'])}" for a in access) or "-"
            issued = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            self.reply(200, {"token": token, "access_token": token, "expires_in": TTL, "issued_at": issued},
                       user=user or "-", granted=granted)

    return Handler


def main():
    p = argparse.ArgumentParser(description="Bearer token server for docker-registry, for the tests")
    p.add_argument("--key", required=True, help="RSA private key that signs the tokens (PEM)")
    p.add_argument("--cert", required=True, help="its certificate, put in each token's x5c (PEM)")
    p.add_argument("--issuer", required=True)
    p.add_argument("--users", required=True, help="lines USER:PASSWORD[:ACTIONS]")
    p.add_argument("--public", action="append", default=[], help="repository anyone may pull")
    p.add_argument("--listen", default="127.0.0.1:0")
    p.add_argument("--port-file")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--log")
    args = p.parse_args()
    host, _, port = args.listen.rpartition(":")
    srv = Server(args)
    httpd = http.server.ThreadingHTTPServer((host, int(port)), make_handler(srv))
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{httpd.server_address[1]}\n")
        os.rename(tmp, args.port_file)
    httpd.serve_forever()


if __name__ == "__main__":
    main()
