"""redis-py 8 against a running distcache-proxy, with the client's defaults.

redis-py 8 opens every connection with ``HELLO 3`` (RESP3) and pipelines
``CLIENT SETINFO`` and ``CLIENT MAINT_NOTIFICATIONS`` behind it; these tests
use ``redis.Redis(port=...)`` as a new user would, plus one RESP2 client
(``protocol=2``) to show both protocols answer side by side.

Run by scripts/check-clients.sh: ``python check_redis_py.py PORT``.
"""

import sys
import unittest

import redis
import redis.backoff
import redis.retry

PORT = 6380


class RedisPyDefaults(unittest.TestCase):
    def setUp(self):
        self.r = redis.Redis(host="127.0.0.1", port=PORT)

    def tearDown(self):
        self.r.close()

    def test_the_default_connection_speaks_resp3(self):
        hello = self.r.execute_command("HELLO")
        self.assertEqual(hello[b"proto"], 3, hello)
        self.assertEqual(hello[b"server"], b"redis")
        # Below 7.4.0: redis-py must not try client-side caching (not served).
        self.assertEqual(hello[b"version"], b"7.2.0")
        self.assertEqual(hello[b"modules"], [])
        self.assertTrue(self.r.ping())

    def test_the_readme_examples(self):
        self.assertTrue(self.r.set("user:123", '{"name":"Alice"}'))
        self.assertEqual(self.r.get("user:123"), b'{"name":"Alice"}')

    def test_nulls_integers_and_strings(self):
        r = self.r
        r.delete("py:k", "py:n", "py:s")
        self.assertIsNone(r.get("py:missing"))
        self.assertTrue(r.set("py:k", "v"))
        self.assertIsNone(r.set("py:k", "x", nx=True))
        self.assertEqual(r.set("py:k", "w", get=True), b"v")
        self.assertEqual(r.mget("py:k", "py:missing"), [b"w", None])
        self.assertEqual(r.exists("py:k", "py:missing"), 1)
        self.assertEqual(r.ttl("py:missing"), -2)
        self.assertEqual(r.ttl("py:k"), -1)
        self.assertTrue(r.expire("py:k", 100))
        self.assertIn(r.ttl("py:k"), (99, 100))
        self.assertTrue(r.persist("py:k"))
        self.assertEqual(r.incr("py:n"), 1)
        self.assertEqual(r.incrby("py:n", 9), 10)
        self.assertEqual(r.append("py:s", "ab"), 2)
        self.assertEqual(r.strlen("py:s"), 2)
        self.assertEqual(r.getdel("py:s"), b"ab")
        self.assertIsNone(r.getdel("py:s"))
        self.assertEqual(r.delete("py:k", "py:n", "py:missing"), 2)
        self.assertIsInstance(r.dbsize(), int)

    def test_binary_values(self):
        value = bytes(range(256))
        self.r.set(b"py:bin\r\n\x00", value)
        self.assertEqual(self.r.get(b"py:bin\r\n\x00"), value)

    def test_info_arrives_as_a_verbatim_string_and_parses(self):
        info = self.r.info()
        self.assertEqual(info["redis_version"], "7.2.0")
        self.assertEqual(info["redis_mode"], "standalone")
        self.assertIn("connected_clients", info)

    def test_pipelines_are_answered_in_order(self):
        # transaction=False: MULTI/EXEC are not served by the proxy.
        p = self.r.pipeline(transaction=False)
        p.set("py:p", 1).get("py:p").get("py:missing").mget("py:missing", "py:p")
        self.assertEqual(p.execute(), [True, b"1", None, [None, b"1"]])

    def test_connection_commands(self):
        self.assertIsNone(self.r.client_getname())
        self.assertTrue(self.r.client_setname("py-app"))
        # redis-py decodes the name itself.
        self.assertEqual(self.r.client_getname(), "py-app")
        self.assertIsInstance(self.r.client_id(), int)

    def test_errors_keep_the_connection_and_its_protocol(self):
        with self.assertRaisesRegex(redis.ResponseError, "unknown command 'FLUSHALL'"):
            self.r.flushall()
        with self.assertRaisesRegex(redis.ResponseError, "^NOPROTO unsupported protocol version"):
            self.r.execute_command("HELLO", 4)
        with self.assertRaisesRegex(redis.ResponseError, "Syntax error in HELLO option"):
            self.r.execute_command("HELLO", 3, "AUTH", "only-a-user")
        self.assertEqual(self.r.execute_command("HELLO")[b"proto"], 3)

    def test_hello_auth_with_the_default_user(self):
        # Without --auth-secret-file the default user has no password, as in
        # Redis: redis-py sends HELLO 3 AUTH default <password>.
        r = redis.Redis(host="127.0.0.1", port=PORT, username="default", password="x")
        self.assertTrue(r.ping())
        r.close()
        # (No retries: redis-py 8 retries a refused login with backoff.)
        no_retry = redis.retry.Retry(redis.backoff.NoBackoff(), 0)
        r = redis.Redis(
            host="127.0.0.1", port=PORT, username="bob", password="x", retry=no_retry
        )
        with self.assertRaises(redis.AuthenticationError):
            r.ping()
        r.close()

    def test_client_side_caching_is_refused_rather_than_left_stale(self):
        # CLIENT TRACKING is not served (and the reported 7.2.0 is below the
        # 7.4.0 redis-py wants for it): a cache_config fails at connect time
        # instead of caching without invalidations.
        from redis.cache import CacheConfig

        r = redis.Redis(host="127.0.0.1", port=PORT, protocol=3, cache_config=CacheConfig())
        with self.assertRaisesRegex(
            (redis.ConnectionError, redis.ResponseError), "(?i)tracking|7.4 or later"
        ):
            r.get("py:k")
        r.close()

    def test_a_resp2_client_beside_it_is_answered_in_resp2(self):
        r = redis.Redis(host="127.0.0.1", port=PORT, protocol=2)
        hello = r.execute_command("HELLO")
        self.assertEqual(hello[hello.index(b"proto") + 1], 2, hello)
        self.assertIsNone(r.get("py:missing"))
        self.assertEqual(r.info()["redis_version"], "7.2.0")
        r.close()


if __name__ == "__main__":
    PORT = int(sys.argv.pop(1))
    unittest.main(verbosity=2)
