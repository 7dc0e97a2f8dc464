// An HTTP/1.1 proxy in front of a real server that loses answers on
// purpose: each request goes upstream on a connection of its own, and a
// policy decides, per request, to pass it, to close the client's
// connection before sending it upstream (lost on the way in), to send it
// and close without the answer (it landed; the answer is lost), or to close
// at once and send it upstream only later (it may land after the client
// tried again). The client's own retries then meet every kind of lost answer.
import { connect, createServer, type Server, type Socket } from "node:net";

export type Action = "pass" | "lose-request" | "lose-answer" | { late: number };

export interface ProxyRequest {
  method: string;
  path: string;
}

/** One whole request or response at the start of `buf` (Content-Length bodies only), or null. */
function message(buf: Buffer): Buffer | null {
  const end = buf.indexOf("\r\n\r\n");
  if (end < 0) return null;
  const m = /content-length:\s*(\d+)/i.exec(buf.toString("latin1", 0, end));
  const total = end + 4 + (m ? Number(m[1]) : 0);
  return buf.length >= total ? buf.subarray(0, total) : null;
}

function upstream(port: number, request: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = connect(port, "127.0.0.1");
    let acc = Buffer.alloc(0);
    s.on("data", (d: Buffer) => {
      acc = Buffer.concat([acc, d]);
      const m = message(acc);
      if (m) {
        s.destroy();
        resolve(Buffer.from(m));
      }
    });
    s.on("error", reject);
    s.write(request);
  });
}

export class AnswerProxy {
  /** "METHOD path -> what happened", in order. */
  readonly log: string[] = [];
  port = 0;
  private readonly late: Array<Promise<unknown>> = [];
  private readonly server: Server;

  private constructor(
    private readonly targetPort: number,
    private readonly policy: (r: ProxyRequest) => Action,
  ) {
    this.server = createServer((c) => this.serve(c));
  }

  static start(targetPort: number, policy: (r: ProxyRequest) => Action): Promise<AnswerProxy> {
    const proxy = new AnswerProxy(targetPort, policy);
    return new Promise((resolve) =>
      proxy.server.listen(0, "127.0.0.1", () => {
        proxy.port = (proxy.server.address() as { port: number }).port;
        resolve(proxy);
      }),
    );
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Waits for the requests sent late to have reached the server. */
  async settled(): Promise<void> {
    await Promise.allSettled(this.late);
  }

  close(): void {
    this.server.close();
  }

  /** One client connection: its requests one at a time, each as the policy says. */
  private serve(c: Socket): void {
    let acc = Buffer.alloc(0);
    let busy = false;
    c.on("error", () => undefined);
    const pump = async (): Promise<void> => {
      const m = busy ? null : message(acc);
      if (m === null) return;
      busy = true;
      acc = acc.subarray(m.length);
      const request = Buffer.from(m);
      const [method, path] = request.toString("latin1", 0, 300).split(" ");
      const action = this.policy({ method, path });
      const entry = `${method} ${path}`;
      if (action === "lose-request") {
        this.log.push(`${entry} -> request lost`);
        return void c.destroy();
      }
      if (typeof action === "object") {
        this.log.push(`${entry} -> sent late`);
        c.destroy();
        this.late.push(new Promise((r) => setTimeout(r, action.late)).then(() => upstream(this.targetPort, request)));
        return;
      }
      const answer = await upstream(this.targetPort, request);
      this.log.push(`${entry} -> ${answer.toString("latin1", 9, 12)}${action === "lose-answer" ? ", answer lost" : ""}`);
      if (action === "lose-answer") return void c.destroy();
      c.write(answer);
      busy = false;
      void pump();
    };
    c.on("data", (d: Buffer) => {
      acc = Buffer.concat([acc, d]);
      void pump();
    });
  }
}
