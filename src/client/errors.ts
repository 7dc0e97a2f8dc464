// The one error type of the client. Every failure reaches the caller as a
// TickerError: an HTTP error carries the server's status and code (and the
// extra fields of its body, e.g. `first_seq` on 410 expired); a failure that
// never got an answer has status 0 and a client-side code.

/** Codes the client gives to failures that have no server answer. */
export type ClientErrorCode =
  | "connection_failed" // could not connect, or the connection broke before an answer
  | "timeout" // no answer within the request timeout
  | "bad_response" // an answer this client cannot read (not Ticker, or a damaged body)
  | "closed" // the producer, replay or consumer was closed by the caller
  | "invalid_event" // an event the client refused before sending it
  | "invalid_parameter" // an option the client refused
  | "bad_url"
  | "too_many_redirects" // a request (or consume upgrade) was redirected more than redirectsMax times
  | "callback_failed"; // a callback of the caller's threw (the producer's onPublished)

export class TickerError extends Error {
  override readonly name = "TickerError";
  constructor(
    /** The HTTP status; 0 when no answer came. */
    readonly status: number,
    /** The server's `error.code` (e.g. "stream_not_found"), or a ClientErrorCode. */
    readonly code: string,
    message: string,
    /** The error body's other fields (e.g. `first_seq`, `index`). */
    readonly details: Record<string, unknown> = {},
    /** From `Retry-After` on a 429 or 503, in ms. */
    readonly retryAfterMs: number | null = null,
  ) {
    super(message);
  }

  /** True for answers a later attempt may not get: backpressure, not ready, a lost connection or a timeout. */
  get retryable(): boolean {
    return this.status === 0 ? this.code === "connection_failed" || this.code === "timeout" : this.status === 429 || this.status === 503;
  }
}

/** The TickerError of a non-2xx answer, from its JSON error body when it has one. */
export function errorFromAnswer(status: number, body: Uint8Array, retryAfter: string | null): TickerError {
  const retryAfterMs = retryAfter !== null && /^\d{1,9}$/.test(retryAfter) ? Number(retryAfter) * 1000 : null;
  let parsed: unknown = null;
  try {
    parsed = JSON.parse(Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString("utf8"));
  } catch {
    // not JSON: described below by its status
  }
  const error = (parsed as { error?: unknown } | null)?.error;
  if (error !== null && typeof error === "object" && typeof (error as { code?: unknown }).code === "string") {
    const { code, message, ...details } = error as { code: string; message?: unknown };
    return new TickerError(status, code, typeof message === "string" ? message : code, details, retryAfterMs);
  }
  return new TickerError(status, `http_${status}`, `HTTP ${status} without a Ticker error body`, {}, retryAfterMs);
}
