// The chat page: one channel as a room. Messages arrive over GET /channels/<name>/events, are posted with
// POST /channels/<name>/messages, and the connection heals itself like the console's. A second stream
// (GET /events) counts what arrives in the other channels, for the channel list's unread counts.

import {
  $,
  api,
  ApiError,
  el,
  errorText,
  eventIdAfter,
  Follower,
  formatTime,
  frameScheduler,
  LiveStream,
  pageSession,
  pageStream,
  showConnState,
} from "./common.js";

const MAX_MESSAGES = 2000;
const channel = document.body.dataset.channel || "chat";
const channelError = document.body.dataset.channelError || "";
const path = `/channels/${encodeURIComponent(channel)}`;

const state = {
  principal: null,
  cursor: "", // id of the last message shown ("<epoch>-<n>")
  workerPid: null,
  count: 0,
  lastShownId: null, // the last shown message's id, as the server wrote it (remembered per channel)
  channels: [], // names in the channel list
  others: [], // the channels whose unread messages are counted (all listed but this one, up to MAX_OTHERS)
  otherCursors: new Map(), // channel -> id of the last message counted, as the server wrote it
  confirmed: new Set(), // channels whose cursor the server has accepted (an event came with it)
  unread: new Map(), // channel -> messages not read
};
const NICK_KEY = "ssecmd.nick";
const SEEN_KEY = "ssecmd.chat.seen"; // {channel: {id, pid}}: the last message read, and which server process said so
const MAX_OTHERS = 31; // GET /events takes 32 sources by default (max_stream_sources)
const CHANNELS_EVERY = 30_000; // ms between looks for new channels

const conn = $("conn");
const list = $("messages");
const follower = new Follower(list, $("follow"));
let incoming = [];
const render = frameScheduler(() => {
  if (!incoming.length) return;
  const batch = incoming;
  incoming = [];
  const fragment = document.createDocumentFragment();
  for (const node of batch) fragment.append(node);
  $("chat-empty").hidden = true;
  list.append(fragment);
  const excess = list.children.length - 1 - MAX_MESSAGES;
  for (let i = 0; i < excess; i++) list.children[1].remove();
  follower.stick();
  if (state.lastShownId !== null) rememberSeen(channel, state.lastShownId);
});

const stream = pageStream(conn, {
  url: () => (state.cursor ? `${path}/events?last_event_id=${state.cursor}` : `${path}/events`),
  events: { message: onMessage, gap: onGap },
  resync,
});

// The other channels: only counted, never shown here.
const others = new LiveStream({
  url: othersUrl,
  events: { message: onOther, gap: onOther },
  resync: othersResync,
});

function onMessage(event) {
  const id = event.lastEventId;
  if (!eventIdAfter(id, state.cursor)) return; // already shown before a reconnect
  state.cursor = id;
  let message;
  try {
    message = JSON.parse(event.data);
  } catch {
    return;
  }
  state.count++;
  state.lastShownId = event.lastEventId;
  incoming.push(messageEl(message));
  render();
}

function onGap(event) {
  let missed = 0;
  try {
    missed = JSON.parse(event.data).missed_messages || 0;
  } catch {
    // keep 0
  }
  const id = event.lastEventId;
  if (eventIdAfter(id, state.cursor)) state.cursor = id;
  note(`${missed} earlier message${missed === 1 ? " is" : "s are"} no longer kept by the server`);
}

function note(text) {
  incoming.push(el("li", { class: "msg note", text }));
  render();
}

// A message sent from this page without a login: {"nick": ..., "text": ...}, and nothing else.
function nickMessage(data) {
  if (!data || typeof data !== "object" || Array.isArray(data)) return null;
  const keys = Object.keys(data);
  if (typeof data.text !== "string" || typeof data.nick !== "string") return null;
  return keys.every((key) => key === "nick" || key === "text") ? data : null;
}

function messageEl(message) {
  let data = message && typeof message === "object" && "data" in message ? message.data : message;
  let user = message && message.user; // set by the server: who was signed in
  let claimed = false; // a nickname: whatever the sender typed, not checked by anyone
  const nicked = !user && nickMessage(data);
  if (nicked) {
    user = nicked.nick;
    data = nicked.text;
    claimed = true;
  }
  const isText = typeof data === "string";
  const body = el("div", { class: "msg-body" });
  if (user) {
    const me = claimed ? user === myNick() : state.principal && state.principal.user === user;
    const cls = `msg-user${me ? " me" : ""}${claimed ? " nick" : ""}`;
    body.append(el("span", { class: cls, text: user, title: claimed ? "a nickname (nobody signed in)" : undefined }));
  }
  body.append(el("span", { class: isText ? "msg-text" : "msg-text json", text: isText ? data : JSON.stringify(data) }));
  const time = message && message.time;
  return el(
    "li",
    { class: "msg" },
    el("time", { class: "msg-time", datetime: time || undefined, title: formatTime(time), text: clock(time) }),
    body,
  );
}

// "14:05" today, "Nov 3 14:05" before.
function clock(iso) {
  const date = new Date(iso || "");
  if (Number.isNaN(date.getTime())) return "";
  const time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
  if (date.toDateString() === new Date().toDateString()) return time;
  return `${date.toLocaleDateString([], { month: "short", day: "numeric" })} ${time}`;
}

async function resync() {
  const server = await session.recheck(channel);
  if (!server) return server;
  const lastId = server.channel ? server.channel.last_id : "";
  const restarted = state.workerPid !== null && server.health.worker_pid !== state.workerPid;
  state.workerPid = server.health.worker_pid;
  if (restarted || eventIdAfter(state.cursor, lastId)) {
    // A new server process: the channel's history starts again, with a new epoch in its ids.
    state.cursor = "";
    note("The server restarted: the messages above are from before, those below from the new history.");
    // The other channels' counts start again from now.
    state.otherCursors.clear();
    state.confirmed.clear();
    await loadChannels();
    openOthers();
  }
  return true;
}

function setupComposer() {
  const form = $("composer");
  const input = $("message");
  const error = $("composer-error");
  const grow = () => {
    input.style.height = "auto";
    input.style.height = `${Math.min(160, input.scrollHeight + 2)}px`;
  };
  input.addEventListener("input", () => {
    error.hidden = true;
    grow();
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = input.value;
    if (!text.trim()) return;
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    // Signed in, the server says who sent it; otherwise the nickname travels with the text.
    const nick = state.principal && state.principal.auth_configured ? "" : myNick();
    const body = { data: nick ? { nick, text } : text };
    try {
      await api("POST", `${path}/messages`, body);
      input.value = "";
      grow();
      follower.resume();
    } catch (err) {
      error.textContent = err instanceof ApiError && err.status === 413 ? tooLong(body, err.body) : errorText(err);
      error.hidden = false;
    } finally {
      button.disabled = false;
      input.focus();
    }
  });
}

// "Message too long: 80 KB, limit 64 KB": what was sent, against the limit the server's 413 names.
function tooLong(body, answer) {
  const sent = new Blob([JSON.stringify(body)]).size;
  const kb = (bytes) => `${Math.max(1, Math.round(bytes / 1024))} KB`;
  const limit = answer && Number.isSafeInteger(answer.limit_bytes) ? `, limit ${kb(answer.limit_bytes)}` : "";
  return `Message too long: ${kb(sent)}${limit}`;
}

function myNick() {
  return (localStorage.getItem(NICK_KEY) || "").trim();
}

function setupNick() {
  const input = $("nick");
  input.value = myNick();
  input.addEventListener("input", () => {
    try {
      localStorage.setItem(NICK_KEY, input.value.trim());
    } catch {
      // A browser that keeps nothing: the nickname lasts as long as the page.
    }
  });
}

// Channels: the list, and how many messages each has that were not read here.

function readSeen() {
  try {
    const seen = JSON.parse(localStorage.getItem(SEEN_KEY) || "{}");
    return seen && typeof seen === "object" ? seen : {};
  } catch {
    return {};
  }
}

function rememberSeen(name, id) {
  const seen = readSeen();
  seen[name] = { id, pid: state.workerPid };
  try {
    localStorage.setItem(SEEN_KEY, JSON.stringify(seen));
  } catch {
    // Not kept: unread counts start again from "now" on the next visit.
  }
}

// GET /channels: the channels people talk in (not the server's own: jobs, stats), this one included.
async function loadChannels() {
  const { channels } = await api("GET", "/channels");
  const names = channels.filter((c) => !c.system).map((c) => c.name);
  if (!channelError && !names.includes(channel)) names.push(channel);
  names.sort();
  const seen = readSeen();
  const lastIds = new Map(channels.map((c) => [c.name, c.last_id]));
  const others = names.filter((name) => name !== channel).slice(0, MAX_OTHERS);
  for (const name of others) {
    if (state.otherCursors.has(name) && state.confirmed.has(name)) continue;
    // From the last message read here if the same server process said so (it then has those ids), else from now.
    const mine = seen[name];
    const from = mine && mine.pid === state.workerPid && mine.id !== undefined ? mine.id : lastIds.get(name);
    state.otherCursors.set(name, from ?? 0);
  }
  const changed = others.join("\n") !== state.others.join("\n");
  state.channels = names;
  state.others = others;
  renderChannels();
  return changed;
}

function othersUrl() {
  const params = new URLSearchParams();
  for (const name of state.others) params.append("channel", name);
  const cursor = state.others.map((name) => `channel:${name}=${state.otherCursors.get(name)}`).join(",");
  params.append("last_event_id", cursor);
  return `/events?${params}`;
}

// A composite event id's parts, each value kept as the server wrote it.
function compositeParts(text) {
  const parts = new Map();
  for (const part of (text || "").split(",")) {
    const at = part.lastIndexOf("=");
    if (at > 0) parts.set(part.slice(0, at), part.slice(at + 1));
  }
  return parts;
}

function onOther(event) {
  let message;
  try {
    message = JSON.parse(event.data);
  } catch {
    return;
  }
  for (const [key, value] of compositeParts(event.lastEventId)) {
    if (!key.startsWith("channel:")) continue;
    state.otherCursors.set(key.slice(8), value);
    state.confirmed.add(key.slice(8));
  }
  const name = typeof message.source === "string" ? message.source.replace(/^channel:/, "") : "";
  if (!state.others.includes(name)) return;
  const count = event.type === "gap" ? message.missed_messages || 0 : 1;
  state.unread.set(name, (state.unread.get(name) || 0) + count);
  renderChannels();
}

async function othersResync() {
  const health = await api("GET", "/healthz");
  if (health.worker_pid !== state.workerPid) return "idle"; // the main stream's resync starts everything again
  for (const name of state.others) if (!state.confirmed.has(name)) state.otherCursors.delete(name);
  await loadChannels();
  return state.others.length > 0 || "idle";
}

function openOthers() {
  if (state.others.length) others.open();
  else others.close("idle");
}

function renderChannels() {
  const items = state.channels.map((name) => {
    const unread = name === channel ? 0 : state.unread.get(name) || 0;
    const link = el(
      "a",
      {
        class: "channel-link",
        href: `/chat?channel=${encodeURIComponent(name)}`,
        "aria-current": name === channel ? "page" : undefined,
        dataset: { channel: name },
      },
      el("span", { class: "channel-name", text: `#${name}` }),
      unread
        ? el("span", { class: "unread" }, unread > 999 ? "999+" : String(unread), el("span", { class: "sr-only", text: " unread" }))
        : null,
    );
    return el("li", {}, link);
  });
  $("channel-list").replaceChildren(...items);
}

const session = pageSession({ conn, stream, start, reset });

function reset() {
  state.principal = null;
  state.cursor = "";
  incoming = [];
  others.close();
  state.unread.clear();
  state.otherCursors.clear();
  state.confirmed.clear();
  list.replaceChildren($("chat-empty"));
  $("chat-empty").hidden = false;
}

async function start(principal) {
  state.principal = principal;
  if (channelError) {
    $("chat-info").textContent = channelError;
    $("composer").hidden = true;
    showConnState(conn, "closed");
    return;
  }
  const health = await api("GET", "/healthz");
  state.workerPid = health.worker_pid;
  $("chat-info").textContent = principal.auth_configured ? `as ${principal.user}` : "";
  $("nick-box").hidden = Boolean(principal.auth_configured);
  stream.open();
  await loadChannels();
  openOthers();
  $("message").focus();
}

setupComposer();
setupNick();
setInterval(async () => {
  if (!state.principal || channelError) return;
  try {
    if (await loadChannels()) openOthers();
  } catch {
    // The streams' own reconnects deal with a server that is away.
  }
}, CHANNELS_EVERY);
session.boot();

// For people poking at the page from devtools.
window.sseCommander = { state, stream };
