// A child process of bench-consume holding a share of the fan-out
// consumers, so that they can run on the other core than the benchmark's
// own main thread. Driven over IPC by bench-consume; exits when it
// disconnects.
import { encodeHistogram, wallNow, type Window } from "../lib/latency.js";
import { WsConsumerSet, type ConsumerSetResult, type WsSetSpec } from "../systems/ticker.js";

export type HostRequest =
  | { type: "connect"; spec: WsSetSpec }
  | { type: "window"; window: Window }
  | { type: "clock" }
  | { type: "finish"; last: number; timeoutMs: number };

export type HostReply =
  | { type: "connected" }
  | { type: "clock"; t: number }
  | { type: "failed"; message: string }
  | (Omit<ConsumerSetResult, "hist"> & {
      type: "result";
      caughtUp: boolean;
      /** The latency histogram, encoded (encodeHistogram). */
      hist: string;
    });

const send = (m: HostReply) => process.send!(m);
let set: WsConsumerSet | null = null;

process.on("message", (m: HostRequest) => {
  switch (m.type) {
    case "clock":
      return send({ type: "clock", t: wallNow() });
    case "connect":
      set = new WsConsumerSet(m.spec);
      set.connect().then(
        () => send({ type: "connected" }),
        (err: Error) => send({ type: "failed", message: err.message }),
      );
      return;
    case "window":
      set!.window = m.window;
      return;
    case "finish": {
      const s = set!;
      void s.waitFor(m.last, m.timeoutMs).then((caughtUp) => {
        const r = s.result();
        s.close();
        send({ ...r, type: "result", caughtUp, hist: encodeHistogram(r.hist) });
      });
      return;
    }
  }
});
process.on("disconnect", () => process.exit(0));
