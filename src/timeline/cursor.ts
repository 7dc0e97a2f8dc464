// Timeline cursors (a stand-in until the signer of branch h-tlstore lands
// on main, with the same interface; that one keeps its secrets in the data
// dir and rotates them): a direction and one boundary seq per stream of the
// set, HMAC-SHA256-signed, as base64url.
//
//   u8 version   u32 key id   u8 direction   8 bytes set digest
//   varint streams   varint seq per stream   16 bytes HMAC (truncated)
import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { ApiError } from "../errors.js";

export type Direction = "forward" | "backward";

export interface TimelineCursor {
  direction: Direction;
  seqs: number[];
}

const VERSION = 1;
const MAC_BYTES = 16;
/** A varint of a safe integer takes at most 8 bytes (7 bits each). */
const VARINT_BYTES_MAX = 8;

const invalid = (why: string) => new ApiError(400, "invalid_cursor", `the cursor is not valid for this timeline (${why})`);

function setDigest(streams: readonly string[]): Buffer {
  return createHash("sha256").update(streams.join("\n")).digest().subarray(0, 8);
}

export class CursorSigner {
  private readonly secrets = new Map<number, Buffer>();
  private keyId = 1;

  private constructor(secret: Buffer) {
    this.secrets.set(this.keyId, secret);
  }

  static open(_dataDir: string, opts: { secret: string | null; previousSecret: string | null; graceMs: number }): CursorSigner {
    return new CursorSigner(opts.secret ? Buffer.from(opts.secret) : randomBytes(32));
  }

  encode(streams: readonly string[], c: TimelineCursor): string {
    const head = Buffer.alloc(6);
    head[0] = VERSION;
    head.writeUInt32LE(this.keyId, 1);
    head[5] = c.direction === "forward" ? 0 : 1;
    const body: number[] = [...head, ...setDigest(streams)];
    const varint = (n: number) => {
      let v = n;
      while (v >= 0x80) {
        body.push((v % 0x80) | 0x80);
        v = Math.floor(v / 0x80);
      }
      body.push(v);
    };
    varint(c.seqs.length);
    for (const s of c.seqs) varint(s);
    const msg = Buffer.from(body);
    const mac = this.mac(this.keyId, msg);
    return Buffer.concat([msg, mac]).toString("base64url");
  }

  decode(token: string, streams: readonly string[]): TimelineCursor {
    if (!/^[A-Za-z0-9_-]{1,4096}$/.test(token)) throw invalid("not base64url");
    const raw = Buffer.from(token, "base64url");
    if (raw.length < 6 + 8 + 1 + MAC_BYTES) throw invalid("truncated");
    const msg = raw.subarray(0, raw.length - MAC_BYTES);
    const keyId = msg.readUInt32LE(1);
    const secret = this.secrets.get(keyId);
    if (msg[0] !== VERSION || !secret) throw invalid("unknown version or key");
    if (!timingSafeEqual(this.mac(keyId, msg), raw.subarray(raw.length - MAC_BYTES))) throw invalid("signature does not match");
    if (msg[5] > 1) throw invalid("bad direction");
    if (!setDigest(streams).equals(msg.subarray(6, 14))) throw invalid("made for another stream set");
    let at = 14;
    const varint = (): number => {
      let v = 0;
      let scale = 1;
      for (let i = 0; i < VARINT_BYTES_MAX; i++) {
        if (at >= msg.length) throw invalid("truncated");
        const b = msg[at++];
        v += (b & 0x7f) * scale;
        if (b < 0x80) return v;
        scale *= 0x80;
      }
      throw invalid("bad number");
    };
    const n = varint();
    if (n !== streams.length) throw invalid("made for another stream set");
    const seqs: number[] = [];
    for (let i = 0; i < n; i++) seqs.push(varint());
    if (at !== msg.length || seqs.some((s) => !Number.isSafeInteger(s))) throw invalid("bad bytes");
    return { direction: msg[5] === 0 ? "forward" : "backward", seqs };
  }

  rotate(nowMs = Date.now()): { key_id: number; previous_valid_until: number } {
    this.keyId++;
    this.secrets.set(this.keyId, randomBytes(32));
    return { key_id: this.keyId, previous_valid_until: nowMs };
  }

  private mac(keyId: number, msg: Buffer): Buffer {
    const secret = this.secrets.get(keyId);
    if (!secret) throw new Error(`cursor invariant: no secret ${keyId}`);
    return createHmac("sha256", secret).update(msg).digest().subarray(0, MAC_BYTES);
  }
}
