// The PromQL of docs/alerts.yml and docs/grafana-dashboard.json, read the way
// Prometheus and Grafana read them, for the tests that hold both to the metric
// contract (helpers/metric-names.ts) and to promtool's parser.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parse } from "yaml";
import { REPO_ROOT } from "../harness/process.js";

export interface AlertRule {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

export interface AlertTestCase {
  name: string;
  alert_rule_test?: { eval_time: string; alertname: string; exp_alerts?: unknown[] }[];
}

export interface DashboardPanel {
  id: number;
  type: string;
  title: string;
  datasource?: { type: string; uid: string };
  targets?: { expr: string; datasource?: { uid: string } }[];
}

export interface DashboardVariable {
  name: string;
  type: string;
  query: string | { query: string };
}

export interface Dashboard {
  schemaVersion: number;
  panels: DashboardPanel[];
  templating: { list: DashboardVariable[] };
}

const read = (path: string) => readFileSync(join(REPO_ROOT, path), "utf8");

export const alertRules = (): AlertRule[] =>
  (parse(read("docs/alerts.yml")) as { groups: { name: string; rules: AlertRule[] }[] }).groups.flatMap((g) => g.rules);
export const alertGroups = (): string[] => (parse(read("docs/alerts.yml")) as { groups: { name: string }[] }).groups.map((g) => g.name);
export const alertTests = (): AlertTestCase[] => (parse(read("docs/alerts.test.yml")) as { tests: AlertTestCase[] }).tests;
export const dashboard = (): Dashboard => JSON.parse(read("docs/grafana-dashboard.json")) as Dashboard;

export const variableQuery = (v: DashboardVariable): string => (typeof v.query === "string" ? v.query : v.query.query);

/** Every PromQL expression of the dashboard: the panels' targets, and the query variables' label_values() selectors. */
export function dashboardExprs(): string[] {
  const d = dashboard();
  const targets = d.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));
  const variables = d.templating.list
    .filter((v) => v.type === "query")
    .map((v) => /^label_values\((.+),\s*\w+\)$/.exec(variableQuery(v))?.[1] ?? variableQuery(v));
  return [...targets, ...variables];
}

/**
 * A dashboard expression as Prometheus receives it from Grafana: the range
 * variable as a duration, a variable selecting "All" as its allValue.
 */
export const asSentByGrafana = (expr: string): string => expr.replaceAll("$__rate_interval", "5m").replace(/\$\w+/g, ".*");
