// A phoenix.js driver for multi-process tests: the official client (Socket, Channel, Presence,
// unchanged), steered by the test over stdin/stdout, one JSON object per line.
//
//   node tests/interop/driver.mjs
//   > {"id": 1, "cmd": "connect", "client": "a", "url": "ws://127.0.0.1:P/socket"}
//   < {"id": 1, "ok": true, "result": null}
//
// Commands: connect {client, url, params, authToken (1.8's option), version ("phoenix": 1.8,
// "phoenix17": 1.7), transport ("websocket", "longpoll")}, closes (the close codes the socket
// saw), join {topic, payload}, leave, presence, events (the channel's onError calls, its join
// replies and Presence's onJoin / onLeave calls, in order), cast {topic, event, payload}
// (channel.push, not waiting for a reply), received, replies,
// publish {topic, count, start}, push {topic, event, payload} (channel.push as Phoenix's guides
// write it; the ok reply's response, or an error), listen {topic, event} then heard {topic,
// event} (the payloads of that event's broadcasts), offline (socket.disconnect()), online
// (socket.connect(), resolved by the topic's next join reply), requests (long-poll HTTP
// requests sent so far), hold (new long-poll requests wait; resolved once none is in flight),
// release, quit. A join with {"offsets": true} keeps the position of the
// last broadcast (the frame's ref, "EPOCH:OFFSET") and rejoins with {"recover": position}, as
// the demo page does.
import WebSocket from "ws";
import readline from "node:readline";
import { FetchXMLHttpRequest, hold, release, requests, sleep } from "./helpers.mjs";

globalThis.XMLHttpRequest = FetchXMLHttpRequest;
globalThis.self ??= globalThis;  // phoenix.js 1.7 finds its globals through `self` or `window`
const VERSIONS = new Set(["phoenix", "phoenix17"]);  // npm names in package.json (1.8, 1.7)

const STEP_TIMEOUT_MS = 15_000;
const clients = new Map();

function deadline(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), STEP_TIMEOUT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function client(name) {
  const found = clients.get(name);
  if (!found) throw new Error(`no client ${name}`);
  return found;
}

function joined(name, topic) {
  const found = client(name).topics.get(topic);
  if (!found) throw new Error(`${name} has not joined ${topic}`);
  return found;
}

function pushOk(push, what) {
  return deadline(new Promise((resolve, reject) => {
    push.receive("ok", resolve).receive("error", (r) => reject(new Error(`${what}: ${JSON.stringify(r)}`)))
      .receive("timeout", () => reject(new Error(`${what}: push timeout`)));
  }), what);
}

const commands = {
  async connect({client: name, url, params = {}, authToken, version = "phoenix",
                 transport = "websocket"}) {
    if (!VERSIONS.has(version)) throw new Error(`unknown phoenix.js version ${version}`);
    const {LongPoll, Presence, Socket} = await import(version);
    const socket = new Socket(url, {transport: transport === "longpoll" ? LongPoll : WebSocket,
                                    params, authToken, heartbeatIntervalMs: 5000,
                                    reconnectAfterMs: () => 200, rejoinAfterMs: () => 200});
    const closes = [];
    socket.onClose((event) => closes.push(event?.code ?? null));
    clients.set(name, {socket, Presence, closes, topics: new Map()});
    await deadline(new Promise((resolve) => { socket.onOpen(resolve); socket.connect(); }),
                   `${name} connects`);
    return null;
  },

  async join({client: name, topic, payload = {}}) {
    const {socket, Presence, topics} = client(name);
    const state = {received: [], replies: [], position: null, waiters: [], events: []};
    const channel = socket.channel(topic, () => (
      payload.offsets && state.position ? {...payload, recover: state.position} : payload));
    state.channel = channel;
    state.presence = new Presence(channel);
    state.presence.onJoin((key, current, joined) => state.events.push(
      {kind: "presence_join", key, current: current ?? null, joined}));
    state.presence.onLeave((key, current, left) => state.events.push(
      {kind: "presence_leave", key, current, left}));
    channel.onError((reason) => state.events.push({kind: "error", reason: reason ?? null}));
    channel.on("message", (body, ref) => {
      state.received.push([ref, body]);
      if (typeof ref === "string") {
        const [epoch, offset] = ref.split(":");
        state.position = {offset: Number(offset), epoch};
      }
    });
    topics.set(topic, state);
    try {
      return await pushOk(channel.join().receive("ok", (r) => {
        state.replies.push(r);
        state.events.push({kind: "joined", response: r});
        if (r.position && (!state.position || state.position.epoch !== r.position.epoch)) {
          state.position = r.position;
        }
        state.waiters.splice(0).forEach((w) => w(r));
      }), `${name} joins ${topic}`);
    } catch (error) {
      channel.leave();  // no rejoin in the background: the test decides whether to try again
      topics.delete(topic);
      throw error;
    }
  },

  async leave({client: name, topic}) {
    const {channel} = joined(name, topic);
    await pushOk(channel.leave(), `${name} leaves ${topic}`);
    client(name).topics.delete(topic);
    return null;
  },

  async presence({client: name, topic}) {
    const listed = {};
    joined(name, topic).presence.list((key, {metas}) => {
      listed[key] = metas.map((m) => m.phx_ref).sort();
    });
    return listed;
  },

  async received({client: name, topic}) { return joined(name, topic).received; },
  async events({client: name, topic}) { return joined(name, topic).events; },
  async closes({client: name}) { return client(name).closes; },

  async cast({client: name, topic, event, payload = {}}) {
    joined(name, topic).channel.push(event, payload);
    return null;
  },
  async replies({client: name, topic}) { return joined(name, topic).replies; },

  async publish({client: name, topic, count = 1, start = 0}) {
    const {channel} = joined(name, topic);
    const pushes = [];
    for (let i = start; i < start + count; i++) {
      pushes.push(pushOk(channel.push("publish", ["message", {n: i}]), `${name} publishes ${i}`));
    }
    await Promise.all(pushes);
    return null;
  },

  async push({client: name, topic, event, payload = {}}) {
    return await pushOk(joined(name, topic).channel.push(event, payload), `${name} pushes ${event}`);
  },

  async listen({client: name, topic, event}) {
    const state = joined(name, topic);
    state.heard = state.heard || {};
    state.heard[event] = [];
    state.channel.on(event, (body) => state.heard[event].push(body));
    return null;
  },

  async heard({client: name, topic, event}) { return joined(name, topic).heard[event]; },

  async offline({client: name}) {
    const {socket} = client(name);
    await deadline(new Promise((resolve) => socket.disconnect(resolve)), `${name} disconnects`);
    return null;
  },

  async online({client: name, topic}) {
    const state = joined(name, topic);
    const rejoined = new Promise((resolve) => state.waiters.push(resolve));
    client(name).socket.connect();
    return await deadline(rejoined, `${name} rejoins ${topic}`);
  },

  async requests() { return {...requests}; },

  async hold() {
    hold();
    while (requests.inFlight > 0) await sleep(10);
    return null;
  },

  async release() { release(); return null; },

  async quit() {
    for (const {socket} of clients.values()) socket.disconnect();
    setTimeout(() => process.exit(0), 50);
    return null;
  },
};

const lines = readline.createInterface({input: process.stdin});
lines.on("line", async (line) => {
  let request;
  try {
    request = JSON.parse(line);
    const run = commands[request.cmd];
    if (!run) throw new Error(`unknown command ${request.cmd}`);
    const result = await run(request);
    process.stdout.write(JSON.stringify({id: request.id, ok: true, result}) + "\n");
  } catch (error) {
    process.stdout.write(JSON.stringify({id: request?.id, ok: false, error: String(error)}) + "\n");
  }
});
lines.on("close", () => process.exit(0));
