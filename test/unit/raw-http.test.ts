import { describe, it, expect } from "vitest";
import { createServer, type Server } from "node:net";
import { RawHttpClient, parseHead } from "../../loadtest/raw-http.js";

/** A TCP server that answers each request line with `respond()`, written in `pieces` byte slices. */
function server(respond: (n: number) => Buffer, pieceBytes: number): Promise<{ s: Server; port: number }> {
  return new Promise((resolve) => {
    const s = createServer((sock) => {
      let n = 0;
      let pending = "";
      sock.on("data", async (d) => {
        pending += d.toString("latin1");
        while (pending.includes("\r\n\r\n")) {
          pending = pending.slice(pending.indexOf("\r\n\r\n") + 4);
          const out = respond(n++);
          for (let i = 0; i < out.length; i += pieceBytes) {
            sock.write(out.subarray(i, i + pieceBytes));
            await new Promise((r) => setImmediate(r));
          }
        }
      });
    });
    s.listen(0, "127.0.0.1", () => resolve({ s, port: (s.address() as { port: number }).port }));
  });
}

const reply = (status: number, body: string) => Buffer.from(`HTTP/1.1 ${status} X\r\nContent-Length: ${Buffer.byteLength(body)}\r\nx: y\r\n\r\n${body}`);

describe("raw HTTP client of the replay benchmark", () => {
  it("reads a response split at every byte, and pipelined responses in order", async () => {
    for (const piece of [1, 3, 7, 1000]) {
      const { s, port } = await server((n) => reply(n === 0 ? 200 : 404, `body ${n} ${"x".repeat(n * 10)}`), piece);
      const c = new RawHttpClient(port, 1);
      const [a, b] = await Promise.all([c.get("/a"), c.get("/b")]);
      expect([a.status, a.body.toString()]).toEqual([200, "body 0 "]);
      expect([b.status, b.body.toString()]).toEqual([404, `body 1 ${"x".repeat(10)}`]);
      c.close();
      s.close();
    }
  });

  it("refuses chunked responses and responses without a length", () => {
    expect(() => parseHead(Buffer.from("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked"))).toThrow(/chunked/);
    expect(() => parseHead(Buffer.from("HTTP/1.1 200 OK\r\nx: y"))).toThrow(/content-length/);
    expect(parseHead(Buffer.from("HTTP/1.1 201 Created\r\ncontent-length: 12"))).toEqual({ status: 201, contentLength: 12 });
  });
});
