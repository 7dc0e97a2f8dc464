import { afterAll, beforeAll, describe, expect, it } from "vitest";
import http from "node:http";
import net from "node:net";
import { HttpRawClient, HttpRawConnection, HttpRawError } from "../../src/client/http.js";

/** A body whose every byte depends on its position, so a misplaced piece shows. */
function pattern(n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + 7) & 255;
  return b;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let upstream: http.Server;
let upstreamPort: number;
/** The client port of every request the node:http server answered, in order. */
const remotePorts: number[] = [];

/**
 * A TCP proxy in front of the node:http server that passes the response
 * bytes on with a pause at each offset in `cuts` (offsets in the byte stream
 * of one connection), so the client reads them in separate pieces.
 */
let proxy: net.Server;
let proxyPort: number;
let cuts: number[] = [];
let forwarded = 0;

beforeAll(async () => {
  upstream = http.createServer((req, res) => {
    remotePorts.push(req.socket.remotePort!);
    const url = new URL(req.url!, "http://x");
    if (url.pathname === "/page") {
      const body = pattern(Number(url.searchParams.get("n")));
      res.writeHead(200, { "content-type": "application/octet-stream", "content-length": body.length });
      res.end(body);
    } else if (url.pathname === "/echo-accept") {
      const body = Buffer.from(String(req.headers.accept));
      res.writeHead(200, { "content-length": body.length });
      res.end(body);
    } else if (url.pathname === "/empty") {
      res.writeHead(200, { "content-length": 0 });
      res.end();
    } else if (url.pathname === "/chunked") {
      // No content-length: node:http sends Transfer-Encoding: chunked.
      res.writeHead(200, { "content-type": "text/plain" });
      res.write("part one, ");
      res.end("part two");
    } else {
      const body = Buffer.from(`no ${url.pathname} here`);
      res.writeHead(404, { "content-length": body.length });
      res.end(body);
    }
  });
  await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", r));
  upstreamPort = (upstream.address() as net.AddressInfo).port;

  proxy = net.createServer((client) => {
    client.setNoDelay(true);
    const up = net.connect(upstreamPort, "127.0.0.1");
    up.setNoDelay(true);
    client.pipe(up);
    const myCuts = [...cuts];
    let offset = 0;
    let pump = Promise.resolve();
    up.on("data", (chunk: Buffer) => {
      pump = pump.then(async () => {
        let at = 0;
        while (at < chunk.length) {
          const cut = myCuts.find((c) => c > offset);
          const take = cut === undefined ? chunk.length - at : Math.min(chunk.length - at, cut - offset);
          client.write(chunk.subarray(at, at + take));
          at += take;
          offset += take;
          forwarded += take;
          if (offset === cut) await sleep(2);
        }
      });
    });
    up.on("end", () => void pump.then(() => client.end()));
    client.on("error", () => up.destroy());
    up.on("error", () => client.destroy());
  });
  await new Promise<void>((r) => proxy.listen(0, "127.0.0.1", r));
  proxyPort = (proxy.address() as net.AddressInfo).port;
});

afterAll(async () => {
  upstream.closeAllConnections();
  await new Promise((r) => proxy.close(r));
  await new Promise((r) => upstream.close(r));
});

describe("raw HTTP/1.1 client of the replay benchmark (src/client/http.ts)", () => {
  it("parses a response split at every byte boundary whole", async () => {
    const body = pattern(64);
    // The response's length on the wire, as node:http writes it.
    cuts = [];
    forwarded = 0;
    const whole = await HttpRawConnection.connect(proxyPort);
    expect((await whole.get("/page?n=64")).body.equals(body)).toBe(true);
    whole.close();
    const length = forwarded;
    expect(length).toBeGreaterThan(64 + 40);

    // Two pieces, cut at each offset in turn (inside the status line, the headers, the blank line, the body).
    for (let k = 1; k < length; k++) {
      cuts = [k];
      const c = await HttpRawConnection.connect(proxyPort);
      const r = await c.get("/page?n=64");
      expect([k, r.status, r.body.length]).toEqual([k, 200, 64]);
      expect(r.body.equals(body)).toBe(true);
      c.close();
    }

    // One byte at a time, and two pipelined responses so the cuts also fall across the second head.
    cuts = Array.from({ length: 2 * length }, (_, i) => i + 1);
    const c = await HttpRawConnection.connect(proxyPort);
    const [a, b] = await Promise.all([c.get("/page?n=64"), c.get("/page?n=64")]);
    expect(a.body.equals(body) && b.body.equals(body)).toBe(true);
    c.close();
  });

  it("reads a large body split anywhere, straight into its buffer", async () => {
    const n = 3 * 1024 * 1024 + 5;
    cuts = [1, 17, 40, 200, 65_536, 65_537, 1_000_000, n];
    const c = await HttpRawConnection.connect(proxyPort);
    const r = await c.get(`/page?n=${n}`);
    expect(r.status).toBe(200);
    expect(r.body.equals(pattern(n))).toBe(true);
    c.close();
  });

  it("returns status and body of pipelined responses in order", async () => {
    const c = await HttpRawConnection.connect(upstreamPort);
    const replies = await Promise.all([
      c.get("/page?n=300000"),
      c.get("/missing"),
      c.get("/empty"),
      c.get("/echo-accept", { Accept: "application/x-flatbuffers" }),
      c.get("/page?n=10"),
    ]);
    expect(replies.map((r) => r.status)).toEqual([200, 404, 200, 200, 200]);
    expect(replies[0].body.equals(pattern(300_000))).toBe(true);
    expect(replies[1].body.toString()).toBe("no /missing here");
    expect(replies[2].body.length).toBe(0);
    expect(replies[3].body.toString()).toBe("application/x-flatbuffers");
    expect(replies[4].body.equals(pattern(10))).toBe(true);
    // Keep-alive: a later request reuses the connection.
    expect((await c.get("/page?n=3")).body.equals(pattern(3))).toBe(true);
    c.close();
  });

  it("puts one request on each socket when as many are in flight as there are sockets", async () => {
    const c = await HttpRawClient.connect(upstreamPort, 4);
    remotePorts.length = 0;
    const replies = await Promise.all([1, 2, 3, 4].map((i) => c.get(`/page?n=${i * 1000}`)));
    expect(replies.map((r) => r.body.length)).toEqual([1000, 2000, 3000, 4000]);
    expect(new Set(remotePorts).size).toBe(4);
    c.close();
  });

  it("rejects a chunked response with a clear error, and everything after it on that connection", async () => {
    const c = await HttpRawConnection.connect(upstreamPort);
    const chunked = c.get("/chunked");
    const after = c.get("/page?n=10");
    await expect(chunked).rejects.toThrow(HttpRawError);
    await expect(chunked).rejects.toThrow(/Transfer-Encoding: chunked.*not supported/);
    await expect(after).rejects.toThrow(/chunked/);
    await expect(c.get("/page?n=10")).rejects.toThrow(/chunked/);
    c.close();
  });
});
