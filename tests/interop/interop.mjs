// Interop check: the official Phoenix JavaScript client (npm `phoenix`) against a DPS cluster.
//
//   node tests/interop/interop.mjs ws://127.0.0.1:P/socket ws://127.0.0.1:P+1/socket [--idle-timeout S]
//
// The two URLs are the socket endpoints of two different WS nodes (phoenix.js appends
// `/websocket?vsn=2.0.0`). `--idle-timeout S` says the cluster's DPS_IDLE_TIMEOUT is S seconds:
// the heartbeat scenario then lasts more than twice that, and an extra scenario checks that a
// socket that sends nothing is closed by the server. Prints one JSON object per line per
// scenario ({"scenario", "ok", "details", "error"?}), then {"summary": ...}; exits 1 if any
// scenario failed, 2 on a usage error.
import http from "node:http";
import { LongPoll, Socket } from "phoenix";
import WebSocket from "ws";
import { Failure, STEP_TIMEOUT_MS, check, sleep, waitFor } from "./helpers.mjs";

// phoenix.js closes a socket whose heartbeat is not answered within one interval, and the
// server answers a heartbeat only after the frames queued before it: the working sockets use a
// roomy interval (still well within a lowered idle timeout), the heartbeat scenario a tight one.
const HEARTBEAT_MS = 2000;
const TIGHT_HEARTBEAT_MS = 500;
const QUIET_WINDOW_MS = 500;       // how long "nothing more arrives" is watched
const ORDERED_COUNT = 200;

// --- arguments ---------------------------------------------------------------------------
function usage(message) {
  console.error(`${message}\nusage: node interop.mjs URL1 URL2 [--idle-timeout SECONDS] [--in-flight N]`);
  process.exit(2);
}
const args = process.argv.slice(2);
const urls = [];
let idleTimeoutS = null;
let inFlight = 20;  // publishes in flight at once in the ordering scenario
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--idle-timeout") {
    idleTimeoutS = Number(args[++i]);
    if (!(idleTimeoutS > 0)) usage("--idle-timeout needs a positive number of seconds");
  } else if (args[i] === "--in-flight") {
    inFlight = Number(args[++i]);
    if (!(Number.isInteger(inFlight) && inFlight > 0)) usage("--in-flight needs a positive integer");
  } else {
    urls.push(args[i]);
  }
}
if (urls.length !== 2) usage("need exactly two socket URLs");
const [URL1, URL2] = urls;

// --- helpers -----------------------------------------------------------------------------
const suffix = Math.random().toString(36).slice(2, 10).replace(/[^a-z0-9]/g, "x");
const topicName = (label) => `topics:interop${label}${suffix}`;

/** A Push's outcome as a promise: {status: "ok"|"error"|"timeout", response}. */
function outcome(push) {
  return new Promise((resolve) => {
    push.receive("ok", (response) => resolve({ status: "ok", response }))
      .receive("error", (response) => resolve({ status: "error", response }))
      .receive("timeout", () => resolve({ status: "timeout", response: null }));
  });
}

const sockets = [];

/** A connected phoenix.js Socket that also records every decoded frame and every close. */
async function openSocket(url, opts = {}) {
  const socket = new Socket(url, {
    transport: WebSocket,
    heartbeatIntervalMs: HEARTBEAT_MS,
    timeout: STEP_TIMEOUT_MS,
    reconnectAfterMs: () => 60_000,   // a reconnect would hide a server-side close
    ...opts,
  });
  socket.frames = [];   // every decoded frame, channel member or not: what the server sent
  socket.closes = [];
  socket.errors = [];
  socket.onMessage((msg) => socket.frames.push(msg));
  socket.onClose((event) => socket.closes.push({ code: event && event.code, at: Date.now() }));
  socket.onError((error) => socket.errors.push(String(error && (error.message || error.type) || error)));
  sockets.push(socket);
  let opened = false;
  socket.onOpen(() => { opened = true; });
  socket.connect();
  await waitFor(() => opened || socket.closes.length > 0, `a connection to ${url}`);
  check(opened, `could not connect to ${url}: ${socket.errors.join("; ") || JSON.stringify(socket.closes)}`);
  return socket;
}

function checkStillOpen(socket, name) {
  check(socket.closes.length === 0, `${name} was closed unexpectedly: ${JSON.stringify(socket.closes)}`);
  check(socket.isConnected(), `${name} is not connected`);
}

/** Frames this socket received for `topic` with `event` (server pushes, not replies). */
const pushesOf = (socket, topic, event) =>
  socket.frames.filter((m) => m.topic === topic && m.event === event);

// --- scenarios ---------------------------------------------------------------------------
const results = [];
function report(result) {
  results.push(result);
  console.log(JSON.stringify(result));
}
async function scenario(name, body) {
  const details = {};
  const started = Date.now();
  try {
    await body(details);
    details.ms = Date.now() - started;
    report({ scenario: name, ok: true, details });
  } catch (error) {
    details.ms = Date.now() - started;
    const message = error instanceof Failure ? error.message : (error && error.stack) || String(error);
    report({ scenario: name, ok: false, details, error: message });
  }
}

// Shared state of scenarios 1-4: socket A on node 1, socket B on node 2, one topic.
const shared = { topic: topicName("shared") };

async function joinBothNodes(details) {
  shared.a = await openSocket(URL1);
  shared.b = await openSocket(URL2);
  shared.chA = shared.a.channel(shared.topic, {});
  shared.chB = shared.b.channel(shared.topic, {});
  const [ja, jb] = await Promise.all([outcome(shared.chA.join()), outcome(shared.chB.join())]);
  details.topic = shared.topic;
  details.join_a = ja;
  details.join_b = jb;
  check(ja.status === "ok", `join on node 1: ${JSON.stringify(ja)}`);
  check(jb.status === "ok", `join on node 2: ${JSON.stringify(jb)}`);
  check(shared.chA.state === "joined" && shared.chB.state === "joined",
    `channel states ${shared.chA.state}/${shared.chB.state}`);
}

async function publishReachesBoth(details) {
  check(shared.chA && shared.chB, "needs the joins of scenario 1");
  const { a, b, chA, chB, topic } = shared;
  const got = { a: [], b: [] };
  chA.on("event", (payload) => got.a.push(payload));
  chB.on("event", (payload) => got.b.push(payload));
  const push = chA.push("publish", ["event", { message: "hi" }]);
  const r = await outcome(push);
  details.reply = r;
  check(r.status === "ok", `publish reply: ${JSON.stringify(r)}`);
  await waitFor(() => got.a.length >= 1 && got.b.length >= 1, "both members to receive the publish");
  await sleep(QUIET_WINDOW_MS);  // duplicates, if any, would arrive now
  details.received_a = got.a;
  details.received_b = got.b;
  // The order the sender's frames arrived in (promise callbacks would run too late to tell).
  const order = a.frames.filter((m) => m.topic === topic && (m.event === "event" || m.ref === push.ref))
    .map((m) => m.event);
  details.order_on_sender = order;
  check(got.a.length === 1, `sender received ${got.a.length} copies`);
  check(got.b.length === 1, `node-2 member received ${got.b.length} copies`);
  check(JSON.stringify(got.a[0]) === '{"message":"hi"}', `sender payload ${JSON.stringify(got.a[0])}`);
  check(JSON.stringify(got.b[0]) === '{"message":"hi"}', `node-2 payload ${JSON.stringify(got.b[0])}`);
  // Raw frames: each push carries that member's own join_ref and a null ref.
  const [fa] = pushesOf(a, topic, "event");
  const [fb] = pushesOf(b, topic, "event");
  check(fa.join_ref === chA.joinRef() && fa.ref == null, `sender frame ${JSON.stringify(fa)}`);
  check(fb.join_ref === chB.joinRef() && fb.ref == null, `node-2 frame ${JSON.stringify(fb)}`);
  check(order.join() === "phx_reply,event", `the sender's reply must precede its own copy: ${order}`);
  checkStillOpen(a, "socket A");
  checkStillOpen(b, "socket B");
}

async function orderedAcrossNodes(details) {
  check(shared.chA && shared.chB, "needs the joins of scenario 1");
  const { chA, chB } = shared;
  const onB = [];
  const onA = [];
  chB.on("seq", (payload) => onB.push(payload.i));
  chA.on("seq", (payload) => onA.push(payload.i));
  // Publish like a client that pipelines: at most `inFlight` publishes awaiting their reply.
  // The default (20) stays well below a member's default inbox capacity (100) even if a member
  // lags; `--in-flight 200` sends all of them at once.
  const replies = [];
  for (let i = 0; i < ORDERED_COUNT; i++) {
    if (i >= inFlight) await replies[i - inFlight];
    replies.push(outcome(chA.push("publish", ["seq", { i }])));
  }
  const statuses = await Promise.all(replies);
  details.in_flight = inFlight;
  const notOk = statuses.filter((r) => r.status !== "ok");
  details.replies_not_ok = notOk.length;
  check(notOk.length === 0, `${notOk.length} publish replies not ok, first: ${JSON.stringify(notOk[0])}`);
  const expected = Array.from({ length: ORDERED_COUNT }, (_, i) => i);
  const missing = (got) => { const seen = new Set(got); return expected.filter((i) => !seen.has(i)); };
  try {
    await waitFor(() => onB.length >= ORDERED_COUNT && onA.length >= ORDERED_COUNT,
      () => `${ORDERED_COUNT} messages on both nodes (node 2 has ${onB.length}, node 1 has ${onA.length})`);
  } catch (error) {
    // Tell loss from delay: how many arrive in a further grace period, and which never do.
    const counts = [onB.length, onA.length];
    await sleep(5000);
    details.late_arrivals_node2 = onB.length - counts[0];
    details.late_arrivals_node1 = onA.length - counts[1];
    details.missing_node2 = missing(onB);
    details.missing_node1 = missing(onA);
    throw error;
  }
  await sleep(QUIET_WINDOW_MS);
  details.received_node2 = onB.length;
  details.received_node1 = onA.length;
  const firstBad = (got) => got.findIndex((v, i) => v !== expected[i]);
  check(onB.length === ORDERED_COUNT, `node 2 received ${onB.length} messages, expected ${ORDERED_COUNT}`);
  check(firstBad(onB) === -1, `node 2 out of order at index ${firstBad(onB)}: ${onB.slice(0, 20)}...`);
  check(onA.length === ORDERED_COUNT, `node 1 (sender) received ${onA.length}, expected ${ORDERED_COUNT}`);
  check(firstBad(onA) === -1, `node 1 out of order at index ${firstBad(onA)}`);
  checkStillOpen(shared.a, "socket A");
  checkStillOpen(shared.b, "socket B");
}

async function leaveStopsDelivery(details) {
  check(shared.chA && shared.chB, "needs the joins of scenario 1");
  const { a, b, chA, chB, topic } = shared;
  // B receives while joined ...
  const before = outcome(chA.push("publish", ["before_leave", { n: 1 }]));
  check((await before).status === "ok", "publish before leave");
  await waitFor(() => pushesOf(b, topic, "before_leave").length === 1, "B to receive before leaving");
  // ... leaves ...
  const leavePush = chB.leave();
  const left = await outcome(leavePush);
  details.leave = left;
  check(left.status === "ok", `leave reply: ${JSON.stringify(left)}`);
  // phoenix.js resolves a leave "ok" locally at once (a leaving channel cannot push): wait for
  // the server's own reply before publishing, or the publish races the leave.
  await waitFor(() => b.frames.some((m) => m.event === "phx_reply" && m.ref === leavePush.ref),
    "the server's reply to B's leave");
  // ... and receives nothing more, watched on B's raw frames (phoenix.js itself drops pushes for
  // a channel it has left, so channel callbacks would prove nothing about the server).
  for (let n = 1; n <= 3; n++) {
    check((await outcome(chA.push("publish", ["after_leave", { n }]))).status === "ok", "publish after leave");
  }
  await waitFor(() => pushesOf(a, topic, "after_leave").length === 3, "A's own copies after B left");
  await sleep(QUIET_WINDOW_MS);
  const leaked = pushesOf(b, topic, "after_leave");
  details.after_leave_on_a = pushesOf(a, topic, "after_leave").length;
  details.after_leave_on_b = leaked.length;
  details.phx_close_on_b = pushesOf(b, topic, "phx_close").length;
  check(leaked.length === 0, `B received ${leaked.length} messages after leaving: ${JSON.stringify(leaked)}`);
  checkStillOpen(a, "socket A");
  checkStillOpen(b, "socket B");
}

async function nonTopicsJoinRefused(details) {
  const socket = shared.a && shared.a.isConnected() ? shared.a : await openSocket(URL1);
  const channel = socket.channel("room:lobby", {});
  const r = await outcome(channel.join());
  channel.leave();  // stop phoenix.js from retrying the join
  details.join = r;
  check(r.status === "error", `join of room:lobby: ${JSON.stringify(r)}`);
  check(r.response && r.response.reason === "unmatched topic", `reason: ${JSON.stringify(r.response)}`);
}

async function heartbeatsKeepOpen(details) {
  // Long enough to span more than twice the server's idle timeout, and at least 10 heartbeats.
  const durationMs = Math.max(10.5 * TIGHT_HEARTBEAT_MS, idleTimeoutS ? 2 * idleTimeoutS * 1000 + 1000 : 0);
  const socket = await openSocket(URL2, { heartbeatIntervalMs: TIGHT_HEARTBEAT_MS });
  const channel = socket.channel(topicName("heartbeat"), {});
  check((await outcome(channel.join())).status === "ok", "join before heartbeating");
  const sent = [];
  const push = socket.push.bind(socket);
  socket.push = (data) => {
    if (data.topic === "phoenix" && data.event === "heartbeat") sent.push(data.ref);
    return push(data);
  };
  const transport = socket.conn;
  await sleep(durationMs);
  const replies = socket.frames.filter((m) => m.topic === "phoenix" && m.event === "phx_reply");
  const okRefs = new Set(replies.filter((m) => m.payload.status === "ok").map((m) => m.ref));
  details.duration_ms = durationMs;
  details.idle_timeout_s = idleTimeoutS;
  details.heartbeats_sent = sent.length;
  details.heartbeat_replies_ok = okRefs.size;
  checkStillOpen(socket, "the heartbeating socket");
  check(socket.conn === transport && socket.establishedConnections === 1,
    "the socket reconnected (a heartbeat reply was missed or the server closed it)");
  check(sent.length >= 10, `only ${sent.length} heartbeats in ${durationMs} ms`);
  const unanswered = sent.slice(0, -1).filter((ref) => !okRefs.has(ref));  // the last may be in flight
  check(unanswered.length === 0, `heartbeats without an ok reply: ${unanswered}`);
  check(channel.state === "joined", `channel state ${channel.state}`);
}

async function idleSocketClosed(details) {
  // The control for the heartbeat scenario: without heartbeats the server closes the socket.
  const opened = Date.now();
  const socket = await openSocket(URL1, { heartbeatIntervalMs: 3_600_000 });
  const limitMs = idleTimeoutS * 1000 + 3000;
  await waitFor(() => socket.closes.length > 0, "the server to close a silent socket", limitMs);
  const closedAfter = socket.closes[0].at - opened;
  socket.disconnect();
  details.idle_timeout_s = idleTimeoutS;
  details.closed_after_ms = closedAfter;
  details.close_code = socket.closes[0].code;
  check(closedAfter >= idleTimeoutS * 1000 * 0.9, `closed after ${closedAfter} ms, before the idle timeout`);
}

async function joined(socket, topic) {
  const channel = socket.channel(topic, {});
  const r = await outcome(channel.join());
  check(r.status === "ok", `join of ${topic} over ${socket.transportName(socket.transport)}: ${JSON.stringify(r)}`);
  return channel;
}

async function binaryOnBothNodes(details) {
  // A V2 binary push (phoenix.js sends an ArrayBuffer payload as one) is a publish of its event.
  const topic = topicName("binary");
  const a = await openSocket(URL1);
  const b = await openSocket(URL2);
  const [chA, chB] = [await joined(a, topic), await joined(b, topic)];
  const got = { a: [], b: [] };
  chA.on("blob", (payload) => got.a.push(payload));
  chB.on("blob", (payload) => got.b.push(payload));
  const sent = new Uint8Array([0, 1, 2, 254, 255, 10, 13, 0]).buffer;
  const r = await outcome(chA.push("blob", sent));
  details.reply = r;
  check(r.status === "ok", `binary push reply: ${JSON.stringify(r)}`);
  await waitFor(() => got.a.length >= 1 && got.b.length >= 1, "both nodes to receive the ArrayBuffer");
  await sleep(QUIET_WINDOW_MS);
  const bytes = (buffer) => Array.from(new Uint8Array(buffer)).join(",");
  details.types = [got.a[0] && got.a[0].constructor.name, got.b[0] && got.b[0].constructor.name];
  for (const [name, copies] of Object.entries(got)) {
    check(copies.length === 1, `${name} received ${copies.length} copies`);
    check(copies[0] instanceof ArrayBuffer, `${name} received a ${details.types} instead of an ArrayBuffer`);
    check(bytes(copies[0]) === bytes(sent), `${name} received bytes ${bytes(copies[0])}`);
  }
  checkStillOpen(a, "socket A");
  checkStillOpen(b, "socket B");
}

/** Publishes from both sockets, alternating, and checks that both see one order of all. */
async function oneOrderBetween(details, sockets, count) {
  const topic = topicName("lporder");
  const channels = [];
  for (const socket of sockets) channels.push(await joined(socket, topic));
  const seen = channels.map(() => []);
  channels.forEach((channel, i) => channel.on("seq", (payload) => seen[i].push(payload.n)));
  for (let n = 0; n < count; n++) {
    const r = await outcome(channels[n % channels.length].push("publish", ["seq", { n }]));
    check(r.status === "ok", `publish ${n}: ${JSON.stringify(r)}`);
  }
  await waitFor(() => seen.every((got) => got.length >= count), () => `${count} messages on every socket (${seen.map((g) => g.length)})`);
  await sleep(QUIET_WINDOW_MS);
  details.received = seen.map((got) => got.length);
  const expected = Array.from({ length: count }, (_, n) => n).join(",");
  seen.forEach((got, i) => check(got.join(",") === expected, `socket ${i} saw ${got.join(",")}`));
  return channels;
}

async function longPollWithWebSocket(details) {
  // A client with WebSocket disabled, on node 2, and a WebSocket client on node 1.
  const lp = await openSocket(URL2, { transport: LongPoll });
  const ws = await openSocket(URL1);
  details.transports = [lp.transportName(lp.transport), ws.transportName(ws.transport)];
  check(lp.conn instanceof LongPoll, "the long-poll socket is not using LongPoll");
  const [lpChannel, wsChannel] = await oneOrderBetween(details, [lp, ws], 30);
  // An ArrayBuffer pushed over long-poll (phoenix.js sends it base64) reaches the WebSocket
  // member as an ArrayBuffer, and the long-poll member as {binary: base64} (DPS's JSON form).
  const got = { lp: [], ws: [] };
  lpChannel.on("blob", (payload) => got.lp.push(payload));
  wsChannel.on("blob", (payload) => got.ws.push(payload));
  const r = await outcome(lpChannel.push("blob", new Uint8Array([0, 255, 7]).buffer));
  check(r.status === "ok", `binary push over long-poll: ${JSON.stringify(r)}`);
  await waitFor(() => got.lp.length >= 1 && got.ws.length >= 1, "the long-poll binary push on both");
  details.binary_on_ws = got.ws[0] instanceof ArrayBuffer ? Array.from(new Uint8Array(got.ws[0])) : got.ws[0];
  details.binary_on_lp = got.lp[0];
  check(details.binary_on_ws.join && details.binary_on_ws.join(",") === "0,255,7",
    `the WebSocket member got ${JSON.stringify(details.binary_on_ws)}`);
  check(got.lp[0] && got.lp[0].binary === "AP8H", `the long-poll member got ${JSON.stringify(got.lp[0])}`);
  checkStillOpen(lp, "the long-poll socket");
}

/** An HTTP proxy to `target` that refuses every WebSocket upgrade, as some corporate proxies do. */
function refusingProxy(target) {
  const upstream = new URL(target.replace("ws://", "http://"));
  const server = http.createServer((req, res) => {
    const forwarded = http.request({ host: upstream.hostname, port: upstream.port, path: req.url,
      method: req.method, headers: req.headers }, (reply) => {
      res.writeHead(reply.statusCode, reply.headers);
      reply.pipe(res);
    });
    forwarded.on("error", () => res.destroy());
    req.pipe(forwarded);
  });
  server.upgrades = 0;
  server.on("upgrade", (req, socket) => { server.upgrades++; socket.destroy(); });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

async function fallbackWhenWebSocketRefused(details) {
  const proxy = await refusingProxy(URL1);
  try {
    const url = `ws://127.0.0.1:${proxy.address().port}/socket`;
    const socket = await openSocket(url, { longPollFallbackMs: 2000 });
    details.websocket_upgrades_refused = proxy.upgrades;
    details.transport = socket.transportName(socket.transport);
    check(proxy.upgrades >= 1, "phoenix.js never tried the WebSocket first");
    check(socket.conn instanceof LongPoll, `fell back to ${details.transport}, not LongPoll`);
    const ws = await openSocket(URL2);
    await oneOrderBetween(details, [socket, ws], 10);
    checkStillOpen(socket, "the fallen-back socket");
    socket.disconnect();
  } finally {
    proxy.closeAllConnections();
    proxy.close();
  }
}

// --- main --------------------------------------------------------------------------------
async function main() {
  // The timing-bound scenarios run alongside the others (their lines print when they finish).
  const background = [
    scenario("heartbeats_keep_socket_open", heartbeatsKeepOpen),
    ...(idleTimeoutS ? [scenario("idle_socket_closed_by_server", idleSocketClosed)] : []),
  ];
  await scenario("join_on_both_nodes", joinBothNodes);
  await scenario("publish_reaches_all_members_once", publishReachesBoth);
  await scenario("ordered_exactly_once_across_nodes", orderedAcrossNodes);
  await scenario("leave_stops_delivery", leaveStopsDelivery);
  await scenario("non_topics_join_refused", nonTopicsJoinRefused);
  await scenario("binary_arraybuffer_on_both_nodes", binaryOnBothNodes);
  await scenario("longpoll_and_websocket_in_one_order", longPollWithWebSocket);
  await scenario("longpoll_fallback_when_websocket_refused", fallbackWhenWebSocketRefused);
  await Promise.all(background);
  const failed = results.filter((r) => !r.ok).map((r) => r.scenario);
  console.log(JSON.stringify({ summary: true, ok: failed.length === 0, scenarios: results.length, failed }));
  for (const socket of sockets) socket.disconnect();
  return failed.length === 0 ? 0 : 1;
}

const watchdog = setTimeout(() => {
  console.log(JSON.stringify({ summary: true, ok: false, error: "watchdog: the run took over 60 s" }));
  process.exit(1);
}, 60_000);
main().then((code) => {
  clearTimeout(watchdog);
  // Sockets are closed; exit without waiting for their close handshakes.
  setTimeout(() => process.exit(code), 50);
}, (error) => {
  console.log(JSON.stringify({ summary: true, ok: false, error: String(error && error.stack || error) }));
  process.exit(1);
});
