// An EventSource whose connection lives in a worker (stream-worker.js): the same interface as an EventSource
// (onopen, onerror, addEventListener, close, readyState), events delivered in batches, with output that would
// scroll away unseen summarised as `skipped` events. What the console's LiveStream opens (its `source` option).

let worker = null;
let nextId = 0;

function sharedWorker() {
  if (worker === null) worker = new Worker(new URL("./stream-worker.js", import.meta.url));
  return worker;
}

export class WorkerEventSource extends EventTarget {
  // events: the event names to listen for; output: those carrying {out}; keepLines: what the page can show.
  constructor(url, { events, output, keepLines }) {
    super();
    this.url = new URL(url, location.href).href;
    this.readyState = 0; // CONNECTING, as an EventSource's
    this.onopen = null;
    this.onerror = null;
    this.id = ++nextId;
    this.worker = sharedWorker();
    this.receive = ({ data }) => this._receive(data);
    this.worker.addEventListener("message", this.receive);
    this.addEventListener("open", (event) => this.onopen && this.onopen(event));
    this.addEventListener("error", (event) => this.onerror && this.onerror(event));
    this.worker.postMessage({ op: "open", id: this.id, url: this.url, events, output, keepLines });
  }

  _receive(message) {
    if (message.id !== this.id || this.readyState === 2) return;
    if (message.kind === "open") {
      this.readyState = 1;
      this.dispatchEvent(new Event("open"));
    } else if (message.kind === "error") {
      this.readyState = message.readyState;
      this.dispatchEvent(new Event("error"));
    } else if (message.kind === "events") {
      for (const event of message.events) {
        if (this.readyState === 2) return; // a handler closed it
        this.dispatchEvent(new MessageEvent(event.type, { data: event.data, lastEventId: event.lastEventId }));
      }
    }
  }

  close() {
    if (this.readyState === 2) return;
    this.readyState = 2;
    this.worker.removeEventListener("message", this.receive);
    this.worker.postMessage({ op: "close", id: this.id });
  }
}
