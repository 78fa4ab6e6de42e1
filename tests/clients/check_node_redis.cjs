// node-redis v5 (npm `redis`) in RESP3 mode against a running
// distcache-proxy: `createClient({ RESP: 3 })` opens with HELLO 3 (and
// SETNAME when named), then CLIENT SETINFO. Run by scripts/check-clients.sh:
// `node check_node_redis.cjs PORT`, with NODE_PATH naming its node_modules.
'use strict';

const assert = require('node:assert/strict');
const { test, before, after } = require('node:test');
const { createClient } = require('redis');

const url = `redis://127.0.0.1:${process.argv[2] || 6380}`;
let c;

before(async () => {
  c = createClient({ url, RESP: 3, name: 'node-app' });
  c.on('error', (e) => console.error('client error', e));
  await c.connect();
});

after(async () => {
  await c.close();
});

test('the connection speaks RESP3 and HELLO answers a map', async () => {
  const hello = await c.sendCommand(['HELLO']);
  assert.equal(hello.proto, 3);
  assert.equal(hello.server, 'redis');
  assert.equal(hello.version, '7.2.0');
  assert.deepEqual(hello.modules, []);
  assert.equal(await c.clientGetName(), 'node-app', 'HELLO 3 SETNAME');
});

test('the README examples', async () => {
  assert.equal(await c.set('user:123', '{"name":"Alice"}'), 'OK');
  assert.equal(await c.get('user:123'), '{"name":"Alice"}');
});

test('nulls, integers and strings', async () => {
  await c.del(['js:k', 'js:n']);
  assert.equal(await c.get('js:missing'), null);
  assert.equal(await c.set('js:k', 'v'), 'OK');
  assert.equal(await c.set('js:k', 'x', { condition: 'NX' }), null);
  assert.deepEqual(await c.mGet(['js:k', 'js:missing']), ['v', null]);
  assert.equal(await c.exists(['js:k', 'js:missing']), 1);
  assert.equal(await c.ttl('js:missing'), -2);
  assert.equal(await c.ttl('js:k'), -1);
  assert.equal(await c.incr('js:n'), 1);
  assert.equal(await c.getDel('js:missing'), null);
  assert.equal(await c.del(['js:k', 'js:n', 'js:missing']), 2);
});

test('INFO arrives as text', async () => {
  const info = await c.info();
  assert.match(info, /^# Server\r\nredis_version:7\.2\.0\r\n/);
});

test('concurrent commands are pipelined and answered in order', async () => {
  const replies = await Promise.all([
    c.set('js:p', '1'),
    c.get('js:p'),
    c.get('js:missing'),
    c.mGet(['js:missing', 'js:p']),
  ]);
  assert.deepEqual(replies, ['OK', '1', null, [null, '1']]);
});

test('errors keep the connection', async () => {
  await assert.rejects(c.sendCommand(['HELLO', '4']), /^.*NOPROTO unsupported protocol version/);
  await assert.rejects(c.sendCommand(['FLUSHALL']), /unknown command 'FLUSHALL'/);
  assert.equal(await c.ping(), 'PONG');
  assert.equal((await c.sendCommand(['HELLO'])).proto, 3);
});
