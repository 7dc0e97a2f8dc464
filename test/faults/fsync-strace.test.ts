// durability: fsync, proved from the system calls the server really makes:
// the server runs under strace, clients publish concurrently to an fsync
// stream, and the trace is read back. For every publish response written to
// a client socket there must be an fdatasync of that stream's segment file
// that began after the pwrite of the batch's records ended and ended before
// the response was written; and group commit must show (one fdatasync
// covering several waiting publishes). And a clean stop: every segment
// written since its last sync is fdatasynced before the server exits.
import { describe, it, expect } from "vitest";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { api, removeDir, tempDataDir } from "../helpers/server.js";
import { recordResult, scaled } from "./scale.js";
import { sleep } from "./load.js";

const MAIN = fileURLToPath(new URL("../../dist/src/cli/main.js", import.meta.url));
const STREAM = "fs.sync";
const CLIENTS = 16;
const PUBLISHES_PER_CLIENT = scaled(15, 100);

/** One system call from the trace, its unfinished and resumed halves joined. */
interface Call {
  pid: number;
  name: string;
  /** Arguments and result as strace printed them. */
  text: string;
  startUs: number;
  endUs: number;
}

const usOf = (t: string) => {
  const [h, m, s] = t.split(":");
  return Math.round(((Number(h) * 60 + Number(m)) * 60 + Number(s)) * 1e6);
};

/** Parses `strace -f -tt -T` output. */
export function parseTrace(text: string): Call[] {
  const calls: Call[] = [];
  const open = new Map<number, { name: string; start: number; text: string }>();
  for (const line of text.split("\n")) {
    const m = /^(\d+)\s+(\d\d:\d\d:\d\d\.\d+) (.*)$/.exec(line);
    if (!m) continue;
    const pid = Number(m[1]);
    const at = usOf(m[2]);
    const rest = m[3];
    const unfinished = /^(\w+)\((.*) <unfinished \.\.\.>$/.exec(rest);
    if (unfinished) {
      open.set(pid, { name: unfinished[1], start: at, text: unfinished[2] });
      continue;
    }
    const resumed = /^<\.\.\. (\w+) resumed>(.*?)(?: <\d+\.\d+>)?$/.exec(rest);
    if (resumed) {
      const o = open.get(pid);
      open.delete(pid);
      if (o) calls.push({ pid, name: o.name, text: o.text + resumed[2].replace(/\)\s+= /, ") = "), startUs: o.start, endUs: at });
      continue;
    }
    const whole = /^(\w+)\((.*)\)\s+= (.*?)(?: <(\d+\.\d+)>)?$/.exec(rest); // strace pads short calls before "="
    if (whole) calls.push({ pid, name: whole[1], text: `${whole[2]}) = ${whole[3]}`, startUs: at, endUs: at + Math.round(Number(whole[4] ?? 0) * 1e6) });
  }
  return calls.sort((a, b) => a.startUs - b.startUs);
}

interface FsyncProof {
  publishes: number;
  appends: number;
  fdatasyncs: number;
  /** Responses without an fdatasync between their pwrite and their write to the socket. */
  unproven: number;
  /** Most publishes covered by one fdatasync. */
  groupMax: number;
  publishesPerFdatasync: number;
}

/** Checks every publish response to STREAM in the trace against the segment's pwrites and fdatasyncs. */
export function proveFsync(calls: Call[], streamDir: string): FsyncProof {
  const fdPath = new Map<number, string>();
  const isSegment = (fd: number) => /\d{20}\.log$/.test(fdPath.get(fd) ?? "") && fdPath.get(fd)!.startsWith(`${streamDir}/`);
  const pwrites: Call[] = [];
  const syncs: Array<Call & { path: string }> = [];
  const writes: Array<{ path: string; call: Call }> = [];
  const responses: Array<{ first: number; last: number; count: number; call: Call }> = [];
  // Responses: the body of a publish answer (strace escapes the quotes).
  const answer = new RegExp(
    `\\\\"stream\\\\":\\\\"${STREAM.replace(".", "\\.")}\\\\",\\\\"first_seq\\\\":(\\d+),\\\\"last_seq\\\\":(\\d+),\\\\"count\\\\":(\\d+)`,
  );
  // In start order; an fd is mapped from the openat that returned it until its close.
  for (const c of calls) {
    const fd = Number(/^(\d+)/.exec(c.text)?.[1] ?? -1);
    if (c.name === "openat") {
      const m = /^AT_FDCWD, "([^"]+)".*\) = (\d+)$/.exec(c.text);
      if (m) fdPath.set(Number(m[2]), m[1]);
    } else if (c.name === "close") fdPath.delete(fd);
    else if (c.name === "pwrite64" && isSegment(fd)) {
      const m = /, (\d+), (\d+)\) = (-?\d+)$/.exec(c.text)!;
      if (Number(m[3]) !== Number(m[1])) throw new Error(`a short pwrite of the segment: ${c.text.slice(-60)}`);
      pwrites.push(c);
      writes.push({ path: fdPath.get(fd)!, call: c });
    } else if (c.name === "fdatasync" && isSegment(fd) && / = 0$/.test(c.text)) syncs.push({ ...c, path: fdPath.get(fd)! });
    else if (["sendto", "write", "writev", "sendmsg"].includes(c.name)) {
      const m = answer.exec(c.text);
      if (m) responses.push({ first: Number(m[1]), last: Number(m[2]), count: Number(m[3]), call: c });
    }
  }
  // One pwrite per appended batch, in seq order: the k-th answer (by seq) is the k-th pwrite.
  const appended = responses.filter((r) => r.count > 0).sort((a, b) => a.first - b.first);
  if (appended.length !== writes.length) throw new Error(`${appended.length} answers with events but ${writes.length} pwrites of the segment`);
  let unproven = 0;
  const covered = new Map<Call, number>();
  appended.forEach((r, k) => {
    const w = writes[k];
    const f = syncs.find((s) => s.path === w.path && s.startUs >= w.call.endUs && s.endUs <= r.call.startUs);
    if (!f) unproven++;
    else covered.set(f, (covered.get(f) ?? 0) + 1);
  });
  const groupMax = Math.max(0, ...covered.values());
  return {
    publishes: appended.length,
    appends: pwrites.length,
    fdatasyncs: syncs.length,
    unproven,
    groupMax,
    publishesPerFdatasync: Math.round((appended.length / Math.max(1, covered.size)) * 100) / 100,
  };
}

/** Segment files of `streamsDir` written and not fdatasynced since their last pwrite (a clean stop must leave none). */
export function unsyncedSegments(calls: Call[], streamsDir: string): { written: number; unsynced: string[] } {
  const fdPath = new Map<number, string>();
  const written = new Set<string>();
  /** Segments written since their last fdatasync: the end of that pwrite. */
  const lastWrite = new Map<string, number>();
  const isSegment = (path: string | undefined): path is string => path?.startsWith(`${streamsDir}/`) === true && /\d{20}\.log$/.test(path);
  // An fd names its file from the end of the openat that returned it: with two shard threads,
  // an openat may start before another thread's close of the same fd number has.
  const at = (c: Call) => (c.name === "openat" ? c.endUs : c.startUs);
  for (const c of [...calls].sort((a, b) => at(a) - at(b))) {
    const fd = Number(/^(\d+)/.exec(c.text)?.[1] ?? -1);
    const path = fdPath.get(fd);
    if (c.name === "openat") {
      const m = /^AT_FDCWD, "([^"]+)".*\) = (\d+)$/.exec(c.text);
      if (m) fdPath.set(Number(m[2]), m[1]);
    } else if (c.name === "close") fdPath.delete(fd);
    else if (c.name === "pwrite64" && isSegment(path)) {
      written.add(path);
      lastWrite.set(path, c.endUs);
    } else if (c.name === "fdatasync" && isSegment(path) && / = 0$/.test(c.text) && c.startUs >= (lastWrite.get(path) ?? Number.POSITIVE_INFINITY)) {
      lastWrite.delete(path);
    }
  }
  return { written: written.size, unsynced: [...lastWrite.keys()] };
}

/** The server under `strace -f`, tracing `calls`; resolves once it is ready. */
async function tracedServer(dataDir: string, calls: string, args: string[] = []) {
  const trace = join(dataDir, "..", `${dataDir.split("/").pop()}.strace`);
  const data = join(dataDir, "data");
  const proc = spawn(
    "strace",
    ["-f", "-tt", "-T", "-s", "1024", "-e", `trace=${calls}`, "-o", trace, process.execPath, MAIN, "serve", "--port", "0", "--data-dir", data, ...args],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let out = "";
  proc.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  proc.stderr!.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => proc.once("exit", (code) => r(code)));
  for (let i = 0; i < 600 && !out.includes("ticker ready") && proc.exitCode === null; i++) await sleep(50);
  if (!out.includes("ticker ready")) throw new Error(`the server under strace did not start: ${out}`);
  // The server's pid is in its data dir lock (strace's own pid is the parent's child).
  const pid = Number(readFileSync(join(data, "LOCK"), "utf8").trim());
  const url = `http://127.0.0.1:${/ticker listening on [^\s]+:(\d+)/.exec(out)![1]}`;
  return { trace, data, pid, url, exited, output: () => out };
}

describe("durability fsync under strace", () => {
  it("every publish answer to an fsync stream follows an fdatasync of its segment that began after its pwrite, and one fdatasync serves several publishes", async () => {
    const dataDir = tempDataDir("ticker-strace-");
    const server = await tracedServer(dataDir, "openat,close,fdatasync,pwrite64,write,writev,sendto,sendmsg");
    const { trace, data, url, exited } = server;
    let pid = server.pid;
    try {
      expect((await api(`${url}/v1/streams/${STREAM}`, "PUT", { durability: "fsync" })).status).toBe(201);
      let acked = 0;
      await Promise.all(
        Array.from({ length: CLIENTS }, async (_, c) => {
          for (let i = 0; i < PUBLISHES_PER_CLIENT; i++) {
            const events = Array.from({ length: 1 + ((c + i) % 3) }, (_, j) => ({ type: "t", payload: { c, i, j } }));
            const r = await api(`${url}/v1/streams/${STREAM}/events`, "POST", { events });
            expect(r.status, JSON.stringify(r.json)).toBe(200);
            acked += r.json.count;
          }
        }),
      );
      process.kill(pid, "SIGTERM");
      await exited; // strace exits with the server
      pid = 0;
      const proof = proveFsync(parseTrace(readFileSync(trace, "utf8")), join(data, "streams", STREAM));
      console.log(`fsync under strace: ${JSON.stringify(proof)}`);
      recordResult({
        fault: "durability fsync, from the system calls (strace)",
        setup: `${CLIENTS} concurrent clients, ${CLIENTS * PUBLISHES_PER_CLIENT} publishes of 1-3 events to one fsync stream, server under strace -f`,
        cases: proof.publishes,
        survived: proof.publishes - proof.unproven,
        acked,
        lost: 0,
        duplicates: 0,
        gaps: 0,
        other: { "answers before their fdatasync": proof.unproven, fdatasyncs: proof.fdatasyncs },
        bounds: { "publishes per fdatasync": proof.publishesPerFdatasync, "most publishes in one fdatasync": proof.groupMax },
      });
      expect(proof.publishes).toBe(CLIENTS * PUBLISHES_PER_CLIENT);
      expect(proof.unproven).toBe(0);
      expect(proof.groupMax).toBeGreaterThan(1); // group commit
    } finally {
      if (pid) process.kill(pid, "SIGKILL");
      await exited;
      removeDir(dataDir);
      removeDir(trace);
    }
  });

  it("a clean stop fdatasyncs every segment written since its last sync: process durability, rolled segments, and those the open-file cache closed", async () => {
    const dataDir = tempDataDir("ticker-strace-stop-");
    // 8 open files a shard for 24 streams of 4 segments each: most files were closed by the cache before the stop.
    const server = await tracedServer(dataDir, "openat,close,fdatasync,pwrite64", ["--shards", "2", "--open-files-max", "16", "--segment-bytes-max", "4096"]);
    const { trace, data, url, exited } = server;
    let pid = server.pid;
    try {
      const streams = Array.from({ length: 24 }, (_, i) => `stop.${i}`);
      for (let batch = 0; batch < 4; batch++) {
        await Promise.all(
          streams.map(async (stream) => {
            // ~5 KB a batch, past segment_bytes_max: each batch rolls the segment before it.
            const events = Array.from({ length: 20 }, (_, j) => ({ type: "t", payload: { batch, j, pad: "x".repeat(200) } }));
            const r = await api(`${url}/v1/streams/${stream}/events`, "POST", { events });
            expect(r.status, JSON.stringify(r.json)).toBe(200);
          }),
        );
      }
      process.kill(pid, "SIGTERM");
      expect(await exited).toBe(0);
      pid = 0;
      const { written, unsynced } = unsyncedSegments(parseTrace(readFileSync(trace, "utf8")), join(data, "streams"));
      expect(written).toBe(streams.length * 4);
      expect(unsynced).toEqual([]);
    } finally {
      if (pid) process.kill(pid, "SIGKILL");
      await exited;
      removeDir(dataDir);
      removeDir(trace);
    }
  });
});
