#!/usr/bin/env python3
"""A webhook receiver for trying spe's webhooks (README walkthrough, step 9): listens on PORT, checks each
delivery's X-Spe-Signature with SECRET, prints one line per event and answers 204 (401 when the signature
is wrong or older than five minutes). Standard library only.

    tools/webhook_receiver.py PORT SECRET
"""
import hashlib
import hmac
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer


def verify(secret: str, header: str, body: bytes, now: float, tolerance: float = 300) -> bool:
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", "")) and abs(now - t) <= tolerance


def handler(secret: str):
    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            ok = verify(secret, self.headers.get("X-Spe-Signature", ""), body, time.time())
            self.send_response(204 if ok else 401)
            self.end_headers()
            event = json.loads(body) if ok else {}
            dice = event.get("estimate", {}).get("metrics", {}).get("dice", {}).get("estimate")
            print(
                f"{'signed' if ok else 'BAD SIGNATURE'} {self.headers.get('X-Spe-Event')} "
                f"model={event.get('model', {}).get('name')} dice={dice} "
                f"alerts={len(event.get('estimate', {}).get('alerts', []))}",
                flush=True,
            )

        def log_message(self, *args):
            pass

    return Receiver


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    HTTPServer(("127.0.0.1", int(sys.argv[1])), handler(sys.argv[2])).serve_forever()
