// The report's Cluster section (issue 16): bench:cluster's rows side by
// side, one node against the 3-node cluster of the same run, with the ratio,
// the CPU each kind of process took, and the run that measured them (the
// command, the commit, the machine): a `--merge` re-run of this step alone
// is dated apart from the rest of the report. And the cluster's goals, the
// failover one as `npm run test:cluster` wrote it into docs/CLUSTER.md.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { DOCS_DIR } from "../lib/report.js";
import { clusterVariant, CPU_METRICS, PACED_EVENTS_PER_S, type Row, ROWS, SEGMENT_BYTES_MAX, type Setup, SETUPS } from "../workloads/cluster-rows.js";
import { fx, type Goal, median, num, type RunFacts, type Series, seriesCell } from "./series.js";

const CLUSTER_DOC = join(DOCS_DIR, "CLUSTER.md");
const PUBLISH_GOAL = 200_000;
const ARCHIVE_REPLAY_GOAL = 1_000_000;
const FAILOVER_GOAL_MS = 10_000;

const find = (all: Series[], setup: Setup, row: Row, metric: string) =>
  all.find((s) => s.workload === "cluster" && s.variant === clusterVariant(setup, row) && s.metric === metric) ?? null;

function rateGoal(row: Row, floor: number, text: string): Goal {
  return {
    text,
    check: (all) => {
      const s = find(all, "cluster", row, "events/s");
      if (!s) return { measured: "not measured", met: null };
      const vs = find(all, "one", row === "publish" ? "publish" : "replayOwner", "events/s");
      return { measured: `${num(median(s.values))} events/s${vs ? ` (one node: ${num(median(vs.values))})` : ""}`, met: median(s.values) >= floor };
    },
  };
}

/** The failover p99 as `npm run test:cluster` last wrote it into docs/CLUSTER.md. */
function failoverGoal(): Goal {
  return {
    text: `cluster failover p99 ≤ ${FAILOVER_GOAL_MS / 1000} s with the default lease (\`npm run test:cluster\`, [CLUSTER.md](CLUSTER.md#failover-measured))`,
    check: () => {
      const doc = existsSync(CLUSTER_DOC) ? readFileSync(CLUSTER_DOC, "utf8") : "";
      const m = /kill to first accepted publish, p99 \| ([\d,]+) ms/.exec(doc);
      if (!m) return { measured: "not in docs/CLUSTER.md yet", met: null };
      const p99 = Number(m[1].replaceAll(",", ""));
      return { measured: `${num(p99)} ms (kill -9 of an owner to the first accepted publish)`, met: p99 <= FAILOVER_GOAL_MS };
    },
  };
}

export const CLUSTER_GOALS: Goal[] = [
  rateGoal("publish", PUBLISH_GOAL, `cluster publish ≥ ${num(PUBLISH_GOAL)} events/s, batches of 1,000`),
  rateGoal("replayArchive", ARCHIVE_REPLAY_GOAL, `cluster replay from the archive on a non-owner node ≥ ${num(ARCHIVE_REPLAY_GOAL)} events/s`),
  failoverGoal(),
];

/** The run that measured the cluster step: the last --merge re-run of it, else the run itself. */
function measuredBy(facts: RunFacts): { date: string; commit: string; command: string; machine: string[] } | null {
  const rerun = [...(facts.reruns ?? [])].reverse().find((r) => r.steps.includes("cluster"));
  if (rerun) return { ...rerun, machine: rerun.machine ?? facts.machine ?? [] };
  if (facts.steps?.some((c) => c.startsWith("npm run bench:cluster"))) return { ...facts, machine: facts.machine ?? [] };
  return null;
}

const ROW_LINES: Array<{ row: Row; metric: string; label: string; oneRow?: Row }> = [
  { row: "publish", metric: "events/s", label: "publish, batches of 1,000 (events/s)" },
  { row: "paced", metric: "p50 ms", label: `publish p50 at ${num(PACED_EVENTS_PER_S)} events/s (ms, per batch)` },
  { row: "paced", metric: "p99 ms", label: `publish p99 at ${num(PACED_EVENTS_PER_S)} events/s (ms, per batch)` },
  { row: "paced", metric: "p99.9 ms", label: `publish p99.9 at ${num(PACED_EVENTS_PER_S)} events/s (ms, per batch)` },
  { row: "replayOwner", metric: "events/s", label: "replay from seq 1 through the owner (events/s)" },
  { row: "replayArchive", metric: "events/s", label: "replay from seq 1 through a non-owner, from the archive (events/s)", oneRow: "replayOwner" },
  { row: "replayArchiveCached", metric: "events/s", label: "the same again, its segments cached (events/s)", oneRow: "replayOwner" },
];

export function clusterSection(all: Series[], facts: RunFacts): string[] {
  const lines = [`## Cluster: ${SETUPS.cluster} against one node (issue 16)`, ""];
  const by = measuredBy(facts);
  if (!by || !all.some((s) => s.workload === "cluster")) return [...lines, "_No measurements (the step failed or was not run)._", ""];
  lines.push(
    `Measured by \`${by.command}\` (the step alone: \`npm run bench:cluster\`, \`loadtest/workloads/cluster.ts\`) on ${by.date} at commit ${by.commit}, on this machine:`,
    "",
    ...by.machine,
    "",
    `One node without cluster flags, then three nodes in cluster mode with a private PostgreSQL 15 (fsync off) and a \`file://\` archive, all on the same cores as the load generator (ticker/client in the benchmark's process); ${SEGMENT_BYTES_MAX / 2 ** 20} MiB segments on both, the defaults otherwise (64 cluster shards, a 5 s lease, archiving every second). The cluster column is what three nodes do when they share one machine's cores, not what three machines would: read the ratio and the CPU table below. For the replay through a non-owner, the one-node column repeats its one replay.`,
    "",
    `| Row | ${SETUPS.one} | ${SETUPS.cluster} | cluster / one node |`,
    "| --- | ---: | ---: | ---: |",
  );
  for (const l of ROW_LINES) {
    const one = find(all, "one", l.oneRow ?? l.row, l.metric);
    const c = find(all, "cluster", l.row, l.metric);
    const ratio = one && c ? fx(median(c.values) / median(one.values)) : "";
    lines.push(`| ${l.label} | ${one ? seriesCell(one) : ""} | ${c ? seriesCell(c) : ""} | ${ratio} |`);
  }
  lines.push("", "CPU seconds by process over each row's wall time (nodes: every thread of every `ticker serve`; client: the benchmark's process; other: the rest of the machine's busy time):", "");
  lines.push(`| Row | ${CPU_METRICS.join(" | ")} |`, `| --- | ${CPU_METRICS.map(() => "---:").join(" | ")} |`);
  for (const setup of ["one", "cluster"] as const)
    for (const row of Object.keys(ROWS) as Row[]) {
      const cells = CPU_METRICS.map((m) => find(all, setup, row, m));
      if (cells.every((x) => x === null)) continue;
      lines.push(`| ${clusterVariant(setup, row)} | ${cells.map((x) => (x ? seriesCell(x) : "")).join(" | ")} |`);
    }
  lines.push("", "| Goal | Measured | Met |", "| --- | --- | --- |");
  for (const g of CLUSTER_GOALS) {
    const r = g.check(all);
    lines.push(`| ${g.text} | ${r.measured} | ${r.met === null ? "not measured" : r.met ? "yes" : "**no**"} |`);
  }
  return [...lines, ""];
}
