// Starts the real server (dist build) as a child process for integration tests.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll } from "vitest";
import { Ticker } from "../../src/client/index.js";
import { TICKER_MAIN as MAIN, TickerProcess } from "../harness/ticker.js";
import { noteAnswer } from "./openapi-check.js";

export interface TestServer {
  url: string;
  port: number;
  dataDir: string;
  proc: ChildProcess;
  output: () => string;
  /** SIGTERM and wait for exit; resolves with the exit code. */
  stop: () => Promise<number | null>;
  /** SIGKILL and wait for exit. */
  kill9: () => Promise<void>;
}

export function tempDataDir(prefix = "ticker-test-"): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/** Starts `ticker serve` on a free port and resolves once it is ready. */
export async function startServer(opts: { dataDir?: string; args?: string[]; env?: Record<string, string> } = {}): Promise<TestServer> {
  const dataDir = opts.dataDir ?? tempDataDir();
  const s = await TickerProcess.start(dataDir, { args: opts.args, env: opts.env, readyTimeoutMs: 20_000 });
  const exited = s.ended.then(() => s.proc.exitCode);
  return {
    url: s.url,
    port: s.port,
    dataDir,
    proc: s.proc,
    output: () => s.output,
    stop: async () => {
      s.proc.kill("SIGTERM");
      return exited;
    },
    kill9: async () => {
      s.proc.kill("SIGKILL");
      await exited;
    },
  };
}

/**
 * The servers and data dirs of a test file's tests: whatever a test started
 * is killed, and the dirs it made removed, after it. `start` starts and
 * tracks a server on `dataDir`, `dir` makes a tracked data dir, `track`
 * takes a server started otherwise.
 */
export function perTestServers() {
  const servers: TestServer[] = [];
  const dirs: string[] = [];
  afterEach(async () => {
    for (const s of servers.splice(0)) if (s.proc.exitCode === null && s.proc.signalCode === null) await s.kill9();
    for (const d of dirs.splice(0)) removeDir(d);
  });
  const track = (s: TestServer): TestServer => {
    servers.push(s);
    return s;
  };
  return {
    start: async (dataDir: string, args: string[] = []) => track(await startServer({ dataDir, args })),
    track,
    dir: (): string => {
      const d = tempDataDir();
      dirs.push(d);
      return d;
    },
  };
}

/** Runs `ticker serve` that is expected to refuse to start; resolves with its exit code and output. */
export function serveExpectingExit(args: string[], timeoutMs = 15_000): Promise<{ code: number | null; output: string; ms: number }> {
  const t0 = Date.now();
  const proc = spawn(process.execPath, [MAIN, "serve", ...args], { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  proc.stdout!.on("data", (c: Buffer) => (output += c.toString()));
  proc.stderr!.on("data", (c: Buffer) => (output += c.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill("SIGKILL");
      reject(new Error(`server did not exit within ${timeoutMs} ms:\n${output}`));
    }, timeoutMs);
    proc.once("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, output, ms: Date.now() - t0 });
    });
  });
}

/** JSON request helper: returns status, headers and parsed body (or null); checked against /openapi.json in a file that asked for it (openapi-check.ts). */
export async function api(
  url: string,
  method: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Headers; json: any; raw: Uint8Array }> {
  const init: RequestInit = { method, headers: { ...headers } };
  if (body !== undefined) {
    if (body instanceof Uint8Array || typeof body === "string") init.body = body as BodyInit;
    else {
      init.body = JSON.stringify(body);
      (init.headers as Record<string, string>)["content-type"] ??= "application/json";
    }
  }
  const res = await fetch(url, init);
  const raw = new Uint8Array(await res.arrayBuffer());
  await noteAnswer({ method, url, status: res.status, headers: res.headers, body: raw });
  let json: any = null;
  const ct = res.headers.get("content-type") ?? "";
  if (ct.includes("json") && raw.byteLength > 0) json = JSON.parse(Buffer.from(raw).toString("utf8"));
  return { status: res.status, headers: res.headers, json, raw };
}

/** Every event of a stream as JSON, following `next` page by page. */
export async function replayAll(url: string, stream: string, from = 1, limit = 10_000): Promise<any[]> {
  const events: any[] = [];
  let next = from;
  for (;;) {
    const r = await api(`${url}/v1/streams/${stream}/events?from=${next}&limit=${limit}`, "GET");
    if (r.status !== 200) throw new Error(`replay of ${stream} from ${next}: ${r.status} ${JSON.stringify(r.json)}`);
    if (r.json.events.length === 0) return events;
    events.push(...r.json.events);
    next = r.json.next;
  }
}

/**
 * A server and a ticker/client on it for the tests of one describe block:
 * started before them, closed and removed after. Read `server` and `client`
 * inside the tests (they are set once the block starts).
 */
export function serverWithClient(opts: Parameters<typeof startServer>[0] = {}): { readonly server: TestServer; readonly client: Ticker } {
  const env = {} as { server: TestServer; client: Ticker };
  beforeAll(async () => {
    env.server = await startServer(opts);
    env.client = new Ticker({ url: env.server.url });
  });
  afterAll(async () => {
    env.client?.close();
    await env.server?.stop();
    if (env.server) removeDir(env.server.dataDir);
  });
  return env;
}
