#!/usr/bin/env python3
"""Writes the seed inputs of every fuzz target into fuzz/seeds/<target>/.

Valid inputs of each format, so the fuzzer starts from the shapes real
clients, nodes and operators produce. scripts/fuzz.sh merges them into
fuzz/corpus/<target>/ (minimized with `cargo fuzz cmin`); the corpus is
what is committed and replayed by `cargo test --workspace`. The layouts
of the structured inputs are documented in each target's body (see
docs/fuzzing.md).
"""
import base64
import hashlib
import hmac
import json
import os
import struct
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def resp(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a.encode() if isinstance(a, str) else a
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def resp_request():
    reqs = [
        resp("GET", "k"),
        resp("SET", "k", "v", "EX", "10") + resp("GET", "k"),
        resp("MSET", "a", "1", "b", "2") + b"*0\r\n*-1\r\n",
        resp("SET", "k", b"\x00\r\n\xff" * 3),
        b"PING\r\n",
        b'SET "a b" \'c d\' "\\n\\r\\t\\0\\"\\\\"\r\n',
        b"GET k\nGET j\r\n\r\n",
        b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPI",
        b"*1\r\n$+3\r\nGET\r\n*1\r\n$03\r\nGET\r\n",
        b"*9223372036854775807\r\n",
        b"*1\r\n$-1\r\n",
        b"*2\r\n:3\r\n",
    ]
    for i, r in enumerate(reqs):
        for flags in (0, 2, 4 * 3):
            put("resp_request", "seed-%02d-%d" % (i, flags), bytes([flags]) + r)


def resp_command():
    raw = [
        "GET k", "SET k v", "SET k v NX GET EX 10", "SET k v xx keepttl get",
        "SET k v PXAT 1700000000000", "SET k v EX 0", "SET k v EX", "SETNX k v",
        "SETEX k 10 v", "PSETEX k 0 v", "GETSET k v", "GETDEL k", "DEL a b c",
        "UNLINK a", "EXISTS a b", "MGET a b", "MSET a 1 b 2", "MSET a",
        "EXPIRE k 10", "PEXPIRE k 10 NX", "EXPIREAT k 1700000000 GT",
        "PEXPIREAT k -5 LT", "EXPIRE k 10 XX GT", "TTL k", "PTTL k", "PERSIST k",
        "INCR k", "DECR k", "INCRBY k 5", "DECRBY k -9223372036854775808",
        "APPEND k v", "STRLEN k", "DBSIZE", "INFO", "INFO keyspace", "SELECT 0",
        "AUTH tok", "AUTH user tok", "HELLO 3 AUTH default tok SETNAME app",
        "HELLO x", "QUIT", "COMMAND", "COMMAND COUNT", "CLIENT SETNAME app",
        "CLIENT GETNAME", "CLIENT ID", "CLIENT SETINFO lib-name x", "CLIENT NO-EVICT on",
        "CLIENT KILL", "PING", "PING hi", "ECHO hi", "FLUSHALL a b", "",
    ]
    for i, r in enumerate(raw):
        put("resp_command", "raw-%02d" % i, b"\x00" + r.encode())
    # Structured: mode = 1 | shape << 1; then word indexes (see WORDS).
    words = ["NX", "XX", "GT", "LT", "GET", "KEEPTTL", "EX", "PX", "EXAT", "PXAT"]
    w = {x: i for i, x in enumerate(words)}
    TEN, ZERO, NEG = 20, 21, 23
    shapes = [
        (0, [w["NX"], w["GET"], w["EX"], TEN]),
        (0, [w["XX"], w["KEEPTTL"]]),
        (0, [w["PXAT"], TEN, w["GET"], w["GET"]]),
        (1, [w["EX"], ZERO]),
        (2, [TEN]),
        (3, [TEN, w["NX"]]),
        (4, [NEG, w["GT"]]),
        (5, [TEN, w["LT"]]),
        (6, [TEN]),
        (7, [ZERO]),
    ]
    for i, (shape, idx) in enumerate(shapes):
        put("resp_command", "structured-%02d" % i, bytes([1 | shape << 1] + idx))


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(num, wire, payload):
    key = varint(num << 3 | wire)
    if wire == 0:
        return key + varint(payload)
    return key + varint(len(payload)) + payload


def proto_decode():
    get = field(1, 2, b"key")
    setr = field(1, 2, b"k") + field(2, 2, b"value") + field(3, 0, 5000) + field(4, 0, 1) + field(6, 0, 1)
    delete = field(1, 2, b"k") + field(2, 0, 7) + field(3, 0, 1)
    cas = field(1, 2, b"k") + field(2, 0, 3) + field(3, 2, b"v") + field(4, 0, 10)
    incr = field(1, 2, b"k") + field(2, 0, 9)  # sint64 zigzag
    expire = field(1, 2, b"k") + field(2, 0, 1000) + field(3, 0, 2)
    ops = [field(1, 2, get), field(2, 2, setr), field(3, 2, delete), field(4, 2, cas), field(5, 2, incr), field(6, 2, expire)]
    batch = b"".join(field(1, 2, o) for o in ops)
    pipeline = field(1, 0, 42) + b"".join(field(2, 2, o) for o in ops)
    err = field(1, 0, 8) + field(2, 2, b"answer full") + field(3, 0, 1)
    results = [field(1, 2, field(1, 0, 1) + field(2, 2, b"v") + field(3, 0, 5)), field(15, 2, err)]
    seeds = {
        0: get, 1: setr, 2: delete, 3: cas, 4: incr, 5: expire, 6: batch, 7: pipeline,
        8: b"", 9: field(1, 0, 1), 10: ops[1],
        11: field(1, 0, 1) + field(2, 2, b"v") + field(3, 0, 9) + field(4, 0, 100),
        12: field(1, 0, 1) + field(2, 0, 9), 13: field(1, 0, 1) + field(3, 2, b"old"),
        14: field(1, 0, 1), 15: field(1, 0, 3), 16: field(1, 0, 1),
        17: b"".join(field(1, 2, r) for r in results),
        18: field(1, 0, 42) + b"".join(field(2, 2, r) for r in results),
        19: field(1, 0, 1) + field(2, 2, b"node-1") + field(7, 2, b"0.1.0"),
        20: field(1, 2, b"# HELP x\n") + field(2, 2, b"text/plain"),
    }
    for which, body in seeds.items():
        put("proto_decode", "msg-%02d" % which, bytes([which]) + body)
    # An unknown field, a packed-looking field and a duplicated oneof.
    put("proto_decode", "unknown-field", bytes([1]) + field(99, 2, b"x") + setr)
    put("proto_decode", "oneof-twice", bytes([10]) + ops[0] + ops[1])


NOW = 1_700_000_000


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def sign(kid, secret, claims):
    signed = "dc1.%s.%s" % (kid, b64(claims.encode()))
    sig = hmac.new(secret, signed.encode(), hashlib.sha256).digest()
    return "%s.%s" % (signed, b64(sig))


def token():
    now = struct.pack("<Q", NOW)
    good = json.dumps({"sub": "alice", "role": "user", "iat": NOW, "exp": NOW + 3600})
    admin = json.dumps({"sub": "ops", "role": "admin", "iat": NOW - 10, "exp": NOW + 60})
    put("token", "signed-k1", b"\x00" + now + sign("k1", b"fuzzing-secret-one", good).encode())
    put("token", "signed-k2", b"\x00" + now + sign("k2", b"fuzzing-secret-two", admin).encode())
    put("token", "unknown-key", b"\x00" + now + sign("k9", b"x", good).encode())
    put("token", "malformed", b"\x00" + now + b"dc1.k1.e30.AAAA")
    put("token", "claims", b"\x01" + now + good.encode())
    put("token", "claims-readonly", b"\x01" + now + json.dumps({"sub": " x ", "role": "read-only", "iat": 0, "exp": 2 ** 64 - 1}).encode())
    put("token", "claims-extra", b"\x01" + now + b'{"sub":"a","role":"admin","iat":1700000000,"exp":1700000001,"x":[1]}')
    put("token", "key-file", b"\x02" + now + b"# rotation\nk1: old-secret\n\nk2:new-secret:with:colons\n")


def units():
    for i, s in enumerate(["64MiB", "1GiB", "512Mi", "512k", "1024", " 2 MiB ", "16TiB", "0",
                           "250ms", "30s", "5m", "2h", "30d", "18446744073709551615",
                           "17179869183Gi", '"64MiB"', "1048576", '"30s"', "3600"]):
        put("units", "u-%02d" % i, s)


def membership():
    put("membership_file", "two-nodes", '[cluster]\nnodes = ["http://10.0.0.1:7001", " 10.0.0.2:7001 "]\n')
    put("membership_file", "comments", '# nodes\n[cluster] # the ring\nnodes = [\n  "a:1", # one\n  \'b:2\',\n  """c:3""",\n]\n')
    put("membership_file", "unknown-key", '[cluster]\nnode = ["a:1"]\n')
    put("membership_file", "inline-table", 'cluster = { nodes = ["http://[::1]:7001"] }\n')
    put("membership_http", "consul", json.dumps([
        {"Node": {"Node": "n1", "Address": "10.0.0.1"}, "Service": {"ID": "d1", "Address": "10.1.0.1", "Port": 7001}, "Checks": [{"Status": "passing"}]},
        {"Node": {"Address": "10.0.0.2"}, "Service": {"Address": "", "Port": 7002}},
        {"Node": {"Address": "fe80::1"}, "Service": {"Port": 7003}},
    ]))
    put("membership_http", "urls", '["http://10.0.0.1:7001", " 10.0.0.2:7001 "]')
    put("membership_http", "mixed", '["a:1", {"Service": {"Address": "b", "Port": 2}}]')
    put("membership_http", "dns", "dns://distcache.default.svc.cluster.local:7001")
    put("membership_http", "dns-srv", "dns+srv://_grpc._tcp.distcache.default.svc.cluster.local")
    put("membership_http", "http", "http://127.0.0.1:8500/v1/health/service/distcache?passing")


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def frame(seq, body):
    crc = crc32c(struct.pack("<I", len(body)) + struct.pack("<Q", seq) + body)
    return struct.pack("<IIQ", len(body), crc, seq) + body


def put_rec(key, value, version, expires):
    return b"\x01" + struct.pack("<QQ", version, expires) + struct.pack("<I", len(key)) + key + struct.pack("<I", len(value)) + value


def tomb(key, version, expires):
    return b"\x02" + struct.pack("<QQ", version, expires) + struct.pack("<I", len(key)) + key


def end(count):
    return b"\x03" + struct.pack("<Q", count)


def forget(below, ranges):
    return b"\x04" + struct.pack("<QI", below, len(ranges)) + b"".join(struct.pack("<QQ", a, b) for a, b in ranges)


def header(magic, seq, fmt=1):
    head = magic + struct.pack("<IIQ", fmt, 0, seq)
    return head + struct.pack("<II", crc32c(head), 0)


def file_entry(tag, seq, content):
    return bytes([tag, seq]) + struct.pack("<H", len(content)) + content


def wal():
    T = 1_700_000_000_000
    seg1 = header(b"DCACHWAL", 1) + frame(1, put_rec(b"a", b"1", 10, 0)) + frame(2, put_rec(b"b", b"2", 11, T + 60_000)) + frame(3, tomb(b"a", 12, T + 60_000))
    seg4 = header(b"DCACHWAL", 4) + frame(4, put_rec(b"c", b"3", 13, 0)) + frame(5, put_rec(b"d", b"", 14, T - 1))
    snap = header(b"DCACHSNP", 3) + frame(1, put_rec(b"b", b"2", 11, 0)) + frame(2, tomb(b"a", 12, T + 60_000)) + frame(3, end(2))
    torn = seg4 + frame(6, put_rec(b"e", b"torn", 15, 0))[:20]
    # Format 2: a forget of half the ring between writes.
    seg_forget = header(b"DCACHWAL", 1, 2) + frame(1, put_rec(b"a", b"1", 10, 0)) + frame(2, forget(11, [(0, 1 << 63), ((1 << 64) - 2, 5)])) + frame(3, put_rec(b"b", b"2", 12, 0))
    repair = 2 | 8  # repair headers and checksums, renumber frames
    seeds = {
        "wal-only": (repair, file_entry(0, 1, seg1) + file_entry(0, 4, seg4)),
        "snapshot-and-wal": (repair, file_entry(1, 3, snap) + file_entry(0, 1, seg1) + file_entry(0, 4, seg4)),
        "torn-tail": (repair, file_entry(0, 1, seg1) + file_entry(0, 4, torn)),
        "damaged-middle": (repair, file_entry(0, 1, seg1) + file_entry(0, 4, seg4)),
        "skip-corrupt": (repair | 1, file_entry(0, 1, seg1) + file_entry(0, 4, seg4)),
        "leftovers": (repair, file_entry(2, 9, snap) + file_entry(3, 1, seg1) + file_entry(0, 4, header(b"DCACHWAL", 4))),
        "fit-lengths": (repair | 4, file_entry(0, 1, seg1) + file_entry(1, 3, snap)),
        "valid-as-written": (0, file_entry(0, 1, seg1) + file_entry(1, 3, snap)),
        "near-max": (repair, file_entry(0x80, 1, seg1) + file_entry(0x81, 0, snap)),
        "forget": (repair, file_entry(0, 1, seg_forget)),
    }
    for name, (flags, files) in seeds.items():
        damage = 2 if name in ("damaged-middle", "skip-corrupt") else 0
        put("wal_recovery", name, bytes([flags, damage]) + files)
    put("wal_record", "body-put", put_rec(b"key", b"value", 7, 0))
    put("wal_record", "body-tombstone", tomb(b"key", 8, T))
    put("wal_record", "body-end", end(3))
    put("wal_record", "body-forget", forget(11, [(0, 1 << 63), ((1 << 64) - 2, 5)]))
    put("wal_record", "segment-format-2", seg_forget)
    put("wal_record", "segment", seg1)
    put("wal_record", "snapshot", snap)


if __name__ == "__main__":
    for gen in (resp_request, resp_command, proto_decode, token, units, membership, wal):
        gen()
    print("seeds written to", ROOT, file=sys.stderr)
