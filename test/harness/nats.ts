// A private nats-server with JetStream on file storage, in a fresh temp dir
// on a free loopback port, stopped by its pid (peer benchmarks only);
// installed from Debian first if missing.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { daemonVersion, ensureBinary, type DaemonVersion } from "./apt.js";
import { lastLine, onFreePort, run, signal, terminate, track, untrack, type ServerProcess } from "./process.js";

/** nats-server 2.9 with an empty store is ready in ~100 ms; JetStream recovery of a big store takes longer. */
const READY_TIMEOUT_MS = 15_000;
/** On SIGTERM nats-server shuts JetStream down cleanly (flushes and closes each stream) in well under a second. */
const STOP_TIMEOUT_MS = 15_000;
/** The server's output kept for error messages. */
const LOG_TAIL_CHARS_MAX = 4096;

export function natsVersion(binary: string): Promise<DaemonVersion> {
  // "nats-server: v2.9.10"
  return daemonVersion(binary, "nats-server", /v(\d+\.\d+\.\d+)/);
}

/** The configuration that makes JetStream fsync every write before its ack (nats-server 2.10 and later). */
export const SYNC_ALWAYS_CONFIG = "jetstream { sync_interval: always }\n";

/**
 * Whether this nats-server accepts `sync_interval: always`, asked of the
 * binary itself (`-t` tests a configuration and exits): 2.9 rejects the
 * field as unknown, and fsyncs its file store only on a fixed timer.
 */
export async function natsSyncAlwaysSupport(binary: string): Promise<{ supported: boolean; answer: string }> {
  const dir = mkdtempSync(join(tmpdir(), "ticker-nats-conf-"));
  try {
    writeFileSync(join(dir, "nats.conf"), SYNC_ALWAYS_CONFIG);
    const r = await run(binary, ["-c", join(dir, "nats.conf"), "-t"], 10_000);
    return { supported: r.ok, answer: lastLine(r.out).replace(dir, "<dir>") };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Starts nats-server with JetStream (`-js`) storing in a fresh temp dir
 * (`-sd`), ready once it logs "Server is ready" (after JetStream is up).
 * `config` is extra configuration file text (e.g. SYNC_ALWAYS_CONFIG); the
 * flags override the file's settings of the same options.
 */
export async function startNats(opts: { config?: string; notes?: string[] } = {}): Promise<ServerProcess> {
  const binary = await ensureBinary("nats-server", "nats-server", opts.notes);
  const dir = mkdtempSync(join(tmpdir(), "ticker-nats-"));
  try {
    const configArgs: string[] = [];
    if (opts.config !== undefined) {
      writeFileSync(join(dir, "nats.conf"), opts.config);
      configArgs.push("-c", join(dir, "nats.conf"));
    }
    return track(await onFreePort((port) => launch(binary, [...configArgs, "-a", "127.0.0.1", "-p", String(port), "-js", "-sd", join(dir, "js")], port, dir)));
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

async function launch(binary: string, args: string[], port: number, dir: string): Promise<ServerProcess> {
  const proc = spawn(binary, args, { stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  let exitInfo: string | null = null;
  const exited = new Promise<string>((resolve) => {
    proc.once("exit", (code, sig) => resolve((exitInfo = sig ? `signal ${sig}` : `code ${code}`)));
    // A binary that cannot be run never exits: it fails to spawn.
    proc.once("error", (err) => resolve((exitInfo ??= `not started: ${err.message}`)));
  });
  // nats-server logs to stderr; the tail is kept for error messages only.
  const keep = (c: Buffer) => (log = (log + c.toString()).slice(-LOG_TAIL_CHARS_MAX));
  proc.stdout!.on("data", keep);
  proc.stderr!.on("data", keep);
  const tail = () => log.trim().split("\n").slice(-3).join(" / ") || "(no output)";
  const t0 = performance.now();
  while (!log.includes("Server is ready")) {
    const failed = exitInfo ? `exited (${exitInfo}) before ready` : performance.now() - t0 > READY_TIMEOUT_MS ? `not ready in ${READY_TIMEOUT_MS} ms` : null;
    if (failed) {
      if (!exitInfo) await terminate(proc.pid!, exited, STOP_TIMEOUT_MS);
      throw new Error(`nats-server ${failed}: ${tail()}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  const pid = proc.pid!;
  const server: ServerProcess = {
    url: `nats://127.0.0.1:${port}`,
    port,
    pid,
    dir,
    stop: async () => {
      untrack(server);
      const how = exitInfo ? `had already exited (${exitInfo})` : await terminate(pid, exited, STOP_TIMEOUT_MS);
      rmSync(dir, { recursive: true, force: true });
      return how;
    },
    killNow: () => {
      untrack(server);
      if (!exitInfo) signal(pid, "SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return server;
}
