// A full disk: the data dir on a small tmpfs of our own, filled by
// publishing. Publishes are refused with 503 disk_full (JSON and FlatBuffers,
// process and fsync streams, a batch that rolls to a new segment, a stream
// config write, a new stream); nothing acknowledged is lost, no batch is half
// there, service comes back by itself when space returns, and a restart finds
// everything as it was.
import { describe, it, expect } from "vitest";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync, statfsSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Consumer } from "../helpers/consumer.js";
import { api, startServer, type TestServer } from "../helpers/server.js";
import { failures, History } from "./history.js";
import { CheckpointPoller, GroupConsumer, Producer, readBack, runSeed, rng, setUpStreams, sleep, type Target } from "./load.js";
import { recordResult, scaled } from "./scale.js";
import { linesOfKind } from "../helpers/log-lines.js";

const TMPFS_BYTES = 8 << 20;
const FILLER_BYTES = 1 << 20;
/** Free space at the start of each round: enough to roll segments while filling it. */
const ROOM_BYTES = 3 << 20;
const SEGMENT_BYTES_MAX = 1 << 20;
const STREAMS = ["df.proc", "df.sync"];
const GROUP = "g";
/** Acks sent one by one on a full disk: 29-byte records, more than two 4 KiB pages. */
const LATE_ACKS = 400;
/** Inodes of the tmpfs in the no-inodes test: the data dir's files plus a few fillers. */
const INODES = 400;
const ROUNDS = scaled(2, 8);

const combos = STREAMS.flatMap((stream) => [false, true].map((binary) => ({ stream, binary })));
const label = (c: { stream: string; binary: boolean }) => `${c.stream} ${c.binary ? "flatbuffers" : "json"}`;

describe("disk full", () => {
  it(`a full disk refuses publishes with 503 disk_full, loses and halves nothing, and serves again by itself when space returns (${ROUNDS} rounds)`, async () => {
    const seed = runSeed("disk full");
    const mnt = mkdtempSync(join(tmpdir(), "ticker-diskfull-"));
    // No skip: a machine where this cannot mount cannot run the fault suite.
    execFileSync("mount", ["-t", "tmpfs", "-o", `size=${TMPFS_BYTES}`, "tmpfs", mnt]);
    const dataDir = join(mnt, "data");
    const history = new History();
    const producer = new Producer("df", STREAMS, history, rng(seed), { payloadPad: 1000 });
    let s: TestServer | null = null;
    const consumers = STREAMS.map((st) => new GroupConsumer(history, st, GROUP));
    const poller = new CheckpointPoller(
      history,
      STREAMS.map((stream) => ({ stream, group: GROUP })),
    );
    const refused: Record<string, number> = {};
    let rounds = 0;
    let acceptedRetentionMs = 0;
    try {
      s = await startServer({ dataDir, args: ["--segment-bytes-max", String(SEGMENT_BYTES_MAX)] });
      const target: Target = { url: s.url };
      await setUpStreams(s.url, STREAMS, [GROUP], ["df.sync"]);
      for (const c of consumers) c.start(target);
      poller.start(target);
      for (; rounds < ROUNDS; rounds++) {
        // Each round starts with ROOM_BYTES free, a filler file taking part of it.
        const st = statfsSync(mnt);
        execFileSync("mount", ["-o", `remount,size=${(st.blocks - st.bfree) * st.bsize + ROOM_BYTES}`, mnt]);
        const filler = join(mnt, `filler-${rounds}`);
        writeFileSync(filler, Buffer.alloc(FILLER_BYTES, 1));
        // Fill with large batches (each one rolls a 1 MiB segment when the
        // active one is not empty), then with single events to the brim.
        const seen = new Set<string>();
        for (let i = 0; i < 400 && seen.size < combos.length; i++) {
          const c = combos[i % combos.length];
          const n = i % 3 === 0 ? 1000 : 200;
          const r = await producer.send(target, producer.batch(c.stream, n, c.binary, i % 2 === 0));
          if (r.status === 503 && r.code === "disk_full") {
            seen.add(label(c));
            refused[n === 1000 ? "rolling batches" : "batches"] = (refused[n === 1000 ? "rolling batches" : "batches"] ?? 0) + 1;
          }
        }
        for (let i = 0; i < 4000 && seen.size < 2 * combos.length; i++) {
          const c = combos[i % combos.length];
          const r = await producer.send(target, producer.batch(c.stream, 1, c.binary, true));
          if (r.status === 503 && r.code === "disk_full") seen.add(`${label(c)} single`);
        }
        expect([...seen].sort()).toEqual([...combos.map(label), ...combos.map((c) => `${label(c)} single`)].sort());
        // A batch that must roll to a new segment (it does not fit in the rest of the active one).
        for (const c of combos) {
          const r = await producer.send(target, producer.batch(c.stream, 1000, c.binary, false));
          expect(r, `${label(c)} rolling batch on a full disk`).toMatchObject({ status: 503, code: "disk_full" });
        }
        // Control-plane writes: a new stream is refused whole; a config change is
        // refused whole, or applied whole when its description's two lines fit
        // in blocks the description files already have (they are appended).
        const before = (await api(`${s.url}/v1/streams/df.proc`, "GET")).json;
        const put = await api(`${s.url}/v1/streams/df.proc`, "PUT", { retention_ms: before.retention_ms + 1 });
        if (put.status === 200) expect((await api(`${s.url}/v1/streams/df.proc`, "GET")).json.retention_ms).toBe(before.retention_ms + 1);
        else {
          expect(put.status, JSON.stringify(put.json)).toBe(503);
          expect(put.json.error.code).toBe("disk_full");
          expect((await api(`${s.url}/v1/streams/df.proc`, "GET")).json.retention_ms).toBe(before.retention_ms);
        }
        const fresh = await api(`${s.url}/v1/streams/df.new${rounds}/events`, "POST", { events: [{ type: "t" }] });
        expect(fresh.status).toBe(503);
        expect(fresh.json.error.code).toBe("disk_full");
        // Acks while the disk is full: more than a page of checkpoint records, so their writes fail.
        const late = await Consumer.connect(s.url, "df.proc", `group=late${rounds}&from=earliest`, { keepMessages: false });
        await late.eventsThrough(LATE_ACKS);
        for (let seq = 1; seq <= LATE_ACKS; seq++) {
          late.send({ type: "ack", seq });
          await sleep(1);
        }
        await sleep(100);
        // Reads go on while the disk is full.
        expect((await api(`${s.url}/v1/streams/df.sync/events?from=1&limit=1`, "GET")).status).toBe(200);

        // Space returns (a file deleted, or the filesystem grown): service
        // resumes without a restart, and the acks the consumers sent while
        // the disk was full are written without a new one.
        if (rounds % 2 === 0) rmSync(filler);
        else {
          const full = statfsSync(mnt);
          execFileSync("mount", ["-o", `remount,size=${full.blocks * full.bsize + FILLER_BYTES}`, mnt]);
        }
        for (const st of STREAMS) {
          const head = (await api(`${s.url}/v1/streams/${st}`, "GET")).json.head_seq;
          await expect.poll(async () => (await api(`${s!.url}/v1/streams/${st}/checkpoint?group=${GROUP}`, "GET")).json.seq, { timeout: 5000 }).toBe(head);
        }
        for (const c of combos) {
          const r = await producer.send(target, producer.batch(c.stream, 10, c.binary, true));
          expect(r, `${label(c)} after space returned`).toMatchObject({ status: 200 });
        }
        await expect
          .poll(async () => (await api(`${s!.url}/v1/streams/df.proc/checkpoint?group=late${rounds}`, "GET")).json?.seq, { timeout: 5000 })
          .toBe(LATE_ACKS);
        await late.close();
        const accepted = await api(`${s.url}/v1/streams/df.proc`, "PUT", { retention_ms: before.retention_ms + 2 });
        expect(accepted.status).toBe(200);
        acceptedRetentionMs = accepted.json.retention_ms;
        expect((await api(`${s.url}/v1/streams/df.new${rounds}/events`, "POST", { events: [{ type: "t" }] })).json).toMatchObject({
          first_seq: 1,
          last_seq: 1,
        });
        await api(`${s.url}/v1/streams/df.new${rounds}`, "DELETE");
        expect(s.proc.exitCode).toBeNull();
      }
      // Every ack a consumer sent while the disk was full is written once there is room.
      await sleep(300);
      await Promise.all(consumers.map((c) => c.stop()));
      await poller.stop();
      await poller.pollOnce(target);
      const replayed = await readBack(s.url, STREAMS);
      const counts = history.check(replayed);
      const checkpointFailures = s
        .output()
        .split("\n")
        .filter((l) => /checkpoint of group .* not written.*disk_full/.test(l)).length;
      // The operator is told, in a line or a few (not one per refused publish).
      const diskFull = linesOfKind(s.output(), "disk_full");
      expect(diskFull.length).toBeGreaterThan(0);
      expect(diskFull[0]).toMatchObject({ level: "error", code: "disk_full" });
      await s.stop();
      s = await startServer({ dataDir, args: ["--segment-bytes-max", String(SEGMENT_BYTES_MAX)] });
      target.url = s.url;
      await poller.pollOnce(target);
      const after = history.check(await readBack(s.url, STREAMS));
      // The config is the last one accepted, whatever was refused on the full disk.
      expect((await api(`${s.url}/v1/streams/df.proc`, "GET")).json.retention_ms).toBe(acceptedRetentionMs);
      // The acks taken on a full disk are still there after a restart.
      for (let r = 0; r < rounds; r++) expect((await api(`${s.url}/v1/streams/df.proc/checkpoint?group=late${r}`, "GET")).json.seq).toBe(LATE_ACKS);
      console.log(`disk full: ${rounds} rounds, refused ${JSON.stringify(refused)}, ${JSON.stringify(counts)}; after restart ${JSON.stringify(after)}`);
      const segments = (readdirSync(dataDir, { recursive: true }) as string[]).filter((f) => /\d{20}\.log$/.test(f)).length;
      recordResult({
        fault: "disk full (tmpfs)",
        setup: `tmpfs data dir (8 MiB, grown 3 MiB a round), 1 MiB segments, process + fsync streams, JSON + FlatBuffers; filled by publishing, freed by deleting a filler file or remounting larger; seed ${seed}`,
        cases: rounds,
        survived: Object.keys(failures(after)).length === 0 && Object.keys(failures(counts)).length === 0 ? rounds : 0,
        acked: after.acked,
        lost: after.lost,
        duplicates: after.duplicated,
        gaps: after.gaps,
        other: {
          "half batches": after.halfBatches,
          "checkpoint regressions": after.checkpointRegressions,
          "503 disk_full": Object.values(refused).reduce((a, b) => a + b, 0),
          "checkpoint writes refused": checkpointFailures,
        },
      });
      expect(producer.stats.unexpected).toEqual([]);
      expect(checkpointFailures, "checkpoint writes that hit the full disk").toBeGreaterThan(0);
      expect(failures(counts)).toEqual({});
      expect(failures(after)).toEqual({});
      expect(after.acked).toBeGreaterThan(1000);
      expect(after.delivered).toBeGreaterThan(0);
      expect(segments).toBeGreaterThan(STREAMS.length); // batches rolled to new segments
    } finally {
      await Promise.all(consumers.map((c) => c.stop()));
      await poller.stop();
      if (s) await s.stop();
      execFileSync("umount", [mnt]);
      rmSync(mnt, { recursive: true, force: true });
    }
  });

  it("no free inodes at a segment roll, at each file the roll makes, refuses the publish with 503 and the stream serves again when inodes return", async () => {
    const seed = runSeed("no inodes");
    const mnt = mkdtempSync(join(tmpdir(), "ticker-inodes-"));
    execFileSync("mount", ["-t", "tmpfs", "-o", `size=${64 << 20},nr_inodes=${INODES}`, "tmpfs", mnt]);
    const dataDir = join(mnt, "data");
    const history = new History();
    const producer = new Producer("ino", ["ino"], history, rng(seed), { payloadPad: 1000 });
    let s: TestServer | null = null;
    const exits: Array<number | null> = [];
    let refused = 0;
    try {
      s = await startServer({ dataDir, args: ["--segment-bytes-max", String(64 << 10)] });
      const target: Target = { url: s.url };
      await setUpStreams(s.url, ["ino"], [], []);
      // 0 free inodes: the roll's first file fails; 1, 2: a later one (the
      // roll makes the next segment, .idx and .tidx); 3: the roll goes through.
      for (let free = 0; free <= 3; free++) {
        for (const binary of [false, true]) {
          expect((await producer.send(target, producer.batch("ino", 10, binary, true))).status).toBe(200); // the active segment is not empty
          const fillers: string[] = [];
          while (statfsSync(mnt).ffree > free) {
            const f = join(mnt, `inode-${fillers.length}`);
            writeFileSync(f, "");
            fillers.push(f);
          }
          // 70 events of 1 KB do not fit in what is left of a 64 KiB segment: the batch rolls.
          const r = await producer.send(target, producer.batch("ino", 70, binary, true));
          if (free < 3) {
            expect(r, `${free} free inodes, ${binary ? "flatbuffers" : "json"}`).toMatchObject({ status: 503, code: "disk_full" });
            refused++;
          } else expect(r.status).toBe(200);
          for (const f of fillers) rmSync(f);
          // A batch that fits, then one that rolls: both go through again.
          for (const n of [1, 70])
            expect((await producer.send(target, producer.batch("ino", n, binary, true))).status, `${n} events after inodes returned`).toBe(200);
        }
      }
      const counts = history.check(await readBack(s.url, ["ino"]));
      exits.push(await s.stop());
      s = await startServer({ dataDir, args: ["--segment-bytes-max", String(64 << 10)] });
      const after = history.check(await readBack(s.url, ["ino"]));
      console.log(`no inodes: refused ${refused}, ${JSON.stringify(after)}`);
      recordResult({
        fault: "no free inodes at a segment roll (tmpfs nr_inodes)",
        setup: `64 KiB segments, JSON + FlatBuffers batches that roll, 0-3 inodes free; seed ${seed}`,
        cases: 8,
        survived: Object.keys(failures(after)).length === 0 && Object.keys(failures(counts)).length === 0 && exits[0] === 0 ? 8 : 0,
        acked: after.acked,
        lost: after.lost,
        duplicates: after.duplicated,
        gaps: after.gaps,
        other: { "half batches": after.halfBatches, "503 disk_full": refused },
      });
      expect(exits).toEqual([0]);
      expect(producer.stats.unexpected).toEqual([]);
      expect(failures(counts)).toEqual({});
      expect(failures(after)).toEqual({});
    } finally {
      if (s) await s.stop();
      execFileSync("umount", [mnt]);
      rmSync(mnt, { recursive: true, force: true });
    }
  });
});
