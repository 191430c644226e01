// A plain Node.js `ws` broadcaster: a baseline for viewcast's benchmarks.
//
// An internal timer (--hz H) builds one frame shaped like viewcast's `update` message and sends it
// to every open socket; POST /publish/<view> broadcasts its body instead (for externally driven
// load). A new client first gets the latest frame (its "snapshot"), then every later one.
// With --big-bytes B, clients whose path ends in /big get the timer's frames padded to B bytes
// (the slow-consumer run's large frames); `ws` queues what they do not read without a bound.
// Usage: node server.mjs --port P --hz H [--big-bytes B]   (prints "listening 127.0.0.1:P"). Loopback only.
import http from "node:http";
import { WebSocketServer } from "ws";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith("--") ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const port = Number(args.port ?? 0);
const hz = Number(args.hz ?? 0);
const bigBytes = Number(args["big-bytes"] ?? 0);

const server = http.createServer((req, res) => {
  if (req.method === "POST" && req.url.startsWith("/publish/")) {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      broadcast(Buffer.concat(chunks));
      res.writeHead(204).end();
    });
    return;
  }
  res.writeHead(404).end();
});
const wss = new WebSocketServer({ server, perMessageDeflate: false, maxPayload: 64 * 1024 });
let latest = Buffer.from(`{"type":"snapshot","view":"bench_seq","ts":${Date.now()},"rows":[{"row":[0],"diff":1}]}`);

function broadcast(buf, big) {
  latest = buf;
  for (const ws of wss.clients) {
    if (ws.readyState === 1) ws.send(ws.big && big ? big : buf, { binary: false });
  }
}

wss.on("connection", (ws, req) => {
  ws.big = bigBytes > 0 && new URL(req.url, "http://x").pathname.endsWith("/big");
  ws.on("error", () => {});
  if (latest) ws.send(latest, { binary: false });
});

let seq = 0;
if (hz > 0) {
  setInterval(() => {
    seq += 1;
    const ts = Date.now();
    const frame = `{"type":"update","view":"bench_seq","ts":${ts},"rows":[{"row":[${seq - 1}],"diff":-1},{"row":[${seq}],"diff":1}]}`;
    const pad = Math.max(0, bigBytes - frame.length - 9);
    const big = bigBytes > 0 ? Buffer.from(`{"pad":"${"x".repeat(pad)}",${frame.slice(1)}`) : null;
    broadcast(Buffer.from(frame), big);
  }, 1000 / hz);
}

server.listen(port, "127.0.0.1", 4096, () => {
  console.log(`listening 127.0.0.1:${server.address().port}`);
});
