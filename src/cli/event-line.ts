// The input of `ticker publish`: one event a line, in the API's JSON event
// form (API.md, "Event"), read into the client's PublishEvent. The fields
// the server assigns (seq, stream, ingest_ts) are ignored, so what `replay`
// and `tail` print can be published again as it is (copying a stream);
// any other unknown field is refused, as the server refuses it.
import type { PublishEvent } from "../client/index.js";

/** What is wrong with a line, in words for its error message. */
export class BadLine extends Error {}

const STRINGS = ["type", "key", "producer_id", "idempotency_key"] as const;
const INTEGERS = ["producer_seq", "producer_ts"] as const;
const SERVERS = new Set(["seq", "stream", "ingest_ts"]);
const KNOWN = new Set<string>([...STRINGS, ...INTEGERS, "payload", "payload_base64", ...SERVERS]);
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** The event a line holds; throws BadLine. `line` is not blank. */
export function parseEventLine(line: string): PublishEvent {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch (err) {
    throw new BadLine(`not JSON (${(err as Error).message})`);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) throw new BadLine("not a JSON object (one event object a line)");
  const o = value as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!KNOWN.has(k)) throw new BadLine(`unknown field "${k}"`);
  if (typeof o.type !== "string" || o.type.length === 0) throw new BadLine(`"type" must be a non-empty string`);
  const e: PublishEvent = { type: o.type };
  for (const k of STRINGS) {
    const v = o[k];
    if (v === undefined) continue;
    if (typeof v !== "string") throw new BadLine(`"${k}" must be a string`);
    e[k] = v;
  }
  for (const k of INTEGERS) {
    const v = o[k];
    if (v === undefined) continue;
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) throw new BadLine(`"${k}" must be a non-negative integer`);
    e[k] = v;
  }
  if (o.payload !== undefined && o.payload_base64 !== undefined) throw new BadLine(`give "payload" or "payload_base64", not both`);
  if (o.payload !== undefined) e.payload = o.payload;
  if (o.payload_base64 !== undefined) {
    if (typeof o.payload_base64 !== "string" || !BASE64.test(o.payload_base64)) throw new BadLine(`"payload_base64" must be base64 text`);
    e.payload_bytes = Buffer.from(o.payload_base64, "base64");
  }
  return e;
}

/** Lines of `bytes` holding more than white space: the total a progress bar counts towards. */
export function countEventLines(bytes: Buffer, state: { inLine: boolean; lines: number }): void {
  let { inLine, lines } = state;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    if (b === 0x0a) inLine = false;
    else if (!inLine && b !== 0x20 && b !== 0x09 && b !== 0x0d) {
      inLine = true;
      lines++;
    }
  }
  state.inLine = inLine;
  state.lines = lines;
}
