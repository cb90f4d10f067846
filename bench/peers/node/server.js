// The JavaScript peer: a Socket.IO 4 server with @socket.io/redis-adapter (node-redis pub/sub).
//
// The usual Node.js way to build this product's live part, doing the same workload as
// bench/peers/socketio_server.py: rooms of two, a `chat` event relayed to the room's other
// member (`socket.to(room).emit(...)`) and answered with an ack once relayed. Nothing is
// stored. Every broadcast is also published on Redis (the adapter's channel, prefix `--channel`)
// for the other nodes of a deployment; this node's own members get it directly.
//
//   node server.js --port 8200 --redis redis://127.0.0.1:6379/0 --channel bench-node-1
//   (or PORT, REDIS_URL, CHANNEL in the environment)
//
// A client connects with the websocket transport and joins its room with the connect
// packet's auth: {room: "r1", user: "u1"}. `GET /healthz` answers 200 once Redis is connected.
// Listens on 127.0.0.1 only; quiet; exits on SIGTERM or SIGINT.
"use strict";

const http = require("node:http");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");

function option(name, envName, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  if (i >= 0 && i + 1 < process.argv.length) return process.argv[i + 1];
  return process.env[envName] || fallback;
}

const HOST = "127.0.0.1";
const PORT = Number(option("port", "PORT", "8200"));
const REDIS_URL = option("redis", "REDIS_URL", "redis://127.0.0.1:6379/0");
const CHANNEL = option("channel", "CHANNEL", `bench-node-${process.pid}`);

async function main() {
  const pub = createClient({ url: REDIS_URL });
  const sub = pub.duplicate();
  for (const c of [pub, sub]) c.on("error", (err) => console.error("ERROR redis:", err.message));
  await Promise.all([pub.connect(), sub.connect()]);

  const httpServer = http.createServer((req, res) => {
    const ok = req.method === "GET" && req.url === "/healthz";
    res.writeHead(ok ? 200 : 404, { "content-type": "application/json" });
    res.end(ok ? '{"status":"ok"}' : "");
  });
  const io = new Server(httpServer, {
    transports: ["websocket"],
    perMessageDeflate: false,
    serveClient: false,
    adapter: createAdapter(pub, sub, { key: CHANNEL }),
  });

  io.use((socket, next) => {
    const auth = socket.handshake.auth || {};
    if (!auth.room || !auth.user) return next(new Error("room and user are required"));
    socket.data.room = String(auth.room);
    socket.data.user = String(auth.user);
    next();
  });

  io.on("connection", (socket) => {
    const { room, user } = socket.data;
    socket.join(room);
    socket.on("chat", (data, ack) => {
      if (!data || typeof data !== "object") return;
      socket.to(room).emit("chat", { id: data.id, from: user, text: data.text });
      if (typeof ack === "function") ack({ id: data.id });
    });
  });

  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    setTimeout(() => process.exit(0), 3000).unref(); // bounded: leave even if a close hangs
    io.close(() => {
      Promise.allSettled([pub.quit(), sub.quit()]).then(() => process.exit(0));
    });
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);

  httpServer.listen(PORT, HOST);
}

main().catch((err) => {
  console.error("ERROR", err);
  process.exit(1);
});
