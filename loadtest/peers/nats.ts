// NATS JetStream as a peer for bench-peers: a private nats-server with
// JetStream on file storage, in a fresh temp dir on a free loopback port,
// stopped by its pid. A fresh machine has no nats-server: it is installed
// from Debian first (as root), under the same flock(1) lock file the test
// setup uses for apt-get (test/setup/servers.ts), so two installs never
// overlap and one waits for what the other installs.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { daemonVersion, freePort, installed, lastLine, onPath, run, type DaemonVersion } from "./daemon.js";

/** Shared with test/setup/servers.ts: every apt-get of this project runs under it. */
const APT_LOCK_PATH = join(tmpdir(), "ticker-test-apt.lock");
const APT_LOCK_WAIT_S = 600;
/** apt-get update and install together; a dead mirror must not hold the bench for longer. */
const APT_TIMEOUT_MS = 5 * 60_000;
/** nats-server 2.9 with an empty store is ready in ~100 ms; JetStream recovery of a big store takes longer. */
const READY_TIMEOUT_MS = 15_000;
/** On SIGTERM nats-server shuts JetStream down cleanly (flushes and closes each stream) in well under a second. */
const STOP_TIMEOUT_MS = 15_000;
/** A free port can be taken by someone else between our probe and the server's bind. */
const START_ATTEMPTS_MAX = 3;
/** The server's output kept for error messages. */
const LOG_TAIL_CHARS_MAX = 4096;

const liveServers = new Set<NatsServer>();

/** Synchronous last resort for a benchmark's deadline and signal handlers. */
export function killNatsNow(): void {
  for (const s of liveServers) s.killNow();
}

// ---- finding or installing nats-server --------------------------------------

/**
 * nats-server's path, installing the Debian package first when it is not on
 * PATH. Returns a reason instead when that fails (or we are not root), so
 * the other systems' rows still get measured.
 */
export async function ensureNatsServer(notes: string[]): Promise<{ binary: string } | { reason: string }> {
  const found = onPath("nats-server");
  if (found) return { binary: found };
  if (process.getuid?.() !== 0) return { reason: "nats-server is not on PATH and this is not root: apt-get install -y nats-server" };
  console.error("nats: nats-server not on PATH; apt-get update && apt-get install -y nats-server (under flock)");
  const t0 = performance.now();
  // The check runs again under the lock: whoever held it may have installed it meanwhile.
  const script = "command -v nats-server >/dev/null || { apt-get -o DPkg::Lock::Timeout=300 update; apt-get -o DPkg::Lock::Timeout=300 install -y nats-server; }";
  const install = await run("flock", ["-w", String(APT_LOCK_WAIT_S), APT_LOCK_PATH, "sh", "-c", script], APT_TIMEOUT_MS);
  const binary = onPath("nats-server");
  if (!binary) return { reason: `nats-server not on PATH and apt-get install failed: ${lastLine(install.out) || "no output"}` };
  return installed("nats-server", "NATS", binary, t0, notes);
}

/** `number` is e.g. "2.9.10". */
export type NatsVersion = DaemonVersion;

export function natsServerVersion(binary: string): Promise<NatsVersion> {
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
  const dir = mkdtempSync(join(tmpdir(), "ticker-bench-nats-conf-"));
  try {
    writeFileSync(join(dir, "nats.conf"), SYNC_ALWAYS_CONFIG);
    const r = await run(binary, ["-c", join(dir, "nats.conf"), "-t"], 10_000);
    return { supported: r.ok, answer: lastLine(r.out).replace(dir, "<dir>") };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---- the server process -------------------------------------------------------

export class NatsServer {
  private log = "";
  private exitInfo: string | null = null;
  private readonly exited: Promise<void>;

  private constructor(
    private readonly proc: ChildProcess,
    readonly port: number,
    /** The temp dir; JetStream's store is `js` inside it. */
    readonly dir: string,
  ) {
    liveServers.add(this);
    this.exited = new Promise((resolve) => {
      proc.once("exit", (code, signal) => {
        this.exitInfo = signal ? `signal ${signal}` : `code ${code}`;
        liveServers.delete(this);
        resolve();
      });
      // A binary that cannot be run never exits: it fails to spawn.
      proc.once("error", (err) => {
        this.exitInfo ??= `not started: ${err.message}`;
        liveServers.delete(this);
        resolve();
      });
    });
    // nats-server logs to stderr; the tail is kept for error messages only.
    const keep = (c: Buffer) => {
      this.log = (this.log + c.toString()).slice(-LOG_TAIL_CHARS_MAX);
    };
    proc.stdout!.on("data", keep);
    proc.stderr!.on("data", keep);
  }

  get pid(): number {
    return this.proc.pid!;
  }

  /**
   * A private nats-server with JetStream (`-js`) storing in a fresh temp dir
   * (`-sd`), listening on a free loopback port; ready once it logs "Server
   * is ready" (after JetStream is up). Retries on another port if the bind
   * fails. `config` is extra configuration file text (e.g. `jetstream {
   * sync_interval: always }`); the flags override the file's settings of the same options.
   */
  static async start(binary: string, config?: string): Promise<NatsServer> {
    const dir = mkdtempSync(join(tmpdir(), "ticker-bench-nats-"));
    try {
      const configArgs: string[] = [];
      if (config !== undefined) {
        writeFileSync(join(dir, "nats.conf"), config);
        configArgs.push("-c", join(dir, "nats.conf"));
      }
      for (let attempt = 1; ; attempt++) {
        const port = await freePort();
        const args = [...configArgs, "-a", "127.0.0.1", "-p", String(port), "-js", "-sd", join(dir, "js")];
        const proc = spawn(binary, args, { stdio: ["ignore", "pipe", "pipe"] });
        const server = new NatsServer(proc, port, dir);
        try {
          await server.ready();
          return server;
        } catch (err) {
          await server.kill();
          if (attempt >= START_ATTEMPTS_MAX) throw err;
        }
      }
    } catch (err) {
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }

  private ready(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const t0 = performance.now();
      const poll = setInterval(() => {
        if (this.log.includes("Server is ready")) {
          clearInterval(poll);
          resolve();
        } else if (this.exitInfo) {
          clearInterval(poll);
          reject(new Error(`nats-server exited (${this.exitInfo}) before ready: ${this.logTail()}`));
        } else if (performance.now() - t0 > READY_TIMEOUT_MS) {
          clearInterval(poll);
          reject(new Error(`nats-server not ready in ${READY_TIMEOUT_MS} ms: ${this.logTail()}`));
        }
      }, 20);
    });
  }

  logTail(lines = 3): string {
    return this.log.trim().split("\n").slice(-lines).join(" / ") || "(no output)";
  }

  /** SIGTERM, SIGKILL if it has not exited in time; then removes the temp dir. Returns how it ended. */
  async stop(): Promise<string> {
    const how = await this.kill();
    rmSync(this.dir, { recursive: true, force: true });
    return how;
  }

  private async kill(): Promise<string> {
    if (this.exitInfo) return `had already exited (${this.exitInfo})`;
    process.kill(this.pid, "SIGTERM");
    const timedOut = await Promise.race([this.exited.then(() => false), new Promise<boolean>((r) => setTimeout(() => r(true), STOP_TIMEOUT_MS))]);
    if (!timedOut) return "SIGTERM: exited";
    process.kill(this.pid, "SIGKILL");
    await this.exited;
    return `SIGTERM ignored for ${STOP_TIMEOUT_MS} ms, SIGKILLed`;
  }

  killNow(): void {
    try {
      if (!this.exitInfo) process.kill(this.pid, "SIGKILL");
    } catch {
      // Already gone.
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
