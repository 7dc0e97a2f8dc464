// Named timelines: a name for a stream set, kept in the data dir as
// `timelines/<escaped name>/timeline.json` (the name escaped as stream
// directories are, src/shard/stream-config.ts). The file is replaced whole
// (tmp, fsync, rename, fsync of the directory) before a PUT is answered, so
// after a kill -9 or a power loss a timeline is there with its old streams
// or its new ones. The timeline's directory also holds its reader positions
// (readers-log.ts). Writes run one at a time; reads are from memory.
import { existsSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import { ApiError } from "../errors.js";
import { escapeStreamId } from "../shard/stream-config.js";
import { STREAM_ID } from "../stream-id.js";
import { fsyncDir, TMP_SUFFIX, writeFileAtomic } from "./atomic-file.js";
import { isStreamSet } from "./stream-set.js";
import type { TimelineNames } from "./name-store.js";

export const TIMELINES_DIR = "timelines";
export const TIMELINE_FILE = "timeline.json";

export interface NamedTimeline {
  name: string;
  /** The stream set: sorted, no repeats. */
  streams: string[];
  created_at: number;
  /** When the stream set last changed (reader positions older than this are of another set). */
  updated_at: number;
}

/** Timeline names follow the stream id rule: 400 invalid_timeline otherwise. */
export function checkTimelineName(name: string): void {
  if (!STREAM_ID.test(name)) throw new ApiError(400, "invalid_timeline", `timeline name must match ${STREAM_ID.source}`, { timeline: name.slice(0, 200) });
}

/** A new timeline past timelines_max. */
export const timelinesFull = (max: number) =>
  new ApiError(409, "limit_reached", `there are timelines_max (${max}) timelines already; delete one first`, { timelines_max: max });

/** The timeline a PUT of `streams` makes of `before` (undefined: a new one). */
export function nextTimeline(name: string, streams: readonly string[], before: NamedTimeline | undefined, now: number): NamedTimeline {
  return {
    name,
    streams: [...streams],
    created_at: before?.created_at ?? now,
    // Never back in time: positions are told apart from older sets' by it.
    updated_at: before ? Math.max(now, before.updated_at + 1) : now,
  };
}

export const timelineNotFound = (name: string) => new ApiError(404, "timeline_not_found", `timeline "${name}" does not exist`, { timeline: name });

const timelineSchema = z
  .object({
    name: z.string().regex(STREAM_ID),
    streams: z.array(z.string().regex(STREAM_ID)).refine(isStreamSet, "must be a sorted set of stream ids without repeats"),
    created_at: z.number().int().min(0),
    updated_at: z.number().int().min(0),
  })
  .strict();

export class NamedTimelines implements TimelineNames {
  private readonly byName = new Map<string, NamedTimeline>();
  /** Files found but not loaded, one line each for the start-up log. */
  readonly damage: string[] = [];
  private tail: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly root: string,
    private readonly timelinesMax: number,
  ) {}

  /** Loads every timeline of the data dir. Leftovers of a crash mid-write are removed; damaged files are reported and left alone. */
  static open(dataDir: string, timelinesMax: number): NamedTimelines {
    const t = new NamedTimelines(join(dataDir, TIMELINES_DIR), timelinesMax);
    t.load();
    return t;
  }

  private load(): void {
    if (!existsSync(this.root)) return;
    for (const entry of readdirSync(this.root, { withFileTypes: true })) {
      if (!entry.isDirectory()) continue;
      const dir = join(this.root, entry.name);
      const file = join(dir, TIMELINE_FILE);
      rmSync(`${file}${TMP_SUFFIX}`, { force: true });
      // No timeline.json: a create that crashed before its rename, or a delete after its unlink.
      if (!existsSync(file)) {
        rmSync(dir, { recursive: true, force: true });
        continue;
      }
      const t = readTimeline(file, entry.name);
      if (typeof t === "string") this.damage.push(`${TIMELINES_DIR}/${entry.name}/${TIMELINE_FILE}: ${t}; not loaded`);
      else this.byName.set(t.name, t);
    }
  }

  get size(): number {
    return this.byName.size;
  }

  get(name: string): NamedTimeline | undefined {
    return this.byName.get(name);
  }

  find(name: string): Promise<NamedTimeline | undefined> {
    return Promise.resolve(this.byName.get(name));
  }

  all(): Promise<NamedTimeline[]> {
    return Promise.resolve(this.list());
  }

  /** Every timeline, by name. */
  list(): NamedTimeline[] {
    return [...this.byName.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** The timeline's directory (its file and its readers' log). */
  dirOf(name: string): string {
    return join(this.root, escapeStreamId(name));
  }

  /**
   * Creates the timeline or sets its streams (a normalised set, checked by the
   * caller). `changed`: the set is not what it was, so cursors and reader
   * positions of the old one are foreign now. A new name past timelines_max
   * is 409 limit_reached.
   */
  put(name: string, streams: readonly string[], now = Date.now()): Promise<{ timeline: NamedTimeline; created: boolean; changed: boolean }> {
    return this.serially(async () => {
      const before = this.byName.get(name);
      if (before && before.streams.join("\n") === streams.join("\n")) return { timeline: before, created: false, changed: false };
      if (!before && this.byName.size >= this.timelinesMax) throw timelinesFull(this.timelinesMax);
      const t = nextTimeline(name, streams, before, now);
      const dir = this.dirOf(name);
      if (!before) {
        await mkdir(dir, { recursive: true });
        await fsyncDir(this.root);
      }
      await writeFileAtomic(join(dir, TIMELINE_FILE), `${JSON.stringify(t)}\n`);
      this.byName.set(name, t);
      return { timeline: t, created: !before, changed: true };
    });
  }

  /**
   * Deletes the timeline and its directory (its reader positions too); false
   * when there is none. The name is gone at once: a request that comes while
   * the files are removed sees 404, never a half-deleted timeline.
   */
  remove(name: string): Promise<boolean> {
    return this.serially(async () => {
      const t = this.byName.get(name);
      if (!t) return false;
      this.byName.delete(name);
      const dir = this.dirOf(name);
      try {
        // The commit point: without its file a directory is a leftover load() removes.
        await rm(join(dir, TIMELINE_FILE));
        await fsyncDir(dir);
      } catch (err) {
        this.byName.set(name, t);
        throw err;
      }
      await rm(dir, { recursive: true, force: true });
      return true;
    });
  }

  private serially<T>(op: () => Promise<T>): Promise<T> {
    const result = this.tail.then(op);
    this.tail = result.catch(() => undefined);
    return result;
  }
}

function readTimeline(file: string, dirName: string): NamedTimeline | string {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, "utf8"));
  } catch (err) {
    return `not readable JSON (${(err as Error).message})`;
  }
  const r = timelineSchema.safeParse(parsed);
  if (!r.success) return `not a timeline (${r.error.issues[0].path.join(".") || "file"}: ${r.error.issues[0].message})`;
  if (escapeStreamId(r.data.name) !== dirName) return `name "${r.data.name}" does not belong in directory ${dirName}`;
  return r.data;
}
