// docs/alerts.yml, its tests and docs/grafana-dashboard.json against the
// metric contract (helpers/metric-names.ts): a metric or label they use that
// the server does not promise is an alert that can never fire and a panel
// that stays empty, and neither says so. Their PromQL is parsed by promtool in
// integration/alerts.test.ts.
import { describe, expect, it } from "vitest";
import { METRICS, metricOf } from "../helpers/metric-names.js";
import { alertGroups, alertRules, alertTests, asSentByGrafana, dashboard, dashboardExprs, variableQuery } from "../helpers/monitoring-docs.js";

/** Labels Prometheus adds to every scraped series. */
const SCRAPE_LABELS = ["job", "instance"];
const SEVERITIES = ["critical", "warning"];

const metricNames = (expr: string) => [...expr.matchAll(/\bticker_[a-z0-9_]+/g)].map((m) => m[0]);

/** The labels a series of `name` may carry: the contract's, the scrape's, and `le` on a histogram's buckets. */
function labelsOf(name: string): string[] {
  const c = metricOf(name);
  if (!c) return [];
  return [...c.labels, ...SCRAPE_LABELS, ...(name.endsWith("_bucket") ? ["le"] : [])];
}

/** What an expression names that the contract lacks: metrics, labels in selectors, labels in by/without clauses. */
function unknownNames(expr: string): string[] {
  const out = metricNames(expr)
    .filter((n) => !metricOf(n))
    .map((n) => `metric ${n}`);
  for (const [, name, matchers] of expr.matchAll(/\b(ticker_[a-z0-9_]+)\{([^}]*)\}/g)) {
    for (const [, label] of matchers.matchAll(/([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)/g)) if (!labelsOf(name).includes(label)) out.push(`label ${label} on ${name}`);
  }
  const inExpr = new Set(metricNames(expr).flatMap(labelsOf));
  for (const [, list] of expr.matchAll(/\b(?:by|without|on|ignoring)\s*\(([^)]*)\)/g)) {
    for (const label of list.split(",").map((l) => l.trim()))
      if (label && !inExpr.has(label)) out.push(`label ${label} grouped on, which no metric of the expression has`);
  }
  return out;
}

describe("the metric contract", () => {
  it("names each metric once, counters with _total and histograms without", () => {
    const names = METRICS.map((c) => c.name);
    expect(new Set(names).size).toBe(names.length);
    for (const c of METRICS) expect(c.name.endsWith("_total"), c.name).toBe(c.type === "counter");
  });

  it("knows a histogram's _bucket, _sum and _count series, and no suffixes on other types", () => {
    expect(metricOf("ticker_append_duration_seconds_bucket")?.name).toBe("ticker_append_duration_seconds");
    expect(metricOf("ticker_replay_duration_seconds_count")?.name).toBe("ticker_replay_duration_seconds");
    expect(metricOf("ticker_streams_count")).toBeUndefined();
    expect(metricOf("ticker_no_such_metric")).toBeUndefined();
  });

  it("refuses a misspelt metric, a label the metric lacks and a grouping by a label no metric has", () => {
    expect(unknownNames('sum by (stream) (rate(ticker_events_published_total{stream=~"a"}[5m]))')).toEqual([]);
    expect(unknownNames("rate(ticker_event_published_total[5m])")).toEqual(["metric ticker_event_published_total"]);
    expect(unknownNames('ticker_consumers{group="g"}')).toEqual(["label group on ticker_consumers"]);
    expect(unknownNames("sum by (le, strem) (rate(ticker_append_duration_seconds_bucket[5m]))")).toEqual([
      "label strem grouped on, which no metric of the expression has",
    ]);
  });
});

describe("docs/alerts.yml", () => {
  const rules = alertRules();

  it('is one group "ticker" of alerts, each with a for, a severity, a summary and a description', () => {
    expect(alertGroups()).toEqual(["ticker"]);
    for (const r of rules) {
      expect(r.alert, JSON.stringify(r)).toMatch(/^Ticker[A-Z]\w+$/);
      expect(r.for, r.alert).toMatch(/^\d+[smh]$/);
      expect(SEVERITIES, r.alert).toContain(r.labels?.severity);
      expect(r.annotations?.summary, r.alert).toBeTruthy();
      expect(r.annotations?.description, r.alert).toBeTruthy();
    }
  });

  it("uses only metrics and labels of the contract", () => {
    expect(rules.flatMap((r) => unknownNames(r.expr).map((u) => `${r.alert}: ${u}`))).toEqual([]);
  });

  it("names the stream and group in the alerts on a stream's or a group's series", () => {
    for (const r of rules) {
      const labels = new Set(metricNames(r.expr).flatMap((n) => metricOf(n)?.labels ?? []));
      const text = `${r.annotations?.summary} ${r.annotations?.description}`;
      for (const l of ["stream", "group"]) if (labels.has(l)) expect(text, r.alert).toContain(`{{ $labels.${l} }}`);
    }
  });

  it("has, in docs/alerts.test.yml, a case where each alert fires and one where it must not", () => {
    const cases = alertTests().flatMap((t) => t.alert_rule_test ?? []);
    const names = new Set(rules.map((r) => r.alert));
    expect(cases.map((c) => c.alertname).filter((a) => !names.has(a))).toEqual([]);
    for (const alert of names) {
      const mine = cases.filter((c) => c.alertname === alert);
      expect(
        mine.some((c) => (c.exp_alerts ?? []).length > 0),
        `${alert} fires in a test`,
      ).toBe(true);
      expect(
        mine.some((c) => (c.exp_alerts ?? []).length === 0),
        `${alert} stays quiet in a test`,
      ).toBe(true);
    }
  });
});

describe("docs/grafana-dashboard.json", () => {
  const d = dashboard();
  const variables = new Map(d.templating.list.map((v) => [v.name, v]));

  it("picks a Prometheus data source and the streams from ticker_stream_disk_bytes (which has _other)", () => {
    expect(d.schemaVersion).toBeGreaterThanOrEqual(39);
    expect(variables.get("datasource")).toMatchObject({ type: "datasource", query: "prometheus" });
    expect(variableQuery(variables.get("stream")!)).toMatch(/^label_values\(ticker_stream_disk_bytes(\{[^}]*\})?, stream\)$/);
  });

  it("queries the chosen data source in every panel, with unique panel ids", () => {
    const ids = d.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of d.panels.filter((q) => q.type !== "row")) {
      // biome-ignore lint/suspicious/noTemplateCurlyInString: Grafana's variable syntax
      expect(p.datasource?.uid, p.title).toBe("${datasource}");
      expect(p.targets?.length, p.title).toBeGreaterThan(0);
    }
  });

  it("uses only metrics and labels of the contract", () => {
    expect(dashboardExprs().flatMap((e) => unknownNames(asSentByGrafana(e)).map((u) => `${e}: ${u}`))).toEqual([]);
  });

  it("filters every per-stream panel by the stream variable", () => {
    const targets = d.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));
    for (const e of targets.filter((x) => metricNames(x).some((n) => metricOf(n)?.labels.includes("stream")))) expect(e).toContain('stream=~"$stream"');
  });
});
