// The command box's pure parts: what a shell would have made of the text, an example for the placeholder, and
// the history of commands typed in this browser. No DOM here.

// Characters that a shell would treat as operators, but that reach the command here as plain arguments (the
// server splits the text like shlex, with no shell). Quoted ones are what the user means literally; `$(` and
// backticks inside double quotes would still run something in a shell, so those are reported there too.
const OPERATORS = ["&&", "$(", "|", ">", "<", ";", "`"];

export function shellCharacters(text) {
  const found = [];
  const add = (token) => {
    if (!found.includes(token)) found.push(token);
  };
  let quote = null; // "'" or '"' while inside quotes
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quote === "'") {
      if (c === "'") quote = null;
      continue;
    }
    if (c === "\\") {
      i++; // an escaped character is literal (inside double quotes too, for the ones that matter here)
      continue;
    }
    if (quote === '"') {
      if (c === '"') quote = null;
      else if (c === "`") add("`");
      else if (c === "$" && text[i + 1] === "(") add("$(");
      continue;
    }
    if (c === "'" || c === '"') {
      quote = c;
      continue;
    }
    const token = OPERATORS.find((op) => text.startsWith(op, i));
    if (token) {
      add(token);
      i += token.length - 1;
    }
  }
  return found;
}

// Placeholders for commands people allow; anything else gets its bare name.
const EXAMPLES = [
  ["uptime", "uptime"],
  ["df", "df -h"],
  ["ping", "ping -c 3 127.0.0.1"],
  ["free", "free -m"],
  ["vmstat", "vmstat 1 5"],
  ["ls", "ls -la /tmp"],
  ["date", "date"],
  ["echo", "echo hello"],
];

export function commandExample(commands) {
  for (const [name, example] of EXAMPLES) if (commands.includes(name)) return example;
  return commands.length ? commands[0] : "";
}

// Commands typed in this browser (localStorage), oldest first, walked with older()/newer() like a shell's.
export class CommandHistory {
  constructor(storage, key, limit = 100) {
    this.storage = storage;
    this.key = key;
    this.limit = limit;
    this.index = null; // position while walking; null: at the draft
    this.draft = "";
  }

  get entries() {
    try {
      const stored = JSON.parse(this.storage.getItem(this.key) || "[]");
      return Array.isArray(stored) ? stored.filter((entry) => typeof entry === "string") : [];
    } catch {
      return [];
    }
  }

  add(command) {
    const entries = this.entries.filter((entry) => entry !== command);
    entries.push(command);
    try {
      this.storage.setItem(this.key, JSON.stringify(entries.slice(-this.limit)));
    } catch {
      // Storage full or refused (a private window): the history is only lost, nothing else.
    }
    this.index = null;
  }

  // The text was edited by hand: the next "older" starts again from the newest.
  edited() {
    this.index = null;
  }

  // The entry before the current one (or the newest, keeping `current` as the draft); null at the oldest.
  older(current) {
    const entries = this.entries;
    if (!entries.length) return null;
    if (this.index === null) {
      this.draft = current;
      this.index = entries.length - 1;
    } else if (this.index > 0) {
      this.index--;
    } else {
      return null;
    }
    return entries[this.index];
  }

  // The entry after the current one, or the draft after the newest; null when not walking.
  newer() {
    if (this.index === null) return null;
    const entries = this.entries;
    if (this.index < entries.length - 1) return entries[++this.index];
    this.index = null;
    return this.draft;
  }
}
