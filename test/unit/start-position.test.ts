// One start-position rule for replay and consumers, against a real log whose
// head runs ahead of its committed seq (an fsync batch not synced yet): both
// routes resolve a start alike wherever both contracts take it, `latest` is
// the committed seq + 1, and they differ only where their contracts do.
import { describe, it, expect, afterEach } from "vitest";
import fc from "fast-check";
import { StreamLog } from "../../src/log/log.js";
import { ApiError } from "../../src/errors.js";
import { CONSUME_START, REPLAY_START, resolveStart, type StartParams, type StartRules } from "../../src/shard/start-position.js";
import { LOG_OPTS, appendN, removeTempDirs, tempDir } from "../helpers/log-frames.js";

afterEach(removeTempDirs);

type Outcome = { seq: number | null } | { status: number; code: string };

function outcome(log: StreamLog, p: StartParams, rules: StartRules): Outcome {
  try {
    return { seq: resolveStart(log, p, rules) };
  } catch (err) {
    if (!(err instanceof ApiError)) throw err;
    return { status: err.status, code: err.code };
  }
}

describe("where a reader starts", () => {
  it("replay and consume resolve from and from_time alike, latest is the committed seq + 1 on an fsync log with a sync pending, and they differ only when neither is given or from is past the head", async () => {
    const log = new StreamLog(tempDir(), LOG_OPTS);
    log.open();
    appendN(log, 120, { batch: 40, ts: 1_000 }); // seq s has ingest_ts 1000 + s - 1
    appendN(log, 30, { batch: 30, ts: 1_000, durable: true });
    expect([log.committedSeq, log.headSeq]).toEqual([120, 150]);

    const fromTime = fc.oneof(fc.constant(null), fc.integer({ min: 0, max: 2_000 }).map(String));
    const check = (committed: number) => {
      // Seqs at the head's edges as often as anywhere else.
      const seq = fc.oneof(fc.integer({ min: 0, max: 300 }), fc.constantFrom(1, committed, committed + 1, committed + 2, log.headSeq + 1));
      const from = fc.oneof(fc.constant(null), fc.constant("earliest"), fc.constant("latest"), seq.map(String), fc.constant("x"));
      fc.assert(
        fc.property(from, fromTime, (f, t) => {
          const p = { from: f, from_time: t };
          const replay = outcome(log, p, REPLAY_START);
          const consume = outcome(log, p, CONSUME_START);
          if (f === null && t === null) {
            expect(replay).toEqual({ seq: 1 });
            expect(consume).toEqual({ seq: null });
          } else if (t === null && /^\d+$/.test(f!) && Number(f) > committed + 1) {
            expect(replay).toEqual({ seq: Number(f) });
            expect(consume).toEqual({ status: 400, code: "invalid_parameter" });
          } else {
            expect(consume).toEqual(replay);
            if (f !== null && t !== null) expect(replay).toEqual({ status: 400, code: "invalid_parameter" });
            if (f === "latest" && t === null) expect(replay).toEqual({ seq: committed + 1 });
          }
        }),
        { numRuns: 500 },
      );
    };
    check(120);
    // Once the batch is synced, latest moves past it.
    await new Promise<void>((resolve, reject) => log.syncTo(150, (err) => (err ? reject(err) : resolve())));
    expect(log.committedSeq).toBe(150);
    check(150);
    log.close();
  });
});
