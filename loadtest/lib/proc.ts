// What the benchmarks read from /proc and the disk, so that Ticker and a peer
// server are measured the same way: CPU of a process, its threads, this
// process and the whole machine over an interval; memory; disk; and waiting
// for the machine to go quiet before a row.
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { wallNow } from "./latency.js";

export const CLK_TCK = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;

/** Fields after the parenthesised comm, which may itself contain spaces. */
export function statFields(path: string): string[] {
  const s = readFileSync(path, "utf8");
  return s.slice(s.lastIndexOf(")") + 2).split(" ");
}

// stat field n (1-based, see proc(5)) is statFields()[n - 3]: utime is 14, stime 15.
/** utime + stime in clock ticks, of a process (/proc/<pid>/stat) or one thread (…/task/<tid>/stat). */
export function ticksOf(path: string): number {
  const f = statFields(path);
  return Number(f[11]) + Number(f[12]);
}

/**
 * Busy ticks of the whole machine (user, nice, system, irq, softirq; not
 * idle, iowait or steal). Minus the server and the client it is everything
 * else competing for the same cores, which on a shared VM is worth seeing.
 */
export function machineBusyTicks(): number {
  const f = readFileSync("/proc/stat", "utf8").split("\n", 1)[0].trim().split(/\s+/).slice(1).map(Number);
  return f[0] + f[1] + f[2] + f[5] + f[6];
}

/** VmHWM and VmRSS of a process, in bytes. */
export function processMemory(pid: number): { peak: number; rss: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? NaN) * 1024;
  return { peak: kb("VmHWM"), rss: kb("VmRSS") };
}

/** File descriptors a process holds (/proc/<pid>/fd): files, sockets, pipes, eventfds alike. */
export function openFds(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

export function diskBytes(dir: string): number {
  // Allocated blocks (not apparent size): what the data really costs on disk.
  return Number(execFileSync("du", ["-s", "--block-size=1", dir], { encoding: "utf8" }).split("\t")[0]);
}

export interface Timed<S> {
  wallS: number;
  serverCpuS: number;
  clientCpuS: number;
  /** Busy CPU of everything else on the machine over the same interval. */
  restCpuS: number;
  /** The server's own samples before and after, for per-thread figures. */
  before: S;
  after: S;
}

/**
 * Runs `body` between two samples of the server (`sample`, with its process
 * CPU ticks from `ticks`), of this process and of the whole machine.
 */
export async function timed<S>(sample: () => S, ticks: (s: S) => number, body: () => Promise<void>): Promise<Timed<S>> {
  const machine0 = machineBusyTicks();
  const before = sample();
  const client0 = process.cpuUsage();
  const t0 = performance.now();
  await body();
  const wallS = (performance.now() - t0) / 1000;
  const client1 = process.cpuUsage(client0);
  const after = sample();
  const machineS = (machineBusyTicks() - machine0) / CLK_TCK;
  const serverCpuS = (ticks(after) - ticks(before)) / CLK_TCK;
  const clientCpuS = (client1.user + client1.system) / 1e6;
  // The sides are counted at slightly different instants: a few ticks below zero are rounding.
  return { wallS, serverCpuS, clientCpuS, restCpuS: Math.max(0, machineS - serverCpuS - clientCpuS), before, after };
}

export interface CpuMark {
  at: number;
  /** The server's ticks, its main thread's (tid = pid) and each thread's by tid; 0 and empty without a server. */
  server: number;
  serverMain: number;
  threads: Map<number, number>;
  self: NodeJS.CpuUsage;
  machine: number;
}

/** Cores busy over an interval: 1.00 is one core for the whole interval. */
export interface CpuUse {
  wallS: number;
  serverCpuS: number;
  serverCores: number;
  /** The server's main thread (tid = pid): Ticker's uWS front, which writes every socket. */
  serverMainCores: number;
  /** The busiest server thread other than the main one: with one stream, its shard. */
  busiestWorkerCores: number;
  /** This process, every thread (clients, consumers, the producer thread). */
  clientCores: number;
  clientCpuS: number;
  /** Everything else busy on the machine: other people's builds and benchmarks. */
  otherCores: number;
  machineCores: number;
}

/** A sample of the server `pid` (null: none), this process and the machine, for cpuSince. */
export function cpuMark(pid: number | null): CpuMark {
  return {
    at: performance.now(),
    server: pid === null ? 0 : ticksOf(`/proc/${pid}/stat`),
    serverMain: pid === null ? 0 : ticksOf(`/proc/${pid}/task/${pid}/stat`),
    threads: pid === null ? new Map() : threadTicks(pid),
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

export function cpuSince(m: CpuMark, pid: number | null): CpuUse {
  const now = cpuMark(pid);
  const wallS = (now.at - m.at) / 1000;
  const serverCpuS = (now.server - m.server) / CLK_TCK;
  const self = process.cpuUsage(m.self);
  const clientCpuS = (self.user + self.system) / 1e6;
  const serverCores = serverCpuS / wallS;
  const clientCores = clientCpuS / wallS;
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
    clientCpuS,
    // The three are read at slightly different instants: a little below zero is rounding.
    otherCores: Math.max(0, machineCores - serverCores - clientCores),
    machineCores,
  };
}

/** CPU over [tStart, tEnd) (wallNow ms), sampled by timers at those instants: a latency row's window. */
export function cpuWindow(pid: number | null, tStart: number, tEnd: number): Promise<CpuUse> {
  return new Promise((resolve) => {
    setTimeout(
      () => {
        const mark = cpuMark(pid);
        setTimeout(() => resolve(cpuSince(mark, pid)), Math.max(0, tEnd - wallNow()));
      },
      Math.max(0, tStart - wallNow()),
    );
  });
}

/**
 * CPU seconds of each of `pids` (all threads) over [tStart, tEnd) (wallNow
 * ms), read from /proc by this process: a busy process's own timers fire
 * late (a fan-out consumer host measured itself at ~0 over a window it spent
 * behind), an observer with an idle event loop reads on time.
 */
export function pidsCpuWindow(pids: number[], tStart: number, tEnd: number): Promise<number[]> {
  const ticks = () => pids.map((pid) => ticksOf(`/proc/${pid}/stat`));
  return new Promise((resolve) => {
    setTimeout(
      () => {
        const t0 = ticks();
        setTimeout(() => resolve(ticks().map((t, i) => (t - t0[i]) / CLK_TCK)), Math.max(0, tEnd - wallNow()));
      },
      Math.max(0, tStart - wallNow()),
    );
  });
}

/** Idle means under this many cores busy over a QUIET_WINDOW_MS sample. */
const QUIET_CORES = 0.3;
const QUIET_WINDOW_MS = 500;

/**
 * Waits up to `timeoutMs` for the machine to go idle: on a shared 2-core
 * box, someone else's build shows up as our latency. Returns the cores busy
 * in the last sample (under QUIET_CORES when it went quiet); the caller says
 * in its notes when it did not.
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
