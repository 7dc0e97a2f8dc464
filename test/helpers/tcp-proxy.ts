// A TCP proxy the test controls, in front of a server (PostgreSQL, S3): it
// forwards bytes both ways until cut(), which stops forwarding on every
// connection without closing them (a partition: packets vanish, nothing
// fails at once) and leaves new connections hanging; heal() forwards again.
// It counts the bytes it forwards from the server.
import { connect, createServer, type Server, type Socket } from "node:net";

export interface TcpProxy {
  port: number;
  /** Bytes forwarded from the server to clients so far. */
  readonly bytesDown: number;
  cut(): void;
  heal(): void;
  close(): Promise<void>;
}

export async function tcpProxy(targetPort: number): Promise<TcpProxy> {
  let open = true;
  let bytesDown = 0;
  const pairs = new Set<{ client: Socket; server: Socket }>();
  const pipe = (from: Socket, to: Socket, down: boolean) =>
    from.on("data", (d: Buffer) => {
      // Bytes that come during a partition are lost, as on a cut link.
      if (!open) return;
      if (down) bytesDown += d.length;
      to.write(d);
    });
  const server: Server = createServer((client) => {
    const upstream = connect(targetPort, "127.0.0.1");
    const pair = { client, server: upstream };
    pairs.add(pair);
    pipe(client, upstream, false);
    pipe(upstream, client, true);
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on("close", end).on("error", end);
    upstream.on("close", end).on("error", end);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("tcp proxy: no port");
  return {
    port: address.port,
    get bytesDown() {
      return bytesDown;
    },
    cut: () => {
      open = false;
    },
    heal: () => {
      // A connection that lost bytes is out of step: the client must make new ones.
      for (const p of pairs) {
        p.client.destroy();
        p.server.destroy();
      }
      open = true;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const p of pairs) {
          p.client.destroy();
          p.server.destroy();
        }
        server.close(() => resolve());
      }),
  };
}
