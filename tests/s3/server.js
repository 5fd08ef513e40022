#!/usr/bin/env node
// tests/s3/server.js: the loopback S3 server of ltvfs's tests.
//
// @20minutes/s3rver 5.0.0 (npm; real SigV4 verification, ListObjectsV2 with
// continuation tokens, range GETs) started in-process, with the two gaps it
// has patched here, leaving node_modules untouched (after the reference
// /work/shared/tools/s3server.js):
//   * conditional PUT: If-None-Match: * -> 412 if the key exists;
//     If-Match: <etag> -> 412 on mismatch, 404 NoSuchKey if missing (AWS
//     semantics since Nov 2024). PUTs are serialised per key, so two racing
//     If-None-Match: * PUTs cannot both win. Checked after authentication.
//   * suffix ranges: Range: bytes=-N returns the last N bytes (s3rver itself
//     answers bytes 0..N-1).
//
// usage: node --openssl-legacy-provider tests/s3/server.js
//          [--port N|0] [--dir DIR] [--bucket NAME]... [--parent-pid PID]
//          [--tls-cert FILE --tls-key FILE]
//   --port 0 picks a free port. Once listening it prints exactly one line,
//     "s3server listening on http://127.0.0.1:PORT dir=DIR buckets=a,b",
//     which launchers parse for the port.
//   --tls-cert/--tls-key: serve HTTPS with that certificate (PEM) instead;
//     the line then says https://.
//   --parent-pid PID: exit when that process is gone, so a crashed test never
//     leaves a server behind.
//   --openssl-legacy-provider is needed on Node >= 17: s3rver makes
//     continuation tokens with DES; without it a truncated listing answers 500.
// Credentials: access key S3RVER, secret S3RVER (s3rver's built-in account),
// any region. The package is resolved from the project's .npm-deps (check.sh
// runs `npm install --prefix .npm-deps @20minutes/s3rver@5.0.0`), or from
// $LTVFS_NPM_DEPS/node_modules. It works on Node 20 although the package
// declares engines >= 24.
'use strict';
const path = require('node:path');
const fs = require('node:fs');

const searchPaths = [
  process.env.LTVFS_NPM_DEPS && path.join(process.env.LTVFS_NPM_DEPS, 'node_modules'),
  path.join(__dirname, '..', '..', '.npm-deps', 'node_modules'),
  __dirname,
].filter(Boolean);
function mod(p) {
  let file;
  try {
    file = require.resolve(`@20minutes/s3rver/${p}`, { paths: searchPaths });
  } catch (e) {
    console.error(`s3server: @20minutes/s3rver not found in ${searchPaths.join(', ')}; ` +
      'run: npm install --prefix .npm-deps @20minutes/s3rver@5.0.0');
    process.exit(2);
  }
  return require(file);
}
const S3rver = mod('lib/s3rver.js');
const objectCtrl = mod('lib/controllers/object.js');
const S3Error = mod('lib/models/error.js');

const args = process.argv.slice(2);
const opt = (name, def) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : def; };
const buckets = args.flatMap((a, i) => (a === '--bucket' ? [args[i + 1]] : []));
const port = Number(opt('--port', process.env.PORT || 0));
const dir = opt('--dir', process.env.DIR || '/tmp/s3data');
const parentPid = Number(opt('--parent-pid', 0));
const tlsCert = opt('--tls-cert', '');
const tlsKey = opt('--tls-key', '');
fs.mkdirSync(dir, { recursive: true });

// Per-key serialisation of PUTs, so a condition check and the write are one
// step as far as other PUTs of the same key are concerned.
const locks = new Map();
async function withKeyLock(key, fn) {
  const prev = locks.get(key) || Promise.resolve();
  let release;
  const mine = new Promise((r) => (release = r));
  const chained = prev.then(() => mine);
  locks.set(key, chained);
  await prev;
  try { return await fn(); } finally {
    release();
    if (locks.get(key) === chained) locks.delete(key);
  }
}
async function metaOrNull(ctx) {
  try { return await ctx.store.getMetadata(ctx.params.bucket, ctx.params.key); } catch { return null; }
}

const origPut = objectCtrl.putObject;
objectCtrl.putObject = (ctx) => withKeyLock(`${ctx.params.bucket}/${ctx.params.key}`, async () => {
  const inm = ctx.get('if-none-match');
  const im = ctx.get('if-match');
  if (inm || im) {
    const meta = await metaOrNull(ctx);
    if (inm) {
      if (inm.trim() !== '*') throw new S3Error('NotImplemented', 'If-None-Match on PUT only supports *');
      if (meta) throw new S3Error('PreconditionFailed', 'At least one of the pre-conditions you specified did not hold', { Condition: 'If-None-Match' });
    }
    if (im) {
      if (!meta) throw new S3Error('NoSuchKey', 'The specified key does not exist.', { Key: ctx.params.key });
      const want = im.split(',').map((s) => s.trim());
      if (!want.includes('*') && !want.includes(meta.etag) && !want.includes(JSON.parse(meta.etag)))
        throw new S3Error('PreconditionFailed', 'At least one of the pre-conditions you specified did not hold', { Condition: 'If-Match' });
    }
  }
  return origPut(ctx);
});

const origGet = objectCtrl.getObject;
objectCtrl.getObject = async (ctx) => {
  const m = /^bytes=-(\d+)$/.exec(ctx.get('range') || '');
  if (m) {
    const meta = await metaOrNull(ctx);
    if (meta) {
      const n = Number(m[1]), size = Number(meta['content-length']);
      if (n === 0 || size === 0) throw new S3Error('InvalidRange', 'The requested range is not satisfiable', { RangeRequested: ctx.get('range'), ActualObjectSize: size });
      ctx.request.header.range = `bytes=${Math.max(0, size - n)}-`;
    }
  }
  return origGet(ctx);
};

const server = new S3rver({
  port, address: '127.0.0.1', directory: dir, silent: !process.env.S3_VERBOSE, vhostBuckets: false,
  configureBuckets: buckets.map((name) => ({ name, configs: [] })),
  ...(tlsCert ? { cert: fs.readFileSync(tlsCert), key: fs.readFileSync(tlsKey) } : {}),
});
server.run().then((addr) => {
  const scheme = tlsCert ? 'https' : 'http';
  console.log(`s3server listening on ${scheme}://127.0.0.1:${addr.port} dir=${dir} buckets=${buckets.join(',') || '-'}`);
}).catch((e) => { console.error(e); process.exit(1); });

const quit = () => process.exit(0);
process.on('SIGTERM', quit);
process.on('SIGINT', quit);
if (parentPid > 0) {
  setInterval(() => {
    try { process.kill(parentPid, 0); } catch { process.exit(0); }
  }, 500).unref();
}
