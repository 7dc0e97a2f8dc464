// kill -9 during large binary publishes: a batch that was never acknowledged
// must be whole or absent after recovery (the contract: a batch is appended
// whole or not at all). Once, recovery kept e.g. the first 971 of a batch's
// 1,000 events in 4 of 25 cycles: a pwrite interrupted by SIGKILL is short.
import { describe, it, expect, afterAll } from "vitest";
import { decodeEventBatch, decodeRecords, encodePublishBatch } from "../../src/wire/client.js";
import { api, removeDir, startServer, tempDataDir, type TestServer } from "../helpers/server.js";
import { recordResult, scaled } from "./scale.js";

const BATCH_EVENTS = 1000;
// ~12 MB a batch: the server spends most of its time inside the pwrite a kill must interrupt.
const PAYLOAD_BYTES = 12_000;
const PUBLISHERS = 3;

const ID_CHARS = 16;
/**
 * One encoded batch, its events' keys patched per batch: encoding 12 MB of
 * FlatBuffers in the test each time would leave the server idle, and the
 * kill has to land while it writes.
 */
const template = encodePublishBatch(
  Array.from({ length: BATCH_EVENTS }, (_, i) => ({ type: "b", key: "#".repeat(ID_CHARS), payload_bytes: Buffer.alloc(PAYLOAD_BYTES, i & 0xff) })),
);
const keyAt: number[] = [];
for (let at = Buffer.from(template).indexOf("#".repeat(ID_CHARS)); at >= 0; at = Buffer.from(template).indexOf("#".repeat(ID_CHARS), at + ID_CHARS))
  keyAt.push(at);
function batchFor(id: string): Uint8Array {
  const b = Buffer.from(template);
  for (const at of keyAt) b.write(id, at, "latin1");
  return b;
}

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) removeDir(d);
});

describe("kill -9 during large binary batches", () => {
  it(`leaves every batch whole or absent, and every acknowledged batch whole (${scaled(10, 40)} cycles)`, async () => {
    const dataDir = tempDataDir();
    dirs.push(dataDir);
    const cycles = scaled(10, 40);
    const acked = new Set<string>();
    let batchNo = 0;
    let seen = 0;
    let cutBatches = 0; // recoveries that found the start of a torn batch and cut it
    for (let cycle = 0; cycle < cycles; cycle++) {
      const s: TestServer = await startServer({ dataDir });
      if (/records of a batch that was never acknowledged/.test(s.output())) cutBatches++;
      let stop = false;
      let firstAck: () => void = () => {};
      const acking = new Promise<void>((r) => (firstAck = r));
      const publisher = async (p: number) => {
        while (!stop) {
          const id = `${cycle}.${p}.${batchNo++}`.padEnd(ID_CHARS, "-");
          try {
            const r = await api(`${s.url}/v1/streams/torn/events`, "POST", batchFor(id), { "content-type": "application/x-flatbuffers" });
            if (r.status === 200) {
              acked.add(id);
              firstAck();
            }
          } catch {
            return; // killed mid-request: never acknowledged
          }
        }
      };
      const running = Array.from({ length: PUBLISHERS }, (_, p) => publisher(p));
      // Once the publishers are in full flow, at a random moment of it.
      await acking;
      await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 300)));
      await s.kill9();
      stop = true;
      await Promise.all(running);
    }
    const s = await startServer({ dataDir });
    if (/records of a batch that was never acknowledged/.test(s.output())) cutBatches++;
    try {
      // Read back in binary: the stored frames, without a JSON rendering of every megabyte.
      const perBatch = new Map<string, number>();
      let expected = 1;
      for (let from = 1; ; ) {
        const r = await api(`${s.url}/v1/streams/torn/events?from=${from}&limit=10000`, "GET", undefined, { accept: "application/x-flatbuffers" });
        expect(r.status).toBe(200);
        const batch = decodeEventBatch(r.raw);
        if (batch.count === 0) break;
        for (const e of decodeRecords(batch.records)) {
          expect(e.seq).toBe(expected++);
          perBatch.set(e.key!, (perBatch.get(e.key!) ?? 0) + 1);
        }
        from = Number(batch.next);
      }
      const half = [...perBatch].filter(([, n]) => n !== BATCH_EVENTS);
      const lost = [...acked].filter((id) => perBatch.get(id) !== BATCH_EVENTS);
      seen = perBatch.size;
      expect(half, "batches partly on the log").toEqual([]);
      expect(lost, "acknowledged batches not whole on the log").toEqual([]);
      expect(acked.size).toBeGreaterThanOrEqual(cycles);
      recordResult({
        fault: "kill -9 during 1,000-event binary batches",
        setup: `${PUBLISHERS} publishers, ~12 MB FlatBuffers batches, one stream`,
        cases: cycles,
        survived: cycles,
        acked: acked.size * BATCH_EVENTS,
        lost: lost.length * BATCH_EVENTS,
        duplicates: 0,
        gaps: 0,
        other: { "batches on the log": seen, "half batches": half.length, "restarts that cut a torn batch": cutBatches },
      });
    } finally {
      await s.kill9();
    }
  }, 1_200_000);
});
