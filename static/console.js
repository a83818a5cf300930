// The console: start commands and actions, watch one job live, keep the list of recent jobs current.
//
// One EventSource carries everything: GET /events?channel=jobs&job=<open job>. It is reopened when the open
// job changes, and after any error, with the composite cursor of what was already shown (?last_event_id=),
// so nothing repeats; each source's inner id is checked as well, so a replayed event is never shown twice.

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
  formatComposite,
  formatDuration,
  formatTime,
  frameScheduler,
  numberFormat,
  pageSession,
  pageStream,
  parseComposite,
  showConnState,
  toast,
} from "./common.js";
import { Terminal } from "./terminal.js";
import { WorkerEventSource } from "./workersource.js";
import { commandExample, CommandHistory, shellCharacters } from "./command.js";
import { JobFilter, jobCategory } from "./joblist.js";
import { confirmAction, paramFields, paramValues, showParamError, unchosen } from "./actionparams.js";

const JOBS = "channel:jobs";
const MAX_JOBS = 200;
const MAX_LINES = Number(document.body.dataset.maxLines) || 5000;

const state = {
  principal: null,
  jobs: new Map(), // id -> the job's JSON (GET /jobs/<id> shape)
  openId: null,
  openDone: false, // the open job's exit/err event has been shown
  cursors: new Map(), // source -> position in the multiplexed stream (from the composite ids)
  seen: new Map(), // source -> last inner id shown
  workerPid: null,
  started: false,
  jobsChannel: true, // may this user read the jobs channel (it is listed at GET /channels)
  goneOutput: new Map(), // id -> what was on screen of a job the server no longer has (Terminal.snapshot)
  focusId: null, // the job list's one Tab stop (a roving tabindex)
};
const GONE_KEPT = 5; // snapshots of gone jobs' output kept in memory

const conn = $("conn");
const term = new Terminal({
  linesEl: $("term-lines"),
  hiddenEl: $("term-hidden"),
  hiddenCountEl: $("term-hidden-count"),
  hiddenBoxEl: $("term-hidden-box"),
  droppedEl: $("term-dropped"),
  droppedBoxEl: $("term-dropped-box"),
  droppedSepEl: $("term-dropped-sep"),
  maxLines: MAX_LINES,
});
const follower = new Follower($("term"), $("follow"));
// One bounded slice of output per animation frame (Terminal.flush); more frames follow while any is left. Under a
// flood (more output between two frames than the screen holds) the screen is redrawn at most every FLOOD_MS:
// each redraw is a screenful of new lines, and nobody reads faster than that.
const FLOOD_MS = 100;
const LINE_PX = parseFloat(getComputedStyle($("term")).lineHeight) || 19;
let floodUntil = 0;
let floodTimer = null;
const frame = frameScheduler(() => {
  term.flush();
  follower.stick();
  // Read after stick(), whose layout is still fresh: a screenful, for the next flush that finds a flood.
  term.floodLines = Math.ceil(follower.scroller.clientHeight / LINE_PX) + 2;
  if (term.flooded) floodUntil = performance.now() + FLOOD_MS;
  if (term.pending) render();
});

function render() {
  const wait = floodUntil - performance.now();
  if (wait <= 0) return frame();
  if (floodTimer === null) {
    floodTimer = setTimeout(() => {
      floodTimer = null;
      frame();
    }, wait);
  }
}

const EVENTS = ["start", "stdout", "stderr", "exit", "err", "gap", "job", "skipped"];
// The connection lives in a worker: a flood of output is read, parsed and counted off the page's thread, and
// what would scroll away unseen arrives as `skipped` summaries (static/stream-worker.js).
const stream = pageStream(conn, {
  url: streamUrl,
  events: Object.fromEntries(EVENTS.map((name) => [name, onEvent])),
  source: (url) =>
    new WorkerEventSource(url, { events: EVENTS, output: ["stdout", "stderr"], keepLines: MAX_LINES }),
  resync,
});
const filter = new JobFilter();
// Paging through the server's history (GET /jobs): the cursor of the next page (null: no more), and how many jobs
// scrolling has loaded beyond the first page (kept: the list holds MAX_JOBS plus those).
const paging = { next: null, loading: false, extra: 0, generation: 0 };

// The stream.

function watched() {
  const keys = state.jobsChannel ? [JOBS] : [];
  if (state.openId && !state.openDone) keys.push(`job:${state.openId}`);
  return keys;
}

function streamUrl() {
  const keys = watched();
  const params = new URLSearchParams();
  if (state.jobsChannel) params.append("channel", "jobs");
  if (state.openId && !state.openDone) params.append("job", state.openId);
  const last = formatComposite(state.cursors, keys);
  if (last) params.append("last_event_id", last);
  return `/events?${params}`;
}

function onEvent(event) {
  let message;
  try {
    message = JSON.parse(event.data);
  } catch {
    return;
  }
  for (const [key, value] of parseComposite(event.lastEventId)) {
    if (eventIdAfter(value, state.cursors.get(key))) state.cursors.set(key, value);
  }
  const source = message.source;
  if (event.type === "gap") return onGap(source, message);
  if (!eventIdAfter(message.id, state.seen.get(source))) return; // shown before this reconnect
  state.seen.set(source, message.id);
  if (source === JOBS) {
    if (event.type === "job" && message.data && message.data.data) upsertJob(message.data.data);
    return;
  }
  if (source === `job:${state.openId}`) onJobEvent(event.type, message.data);
}

function onGap(source, message) {
  if (source === JOBS) {
    loadJobs().catch(() => {});
  } else if (source === `job:${state.openId}`) {
    const missed = message.missed_bytes || 0;
    term.note(`··· ${formatBytes(missed)} of output skipped here: the server's buffer no longer holds it ···`, "gap");
    render();
    refreshJob(state.openId); // its dropped_bytes, the server's own count of what is gone
  }
}

// The job's metadata again (its dropped_bytes, how it ended); quietly nothing if the server cannot say.
async function refreshJob(id) {
  try {
    upsertJob(await api("GET", `/jobs/${encodeURIComponent(id)}`));
  } catch {
    // The next event or reconnect brings it.
  }
}

function onJobEvent(type, data) {
  if (type === "stdout" || type === "stderr") {
    term.write(data.out, type === "stdout" ? "out" : "err");
  } else if (type === "skipped") {
    term.skipped(data.lines, data.out, data.err);
  } else if (type === "start") {
    patchJob(state.openId, { pid: data.pid });
  } else if (type === "exit") {
    state.openDone = true;
    const patch = {
      exit_code: data.code,
      signal: data.signal,
      signal_name: data.signal_name,
      reason: data.reason,
      duration: data.duration,
    };
    if ("cancelled_by" in data) patch.cancelled_by = data.cancelled_by;
    const job = state.jobs.get(state.openId);
    if (job && isLive(job)) patch.state = stateForReason(data.reason, data.code);
    patchJob(state.openId, patch);
    showEnd();
    // The final metadata (dropped_bytes, and who cancelled it) comes with the jobs channel's end event; a page
    // without that channel asks.
    if (!state.jobsChannel) refreshJob(state.openId);
  } else if (type === "err") {
    state.openDone = true;
    term.note(data.out || "the command could not start", "bad");
    patchJob(state.openId, { state: "failed_to_start", error: data.out });
    showEnd();
  }
  render();
}

// The open job's final line: the same words and colour as its badge, kept so when the job's metadata changes
// after the exit event (the DELETE's answer, the jobs channel's end event). Announced to screen readers once.
function showEnd() {
  const job = state.jobs.get(state.openId);
  if (!job || (isLive(job) && !job.gone)) return;
  const result = outcome(job);
  const details = [result.text];
  const signal = job.signal_name || (job.signal ? `signal ${job.signal}` : "");
  if (signal && !result.text.includes(signal)) details.push(signal);
  if (job.duration !== null && job.duration !== undefined && !isLive(job)) details.push(formatDuration(job.duration));
  const text = `[${details.join(" · ")}]`;
  if (term.hasNote("end")) {
    term.setNote("end", text, `end ${result.cls}`);
    return;
  }
  term.note(text, `end ${result.cls}`, "end");
  announce(`${job.command || job.action || job.id}: ${result.text}`);
}

// (Re)open the one connection for what is watched now; with nothing to watch (a role that may not read the
// jobs channel, and no running job open) there is no connection at all.
function openStream() {
  if (watched().length > 0) stream.open();
  else stream.close("idle");
}

// Before each reconnect: is the server back, did it restart, am I still signed in, does my job still exist?
// Returns true to reconnect, false or "idle" to stay closed, null (or throws) to try again later.
async function resync() {
  const server = await session.recheck("jobs");
  if (!server) return server;
  const lastId = server.channel ? server.channel.last_id : "";
  const restarted = state.workerPid !== null && server.health.worker_pid !== state.workerPid;
  state.workerPid = server.health.worker_pid;
  if (restarted || eventIdAfter(state.cursors.get(JOBS), lastId)) {
    // A new server process: its jobs channel has a new history (epoch), and it only knows its own jobs.
    state.cursors.set(JOBS, lastId);
    state.seen.delete(JOBS);
    await loadJobs({ restarted: true });
  }
  if (state.openId && !state.openDone) {
    try {
      upsertJob(await api("GET", `/jobs/${state.openId}`));
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 404) throw error;
      openJobGone();
    }
  }
  return watched().length > 0 || "idle";
}

// The open job is no longer on the server (it restarted): what is on screen stays, marked, and ends here.
function openJobGone() {
  state.openDone = true;
  patchJob(state.openId, { gone: true });
  term.note("··· the server no longer has this job: its output ends here ···", "gap");
  showEnd();
  render();
}

// Jobs: the list and the open one.

// Running, or being stopped (signalled, not all gone yet).
function isLive(job) {
  return job.state === "running" || job.state === "stopping";
}

// The state the server gives a job that ended for this reason (app/runner.py's STATE_FOR_REASON).
function stateForReason(reason, code) {
  const states = {
    exited: "exited",
    killed: "killed",
    output_limit: "killed",
    timeout: "timed_out",
    cancelled: "cancelled",
    disconnected: "cancelled",
    shutdown: "cancelled",
    unkillable: "unkillable",
  };
  return states[reason] || (code !== null && code !== undefined ? "exited" : "killed");
}

function upsertJob(job) {
  if (!job || !job.id) return;
  const known = state.jobs.get(job.id);
  // The channel may replay a "running" announcement after the list already showed the end: keep the end.
  if (known && !isLive(known) && isLive(job)) return;
  // When we heard of it: a running job's duration ticks on from there, on this browser's clock.
  const fresh = { ...job, heardAt: Date.now() };
  if (known && known.gone) fresh.gone = true;
  // Who cancelled it, once heard (the DELETE's answer), stays known when a source that does not say follows
  // (cancelled_by null or absent: no name known there).
  if (known && known.cancelled_by && !job.cancelled_by) fresh.cancelled_by = known.cancelled_by;
  state.jobs.set(job.id, fresh);
  if (state.jobs.size > MAX_JOBS + paging.extra) {
    const oldest = [...state.jobs.values()].sort(byNewest).slice(MAX_JOBS + paging.extra);
    for (const old of oldest) if (old.id !== state.openId) state.jobs.delete(old.id);
  }
  jobsChanged(job.id);
}

function patchJob(id, patch) {
  const job = state.jobs.get(id);
  if (!job) return;
  state.jobs.set(id, { ...job, ...patch });
  jobsChanged(id);
}

function jobsChanged(id) {
  renderJobs();
  if (id === state.openId) {
    renderHead();
    if (state.openDone) showEnd();
  }
}

// The server's jobs. After a restart (`restarted`), the jobs it no longer has stay listed, marked as gone:
// what they printed may still be on this screen, and how they ended is worth knowing.
// Only the first page (the newest jobs that match the filter) is asked for; scrolling asks for the next.
async function loadJobs({ restarted = false } = {}) {
  const generation = ++paging.generation;
  const { jobs, next } = await api("GET", `/jobs?${filter.query()}`);
  if (generation !== paging.generation) return; // the filter changed meanwhile: a newer first page is coming
  paging.next = next;
  paging.extra = 0;
  if (restarted) {
    // Only what this page covers can be judged: jobs newer than its oldest (every job, if it is the last page).
    const present = new Set(jobs.map((job) => job.id));
    const oldest = next && jobs.length ? jobs[jobs.length - 1].created_at : "";
    for (const [id, job] of state.jobs) {
      if (!present.has(id) && !job.gone && filter.matches(job) && (job.created_at || "") >= oldest) {
        state.jobs.set(id, { ...job, gone: true });
      }
    }
  }
  for (const job of jobs.slice(0, MAX_JOBS)) upsertJob(job);
  renderJobs();
  if (restarted && state.openId) {
    renderHead();
    if (state.openDone) showEnd();
  }
}

// The next page of the history, when the list is scrolled near its end (and again while the end stays in view).
async function loadMoreJobs() {
  if (paging.loading || !paging.next || !nearListEnd()) return;
  paging.loading = true;
  const generation = paging.generation;
  try {
    const { jobs, next } = await api("GET", `/jobs?${filter.query(paging.next)}`);
    if (generation !== paging.generation) return;
    paging.next = next;
    paging.extra += jobs.length;
    for (const job of jobs) upsertJob(job);
    renderJobs();
  } finally {
    paging.loading = false;
  }
  if (generation === paging.generation) requestAnimationFrame(() => loadMoreJobs().catch(() => {}));
}

function nearListEnd() {
  const list = $("jobs");
  if (list.scrollHeight > list.clientHeight + 1) return list.scrollTop + list.clientHeight >= list.scrollHeight - 120;
  return list.getBoundingClientRect().bottom <= window.innerHeight + 120; // the list grows with the page (narrow)
}

let refilterTimer = null;

// The filter changed: shown at once from what is loaded; the server's first page for it follows.
function refilter() {
  renderJobs();
  clearTimeout(refilterTimer);
  refilterTimer = setTimeout(() => {
    loadJobs()
      .then(() => loadMoreJobs())
      .catch(() => {});
  }, 250);
}

function byNewest(a, b) {
  return (b.created_at || "").localeCompare(a.created_at || "");
}

// {text, cls} describing how a job ended (or that it runs), and who or what ended it. The class (ok, bad, warn,
// running) colours the badge, the list's result and the final line alike.
function outcome(job) {
  if (!job) return { text: "", cls: "" };
  if (isLive(job)) {
    if (job.gone) return { text: "lost", cls: "warn" }; // running when the server went away; no end was heard
    return job.state === "stopping" ? { text: "stopping", cls: "running" } : { text: "running", cls: "running" };
  }
  if (job.state === "failed_to_start") return { text: "failed to start", cls: "bad" };
  const signal = job.signal_name || (job.signal ? `signal ${job.signal}` : "");
  switch (job.reason) {
    case "cancelled":
      return { text: job.cancelled_by ? `cancelled by ${job.cancelled_by}` : "cancelled", cls: "warn" };
    case "disconnected":
      return { text: "cancelled: its viewer left", cls: "warn" };
    case "timeout":
      return { text: "timed out", cls: "bad" };
    case "shutdown":
    case "interrupted":
      return { text: "server restart", cls: "warn" };
    case "output_limit":
      return { text: "output limit", cls: "bad" };
    case "unkillable":
      return { text: "unkillable", cls: "bad" };
    case "lost":
      return { text: "lost", cls: "warn" };
    case "killed":
      return { text: signal ? `killed by ${signal}` : "killed", cls: "bad" };
    default:
      break;
  }
  if (job.exit_code !== null && job.exit_code !== undefined) {
    return { text: `exit ${job.exit_code}`, cls: job.exit_code === 0 ? "ok" : "bad" };
  }
  if (signal) return { text: `killed by ${signal}`, cls: "bad" };
  return { text: (job.state || "ended").replace("_", " "), cls: "warn" };
}

function jobDuration(job) {
  if (job.gone && isLive(job)) return null;
  if (isLive(job)) return (job.duration || 0) + (Date.now() - (job.heardAt || Date.now())) / 1000;
  return job.duration ?? null;
}

const jobItems = new Map(); // id -> {li, button, dot, cmd, sub, result}

function renderJobs() {
  const list = $("jobs");
  const all = [...state.jobs.values()].sort(byNewest);
  const counts = { running: 0, failed: 0, cancelled: 0 };
  for (const job of all) {
    const category = jobCategory(job);
    if (category in counts) counts[category]++;
  }
  const shown = all.filter((job) => filter.matches(job));
  $("jobs-empty").hidden = shown.length > 0;
  setText($("jobs-empty"), all.length ? "No job matches the filter." : "No jobs yet.");
  const summary = all.length ? [`${counts.running} running`, `${counts.failed} failed`, `${all.length} jobs`] : [];
  setText($("jobs-count"), summary.join(" · "));
  for (const chip of document.querySelectorAll(".state-chip")) {
    setText(chip.querySelector(".n"), String(counts[chip.dataset.filter]));
  }
  const wanted = new Set(shown.map((j) => j.id));
  for (const [id, item] of jobItems) {
    if (!wanted.has(id)) {
      item.li.remove();
      jobItems.delete(id);
    }
  }
  shown.forEach((job, index) => {
    let item = jobItems.get(job.id);
    if (!item) {
      const dot = el("span", { class: "dot", "aria-hidden": "true" });
      const cmd = el("span", { class: "job-cmd" });
      const sub = el("span", { class: "job-sub" });
      const result = el("span", { class: "job-result" });
      const button = el(
        "button",
        { type: "button", class: "job", tabindex: "-1", dataset: { id: job.id } },
        dot,
        el("span", { class: "job-main" }, cmd, sub),
        result,
      );
      button.addEventListener("click", () => openJob(job.id, { focusOutput: false }));
      button.addEventListener("focus", () => {
        state.focusId = job.id;
        rovingTabStop();
      });
      item = { li: el("li", {}, button), button, dot, cmd, sub, result };
      jobItems.set(job.id, item);
    }
    const result = outcome(job);
    setText(item.cmd, job.command || (job.action ? `${job.action}` : job.id));
    item.cmd.title = job.command || "";
    const parts = [formatTime(job.created_at)];
    const seconds = jobDuration(job);
    if (seconds !== null) parts.push(formatDuration(seconds));
    if (job.owner && state.principal && state.principal.auth_configured && job.owner !== state.principal.user) {
      parts.push(job.owner);
    }
    if (job.gone) parts.push("no longer on the server");
    setText(item.sub, parts.filter(Boolean).join(" · "));
    // The visible text is the button's name (a screen reader says what is seen); "running" is said, not shown.
    setText(item.result, result.text);
    item.result.className = `job-result ${result.cls}${result.cls === "running" ? " sr-only" : ""}`;
    item.dot.dataset.result = result.cls;
    item.button.dataset.state = job.gone && isLive(job) ? "lost" : job.state;
    item.button.dataset.gone = job.gone ? "true" : "false";
    if (job.id === state.openId) item.button.setAttribute("aria-current", "true");
    else item.button.removeAttribute("aria-current");
    const at = list.children[index];
    if (at !== item.li) list.insertBefore(item.li, at || null);
  });
  rovingTabStop();
}

// The list is one Tab stop: the job last focused, else the open one, else the first; arrows move within it.
function rovingTabStop() {
  let stop = [state.focusId, state.openId].find((id) => id && jobItems.has(id));
  if (!stop) stop = $("jobs").querySelector("button.job")?.dataset.id;
  for (const [id, item] of jobItems) {
    const index = id === stop ? "0" : "-1";
    if (item.button.getAttribute("tabindex") !== index) item.button.setAttribute("tabindex", index);
  }
}

function moveInList(event) {
  const buttons = [...$("jobs").querySelectorAll("button.job")];
  const at = buttons.indexOf(document.activeElement);
  if (at === -1) return;
  const to = { ArrowDown: at + 1, ArrowUp: at - 1, Home: 0, End: buttons.length - 1 }[event.key];
  if (to === undefined) return;
  event.preventDefault();
  const next = buttons[Math.max(0, Math.min(buttons.length - 1, to))];
  state.focusId = next.dataset.id;
  rovingTabStop();
  next.focus();
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

// Raw and Download: links while the server has the output, switched off (no href, aria-disabled) when not.
function setLink(link, href) {
  if (href) {
    link.href = href;
    link.removeAttribute("aria-disabled");
    link.removeAttribute("title");
  } else {
    link.removeAttribute("href");
    link.setAttribute("aria-disabled", "true");
    link.title = "The server no longer has this job's output";
  }
}

function renderHead() {
  const job = state.jobs.get(state.openId);
  const badge = $("job-state");
  const stop = $("stop");
  const raw = $("raw-link");
  const download = $("download-link");
  $("term-empty").hidden = Boolean(state.openId);
  if (!state.openId) {
    badge.hidden = true;
    $("job-gone").hidden = true;
    setText($("job-command"), "No job open");
    $("job-command").classList.add("muted");
    setText($("job-meta"), "");
    stop.disabled = true;
    raw.hidden = download.hidden = true;
    document.title = "SSE Commander";
    return;
  }
  $("job-command").classList.remove("muted");
  const result = outcome(job || { state: "running" });
  badge.hidden = false;
  setText(badge, result.text);
  badge.className = `badge ${result.cls}`;
  const gone = Boolean(job && job.gone);
  $("job-gone").hidden = !gone;
  setText($("job-command"), job ? job.command || job.action || job.id : state.openId);
  $("job-command").title = job ? job.command || "" : "";
  const meta = [`#${state.openId.slice(0, 8)}`];
  if (job) {
    if (job.owner && state.principal && state.principal.auth_configured) meta.push(job.owner);
    if (job.created_at) meta.push(`started ${formatTime(job.created_at)}`);
    const seconds = jobDuration(job);
    if (seconds !== null) meta.push(formatDuration(seconds));
    if (job.pid && isLive(job) && !gone) meta.push(`pid ${job.pid}`);
    if (job.output_bytes) {
      const dropped = job.dropped_bytes ? ` (${formatBytes(job.dropped_bytes)} dropped)` : "";
      meta.push(`${formatBytes(job.output_bytes)}${dropped}`);
    }
  }
  setText($("job-meta"), meta.join(" · "));
  term.setDropped(job ? job.dropped_bytes : 0);
  stop.disabled = !job || job.state !== "running" || gone || stop.dataset.busy === "1";
  raw.hidden = download.hidden = false;
  const base = `/jobs/${encodeURIComponent(state.openId)}/output`;
  setLink(raw, gone ? null : base);
  setLink(download, gone ? null : `${base}?download=1`);
  setLink($("term-hidden-link"), gone ? null : `${base}?download=1`);
  document.title = `${result.cls === "running" ? "▶ " : ""}${job ? job.command || job.id : state.openId} — SSE Commander`;
  jobInput.render(job, gone);
}

// The input line under a job started with "stdin": true (POST /jobs/<id>/input): Enter sends the line,
// "End input" closes the job's stdin. Shown while the job runs and its input is open.
const jobInput = {
  closed: new Set(), // jobs whose input this page has seen closed

  render(job, gone) {
    const open = Boolean(job && job.stdin && job.state === "running" && !gone && !this.closed.has(job.id));
    const form = $("job-input");
    if (form.hidden === open) form.hidden = !open;
    if (!open) $("job-input-error").hidden = true;
  },

  async send(id, text, eof) {
    const init = { method: "POST", credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } };
    if (eof) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify({ eof: true });
    } else {
      init.headers["Content-Type"] = "text/plain; charset=utf-8";
      init.body = text;
    }
    const response = await fetch(`/jobs/${encodeURIComponent(id)}/input`, init);
    if (response.ok) return;
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    throw new ApiError(response.status, data);
  },

  setup() {
    const form = $("job-input");
    const input = $("job-input-text");
    const error = $("job-input-error");
    const submit = async (eof) => {
      const id = state.openId;
      if (!id) return;
      error.hidden = true;
      try {
        await this.send(id, `${input.value}\n`, eof);
        if (eof) this.closed.add(id);
        input.value = "";
      } catch (err) {
        const code = err instanceof ApiError ? err.code : "";
        if (code === "input_closed" || code === "job_not_running" || code === "no_stdin") {
          this.closed.add(id); // the line goes away; say why
          toast(errorText(err));
        } else {
          error.textContent = code === "input_full" ? "The command is not reading its input; try again in a moment." : errorText(err);
          error.hidden = false;
        }
      }
      renderHead();
      if (!form.hidden) input.focus();
    };
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      submit(false);
    });
    $("job-input-eof").addEventListener("click", () => submit(true));
  },
};

// Show a job: replay it from the start, and follow it if it still runs. A job the server no longer has shows
// what this page kept of it.
async function openJob(id, { focusOutput = false } = {}) {
  if (!state.jobs.has(id)) {
    try {
      upsertJob(await api("GET", `/jobs/${encodeURIComponent(id)}`));
    } catch (error) {
      toast(error instanceof ApiError && error.status === 404 ? `No job ${id} on this server.` : error.message);
      if (location.hash) history.replaceState(null, "", location.pathname + location.search);
      return;
    }
  }
  const leaving = state.jobs.get(state.openId);
  if (leaving && leaving.gone && leaving.id !== id) {
    state.goneOutput.delete(leaving.id);
    state.goneOutput.set(leaving.id, term.snapshot());
    while (state.goneOutput.size > GONE_KEPT) state.goneOutput.delete(state.goneOutput.keys().next().value);
  }
  state.openId = id;
  state.openDone = false;
  state.focusId = id;
  const key = `job:${id}`;
  for (const source of [...state.cursors.keys()]) if (source.startsWith("job:")) state.cursors.delete(source);
  state.seen.delete(key);
  term.reset();
  follower.resume();
  const job = state.jobs.get(id);
  if (job && job.gone) {
    state.openDone = true; // nothing to stream: the server that ran it is gone
    const kept = state.goneOutput.get(id);
    if (kept) {
      state.goneOutput.delete(id);
      term.restore(kept);
    } else {
      if (job.command) term.note(`$ ${job.command}`, "cmd");
      term.note("··· the server no longer has this job, and this page kept none of its output ···", "gap");
      term.note(`[${outcome(job).text}]`, `end ${outcome(job).cls}`, "end");
    }
  } else if (job && job.command) {
    term.note(`$ ${job.command}`, "cmd");
  }
  history.replaceState(null, "", `#job=${encodeURIComponent(id)}`);
  $("stop").dataset.busy = "";
  renderHead();
  renderJobs();
  render();
  openStream();
  if (focusOutput) $("term").focus();
}

async function runJob(body) {
  const job = await api("POST", "/jobs", body);
  upsertJob(job);
  await openJob(job.id);
  return job;
}

async function stopJob() {
  const id = state.openId;
  const job = state.jobs.get(id);
  if (!id || !job || job.state !== "running" || job.gone) return;
  const stop = $("stop");
  stop.dataset.busy = "1";
  stop.disabled = true;
  setText(stop, "Stopping…");
  try {
    upsertJob(await api("DELETE", `/jobs/${encodeURIComponent(id)}`));
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 409)) toast(error.message);
  } finally {
    stop.dataset.busy = "";
    setText(stop, "Stop");
    renderHead();
  }
}

// Starting jobs: the command box and one form per action.

const commandHistory = new CommandHistory(localStorage, "ssecmd.history");

// Toggles beside Run, remembered in this browser: "Merge stderr" (the job's "stderr": "merged") and, where the
// server allows input to commands, "Take input" (the job's "stdin": true, with an input line under it).
function runToggle(id, key) {
  const button = $(id);
  const pressed = () => button.getAttribute("aria-pressed") === "true";
  const show = (on) => button.setAttribute("aria-pressed", String(on));
  show(localStorage.getItem(key) === "1");
  button.addEventListener("click", () => {
    const on = !pressed();
    show(on);
    localStorage.setItem(key, on ? "1" : "0");
  });
  return {
    get on() {
      return pressed() && !button.hidden;
    },
  };
}

function setupRunForm() {
  const mergeStderr = runToggle("merge-stderr", "ssecmd.mergeStderr");
  const takeInput = runToggle("take-input", "ssecmd.takeInput");
  jobInput.setup();
  const form = $("run-form");
  const input = $("command");
  const error = $("run-error");
  const warning = $("shell-warning");
  // What the warning was last shown for: "Run anyway" runs exactly that text.
  let warned = null;

  const showWarning = () => {
    const found = shellCharacters(input.value);
    warning.hidden = found.length === 0;
    if (found.length) {
      $("shell-chars").replaceChildren(
        ...found.flatMap((chars, index) => [index ? (index === found.length - 1 ? " and " : ", ") : "", el("code", { text: chars })]),
      );
    }
    return found;
  };

  const run = async (command) => {
    error.hidden = true;
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const body = { command };
      if (mergeStderr.on) body.stderr = "merged";
      if (takeInput.on) body.stdin = true;
      await runJob(body);
      commandHistory.add(command);
      if (body.stdin && !$("job-input").hidden) $("job-input-text").focus();
      else input.select();
    } catch (err) {
      error.textContent = errorText(err);
      error.hidden = false;
    } finally {
      button.disabled = false;
    }
  };

  input.addEventListener("input", () => {
    error.hidden = true;
    commandHistory.edited();
    showWarning();
  });
  input.addEventListener("keydown", (event) => {
    if (event.key !== "ArrowUp" && event.key !== "ArrowDown") return;
    if (event.altKey || event.ctrlKey || event.metaKey || event.shiftKey) return;
    const value = event.key === "ArrowUp" ? commandHistory.older(input.value) : commandHistory.newer();
    if (value === null) return;
    event.preventDefault();
    input.value = value;
    input.setSelectionRange(value.length, value.length);
    error.hidden = true;
    showWarning();
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const command = input.value.trim();
    if (!command) return;
    if (showWarning().length && warned !== command) {
      // Enter on such a line warns instead of running; Enter again (on "Run anyway") runs it.
      warned = command;
      $("run-anyway").focus();
      return;
    }
    run(command);
  });
  $("run-anyway").addEventListener("click", () => {
    const command = input.value.trim();
    if (!command) return;
    warned = command;
    run(command);
    input.focus();
  });
}

function showAllowed(commands) {
  $("allowed").replaceChildren(
    ...commands.map((name) =>
      el("button", {
        type: "button",
        class: "chip",
        text: name,
        title: `Put ${name} in the command box`,
        onclick: () => {
          $("command").value = `${name} `;
          $("command").focus();
          $("shell-warning").hidden = true;
        },
      }),
    ),
  );
  $("allowed-count").textContent = String(commands.length);
  $("command").placeholder = commandExample(commands);
}

function renderActions(actions) {
  const box = $("actions");
  box.replaceChildren();
  $("actions-section").hidden = actions.length === 0;
  for (const action of actions) box.append(actionForm(action));
}

function actionForm(action) {
  const fields = paramFields(action.params, `action-${action.name}`, () => updateSubmit());
  const form = el("form", { class: "action-form", novalidate: true, dataset: { action: action.name } });
  for (const { root } of fields.values()) form.append(root);
  const formError = el("p", { class: "field-error", role: "alert", hidden: true });
  const waiting = el("span", { class: "hint", id: `action-${action.name}-waiting` });
  const submit = el("button", {
    type: "submit",
    class: "btn btn-primary btn-sm",
    text: `Run ${action.name}`,
    "aria-describedby": waiting.id,
  });
  form.append(el("div", { class: "form-foot" }, submit, waiting, formError));

  // Choices without a default keep Run disabled until each has a value.
  function updateSubmit() {
    const waitingFor = unchosen(fields);
    submit.disabled = waitingFor.length > 0;
    waiting.textContent = waitingFor.length ? `Choose ${waitingFor.map(({ param }) => param.name).join(" and ")} first` : "";
  }
  updateSubmit();

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    formError.hidden = true;
    if (submit.disabled) return;
    const params = paramValues(fields);
    const body = { action: action.name, params };
    if (action.confirm) {
      if (!(await confirmAction(action, params))) return;
      body.confirm = true;
    }
    submit.disabled = true;
    try {
      await runJob(body);
    } catch (err) {
      const message = errorText(err);
      if (!showParamError(fields, message)) {
        formError.textContent = message;
        formError.hidden = false;
      }
    } finally {
      updateSubmit();
    }
  });
  const summaryText = action.description ? ` — ${action.description}` : "";
  return el(
    "details",
    { class: "action" },
    el(
      "summary",
      {},
      el("span", { class: "action-name", text: action.name }),
      action.confirm ? el("span", { class: "confirm-mark", text: " (asks to confirm)" }) : null,
      el("span", { class: "muted", text: summaryText }),
    ),
    form,
  );
}

// Small things.

function setupKeys() {
  document.addEventListener("keydown", (event) => {
    if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    const typing = target instanceof HTMLElement && target.matches("input, textarea, select");
    if (event.key === "/" && !typing) {
      event.preventDefault();
      $("command").focus();
      $("command").select();
    } else if (event.key === "Escape") {
      if ($("confirm-dialog").open) return; // the dialog's own Escape cancels it
      if (typing && target.id === "command" && target.value) {
        target.value = ""; // first Escape clears the box, the next one stops the job
        $("run-error").hidden = true;
        $("shell-warning").hidden = true;
        return;
      }
      if (typing && target.id !== "command") return;
      const job = state.jobs.get(state.openId);
      if (job && job.state === "running" && !job.gone) {
        event.preventDefault();
        stopJob();
      }
    }
  });
  // Up/Down (Home/End) move through the job list; Enter or Space opens the focused job.
  $("jobs").addEventListener("keydown", moveInList);
  $("jobs-filter").addEventListener("input", (event) => {
    filter.setText(event.target.value);
    refilter();
  });
  for (const chip of document.querySelectorAll(".state-chip")) {
    chip.addEventListener("click", () => {
      const on = filter.toggle(chip.dataset.filter);
      chip.setAttribute("aria-pressed", String(on));
      refilter();
    });
  }
  const more = () => loadMoreJobs().catch(() => {});
  $("jobs").addEventListener("scroll", more, { passive: true });
  window.addEventListener("scroll", more, { passive: true });
  $("stop").addEventListener("click", stopJob);
  const wrap = $("wrap-toggle");
  const applyWrap = (on) => {
    $("term").classList.toggle("nowrap", !on);
    wrap.setAttribute("aria-pressed", String(on));
  };
  applyWrap(localStorage.getItem("ssecmd.wrap") !== "0");
  wrap.addEventListener("click", () => {
    const on = wrap.getAttribute("aria-pressed") !== "true";
    localStorage.setItem("ssecmd.wrap", on ? "1" : "0");
    applyWrap(on);
    follower.stick();
  });
}

// Signing in and out.

const session = pageSession({ conn, stream, start, reset, notify: toast });

function reset() {
  state.started = false;
  state.principal = null;
  state.jobs.clear();
  state.goneOutput.clear();
  jobItems.clear();
  $("jobs").replaceChildren();
  state.openId = null;
  state.cursors.clear();
  state.seen.clear();
  term.reset();
  render();
  renderHead();
}

async function start(principal) {
  state.principal = principal;
  state.started = true;
  showConnState(conn, "connecting");
  const [actions, channels, health] = await Promise.all([
    api("GET", "/actions"),
    api("GET", "/channels"),
    api("GET", "/healthz"),
  ]);
  state.workerPid = health.worker_pid;
  const info = channels.channels.find((c) => c.name === "jobs");
  state.jobsChannel = Boolean(info); // listed only if this role may read it
  state.cursors.set(JOBS, info ? info.last_id : "");
  state.commands = actions.commands;
  renderActions(actions.actions);
  const canRun = actions.commands.length > 0;
  $("run-form").hidden = !canRun;
  $("allowed-box").hidden = !canRun;
  $("run-none").hidden = canRun || actions.actions.length > 0;
  showAllowed(actions.commands);
  $("take-input").hidden = !actions.stdin_allowed;
  await loadJobs();
  loadMoreJobs().catch(() => {}); // a tall list shows more than one page
  const wanted = /^#job=([A-Za-z0-9_.-]+)$/.exec(location.hash);
  if (wanted) await openJob(decodeURIComponent(wanted[1]));
  else {
    renderHead();
    openStream();
  }
  if (canRun) $("command").focus();
}

async function boot() {
  setupRunForm();
  setupKeys();
  renderHead();
  setInterval(() => {
    // Running durations tick.
    if ([...state.jobs.values()].some(isLive)) {
      renderJobs();
      if (state.openId) renderHead();
    }
  }, 1000);
  await session.boot();
}

boot();

// For people poking at the console from devtools.
window.sseCommander = { state, term, stream, follower, numberFormat, formatBytes };
