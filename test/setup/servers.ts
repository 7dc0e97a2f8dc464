// Private PostgreSQL and Redis servers for tests: each in its own temp dir, on
// a free loopback port, stopped by PID. Machines start bare (see
// ../shared/ENVIRONMENT.md), so whatever is missing is installed first.
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createConnection, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";

const run = promisify(execFile);

export interface TestServerHandle {
  url: string;
  stop(): Promise<void>;
}

const PG_BIN = "/usr/lib/postgresql/15/bin";
const APT_LOCK_PATH = join(tmpdir(), "ticker-test-apt.lock");
const APT_LOCK_WAIT_MS_MAX = 10 * 60_000;
const APT_TIMEOUT_MS = 10 * 60_000;
/** A free port can be taken by someone else between our probe and the server's bind. */
const START_ATTEMPTS_MAX = 3;
const READY_WAIT_MS_MAX = 15_000;
const STOP_WAIT_MS_MAX = 10_000;

const isRoot = process.getuid?.() === 0;

export async function startPostgres(): Promise<TestServerHandle> {
  if (!existsSync(join(PG_BIN, "initdb"))) await aptInstall(["postgresql"], `test -x ${PG_BIN}/initdb`);
  const dir = mkdtempSync(join(tmpdir(), "ticker-pg-"));
  try {
    // initdb refuses to run as root; the postgres user must own the cluster.
    if (isRoot) await run("chown", ["postgres", dir]);
    await asPostgres("initdb", ["-D", join(dir, "data"), "-A", "trust", "-U", "ticker", "-E", "UTF8", "--no-locale", "--no-sync"]);
    const port = await startWithRetry((p) => startPostgresOn(dir, p));
    return {
      url: `postgres://ticker@127.0.0.1:${port}/postgres`,
      stop: () => stopPostgres(dir),
    };
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

async function startPostgresOn(dir: string, port: number): Promise<void> {
  // pg_ctl hands these to a shell: quote the path.
  const options = `-p ${port} -k '${dir}' -c listen_addresses=127.0.0.1 -c fsync=off`;
  await asPostgres("pg_ctl", ["-D", join(dir, "data"), "-w", "-l", join(dir, "log"), "-o", options, "start"]);
}

async function stopPostgres(dir: string): Promise<void> {
  try {
    await asPostgres("pg_ctl", ["-D", join(dir, "data"), "-m", "fast", "-w", "stop"]);
  } catch {
    // pg_ctl could not stop it (or it was gone): make sure the postmaster is.
    const pidFile = join(dir, "data", "postmaster.pid");
    if (existsSync(pidFile)) await killPid(Number(readFileSync(pidFile, "utf8").split("\n")[0]));
  }
  rmSync(dir, { recursive: true, force: true });
}

function asPostgres(tool: string, args: string[]) {
  const bin = join(PG_BIN, tool);
  // The postgres user may not be allowed into our working directory.
  const opts = { cwd: tmpdir() };
  return isRoot ? run("runuser", ["-u", "postgres", "--", bin, ...args], opts) : run(bin, args, opts);
}

export async function startRedis(): Promise<TestServerHandle> {
  if (!(await onPath("redis-server"))) await aptInstall(["redis-server"], "command -v redis-server >/dev/null");
  const dir = mkdtempSync(join(tmpdir(), "ticker-redis-"));
  const pidFile = join(dir, "redis.pid");
  try {
    const port = await startWithRetry(async (p) => {
      await run("redis-server", [
        "--port", String(p), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--daemonize", "yes", "--pidfile", pidFile, "--dir", dir, "--logfile", join(dir, "log"),
      ]);
      await waitForRedis(p, pidFile);
    });
    return {
      url: `redis://127.0.0.1:${port}`,
      stop: async () => {
        if (existsSync(pidFile)) await killPid(Number(readFileSync(pidFile, "utf8").trim()));
        rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    if (existsSync(pidFile)) await killPid(Number(readFileSync(pidFile, "utf8").trim()));
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

/** A daemonized redis-server exits its parent before it listens: poll PING. */
async function waitForRedis(port: number, pidFile: string): Promise<void> {
  const deadline = Date.now() + READY_WAIT_MS_MAX;
  while (Date.now() < deadline) {
    if (existsSync(pidFile) && (await ping(port))) return;
    await sleep(50);
  }
  throw new Error(`redis-server on port ${port} did not answer PING within ${READY_WAIT_MS_MAX} ms`);
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

async function startWithRetry(start: (port: number) => Promise<void>): Promise<number> {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    try {
      await start(port);
      return port;
    } catch (err) {
      if (attempt >= START_ATTEMPTS_MAX) throw err;
    }
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address ? resolve(address.port) : reject(new Error("no port"))));
    });
  });
}

async function killPid(pid: number): Promise<void> {
  if (!Number.isInteger(pid) || pid <= 0) return;
  if (!signal(pid, "SIGTERM")) return;
  const deadline = Date.now() + STOP_WAIT_MS_MAX;
  while (Date.now() < deadline) {
    if (!alive(pid)) return;
    await sleep(20);
  }
  signal(pid, "SIGKILL");
}

/**
 * A daemon's parent is PID 1, which here reaps its zombies only every second
 * or two: a process that has exited but is not yet reaped counts as gone.
 */
function alive(pid: number): boolean {
  if (!signal(pid, 0)) return false;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

/** Sends a signal; false when the process is gone. */
function signal(pid: number, sig: NodeJS.Signals | 0): boolean {
  try {
    process.kill(pid, sig);
    return true;
  } catch {
    return false;
  }
}

async function onPath(command: string): Promise<boolean> {
  try {
    await run("sh", ["-c", `command -v ${command}`]);
    return true;
  } catch {
    return false;
  }
}

let aptUpdated = false;

/**
 * Installs Debian packages unless `check` (a shell test) already passes. The
 * check runs again under flock(1) on a machine-wide lock file: vitest runs test
 * files in parallel processes, two apt-gets must never overlap, and one process
 * may install what the other was waiting for. The kernel drops the lock when its
 * holder dies, so a killed run leaves nothing stale behind.
 */
async function aptInstall(packages: string[], check: string): Promise<void> {
  if (!isRoot) throw new Error(`missing ${packages.join(", ")}, and not root: apt-get install -y ${packages.join(" ")}`);
  const update = aptUpdated ? "" : "apt-get -o DPkg::Lock::Timeout=300 update && ";
  const install = `apt-get -o DPkg::Lock::Timeout=300 install -y ${packages.join(" ")}`;
  const script = `${check} || { ${update}${install}; }`;
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  const waitSeconds = String(APT_LOCK_WAIT_MS_MAX / 1000);
  await run("flock", ["-w", waitSeconds, APT_LOCK_PATH, "sh", "-c", script], { env, timeout: APT_TIMEOUT_MS, maxBuffer: 64 << 20 });
  aptUpdated = true;
  await run("sh", ["-c", check]);
}
