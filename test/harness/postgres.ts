// A private PostgreSQL 15 cluster: in its own temp dir, on a free loopback
// port, no fsync, trust auth for user `ticker`; installed first if missing.
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { aptInstall } from "./apt.js";
import { onFreePort, run, signal, terminate, track, untrack, whenGone, type ServerProcess } from "./process.js";

const PG_BIN = "/usr/lib/postgresql/15/bin";
const STOP_WAIT_MS_MAX = 10_000;
const PG_CTL_TIMEOUT_MS = 60_000;

const isRoot = process.getuid?.() === 0;

export async function startPostgres(): Promise<ServerProcess> {
  if (!existsSync(join(PG_BIN, "initdb"))) await aptInstall(["postgresql"], `test -x ${PG_BIN}/initdb`);
  const dir = mkdtempSync(join(tmpdir(), "ticker-pg-"));
  const data = join(dir, "data");
  try {
    // initdb refuses to run as root; the postgres user must own the cluster.
    if (isRoot) await mustRun("chown", ["postgres", dir]);
    await asPostgres("initdb", ["-D", data, "-A", "trust", "-U", "ticker", "-E", "UTF8", "--no-locale", "--no-sync"]);
    const port = await onFreePort(async (p) => {
      // pg_ctl hands these to a shell: quote the path.
      const options = `-p ${p} -k '${dir}' -c listen_addresses=127.0.0.1 -c fsync=off`;
      await asPostgres("pg_ctl", ["-D", data, "-w", "-l", join(dir, "log"), "-o", options, "start"]);
      return p;
    });
    const pid = postmasterPid(data);
    const server: ServerProcess = {
      url: `postgres://ticker@127.0.0.1:${port}/postgres`,
      port,
      pid,
      dir,
      stop: async () => {
        untrack(server);
        let how = "pg_ctl stop: exited";
        try {
          await asPostgres("pg_ctl", ["-D", data, "-m", "fast", "-w", "stop"]);
        } catch {
          // pg_ctl could not stop it (or it was gone): make sure the postmaster is.
          how = await terminate(pid, whenGone(pid), STOP_WAIT_MS_MAX);
        }
        rmSync(dir, { recursive: true, force: true });
        return how;
      },
      killNow: () => {
        untrack(server);
        signal(pid, "SIGKILL");
        rmSync(dir, { recursive: true, force: true });
      },
    };
    return track(server);
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

function postmasterPid(data: string): number {
  const file = join(data, "postmaster.pid");
  return existsSync(file) ? Number(readFileSync(file, "utf8").split("\n")[0]) : NaN;
}

async function mustRun(cmd: string, args: string[], cwd?: string): Promise<void> {
  const r = await run(cmd, args, PG_CTL_TIMEOUT_MS, { cwd });
  if (!r.ok) throw new Error(`${cmd} ${args.join(" ")}: ${r.out}`);
}

function asPostgres(tool: string, args: string[]): Promise<void> {
  const bin = join(PG_BIN, tool);
  // The postgres user may not be allowed into our working directory.
  return isRoot ? mustRun("runuser", ["-u", "postgres", "--", bin, ...args], tmpdir()) : mustRun(bin, args, tmpdir());
}
