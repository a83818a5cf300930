// The job list's filter: a text (command, user, id) and state chips (running, failed, cancelled). Pure: it reads
// job JSON (GET /jobs shape) and nothing else.
//
// Its fields are named after GET /jobs's query parameters (`q`, `state`): the same filter is sent to the server
// as a query (`query()`), which searches its whole history a page at a time (`limit`, and a `before` cursor to
// page on), and is applied here too, to what this page has already loaded and to jobs announced live.

export const PAGE_SIZE = 50; // jobs per GET /jobs page

// running, failed, cancelled, ok or other: what the chips count.
export function jobCategory(job) {
  if (job.gone && (job.state === "running" || job.state === "stopping")) return "other"; // lost: no end known
  switch (job.state) {
    case "running":
    case "stopping":
      return "running";
    case "cancelled":
      return "cancelled";
    case "exited":
      return job.exit_code === 0 ? "ok" : "failed";
    case "killed":
    case "timed_out":
    case "failed_to_start":
    case "unkillable":
      return "failed";
    default:
      return "other";
  }
}

export class JobFilter {
  constructor() {
    this.q = "";
    this.state = new Set(); // categories shown; empty: all
  }

  setText(text) {
    this.q = text.trim().toLowerCase();
  }

  // Turn a category on or off; returns whether it is now on.
  toggle(category) {
    if (this.state.has(category)) this.state.delete(category);
    else this.state.add(category);
    return this.state.has(category);
  }

  // GET /jobs's parameters for this filter: `q` as typed, and `state` when the chips ask for exactly one state
  // the server knows by that name (a category such as "failed" spans several: it is applied here only).
  query(before = null, limit = PAGE_SIZE) {
    const params = new URLSearchParams({ limit: String(limit) });
    if (this.q) params.set("q", this.q);
    if (this.state.size === 1) {
      const [only] = this.state;
      if (only === "running" || only === "cancelled") params.set("state", only);
    }
    if (before) params.set("before", before);
    return params;
  }

  matches(job) {
    if (this.state.size && !this.state.has(jobCategory(job))) return false;
    if (!this.q) return true;
    const words = this.q.split(/\s+/);
    const haystack = [job.command, job.action, job.owner, job.id].filter(Boolean).join("\n").toLowerCase();
    return words.every((word) => haystack.includes(word));
  }
}
