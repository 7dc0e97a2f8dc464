// What every capacity sweep measures with: a fresh server on a fresh temp
// data dir (loadtest/server.ts), always stopped and its dir removed, and CPU
// read from /proc for the server, this process and the whole machine.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readdirSync } from "node:fs";
import { CLK_TCK, machineBusyTicks, ticksOf } from "../proc.js";
import { BenchServer, killAllServers } from "../server.js";

const tempDirs = new Set<string>();

/** `ticker serve --port 0` with the default config, on a new temp data dir. */
export async function startServer(label: string): Promise<BenchServer> {
  const dir = mkdtempSync(join(tmpdir(), `ticker-capacity-${label}-`));
  tempDirs.add(dir);
  try {
    return await BenchServer.start(dir);
  } catch (err) {
    killAllServers();
    removeDir(dir);
    throw err;
  }
}

/** SIGTERM, then SIGKILL if it has not exited in time (BenchServer.stop); removes the data dir; returns how it ended. */
export async function stopServer(server: BenchServer): Promise<string> {
  try {
    return await server.stop();
  } finally {
    removeDir(server.dataDir);
  }
}

/** For signals and deadlines, when there is no time to stop cleanly: every server killed, every temp dir removed. */
export function cleanupNow(): void {
  killAllServers();
  for (const dir of [...tempDirs]) removeDir(dir);
}

function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  tempDirs.delete(dir);
}

// ---- CPU ------------------------------------------------------------------

export interface CpuMark {
  at: number;
  server: number;
  serverMain: number;
  /** Ticks of each server thread by tid. */
  threads: Map<number, number>;
  self: NodeJS.CpuUsage;
  machine: number;
}

/** Cores busy over an interval: 1.00 is one core for the whole interval. */
export interface CpuUse {
  wallS: number;
  serverCpuS: number;
  serverCores: number;
  /** The server's main thread (tid = pid): the uWS front, which writes every socket. */
  serverMainCores: number;
  /** The busiest server thread other than the main one: with one stream, its shard. */
  busiestWorkerCores: number;
  /** This process, every thread (autocannon, consumers, the producer thread). */
  clientCores: number;
  /** Everything else busy on the machine: other people's builds and benchmarks. */
  otherCores: number;
  machineCores: number;
}

export function cpuMark(pid: number): CpuMark {
  return {
    at: performance.now(),
    server: ticksOf(`/proc/${pid}/stat`),
    serverMain: ticksOf(`/proc/${pid}/task/${pid}/stat`),
    threads: threadTicks(pid),
    self: process.cpuUsage(),
    machine: machineBusyTicks(),
  };
}

function threadTicks(pid: number): Map<number, number> {
  const out = new Map<number, number>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      out.set(Number(tid), ticksOf(`/proc/${pid}/task/${tid}/stat`));
    } catch {
      // The thread ended between the listing and the read.
    }
  }
  return out;
}

export function cpuSince(m: CpuMark, pid: number): CpuUse {
  const now = cpuMark(pid);
  const wallS = (now.at - m.at) / 1000;
  const serverCpuS = (now.server - m.server) / CLK_TCK;
  const self = process.cpuUsage(m.self);
  const clientCores = (self.user + self.system) / 1e6 / wallS;
  const serverCores = serverCpuS / wallS;
  const machineCores = (now.machine - m.machine) / CLK_TCK / wallS;
  let busiest = 0;
  for (const [tid, ticks] of now.threads) if (tid !== pid) busiest = Math.max(busiest, ticks - (m.threads.get(tid) ?? 0));
  return {
    wallS,
    serverCpuS,
    serverCores,
    serverMainCores: (now.serverMain - m.serverMain) / CLK_TCK / wallS,
    busiestWorkerCores: busiest / CLK_TCK / wallS,
    clientCores,
    // The three are read at slightly different instants: a little below zero is rounding.
    otherCores: Math.max(0, machineCores - serverCores - clientCores),
    machineCores,
  };
}

/** Idle means under this many cores busy over a QUIET_WINDOW_MS sample. */
const QUIET_CORES = 0.3;
const QUIET_WINDOW_MS = 500;

/**
 * Waits up to `timeoutMs` for the machine to go idle: on a shared 2-core
 * box, someone else's build shows up as our latency. Returns the cores busy
 * in the last sample (under QUIET_CORES when it went quiet).
 */
export async function waitQuiet(timeoutMs: number): Promise<{ quiet: boolean; busyCores: number }> {
  const t0 = performance.now();
  let busy = NaN;
  do {
    const m0 = machineBusyTicks();
    await new Promise((r) => setTimeout(r, QUIET_WINDOW_MS));
    busy = (machineBusyTicks() - m0) / CLK_TCK / (QUIET_WINDOW_MS / 1000);
    if (busy < QUIET_CORES) return { quiet: true, busyCores: busy };
  } while (performance.now() - t0 < timeoutMs);
  return { quiet: false, busyCores: busy };
}
