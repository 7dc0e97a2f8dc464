// The real Ticker server as a child process, for benchmarks: started on a
// free port, waited for until ready, stopped with SIGTERM (SIGKILL as a last
// resort), and killed on the way out whatever happens to the benchmark.
import { spawn, type ChildProcess } from "node:child_process";
import { appendFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { processMemory } from "./proc.js";

export const SERVER_MAIN = fileURLToPath(new URL("../src/cli/main.js", import.meta.url));
const SERVER_START_TIMEOUT_MS = 30_000;
/** Above the server's default shutdown_timeout_ms (10 s) so SIGKILL is a last resort. */
const SERVER_STOP_TIMEOUT_MS = 15_000;

const liveServers = new Set<BenchServer>();

export interface ServerOptions {
  /** Extra `ticker serve` flags, e.g. ["--shards", "1"]. */
  args?: string[];
}

export class BenchServer {
  port = 0;
  /** Shard threads, from the "listening" line. */
  shardCount = 0;
  protected out = "";
  /** Lines the server wrote to stderr; any of them is worth reporting. */
  readonly errors: string[] = [];
  private exitInfo: string | null = null;
  private readonly exited: Promise<void>;

  protected constructor(
    private readonly proc: ChildProcess,
    readonly dataDir: string,
  ) {
    liveServers.add(this);
    this.exited = new Promise((resolve) =>
      proc.once("exit", (code, signal) => {
        this.exitInfo = signal ? `signal ${signal}` : `code ${code}`;
        liveServers.delete(this);
        resolve();
      }),
    );
  }

  /**
   * Starts `ticker serve` on `dataDir`. TICKER_BENCH_SERVER_FLAGS adds node
   * flags (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof"); TICKER_BENCH_SERVER_LOG
   * names a file that gets the server's stdout (e.g. with --trace-gc).
   */
  static async start(dataDir: string, opts: ServerOptions = {}): Promise<BenchServer> {
    const s = new BenchServer(spawnServer(dataDir, opts), dataDir);
    await s.ready();
    return s;
  }

  protected async ready(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`server not ready in ${SERVER_START_TIMEOUT_MS} ms:\n${this.out}`)), SERVER_START_TIMEOUT_MS);
      const check = () => {
        const m = /ticker listening on \S+:(\d+) \(.*?(\d+) shards\)/.exec(this.out);
        if (m && !this.port) {
          this.port = Number(m[1]);
          this.shardCount = Number(m[2]);
          this.onListening();
        }
        if (this.port && this.out.includes("ticker ready")) {
          clearTimeout(timer);
          resolve();
        }
      };
      this.proc.stdout!.on("data", (c: Buffer) => {
        this.out += c.toString();
        if (process.env.TICKER_BENCH_SERVER_LOG) appendFileSync(process.env.TICKER_BENCH_SERVER_LOG, c);
        check();
      });
      this.proc.stderr!.on("data", (c: Buffer) => {
        this.out += c.toString();
        this.errors.push(...c.toString().split("\n").filter((l) => l.trim() !== ""));
        check();
      });
      void this.exited.then(() => {
        clearTimeout(timer);
        reject(new Error(`server exited (${this.exitInfo}) before ready:\n${this.out}`));
      });
    });
  }

  /** Called once the port is known, before "ready" (subclasses note early facts). */
  protected onListening(): void {}

  get pid(): number {
    return this.proc.pid!;
  }

  /** How the process ended, or null while it runs. */
  get exit(): string | null {
    return this.exitInfo;
  }

  get output(): string {
    return this.out;
  }

  memory(): { peak: number; rss: number } {
    return processMemory(this.pid);
  }

  /** SIGTERM, then SIGKILL if it has not exited in time; returns how it ended. */
  async stop(): Promise<string> {
    if (this.exitInfo) return `had already exited (${this.exitInfo})`;
    process.kill(this.pid, "SIGTERM");
    const timedOut = await Promise.race([this.exited.then(() => false), new Promise<boolean>((r) => setTimeout(() => r(true), SERVER_STOP_TIMEOUT_MS))]);
    if (!timedOut) return `SIGTERM: exited (${this.exitInfo})`;
    process.kill(this.pid, "SIGKILL");
    await this.exited;
    return `SIGTERM ignored for ${SERVER_STOP_TIMEOUT_MS} ms, SIGKILLed`;
  }

  killNow(): void {
    try {
      process.kill(this.pid, "SIGKILL");
    } catch {
      // Already gone.
    }
  }

  outputTail(lines = 15): string {
    return this.out.trimEnd().split("\n").slice(-lines).join("\n");
  }
}

export function spawnServer(dataDir: string, opts: ServerOptions = {}): ChildProcess {
  const nodeFlags = (process.env.TICKER_BENCH_SERVER_FLAGS ?? "").split(" ").filter(Boolean);
  return spawn(process.execPath, [...nodeFlags, SERVER_MAIN, "serve", "--port", "0", "--data-dir", dataDir, ...(opts.args ?? [])], { stdio: ["ignore", "pipe", "pipe"] });
}

/** Kills every server still running (on exit, error or signal). */
export function killAllServers(): void {
  for (const s of liveServers) s.killNow();
}

/**
 * Runs `cleanup` and exits if the benchmark outlives `deadlineMs` or gets
 * SIGINT / SIGTERM; returns the deadline timer, to clear when done.
 */
export function guardRun(name: string, deadlineMs: number, cleanup: () => void): NodeJS.Timeout {
  const deadline = setTimeout(() => {
    console.error(`${name}: run exceeded ${deadlineMs / 60_000} minutes; killing servers and giving up`);
    cleanup();
    process.exit(1);
  }, deadlineMs);
  deadline.unref();
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    process.once(sig, () => {
      cleanup();
      process.exit(130);
    });
  }
  return deadline;
}

/** Runs a benchmark's main and exits with its code; on a throw, cleans up first. */
export function runMain(main: () => Promise<number>, cleanup: () => void): void {
  main().then(
    (code) => process.exit(code),
    (err) => {
      cleanup();
      console.error(err);
      process.exit(1);
    },
  );
}

/** Temp dirs a benchmark made, so that an abort can remove them all. */
export class TempDirs {
  private readonly dirs = new Set<string>();
  constructor(private readonly prefix: string) {}
  make(): string {
    const dir = mkdtempSync(join(tmpdir(), this.prefix));
    this.dirs.add(dir);
    return dir;
  }
  remove(dir: string): void {
    rmSync(dir, { recursive: true, force: true });
    this.dirs.delete(dir);
  }
  removeAll(): void {
    for (const d of this.dirs) this.remove(d);
  }
}
