// What the benchmarks read from /proc and the disk, shared by bench-engine
// and its peers so that Ticker and a peer server are measured the same way.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";

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
