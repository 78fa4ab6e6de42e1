"""A fixed-window rate limiter in Python, on distcache through its Redis sidecar.

    cargo run -p distcache-proxy -- --dev        # Redis protocol on 127.0.0.1:6380
    pip install redis                            # redis-py (8 speaks RESP3 by default)
    python3 examples/python/rate_limiter.py      # in another terminal

A small HTTP service (the standard library's http.server) answers
``GET /hello`` at most LIMIT times per client per WINDOW seconds. The count
lives in the cache, so every instance of the service shares it: each request
sends ``INCR ratelimit:{client}:{window number}`` and ``EXPIRE … NX`` in one
round trip (a pipeline without MULTI, which the proxy does not serve). The
first request of a window starts the key's expiry; NX keeps later ones from
pushing it back, and a client that died between the two commands is mended
by the next request's EXPIRE. The key's name changes with the window, so a
new window starts at 0.

Without arguments it starts the service on a free port, plays two clients
against it, checks every answer and prints ``rate limiter ok`` (exit status
1 if an answer is wrong). ``--serve`` keeps serving afterwards (Ctrl-C
stops it): ``curl -i -H 'x-client-id: me' http://127.0.0.1:PORT/hello``.
"""

import argparse
import http.server
import secrets
import sys
import threading
import time
import urllib.error
import urllib.request

import redis


class FixedWindow:
    """At most ``limit`` hits per client in each ``window_s``-second window."""

    def __init__(self, r, limit, window_s, prefix="ratelimit"):
        self.r, self.limit, self.window_s, self.prefix = r, limit, window_s, prefix

    def key(self, client, now):
        return f"{self.prefix}:{client}:{int(now // self.window_s)}"

    def hit(self, client):
        """Counts a hit: (allowed, hits left in this window, seconds until it ends)."""
        now = time.time()
        key = self.key(client, now)
        pipe = self.r.pipeline(transaction=False)
        pipe.incr(key)
        # A second more than the window: the key outlives its window a little
        # (clocks of service instances differ); its name changes anyway.
        pipe.expire(key, self.window_s + 1, nx=True)
        count, _ = pipe.execute()
        reset = self.window_s - now % self.window_s
        return count <= self.limit, max(0, self.limit - count), reset


def service(limiter, port=0):
    """The HTTP service, started in a thread; returns the server."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != "/hello":
                self.send_error(404)
                return
            client = self.headers.get("x-client-id") or self.client_address[0]
            try:
                allowed, left, reset = limiter.hit(client)
            except redis.RedisError as e:
                # Fail open: the cache being down must not take the API down.
                self.log_error("rate limiter unavailable: %s", e)
                allowed, left, reset = True, 0, 0
            body = b"hello\n" if allowed else b"too many requests\n"
            self.send_response(200 if allowed else 429)
            self.send_header("x-ratelimit-limit", str(limiter.limit))
            self.send_header("x-ratelimit-remaining", str(left))
            self.send_header("x-ratelimit-reset", str(max(1, round(reset))))
            if not allowed:
                self.send_header("retry-after", str(max(1, round(reset))))
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass  # quiet: the demo prints what matters

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def get(url, client):
    """GET url as `client`: (status, x-ratelimit-remaining)."""
    req = urllib.request.Request(url, headers={"x-client-id": client})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.headers["x-ratelimit-remaining"]
    except urllib.error.HTTPError as e:
        return e.code, e.headers["x-ratelimit-remaining"]


def check(what, got, want):
    print(f"{what}: {got}")
    if got != want:
        sys.exit(f"rate limiter FAILED: {what}: expected {want}, got {got}")


def demo(r, url, limiter):
    run = secrets.token_hex(4)  # a fresh client name per run: no counts from earlier runs
    alice, bob = f"alice-{run}", f"bob-{run}"
    # A burst must fall in one window: wait for the next one if this ends soon.
    left = limiter.window_s - time.time() % limiter.window_s
    if left < 2:
        time.sleep(left)
    statuses = [get(url, alice) for _ in range(limiter.limit + 3)]
    check(
        f"{limiter.limit + 3} requests from {alice} (limit {limiter.limit})",
        [s for s, _ in statuses],
        [200] * limiter.limit + [429] * 3,
    )
    check(
        "x-ratelimit-remaining",
        [n for _, n in statuses[: limiter.limit]],
        [str(n) for n in reversed(range(limiter.limit))],
    )
    check(f"a request from {bob}", get(url, bob)[0], 200)
    ttl = r.ttl(limiter.key(alice, time.time()))
    check("the counter expires within its window", 0 < ttl <= limiter.window_s + 1, True)

    # A new window starts at 0: a one-second window, polled until it rolls over.
    short = FixedWindow(r, 2, 1, prefix=f"ratelimit-short-{run}")
    left = 1 - time.time() % 1
    if left < 0.5:
        time.sleep(left)  # start early in a window: the three hits fall in it
    first = [short.hit("carol")[0] for _ in range(3)]
    check("3 hits in a one-second window of limit 2", first, [True, True, False])
    started = time.monotonic()
    while not short.hit("carol")[0]:
        if time.monotonic() - started > 5:
            sys.exit("rate limiter FAILED: the one-second window never rolled over")
        time.sleep(0.05)
    print(f"allowed again after {time.monotonic() - started:.2f} s (the next window)")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1", help="the proxy's Redis host")
    p.add_argument("--port", type=int, default=6380, help="the proxy's Redis port")
    p.add_argument("--limit", type=int, default=5, help="requests per client per window")
    p.add_argument("--window", type=int, default=60, help="window length, seconds")
    p.add_argument("--http-port", type=int, default=0, help="the service's port (0: any)")
    p.add_argument("--serve", action="store_true", help="keep serving after the demo")
    args = p.parse_args()

    r = redis.Redis(host=args.host, port=args.port)  # redis-py 8: RESP3 (HELLO 3)
    try:
        r.ping()
    except redis.ConnectionError as e:
        sys.exit(
            f"no Redis protocol at {args.host}:{args.port} ({e}); "
            "start `cargo run -p distcache-proxy -- --dev`"
        )
    limiter = FixedWindow(r, args.limit, args.window)
    server = service(limiter, args.http_port)
    url = f"http://127.0.0.1:{server.server_address[1]}/hello"
    print(f"rate-limited service on {url} ({args.limit} requests per client per {args.window} s)")
    demo(r, url, limiter)
    print("rate limiter ok")
    if args.serve:
        print(f"serving until Ctrl-C: curl -i -H 'x-client-id: me' {url}")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    server.shutdown()


if __name__ == "__main__":
    main()
