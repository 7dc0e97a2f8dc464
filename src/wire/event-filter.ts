// Server-side filters and the rate bound of reads (replay and consume):
// `types=` and `keys=` (comma-separated exact values, or `prefix*`) and
// `max_rate=` (events/s). The rules are parsed here once, for the shard that
// matches frames and for the front that paces; matching reads the type and
// key straight from the frames in place, with no string made per event.
import { u32 } from "../bytes.js";
import { ApiError } from "../errors.js";
import { RECORD_HEADER_BYTES, frameSeq } from "../log/record.js";
import { EventFields } from "./event-layout.js";
import { intParam } from "../validate.js";

export interface FilterLimits {
  /** Values of `types` and `keys` together. */
  filter_values_max: number;
  /** UTF-8 bytes of `types` and `keys` together, as given (commas and `*` counted). */
  filter_bytes_max: number;
}

/** The largest `max_rate`: far above what one consumer can take, so it never binds by accident. */
export const MAX_RATE_MAX = 10_000_000;

/** Exact values and prefixes of one field, as UTF-8 bytes. */
class Matcher {
  constructor(
    readonly exact: Buffer[],
    readonly prefixes: Buffer[],
  ) {}

  /** Whether buf[at, at + len) is one of the values or starts with one of the prefixes. */
  matches(buf: Buffer, at: number, len: number): boolean {
    for (const v of this.exact) if (v.length === len && buf.compare(v, 0, len, at, at + len) === 0) return true;
    for (const p of this.prefixes) if (p.length <= len && buf.compare(p, 0, p.length, at, at + p.length) === 0) return true;
    return false;
  }
}

export class EventFilter {
  private readonly fields = new EventFields();

  constructor(
    /** null: any type. */
    readonly types: Matcher | null,
    /** null: any key; otherwise an event without a key never matches. */
    readonly keys: Matcher | null,
  ) {}

  /** Whether the record (frame) at `at` passes: its type matches and its key matches. */
  matches(frames: Buffer, at: number): boolean {
    const f = this.fields.read(frames, at + RECORD_HEADER_BYTES);
    if (this.types && !this.types.matches(frames, f.typeAt, f.typeLen)) return false;
    if (this.keys && (f.keyAt < 0 || !this.keys.matches(frames, f.keyAt, f.keyLen))) return false;
    return true;
  }

  /**
   * Keeps the matching frames of a page, moved to its front, at most
   * `keepMax` of them. `stopSeq` is the seq of the first frame not looked at
   * (the page's `next` when it stopped early), or -1 when it looked at all.
   */
  compact(frames: Buffer, count: number, keepMax: number): { count: number; bytes: number; stopSeq: number } {
    let at = 0;
    let kept = 0;
    let out = 0;
    for (let i = 0; i < count; i++) {
      const len = u32(frames, at);
      if (this.matches(frames, at)) {
        if (kept === keepMax) return { count: kept, bytes: out, stopSeq: frameSeq(frames, at) };
        if (out !== at) frames.copyWithin(out, at, at + len);
        out += len;
        kept++;
      }
      at += len;
    }
    return { count: kept, bytes: out, stopSeq: -1 };
  }
}

const invalid = (message: string) => new ApiError(400, "invalid_parameter", message);

/**
 * `types` and `keys` of a query, checked; null when neither is given. The
 * bounds are checked on the raw text before it is split, so a hostile query
 * costs at most filter_bytes_max of work.
 */
export function parseFilter(q: URLSearchParams, limits: FilterLimits): EventFilter | null {
  const types = q.get("types");
  const keys = q.get("keys");
  if (types === null && keys === null) return null;
  const bytes = (types === null ? 0 : Buffer.byteLength(types)) + (keys === null ? 0 : Buffer.byteLength(keys));
  if (bytes > limits.filter_bytes_max) throw invalid(`"types" and "keys" are at most ${limits.filter_bytes_max} bytes together, got ${bytes}`);
  const t = types === null ? null : values("types", types);
  const k = keys === null ? null : values("keys", keys);
  const n = (t?.length ?? 0) + (k?.length ?? 0);
  if (n > limits.filter_values_max) throw invalid(`"types" and "keys" hold at most ${limits.filter_values_max} values together, got ${n}`);
  return new EventFilter(t && matcher(t), k && matcher(k));
}

function values(name: string, text: string): string[] {
  const list = text.split(",");
  for (const v of list) {
    if (v === "" || v === "*") throw invalid(`"${name}" is a comma-separated list of values or prefixes ("abc*"), none of them empty`);
    const star = v.indexOf("*");
    if (star >= 0 && star !== v.length - 1) throw invalid(`"${name}": "*" may only end a value (a prefix), as in "trade*"`);
  }
  return list;
}

function matcher(list: string[]): Matcher {
  const exact: Buffer[] = [];
  const prefixes: Buffer[] = [];
  for (const v of list) {
    if (v.endsWith("*")) prefixes.push(Buffer.from(v.slice(0, -1), "utf8"));
    else exact.push(Buffer.from(v, "utf8"));
  }
  return new Matcher(exact, prefixes);
}

/** `max_rate` (events/s); null when not given. */
export function parseMaxRate(q: URLSearchParams): number | null {
  return q.get("max_rate") === null ? null : intParam(q, "max_rate", 0, 1, MAX_RATE_MAX);
}
