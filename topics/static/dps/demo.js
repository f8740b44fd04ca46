// The DPS demo chat: phoenix.js's Socket, Channel and Presence, unchanged, over DPS.
// Recovery: the join asks for offsets, so each broadcast's frame ref is "EPOCH:OFFSET"; on a
// rejoin the join payload carries the last position and the reply says whether DPS recovered.
(() => {
  "use strict";
  const {Socket, Presence} = window.Phoenix;
  const $ = (id) => document.getElementById(id);
  const socket = new Socket("/socket", {heartbeatIntervalMs: 10000});
  let channel = null;
  let presence = null;
  let position = null;      // {offset, epoch} of the last broadcast received
  let recoveredTo = null;   // messages up to this offset, after a rejoin, were missed ones
  let recoveredCount = 0;

  const showState = (state, text) => {
    const el = $("connection");
    el.dataset.state = state;
    el.textContent = text;
  };
  socket.onOpen(() => showState("open", "connected"));
  socket.onClose(() => showState("closed", "disconnected"));
  socket.onError(() => showState("closed", "connection error"));

  const messageItem = (payload, className) => {
    const item = document.createElement("li");
    if (className) item.className = className;
    const who = document.createElement("strong");
    who.textContent = payload.name || "?";
    item.append(who, document.createTextNode(" " + (payload.text || "")));
    return item;
  };
  const addMessage = (payload, recovered) => {
    const item = messageItem(payload, recovered ? "recovered" : "");
    $("messages").append(item);
    item.scrollIntoView({block: "nearest"});
  };
  // A new joiner sees what the room's owner keeps: every message up to its join's position,
  // before the live ones (which come after that position: none is shown twice).
  const showEarlier = async (room, until) => {
    const answer = await fetch(`demo/history?room=${encodeURIComponent(room)}&until=${until}`);
    if (!answer.ok) return;
    const {messages} = await answer.json();
    $("messages").prepend(...messages.map((m) => messageItem(m.payload, "earlier")));
    $("messages").lastElementChild?.scrollIntoView({block: "nearest"});
  };

  const renderPresence = () => {
    const list = $("presence");
    list.replaceChildren();
    // One line per name: two tabs (two sockets) with one name are one person, counted.
    const byName = new Map();
    presence.list((key, {metas}) => {
      const name = metas[0].name || key;
      const person = byName.get(name) || {name, keys: [], count: 0};
      person.keys.push(key);
      person.count += metas.length;
      byName.set(name, person);
    });
    const people = [...byName.values()].sort((a, b) => a.name.localeCompare(b.name));
    for (const person of people) {
      const item = document.createElement("li");
      item.dataset.key = person.keys.join(" ");
      item.textContent = person.name + (person.count > 1 ? ` (${person.count} tabs)` : "");
      list.append(item);
    }
    $("count").textContent = people.length;
  };

  const join = (room, name) => {
    if (channel) channel.leave();
    position = null;
    $("messages").replaceChildren();
    $("room-title").textContent = "rooms:" + room;
    channel = socket.channel("rooms:" + room, () => (
      position ? {name, offsets: true, recover: position} : {name, offsets: true}));
    presence = new Presence(channel);
    presence.onSync(renderPresence);
    channel.on("new_msg", (payload, ref) => {
      const [epoch, offset] = typeof ref === "string" ? ref.split(":") : [null, null];
      const at = Number(offset);
      const recovered = recoveredTo !== null && at <= recoveredTo;
      if (epoch) position = {offset: at, epoch};
      addMessage(payload, recovered);
      if (recovered) {
        recoveredCount += 1;
        const note = $("recovery");
        note.hidden = false;
        note.textContent = `recovered ${recoveredCount} message${recoveredCount === 1 ? "" : "s"}`;
        if (at === recoveredTo) recoveredTo = null;
      }
    });
    channel.join()
      .receive("ok", (reply) => {
        const rejoin = position !== null;
        if (reply.position && rejoin && reply.recovered) {
          recoveredCount = 0;
          recoveredTo = reply.position.offset > position.offset ? reply.position.offset : null;
          const note = $("recovery");
          note.hidden = false;
          note.textContent = recoveredTo === null ? "recovered 0 messages" : "recovering…";
        } else if (rejoin && reply.position) {
          const note = $("recovery");
          note.hidden = false;
          note.textContent = "could not recover what was missed (too old)";
        }
        if (reply.position && !rejoin) showEarlier(room, reply.position.offset);
        if (reply.position && !position) position = reply.position;
        if (reply.position && reply.position.epoch !== position.epoch) position = reply.position;
      })
      .receive("error", (reply) => showState("closed", "join refused: " + (reply.reason || "error")));
  };

  const randomName = () => "guest" + Math.floor(Math.random() * 9000 + 1000);
  const query = new URLSearchParams(location.search);  // ?room=lobby&name=Ada: a shareable link
  $("name").value = query.get("name") || localStorage.getItem("dps-name") || randomName();
  if (query.get("room")) $("room").value = query.get("room");
  $("join").addEventListener("submit", (event) => {
    event.preventDefault();
    localStorage.setItem("dps-name", $("name").value);
    join($("room").value, $("name").value);
  });
  $("send").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("text").value.trim();
    if (!channel || !text) return;
    channel.push("new_msg", {name: $("name").value, text});  // dps_site/chat.py broadcasts it
    $("text").value = "";
  });
  $("offline").addEventListener("click", () => {
    socket.disconnect();
    showState("closed", "offline");
    $("offline").hidden = true;
    $("online").hidden = false;
  });
  $("online").addEventListener("click", () => {
    socket.connect();
    $("offline").hidden = false;
    $("online").hidden = true;
  });
  socket.connect();
  join($("room").value, $("name").value);
})();
