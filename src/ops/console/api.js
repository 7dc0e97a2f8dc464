// The console's access to Ticker's JSON API: the key (sessionStorage, so it
// goes with the tab and never into a file or a URL), one fetch wrapper that
// turns a 401 into the key prompt, and the small DOM and number helpers the
// views share.

const KEY_ITEM = "ticker.console.key";

/** Thrown when the server wants a key: the prompt is showing, the view waits for it. */
export class KeyNeeded extends Error {}

/** An error answer of the API, with its code ({"error": {"code", "message"}}). */
export class ApiFailure extends Error {
  constructor(status, code, message) {
    super(`${status} ${code}: ${message}`);
    this.status = status;
    this.code = code;
  }
}

let onKeyChange = () => {};

export const storedKey = () => sessionStorage.getItem(KEY_ITEM);

/** Wires the key form and the forget button; `changed` runs when a key is entered or forgotten. */
export function setUpKey(changed) {
  onKeyChange = changed;
  const form = document.getElementById("key-form");
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const input = document.getElementById("key-input");
    sessionStorage.setItem(KEY_ITEM, input.value.trim());
    input.value = "";
    form.hidden = true;
    showKeyState();
    onKeyChange();
  });
  document.getElementById("forget-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_ITEM);
    showKeyState();
    onKeyChange();
  });
  showKeyState();
}

function showKeyState() {
  const key = storedKey();
  document.getElementById("key-state").textContent = key ? "API key set" : "";
  document.getElementById("forget-key").hidden = !key;
}

function askForKey(message) {
  document.getElementById("key-reason").textContent = storedKey()
    ? `The key was refused (${message}). Enter another.`
    : `This server needs an API key (${message}).`;
  const form = document.getElementById("key-form");
  if (form.hidden) {
    form.hidden = false;
    document.getElementById("key-input").focus();
  }
}

/** A JSON request to the API; null for a 404 when `missingOk`. */
export async function api(path, { method = "GET", body, missingOk = false } = {}) {
  const headers = {};
  const key = storedKey();
  if (key) headers.authorization = `Bearer ${key}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const json = res.status === 204 ? null : await res.json().catch(() => null);
  if (res.status === 401) {
    // An answer to a key replaced while it was in flight says nothing about the new one.
    if (storedKey() === key) askForKey(json?.error?.message ?? "unauthorized");
    throw new KeyNeeded();
  }
  if (res.status === 404 && missingOk) return null;
  if (!res.ok) throw new ApiFailure(res.status, json?.error?.code ?? "error", json?.error?.message ?? res.statusText);
  return json;
}

/** The path of a stream's route: ids are checked by the server, but still go escaped into a URL. */
export const streamPath = (id, rest = "") => `/v1/streams/${encodeURIComponent(id)}${rest}`;

/** Builds an element; children are nodes or text (never parsed as HTML: events are the producers' data). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Number.POSITIVE_INFINITY)) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
  return el;
}

/** A number, right-aligned in its cell. */
export const num = (v) => ({ num: v ?? "" });
const cell = (tag, c) => (c !== null && typeof c === "object" && "num" in c ? h(tag, { class: "num" }, c.num) : h(tag, {}, c));

/** A table of column heads and `row`s; a head or cell made with `num` is right-aligned. */
export function table(id, heads, rows, emptyText) {
  if (rows.length === 0) return h("p", { id, class: "muted" }, emptyText);
  return h(
    "table",
    { id },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        heads.map((c) => cell("th", c)),
      ),
    ),
    h("tbody", {}, rows),
  );
}

/** A row of cells for `table`; `attrs` go on the row (data-* for finding it). */
export const row = (attrs, cells) =>
  h(
    "tr",
    attrs,
    cells.map((c) => cell("td", c)),
  );

export function fmtBytes(n) {
  if (typeof n !== "number") return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

export function fmtMs(ms) {
  if (typeof ms !== "number") return "";
  if (ms >= Number.MAX_SAFE_INTEGER) return "forever";
  const steps = [
    [86_400_000, "d"],
    [3_600_000, "h"],
    [60_000, "min"],
    [1000, "s"],
  ];
  for (const [size, unit] of steps) if (ms >= size) return `${+(ms / size).toFixed(1)} ${unit}`;
  return `${ms} ms`;
}

export const fmtTime = (ms) => (typeof ms === "number" && ms > 0 ? new Date(ms).toISOString().replace("T", " ").replace("Z", "") : "");

/** What a stream's info says about damage: corrupt records and damaged files (README, Operations). */
export function damageOf(info) {
  const records = info.corruptions?.length ?? 0;
  const files = info.damaged_files?.length ?? 0;
  if (records === 0 && files === 0) return h("span", { class: "muted" }, "none");
  const parts = [];
  if (records) parts.push(`${records} damaged record${records === 1 ? "" : "s"}`);
  if (files) parts.push(`${files} damaged file${files === 1 ? "" : "s"}`);
  return h("span", { class: "bad", title: JSON.stringify([...(info.corruptions ?? []), ...(info.damaged_files ?? [])]) }, parts.join(", "));
}
