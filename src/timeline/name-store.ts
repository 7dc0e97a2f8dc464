// What the timeline routes ask of the named timelines and their reader
// positions, wherever they are kept: a node's data dir (names.ts,
// readers.ts) or, in cluster mode, PostgreSQL (cluster-names.ts).
import type { NamedTimeline } from "./names.js";
import type { ReaderPosition } from "./readers.js";

export interface TimelineNames {
  /** Files found but not loaded, one line each for the start-up log. */
  readonly damage: readonly string[];
  find(name: string): Promise<NamedTimeline | undefined>;
  /** Every timeline, by name. */
  all(): Promise<NamedTimeline[]>;
  /** Creates the timeline or sets its streams; `changed`: the set is not what it was. A new name past timelines_max is 409. */
  put(name: string, streams: readonly string[], now?: number): Promise<{ timeline: NamedTimeline; created: boolean; changed: boolean }>;
  /** False when there is none. */
  remove(name: string): Promise<boolean>;
}

export interface TimelineReaders {
  get(t: NamedTimeline, reader: string): Promise<ReaderPosition | null>;
  /** A new reader past timeline_readers_max is 409; a timeline whose set changed since `t` is 400 invalid_cursor. */
  put(t: NamedTimeline, reader: string, cursor: string, now?: number): Promise<{ position: ReaderPosition; created: boolean }>;
  /** Forgets a timeline's positions (deleted, or its streams changed). */
  forget(name: string): Promise<void>;
}
