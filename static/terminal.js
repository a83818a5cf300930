// A small terminal for command output: ANSI SGR colours and attributes, \r redraws, bounded scrollback.
//
// Output is only ever inserted as text nodes (colours are classes, or CSSOM properties for 256-colour and
// true-colour escapes), so whatever a command prints — <script>, <img onerror>, escape sequences — is shown,
// never interpreted. Writes are queued and applied once per animation frame; when more than `maxLines` lines
// arrive at once, the lines that would scroll out of the bound anyway are only counted (and scanned for colour
// changes), never built, so 50 MB of output costs little more than the last screenful.

const CSI_OR_CONTROL =
  // eslint-disable-next-line no-control-regex
  /\x1b\[([0-?]*)([ -/]*)([@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[ -/]*[0-~]|\x1b|\r\n|\r|\n|\x08|[\x00-\x07\x0b\x0c\x0e-\x1a\x1c-\x1f\x7f]/g;
// A sequence cut at the end of a chunk: keep it for the next chunk.
// eslint-disable-next-line no-control-regex
const INCOMPLETE = /\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]*|[ -/]*)$/;
// eslint-disable-next-line no-control-regex
const SGR_ONLY = /\x1b\[([0-9;:]*)m/g;

import { formatBytes } from "./common.js";

const CUBE = [0, 95, 135, 175, 215, 255];
const MAX_LINE = 8192; // characters before a line without a newline is broken
const MAX_CHARS = 2_000_000; // characters kept on screen, whatever the number of lines
// Work done in one flush (one animation frame): lines built and characters parsed. What is left waits for the
// next frame, so a flood of output never blocks the page (timers, clicks, Stop) for long; and whatever would
// scroll out of the bound before it is shown is only counted, so the queue never holds more than a screenful.
export const LINES_PER_FLUSH = 400;
export const CHARS_PER_FLUSH = 256 * 1024;

function color256(n) {
  if (n < 16) return null; // a class
  if (n < 232) {
    const i = n - 16;
    return `rgb(${CUBE[Math.floor(i / 36)]},${CUBE[Math.floor(i / 6) % 6]},${CUBE[i % 6]})`;
  }
  const level = 8 + (n - 232) * 10;
  return `rgb(${level},${level},${level})`;
}

// Where to cut a text so that it holds at most maxLines newlines and maxChars characters.
function splitPoint(text, maxLines, maxChars) {
  const limit = Math.min(text.length, maxChars);
  let lines = 0;
  let at = -1;
  while (lines < maxLines) {
    at = text.indexOf("\n", at + 1);
    if (at === -1 || at >= limit) return { at: limit, lines };
    lines++;
  }
  return { at: at + 1, lines };
}

// Colours are null (default), 0-255 (palette) or an "rgb(...)" string.
class Style {
  constructor() {
    this.reset();
  }

  reset() {
    this.fg = null;
    this.bg = null;
    this.bold = this.dim = this.italic = this.underline = this.inverse = this.strike = false;
    this._key = null;
  }

  apply(params) {
    const codes = params === "" ? [0] : params.split(/[;:]/).map((p) => (p === "" ? 0 : Number(p)));
    for (let i = 0; i < codes.length; i++) {
      const c = codes[i];
      if (c === 0) this.reset();
      else if (c === 1) this.bold = true;
      else if (c === 2) this.dim = true;
      else if (c === 3) this.italic = true;
      else if (c === 4) this.underline = true;
      else if (c === 7) this.inverse = true;
      else if (c === 9) this.strike = true;
      else if (c === 21 || c === 22) this.bold = this.dim = false;
      else if (c === 23) this.italic = false;
      else if (c === 24) this.underline = false;
      else if (c === 27) this.inverse = false;
      else if (c === 29) this.strike = false;
      else if (c >= 30 && c <= 37) this.fg = c - 30;
      else if (c === 39) this.fg = null;
      else if (c >= 40 && c <= 47) this.bg = c - 40;
      else if (c === 49) this.bg = null;
      else if (c >= 90 && c <= 97) this.fg = c - 90 + 8;
      else if (c >= 100 && c <= 107) this.bg = c - 100 + 8;
      else if (c === 38 || c === 48) {
        let value = null;
        if (codes[i + 1] === 5 && i + 2 < codes.length) {
          value = Math.max(0, Math.min(255, codes[i + 2] | 0));
          i += 2;
        } else if (codes[i + 1] === 2 && i + 4 < codes.length) {
          const [r, g, b] = codes.slice(i + 2, i + 5).map((v) => Math.max(0, Math.min(255, v | 0)));
          value = `rgb(${r},${g},${b})`;
          i += 4;
        } else {
          break; // malformed: ignore the rest, like a terminal
        }
        if (c === 38) this.fg = value;
        else this.bg = value;
      }
    }
    this._key = null;
  }

  // {cls, fg, bg} for the current attributes: classes for the 16 palette colours, CSS colours otherwise.
  get look() {
    if (this._key !== null) return this._key;
    let fg = this.fg;
    let bg = this.bg;
    const classes = [];
    if (this.inverse) {
      [fg, bg] = [bg, fg];
      if (fg === null) classes.push("fg-inv");
      if (bg === null) classes.push("bg-inv");
    }
    let fgCss = null;
    let bgCss = null;
    if (typeof fg === "number") {
      if (fg < 16) classes.push(`fg-${fg}`);
      else fgCss = color256(fg);
    } else if (fg) fgCss = fg;
    if (typeof bg === "number") {
      if (bg < 16) classes.push(`bg-${bg}`);
      else bgCss = color256(bg);
    } else if (bg) bgCss = bg;
    if (this.bold) classes.push("b");
    if (this.dim) classes.push("dim");
    if (this.italic) classes.push("i");
    if (this.underline) classes.push("u");
    if (this.strike) classes.push("s");
    this._key = { cls: classes.join(" "), fg: fgCss, bg: bgCss };
    return this._key;
  }
}

export class Terminal {
  constructor({
    linesEl,
    hiddenEl,
    hiddenCountEl,
    hiddenBoxEl,
    droppedEl,
    droppedBoxEl,
    droppedSepEl,
    maxLines = 5000,
    maxChars = MAX_CHARS,
    floodLines = Infinity,
    onRender = () => {},
  }) {
    this.linesEl = linesEl;
    this.hiddenEl = hiddenEl;
    this.hiddenCountEl = hiddenCountEl;
    this.hiddenBoxEl = hiddenBoxEl;
    this.droppedSepEl = droppedSepEl;
    this.droppedEl = droppedEl;
    this.droppedBoxEl = droppedBoxEl;
    this.maxLines = maxLines;
    this.maxChars = maxChars;
    // Lines built by a flush that finds a flood: whatever it builds, the next flood's flush clears. Building
    // (and laying out) more than a screenful then only makes the frame longer; its owner sets a screenful.
    this.floodLines = floodLines;
    this.onRender = onRender;
    this.reset();
  }

  reset() {
    this.queue = [];
    this.style = new Style();
    this.carry = { out: "", err: "" };
    this.current = []; // segments of the line being written: {text, look, err}
    this.currentLength = 0;
    this.crPending = false; // a \r was seen: what comes next (except \n) overwrites the line
    this.currentDirty = true;
    this.committed = []; // lines completed since the last render
    this.total = 0; // lines completed since the start
    this.droppedBytes = 0; // output the server dropped before we read it
    this.clearDom = true;
    this.currentEl = null;
    this.flooded = false;
  }

  write(text, stream = "out") {
    if (text) this.queue.push({ kind: "text", text, stream });
  }

  // Output that was never sent to this page because it would have scrolled away unseen: its lines are counted
  // as hidden, and its colour escapes applied (`out`, `err`: each stream's SGR escapes, in order).
  skipped(lines, out = "", err = "") {
    this.queue.push({ kind: "skip", lines, out, err });
  }

  // A marker line, such as the command or its exit status. A `key` names it, to change it later (setNote).
  note(text, cls, key) {
    this.queue.push({ kind: "note", text, cls, key });
  }

  // Change a keyed marker line on screen (or still queued); false if there is none.
  setNote(key, text, cls) {
    for (const item of this.queue) {
      if (item.kind === "note" && item.key === key) {
        Object.assign(item, { text, cls });
        return true;
      }
    }
    for (const line of this.committed) {
      if (line.key === key) {
        Object.assign(line, { note: text, cls });
        return true;
      }
    }
    const node = this._shownNote(key);
    if (!node) return false;
    node.className = `ln note ${cls || ""}`;
    node.textContent = text;
    return true;
  }

  hasNote(key) {
    return (
      this.queue.some((item) => item.kind === "note" && item.key === key) ||
      this.committed.some((line) => line.key === key) ||
      this._shownNote(key) !== null
    );
  }

  // A keyed line on screen; none while the screen still shows what a reset is about to clear.
  _shownNote(key) {
    return this.clearDom ? null : this.linesEl.querySelector(`[data-note="${key}"]`);
  }

  // How much output the server's bounded buffer dropped: the job's own figure (dropped_bytes), shown as is.
  setDropped(bytes) {
    this.droppedBytes = bytes || 0;
    this._showHidden();
  }

  get pending() {
    return this.queue.length > 0 || this.committed.length > 0 || this.currentDirty;
  }

  // What is on screen, to put back later with restore() (a job whose output the server no longer has).
  snapshot() {
    this.flush({ lines: Infinity, chars: Infinity, floodLines: Infinity });
    const fragment = document.createDocumentFragment();
    for (const line of [...this.linesEl.children]) if (line !== this.currentEl) fragment.append(line);
    const lengths = [...this.lengths];
    const current = this.currentEl && this.currentEl.textContent ? this.currentEl : null;
    if (current) {
      current.classList.remove("cur");
      fragment.append(current);
      lengths.push(current.textContent.length);
    }
    this.currentEl = null;
    return { fragment, total: this.total, lengths, droppedBytes: this.droppedBytes };
  }

  restore(snapshot) {
    this.reset();
    this._render();
    this.linesEl.insertBefore(snapshot.fragment, this.currentEl);
    this.total = snapshot.total;
    this.lengths = snapshot.lengths;
    this.shownChars = snapshot.lengths.reduce((n, length) => n + length, 0);
    this.droppedBytes = snapshot.droppedBytes;
    this._showHidden();
  }

  // Apply what is queued to the model, then to the DOM, within a budget: at most `lines` lines built and `chars`
  // characters parsed (under a flood, at most `floodLines`); the rest stays queued (see `pending`). Returns the
  // number of lines added.
  flush({ lines = LINES_PER_FLUSH, chars = CHARS_PER_FLUSH, floodLines = this.floodLines } = {}) {
    const queue = this.queue;
    this.queue = [];
    const cut = this._findCut(queue);
    this.flooded = cut !== null; // more arrived than the screen holds: some of it was only counted
    let start = 0;
    if (cut !== null) {
      lines = Math.min(lines, floodLines);
      for (let i = 0; i < cut.item; i++) this._skip(queue[i]);
      if (cut.offset > 0) {
        const item = queue[cut.item];
        this._skip({ ...item, text: item.text.slice(0, cut.offset) });
        queue[cut.item] = { ...item, text: item.text.slice(cut.offset) };
      }
      // The skipped part ends with a newline, and what follows fills the screen: the old lines scroll out.
      this.committed = [];
      this.current = [];
      this.currentLength = 0;
      this.crPending = false;
      this.clearDom = true;
      this.currentDirty = true;
      start = cut.item;
    }
    let i = start;
    for (; i < queue.length && lines > 0 && chars > 0; i++) {
      const item = queue[i];
      if (item.kind !== "text") {
        this._apply(item);
        lines--;
        continue;
      }
      const end = splitPoint(item.text, lines, chars);
      if (end.at < item.text.length) {
        this._apply({ ...item, text: item.text.slice(0, end.at) });
        queue[i] = { ...item, text: item.text.slice(end.at) };
        break;
      }
      this._apply(item);
      lines -= end.lines;
      chars -= item.text.length;
    }
    this.queue = i < queue.length ? queue.slice(i) : [];
    return this._render();
  }

  // Where to start building lines so that at most maxLines complete lines are built: everything before it
  // would be trimmed anyway. null when the queue is small enough to build in full.
  _findCut(queue) {
    let need = this.maxLines + 1;
    for (let i = queue.length - 1; i >= 0; i--) {
      const item = queue[i];
      if (item.kind === "skip") continue;
      if (item.kind === "note") {
        if (--need === 0) return { item: i + 1, offset: 0 };
        continue;
      }
      const text = item.text;
      let at = text.length;
      while (at > 0) {
        at = text.lastIndexOf("\n", at - 1);
        if (at === -1) break;
        if (--need === 0) {
          return at + 1 < text.length ? { item: i, offset: at + 1 } : { item: i + 1, offset: 0 };
        }
      }
    }
    return null;
  }

  // Account for output that will never be displayed: count its lines, follow its colour changes.
  _skip(item) {
    if (item.kind === "note") {
      this.total++;
      return;
    }
    if (item.kind === "skip") {
      this.total += item.lines;
      this._skip({ kind: "text", stream: "out", text: item.out });
      this._skip({ kind: "text", stream: "err", text: item.err });
      return;
    }
    const text = this.carry[item.stream] + item.text;
    this.carry[item.stream] = "";
    let at = -1;
    let lines = 0;
    while ((at = text.indexOf("\n", at + 1)) !== -1) lines++;
    this.total += lines;
    if (text.includes("\x1b")) {
      SGR_ONLY.lastIndex = 0;
      let match;
      while ((match = SGR_ONLY.exec(text)) !== null) this.style.apply(match[1]);
      const esc = text.lastIndexOf("\x1b");
      const tail = INCOMPLETE.exec(text.slice(esc));
      if (tail && tail.index === 0 && tail[0].length < 4096) this.carry[item.stream] = text.slice(esc);
    }
  }

  _apply(item) {
    if (item.kind === "skip") {
      // Only reached when too few lines followed it to push what is on screen out: say where the hole is.
      this._newlineIfNeeded();
      this._skip(item);
      this.committed.push({ note: `··· ${item.lines} lines not shown ···`, cls: "gap" });
      return;
    }
    if (item.kind === "note") {
      this._newlineIfNeeded();
      this.committed.push({ note: item.text, cls: item.cls, key: item.key });
      this.total++;
      return;
    }
    const stream = item.stream;
    const err = stream === "err";
    let text = this.carry[stream] + item.text;
    this.carry[stream] = "";
    const esc = text.lastIndexOf("\x1b");
    if (esc !== -1) {
      const tail = INCOMPLETE.exec(text.slice(esc));
      if (tail && tail.index === 0 && tail[0].length < 4096) {
        this.carry[stream] = text.slice(esc);
        text = text.slice(0, esc);
      }
    }
    CSI_OR_CONTROL.lastIndex = 0;
    let last = 0;
    let match;
    while ((match = CSI_OR_CONTROL.exec(text)) !== null) {
      if (match.index > last) this._text(text.slice(last, match.index), err);
      last = CSI_OR_CONTROL.lastIndex;
      const token = match[0];
      if (token === "\n" || token === "\r\n") this._newline();
      else if (token === "\r") this.crPending = true;
      else if (token === "\x08") this._backspace();
      else if (match[3] === "m" && !match[2] && token[1] === "[") this.style.apply(match[1]);
      else if (match[3] === "K" && token[1] === "[") this._eraseLine(match[1]);
      // Anything else (cursor movement, titles, bells, NUL) has no place in a log view: dropped.
    }
    if (last < text.length) this._text(text.slice(last), err);
  }

  _text(text, err) {
    if (this.crPending) {
      this.current = [];
      this.currentLength = 0;
      this.crPending = false;
    }
    // A line with no end in sight (a binary blob, a minified file) is broken every MAX_LINE characters,
    // so that one line never becomes one enormous text node that is redrawn on every frame.
    while (this.currentLength + text.length > MAX_LINE) {
      const room = MAX_LINE - this.currentLength;
      this._append(text.slice(0, room), err);
      text = text.slice(room);
      this._newline();
    }
    if (text) this._append(text, err);
  }

  _append(text, err) {
    const look = this.style.look;
    const lastSeg = this.current[this.current.length - 1];
    if (lastSeg && lastSeg.look === look && lastSeg.err === err) lastSeg.text += text;
    else this.current.push({ text, look, err });
    this.currentLength += text.length;
    this.currentDirty = true;
  }

  _newline() {
    this.committed.push(this.current);
    this.current = [];
    this.currentLength = 0;
    this.crPending = false;
    this.currentDirty = true;
    this.total++;
  }

  _newlineIfNeeded() {
    if (this.current.length > 0) this._newline();
    this.crPending = false;
  }

  _backspace() {
    const lastSeg = this.current[this.current.length - 1];
    if (!lastSeg) return;
    lastSeg.text = lastSeg.text.slice(0, -1);
    this.currentLength--;
    if (!lastSeg.text) this.current.pop();
    this.currentDirty = true;
  }

  _eraseLine(param) {
    // The cursor is at the end of the line unless a \r came before: then "to the end" means all of it.
    if (param === "2" || param === "1" || this.crPending) {
      this.current = [];
      this.currentLength = 0;
      this.crPending = false;
      this.currentDirty = true;
    }
  }

  static _lineEl(segments) {
    const line = document.createElement("div");
    line.className = "ln";
    if (segments.note !== undefined) {
      line.className = `ln note ${segments.cls || ""}`;
      line.textContent = segments.note;
      if (segments.key) line.dataset.note = segments.key;
      return line;
    }
    let hasErr = false;
    for (const seg of segments) {
      const { cls, fg, bg } = seg.look;
      if (seg.err) hasErr = true;
      if (!cls && !fg && !bg && !seg.err) {
        line.appendChild(document.createTextNode(seg.text));
        continue;
      }
      const span = document.createElement("span");
      span.className = seg.err ? (cls ? `e ${cls}` : "e") : cls;
      if (fg) span.style.color = fg;
      if (bg) span.style.backgroundColor = bg;
      span.textContent = seg.text;
      line.appendChild(span);
    }
    if (hasErr) line.classList.add("has-e");
    return line;
  }

  _render() {
    const added = this.committed.length;
    if (this.clearDom) {
      this.linesEl.textContent = "";
      this.currentEl = null;
      this.lengths = []; // characters of each complete line on screen, oldest first
      this.shownChars = 0;
      this.clearDom = false;
    }
    if (this.currentEl === null) {
      this.currentEl = Terminal._lineEl([]);
      this.currentEl.classList.add("cur");
      this.linesEl.appendChild(this.currentEl);
    }
    if (added > 0) {
      const fragment = document.createDocumentFragment();
      const from = Math.max(0, added - this.maxLines);
      for (let i = from; i < added; i++) {
        const line = this.committed[i];
        fragment.appendChild(Terminal._lineEl(line));
        const length = line.note !== undefined ? line.note.length : line.reduce((n, seg) => n + seg.text.length, 0);
        this.lengths.push(length);
        this.shownChars += length;
      }
      this.linesEl.insertBefore(fragment, this.currentEl);
      this.committed = [];
    }
    if (this.currentDirty) {
      const fresh = Terminal._lineEl(this.current);
      fresh.classList.add("cur");
      this.linesEl.replaceChild(fresh, this.currentEl);
      this.currentEl = fresh;
      this.currentDirty = false;
    }
    // Bound the scrollback: at most maxLines complete lines and maxChars characters, plus the current line.
    let remove = Math.max(0, this.lengths.length - this.maxLines);
    let chars = this.shownChars;
    for (let i = 0; i < remove; i++) chars -= this.lengths[i];
    while (chars > this.maxChars && remove < this.lengths.length - 1) chars -= this.lengths[remove++];
    if (remove > 0) {
      const range = document.createRange();
      range.setStartBefore(this.linesEl.firstChild);
      range.setEndBefore(this.linesEl.children[remove]);
      range.deleteContents();
      this.lengths.splice(0, remove);
      this.shownChars = chars;
    }
    this._showHidden();
    this.onRender(added);
    return added;
  }

  get shownLines() {
    return Math.max(0, this.linesEl.childElementCount - 1);
  }

  get hiddenLines() {
    return Math.max(0, this.total - this.shownLines);
  }

  _showHidden() {
    const hidden = this.hiddenLines;
    this.hiddenEl.hidden = hidden === 0 && this.droppedBytes === 0;
    this.hiddenCountEl.textContent = new Intl.NumberFormat().format(hidden);
    if (this.droppedEl) {
      this.droppedEl.textContent = this.droppedBytes ? formatBytes(this.droppedBytes) : "";
      this.droppedEl.dataset.bytes = String(this.droppedBytes);
      this.droppedEl.title = `${new Intl.NumberFormat().format(this.droppedBytes)} bytes`;
    }
    if (this.droppedBoxEl) this.droppedBoxEl.hidden = this.droppedBytes === 0;
    if (this.hiddenBoxEl) this.hiddenBoxEl.hidden = hidden === 0;
    if (this.droppedSepEl) this.droppedSepEl.hidden = hidden === 0;
  }

  // The text of every line on screen (for copying).
  text() {
    return Array.from(this.linesEl.children, (line) => line.textContent).join("\n");
  }
}
