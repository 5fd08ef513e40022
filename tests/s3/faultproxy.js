#!/usr/bin/env node
// tests/s3/faultproxy.js: a loopback HTTP proxy that injects faults in front
// of tests/s3/server.js, for the s3:// backend's retry tests.
//
// The client talks to the proxy as if it were the S3 endpoint
// (endpoint=http://127.0.0.1:PROXYPORT): it signs for the proxy's host:port,
// and the proxy forwards every request unchanged (method, path, query, all
// headers including Host, body) to the upstream server, which verifies the
// SigV4 signature over exactly those bytes. So faults are injected without
// breaking signatures.
//
// usage: node tests/s3/faultproxy.js --upstream 127.0.0.1:PORT [--port N|0]
//                                    [--parent-pid PID]
// Once listening it prints one line: "faultproxy listening on
// http://127.0.0.1:PORT upstream=HOST:PORT".
//
// Fault modes (one at a time; each applies to the next n matching requests,
// n = -1 for all of them, then the proxy passes through again):
//   503        answer 503 SlowDown without forwarding (the request body is
//              drained so the connection stays usable)
//   429        answer 429 SlowDown without forwarding
//   status     answer status `code` (e.g. 500, 400) with an S3 error body
//   latency    wait `ms` milliseconds, then forward
//   reset      forward; send the response head and the first half of the
//              body, then reset the connection (TCP RST)
//   truncate   forward; send the head (its Content-Length promising the whole
//              body) and the first half of the body, then close (FIN)
//   as200      forward; a 206 answer goes out as 200 without Content-Range,
//              as from a server or cache that ignores Range (the body is
//              still the range's: a client must not take it for the object
//              from byte 0)
//   slow       forward; send the body after `ms` milliseconds, at `rate`
//              bytes a second (64 KiB at a time), as a straggling request; a
//              client that closes before the end is counted in the stats'
//              slowClosed
//   listsize   forward; in a ListObjectsV2 answer, report every object whose
//              key contains `key` with <Size> `size` (a server that lists an
//              upload in progress, or a stale listing); one per listing
//   none       pass everything through
// reset, truncate and slow only count responses that have a body, of at
// least `minsize` bytes when given.
// Filters: `method` (e.g. GET) and `match` (substring of the request path).
//
// Control (on the proxy's own port, plain unsigned GETs; "__fault" cannot be
// an S3 bucket name, so it never collides with a forwarded request):
//   GET /__fault/set?mode=503&n=3[&method=GET][&match=x][&ms=200][&code=500][&minsize=N][&rate=N]
//                   [&key=K&size=N]  (listsize)
//   GET /__fault/clear      back to pass-through, counters kept
//   GET /__fault/stats      {"requests":N,"injected":N,"connections":N,"mode":"...",...}
//                           (connections: client connections that carried S3
//                           requests since the last reset, so a test can see
//                           keep-alive reuse)
//   GET /__fault/reset-stats
// All answer with the stats JSON.
//
// Used as an HTTP proxy (http_proxy / https_proxy pointing at it), it
// forwards nothing: it records the target, so a test can see which host a
// client would have contacted (e.g. virtual-host addressing on AWS), and
// answers 502. Stats fields: lastProxyUrl (absolute-form request URL) and
// lastConnect (CONNECT host:port). The initial mode can also come from the
// environment: FAULT_MODE=503 FAULT_N=3 FAULT_MS=.. FAULT_METHOD=.. FAULT_MATCH=..
'use strict';
const http = require('node:http');

const args = process.argv.slice(2);
const opt = (name, def) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : def; };
const [upHost, upPortStr] = String(opt('--upstream', process.env.FAULT_UPSTREAM || '')).split(':');
const upPort = Number(upPortStr);
if (!upHost || !upPort) {
  console.error('faultproxy: --upstream HOST:PORT is required');
  process.exit(2);
}
const port = Number(opt('--port', process.env.FAULT_PORT || 0));
const parentPid = Number(opt('--parent-pid', 0));

const MODES = new Set(['none', '503', '429', 'status', 'latency', 'reset', 'truncate', 'slow', 'listsize', 'as200']);
let fault = { mode: 'none', left: 0, ms: 0, code: 500, method: '', match: '', key: '', size: 0 };
const stats = { requests: 0, injected: 0, connections: 0, slowClosed: 0, lastProxyUrl: '', lastConnect: '' };

function setFault(p) {
  const mode = p.mode || 'none';
  if (!MODES.has(mode)) throw new Error(`unknown mode '${mode}'`);
  fault = {
    mode,
    left: p.n === undefined || p.n === '' ? -1 : Number(p.n),
    ms: Number(p.ms || 0),
    code: Number(p.code || 500),
    method: (p.method || '').toUpperCase(),
    match: p.match || '',
    key: p.key || '',
    size: Number(p.size || 0),
    minsize: Number(p.minsize || 0),
    rate: Number(p.rate || 1048576),
  };
}
if (process.env.FAULT_MODE) {
  setFault({ mode: process.env.FAULT_MODE, n: process.env.FAULT_N, ms: process.env.FAULT_MS,
    code: process.env.FAULT_CODE, method: process.env.FAULT_METHOD, match: process.env.FAULT_MATCH });
}
let epoch = 0; // a connection counts once per reset-stats
const statsJson = () => JSON.stringify({ ...stats, mode: fault.mode, left: fault.left });

// Does the current fault apply to this request? Consumes one of n when it does.
function takeFault(req) {
  if (fault.mode === 'none' || fault.left === 0) return null;
  if (fault.method && req.method !== fault.method) return null;
  if (fault.match && !req.url.includes(fault.match)) return null;
  if (fault.mode === 'listsize' && (req.method !== 'GET' || !req.url.includes('list-type='))) return null;
  return { ...fault };
}
function consume() {
  if (fault.left > 0) fault.left--;
  stats.injected++;
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'upgrade']);
const strip = (h) => Object.fromEntries(Object.entries(h).filter(([k]) => !HOP.has(k)));

function s3Error(res, status, code, message) {
  const body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code>` +
    `<Message>${message}</Message><Resource>faultproxy</Resource></Error>`;
  res.writeHead(status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

// listsize: the listing with the sizes of the matching keys replaced.
function rewriteSizes(upRes, res, f) {
  const chunks = [];
  upRes.on('data', (c) => chunks.push(c));
  upRes.on('end', () => {
    let hit = false;
    const body = Buffer.concat(chunks).toString('utf8').replace(/<Contents>[\s\S]*?<\/Contents>/g, (c) => {
      const key = (c.match(/<Key>([^<]*)<\/Key>/) || [])[1] || '';
      if (!key.includes(f.key)) return c;
      hit = true;
      return c.replace(/<Size>\d+<\/Size>/, `<Size>${f.size}</Size>`);
    });
    if (hit && fault.mode === 'listsize') consume();
    const headers = strip(upRes.headers);
    delete headers['transfer-encoding'];
    headers['content-length'] = String(Buffer.byteLength(body));
    res.writeHead(upRes.statusCode, headers);
    res.end(body);
  });
}

function forward(req, res, f) {
  const up = http.request({
    host: upHost, port: upPort, method: req.method, path: req.url, headers: strip(req.headers), agent,
  }, (upRes) => {
    if (f && f.mode === 'as200' && upRes.statusCode === 206) {
      consume();
      const headers = strip(upRes.headers);
      delete headers['content-range'];
      res.writeHead(200, headers);
      upRes.pipe(res);
      return;
    }
    if (f && f.mode === 'listsize') {
      rewriteSizes(upRes, res, f);
      return;
    }
    const cut = f && (f.mode === 'reset' || f.mode === 'truncate' || f.mode === 'slow') &&
      req.method !== 'HEAD';
    if (!cut) {
      res.writeHead(upRes.statusCode, strip(upRes.headers));
      upRes.pipe(res);
      return;
    }
    const chunks = [];
    upRes.on('data', (c) => chunks.push(c));
    upRes.on('end', () => {
      const body = Buffer.concat(chunks);
      const half = Math.floor(body.length / 2);
      // Nothing to cut, or concurrent requests already used up the count:
      // pass through, not counted.
      if (body.length === 0 || body.length < f.minsize || fault.left === 0 || fault.mode !== f.mode) {
        res.writeHead(upRes.statusCode, strip(upRes.headers));
        res.end(body);
        return;
      }
      consume();
      const headers = strip(upRes.headers);
      delete headers['transfer-encoding'];
      headers['content-length'] = String(body.length);
      res.writeHead(upRes.statusCode, headers);
      if (f.mode === 'slow') {
        const piece = 65536;
        let off = 0;
        res.on('close', () => { if (off < body.length) stats.slowClosed++; });
        const step = () => {
          if (res.destroyed) return;
          const n = Math.min(piece, body.length - off);
          res.write(body.subarray(off, off + n));
          off += n;
          if (off >= body.length) res.end();
          else setTimeout(step, Math.max(1, Math.round((piece * 1000) / f.rate)));
        };
        setTimeout(step, f.ms);
        return;
      }
      res.write(body.subarray(0, half), () => {
        const sock = res.socket;
        if (!sock) return;
        if (f.mode === 'reset') sock.resetAndDestroy();
        else sock.destroySoon();
      });
    });
  });
  up.on('error', (e) => {
    if (!res.headersSent) s3Error(res, 502, 'BadGateway', `faultproxy upstream: ${e.code || e.message}`);
    else res.destroy();
  });
  req.pipe(up);
}

const server = http.createServer((req, res) => {
  if (/^[a-z]+:\/\//i.test(req.url)) {
    stats.lastProxyUrl = req.url;
    req.resume();
    s3Error(res, 502, 'BadGateway', 'faultproxy does not forward proxy requests');
    return;
  }
  const u = new URL(req.url, 'http://x');
  if (u.pathname.startsWith('/__fault/')) {
    const cmd = u.pathname.slice('/__fault/'.length);
    try {
      if (cmd === 'set') setFault(Object.fromEntries(u.searchParams));
      else if (cmd === 'clear') setFault({ mode: 'none' });
      else if (cmd === 'reset-stats') {
        epoch++;
        Object.assign(stats, { requests: 0, injected: 0, connections: 0, slowClosed: 0, lastProxyUrl: '', lastConnect: '' });
      }
      else if (cmd !== 'stats') throw new Error(`unknown control '${cmd}'`);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(statsJson());
    } catch (e) {
      res.writeHead(400, { 'content-type': 'text/plain' });
      res.end(`faultproxy: ${e.message}\n`);
    }
    return;
  }
  stats.requests++;
  if (req.socket.faultproxyEpoch !== epoch) {
    req.socket.faultproxyEpoch = epoch;
    stats.connections++;
  }
  const f = takeFault(req);
  if (f && (f.mode === '503' || f.mode === '429' || f.mode === 'status')) {
    consume();
    req.resume();
    req.on('end', () => {
      if (f.mode === '503') s3Error(res, 503, 'SlowDown', 'Please reduce your request rate.');
      else if (f.mode === '429') s3Error(res, 429, 'SlowDown', 'Please reduce your request rate.');
      else s3Error(res, f.code, 'InjectedFault', `faultproxy injected status ${f.code}`);
    });
    return;
  }
  if (f && f.mode === 'latency') {
    consume();
    req.pause();
    setTimeout(() => forward(req, res, null), f.ms);
    return;
  }
  forward(req, res, f);
});
server.on('connect', (req, sock) => {
  stats.lastConnect = req.url;
  sock.on('error', () => {});
  sock.end('HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n');
});
server.keepAliveTimeout = 30000;
server.listen(port, '127.0.0.1', () => {
  console.log(`faultproxy listening on http://127.0.0.1:${server.address().port} upstream=${upHost}:${upPort}`);
});

const quit = () => process.exit(0);
process.on('SIGTERM', quit);
process.on('SIGINT', quit);
if (parentPid > 0) {
  setInterval(() => {
    try { process.kill(parentPid, 0); } catch { process.exit(0); }
  }, 500).unref();
}
