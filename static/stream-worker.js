// A dedicated worker that holds the console's EventSource, so that reading a flood of output never blocks the
// page. The page's thread pays for SSE parsing, JSON and line counting only for what it may show.
//
// Events are passed on in batches, at most one message per BATCH_MS. In a batch, output events (`stdout`,
// `stderr`) of a source that are followed by more than `keepLines` lines of that source's output would scroll
// out of the page's bounded view before it could show them: each run of them is passed on as one `skipped`
// event instead, carrying what the page needs to stay exact: the last skipped event's ids (for resuming and
// deduplication), how many lines it held, and the SGR escapes in it (colours carry on past skipped text).
// Every other event is passed on as it came, in order.

const BATCH_MS = 16;
// eslint-disable-next-line no-control-regex
const SGR_OR_TAIL = /\x1b\[[0-9;:]*m|\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]*|[ -/]*)$/g;

const streams = new Map(); // id -> {source, batch, timer, keepLines, output}

self.addEventListener("message", ({ data }) => {
  if (data.op === "open") open(data);
  else if (data.op === "close") close(data.id);
});

function open({ id, url, events, output, keepLines }) {
  close(id);
  const source = new EventSource(url);
  const stream = { source, batch: [], timer: null, keepLines, output: new Set(output) };
  streams.set(id, stream);
  source.onopen = () => self.postMessage({ id, kind: "open" });
  source.onerror = () => {
    flush(id);
    self.postMessage({ id, kind: "error", readyState: source.readyState });
  };
  for (const name of events) source.addEventListener(name, (event) => receive(id, event));
}

function close(id) {
  const stream = streams.get(id);
  if (!stream) return;
  stream.source.close();
  clearTimeout(stream.timer);
  streams.delete(id);
}

function receive(id, event) {
  const stream = streams.get(id);
  if (!stream) return;
  const item = { type: event.type, data: event.data, lastEventId: event.lastEventId };
  if (stream.output.has(event.type)) {
    try {
      const message = JSON.parse(event.data);
      const out = message && message.data && message.data.out;
      if (typeof out === "string") Object.assign(item, { message, out, lines: countLines(out) });
    } catch {
      // Passed on as it came; the page decides what to do with it.
    }
  }
  stream.batch.push(item);
  if (stream.timer === null) stream.timer = setTimeout(() => flush(id), BATCH_MS);
}

function countLines(text) {
  let lines = 0;
  for (let at = text.indexOf("\n"); at !== -1; at = text.indexOf("\n", at + 1)) lines++;
  return lines;
}

function flush(id) {
  const stream = streams.get(id);
  if (!stream) return;
  clearTimeout(stream.timer);
  stream.timer = null;
  if (!stream.batch.length) return;
  const events = summarise(stream.batch, stream.keepLines);
  stream.batch = [];
  self.postMessage({ id, kind: "events", events });
}

// The batch with each run of output events that would scroll away unseen replaced by one `skipped` event.
function summarise(batch, keepLines) {
  const after = new Map(); // source -> lines of its output after the item being looked at
  const skip = new Array(batch.length).fill(false);
  for (let i = batch.length - 1; i >= 0; i--) {
    const item = batch[i];
    if (item.lines === undefined) continue;
    const source = item.message.source;
    const lines = after.get(source) || 0;
    if (lines > keepLines) skip[i] = true;
    after.set(source, lines + item.lines);
  }
  const events = [];
  let run = null;
  for (let i = 0; i < batch.length; i++) {
    const item = batch[i];
    if (!skip[i]) {
      if (run) events.push(finish(run));
      run = null;
      events.push({ type: item.type, data: item.data, lastEventId: item.lastEventId });
      continue;
    }
    if (run && run.source !== item.message.source) {
      events.push(finish(run));
      run = null;
    }
    if (!run) run = { source: item.message.source, lines: 0, out: "", err: "" };
    run.lines += item.lines;
    run.id = item.message.id;
    run.lastEventId = item.lastEventId;
    const escapes = item.out.includes("\x1b") ? (item.out.match(SGR_OR_TAIL) || []).join("") : "";
    if (item.type === "stderr") run.err += escapes;
    else run.out += escapes;
  }
  if (run) events.push(finish(run));
  return events;
}

function finish(run) {
  const data = { source: run.source, id: run.id, data: { lines: run.lines, out: run.out, err: run.err } };
  return { type: "skipped", data: JSON.stringify(data), lastEventId: run.lastEventId };
}
