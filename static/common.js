// Shared by the console and the chat page: API calls, a self-healing EventSource, login, small DOM helpers.
// Everything from the server or from a command is inserted as text (textContent / text nodes), never as HTML.

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.code = (body && body.error) || "";
    this.body = body || {};
  }
}

// fetch + JSON; throws ApiError for any non-2xx answer and TypeError when the server cannot be reached.
export async function api(method, path, body) {
  const init = { method, credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  let data = null;
  const type = response.headers.get("Content-Type") || "";
  if (type.includes("application/json")) {
    try {
      data = await response.json();
    } catch {
      data = null;
    }
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// Build an element: el("div", {class: "x", text: "hello", dataset: {a: 1}}, child, ...). Text only, never HTML.
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "hidden") node.hidden = Boolean(value);
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

export const $ = (id) => document.getElementById(id);

// Event ids: a job's "120" (bytes and events so far), a channel's "<epoch>-<n>" (its history, its message number).
export function parseEventId(id) {
  const match = /^(?:([0-9a-z]{1,32})-)?(\d{1,15})$/.exec(String(id ?? ""));
  return match ? { epoch: match[1] || "", n: Number(match[2]) } : null;
}

// Whether event id `a` comes after `b` in its source: later in the same history, or from another one (the
// server's history started again, after a restart say: it sends a `reset`, then the new history's events).
export function eventIdAfter(a, b) {
  const next = parseEventId(a);
  if (!next) return false;
  const last = parseEventId(b);
  return !last || next.epoch !== last.epoch || next.n > last.n;
}

// Composite cursors of GET /events: "job:3f2a=120,channel:jobs=k3x9ab-7" (each source's own event id).
export function parseComposite(text) {
  const cursors = new Map();
  if (!text) return cursors;
  for (const part of text.split(",")) {
    const at = part.lastIndexOf("=");
    if (at <= 0) continue;
    const value = part.slice(at + 1);
    if (parseEventId(value)) cursors.set(part.slice(0, at), value);
  }
  return cursors;
}

export function formatComposite(cursors, keys) {
  return keys
    .filter((key) => parseEventId(cursors.get(key)))
    .map((key) => `${key}=${cursors.get(key)}`)
    .join(",");
}

// An EventSource that reconnects by itself, whatever the browser thinks.
//
// A browser retries on its own only after a clean end of stream; after any non-200 answer (a proxy's 502/503,
// a 204, a 401, a 404 for a job the restarted server no longer knows) it gives up for good. So on every error
// this closes the source and schedules its own reconnect with jittered exponential backoff; before each
// attempt `resync()` may look around (is the server back? did it restart? am I still logged in?) and return
// false (or a state name such as "idle") to stay closed. `url()` is called for every attempt, so it always
// carries the latest cursors.
export class LiveStream {
  constructor({
    url,
    events,
    onState = () => {},
    resync = async () => true,
    baseDelay = 1000,
    maxDelay = 30000,
    source = (address) => new EventSource(address), // or a WorkerEventSource
  }) {
    this.url = url;
    this.makeSource = source;
    this.events = events;
    this.onState = onState;
    this.resync = resync;
    this.baseDelay = baseDelay;
    this.maxDelay = maxDelay;
    this.source = null;
    this.timer = null;
    this.failures = 0;
    this.generation = 0;
    this.state = "idle";
    this.lastEventAt = null; // Date.now() of the last event (or of the connection's opening)
    this.retryAt = null; // when the next attempt is due, while reconnecting
  }

  _setState(state, detail) {
    this.state = state;
    this.onState(state, detail);
  }

  // Open now (or reopen with a new URL), dropping any current connection.
  open() {
    this._teardown();
    const generation = ++this.generation;
    const source = this.makeSource(this.url());
    this.source = source;
    // Reopening a live stream with other sources is not news; a first connection or a retry is.
    if (this.state !== "reconnecting" && this.state !== "live") this._setState("connecting");
    source.onopen = () => {
      if (generation !== this.generation) return;
      this.failures = 0;
      this.lastEventAt = Date.now();
      this._setState("live");
    };
    source.onerror = () => {
      if (generation !== this.generation) return;
      // CLOSED: the browser gave up (non-200). CONNECTING: the stream ended and the browser would retry with
      // the same URL and stale cursors. Either way: take over.
      this._teardown();
      this._schedule();
    };
    for (const [name, handler] of Object.entries(this.events)) {
      source.addEventListener(name, (event) => {
        if (generation !== this.generation) return;
        this.lastEventAt = Date.now();
        handler(event);
      });
    }
  }

  // Stay closed; `state` says why ("closed", "idle": nothing to watch).
  close(state = "closed") {
    this.generation++;
    this._teardown();
    this._setState(state);
  }

  _teardown() {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.source !== null) {
      this.source.close();
      this.source = null;
    }
  }

  _schedule() {
    const exp = Math.min(this.maxDelay, this.baseDelay * 2 ** Math.min(this.failures, 10));
    const delay = Math.round(exp * (0.5 + Math.random()));
    this.failures++;
    this.retryAt = Date.now() + delay;
    this._setState("reconnecting", { delay, attempt: this.failures });
    const generation = this.generation;
    this.timer = setTimeout(() => this._attempt(generation), delay);
  }

  // Try now rather than when the backoff says (a person pressed "retry now"); no-op unless waiting to retry.
  retryNow() {
    if (this.timer === null || this.state !== "reconnecting") return;
    clearTimeout(this.timer);
    this._attempt(this.generation);
  }

  async _attempt(generation) {
    this.timer = null;
    this.retryAt = null;
    this._setState("reconnecting", { attempt: this.failures, trying: true });
    let go;
    try {
      go = await this.resync();
    } catch {
      go = null; // the server is still away: try again later
    }
    if (generation !== this.generation) return;
    if (go === false || typeof go === "string") return this.close(go || "closed");
    if (go === null) return this._schedule();
    this.open();
  }
}

// The banner across a page's main pane while its stream is down: how long since the last event, when the next
// attempt is due, and a button to try at once. The pill in the top bar says the same in two words.
export class ConnectionBanner {
  constructor(stream, { banner, detail, retry }) {
    this.stream = stream;
    this.banner = banner;
    this.detail = detail;
    this.trying = false;
    this.ticker = null;
    retry.addEventListener("click", () => stream.retryNow());
  }

  // Call from the stream's onState.
  update(state, detail = {}) {
    const down = state === "reconnecting";
    this.trying = down && Boolean(detail.trying);
    this.banner.hidden = !down;
    if (down && this.ticker === null) this.ticker = setInterval(() => this._render(), 1000);
    if (!down && this.ticker !== null) {
      clearInterval(this.ticker);
      this.ticker = null;
    }
    if (down) this._render();
  }

  _render() {
    const since = this.stream.lastEventAt;
    const parts = [since === null ? "No event received yet." : `Last event ${ago(Date.now() - since)} ago.`];
    if (this.trying) parts.push("Reconnecting…");
    else if (this.stream.retryAt !== null) {
      parts.push(`Retrying in ${Math.max(1, Math.ceil((this.stream.retryAt - Date.now()) / 1000))} s.`);
    }
    const text = parts.join(" ");
    if (this.detail.textContent !== text) this.detail.textContent = text;
  }
}

// A page's own stream, its state shown by the top bar's pill (`pill`) and by the banner across the main pane
// (templates/conn_banner.html): LiveStream's options, less onState.
export function pageStream(pill, options) {
  const stream = new LiveStream({
    ...options,
    onState: (state, detail) => {
      showConnState(pill, state);
      banner.update(state, detail);
    },
  });
  const banner = new ConnectionBanner(stream, {
    banner: document.getElementById("conn-banner"),
    detail: document.getElementById("conn-banner-detail"),
    retry: document.getElementById("conn-retry"),
  });
  return stream;
}

// Say `text` to screen readers, through the page's live region (#announce).
export function announce(text) {
  document.getElementById("announce").textContent = text;
}

// A message in the page's toast (#toast) for a few seconds.
let toastTimer = null;
export function toast(message) {
  const node = document.getElementById("toast");
  node.textContent = message;
  node.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    node.hidden = true;
  }, 6000);
}

function ago(ms) {
  const seconds = Math.max(0, Math.round(ms / 1000));
  if (seconds < 90) return `${seconds} s`;
  const minutes = Math.round(seconds / 60);
  return minutes < 90 ? `${minutes} min` : `${Math.round(minutes / 60)} h`;
}

// Connection status pill in the top bar.
const STATE_TEXT = {
  idle: "Idle",
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
  closed: "Offline",
  signedout: "Signed out",
};

export function showConnState(node, state) {
  node.dataset.state = state;
  node.querySelector(".conn-text").textContent = STATE_TEXT[state] || state;
  node.title = state === "live" ? "Receiving live events" : STATE_TEXT[state] || state;
}

// Who am I? {user, roles, via, auth_configured} or {anonymous: true} when a login is required.
export async function whoami() {
  try {
    const me = await api("GET", "/whoami");
    // Auth is on but nobody is signed in (should /whoami ever answer that instead of a 401).
    if (me.auth_configured && (!me.user || me.via === "none" || me.via === "anonymous")) {
      return { anonymous: true, auth_configured: true };
    }
    return me;
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return { anonymous: true, auth_configured: true };
    throw error;
  }
}

// The login form (same markup on both pages): token, or user + password. Calls onLogin(principal).
export function setupLogin({ onLogin }) {
  const form = $("login-form");
  const tokenFields = $("login-token-fields");
  const passwordFields = $("login-password-fields");
  const modeButton = $("login-mode");
  const error = $("login-error");
  let usePassword = false;

  const setMode = (password) => {
    usePassword = password;
    tokenFields.hidden = password;
    passwordFields.hidden = !password;
    modeButton.textContent = password ? "Use an access token instead" : "Use a user name and password instead";
    (password ? $("login-user") : $("login-token")).focus();
  };
  modeButton.addEventListener("click", () => setMode(!usePassword));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    const body = usePassword
      ? { user: $("login-user").value, password: $("login-password").value }
      : { token: $("login-token").value.trim() };
    const submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    try {
      const principal = await api("POST", "/login", body);
      form.reset();
      onLogin(principal);
    } catch (err) {
      error.textContent = errorText(err);
      error.hidden = false;
      (usePassword ? $("login-password") : $("login-token")).select();
    } finally {
      submit.disabled = false;
    }
  });

  return {
    show() {
      $("login-view").hidden = false;
      error.hidden = true;
      (usePassword ? $("login-user") : $("login-token")).focus();
    },
    hide() {
      $("login-view").hidden = true;
    },
  };
}

export function showUser(principal, onLogout) {
  const who = $("who");
  const logout = $("logout");
  if (principal && principal.auth_configured && principal.user) {
    who.textContent = principal.user;
    who.title = `Signed in as ${principal.user} (${(principal.roles || []).join(", ") || "no roles"}) via ${principal.via}`;
    who.hidden = false;
    logout.hidden = principal.via !== "session"; // a proxy or a token cannot be logged out of here
  } else {
    who.hidden = true;
    logout.hidden = true;
  }
  logout.onclick = onLogout;
}

export async function logout() {
  try {
    await api("POST", "/logout");
  } catch {
    // Signing out locally is what matters; the cookie is HttpOnly, so the server has to clear it.
  }
}

// What the server said, or that it could not be reached (fetch threw).
export function errorText(error, unreachable = "The server cannot be reached.") {
  return error instanceof ApiError ? error.message : unreachable;
}

// Signing in and out, the same on both pages (#app, the login form, the user and the connection pill).
// `start(principal)` fills the page once someone is signed in (the form is hidden and #app shown by then);
// `reset()` empties it again on signing out; `notify(message)` reports errors, if the page wants to.
export function pageSession({ conn, stream, start, reset, notify = () => {} }) {
  const login = setupLogin({
    onLogin: (principal) =>
      begin({ ...principal, auth_configured: true }).catch((error) => {
        notify(errorText(error));
        signedOut();
      }),
  });

  function signedOut() {
    stream.close();
    reset();
    $("app").hidden = true;
    showUser(null);
    showConnState(conn, "signedout");
    login.show();
  }

  async function signOut() {
    stream.close();
    await logout();
    signedOut();
  }

  async function begin(principal) {
    login.hide();
    showUser(principal, signOut);
    $("app").hidden = false;
    await start(principal);
  }

  // Ask who is signed in until the server answers; then show the login form or start the page.
  async function boot() {
    for (;;) {
      try {
        const me = await whoami();
        if (me.anonymous) {
          showConnState(conn, "signedout");
          login.show();
        } else {
          await begin(me);
        }
        return;
      } catch (error) {
        showConnState(conn, "reconnecting");
        notify(errorText(error, "The server cannot be reached; retrying…"));
        await new Promise((resolve) => setTimeout(resolve, 2000 + Math.random() * 2000));
      }
    }
  }

  // The common start of a LiveStream's resync: still signed in, and is the server up? Returns false when
  // signed out (the page is reset), null while the server shuts down (try again later), otherwise
  // {health, channel}: GET /healthz and the GET /channels entry named `name` (undefined if not listed).
  // Throws when the server cannot be reached.
  async function recheck(name) {
    const me = await whoami();
    if (me.anonymous) {
      signedOut();
      return false;
    }
    let health;
    try {
      health = await api("GET", "/healthz");
    } catch (error) {
      if (error instanceof ApiError) return null; // 503: this worker is shutting down
      throw error;
    }
    const { channels } = await api("GET", "/channels");
    return { health, channel: channels.find((c) => c.name === name) };
  }

  return { boot, recheck };
}

// Sticky-bottom scrolling: follows new content until the user scrolls up, resumes at the bottom.
export class Follower {
  constructor(scroller, button) {
    this.scroller = scroller;
    this.button = button;
    this.following = true;
    // Our own scrolls always land at the bottom, so any scroll event that ends elsewhere is the user's.
    scroller.addEventListener("scroll", () => {
      const atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 8;
      if (atBottom !== this.following) {
        this.following = atBottom;
        this._showButton();
      }
    });
    if (button) button.addEventListener("click", () => this.resume());
  }

  _showButton() {
    if (this.button) this.button.hidden = this.following;
  }

  // Call after content changed.
  stick() {
    if (this.following) this.scroller.scrollTop = this.scroller.scrollHeight;
  }

  resume() {
    this.following = true;
    this._showButton();
    this.stick();
  }
}

// Work on the next animation frame, or within 250 ms in a background tab where frames stop.
export function frameScheduler(work) {
  let frame = null;
  let timer = null;
  const run = () => {
    if (frame !== null) cancelAnimationFrame(frame);
    if (timer !== null) clearTimeout(timer);
    frame = timer = null;
    work();
  };
  return () => {
    if (frame !== null || timer !== null) return;
    frame = requestAnimationFrame(run);
    timer = setTimeout(run, 250);
  };
}

export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
  const m = Math.floor(seconds / 60);
  const s = Math.round(seconds % 60);
  if (m < 60) return `${m}m ${String(s).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
}

export function formatTime(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  const today = new Date();
  const time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  if (date.toDateString() === today.toDateString()) return time;
  return `${date.toLocaleDateString([], { month: "short", day: "numeric" })} ${time}`;
}

export const numberFormat = new Intl.NumberFormat();

export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}
