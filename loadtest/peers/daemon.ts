// What the peers' private daemons (redis-server, nats-server) share: finding
// the binary on PATH, running a command for its output, a free loopback port,
// the version of the binary and of its Debian package, and the step after an
// apt-get install.
import { execFile } from "node:child_process";
import { accessSync, constants } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import { performance } from "node:perf_hooks";

export function onPath(name: string): string | null {
  for (const dir of (process.env.PATH ?? "").split(":")) {
    if (!dir) continue;
    try {
      accessSync(join(dir, name), constants.X_OK);
      return join(dir, name);
    } catch {
      // Not in this directory.
    }
  }
  return null;
}

/** Runs `cmd`, never throwing: whether it succeeded, and its stdout and stderr (or the error when there are none). */
export function run(cmd: string, args: string[], timeoutMs: number): Promise<{ ok: boolean; out: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 16 * 2 ** 20, env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" } }, (err, stdout, stderr) => {
      const out = `${stdout}${stderr}`.trim();
      resolve({ ok: !err, out: err && !out ? err.message : out });
    });
  });
}

export const lastLine = (s: string) => s.split("\n").filter((l) => l.trim() !== "").at(-1) ?? "";

/**
 * After `name` was installed with apt-get (started at `t0`): flushes what
 * dpkg wrote, so its writeback does not land inside a timed row, and says
 * so in `notes`. Returns `{ binary }` for the ensure… functions.
 */
export async function installed(name: string, system: string, binary: string, t0: number, notes: string[]): Promise<{ binary: string }> {
  await run("sync", [], 60_000);
  notes.push(`${name} was not installed: installed with apt-get in ${((performance.now() - t0) / 1000).toFixed(0)} s, before any ${system} row was timed.`);
  return { binary };
}

export interface DaemonVersion {
  /** "7.0.15" */
  number: string;
  /** All of `<binary> --version`. */
  line: string;
  binary: string;
  /** The Debian package's version, when dpkg knows it. */
  debian: string | null;
}

/** `binary --version`, its version number (the first group of `pattern`), and the Debian package `pkg`'s version. */
export async function daemonVersion(binary: string, pkg: string, pattern: RegExp): Promise<DaemonVersion> {
  const r = await run(binary, ["--version"], 10_000);
  const v = pattern.exec(r.out)?.[1];
  if (!r.ok || !v) throw new Error(`${pkg} --version: ${lastLine(r.out)}`);
  const dpkg = await run("dpkg-query", ["-W", "-f", "${Version}", pkg], 10_000);
  return { number: v, line: lastLine(r.out), binary, debian: dpkg.ok && dpkg.out ? dpkg.out : null };
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address() as net.AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}
