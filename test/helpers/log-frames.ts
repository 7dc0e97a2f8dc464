// Frames and appends for unit tests of the log, as the shard writes them:
// each append one batch whose last frame carries the commit mark.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { StreamLog } from "../../src/log/log.js";
import { frameBytesFor, frameSeq, markBatchEnd, sealFrame, writeFrameHeader, RECORD_HEADER_BYTES } from "../../src/log/record.js";

export const LOG_OPTS = { segmentBytesMax: 64 * 1024, indexIntervalBytes: 4096, frameBytesMax: 1 << 20 };

/** Temp dirs, removed by `removeTempDirs` (call it from afterEach). */
const dirs: string[] = [];
export function tempDir(prefix = "ticker-log-"): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  dirs.push(d);
  return d;
}
export function removeTempDirs(): void {
  while (dirs.length) rmSync(dirs.pop()!, { recursive: true, force: true });
}

/**
 * `count` frames of `bodyBytes` (every body byte = seq & 0xff), record i stamped ts + i, one batch
 * (`marked` false: without the commit mark, as a batch a crash interrupted, or a log older than marks).
 */
export function frames(firstSeq: number, count: number, bodyBytes: number, ts: number, marked = true): { buf: Buffer; bytes: number } {
  const fb = frameBytesFor(bodyBytes);
  const buf = Buffer.alloc(fb * count);
  for (let i = 0; i < count; i++) {
    const at = i * fb;
    writeFrameHeader(buf, at, fb, bodyBytes, firstSeq + i, ts + i);
    buf.fill((firstSeq + i) & 0xff, at + RECORD_HEADER_BYTES, at + RECORD_HEADER_BYTES + bodyBytes);
    sealFrame(buf, at, fb);
  }
  if (marked && count > 0) markBatchEnd(buf, (count - 1) * fb);
  return { buf, bytes: fb * count };
}

/** Appends `n` records in batches of `batch`; record seq s gets ts `ts + s - 1`. */
export function appendN(log: StreamLog, n: number, opts: { bodyBytes?: number; batch?: number; ts?: number; durable?: boolean } = {}): void {
  const { bodyBytes = 100, batch = 50, ts = 1_000, durable = false } = opts;
  for (let done = 0; done < n; ) {
    const c = Math.min(batch, n - done);
    const f = frames(log.headSeq + 1, c, bodyBytes, ts + log.headSeq);
    log.append(f.buf, f.bytes, c, durable);
    done += c;
  }
}

/** Every seq the log serves from `from` on, page by page. */
export function readAll(log: StreamLog, from = log.firstSeq): number[] {
  const out = Buffer.alloc(1 << 20);
  const seqs: number[] = [];
  let seq = from;
  for (;;) {
    const page = log.read(seq, Number.MAX_SAFE_INTEGER, 1000, 256 * 1024, out);
    if (page.count === 0) break;
    let at = 0;
    for (let i = 0; i < page.count; i++) {
      seqs.push(frameSeq(page.buf, at));
      at += page.buf.readUInt32LE(at);
    }
    seq = page.next;
  }
  return seqs;
}

export const range = (a: number, b: number) => Array.from({ length: b - a + 1 }, (_, i) => a + i);
