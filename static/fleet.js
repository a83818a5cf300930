// Fleet runs (issue 20): pick hosts by name or tag, start one command or named action (GET /actions, its parameters
// as the console shows them: actionparams.js) on all of them (POST /runs, with a timeout, parallel and
// stop_on_failure), and follow
// the run (GET /runs/<id>/events): one pane per host, or every host's lines interleaved with a coloured host
// name. Each pane has the host's state and exit code; a filter shows only the hosts that did not succeed.
//
// Output is only ever inserted as text (the panes are Terminals; the interleaved view builds text nodes). The DOM
// stays bounded: each pane keeps its last lines, the interleaved view its last lines, and all drawing happens
// once per animation frame within a budget, so 50 hosts printing at once do not lock the page.
// The stream resumes by itself: the browser's own reconnects send Last-Event-ID; after an answer it gives up on,
// the page reopens with ?last_event_id=, and drops any event it already showed (each host job's own event id).

import {
  $,
  announce,
  api,
  ApiError,
  el,
  errorText,
  eventIdAfter,
  Follower,
  formatBytes,
  formatDuration,
  formatTime,
  frameScheduler,
  pageSession,
  pageStream,
  parseEventId,
  showConnState,
  toast,
} from "./common.js";
import { Terminal } from "./terminal.js";
import { confirmAction, paramFields, paramValues, showParamError, unchosen } from "./actionparams.js";

const PANE_LINES = Number(document.body.dataset.paneLines) || 200;
const IL_LINES = Number(document.body.dataset.interleavedLines) || 2000;
const PANE_CHARS = 200_000; // characters kept per pane, however long its lines (50 panes: 10 M at most)
const COLORS = 12; // host colours in the interleaved view (.hc-0 … .hc-11)
const PANE_FLUSH_LINES = 100; // lines built per pane per frame
const FRAME_LINES = 800; // lines built per frame over all panes; the rest waits for the next frames
const MAX_IL_LINE = 4096; // characters of one interleaved line (a longer one is broken)

// The host states of a run (GET /runs/<id>'s hosts[].state), and how each is shown.
const HOST_LOOK = {
  pending: "muted",
  running: "running",
  succeeded: "ok",
  failed: "bad",
  refused: "bad",
  unreachable: "warn",
  lost: "warn",
  cancelled: "warn",
  skipped: "muted",
};
const RUN_LOOK = { running: "running", succeeded: "ok", failed: "bad", partial: "warn", cancelled: "warn" };
const LIVE = new Set(["pending", "running"]);
const HOST_STATE_LOOK = { up: "ok", stale: "warn", down: "bad" }; // GET /hosts' states
const RUNS_LISTED = 20; // recent runs shown (GET /runs?limit=)

const state = {
  principal: null,
  hosts: [], // GET /hosts
  picked: new Set(), // host names
  runs: [], // GET /runs: the recent runs this caller may see, newest first
  actions: [], // GET /actions' actions: what the "What to run" choice offers besides a command
  action: null, // the chosen one, or null: a command
  fields: new Map(), // the chosen action's parameter fields (actionparams.js)
  runId: null,
  run: null, // GET /runs/<id> (hosts as a list), kept current from the events
  done: false, // run_exit was heard: nothing more to follow
  lastId: "", // the run stream's last event id (opaque)
  seen: new Map(), // job id -> its last event id shown
  panes: new Map(), // host -> Pane
  view: localStorage.getItem("ssecmd.fleetView") === "interleaved" ? "interleaved" : "panes",
  onlyFailed: false,
};

const conn = $("conn");

// One host's pane: a header (name, state badge, exit code) over a small bounded terminal.
class Pane {
  constructor(host, index) {
    this.host = host;
    this.index = index;
    this.color = index % COLORS;
    this.lines = 0; // complete lines this host printed (for the interleaved view's count of hidden lines)
    this.carry = { out: "", err: "" }; // the interleaved view's unfinished line of each stream
    const titleId = `pane-${index}-title`;
    this.badge = el("span", { class: "badge muted", text: "pending" });
    this.exit = el("span", { class: "pane-exit" });
    this.linesEl = el("div", { class: "term-lines" });
    this.hiddenCount = el("span", { text: "0" });
    // The host's whole output is its job's (GET /jobs/<id>/output): linked once the job is known.
    this.rawLink = el("a", { download: true, text: "download all" });
    this.rawBox = el("span", { hidden: true }, " · ", this.rawLink);
    this.hiddenEl = el(
      "p",
      { class: "term-hidden", hidden: true },
      this.hiddenCount,
      " earlier lines not shown",
      this.rawBox,
    );
    this.scroller = el(
      "div",
      { class: "term pane-term", tabindex: "0", role: "log", "aria-live": "off", "aria-label": `Output of ${host}` },
      this.hiddenEl,
      this.linesEl,
    );
    this.root = el(
      "section",
      { class: "pane", dataset: { host, state: "pending" }, "aria-labelledby": titleId },
      el(
        "div",
        { class: "pane-head" },
        el("h3", { class: `pane-host hc-${this.color}`, id: titleId, text: host, title: host }),
        this.badge,
        this.exit,
      ),
      this.scroller,
    );
    this.term = new Terminal({
      linesEl: this.linesEl,
      hiddenEl: this.hiddenEl,
      hiddenCountEl: this.hiddenCount,
      maxLines: PANE_LINES,
      maxChars: PANE_CHARS,
    });
    this.follower = new Follower(this.scroller, null);
    this.info = { host, state: "pending", exit_code: null, reason: null, job: null };
  }

  get failed() {
    return !LIVE.has(this.info.state) && this.info.state !== "succeeded";
  }

  setInfo(info) {
    this.info = { ...this.info, ...info };
    const look = HOST_LOOK[this.info.state] || "muted";
    setText(this.badge, this.info.state);
    this.badge.className = `badge ${look}`;
    this.root.dataset.state = this.info.state;
    if (this.info.job && this.rawBox.hidden) {
      this.rawLink.href = `/jobs/${encodeURIComponent(this.info.job)}/output?download=1`;
      this.rawLink.title = `${this.host}'s whole output (job ${this.info.job})`;
      this.rawBox.hidden = false;
    }
    const code = this.info.exit_code;
    setText(this.exit, code === null || code === undefined ? "" : `exit ${code}`);
    this.exit.className = `pane-exit ${code === 0 ? "ok" : "bad"}`;
    const why = this.info.reason && this.info.reason !== "exited" ? this.info.reason : "";
    const reason = why ? `${this.info.state}: ${why}` : this.info.state;
    this.badge.title = reason;
  }
}

// Drawing: once per animation frame, a bounded amount of work.
const dirty = new Set(); // panes with output not yet drawn
const frame = frameScheduler(draw);

function draw() {
  const until = performance.now() + INBOX_MS;
  let handled = 0;
  while (handled < inbox.length && (handled % 64 !== 0 || performance.now() < until)) handle(inbox[handled++]);
  inbox.splice(0, handled);
  let budget = FRAME_LINES;
  for (const pane of [...dirty]) {
    if (budget <= 0) break;
    const lines = Math.min(PANE_FLUSH_LINES, budget);
    pane.term.flush({ lines });
    budget -= lines;
    dirty.delete(pane);
    if (pane.term.pending) dirty.add(pane); // to the back of the queue: every pane gets its turn
  }
  for (const pane of state.panes.values()) if (pane.drawn !== pane.term.total) {
    pane.drawn = pane.term.total;
    pane.follower.stick();
  }
  interleaved.draw();
  if (inbox.length || dirty.size || interleaved.pending.length) frame();
}

// The interleaved view: complete lines of every host, in the order they arrived, each after its host's name.
// ANSI escapes are dropped here (the panes show the colours); a \r progress bar shows its last state.
// eslint-disable-next-line no-control-regex
const ESCAPES = /\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[ -/]*[0-~]?|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/g;

function cleanLine(text) {
  let line = text.endsWith("\r") ? text.slice(0, -1) : text;
  const cr = line.lastIndexOf("\r");
  if (cr !== -1) line = line.slice(cr + 1);
  return line.replace(ESCAPES, "");
}

const interleaved = {
  records: [], // {pane, text, err}: the newest lines, at most IL_LINES
  pending: [], // records not drawn yet
  rebuild: true,

  add(pane, stream, text) {
    const buffer = pane.carry[stream] + text;
    const parts = buffer.split("\n");
    let rest = parts.pop();
    while (rest.length > MAX_IL_LINE) {
      parts.push(rest.slice(0, MAX_IL_LINE));
      rest = rest.slice(MAX_IL_LINE);
    }
    pane.carry[stream] = rest;
    for (const part of parts) this._push(pane, cleanLine(part), stream === "err");
  },

  // A host's last unfinished lines, when it ends.
  finish(pane) {
    for (const stream of ["out", "err"]) {
      if (pane.carry[stream]) this._push(pane, cleanLine(pane.carry[stream]), stream === "err");
      pane.carry[stream] = "";
    }
  },

  note(pane, text, cls) {
    this._push(pane, text, false, cls);
  },

  _push(pane, text, err, cls = "") {
    pane.lines++;
    const record = { pane, text, err, cls };
    this.records.push(record);
    if (this.records.length > IL_LINES * 1.25) this.records.splice(0, this.records.length - IL_LINES);
    if (state.view === "interleaved" && !this.rebuild) {
      this.pending.push(record);
      if (this.pending.length > IL_LINES) this.pending.splice(0, this.pending.length - IL_LINES);
    }
    frame();
  },

  reset() {
    this.records = [];
    this.pending = [];
    this.rebuild = true;
    $("il-lines").replaceChildren();
  },

  _line(record) {
    const line = el(
      "div",
      { class: `ln${record.err ? " has-e" : ""}${record.cls ? ` note ${record.cls}` : ""}` },
      el("span", { class: `il-host hc-${record.pane.color}`, text: record.pane.host.padEnd(this.width) }),
      el("span", { class: "il-sep", "aria-hidden": "true", text: " │ " }),
    );
    line.append(record.err ? el("span", { class: "e", text: record.text }) : document.createTextNode(record.text));
    return line;
  },

  draw() {
    if (state.view !== "interleaved") {
      this.pending = [];
      return;
    }
    const box = $("il-lines");
    const wanted = (record) => !state.onlyFailed || record.pane.failed;
    if (this.rebuild) {
      this.rebuild = false;
      this.pending = [];
      this.width = Math.max(0, ...[...state.panes.keys()].map((host) => host.length));
      const records = this.records.filter(wanted).slice(-IL_LINES);
      box.replaceChildren(...records.map((record) => this._line(record)));
    } else if (this.pending.length) {
      const fragment = document.createDocumentFragment();
      for (const record of this.pending) if (wanted(record)) fragment.append(this._line(record));
      this.pending = [];
      box.append(fragment);
      let extra = box.childElementCount - IL_LINES;
      while (extra-- > 0) box.firstChild.remove();
    } else {
      return;
    }
    let total = 0;
    for (const pane of state.panes.values()) if (!state.onlyFailed || pane.failed) total += pane.lines;
    const hidden = Math.max(0, total - box.childElementCount);
    $("il-hidden").hidden = hidden === 0;
    setText($("il-hidden-count"), new Intl.NumberFormat().format(hidden));
    ilFollower.stick();
  },
};
const ilFollower = new Follower($("interleaved"), null);

// The run stream.

const EVENTS = ["stdout", "stderr", "exit", "err", "gap", "host_state", "run_exit"];
const stream = pageStream(conn, {
  url: () => {
    const base = `/runs/${encodeURIComponent(state.runId)}/events`;
    return state.lastId ? `${base}?last_event_id=${encodeURIComponent(state.lastId)}` : base;
  },
  events: Object.fromEntries(EVENTS.map((name) => [name, onEvent])),
  resync,
});

function parse(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

// Events are only queued as they arrive (a replay brings thousands in one task) and handled in draw(), a few
// milliseconds' worth per frame. The cursor moves at once: what is queued is handled whatever happens to the
// connection. run_exit closes the connection at once, before the server's end of stream makes it reconnect.
const inbox = [];
const INBOX_MS = 8; // time spent on queued events per frame

function onEvent(event) {
  if (event.lastEventId) state.lastId = event.lastEventId;
  if (event.type === "run_exit") {
    state.done = true;
    stream.close("idle");
  }
  inbox.push({ type: event.type, data: event.data });
  frame();
}

function handle(event) {
  const message = parse(event.data);
  if (!message || typeof message !== "object") return;
  if (event.type === "host_state") return hostState(message);
  if (event.type === "run_exit") return runExit(message);
  if (!validHost(message.host)) return;
  const pane = state.panes.get(message.host) || addPane(message.host);
  const id = String(message.id ?? "");
  if (message.job && parseEventId(id)) {
    if (!eventIdAfter(id, state.seen.get(message.job))) return; // shown before a reconnect
    state.seen.set(message.job, id);
  }
  let data = event.type === "gap" ? message : message.data; // a gap's data is {host, job, missed_bytes}
  if (typeof data === "string") data = parse(data) ?? { out: data };
  if (!data || typeof data !== "object") return;
  if (event.type === "stdout" || event.type === "stderr") {
    const kind = event.type === "stdout" ? "out" : "err";
    pane.term.write(data.out || "", kind);
    interleaved.add(pane, kind, data.out || "");
  } else if (event.type === "err") {
    const text = data.out || "the command could not start";
    pane.term.note(text, "bad");
    interleaved.note(pane, text, "bad");
  } else if (event.type === "gap") {
    const missed = Number(data.missed_bytes) || 0;
    const what = missed ? formatBytes(missed) : "some";
    const text = `··· ${what} of output skipped here: the server's buffer no longer holds it ···`;
    pane.term.note(text, "gap");
    interleaved.note(pane, text, "gap");
  } else if (event.type === "exit") {
    interleaved.finish(pane);
    if (data.code !== undefined && data.code !== null && pane.info.exit_code === null) {
      pane.setInfo({ exit_code: data.code });
    }
  }
  dirty.add(pane);
  frame();
}

function validHost(host) {
  return typeof host === "string" && /^[A-Za-z0-9._-]{1,64}$/.test(host);
}

// A host's state changed: its badge, and (once it is done) its last line, in stream order after its output.
function hostState(info) {
  if (!validHost(info.host)) return;
  const pane = state.panes.get(info.host) || addPane(info.host);
  pane.setInfo(info);
  if (!LIVE.has(info.state)) endNote(pane);
  renderHead();
}

// A pane's last line once its host is done: the state (and why), in the badge's colour.
function endNote(pane) {
  if (pane.ended) return;
  pane.ended = true;
  interleaved.finish(pane);
  const { state: hostStateName, exit_code: code, reason } = pane.info;
  const parts = [hostStateName];
  if (code !== null && code !== undefined) parts.push(`exit ${code}`);
  if (reason && reason !== "exited") parts.push(reason); // why it was refused, skipped, lost, cancelled…
  const text = `[${parts.join(" · ")}]`;
  const cls = `end ${HOST_LOOK[hostStateName] || ""}`;
  pane.term.note(text, cls);
  interleaved.note(pane, text, cls);
  dirty.add(pane);
  frame();
}

function runExit(run) {
  applyRun(run);
  for (const pane of state.panes.values()) if (!LIVE.has(pane.info.state)) endNote(pane);
  announce(`Run ${run.command || run.id}: ${run.state}${failedText(run)}`);
  loadRuns();
}

function failedText(run) {
  const failed = run.failed_hosts || [];
  return failed.length ? `, failed on ${failed.join(", ")}` : "";
}

// The run as GET /runs/<id>, DELETE or run_exit says: the aggregate and every host's badge. The hosts' last
// lines wait for the stream (they come after the output it may still be replaying).
function applyRun(run) {
  state.run = { ...(state.run || {}), ...run };
  for (const info of run.hosts || []) {
    if (!validHost(info.host)) continue;
    (state.panes.get(info.host) || addPane(info.host)).setInfo(info);
  }
  renderHead();
  const listed = state.runs.find((item) => item.id === run.id);
  if (listed && run.state && listed.state !== run.state) {
    listed.state = run.state;
    renderRuns();
  }
}

// The recent runs (GET /runs): the caller's own, or every user's for a role that sees every job. Loaded when the
// page starts, when a run starts and when the open one ends; each opens its run.
async function loadRuns() {
  try {
    const { runs } = await api("GET", `/runs?limit=${RUNS_LISTED}`);
    state.runs = runs;
  } catch {
    return; // the list stays as it was; the next start or end loads it again
  }
  renderRuns();
}

function renderRuns() {
  $("runs-empty").hidden = state.runs.length > 0;
  $("run-list").replaceChildren(
    ...state.runs.map((run) => {
      const hosts = (run.hosts || []).length;
      const meta = [`${hosts} host${hosts === 1 ? "" : "s"}`, formatTime(new Date(run.created_at * 1000).toISOString())];
      if (run.user && run.user !== state.principal?.user) meta.push(run.user);
      return el(
        "li",
        {},
        el(
          "button",
          {
            type: "button",
            class: "run-item",
            dataset: { run: run.id },
            "aria-current": run.id === state.runId ? "true" : undefined,
            title: `Open run ${run.id}`,
            onclick: () => openRun(run.id),
          },
          el("span", { class: `badge ${RUN_LOOK[run.state] || "muted"}`, text: run.state }),
          el("code", { class: "run-item-command", text: run.command || run.id }),
          el("span", { class: "run-item-meta", text: meta.join(" · ") }),
        ),
      );
    }),
  );
}

// Before each reconnect: still signed in, is the server up, does the run still exist (and how is it now)?
async function resync() {
  const server = await session.recheck("jobs");
  if (!server) return server;
  if (!state.runId || state.done) return "idle";
  try {
    const run = await api("GET", `/runs/${encodeURIComponent(state.runId)}`);
    applyRun(run);
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 404) throw error;
    state.done = true;
    toast(`The server no longer has run ${state.runId}.`);
    renderHead();
    return "idle";
  }
  return true;
}

// The run view.

function addPane(host) {
  const pane = new Pane(host, state.panes.size);
  state.panes.set(host, pane);
  $("panes").append(pane.root);
  interleaved.rebuild = true;
  return pane;
}

function clearRun() {
  stream.close("idle");
  state.runId = null;
  state.run = null;
  state.done = false;
  state.lastId = "";
  state.seen.clear();
  state.panes.clear();
  dirty.clear();
  inbox.length = 0;
  $("panes").replaceChildren();
  interleaved.reset();
}

// Show a run (its panes at once from `hosts`, when known) and follow it from its first event.
async function openRun(id, { hosts = [], command = "" } = {}) {
  clearRun();
  state.runId = id;
  state.run = { id, state: "running", command, hosts: [] };
  for (const host of hosts) addPane(host);
  history.replaceState(null, "", `#run=${encodeURIComponent(id)}`);
  renderHead();
  renderRuns();
  try {
    const run = await api("GET", `/runs/${encodeURIComponent(id)}`);
    if (state.runId !== id) return;
    applyRun(run);
  } catch (error) {
    if (state.runId !== id) return;
    if (error instanceof ApiError && error.status === 404) {
      toast(`No run ${id} on this server.`);
      clearRun();
      history.replaceState(null, "", location.pathname + location.search);
      renderHead();
      return;
    }
    toast(errorText(error));
  }
  stream.open();
}

function renderHead() {
  const run = state.run;
  const badge = $("run-state");
  const panes = [...state.panes.values()];
  $("run-empty").hidden = Boolean(run);
  const failed = panes.filter((pane) => pane.failed);
  setText($("failed-count"), String(failed.length));
  $("view-toggle").disabled = $("failed-only").disabled = !run;
  if (!run) {
    badge.hidden = true;
    setText($("run-command"), "No run open");
    $("run-command").classList.add("muted");
    setText($("run-meta"), "");
    $("run-cancel").disabled = true;
    $("panes").hidden = true;
    $("interleaved").hidden = true;
    $("failed-none").hidden = true;
    document.title = "Fleet — SSE Commander";
    return;
  }
  const aggregate = run.state || "running"; // the server's: GET /runs/<id>, DELETE's answer, run_exit
  badge.hidden = false;
  setText(badge, aggregate);
  badge.className = `badge ${RUN_LOOK[aggregate] || "muted"}`;
  setText($("run-command"), run.command || run.id);
  $("run-command").title = run.command || "";
  $("run-command").classList.remove("muted");
  const counts = new Map();
  for (const pane of panes) counts.set(pane.info.state, (counts.get(pane.info.state) || 0) + 1);
  const meta = [`${panes.length} host${panes.length === 1 ? "" : "s"}`];
  for (const name of Object.keys(HOST_LOOK)) if (counts.get(name)) meta.push(`${counts.get(name)} ${name}`);
  if (run.parallel) meta.push(`${run.parallel} at a time`);
  if (run.stop_on_failure) meta.push("stops on failure");
  if (run.created_at && run.ended_at) meta.push(formatDuration(run.ended_at - run.created_at));
  if (run.user && state.principal && state.principal.auth_configured) meta.push(run.user);
  setText($("run-meta"), meta.join(" · "));
  $("run-cancel").disabled = aggregate !== "running" || state.done || $("run-cancel").dataset.busy === "1";
  const interleavedView = state.view === "interleaved";
  $("view-toggle").setAttribute("aria-pressed", String(interleavedView));
  $("failed-only").setAttribute("aria-pressed", String(state.onlyFailed));
  for (const pane of panes) {
    const hide = state.onlyFailed && !pane.failed;
    if (pane.root.hidden !== hide) pane.root.hidden = hide;
  }
  if (state.onlyFailed && failedChanged(failed)) interleaved.rebuild = true;
  $("failed-none").hidden = !(state.onlyFailed && failed.length === 0);
  $("panes").hidden = interleavedView || (state.onlyFailed && failed.length === 0);
  $("interleaved").hidden = !interleavedView || (state.onlyFailed && failed.length === 0);
  document.title = `${aggregate === "running" ? "▶ " : ""}${run.command || run.id} — Fleet — SSE Commander`;
  frame();
}

// Whether the set of failed hosts changed since the interleaved view was last built for it.
let failedKey = "";
function failedChanged(failed) {
  const key = failed.map((pane) => pane.host).join("\n");
  if (key === failedKey) return false;
  failedKey = key;
  return true;
}

async function cancelRun() {
  const id = state.runId;
  if (!id || state.done) return;
  const button = $("run-cancel");
  button.dataset.busy = "1";
  button.disabled = true;
  setText(button, "Cancelling…");
  try {
    applyRun(await api("DELETE", `/runs/${encodeURIComponent(id)}`));
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 409)) toast(errorText(error));
  } finally {
    button.dataset.busy = "";
    setText(button, "Cancel run");
    renderHead();
  }
}

// The host picker.

async function loadHosts() {
  try {
    const { hosts } = await api("GET", "/hosts");
    state.hosts = hosts;
  } catch (error) {
    state.hosts = [];
    setText($("hosts-empty"), `The hosts could not be listed: ${errorText(error)}`);
    $("hosts-empty").hidden = false;
    renderPicker();
    return;
  }
  const names = new Set(state.hosts.map((host) => host.name));
  for (const name of [...state.picked]) if (!names.has(name)) state.picked.delete(name);
  // With one host (the memory store) there is nothing to choose: it is picked.
  if (state.hosts.length === 1) state.picked.add(state.hosts[0].name);
  setText($("hosts-empty"), "No host is registered.");
  renderPicker();
}

function allTags() {
  const tags = new Set();
  for (const host of state.hosts) for (const tag of host.tags || []) tags.add(tag);
  return [...tags].sort();
}

function renderPicker() {
  const list = $("host-list");
  $("hosts-empty").hidden = state.hosts.length > 0;
  const up = state.hosts.filter((host) => host.state === "up").length;
  setText($("hosts-count"), state.hosts.length ? `${up} up · ${state.hosts.length} hosts` : "");
  list.replaceChildren(
    ...state.hosts.map((host, index) => {
      const id = `host-${index}`;
      const box = el("input", {
        type: "checkbox",
        id,
        value: host.name,
        checked: state.picked.has(host.name),
        "aria-describedby": `${id}-about`,
      });
      box.addEventListener("change", () => {
        if (box.checked) state.picked.add(host.name);
        else state.picked.delete(host.name);
        renderTargets();
      });
      const about = [host.state, ...(host.tags || []).map((tag) => `#${tag}`)];
      if (host.running_jobs) about.push(`${host.running_jobs} running`);
      return el(
        "li",
        { class: "host-item", dataset: { host: host.name, state: host.state } },
        box,
        el("label", { for: id, class: "host-name", text: host.name }),
        el(
          "span",
          { class: "host-about", id: `${id}-about` },
          el("span", { class: `host-state ${HOST_STATE_LOOK[host.state] || "bad"}`, text: host.state }),
          ...(host.tags || []).map((tag) => el("span", { class: "host-tag", text: tag })),
        ),
      );
    }),
  );
  const tags = allTags();
  $("tag-chips").hidden = tags.length === 0;
  $("tag-chips").replaceChildren(
    ...tags.map((tag) => {
      const hosts = state.hosts.filter((host) => (host.tags || []).includes(tag));
      const chip = el(
        "button",
        {
          type: "button",
          class: "chip tag-chip",
          dataset: { tag },
          "aria-pressed": "false",
          title: `Pick every host tagged ${tag}`,
        },
        tag,
        el("span", { class: "n", text: ` ${hosts.length}` }),
      );
      chip.addEventListener("click", () => {
        const all = hosts.every((host) => state.picked.has(host.name));
        for (const host of hosts) {
          if (all) state.picked.delete(host.name);
          else state.picked.add(host.name);
        }
        syncPicker();
      });
      return chip;
    }),
  );
  syncPicker();
}

// The checkboxes and tag chips as `state.picked` says.
function syncPicker() {
  for (const box of $("host-list").querySelectorAll("input[type=checkbox]")) box.checked = state.picked.has(box.value);
  renderTargets();
}

function pickedHosts() {
  return state.hosts.filter((host) => state.picked.has(host.name)).map((host) => host.name);
}

function renderTargets() {
  const picked = pickedHosts();
  const down = state.hosts.filter((host) => state.picked.has(host.name) && host.state === "down").length;
  let text = picked.length ? `${picked.length} host${picked.length === 1 ? "" : "s"} picked` : "No host picked.";
  if (down) text += ` (${down} down: ${down === 1 ? "it" : "they"} will show as unreachable)`;
  setText($("fleet-targets"), text);
  setText($("fleet-start"), picked.length > 1 ? `Run on ${picked.length} hosts` : "Run");
  for (const chip of $("tag-chips").querySelectorAll(".tag-chip")) {
    const hosts = state.hosts.filter((host) => (host.tags || []).includes(chip.dataset.tag));
    chip.setAttribute("aria-pressed", String(hosts.length > 0 && hosts.every((host) => state.picked.has(host.name))));
  }
}

// "What to run": a command (the command box), or one of GET /actions' actions (its parameters' fields instead).
function renderActionChoice(actions) {
  state.actions = actions;
  const select = $("fleet-action");
  select.replaceChildren(
    el("option", { value: "", text: "A command" }),
    ...actions.map((action) => el("option", { value: action.name, text: `Action: ${action.name}` })),
  );
  $("fleet-what").hidden = actions.length === 0;
  chooseAction("");
}

function chooseAction(name) {
  const action = state.actions.find((candidate) => candidate.name === name) || null;
  state.action = action;
  $("fleet-action").value = action ? action.name : "";
  state.fields = action ? paramFields(action.params, "fleet-param") : new Map();
  const box = $("fleet-params");
  box.replaceChildren(...[...state.fields.values()].map(({ root }) => root));
  box.hidden = state.fields.size === 0;
  $("fleet-command-field").hidden = action !== null;
  let hint = "";
  if (action) {
    hint = action.description || "";
    if (action.confirm) hint += `${hint ? " " : ""}(asks to confirm)`;
  }
  setText($("fleet-action-hint"), hint);
  $("fleet-error").hidden = true;
}

function setupForm() {
  const form = $("fleet-form");
  const error = $("fleet-error");
  const command = $("fleet-command");
  const parallel = $("fleet-parallel");
  const timeout = $("fleet-timeout");
  const fail = (message, field) => {
    error.textContent = message;
    error.hidden = false;
    if (field) {
      field.setAttribute("aria-invalid", "true");
      field.focus();
    }
  };
  for (const field of [command, parallel, timeout]) {
    field.addEventListener("input", () => {
      error.hidden = true;
      field.removeAttribute("aria-invalid");
    });
  }
  $("fleet-action").addEventListener("change", (event) => chooseAction(event.target.value));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    const action = state.action;
    const fields = state.fields;
    const text = command.value.trim();
    if (!action && !text) return fail("Type a command to run.", command);
    const waitingFor = action ? unchosen(fields) : [];
    if (waitingFor.length) return fail(`Choose ${waitingFor.map(({ param }) => param.name).join(" and ")} first.`, waitingFor[0].input);
    const hosts = pickedHosts();
    if (!hosts.length) return fail("Pick at least one host.", $("host-list").querySelector("input") || null);
    const body = action ? { action: action.name, params: paramValues(fields) } : { command: text };
    Object.assign(body, { hosts, stop_on_failure: $("fleet-stop").checked });
    const n = parallel.value.trim();
    if (n) {
      if (!/^\d+$/.test(n) || Number(n) < 1) return fail("Parallel must be a whole number, 1 or more.", parallel);
      body.parallel = Number(n);
    }
    const seconds = timeout.value.trim();
    if (seconds) {
      if (!(Number(seconds) > 0)) return fail("The timeout must be a number of seconds, more than 0.", timeout);
      body.timeout = Number(seconds);
    }
    if (action && action.confirm) {
      if (!(await confirmAction(action, body.params, `on ${hosts.length} host${hosts.length === 1 ? "" : "s"}`))) return;
      body.confirm = true;
    }
    const submit = $("fleet-start");
    submit.disabled = true;
    try {
      const created = await api("POST", "/runs", body);
      loadRuns();
      await openRun(created.id, { hosts: created.hosts || hosts, command: action ? `action ${action.name}` : text });
      if (!action) command.select();
    } catch (err) {
      let message = errorText(err);
      if (err instanceof ApiError && err.body.host && !message.includes(err.body.host)) message += ` (${err.body.host})`;
      if (!(action && showParamError(fields, message))) {
        const field = { command: action ? null : command, action: $("fleet-action"), parallel, timeout }[
          err instanceof ApiError ? err.body.parameter : ""
        ];
        fail(message, field || null);
      }
    } finally {
      submit.disabled = false;
    }
  });
  $("pick-all").addEventListener("click", () => {
    for (const host of state.hosts) state.picked.add(host.name);
    syncPicker();
  });
  $("pick-none").addEventListener("click", () => {
    state.picked.clear();
    syncPicker();
  });
  $("hosts-reload").addEventListener("click", () => loadHosts());
}

function setupRunTools() {
  $("run-cancel").addEventListener("click", cancelRun);
  $("view-toggle").addEventListener("click", () => {
    state.view = state.view === "interleaved" ? "panes" : "interleaved";
    localStorage.setItem("ssecmd.fleetView", state.view);
    interleaved.rebuild = true;
    renderHead();
    // Hidden boxes forget where they were scrolled: both views start again at their newest lines.
    requestAnimationFrame(() => {
      if (state.view === "interleaved") ilFollower.resume();
      else for (const pane of state.panes.values()) pane.follower.resume();
    });
  });
  $("failed-only").addEventListener("click", () => {
    state.onlyFailed = !state.onlyFailed;
    interleaved.rebuild = true;
    failedKey = "";
    renderHead();
  });
  document.addEventListener("keydown", (event) => {
    if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    const typing = target instanceof HTMLElement && target.matches("input, textarea, select");
    if (event.key === "/" && !typing) {
      event.preventDefault();
      focusWhat();
    }
  });
}

// Small things.

// The command box, or with an action chosen the choice of what to run.
function focusWhat() {
  if (state.action) {
    $("fleet-action").focus();
    return;
  }
  $("fleet-command").focus();
  $("fleet-command").select();
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

// Signing in and out.

const session = pageSession({ conn, stream, start, reset, notify: toast });

function reset() {
  clearRun();
  state.principal = null;
  state.hosts = [];
  state.picked.clear();
  state.runs = [];
  renderRuns();
  renderActionChoice([]);
  renderPicker();
  renderHead();
}

async function start(principal) {
  state.principal = principal;
  showConnState(conn, "idle");
  // The actions this caller may run (as the console lists them); none: the page runs commands only.
  const actions = api("GET", "/actions").then(
    (found) => found.actions || [],
    () => [],
  );
  await loadHosts();
  renderActionChoice(await actions);
  loadRuns();
  const wanted = /^#run=([A-Za-z0-9_.-]+)$/.exec(location.hash);
  if (wanted) await openRun(decodeURIComponent(wanted[1]));
  else renderHead();
  $("fleet-command").focus();
}

function boot() {
  setupForm();
  setupRunTools();
  renderHead();
  session.boot();
}

boot();

// For people poking at the page from devtools (and the browser tests).
window.sseFleet = { state, stream, interleaved, dirty, inbox };
