// Recovery from any damage to a real data dir: property tests over the files
// a real server wrote. In-process (the stream's own open path: its description,
// checkpoints, the log's recovery, the dedup rebuild) for the bulk of the
// cases, and a sample end to end through a real server restart.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { CorruptRecordError } from "../../src/log/log.js";
import { frameSeq, frameBytesFor, markBatchEnd, sealFrame, writeFrameHeader, RECORD_HEADER_BYTES } from "../../src/log/record.js";
import { Stream } from "../../src/shard/stream.js";
import { fullConfig } from "../../src/shard/stream-config.js";
import { readMeta } from "../../src/shard/stream-meta.js";
import { Descriptions, MAIN_FILE } from "../../src/shard/descriptions.js";
import { recordIdempotencyKey } from "../../src/wire/event-codec.js";
import { EventFields } from "../../src/wire/event-layout.js";
import { api, startServer } from "../helpers/server.js";
import {
  GROUPS,
  LOG_OPTS,
  STREAM_DEFAULTS,
  SERVER_ARGS,
  STREAM,
  applyDamage,
  buildFixture,
  damageArb,
  expect_,
  writeStreamDir,
  type Damage,
  type Fixture,
} from "./damage.js";
import { LONG, recordResult, scaled } from "./scale.js";

const DEFAULTS = STREAM_DEFAULTS;
const E2E_CONCURRENCY = 2;
/** Liveness bound on one recovery of the ~100 KB fixture (the rate per GiB is measured separately). */
const OPEN_MS_MAX = 5_000;

let fx: Fixture;
const scratch: string[] = [];
beforeAll(async () => {
  fx = await buildFixture();
}, 60_000);
afterAll(() => {
  for (const d of scratch) rmSync(d, { recursive: true, force: true });
});

interface Outcome {
  served: Map<number, Buffer>;
  reported: boolean;
  headSeq: number;
  checkpoints: Map<string, number>;
  openMs: number;
}

/** Recovers a damaged copy in-process, reads everything that can be read, then appends. */
function recoverInProcess(root: string, d: Damage): Outcome {
  const damaged = applyDamage(fx, d);
  // Every file is written again, so what the last case's recovery changed is undone.
  const dir = writeStreamDir(fx, root, d, damaged);
  const t0 = performance.now();
  const copies = new Descriptions(root);
  const read = readMeta(dir, () => fullConfig({}, DEFAULTS), copies);
  expect(read, "the description and its copy both unreadable from one damage").not.toBeNull();
  // No roll on the test's own append: the directory keeps the fixture's files only.
  const { stream, report } = Stream.open(dir, read!, { ...LOG_OPTS, segmentBytesMax: 1 << 30 }, 1_000_000, DEFAULTS, copies);
  const openMs = performance.now() - t0;
  try {
    expect(stream.id).toBe(STREAM);
    expect(stream.config).toEqual(fx.info && pickConfig(fx.info));
    const log = stream.log;
    const served = new Map<number, Buffer>();
    let readDamage = false;
    const out = Buffer.alloc(1 << 20);
    // Every seq that can be read, stepping over the ones that cannot.
    for (let seq = log.firstSeq; seq <= log.headSeq; ) {
      let page;
      try {
        page = log.read(seq, log.headSeq, 1000, 256 * 1024, out);
      } catch (err) {
        if (!(err instanceof CorruptRecordError)) throw err;
        readDamage = true;
        seq++;
        continue;
      }
      let at = 0;
      for (let i = 0; i < page.count; i++) {
        const fb = page.buf.readUInt32LE(at);
        served.set(frameSeq(page.buf, at), Buffer.from(page.buf.subarray(at, at + fb)));
        at += fb;
      }
      if (page.corrupt) readDamage = true;
      seq = page.count > 0 ? page.next : seq + 1;
    }
    // The dedup window holds exactly the keys of what can be served.
    // (Plain checks, one expect: vitest's expect costs microseconds a call.)
    const fields = new EventFields();
    const wrongKeys: string[] = [];
    for (const [seq, bytes] of served) {
      const key = recordIdempotencyKey(bytes, 0, fields);
      if (key !== null && stream.dedup.get(key) !== seq) wrongKeys.push(`${key} of seq ${seq} -> ${stream.dedup.get(key)}`);
    }
    for (const [key, seq] of fx.keys) if (!served.has(seq) && stream.dedup.get(key) !== undefined) wrongKeys.push(`${key} of unserved seq ${seq}`);
    expect(wrongKeys.slice(0, 5), "dedup window after recovery").toEqual([]);
    const checkpoints = new Map<string, number>();
    for (const g of GROUPS) {
      const c = stream.checkpoints.get(g);
      if (c) checkpoints.set(g, c.seq);
    }
    // Publishing goes on at the next seq, and reads back.
    const headSeq = log.headSeq;
    const bodyBytes = 64;
    const fb = frameBytesFor(bodyBytes);
    const frame = Buffer.alloc(fb);
    writeFrameHeader(frame, 0, fb, bodyBytes, headSeq + 1, Math.max(Date.now(), log.lastTs));
    frame.fill(0x11, RECORD_HEADER_BYTES, RECORD_HEADER_BYTES + bodyBytes);
    sealFrame(frame, 0, fb);
    markBatchEnd(frame, 0);
    log.append(frame, fb, 1, false);
    const back = log.read(headSeq + 1, headSeq + 1, 1, fb, out);
    expect(back.count).toBe(1);
    expect(Buffer.compare(back.buf.subarray(0, fb), frame)).toBe(0);
    const reported = report.truncatedBytes > 0 || report.corruptions.length > 0 || report.rebuiltIndexes > 0 || report.files.length > 0 || readDamage;
    return { served, reported, headSeq, checkpoints, openMs };
  } finally {
    stream.close();
    copies.close();
  }
}

function pickConfig(info: Record<string, unknown>) {
  const { retention_ms, retention_bytes, max_event_bytes, dedup_window_ms, durability, producer_ordering, gap_timeout_ms } = info;
  return { retention_ms, retention_bytes, max_event_bytes, dedup_window_ms, durability, producer_ordering, gap_timeout_ms };
}

/**
 * The record as written, or as written with the commit mark added: recovery
 * marks the last record it keeps past a damaged mark (its CRC word is then
 * complemented; every other byte is the same).
 */
function sameRecord(served: Buffer, written: Buffer): boolean {
  if (served.equals(written)) return true;
  if (served.length !== written.length || served.readUInt32LE(4) !== ~written.readUInt32LE(4) >>> 0) return false;
  return served.subarray(0, 4).equals(written.subarray(0, 4)) && served.subarray(8).equals(written.subarray(8));
}

/** The promises every case must keep, given what was recovered. */
function checkOutcome(d: Damage, o: Outcome): void {
  const damaged = applyDamage(fx, d);
  const want = expect_(fx, d, damaged);
  // Nothing damaged or invented is served: every record is byte for byte one that was written.
  const wrong: number[] = [];
  for (const [seq, bytes] of o.served) {
    const orig = fx.records.get(seq);
    if (!orig || !sameRecord(bytes, orig.bytes)) wrong.push(seq);
  }
  expect(wrong.slice(0, 10), "seqs served with bytes that were never written").toEqual([]);
  // Everything before the damage is served.
  const missing = [...want.mustServe].filter((s) => !o.served.has(s));
  expect(missing.slice(0, 10), `records before the damage not served`).toEqual([]);
  // The next seq follows everything served (gap-free numbering goes on).
  expect(Math.max(0, ...o.served.keys())).toBeLessThanOrEqual(o.headSeq);
  // What was lost was reported, unless the damage looks exactly like a clean log.
  if (o.served.size < fx.records.size && !want.undetectable) expect(o.reported, "damage that cost records was not reported").toBe(true);
  const changed = !damaged.equals(fx.files.get(d.file)!);
  if (changed && (d.file.endsWith(".idx") || d.file.endsWith(".tidx"))) expect(o.reported, "a damaged index was not noticed").toBe(true);
  // The stream's line of the main description file, not what follows it (garbage after it is
  // some line's damage, reported by the start-up rewrite of the files, not by this stream's open).
  const lineOf = (b: Buffer) => b.toString("latin1").split("\n")[0];
  if (d.file === MAIN_FILE && lineOf(damaged) !== lineOf(fx.files.get(d.file)!)) expect(o.reported, "a damaged description was not noticed").toBe(true);
  expect(o.checkpoints).toEqual(want.checkpoints);
  expect(o.openMs).toBeLessThan(OPEN_MS_MAX);
}

describe("recovery from damage to any file of a real data dir", () => {
  it(`in-process: truncation, garbage, crafted frames and bit flips anywhere never lose a record before the damage nor serve a damaged one (${scaled(2000, 50000)} cases)`, () => {
    const root = scratchDir("ticker-damage-");
    scratch.push(root);
    const kinds = new Map<string, number>();
    let openMsMax = 0;
    let cases = 0;
    fc.assert(
      fc.property(damageArb(fx), (d) => {
        const o = recoverInProcess(root, d);
        checkOutcome(d, o);
        const k = `${d.kind}:${d.file.replace(/^\d{20}/, "")}`;
        kinds.set(k, (kinds.get(k) ?? 0) + 1);
        openMsMax = Math.max(openMsMax, o.openMs);
        cases++;
      }),
      { numRuns: scaled(2000, 50000), seed: LONG ? undefined : 20261201 },
    );
    // Every kind of damage to every kind of file was tried.
    for (const k of ["truncate", "flip", "garbage"])
      for (const f of [".log", ".idx", ".tidx", "stream-descriptions.log", "stream-descriptions.copy.log", "checkpoints.log"])
        expect(kinds.get(`${k}:${f}`) ?? 0, `${k} of ${f}`).toBeGreaterThan(0);
    expect(kinds.get("frame:.log") ?? 0).toBeGreaterThan(0);
    recordResult({
      fault: "damaged files, recovered in-process",
      setup: `${fx.logs.length} segments, ${fx.records.size} records, idx/tidx, its description and copy, checkpoints of 3 groups`,
      cases,
      survived: cases,
      acked: fx.records.size,
      lost: 0,
      duplicates: 0,
      gaps: 0,
      bounds: { "slowest recovery ms": Math.round(openMsMax) },
    });
  }, 1_200_000);

  it(`end to end: a real server restarts on a damaged data dir, is ready, serves what it must, reports what it found and publishes at the next seq (${scaled(50, 500)} cases)`, async () => {
    const samples = fc.sample(damageArb(fx), { numRuns: scaled(50, 500), seed: LONG ? Date.now() : 1201 });
    let readyMsMax = 0;
    // Two servers at a time: each case is mostly a process start.
    const runCase = async (d: Damage) => {
      const root = scratchDir("ticker-damage-e2e-");
      try {
        writeStreamDir(fx, root, d, applyDamage(fx, d));
        const t0 = Date.now();
        const s = await startServer({ dataDir: root, args: SERVER_ARGS });
        readyMsMax = Math.max(readyMsMax, Date.now() - t0);
        try {
          const want = expect_(fx, d, applyDamage(fx, d));
          const served = new Map<number, any>();
          const info = (await api(`${s.url}/v1/streams/${STREAM}`, "GET")).json;
          for (let seq = info.first_seq; seq <= info.head_seq; ) {
            const r = await api(`${s.url}/v1/streams/${STREAM}/events?from=${seq}&limit=1000`, "GET");
            if (r.status === 500) {
              expect(r.json.error.code).toBe("corrupt_record");
              seq = r.json.error.seq + 1;
              continue;
            }
            expect(r.status).toBe(200);
            for (const e of r.json.events) served.set(e.seq, e);
            seq = r.json.events.length > 0 ? r.json.next : seq + 1;
          }
          for (const seq of served.keys()) expect(fx.records.has(seq), `seq ${seq} invented`).toBe(true);
          const missing = [...want.mustServe].filter((q) => !served.has(q));
          expect(missing.slice(0, 10), `${JSON.stringify(d).slice(0, 200)}: records before the damage not served`).toEqual([]);
          if (served.size < fx.records.size && !want.undetectable) {
            // Said in the log (recovery or, for closed segments read on trust, the scrub) and in the stream's info.
            await waitFor(() => /DAMAGED|recovery: stream dmg/.test(s.output()), 5000);
          }
          const p = await api(`${s.url}/v1/streams/${STREAM}/events`, "POST", { events: [{ type: "after" }] });
          expect(p.status).toBe(200);
          expect(p.json.first_seq).toBe(info.head_seq + 1);
          for (const [g, seq] of want.checkpoints) expect((await api(`${s.url}/v1/streams/${STREAM}/checkpoint?group=${g}`, "GET")).json.seq).toBe(seq);
        } finally {
          await s.kill9();
        }
      } finally {
        rmSync(root, { recursive: true, force: true });
      }
    };
    const queue = [...samples];
    await Promise.all(
      Array.from({ length: E2E_CONCURRENCY }, async () => {
        for (let d = queue.shift(); d; d = queue.shift()) await runCase(d);
      }),
    );
    recordResult({
      fault: "damaged files, through a server restart",
      setup: "the same fixture and damage kinds, one real server start per case",
      cases: samples.length,
      survived: samples.length,
      acked: fx.records.size,
      lost: 0,
      duplicates: 0,
      gaps: 0,
      bounds: { "slowest start to ready ms": readyMsMax },
    });
  }, 1_200_000);
});

/**
 * On tmpfs when there is one: the cases rewrite the files thousands of
 * times, which on this disk (mounted with discard) costs ~20 ms a case.
 */
function scratchDir(prefix: string): string {
  return mkdtempSync(join(existsSync("/dev/shm") ? "/dev/shm" : tmpdir(), prefix));
}

async function waitFor(cond: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("timed out waiting for the server to report the damage");
    await new Promise((r) => setTimeout(r, 20));
  }
}
