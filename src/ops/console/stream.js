// A stream's page: its info, its groups with their lag (and a chart of it
// over the last minutes), a live tail, and its dead letters with redrive.
// Everything is polled from the JSON API; what the page keeps is bounded.
import { KeyNeeded, api, damageOf, fmtBytes, fmtMs, fmtTime, h, num, row, streamPath, table } from "./api.js";

/** Newest events shown in the tail; older ones drop off the bottom. */
const TAIL_EVENTS_MAX = 50;
/** Lag samples kept per group: 10 minutes at one poll a second. */
const LAG_SAMPLES_MAX = 600;
/** Groups drawn on the chart (the table lists them all). */
const CHART_GROUPS_MAX = 8;
/** Newest dead letters listed. */
const DLQ_LETTERS_MAX = 50;
const COLORS = ["#2f6fde", "#d9480f", "#2b8a3e", "#862e9c", "#c92a2a", "#0b7285", "#e67700", "#5c940d"];

const members = (ms) =>
  ms.length === 0
    ? h("span", { class: "muted" }, "none connected")
    : ms.map((m) => h("div", { class: "member" }, `${m.role}${m.next_seq ? ` (next ${m.next_seq})` : ""}`));

/** The lag of each group over time, sampled by the polls; the chart is rebuilt when the groups change. */
class LagChart {
  constructor(el) {
    this.el = el;
    this.times = [];
    this.lags = new Map();
    this.plot = null;
    this.names = "";
  }

  add(groups) {
    this.times.push(Date.now() / 1000);
    for (const g of groups.slice(0, CHART_GROUPS_MAX)) if (!this.lags.has(g.group)) this.lags.set(g.group, new Array(this.times.length - 1).fill(null));
    for (const [name, values] of this.lags) values.push(groups.find((g) => g.group === name)?.lag ?? null);
    if (this.times.length > LAG_SAMPLES_MAX) {
      this.times.shift();
      for (const values of this.lags.values()) values.shift();
    }
    this.draw();
  }

  draw() {
    const names = [...this.lags.keys()];
    const data = [this.times, ...names.map((n) => this.lags.get(n))];
    if (this.plot && this.names === names.join("\n")) return this.plot.setData(data);
    this.plot?.destroy();
    this.names = names.join("\n");
    if (names.length === 0) return;
    const series = [{}, ...names.map((n, i) => ({ label: n, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: false }))];
    const width = Math.max(320, this.el.clientWidth || 600);
    // Whole seconds on the time axis: the samples are a second apart, finer ticks only repeat labels.
    const time = {
      incrs: [1, 2, 5, 10, 15, 30, 60, 120, 300, 600],
      space: 80,
      values: (_u, ticks) => ticks.map((t) => new Date(t * 1000).toLocaleTimeString()),
    };
    const opts = { width, height: 200, series, axes: [time, {}], scales: { y: { range: (_u, _min, max) => [0, Math.max(1, max)] } } };
    this.plot = new uPlot(opts, data, this.el);
  }

  destroy() {
    this.plot?.destroy();
  }
}

export function streamView(id) {
  const info = h("div", { id: "stream-info" });
  const groups = h("div", { id: "groups-box" });
  const chart = h("div", { id: "lag-chart" });
  const tail = h("ol", { id: "tail" });
  const letters = h("div", { id: "dlq-box" });
  const redriveResult = h("p", { id: "redrive-result", class: "muted" });
  const lag = new LagChart(chart);
  let next = null;

  const redrive = async (range) => {
    redriveResult.textContent = "redriving...";
    try {
      const r = await api(streamPath(id, "/dlq/redrive"), { method: "POST", body: range });
      redriveResult.textContent = `moved ${r.moved}, duplicates ${r.duplicates}, skipped ${r.skipped}${r.next ? `; more from dlq seq ${r.next}` : ""}`;
    } catch (err) {
      // A 401 asks for the key as every call does; anything else is said here rather than left at "redriving...".
      redriveResult.textContent = `redrive failed: ${err.message}`;
      if (err instanceof KeyNeeded) throw err;
    }
  };

  const el = h(
    "div",
    { "data-stream": id },
    h("h2", {}, "Stream ", h("code", {}, id)),
    h("section", {}, h("h3", {}, "Info"), info),
    h("section", {}, h("h3", {}, "Consumer groups"), groups, h("h3", {}, "Lag (events) over time"), chart),
    h(
      "div",
      { class: "cols" },
      h("section", {}, h("h3", {}, `Live tail (newest ${TAIL_EVENTS_MAX})`), tail),
      h(
        "section",
        {},
        h("h3", {}, "Dead letters ", h("button", { id: "redrive-all", type: "button", onclick: () => redrive({}) }, "Redrive all")),
        redriveResult,
        letters,
      ),
    ),
  );

  const showInfo = (s) => {
    const fields = [
      ["head_seq", s.head_seq],
      ["first_seq", s.first_seq],
      ["events", s.events],
      ["size on disk", fmtBytes(s.bytes)],
      ["segments", s.segments],
      ["retention", `${fmtMs(s.retention_ms)}${s.retention_bytes ? ` / ${fmtBytes(s.retention_bytes)}` : ""}`],
      ["durability", s.durability],
      ["created", fmtTime(s.created_at)],
      ["producer ordering", s.producer_ordering ? "on" : "off"],
      ["damage", damageOf(s)],
    ];
    info.replaceChildren(
      h(
        "dl",
        {},
        fields.map(([k, v]) => [h("dt", {}, k), h("dd", { "data-field": k }, v)]),
      ),
    );
  };

  const showGroups = (list) => {
    const rows = list.map((g) =>
      row({ "data-group": g.group }, [
        g.group,
        num(g.checkpoint_seq ?? "none"),
        h("span", { class: "lag" }, g.lag ?? ""),
        num(g.lag_ms === null || g.lag_ms === undefined ? "" : fmtMs(g.lag_ms)),
        members(g.members ?? []),
      ]),
    );
    groups.replaceChildren(table("groups", ["group", num("checkpoint"), "lag", num("lag_ms"), "members"], rows, "No consumer groups yet."));
    lag.add(list);
  };

  /** The next tail page; a tail that fell behind by more than it shows jumps to the newest events. */
  const pollTail = async (s) => {
    const newest = Math.max(s.first_seq, s.head_seq - TAIL_EVENTS_MAX + 1);
    if (next === null || next < newest) next = newest;
    if (next > s.head_seq) return;
    const page = await api(streamPath(id, `/events?from=${next}&limit=${TAIL_EVENTS_MAX}`)).catch((err) => {
      if (err.status === 410) next = null; // retention passed us: start again from what is there
      throw err;
    });
    for (const e of page.events) {
      const line = `${e.seq}  ${fmtTime(e.ingest_ts)}  ${e.type}${e.key ? `  key=${e.key}` : ""}  ${JSON.stringify(e.payload ?? e.payload_base64 ?? null)}`;
      tail.prepend(h("li", { "data-seq": e.seq, title: JSON.stringify(e) }, line));
    }
    while (tail.childElementCount > TAIL_EVENTS_MAX) tail.lastElementChild.remove();
    next = page.next;
  };

  const pollLetters = async () => {
    const dlq = await api(streamPath(`${id}.dlq`), { missingOk: true });
    if (dlq === null || dlq.head_seq < dlq.first_seq) return letters.replaceChildren(h("p", { id: "dlq", class: "muted" }, "No dead letters."));
    const from = Math.max(dlq.first_seq, dlq.head_seq - DLQ_LETTERS_MAX + 1);
    const page = await api(streamPath(`${id}.dlq`, `/events?from=${from}&limit=${DLQ_LETTERS_MAX}`));
    const rows = page.events
      .filter((l) => l.type === "dead_letter")
      .reverse()
      .map((l) =>
        row({ "data-dlq-seq": l.seq }, [
          num(l.seq),
          num(l.payload?.seq),
          l.payload?.group ?? "",
          h("span", { class: "reason" }, l.payload?.reason ?? ""),
          num(l.payload?.attempts),
          l.payload?.event?.type ?? "",
          h("button", { type: "button", onclick: () => redrive({ from: l.seq, to: l.seq }) }, "Redrive"),
        ]),
      );
    letters.replaceChildren(table("dlq", [num("dlq seq"), num("seq"), "group", "reason", num("attempts"), "type", ""], rows, "No dead letters."));
  };

  return {
    el,
    async refresh() {
      const s = await api(streamPath(id));
      showInfo(s);
      const [g] = await Promise.all([api(streamPath(id, "/groups")), pollTail(s), pollLetters()]);
      showGroups(g.groups);
    },
    stop: () => lag.destroy(),
  };
}
