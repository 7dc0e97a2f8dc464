// The console's views and its router (#/, #/streams/<id>, #/timelines,
// #/timelines/<name>). A view is polled once a second while it shows; the
// previous view's poll ends when the hash changes.
import { ApiFailure, KeyNeeded, api, damageOf, fmtBytes, fmtMs, fmtTime, h, num, row, setUpKey, table } from "./api.js";
import { streamView } from "./stream.js";

const POLL_MS = 1000;
/** Events a timeline page asks for. */
const TIMELINE_PAGE_EVENTS = 25;

const link = (hash, text) => h("a", { href: hash }, text);

function streamsView() {
  const box = h("div", { id: "streams-box" });
  /** The previous poll's head of each stream: the publish rate is the difference over the time between polls. */
  let before = new Map();
  return {
    el: h("section", {}, h("h2", {}, "Streams"), box),
    async refresh() {
      const { streams } = await api("/v1/streams");
      const now = performance.now();
      const rate = (s) => {
        const b = before.get(s.id);
        return b && now > b.at ? `${Math.round(((s.head_seq - b.head) * 1000) / (now - b.at))}/s` : "";
      };
      const rows = streams.map((s) =>
        row({ "data-stream": s.id }, [
          link(`#/streams/${encodeURIComponent(s.id)}`, s.id),
          num(h("span", { class: "head" }, s.head_seq)),
          num(s.first_seq),
          num(rate(s)),
          num(fmtBytes(s.bytes)),
          `${fmtMs(s.retention_ms)}${s.retention_bytes ? ` / ${fmtBytes(s.retention_bytes)}` : ""}`,
          damageOf(s),
        ]),
      );
      box.replaceChildren(
        table(
          "streams",
          ["stream", num("head_seq"), num("first_seq"), num("publish rate"), num("size on disk"), "retention", "damage"],
          rows,
          "No streams yet.",
        ),
      );
      before = new Map(streams.map((s) => [s.id, { head: s.head_seq, at: now }]));
    },
  };
}

function timelinesView() {
  const box = h("div", { id: "timelines-box" });
  return {
    el: h("section", {}, h("h2", {}, "Named timelines"), box),
    async refresh() {
      const { timelines } = await api("/v1/timelines");
      const rows = timelines.map((t) =>
        row({ "data-timeline": t.name }, [link(`#/timelines/${encodeURIComponent(t.name)}`, t.name), t.streams.join(", "), fmtTime(t.updated_at)]),
      );
      box.replaceChildren(table("timelines", ["timeline", "streams", "updated"], rows, "No named timelines."));
    },
  };
}

/** One page of a named timeline at a time, paged by its cursors; it changes only when asked. */
function timelineView(name) {
  const box = h("div", { id: "timeline-page" });
  let ask = "direction=forward";
  let shown = null;
  const go = (query) => {
    ask = query;
    shown = null;
  };
  const nav = (page) =>
    h(
      "p",
      {},
      h("button", { type: "button", onclick: () => go("direction=forward") }, "Oldest"),
      " ",
      h("button", { type: "button", onclick: () => go("direction=backward") }, "Newest"),
      " ",
      h(
        "button",
        { type: "button", id: "timeline-prev", disabled: !page.prev_cursor, onclick: () => go(`cursor=${encodeURIComponent(page.prev_cursor)}`) },
        "Previous page",
      ),
      " ",
      h(
        "button",
        { type: "button", id: "timeline-next", disabled: !page.next_cursor, onclick: () => go(`cursor=${encodeURIComponent(page.next_cursor)}`) },
        "Next page",
      ),
      page.has_gap ? h("span", { class: "bad" }, " this page has a gap") : null,
    );
  return {
    el: h("section", {}, h("h2", {}, "Timeline ", h("code", {}, name)), box),
    async refresh() {
      if (shown === ask) return;
      const page = await api(`/v1/timelines/${encodeURIComponent(name)}/events?limit=${TIMELINE_PAGE_EVENTS}&${ask}`);
      shown = ask;
      const rows = page.events.map((e) =>
        row({ "data-seq": e.seq, "data-stream": e.stream }, [
          fmtTime(e.ingest_ts),
          e.stream,
          num(e.seq),
          e.type,
          e.key ?? "",
          h("code", {}, JSON.stringify(e.payload ?? null)),
        ]),
      );
      box.replaceChildren(nav(page), table("timeline-events", ["ingest_ts", "stream", num("seq"), "type", "key", "payload"], rows, "No events on this page."));
    },
  };
}

function viewFor(hash) {
  const [, section, arg] = /^#\/([^/]*)\/?(.*)$/.exec(hash) ?? [];
  if (section === "streams" && arg) return streamView(decodeURIComponent(arg));
  if (section === "timelines" && arg) return timelineView(decodeURIComponent(arg));
  if (section === "timelines") return timelinesView();
  return streamsView();
}

let current = null;

function show() {
  current?.stop?.();
  const view = viewFor(location.hash);
  current = view;
  document.getElementById("view").replaceChildren(view.el);
  const status = document.getElementById("status");
  const poll = async () => {
    if (current !== view) return;
    try {
      await view.refresh();
      status.className = "";
      status.textContent = `updated ${new Date().toLocaleTimeString()}`;
    } catch (err) {
      // A 401 shows the key form; the poll goes on and succeeds once a key is entered.
      if (!(err instanceof KeyNeeded)) {
        status.className = "error";
        status.textContent = err instanceof ApiFailure ? err.message : `request failed: ${err.message}`;
      }
    }
    if (current === view) setTimeout(poll, POLL_MS);
  };
  void poll();
}

setUpKey(show);
window.addEventListener("hashchange", show);
show();
