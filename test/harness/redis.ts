// A private redis-server: daemonized on a free loopback port, its pidfile,
// log and any AOF in a fresh temp dir, stopped by the pid in its pidfile;
// installed from Debian first if missing. Tests use it without persistence;
// the peer benchmarks also with an AOF.
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { daemonVersion, ensureBinary, type DaemonVersion } from "./apt.js";
import { lastLine, onFreePort, run, signal, terminate, track, untrack, whenGone, type ServerProcess } from "./process.js";

/** No AOF, or an AOF fsynced once a second (in a background thread) or before every reply. */
export type Persistence = "none" | "aof-everysec" | "aof-always";

const READY_WAIT_MS_MAX = 15_000;
/** redis-server exits within milliseconds of SIGTERM without an RDB save; more means it is stuck. */
const STOP_WAIT_MS_MAX = 15_000;

export function redisVersion(binary: string): Promise<DaemonVersion> {
  // "Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=…"
  return daemonVersion(binary, "redis-server", /v=(\d+\.\d+\.\d+)/);
}

/**
 * Starts a private redis-server. `--save ""`: no RDB, ever, so no fork for a
 * snapshot runs beside a workload or at shutdown. `notes` gets a line if
 * redis-server had to be installed.
 */
export async function startRedis(opts: { persistence?: Persistence; notes?: string[] } = {}): Promise<ServerProcess> {
  const binary = await ensureBinary("redis-server", "redis-server", opts.notes);
  const persistence = opts.persistence ?? "none";
  const dir = mkdtempSync(join(tmpdir(), "ticker-redis-"));
  const pidFile = join(dir, "redis.pid");
  const logFile = join(dir, "redis.log");
  const durability =
    persistence === "none"
      ? ["--appendonly", "no"]
      : // Percentage 0 turns off the automatic AOF rewrite: it forks a child whose
        // CPU is not in the server's /proc counters, and Ticker has no compaction
        // on this path either. What is left is append + fsync, as in Ticker's row.
        ["--appendonly", "yes", "--appendfsync", persistence === "aof-always" ? "always" : "everysec", "--auto-aof-rewrite-percentage", "0"];
  try {
    const port = await onFreePort(async (p) => {
      const args = [
        "--port",
        String(p),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        ...durability,
        "--dir",
        dir,
        "--daemonize",
        "yes",
        "--pidfile",
        pidFile,
        "--logfile",
        logFile,
      ];
      const launched = await run(binary, args, READY_WAIT_MS_MAX);
      if (!launched.ok) throw new Error(`redis-server did not start: ${lastLine(launched.out)}`);
      await waitForPing(p, pidFile, logFile);
      return p;
    });
    const pid = pidOf(pidFile);
    const server: ServerProcess = {
      url: `redis://127.0.0.1:${port}`,
      port,
      pid,
      dir,
      stop: async () => {
        untrack(server);
        // A pid from a pidfile can outlive its process and be reused: signal only a redis-server.
        const how = isRedis(pid) ? await terminate(pid, whenGone(pid), STOP_WAIT_MS_MAX) : "had already exited";
        rmSync(dir, { recursive: true, force: true });
        return how;
      },
      killNow: () => {
        untrack(server);
        if (isRedis(pid)) signal(pid, "SIGKILL");
        rmSync(dir, { recursive: true, force: true });
      },
    };
    return track(server);
  } catch (err) {
    const pid = pidOf(pidFile);
    if (isRedis(pid)) await terminate(pid, whenGone(pid), STOP_WAIT_MS_MAX);
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

function pidOf(pidFile: string): number {
  return existsSync(pidFile) ? Number(readFileSync(pidFile, "utf8").trim()) : NaN;
}

function isRedis(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/comm`, "utf8").startsWith("redis-server");
  } catch {
    return false;
  }
}

/** A daemonized redis-server exits its parent before it listens, and writes its pidfile after the fork: poll both. */
async function waitForPing(port: number, pidFile: string, logFile: string): Promise<void> {
  const deadline = Date.now() + READY_WAIT_MS_MAX;
  while (Date.now() < deadline) {
    if (pidOf(pidFile) > 0 && (await ping(port))) return;
    await sleep(50);
  }
  const log = existsSync(logFile) ? readFileSync(logFile, "utf8").trim().split("\n").slice(-3).join(" / ") : "(no log)";
  throw new Error(`redis-server on port ${port} did not answer PING within ${READY_WAIT_MS_MAX} ms; log: ${log}`);
}

function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: "127.0.0.1", port });
    let reply = "";
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.on("error", () => done(false));
    socket.on("connect", () => socket.write("PING\r\n"));
    socket.on("data", (chunk) => {
      reply += chunk.toString("latin1");
      if (reply.includes("\r\n")) done(reply.startsWith("+PONG"));
    });
  });
}
