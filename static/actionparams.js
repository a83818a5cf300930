// A named action's parameters as form fields (GET /actions' "params"), shared by the console (one form per action)
// and the fleet page (one action chosen for every host): a select for a choice, a number box for an integer, a
// text box otherwise; the values the server takes; a server error naming one of them shown at its field; and the
// confirmation dialog of an action that asks for one (#confirm-dialog in the page).

import { $, el } from "./common.js";

// One field per parameter, by name: {input, error, param, root} (root: the label, input, hint and error, to place
// in a form). `prefix` makes the ids unique on the page (`${prefix}-${param.name}`); `onChoice` runs when a
// choice changes (Run may wait for one: see unchosen).
export function paramFields(params, prefix, onChoice = () => {}) {
  const fields = new Map();
  for (const param of params) {
    const id = `${prefix}-${param.name}`;
    const errorId = `${id}-error`;
    let input;
    if (param.type === "choice") {
      input = el("select", { id, name: param.name, required: param.default === undefined });
      // No default: nothing is chosen for the user; Run waits until something is.
      if (param.default === undefined) input.append(el("option", { value: "", text: "Choose…", disabled: true, selected: true }));
      for (const choice of param.choices) {
        input.append(el("option", { value: choice, text: choice, selected: choice === param.default }));
      }
      input.addEventListener("change", () => onChoice());
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
    const error = el("span", { class: "field-error", id: errorId, role: "alert", hidden: true });
    input.addEventListener("input", () => {
      error.hidden = true;
      input.removeAttribute("aria-invalid");
    });
    const root = el(
      "div",
      { class: "field" },
      el("label", { for: id }, param.name, param.required ? el("span", { class: "req", text: " *" }) : null),
      input,
      el("span", { class: "hint", id: `${id}-hint`, text: paramHint(param) }),
      error,
    );
    fields.set(param.name, { input, error, param, root });
  }
  return fields;
}

// The choices without a default that have no value yet: Run waits for them.
export function unchosen(fields) {
  return [...fields.values()].filter(({ input, param }) => param.type === "choice" && !input.value);
}

// The request's "params": an empty field is left out (the server applies the default, or says it is required);
// an integer's text goes as a number. Clears the fields' errors.
export function paramValues(fields) {
  const params = {};
  for (const [name, { input, error, param }] of fields) {
    error.hidden = true;
    input.removeAttribute("aria-invalid");
    const value = input.value;
    if (value === "") continue;
    params[name] = param.type === "integer" && /^-?\d+$/.test(value.trim()) ? Number(value) : value;
  }
  return params;
}

// A server message about one of the fields ("parameter 'n': must be at most 5"): shown at that field, which gets
// the focus; whether it was one.
export function showParamError(fields, message) {
  const named = /parameter (['"])(.+?)\1: (.*)$/s.exec(message);
  const field = named && fields.get(named[2]);
  if (!field) return false;
  field.error.textContent = named[3];
  field.error.hidden = false;
  field.input.setAttribute("aria-invalid", "true");
  field.input.focus();
  return true;
}

// The action's confirmation: a modal dialog naming it and every parameter it will run with (defaults included);
// resolves to whether the user said run. `where`: what it runs on, if not just here ("on 3 hosts").
export function confirmAction(action, params, where = "") {
  const dialog = $("confirm-dialog");
  $("confirm-title").textContent = `Run ${action.name}${where ? ` ${where}` : ""}?`;
  $("confirm-run").textContent = `Run ${action.name}`;
  const rows = action.params.map((param) => {
    const given = param.name in params;
    const value = given ? String(params[param.name]) : String(param.default ?? "");
    return [
      el("dt", { text: param.name }),
      el("dd", {}, el("code", { text: value }), given ? null : el("span", { class: "muted", text: " (default)" })),
    ];
  });
  $("confirm-params").replaceChildren(...rows.flat());
  if (!rows.length) $("confirm-params").append(el("dd", { class: "muted", text: "no parameters" }));
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "run"), { once: true });
  });
}

export function paramHint(param) {
  if (param.type === "integer") {
    const range = [param.min, param.max].map((v) => (v === null || v === undefined ? "" : String(v)));
    const text = range[0] || range[1] ? `integer ${range[0] || "…"}–${range[1] || "…"}` : "integer";
    return param.description ? `${param.description} (${text})` : text;
  }
  if (param.type === "choice") return param.description || "";
  const text = param.pattern ? `matches ${param.pattern}` : "text";
  return param.description ? `${param.description} (${text})` : text;
}
