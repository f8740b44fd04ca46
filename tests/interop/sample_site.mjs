// The sample site (tests/sample_site) through the official Phoenix JavaScript client.
//
//   node tests/interop/sample_site.mjs CONFIG_JSON
//
// CONFIG_JSON: {"urls": [socket URL of WS node 1, of WS node 2], "tokens": {"alice", "bob",
// "carol"}, "ids": {"alice", ...}} (tokens from the site's /dps/token/, ids the user ids).
// Prints one JSON object per line: {"scenario", "ok", "details", "error"?}; where the Python
// side must act (publish from Django, disconnect a user) it prints {"await": NAME} and waits
// for one line on stdin. Ends with {"summary": ...}.
import { createInterface } from "node:readline";
import { Socket } from "phoenix";
import WebSocket from "ws";
import { Failure, check, sleep, waitFor } from "./helpers.mjs";

const QUIET_WINDOW_MS = 500;
const cfg = JSON.parse(process.argv[2]);
const [URL1, URL2] = cfg.urls;
const ROOM = "rooms:lobby";
const stdinLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

async function serverDoes(name) {
  console.log(JSON.stringify({ await: name }));
  const { value, done } = await stdinLines.next();
  check(!done && value.trim() === "go", `the test did not do ${name}: ${value}`);
}

const sockets = [];
/** A phoenix.js socket; `closes` records the close codes it sees. Reconnects are disabled so a
 *  closed socket stays closed for the assertions. */
function connect(url, token) {
  const params = token === undefined ? {} : { token };
  const socket = new Socket(url, { transport: WebSocket, params, heartbeatIntervalMs: 2000,
                                   reconnectAfterMs: () => 3_600_000 });
  socket.closes = [];
  socket.errors = 0;
  socket.onClose((event) => socket.closes.push(event.code));
  socket.onError(() => { socket.errors += 1; });
  socket.connect();
  sockets.push(socket);
  return socket;
}
async function opened(socket) {
  await waitFor(() => socket.isConnected(), "the socket to open");
}
/** Join ROOM; resolves with ["ok"|"error", response]. Records every push in `channel.seen`. */
function join(socket, topic = ROOM) {
  const channel = socket.channel(topic, {});
  channel.seen = [];
  channel.onMessage = (event, payload) => {
    if (!event.startsWith("phx_") && !event.startsWith("chan_reply")) channel.seen.push([event, payload]);
    return payload;
  };
  return new Promise((resolve, reject) => {
    channel.join()
      .receive("ok", (response) => resolve([channel, "ok", response]))
      .receive("error", (response) => resolve([channel, "error", response]))
      .receive("timeout", () => reject(new Failure(`join of ${topic} timed out`)));
  });
}
function push(channel, event, payload) {
  return new Promise((resolve, reject) => {
    channel.push("publish", [event, payload])
      .receive("ok", (response) => resolve(["ok", response]))
      .receive("error", (response) => resolve(["error", response]))
      .receive("timeout", () => reject(new Failure(`publish ${event} timed out`)));
  });
}
const texts = (channel, event) => channel.seen.filter(([e]) => e === event).map(([, p]) => p);

const results = [];
async function scenario(name, body) {
  try {
    const details = await body();
    results.push({ scenario: name, ok: true, details });
  } catch (error) {
    results.push({ scenario: name, ok: false, error: String(error?.stack ?? error) });
  }
  console.log(JSON.stringify(results.at(-1)));
}

let alice, bob, aliceRoom, bobRoom;

await scenario("token_connects_and_member_joins", async () => {
  alice = connect(URL1, cfg.tokens.alice);
  bob = connect(URL2, cfg.tokens.bob);
  await opened(alice);
  await opened(bob);
  let status, response;
  [aliceRoom, status, response] = await join(alice);
  check(status === "ok" && response.room === "lobby", `alice's join: ${status} ${JSON.stringify(response)}`);
  [bobRoom, status] = await join(bob);
  check(status === "ok", `bob's join: ${status}`);
  return { alice: response };
});

await scenario("without_token_never_opens", async () => {
  const socket = connect(URL1);
  await waitFor(() => socket.errors > 0 || socket.closes.length > 0, "the refusal");
  check(!socket.isConnected(), "an anonymous socket opened");
  socket.disconnect();
  return { errors: socket.errors };
});

await scenario("non_member_join_unauthorized", async () => {
  const carol = connect(URL2, cfg.tokens.carol);
  await opened(carol);
  const [, status, response] = await join(carol);
  check(status === "error" && response.reason === "unauthorized",
        `carol's join: ${status} ${JSON.stringify(response)}`);
  return response;
});

await scenario("transformed_publish_reaches_both_nodes", async () => {
  const [status] = await push(aliceRoom, "say", { text: "  hello  ", from: "someone else" });
  check(status === "ok", `publish: ${status}`);
  const expected = { text: "hello", from: cfg.ids.alice };
  for (const [who, channel] of [["alice", aliceRoom], ["bob", bobRoom]]) {
    await waitFor(() => texts(channel, "say").length === 1, `${who}'s copy`);
    const got = texts(channel, "say")[0];
    check(JSON.stringify(got) === JSON.stringify(expected), `${who} got ${JSON.stringify(got)}`);
  }
  return expected;
});

await scenario("raising_handler_crashes_that_channel_which_rejoins", async () => {
  // As a Phoenix channel that raises: no reply, phx_error, and phoenix.js rejoins by itself.
  const before = bobRoom.seen.length;
  let errors = 0;
  aliceRoom.onError(() => { errors += 1; });
  aliceRoom.push("publish", ["crash", {}]);  // no reply comes: the channel is gone
  await waitFor(() => errors === 1, "alice's channel.onError");
  await waitFor(() => aliceRoom.isJoined(), "alice's channel to rejoin");
  check(bobRoom.seen.length === before, "a member received something from the crash");
  const [again] = await push(aliceRoom, "say", { text: "rejoined" });
  check(again === "ok", `the rejoined channel's publish: ${again}`);
  await waitFor(() => texts(bobRoom, "say").length === 2, "bob's copy after the rejoin");
  check(alice.isConnected(), "alice's socket closed");
  return { errors, rejoined: aliceRoom.isJoined() };
});

await scenario("django_publishes_in_order_with_client_publishes", async () => {
  const marks = [aliceRoom.seen.length, bobRoom.seen.length];
  check((await push(aliceRoom, "say", { text: "first" }))[0] === "ok", "first publish");
  await serverDoes("server_publishes");  // a view, the HTTP API and dps_publish, in that order
  check((await push(aliceRoom, "say", { text: "last" }))[0] === "ok", "last publish");
  const sequences = [];
  for (const [who, channel, mark] of [["alice", aliceRoom, marks[0]], ["bob", bobRoom, marks[1]]]) {
    await waitFor(() => channel.seen.slice(mark).some(([, p]) => p.text === "last"), `${who}'s last`);
    sequences.push(channel.seen.slice(mark).map(([event, payload]) => `${event}:${payload.text}`));
  }
  const expected = ["say:first", "announcement:from view", "api:from api", "cli:from cli", "say:last"];
  for (const sequence of sequences) {
    check(JSON.stringify(sequence) === JSON.stringify(expected), `got ${JSON.stringify(sequence)}`);
  }
  return sequences[0];
});

await scenario("disconnect_closes_only_that_users_sockets", async () => {
  const alice2 = connect(URL2, cfg.tokens.alice);
  const carol2 = connect(URL1, cfg.tokens.carol);
  await opened(alice2);
  await opened(carol2);
  await serverDoes("disconnect_alice");
  await waitFor(() => alice.closes.length > 0 && alice2.closes.length > 0, "alice's closes");
  check(alice.closes[0] === 1001 && alice2.closes[0] === 1001,
        `close codes ${alice.closes} ${alice2.closes}`);
  await sleep(QUIET_WINDOW_MS);
  check(bob.isConnected() && carol2.isConnected() && bob.closes.length === 0,
        "someone else's socket closed");
  const [status] = await push(bobRoom, "say", { text: "bob still here" });
  check(status === "ok", "bob's publish after the disconnect");
  await waitFor(() => texts(bobRoom, "say").some((p) => p.text === "bob still here"), "bob's copy");
  return { alice: alice.closes, alice2: alice2.closes };
});

for (const socket of sockets) socket.disconnect();
const failed = results.filter((r) => !r.ok).map((r) => r.scenario);
console.log(JSON.stringify({ summary: { passed: results.length - failed.length, failed } }));
process.exit(failed.length ? 1 : 0);
