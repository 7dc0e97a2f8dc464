// What a subscription is asked for and what it tells its caller, apart from
// its lifecycle (consume.ts): the options, checked here before any socket so
// that a combination the server refuses fails at once, and the URL query they
// make.
import { TickerError } from "./errors.js";
import { readQuery } from "./replay.js";

export type Role = "active" | "standby";

export interface ConsumeOptions {
  /** A consumer group: acks become its checkpoint; one member is active, others wait as standby. */
  group?: string;
  /** Where to start: a seq, "earliest" or "latest". Without it a group resumes at its checkpoint + 1, anything else at latest. */
  from?: number | "earliest" | "latest";
  /** Start at the first event ingested at or after this time (ms since epoch); instead of `from`. */
  fromTime?: number;
  /** Most unacked events in flight for a group, and the events this client buffers (default 10,000). */
  window?: number;
  /** Nacks of one event before it is dead-lettered (server default 5). */
  maxAttempts?: number;
  /** Wire format (default "binary"); events reach the caller alike in both. */
  format?: "binary" | "json";
  /** Only events of these types (exact, or a prefix ending in "*"): the server filters, and says which seqs it passed over. */
  types?: string[];
  /** Only events with these keys (exact, or a prefix ending in "*"). */
  keys?: string[];
  /** At most this many events a second, history and live alike (the server paces its pages). */
  maxRate?: number;
  /**
   * "key": while behind, the server sends the newest event of each key of a
   * page and counts the rest (`Subscription.conflated`); live events all come.
   * Not with a group.
   */
  conflate?: "key";
  reconnect?: {
    /** First delay after a connection ends (default 100 ms); doubled after each failed attempt. */
    initialDelayMs?: number;
    /** Largest delay (default 5 s). Each delay is jittered between half and all of it. */
    maxDelayMs?: number;
    /** Failed attempts in a row before the subscription gives up with the last error (default unbounded). */
    attemptsMax?: number;
  };
}

/** The server's hello: where delivery starts (null for a standby) and the stream's bounds then. */
export interface Hello {
  from: number | null;
  head_seq: number;
  first_seq: number;
  role: Role;
}

export interface SubscriptionEvents {
  /** The role changed (a standby took over, or a reconnect landed as standby). */
  role: (role: Role) => void;
  /** Events up to `from` - 1 expired before they could be delivered; delivery goes on at `from`. */
  reset: (reset: { from: number; reason: string }) => void;
  /** A connection ended with `error`; the next attempt starts in `delayMs`. */
  reconnect: (info: { attempt: number; delayMs: number; error: TickerError }) => void;
}

/** Refuses what the server would refuse at the upgrade, so the caller hears it before any connection (and no reconnect retries it). */
export function checkConsumeOptions(o: ConsumeOptions): void {
  if (o.conflate === undefined) return;
  if (o.conflate !== "key") throw new TickerError(0, "invalid_parameter", `"conflate" must be "key"`, { parameter: "conflate" });
  // The server's rule (src/front/consume/params.ts): an ack past conflated events would checkpoint events no member was sent.
  if (o.group !== undefined) throw new TickerError(0, "invalid_parameter", `"conflate" is for consumers without a group`, { parameter: "conflate" });
}

/** The consume upgrade's query; `resumeFrom` (a reconnect's place) wins over the caller's `from` and `fromTime`. */
export function consumeQuery(o: ConsumeOptions, resumeFrom: number | null, windowEvents: number): string {
  const q = new URLSearchParams();
  if (o.group !== undefined) q.set("group", o.group);
  if (resumeFrom !== null) q.set("from", String(resumeFrom));
  else if (o.fromTime !== undefined) q.set("from_time", String(o.fromTime));
  else if (o.from !== undefined) q.set("from", String(o.from));
  q.set("format", o.format ?? "binary");
  q.set("window", String(windowEvents));
  if (o.maxAttempts !== undefined) q.set("max_attempts", String(o.maxAttempts));
  if (o.conflate !== undefined) q.set("conflate", o.conflate);
  return `${q}${readQuery(o)}`;
}
