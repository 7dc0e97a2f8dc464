// Timeline pages past what one shard can serve, against a real server
// process: while the shard is held up (replays queued on it, measured to
// last several source timeouts), a burst of pages comes back partial; then,
// with the shard owing the reads it was too late for, pages leave it out
// without asking it, or are 429 shard_busy when it owns all their streams.
// Once it has caught up, every page is whole again, and the burst's cursors
// go on with nothing skipped or repeated.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TIMELINE_LATE_READS_MAX } from "../../src/front/timeline-late.js";
import { removeDir, startServer, type TestServer } from "../helpers/server.js";
import {
  byTimelineOrder,
  eventId,
  pageToEnd,
  publishLarge,
  publishN,
  queueReplays,
  replaysLasting,
  shardCaughtUp,
  sleep,
  streamEvents,
  streamsOnShards,
  timelinePage,
  timelineRequest,
  type TimelineEvent,
} from "../helpers/timelines.js";

const SHARDS = 2;
const SOURCE_TIMEOUT_MS = 150;

describe("a burst of timeline pages past a shard's capacity", () => {
  let s: TestServer;
  // Many streams a page: twelve on the slow shard, four on the other.
  const [slow, calm] = streamsOnShards("burst.", SHARDS, 12).map((o, i) => (i === 0 ? o : o.slice(0, 4)).sort());
  const large = streamsOnShards("burst-large.", SHARDS, 1)[0][0]; // on the slow shard
  const set = [...slow, ...calm].sort();
  let busyReplays: number;
  let all: TimelineEvent[];

  beforeAll(async () => {
    s = await startServer({ args: ["--shards", String(SHARDS), "--timeline-source-timeout-ms", String(SOURCE_TIMEOUT_MS)] });
    const url = s.url;
    await publishLarge(url, large);
    for (const stream of set) await publishN(url, stream, 12);
    // Margin: the burst, the page left out and the refused one all come while the slow shard is still busy.
    busyReplays = await replaysLasting(url, large, 5 * SOURCE_TIMEOUT_MS);
    await sleep(5); // past the horizon of the last millisecond
    all = (await Promise.all(set.map((id) => streamEvents(url, id)))).flat().sort(byTimelineOrder);
  });

  afterAll(async () => {
    if (!s) return;
    await s.stop();
    removeDir(s.dataDir);
  });

  it("degrades to partial pages and 429 shard_busy, then serves whole pages again, nothing skipped or repeated", async () => {
    const url = s.url;
    await queueReplays(url, large, busyReplays);
    const replaysServed = shardCaughtUp(url, large);
    // Twice the reads a shard may owe, at once (one page per connection), while the slow shard serves the replays.
    const burst = await Promise.all(Array.from({ length: 2 * TIMELINE_LATE_READS_MAX }, () => timelinePage(url, { streams: set.join(","), limit: 1000 })));
    const calmEvents = all.filter((e) => calm.includes(e.stream)).map(eventId);
    for (const p of burst) {
      expect(p.partial).toEqual(slow);
      expect(p.events.map(eventId)).toEqual(calmEvents);
    }
    // The slow shard owes those reads: a page leaves it out without asking it...
    const left = await timelinePage(url, { streams: set.join(","), limit: 1000 });
    expect(left.partial).toEqual(slow);
    expect(left.events.map(eventId)).toEqual(calmEvents);
    // ...and one whose streams are all its own is refused, to be retried.
    const refused = await timelineRequest(url, { streams: slow.join(",") });
    expect(refused.status).toBe(429);
    expect(refused.json.error.code).toBe("shard_busy");
    expect(refused.headers.get("retry-after")).toBe("1");

    // The load is gone once the slow shard has served the replays and got to the burst's reads.
    await replaysServed;
    await shardCaughtUp(url, large);
    const again = await pageToEnd(url, set, { limit: () => 50 });
    expect(again.pages.filter((p) => p.partial !== undefined)).toEqual([]);
    expect(again.events.map(eventId)).toEqual(all.map(eventId));
    // A burst page's cursor goes on with the slow shard's events, none of the calm shard's again.
    const rest = await pageToEnd(url, set, { cursor: burst[0].next_cursor, limit: () => 50 });
    expect(rest.pages.filter((p) => p.partial !== undefined)).toEqual([]);
    expect(rest.events.map(eventId)).toEqual(all.filter((e) => slow.includes(e.stream)).map(eventId));
  });

  it("a long poll woken by a push from a shard the front has given up on answers it, and the server keeps serving", async () => {
    const url = s.url;
    const pair = [slow[0], calm[0]].sort();
    // Armed at the head while both shards answer: an empty page that waits.
    const { last } = await pageToEnd(url, pair, { limit: () => 1000 });
    const poll = timelineRequest(url, { streams: pair.join(","), cursor: last.next_cursor, wait_ms: 10_000 });
    await sleep(50);
    await queueReplays(url, large, busyReplays);
    const replaysServed = shardCaughtUp(url, large);
    // Queued behind the replays and ahead of the burst's reads: the slow shard pushes its commit
    // while the front still counts those reads as owed, from inside its delivery of that shard.
    const published = publishN(url, slow[0], 1, 100);
    await sleep(50);
    const burst = Promise.all(Array.from({ length: 2 * TIMELINE_LATE_READS_MAX }, () => timelinePage(url, { streams: set.join(","), limit: 1000 })));
    const woken = await poll;
    expect(woken.status, JSON.stringify(woken.json)).toBe(200);
    const [seq] = await published;
    await burst;
    await replaysServed;
    await shardCaughtUp(url, large);
    // What the poll did not show, the page after it does: the one new event, once.
    const shown = (woken.json.events as TimelineEvent[]).map(eventId);
    const rest = await pageToEnd(url, pair, { cursor: woken.json.next_cursor });
    expect([...shown, ...rest.events.map(eventId)]).toEqual([`${slow[0]}#${seq}`]);
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
  });
});
