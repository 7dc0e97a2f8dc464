// What the ordered-ingest tests share: an event with producer fields, a
// JSON publish, and a stream with producer_ordering switched on.
import { api } from "./server.js";

export const ev = (producer_id: string, producer_seq: number, extra: Record<string, unknown> = {}) => ({ type: "t", producer_id, producer_seq, ...extra });

export const publish = (url: string, stream: string, events: unknown[]) => api(`${url}/v1/streams/${stream}/events`, "POST", { events });

export const ordered = (url: string, stream: string, config: Record<string, unknown> = {}) =>
  api(`${url}/v1/streams/${stream}`, "PUT", { producer_ordering: true, ...config });

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
