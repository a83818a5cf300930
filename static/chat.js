// The chat page: one channel as a room. Messages arrive over GET /channels/<name>/events, are posted with
// POST /channels/<name>/messages, and the connection heals itself like the console's.

import {
  $,
  api,
  el,
  errorText,
  eventIdAfter,
  Follower,
  formatTime,
  frameScheduler,
  LiveStream,
  pageSession,
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
};

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
});

const stream = new LiveStream({
  url: () => (state.cursor ? `${path}/events?last_event_id=${state.cursor}` : `${path}/events`),
  events: { message: onMessage, gap: onGap },
  onState: (s) => showConnState(conn, s),
  resync,
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

function messageEl(message) {
  const data = message && typeof message === "object" && "data" in message ? message.data : message;
  const user = message && message.user;
  const isText = typeof data === "string";
  const body = el("div", { class: "msg-body" });
  if (user) {
    const me = state.principal && state.principal.user === user;
    body.append(el("span", { class: me ? "msg-user me" : "msg-user", text: user }));
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
    try {
      await api("POST", `${path}/messages`, { data: text });
      input.value = "";
      grow();
      follower.resume();
    } catch (err) {
      error.textContent = errorText(err);
      error.hidden = false;
    } finally {
      button.disabled = false;
      input.focus();
    }
  });
}

const session = pageSession({ conn, stream, start, reset });

function reset() {
  state.principal = null;
  state.cursor = "";
  incoming = [];
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
  stream.open();
  $("message").focus();
}

setupComposer();
session.boot();

// For people poking at the page from devtools.
window.sseCommander = { state, stream };
