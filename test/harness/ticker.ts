// The real Ticker server (the dist build) as a child process, for the
// integration tests and the benchmarks: `ticker serve --port 0` on a data
// dir, ready once it has said where it listens and that it is ready, stopped
// with SIGTERM (SIGKILL as a last resort).
import { spawn, type ChildProcess } from "node:child_process";
import { appendFileSync } from "node:fs";
import { join } from "node:path";
import { REPO_ROOT, signal, terminate, track, untrack, type ServerProcess } from "./process.js";

export const TICKER_MAIN = join(REPO_ROOT, "dist", "src", "cli", "main.js");
const READY_TIMEOUT_MS = 30_000;
/** Above the server's default shutdown_timeout_ms (10 s) so SIGKILL is a last resort. */
const STOP_TIMEOUT_MS = 15_000;

export interface TickerOptions {
  /** Extra `ticker serve` flags, e.g. ["--shards", "1"]. */
  args?: string[];
  env?: Record<string, string>;
  /** Node flags before the script, e.g. ["--cpu-prof"]. */
  nodeFlags?: string[];
  /** A file that gets the server's stdout as it comes (e.g. with --trace-gc). */
  stdoutFile?: string;
  readyTimeoutMs?: number;
  /** Called once the port is known, before "ready" (the engine benchmark notes the threads alive then). */
  onListening?: (server: TickerProcess) => void;
}

export class TickerProcess implements ServerProcess {
  port = 0;
  /** Shard threads, from the "listening" line. */
  shardCount = 0;
  /** Everything the server wrote, stdout and stderr. */
  output = "";
  /** Lines the server wrote to stderr, and its log lines at `error` or `fatal`; any of them is worth reporting. */
  readonly errors: string[] = [];
  /** How the process ended ("code 0", "signal SIGKILL"), or null while it runs. */
  exit: string | null = null;
  /** Resolves with `exit` once the process has ended. */
  readonly ended: Promise<string>;

  private constructor(
    readonly proc: ChildProcess,
    /** The data dir: the caller's, kept when the server stops (a restart reads it). */
    readonly dir: string,
  ) {
    this.ended = new Promise((resolve) => proc.once("exit", (code, sig) => resolve((this.exit = sig ? `signal ${sig}` : `code ${code}`))));
    void this.ended.then(() => untrack(this));
  }

  /** Starts `ticker serve` on `dataDir` and resolves once it is ready. */
  static async start(dataDir: string, opts: TickerOptions = {}): Promise<TickerProcess> {
    const proc = spawn(process.execPath, [...(opts.nodeFlags ?? []), TICKER_MAIN, "serve", "--port", "0", "--data-dir", dataDir, ...(opts.args ?? [])], {
      env: { ...process.env, ...opts.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const server = track(new TickerProcess(proc, dataDir));
    try {
      await server.ready(opts);
    } catch (err) {
      server.killNow();
      throw err;
    }
    return server;
  }

  private ready(opts: TickerOptions): Promise<void> {
    const timeoutMs = opts.readyTimeoutMs ?? READY_TIMEOUT_MS;
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`server not ready in ${timeoutMs} ms:\n${this.output}`)), timeoutMs);
      const check = () => {
        const m = /ticker listening on \S+:(\d+) \(.*?(\d+) shards\)/.exec(this.output);
        if (m && !this.port) {
          this.port = Number(m[1]);
          this.shardCount = Number(m[2]);
          opts.onListening?.(this);
        }
        if (this.port && this.output.includes("ticker ready")) {
          clearTimeout(timer);
          resolve();
        }
      };
      this.proc.stdout!.on("data", (c: Buffer) => {
        this.output += c.toString();
        if (opts.stdoutFile) appendFileSync(opts.stdoutFile, c);
        // The log is JSON lines on stdout (src/logger.ts); a chunk may end mid-line, which a
        // line at error level never does alone, so a cut line is simply not counted.
        for (const line of c.toString().split("\n")) if (/^\{"level":"(error|fatal)"/.test(line)) this.errors.push(line);
        check();
      });
      this.proc.stderr!.on("data", (c: Buffer) => {
        this.output += c.toString();
        this.errors.push(
          ...c
            .toString()
            .split("\n")
            .filter((l) => l.trim() !== ""),
        );
        check();
      });
      void this.ended.then(() => {
        clearTimeout(timer);
        reject(new Error(`server exited with ${this.proc.exitCode ?? this.exit} before ready:\n${this.output}`));
      });
    });
  }

  get pid(): number {
    return this.proc.pid!;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** SIGTERM, then SIGKILL if it has not exited in time; says how it ended. */
  stop(): Promise<string> {
    if (this.exit) return Promise.resolve(`had already exited (${this.exit})`);
    return terminate(this.pid, this.ended, STOP_TIMEOUT_MS);
  }

  killNow(): void {
    if (!this.exit) signal(this.pid, "SIGKILL");
  }

  outputTail(lines = 15): string {
    return this.output.trimEnd().split("\n").slice(-lines).join("\n");
  }
}
