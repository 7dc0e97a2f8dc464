// Request bodies on the front: each read up to its limit, within one budget
// of bytes for all bodies in progress, so that neither one huge upload nor
// many slow ones of legal size grow the process.
import { ApiError } from "../errors.js";
import { sendError, type Exchange } from "./http.js";

/**
 * Bytes of request bodies the front holds at once, across all connections:
 * without this bound, many slow uploads of legal size would each hold a
 * buffer of up to request_bytes_max.
 */
export class BodyBudget {
  private used = 0;
  constructor(private readonly max: number) {}
  take(n: number): boolean {
    if (this.used + n > this.max) return false;
    this.used += n;
    return true;
  }
  give(n: number): void {
    this.used -= n;
  }
}

const bodyBufferFull = (maxBytes: number) =>
  new ApiError(429, "server_busy", `request bodies in progress would exceed request_buffer_bytes_max (${maxBytes} bytes); retry later`, {
    request_buffer_bytes_max: maxBytes,
  });

/**
 * Collects a request body up to `limitBytes`, within the shared budget.
 * Past the limit the client gets 413 at once (past the budget, 429) and the
 * rest of the body is dropped, never buffered.
 */
export function readBody(x: Exchange, lengthHeader: string, limitBytes: number, budget: BodyBudget, budgetMax: number, done: (body: Buffer) => void): void {
  const declared = lengthHeader === "" ? -1 : Number(lengthHeader);
  if (declared > limitBytes) {
    // Answered before reading: uWS drops the rest of the body.
    return sendError(x, tooLarge(limitBytes));
  }
  // Not Math.max: a content-length that is not a number is NaN here, and
  // Math.max(NaN, 0) is NaN (a buffer of NaN bytes throws and kills the process).
  // biome-ignore lint/complexity/useMathMinMax: NaN must become 0
  let held = declared > 0 ? declared : 0;
  if (!budget.take(held)) return sendError(x, bodyBufferFull(budgetMax));
  const release = () => {
    budget.give(held);
    held = 0;
  };
  x.onAbort = release;
  let buf = Buffer.allocUnsafe(held);
  let len = 0;
  x.res.onData((chunk, isLast) => {
    if (x.done || x.aborted) return;
    if (len + chunk.byteLength > limitBytes) {
      release();
      return sendError(x, tooLarge(limitBytes));
    }
    if (len + chunk.byteLength > buf.length) {
      const size = Math.min(limitBytes, Math.max(len + chunk.byteLength, buf.length * 2));
      if (!budget.take(size - held)) {
        release();
        return sendError(x, bodyBufferFull(budgetMax));
      }
      held = size;
      const next = Buffer.allocUnsafe(size);
      buf.copy(next, 0, 0, len);
      buf = next;
    }
    // The chunk's memory belongs to uWS and is reused after this callback.
    buf.set(new Uint8Array(chunk), len);
    len += chunk.byteLength;
    if (isLast) {
      try {
        done(buf.subarray(0, len)); // copies the body into a ring, or answers
      } finally {
        release();
      }
    }
  });
}

const tooLarge = (limitBytes: number) =>
  new ApiError(413, "request_too_large", `request body exceeds request_bytes_max (${limitBytes} bytes)`, { request_bytes_max: limitBytes });
