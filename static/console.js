// The console: start commands and actions, watch one job live, keep the list of recent jobs current.
//
// One EventSource carries everything: GET /events?channel=jobs&job=<open job>. It is reopened when the open
// job changes, and after any error, with the composite cursor of what was already shown (?last_event_id=),
// so nothing repeats; each source's inner id is checked as well, so a replayed event is never shown twice.

import {
  $,
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
  LiveStream,
  numberFormat,
  pageSession,
  parseComposite,
  showConnState,
} from "./common.js";
import { Terminal } from "./terminal.js";

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
};

const conn = $("conn");
const term = new Terminal({
  linesEl: $("term-lines"),
  hiddenEl: $("term-hidden"),
  hiddenCountEl: $("term-hidden-count"),
  droppedEl: $("term-dropped"),
  droppedBoxEl: $("term-dropped-box"),
  maxLines: MAX_LINES,
});
const follower = new Follower($("term"), $("follow"));
const render = frameScheduler(() => {
  term.flush();
  follower.stick();
});

const stream = new LiveStream({
  url: streamUrl,
  events: Object.fromEntries(
    ["start", "stdout", "stderr", "exit", "err", "gap", "job"].map((name) => [name, onEvent]),
  ),
  onState: (s) => showConnState(conn, s),
  resync,
});

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
    term.gap(missed, `··· ${formatBytes(missed)} of output skipped here: the server's buffer no longer holds it ···`);
    render();
  }
}

function onJobEvent(type, data) {
  if (type === "stdout" || type === "stderr") {
    term.write(data.out, type === "stdout" ? "out" : "err");
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
    const job = state.jobs.get(state.openId);
    if (job && isLive(job)) patch.state = stateForReason(data.reason, data.code);
    patchJob(state.openId, patch);
    const result = outcome({ ...job, ...patch });
    const details = [result.text];
    if (data.reason && data.reason !== "exited") details.push(data.reason);
    if (data.duration !== null && data.duration !== undefined) details.push(formatDuration(data.duration));
    term.note(`[${details.join(" · ")}]`, `end ${result.cls}`);
  } else if (type === "err") {
    state.openDone = true;
    term.note(data.out || "the command could not start", "end bad");
    patchJob(state.openId, { state: "failed_to_start", error: data.out });
  }
  render();
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
    await loadJobs({ replace: true });
  }
  if (state.openId && !state.openDone) {
    try {
      upsertJob(await api("GET", `/jobs/${state.openId}`));
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 404) throw error;
      jobLost();
    }
  }
  return watched().length > 0 || "idle";
}

function jobLost() {
  state.openDone = true;
  patchJob(state.openId, { lost: true });
  term.note("··· the server no longer knows this job (it restarted); its output ends here ···", "gap");
  render();
}

// Jobs: the list and the open one.

// Running, or being stopped (signalled, not all gone yet).
function isLive(job) {
  return job.state === "running" || job.state === "stopping";
}

function stateForReason(reason, code) {
  if (reason === "exited") return "exited";
  if (reason === "timeout") return "timed_out";
  if (reason === "cancelled") return "cancelled";
  if (reason === "unkillable") return "unkillable";
  return code !== null && code !== undefined ? "exited" : "killed";
}

function upsertJob(job) {
  if (!job || !job.id) return;
  const known = state.jobs.get(job.id);
  // The channel may replay a "running" announcement after the list already showed the end: keep the end.
  if (known && !isLive(known) && isLive(job)) return;
  // When we heard of it: a running job's duration ticks on from there, on this browser's clock.
  const fresh = { ...job, heardAt: Date.now() };
  if (known && known.lost) fresh.lost = true;
  state.jobs.set(job.id, fresh);
  if (state.jobs.size > MAX_JOBS) {
    const oldest = [...state.jobs.values()].sort(byNewest).slice(MAX_JOBS);
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
  if (id === state.openId) renderHead();
  updateCommandList();
}

async function loadJobs({ replace = false } = {}) {
  const { jobs } = await api("GET", "/jobs");
  if (replace) {
    const open = state.jobs.get(state.openId);
    state.jobs = new Map();
    if (open) state.jobs.set(open.id, open);
  }
  for (const job of jobs.slice(0, MAX_JOBS)) upsertJob(job);
  renderJobs();
}

function byNewest(a, b) {
  return (b.created_at || "").localeCompare(a.created_at || "");
}

// {text, cls} describing how a job ended (or that it runs).
function outcome(job) {
  if (!job) return { text: "", cls: "" };
  if (job.lost) return { text: "lost", cls: "muted" };
  if (job.state === "running") return { text: "running", cls: "running" };
  if (job.state === "stopping") return { text: "stopping", cls: "running" };
  if (job.state === "unkillable") return { text: "unkillable", cls: "bad" };
  if (job.state === "failed_to_start") return { text: "failed to start", cls: "bad" };
  if (job.exit_code !== null && job.exit_code !== undefined) {
    return { text: `exit ${job.exit_code}`, cls: job.exit_code === 0 ? "ok" : "bad" };
  }
  if (job.signal_name || job.signal) {
    return { text: job.signal_name || `signal ${job.signal}`, cls: job.state === "cancelled" ? "muted" : "bad" };
  }
  return { text: (job.state || "").replace("_", " "), cls: "muted" };
}

function jobDuration(job) {
  if (job.lost) return null;
  if (isLive(job)) return (job.duration || 0) + (Date.now() - (job.heardAt || Date.now())) / 1000;
  return job.duration ?? null;
}

const jobItems = new Map(); // id -> {li, button, dot, cmd, sub}

function renderJobs() {
  const list = $("jobs");
  const jobs = [...state.jobs.values()].sort(byNewest);
  $("jobs-empty").hidden = jobs.length > 0;
  const running = jobs.filter((j) => isLive(j) && !j.lost).length;
  $("jobs-count").textContent = jobs.length ? `${running} running · ${jobs.length}` : "";
  const wanted = new Set(jobs.map((j) => j.id));
  for (const [id, item] of jobItems) {
    if (!wanted.has(id)) {
      item.li.remove();
      jobItems.delete(id);
    }
  }
  jobs.forEach((job, index) => {
    let item = jobItems.get(job.id);
    if (!item) {
      const dot = el("span", { class: "dot", "aria-hidden": "true" });
      const cmd = el("span", { class: "job-cmd" });
      const sub = el("span", { class: "job-sub" });
      const result = el("span", { class: "job-result" });
      const button = el(
        "button",
        { type: "button", class: "job", dataset: { id: job.id } },
        dot,
        el("span", { class: "job-main" }, cmd, sub),
        result,
      );
      button.addEventListener("click", () => openJob(job.id, { focusOutput: false }));
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
    setText(item.sub, parts.filter(Boolean).join(" · "));
    setText(item.result, result.cls === "running" ? "" : result.text);
    item.result.className = `job-result ${result.cls}`;
    item.dot.dataset.result = result.cls;
    item.button.dataset.state = job.lost ? "lost" : job.state;
    item.button.setAttribute("aria-label", `${job.command || job.id}: ${result.text}`);
    if (job.id === state.openId) item.button.setAttribute("aria-current", "true");
    else item.button.removeAttribute("aria-current");
    const at = list.children[index];
    if (at !== item.li) list.insertBefore(item.li, at || null);
  });
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
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
  setText($("job-command"), job ? job.command || job.action || job.id : state.openId);
  $("job-command").title = job ? job.command || "" : "";
  const meta = [`#${state.openId.slice(0, 8)}`];
  if (job) {
    if (job.owner && state.principal && state.principal.auth_configured) meta.push(job.owner);
    if (job.created_at) meta.push(`started ${formatTime(job.created_at)}`);
    const seconds = jobDuration(job);
    if (seconds !== null) meta.push(formatDuration(seconds));
    if (job.reason && job.reason !== "exited") meta.push(job.reason);
    if (job.pid && isLive(job)) meta.push(`pid ${job.pid}`);
    if (job.output_bytes) meta.push(formatBytes(job.output_bytes));
  }
  setText($("job-meta"), meta.join(" · "));
  stop.disabled = !job || job.state !== "running" || job.lost || stop.dataset.busy === "1";
  raw.hidden = download.hidden = Boolean(job && job.lost);
  raw.href = `/jobs/${encodeURIComponent(state.openId)}/output`;
  download.href = `/jobs/${encodeURIComponent(state.openId)}/output?download=1`;
  $("term-hidden-link").href = download.href;
  document.title = `${result.cls === "running" ? "▶ " : ""}${job ? job.command || job.id : state.openId} — SSE Commander`;
}

// Show a job: replay it from the start, and follow it if it still runs.
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
  state.openId = id;
  state.openDone = false;
  const key = `job:${id}`;
  for (const source of [...state.cursors.keys()]) if (source.startsWith("job:")) state.cursors.delete(source);
  state.seen.delete(key);
  term.reset();
  follower.resume();
  const job = state.jobs.get(id);
  if (job && job.command) term.note(`$ ${job.command}`, "cmd");
  if (job && job.lost) {
    state.openDone = true; // nothing to stream: the server that ran it is gone
    term.note("··· this job's output is gone: the server restarted and no longer knows it ···", "gap");
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
  if (!id || !job || job.state !== "running" || job.lost) return;
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

function updateCommandList() {
  const list = $("command-list");
  const values = [];
  const recent = [...state.jobs.values()].sort(byNewest);
  for (const job of recent) if (job.command && !job.action && !values.includes(job.command)) values.push(job.command);
  const names = state.commands || [];
  const all = [...values.slice(0, 15), ...names.filter((n) => !values.includes(n))];
  const key = all.join("\n");
  if (list.dataset.key === key) return;
  list.dataset.key = key;
  list.replaceChildren(...all.map((value) => el("option", { value })));
}

function setupRunForm() {
  const form = $("run-form");
  const input = $("command");
  const error = $("run-error");
  input.addEventListener("input", () => {
    error.hidden = true;
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const command = input.value.trim();
    if (!command) return;
    error.hidden = true;
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      await runJob({ command });
      input.select();
    } catch (err) {
      error.textContent = errorText(err);
      error.hidden = false;
    } finally {
      button.disabled = false;
    }
  });
}

function renderActions(actions) {
  const box = $("actions");
  box.replaceChildren();
  $("actions-section").hidden = actions.length === 0;
  for (const action of actions) box.append(actionForm(action));
}

function actionForm(action) {
  const fields = new Map();
  const form = el("form", { class: "action-form", novalidate: true, dataset: { action: action.name } });
  for (const param of action.params) {
    const id = `action-${action.name}-${param.name}`;
    const errorId = `${id}-error`;
    let input;
    if (param.type === "choice") {
      input = el("select", { id, name: param.name });
      if (!param.required && param.default === undefined) input.append(el("option", { value: "", text: "—" }));
      for (const choice of param.choices) {
        input.append(el("option", { value: choice, text: choice, selected: choice === param.default }));
      }
    } else {
      // A number box or a text box: the same but for these attributes.
      const kind =
        param.type === "integer"
          ? { type: "number", inputmode: "numeric", step: "1", min: param.min ?? undefined, max: param.max ?? undefined }
          : { type: "text", spellcheck: "false", autocapitalize: "off", maxlength: param.max_length ?? undefined };
      input = el("input", {
        id,
        name: param.name,
        ...kind,
        value: param.default ?? undefined,
        required: param.required,
      });
    }
    input.setAttribute("aria-describedby", `${id}-hint ${errorId}`);
    const hint = paramHint(param);
    const error = el("span", { class: "field-error", id: errorId, role: "alert", hidden: true });
    input.addEventListener("input", () => {
      error.hidden = true;
      input.removeAttribute("aria-invalid");
    });
    fields.set(param.name, { input, error, param });
    form.append(
      el(
        "div",
        { class: "field" },
        el("label", { for: id }, param.name, param.required ? el("span", { class: "req", text: " *" }) : null),
        input,
        el("span", { class: "hint", id: `${id}-hint`, text: hint }),
        error,
      ),
    );
  }
  const formError = el("p", { class: "field-error", role: "alert", hidden: true });
  const submit = el("button", { type: "submit", class: "btn btn-primary btn-sm", text: `Run ${action.name}` });
  form.append(el("div", { class: "form-foot" }, submit, formError));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    formError.hidden = true;
    const params = {};
    for (const [name, { input, error, param }] of fields) {
      error.hidden = true;
      input.removeAttribute("aria-invalid");
      const value = input.value;
      if (value === "") continue; // the server applies the default, or says it is required
      params[name] = param.type === "integer" && /^-?\d+$/.test(value.trim()) ? Number(value) : value;
    }
    submit.disabled = true;
    try {
      await runJob({ action: action.name, params });
    } catch (err) {
      const message = errorText(err);
      const named = /parameter (['"])(.+?)\1: (.*)$/s.exec(message);
      const field = named && fields.get(named[2]);
      if (field) {
        field.error.textContent = named[3];
        field.error.hidden = false;
        field.input.setAttribute("aria-invalid", "true");
        field.input.focus();
      } else {
        formError.textContent = message;
        formError.hidden = false;
      }
    } finally {
      submit.disabled = false;
    }
  });
  const summaryText = action.description ? ` — ${action.description}` : "";
  return el(
    "details",
    { class: "action" },
    el("summary", {}, el("span", { class: "action-name", text: action.name }), el("span", { class: "muted", text: summaryText })),
    form,
  );
}

function paramHint(param) {
  if (param.type === "integer") {
    const range = [param.min, param.max].map((v) => (v === null || v === undefined ? "" : String(v)));
    const text = range[0] || range[1] ? `integer ${range[0] || "…"}–${range[1] || "…"}` : "integer";
    return param.description ? `${param.description} (${text})` : text;
  }
  if (param.type === "choice") return param.description || "";
  const text = param.pattern ? `matches ${param.pattern}` : "text";
  return param.description ? `${param.description} (${text})` : text;
}

// Small things.

let toastTimer = null;
function toast(message) {
  const node = $("toast");
  node.textContent = message;
  node.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    node.hidden = true;
  }, 6000);
}

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
      if (typing && target.id === "command" && target.value) {
        target.value = ""; // first Escape clears the box, the next one stops the job
        $("run-error").hidden = true;
        return;
      }
      if (typing && target.id !== "command") return;
      const job = state.jobs.get(state.openId);
      if (job && job.state === "running" && !job.lost) {
        event.preventDefault();
        stopJob();
      }
    }
  });
  // Up/Down move through the job list; Enter or Space opens the focused job.
  $("jobs").addEventListener("keydown", (event) => {
    if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
    const buttons = [...$("jobs").querySelectorAll("button.job")];
    const at = buttons.indexOf(document.activeElement);
    if (at === -1) return;
    const next = buttons[at + (event.key === "ArrowDown" ? 1 : -1)];
    if (next) {
      event.preventDefault();
      next.focus();
    }
  });
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
  $("allowed").replaceChildren(
    ...actions.commands.map((name) =>
      el("button", {
        type: "button",
        class: "chip",
        text: name,
        onclick: () => {
          $("command").value = `${name} `;
          $("command").focus();
        },
      }),
    ),
  );
  $("allowed-count").textContent = String(actions.commands.length);
  await loadJobs();
  updateCommandList();
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
window.sseCommander = { state, term, stream, numberFormat };
