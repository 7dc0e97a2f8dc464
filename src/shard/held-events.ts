// The held events of one ordered-ingest stream, kept durable in its
// directory (`held.log`) so that an event acknowledged as held survives a
// crash (issue 12; src/shard/ordered.ts keeps it). The file grows by whole
// batches: of newly held events, and of release markers (an entry with the
// RELEASED flag and no frame) once the log holds a released event durably.
// On start an entry with a marker is dropped; one without (a crash between
// the log's append and the marker) is dropped by the caller when the log
// already has its (producer_id, producer_seq). The file is emptied when
// nothing is live and rewritten with only the live entries when it is
// mostly released ones and markers.
//
// Entry: u32 bytes (8-aligned), u32 CRC-32 of [8, bytes), u64 producer_seq,
// u64 received_ms, u32 producer_id bytes, u32 frame bytes, u32 flags (bit 0:
// the last entry of its batch; bit 1: a release marker), u32 zero, the id,
// the record frame as the publisher made it (restamped with its seq when
// released; none in a marker), zero padding. A marker names its entry by
// (producer_id, producer_seq, received_ms). Loading stops at the first entry
// that does not check out (a torn tail, or damage, which it reports), keeps
// entries up to the last batch end before it — a batch is acknowledged
// whole, so a torn one is not — and cuts the file there.
//
// The fd is the shard's open-file cache's to close (src/log/open-files.ts),
// as a segment's: a shard with many ordered streams holds open_files_max
// files, not one held.log each. Every call on it is synchronous, so it may
// be closed between any two, and the next use opens the file again.
import { closeSync, existsSync, fdatasyncSync, ftruncateSync, openSync, readFileSync, renameSync, writeSync } from "node:fs";
import { join } from "node:path";
import { readU64, u32, writeU32, writeU64 } from "../bytes.js";
import { crc32Range } from "../crc.js";
import { syncDir } from "../log/segment.js";
import { unboundedFiles, type CachedFile, type OpenFiles } from "../log/open-files.js";

export const HELD_FILE = "held.log";
export const HELD_ENTRY_HEADER_BYTES = 40; // bytes, crc, producer_seq, received_ms, id bytes, frame bytes, flags, zero
const HEADER_BYTES = HELD_ENTRY_HEADER_BYTES;
const BATCH_END = 1;
const RELEASED = 2;
const ALIGN_BYTES = 8;
/** Rewritten whole (only the entries still held) when the file passes this many times their bytes. */
const REWRITE_FACTOR = 4;

export interface HeldEntry {
  producerId: string;
  producerSeq: number;
  receivedMs: number;
  /** The event's record frame. */
  frame: Buffer;
}

/** An entry's bytes in the file, padding included. */
export const heldEntryBytes = (e: HeldEntry) => Math.ceil((HEADER_BYTES + Buffer.byteLength(e.producerId) + e.frame.length) / ALIGN_BYTES) * ALIGN_BYTES;

const EMPTY = Buffer.alloc(0);
const markerBytes = (e: HeldEntry) => Math.ceil((HEADER_BYTES + Buffer.byteLength(e.producerId)) / ALIGN_BYTES) * ALIGN_BYTES;
const identity = (producerId: string, producerSeq: number, receivedMs: number) => `${producerSeq}:${receivedMs}:${producerId}`;

/** A batch of entries, or (`markers`) of release markers naming them. */
function encode(entries: readonly HeldEntry[], markers = false): Buffer {
  const bytesOf = markers ? markerBytes : heldEntryBytes;
  let total = 0;
  for (const e of entries) total += bytesOf(e);
  const buf = Buffer.alloc(total);
  let at = 0;
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i];
    const bytes = bytesOf(e);
    const frame = markers ? EMPTY : e.frame;
    writeU32(buf, at, bytes);
    writeU64(buf, at + 8, e.producerSeq);
    writeU64(buf, at + 16, e.receivedMs);
    const idBytes = buf.write(e.producerId, at + HEADER_BYTES, "utf8");
    writeU32(buf, at + 24, idBytes);
    writeU32(buf, at + 28, frame.length);
    writeU32(buf, at + 32, (i === entries.length - 1 ? BATCH_END : 0) | (markers ? RELEASED : 0));
    frame.copy(buf, at + HEADER_BYTES + idBytes);
    writeU32(buf, at + 4, crc32Range(buf, at + 8, at + bytes));
    at += bytes;
  }
  return buf;
}

export interface HeldLoad {
  entries: HeldEntry[];
  /** Bytes cut from the end: a torn tail, or everything from a damaged entry on. */
  cutBytes: number;
  /** Why loading stopped before the end (null: it did not). */
  damage: string | null;
}

/**
 * Reads `held.log` (bounded: every step moves forward by an entry's length,
 * which is checked against what is left before it is trusted).
 */
export function decodeHeld(buf: Buffer, entryBytesMax: number): HeldLoad {
  const entries: HeldEntry[] = [];
  const markers: boolean[] = [];
  let at = 0;
  // Entries and bytes up to the last batch end seen.
  let kept = 0;
  let keptBytes = 0;
  let damage: string | null = null;
  while (at < buf.length) {
    if (buf.length - at < HEADER_BYTES) {
      damage = "short entry";
      break;
    }
    const bytes = u32(buf, at);
    if (bytes < HEADER_BYTES || bytes % ALIGN_BYTES !== 0 || bytes > entryBytesMax || bytes > buf.length - at) {
      damage = `bad length ${bytes} at byte ${at}`;
      break;
    }
    if (crc32Range(buf, at + 8, at + bytes) !== u32(buf, at + 4)) {
      damage = `bad CRC at byte ${at}`;
      break;
    }
    const idBytes = u32(buf, at + 24);
    const frameBytes = u32(buf, at + 28);
    // The CRC held, so a mismatch here is a writer's bug, not a torn write: still never trusted.
    if (HEADER_BYTES + idBytes + frameBytes > bytes) {
      damage = `bad field lengths at byte ${at}`;
      break;
    }
    const idAt = at + HEADER_BYTES;
    const frameAt = idAt + idBytes;
    const flags = u32(buf, at + 32);
    entries.push({
      producerId: buf.toString("utf8", idAt, frameAt),
      producerSeq: readU64(buf, at + 8),
      receivedMs: readU64(buf, at + 16),
      frame: Buffer.from(buf.subarray(frameAt, frameAt + frameBytes)),
    });
    markers.push((flags & RELEASED) !== 0);
    at += bytes;
    if ((flags & BATCH_END) !== 0) {
      kept = entries.length;
      keptBytes = at;
    }
  }
  if (kept < entries.length && damage === null) damage = "a batch without its end (torn)";
  entries.length = kept;
  // What a marker names is released: left out, like the marker itself.
  const released = new Set<string>();
  for (let i = 0; i < kept; i++) if (markers[i]) released.add(identity(entries[i].producerId, entries[i].producerSeq, entries[i].receivedMs));
  const live = entries.filter((e, i) => !markers[i] && !released.has(identity(e.producerId, e.producerSeq, e.receivedMs)));
  return { entries: live, cutBytes: buf.length - keptBytes, damage };
}

export class HeldStore implements CachedFile {
  private readonly path: string;
  private fd = -1;
  private size = 0;

  constructor(
    private readonly dir: string,
    private readonly entryBytesMax: number,
    private readonly files: OpenFiles = unboundedFiles(),
  ) {
    this.path = join(dir, HELD_FILE);
  }

  /** Opens (or creates) the file, cuts what does not check out, and returns what it holds. */
  open(): HeldLoad {
    const created = !existsSync(this.path);
    if (created) {
      this.file("w+");
      syncDir(this.dir);
    }
    const buf = readFileSync(this.file()); // bounded: held_events_max entries, rewritten when mostly released
    const load = decodeHeld(buf, this.entryBytesMax);
    this.size = buf.length - load.cutBytes;
    if (load.cutBytes > 0) {
      ftruncateSync(this.file(), this.size);
      fdatasyncSync(this.file());
    }
    return load;
  }

  /**
   * The fd, the file opened if the cache closed it. Valid until the shard
   * opens another file. Not "a+": with O_APPEND, Linux writes at the end
   * whatever position is given.
   */
  private file(flags: "r+" | "w+" = "r+"): number {
    if (this.fd >= 0) {
      this.files.used(this);
      return this.fd;
    }
    this.files.makeRoom();
    this.fd = openSync(this.path, flags);
    this.files.opened(this);
    return this.fd;
  }

  mayClose(): boolean {
    return true; // every call on the fd is synchronous: nothing runs on it between turns
  }

  evict(): void {
    closeSync(this.fd);
    this.fd = -1;
  }

  /** Appends one batch of newly held events, whole; durable: synced before it returns. */
  add(entries: readonly HeldEntry[], durable: boolean): void {
    if (entries.length === 0) return;
    this.write(encode(entries), durable);
  }

  private write(buf: Buffer, durable: boolean): void {
    try {
      const fd = this.file();
      let off = 0;
      while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off, this.size + off);
      if (durable) fdatasyncSync(fd);
    } catch (err) {
      try {
        ftruncateSync(this.file(), this.size);
      } catch {
        // A torn batch is cut by the next open.
      }
      throw err;
    }
    this.size += buf.length;
  }

  /**
   * Appends release markers for entries whose events the log now holds
   * durably (not synced: a marker lost to power loss leaves an entry the
   * log's own record of its producer accounts for on start).
   */
  release(entries: readonly HeldEntry[]): void {
    if (entries.length === 0) return;
    this.write(encode(entries, true), false);
  }

  /** Cuts the file back to `bytes` (a batch added for a request that then failed). */
  cutTo(bytes: number): void {
    if (bytes >= this.size) return;
    ftruncateSync(this.file(), bytes);
    this.size = bytes;
  }

  /**
   * After releases: `liveBytes` are the heldEntryBytes of what must stay
   * (still held, or released but not yet durable in the log), `live` lists
   * it. Nothing live: the file is emptied; mostly released entries:
   * rewritten with only the live ones (write-then-rename, so a crash leaves
   * the old file or the new one). The list is asked for only then.
   */
  settle(liveBytes: number, live: () => readonly HeldEntry[]): void {
    if (liveBytes === 0) {
      if (this.size > 0) {
        ftruncateSync(this.file(), 0);
        this.size = 0;
      }
      return;
    }
    if (this.size <= REWRITE_FACTOR * liveBytes) return;
    const tmp = `${this.path}.tmp`;
    const buf = encode(live());
    const fd = openSync(tmp, "w");
    try {
      let off = 0;
      while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off, off);
      fdatasyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.path);
    // The new file is the store now, whatever the directory sync says: later
    // adds must not go to the old one, unlinked by the rename (the next use opens the new one).
    this.close();
    this.size = buf.length;
    syncDir(this.dir);
  }

  /** Reads the file again (after a failure, to rebuild from what is on disk). */
  reload(): HeldEntry[] {
    this.close();
    return this.open().entries;
  }

  get bytes(): number {
    return this.size;
  }

  close(): void {
    if (this.fd < 0) return;
    this.files.closed(this);
    this.evict();
  }
}
