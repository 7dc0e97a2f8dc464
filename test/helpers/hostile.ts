// Tools for hostile-input tests against a real server: many requests at once
// over kept-alive connections (paths and bodies sent as given, not
// normalised), single requests as raw bytes on a fresh socket, the
// contract's answer checks, and a ledger of what the server acknowledged so a
// test can prove that rejected requests changed nothing.
import { Agent, request as httpRequest } from "node:http";
import { connect } from "node:net";
import { expect } from "vitest";

export interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  raw: Buffer;
  json: any;
  ms: number;
}

/** A request that got no answer within the bound is a hang: the test fails naming it. */
export const ANSWER_MS_MAX = 15_000;

/** HTTP over a pool of kept-alive connections (node:http sends the path verbatim). */
export class Client {
  private readonly agent: Agent;
  constructor(
    readonly port: number,
    sockets = 32,
  ) {
    // Idle sockets are dropped after 5 s, before uWS's 10 s idle timer closes
    // them under a request the agent just put on them ("socket hang up").
    this.agent = new Agent({ keepAlive: true, maxSockets: sockets, timeout: 5000 });
  }

  send(method: string, path: string, body?: Uint8Array | string, headers: Record<string, string | number> = {}): Promise<Answer> {
    const t0 = performance.now();
    return new Promise((resolve, reject) => {
      const req = httpRequest({ host: "127.0.0.1", port: this.port, method, path, headers, agent: this.agent }, (res) => {
        const parts: Buffer[] = [];
        res.on("data", (c: Buffer) => parts.push(c));
        res.on("error", reject);
        res.on("end", () => {
          const raw = Buffer.concat(parts);
          const ct = String(res.headers["content-type"] ?? "");
          let json: any = null;
          if (ct.includes("json") && raw.length > 0) json = JSON.parse(raw.toString("utf8"));
          resolve({ status: res.statusCode ?? 0, headers: res.headers, raw, json, ms: performance.now() - t0 });
        });
      });
      req.setTimeout(ANSWER_MS_MAX, () => req.destroy(new Error(`no answer within ${ANSWER_MS_MAX} ms: ${method} ${path.slice(0, 200)}`)));
      req.on("error", reject);
      req.end(body === undefined ? undefined : Buffer.from(body as Uint8Array));
    });
  }

  close(): void {
    this.agent.destroy();
  }
}

export interface RawAnswer {
  /** 0 when the server closed the connection without answering. */
  status: number;
  head: string;
  body: Buffer;
  json: any;
  ms: number;
}

/**
 * Writes `bytes` on a fresh connection and reads one answer (or the close).
 * For what node:http refuses to send: length lies, bad header bytes, huge headers.
 */
export function rawExchange(port: number, bytes: Buffer, timeoutMs = ANSWER_MS_MAX): Promise<RawAnswer> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const sock = connect(port, "127.0.0.1");
    let buf = Buffer.alloc(0);
    let settled = false;
    const finish = (a: RawAnswer | Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      if (a instanceof Error) reject(a);
      else resolve(a);
    };
    const timer = setTimeout(
      () => finish(new Error(`no answer or close within ${timeoutMs} ms for ${JSON.stringify(bytes.subarray(0, 120).toString("latin1"))}`)),
      timeoutMs,
    );
    const parse = (closed: boolean) => {
      const end = buf.indexOf("\r\n\r\n");
      if (end < 0) {
        if (closed) finish({ status: 0, head: buf.toString("latin1"), body: Buffer.alloc(0), json: null, ms: performance.now() - t0 });
        return;
      }
      const head = buf.subarray(0, end).toString("latin1");
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? -1);
      const len = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? -1);
      const body = buf.subarray(end + 4);
      if (len >= 0 ? body.length < len : !closed) return;
      const b = len >= 0 ? body.subarray(0, len) : body;
      let json: any = null;
      if (/\r\ncontent-type: *application\/json/i.test(head) && b.length > 0) json = JSON.parse(b.toString("utf8"));
      finish({ status, head, body: b, json, ms: performance.now() - t0 });
    };
    sock.on("connect", () => sock.write(bytes));
    sock.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      parse(false);
    });
    sock.on("error", () => parse(true));
    sock.on("close", () => parse(true));
  });
}

/** Runs `fn` over `items`, at most `concurrency` at once, in order of starting. */
export async function inBatches<T, R>(items: T[], concurrency: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i], i);
      }
    }),
  );
  return out;
}

/**
 * The contract's answer: a status from `allowed`; an error is JSON
 * {"error": {"code", "message"}}, and a 429 says when to retry.
 */
export function expectContract(
  a: { status: number; json: any; raw?: Buffer; body?: Buffer; headers?: Record<string, unknown>; head?: string },
  allowed: number[],
  what: string,
): void {
  const text = (a.raw ?? a.body ?? Buffer.alloc(0)).toString("utf8").slice(0, 300);
  const detail = `${what}: ${a.status} ${text}`;
  expect(allowed, detail).toContain(a.status);
  if (a.status >= 400) {
    expect(a.json?.error?.code, detail).toMatch(/^[a-z_]+$/);
    expect(typeof a.json.error.message === "string" && a.json.error.message.length > 0, detail).toBe(true);
    if (a.status === 429) {
      const retry = a.headers ? a.headers["retry-after"] : /\r\nretry-after: *(\d+)/i.exec(a.head ?? "")?.[1];
      expect(retry, detail).toMatch(/^\d+$/);
    }
  }
}

/**
 * What the server acknowledged per stream: the seq ranges of accepted
 * publishes. At the end they must tile 1..head_seq exactly (nothing appended
 * by a rejected request, nothing lost or doubled by an accepted one).
 */
export class Ledger {
  private readonly ranges = new Map<string, Array<[number, number]>>();

  accepted(stream: string, json: { first_seq: number; last_seq: number; count: number }): void {
    expect(json.last_seq - json.first_seq + 1 === json.count || json.count === 0, `publish answer ${JSON.stringify(json)}`).toBe(true);
    if (json.count === 0) return;
    let r = this.ranges.get(stream);
    if (!r) this.ranges.set(stream, (r = []));
    r.push([json.first_seq, json.last_seq]);
  }

  /** Every stream the ledger knows: its ranges tile 1..head_seq and replay holds exactly head_seq events. */
  async verify(client: Client, streams: Iterable<string>, pageEvents = 50): Promise<number> {
    let events = 0;
    for (const stream of streams) {
      const ranges = (this.ranges.get(stream) ?? []).slice().sort((a, b) => a[0] - b[0]);
      let expectNext = 1;
      for (const [first, last] of ranges) {
        expect(first, `${stream}: accepted ranges overlap or leave a gap at ${expectNext}`).toBe(expectNext);
        expectNext = last + 1;
      }
      const info = await client.send("GET", `/v1/streams/${stream}`);
      if (ranges.length === 0 && info.status === 404) continue;
      expect(info.status, `${stream} info`).toBe(200);
      expect(info.json.head_seq, `${stream}: head_seq against the acknowledged publishes`).toBe(expectNext - 1);
      let seen = 0;
      for (let from = 1; ; ) {
        const page = await client.send("GET", `/v1/streams/${stream}/events?from=${from}&limit=${pageEvents}`);
        expect(page.status).toBe(200);
        for (const e of page.json.events) expect(e.seq, `${stream}: replay in seq order, gap-free`).toBe(++seen);
        if (page.json.events.length === 0) break;
        from = page.json.next;
      }
      expect(seen, `${stream}: replayed events`).toBe(expectNext - 1);
      events += seen;
    }
    return events;
  }
}

/** Bytes, as a fast-check-friendly hex for failure messages. */
export const preview = (b: Uint8Array | string) =>
  JSON.stringify(
    Buffer.from(b as Uint8Array)
      .subarray(0, 160)
      .toString("latin1"),
  );
