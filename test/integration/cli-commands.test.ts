// The client commands of the `ticker` binary (dist build: run `npm run build`
// first) as a script runs them, against one real server: what each prints,
// with and without --json, what it changes on the server (read back through
// the client or another command), and its exit status.
import { execFile, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Ticker } from "../../src/client/index.js";
import { TICKER_MAIN } from "../harness/ticker.js";
import { startServer, type TestServer } from "../helpers/server.js";

const run = promisify(execFile);
/** A call redrives one letter: `dlq --redrive` has to follow `next`. */
const REDRIVE_LETTERS_MAX = 1;

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

let s: TestServer;
let client: Ticker;
let work: string;

/** Runs `ticker --url <server> <args>` to its end, with `input` on stdin. */
function ticker(args: string[], input = "", url = s.url): Promise<Ran> {
  const child = spawn(process.execPath, [TICKER_MAIN, "--url", url, ...args], { stdio: ["pipe", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
  child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
  child.stdin.end(input);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`ticker ${args.join(" ")} did not end:\n${stdout}\n${stderr}`));
    }, 20_000);
    child.once("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** `ticker --json <args>`, which must succeed; its stdout parsed. */
async function json(args: string[], input = ""): Promise<any> {
  const r = await ticker(["--json", ...args], input);
  expect(r.code, `${args.join(" ")}: ${r.stderr}`).toBe(0);
  expect(r.stderr).toBe("");
  return JSON.parse(r.stdout);
}

const ndjson = (text: string): any[] =>
  text
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => JSON.parse(l));

/** What publish takes from an event as replay prints it: everything but the server's fields. */
const published = ({ seq: _s, stream: _t, ingest_ts: _i, ...e }: any) => e;

const EVENTS = [
  { type: "trade", key: "BTC-USD", producer_id: "feed-a", producer_seq: 1, producer_ts: 1764000000000, idempotency_key: "a:1", payload: { px: 91234.5 } },
  { type: "blob", key: "k2", idempotency_key: "a:2", payload_base64: Buffer.from([0, 1, 2, 255]).toString("base64") },
  { type: "bare", idempotency_key: "a:3" },
  { type: "text", idempotency_key: "a:4", payload: "a string\nwith a newline" },
];
const lines = (events: unknown[]) => `${events.map((e) => JSON.stringify(e)).join("\n")}\n`;

/** `n` events of about 100 bytes a line, published through the client. */
async function fill(stream: string, n: number): Promise<void> {
  const producer = client.producer();
  await producer.send(
    stream,
    Array.from({ length: n }, (_, i) => ({ type: "fill", payload: { i, pad: "x".repeat(40) } })),
  );
  await producer.close();
}

beforeAll(async () => {
  s = await startServer({ args: ["--redrive-letters-max", String(REDRIVE_LETTERS_MAX)] });
  client = new Ticker({ url: s.url });
  work = mkdtempSync(join(tmpdir(), "ticker-cli-"));
});
afterAll(async () => {
  client.close();
  await s.stop();
  rmSync(work, { recursive: true, force: true });
});

describe("ticker publish and replay", () => {
  it("events published from stdin and from a file replay as they were given, with a summary on stderr or as JSON", async () => {
    const first = await ticker(["publish", "pr.stdin"], lines(EVENTS));
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toBe("");
    expect(first.stderr).toMatch(/^4 events published \(seqs 1\.\.4\) to pr\.stdin in [\d.]+ s, \d+ events\/s\n$/);
    const file = join(work, "events.ndjson");
    writeFileSync(file, `\n${lines(EVENTS)}\n`); // blank lines are skipped
    const summary = await json(["publish", "pr.file", "--file", file, "--format", "json", "--batch-events", "2", "--linger-ms", "0"]);
    expect(summary).toMatchObject({ stream: "pr.file", published: 4, duplicates: 0, first_seq: 1, last_seq: 4 });
    expect(summary.events_per_s).toBeGreaterThan(0);
    for (const stream of ["pr.stdin", "pr.file"]) {
      const r = await ticker(["replay", stream]);
      expect(r.code).toBe(0);
      expect(r.stderr).toMatch(/^4 events replayed \(seqs 1\.\.4\) in [\d.]+ s\n$/);
      const events = ndjson(r.stdout);
      expect(events.map((e) => [e.seq, e.stream])).toEqual([1, 2, 3, 4].map((seq) => [seq, stream]));
      expect(events.map(published)).toEqual(EVENTS);
    }
    // Replay's lines publish again as they are: a copy, whose keys the copy's dedup window now holds.
    const copy = await ticker(["replay", "pr.file"]);
    expect((await json(["publish", "pr.copy"], copy.stdout)).published).toBe(4);
    expect((await json(["publish", "pr.copy"], copy.stdout)).duplicates).toBe(4);
    expect(ndjson((await ticker(["replay", "pr.copy"])).stdout).map(published)).toEqual(EVENTS);
  });

  it("replay takes a range and prints payloads alone with --format payload; --json prints only the events", async () => {
    await ticker(["publish", "pr.range"], lines(EVENTS));
    expect(ndjson((await ticker(["replay", "pr.range", "--from", "2", "--to", "3"])).stdout).map((e) => e.seq)).toEqual([2, 3]);
    expect((await ticker(["replay", "pr.range", "--from", "latest"])).stdout).toBe("");
    const payloads = await ticker(["replay", "pr.range", "--format", "payload"]);
    expect(payloads.stdout).toBe('{"px":91234.5}\nAAEC/w==\n\n"a string\\nwith a newline"\n');
    const quiet = await ticker(["--json", "replay", "pr.range", "--from-time", "0"]);
    expect([quiet.code, quiet.stderr]).toEqual([0, ""]);
    expect(ndjson(quiet.stdout)).toHaveLength(4);
  });

  it("replay and tail take --types and --keys (a value ending in * is a prefix) and --max-rate; the server filters", async () => {
    await ticker(["publish", "pr.filter"], lines(EVENTS));
    const r = await ticker(["replay", "pr.filter", "--types", "trade,bl*", "--max-rate", "1000"]);
    expect(r.code, r.stderr).toBe(0);
    expect(ndjson(r.stdout).map((e) => e.seq)).toEqual([1, 2]);
    expect(ndjson((await ticker(["replay", "pr.filter", "--keys", "k2"])).stdout).map((e) => e.seq)).toEqual([2]);
    const tail = await ticker(["tail", "pr.filter", "--from", "earliest", "--types", "text", "--count", "1"]);
    expect(ndjson(tail.stdout).map((e) => e.seq)).toEqual([4]);
    const bad = await ticker(["replay", "pr.filter", "--types", "a*b"]);
    expect([bad.code, bad.stderr]).toEqual([5, expect.stringContaining("invalid_parameter")]);
  });

  it("a bad line exits 2 naming its line; the lines before it are published and none after it", async () => {
    const input = `${lines(EVENTS.slice(0, 2))}\n{"type": "x", "colour": 1}\n${lines(EVENTS.slice(2))}`;
    const r = await ticker(["publish", "pr.bad"], input);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/line 4: unknown field "colour"; 2 events published \(seqs 1\.\.2\) from the lines before it, nothing from line 4 on/);
    expect(ndjson((await ticker(["replay", "pr.bad"])).stdout).map(published)).toEqual(EVENTS.slice(0, 2));
    const cases: Array<[string, RegExp]> = [
      ["{not json", /line 1: not JSON/],
      ["[1]", /line 1: not a JSON object/],
      ['{"key":"k"}', /line 1: "type" must be a non-empty string/],
      ['{"type":"t","producer_seq":-1}', /line 1: "producer_seq" must be a non-negative integer/],
      ['{"type":"t","payload_base64":"not base64!"}', /line 1: "payload_base64" must be base64 text/],
    ];
    await Promise.all(
      cases.map(async ([line, message]) => {
        const bad = await ticker(["--json", "publish", "pr.bad2"], `${line}\n${lines(EVENTS)}`);
        expect(bad.code, line).toBe(2);
        expect(bad.stdout).toBe("");
        const error = JSON.parse(bad.stderr).error;
        expect(error.message).toMatch(message);
        expect(error).toMatchObject({ line: 1, published: 0 });
      }),
    );
    expect((await ticker(["stream", "pr.bad2"])).code).toBe(5); // nothing was sent, so nothing was created
    expect((await ticker(["publish", "pr.bad2", "--file", join(work, "missing.ndjson")])).code).toBe(2);
  });
});

describe("ticker tail", () => {
  it("with a group and --count: prints that many events, acks them (lag 0 after), and the group resumes after them", async () => {
    await ticker(["publish", "tl.group"], lines(EVENTS));
    const r = await ticker(["tail", "tl.group", "--group", "g", "--from", "earliest", "--count", "4"]);
    expect([r.code, r.stderr]).toEqual([0, ""]);
    expect(ndjson(r.stdout).map(published)).toEqual(EVENTS);
    expect(await json(["lag", "tl.group", "--group", "g"])).toMatchObject({ group: "g", head_seq: 4, checkpoint_seq: 4, lag: 0 });
    await ticker(["publish", "tl.group"], lines([{ type: "fifth" }]));
    const next = await ticker(["--json", "tail", "tl.group", "--group", "g", "--count", "1"]);
    expect(ndjson(next.stdout).map((e) => [e.seq, e.type])).toEqual([[5, "fifth"]]);
  });

  it("without a group: from --from, payloads alone with --format payload, and events published while it runs", async () => {
    await ticker(["publish", "tl.live"], lines(EVENTS));
    const tail = ticker(["tail", "tl.live", "--from", "4", "--count", "2", "--format", "payload"]);
    expect((await ticker(["publish", "tl.live"], lines([{ type: "late", payload: 7 }]))).code).toBe(0);
    const r = await tail;
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('"a string\\nwith a newline"\n7\n');
  });

  it("--conflate from earliest prints the newest event of each key; with --group it is a usage error", async () => {
    const quotes = Array.from({ length: 300 }, (_, i) => ({ type: "quote", key: `k${i % 3}`, payload: i }));
    await ticker(["publish", "tl.conflate"], lines(quotes));
    const r = await ticker(["tail", "tl.conflate", "--from", "earliest", "--conflate", "--count", "3"]);
    expect([r.code, r.stderr]).toEqual([0, ""]);
    expect(ndjson(r.stdout).map((e) => [e.seq, e.key])).toEqual([
      [298, "k0"],
      [299, "k1"],
      [300, "k2"],
    ]);
    const both = await ticker(["tail", "tl.conflate", "--conflate", "--group", "g"]);
    expect([both.code, both.stderr]).toEqual([2, expect.stringContaining("--conflate")]);
  });

  it("piped into head -n 3, tail and replay exit 0 once head has gone; SIGINT ends tail with 0 and its printed events acked", async () => {
    await fill("tl.many", 5000); // more than a pipe holds: a write meets the closed pipe
    for (const command of ["tail", "replay"]) {
      const { stdout } = await run(
        "bash",
        ["-c", `'${process.execPath}' '${TICKER_MAIN}' --url ${s.url} ${command} tl.many --from earliest | head -n 3; echo "status \${PIPESTATUS[0]}"`],
        { timeout: 20_000 },
      );
      const out = stdout.trim().split("\n");
      expect(out.slice(0, 3).map((l) => JSON.parse(l).seq)).toEqual([1, 2, 3]);
      expect(out[3], command).toBe("status 0");
    }
    const child = spawn(process.execPath, [TICKER_MAIN, "--url", s.url, "tail", "tl.many", "--group", "sig", "--from", "earliest"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let printed = 0;
    child.stdout.on("data", (c: Buffer) => (printed += c.toString().split("\n").length - 1));
    await expect.poll(() => printed, { timeout: 10_000 }).toBe(5000);
    child.kill("SIGINT");
    expect(await new Promise((resolve) => child.once("exit", resolve))).toBe(0);
    expect(await json(["lag", "tl.many", "--group", "sig"])).toMatchObject({ checkpoint_seq: 5000, lag: 0 });
  });
});

describe("ticker streams and stream", () => {
  it("stream creates, shows, updates and deletes; streams lists; each refuses what does not fit", async () => {
    const created = await json(["stream", "st.a", "--create", "--retention-ms", "60000", "--durability", "fsync", "--retention-bytes", "1000000"]);
    expect(created).toMatchObject({ id: "st.a", head_seq: 0, retention_ms: 60000, durability: "fsync", retention_bytes: 1000000 });
    const again = await ticker(["stream", "st.a", "--create"]);
    expect(again.code).toBe(5);
    expect(again.stderr).toMatch(/stream st\.a exists already/);
    expect((await json(["stream", "st.a", "--create", "--if-not-exists", "--retention-ms", "5"])).retention_ms).toBe(60000);
    const updated = await json(["stream", "st.a", "--update", "--retention-bytes", "none", "--producer-ordering", "true", "--gap-timeout-ms", "100"]);
    expect(updated).toMatchObject({ retention_ms: 60000, retention_bytes: null, producer_ordering: true, gap_timeout_ms: 100 });
    const shown = await ticker(["stream", "st.a"]);
    expect(shown.code).toBe(0);
    for (const line of [/^id +st\.a$/m, /^retention_ms +60000$/m, /^durability +fsync$/m, /^retention_bytes +-$/m]) expect(shown.stdout).toMatch(line);
    expect((await json(["streams"])).find((x: any) => x.id === "st.a")).toMatchObject({ durability: "fsync" });
    const table = await ticker(["streams"]);
    expect(table.stdout).toMatch(/^STREAM +HEAD +FIRST +EVENTS +BYTES +RETENTION_MS +DURABILITY$/m);
    expect(table.stdout).toMatch(/^st\.a +0 +1 +0 +0 +60000 +fsync$/m);
    const refused: Array<[string[], number, RegExp]> = [
      [["stream", "st.none", "--update", "--retention-ms", "5"], 5, /does not exist/],
      [["stream", "st.a", "--retention-ms", "5"], 2, /--create or --update/],
      [["stream", "st.a", "--update"], 2, /needs a setting/],
      [["stream", "st.a", "--create", "--delete"], 2, /cannot be used with/],
      [["stream", "st.a", "--update", "--durability", "sometimes"], 2, /must be one of process, fsync/],
      [["stream", "st.a", "--update", "--retention-ms", "0"], 2, /must be an integer of at least 1/],
      [["stream", "bad id!"], 5, /invalid/],
    ];
    await Promise.all(
      refused.map(async ([args, code, message]) => {
        const r = await ticker(args);
        expect([r.code, args.join(" ")]).toEqual([code, args.join(" ")]);
        expect(r.stderr).toMatch(message);
      }),
    );
    expect(await json(["stream", "st.a", "--delete"])).toEqual({ id: "st.a", deleted: true });
    expect((await ticker(["stream", "st.a"])).code).toBe(5);
    expect((await ticker(["stream", "st.a", "--delete"])).code).toBe(5);
  });
});

describe("ticker groups, lag and checkpoint", () => {
  it("show each group's checkpoint, lag and members; checkpoint --set moves where the group resumes", async () => {
    await fill("gr.s", 10);
    await ticker(["tail", "gr.s", "--group", "a", "--from", "earliest", "--count", "4"]);
    await ticker(["checkpoint", "gr.s", "--group", "b", "--set", "9"]);
    const sub = client.consume("gr.s", { group: "a" }); // a connected member shows in groups
    await sub.ready;
    const groups = await json(["groups", "gr.s"]);
    expect(groups.map((g: any) => [g.group, g.checkpoint_seq, g.lag, g.members.map((m: any) => m.role)])).toEqual([
      ["a", 4, 6, ["active"]],
      ["b", 9, 1, []],
    ]);
    const table = await ticker(["groups", "gr.s"]);
    expect(table.stdout).toMatch(/^GROUP +CHECKPOINT +HEAD +LAG +LAG_MS +MEMBERS$/m);
    expect(table.stdout).toMatch(/^a +4 +10 +6 +\d+ +1 active$/m);
    expect(table.stdout).toMatch(/^b +9 +10 +1 +\d+ +none$/m);
    await sub.close();
    expect((await json(["lag", "gr.s"])).map((g: any) => [g.group, g.lag])).toEqual([
      ["a", 6],
      ["b", 1],
    ]);
    expect((await ticker(["lag", "gr.s", "--group", "b"])).stdout).toMatch(/^lag +1$/m);
    expect(await json(["checkpoint", "gr.s", "--group", "a"])).toEqual({ group: "a", seq: 4 });
    expect(await json(["checkpoint", "gr.s", "--group", "a", "--set", "8"])).toEqual({ group: "a", seq: 8 });
    expect((await ticker(["checkpoint", "gr.s", "--group", "a"])).stdout).toMatch(/^seq +8$/m);
    expect(ndjson((await ticker(["tail", "gr.s", "--group", "a", "--count", "2"])).stdout).map((e) => e.seq)).toEqual([9, 10]);
    const refused: Array<[string[], number]> = [
      [["checkpoint", "gr.s", "--group", "nobody"], 5],
      [["checkpoint", "gr.s", "--group", "a", "--set", "11"], 5],
      [["checkpoint", "gr.s"], 2],
      [["lag", "gr.s", "--group", "nobody"], 5],
    ];
    await Promise.all(refused.map(async ([args, code]) => expect([(await ticker(args)).code, args.join(" ")]).toEqual([code, args.join(" ")])));
  });
});

describe("ticker dlq", () => {
  it("lists the dead letters a group's nacks made, by group, and redrives them back once, following next", async () => {
    await ticker(["publish", "dl.jobs"], lines([1, 2, 3, 4].map((i) => ({ type: "job", key: `k${i}`, payload: { i } }))));
    expect((await ticker(["dlq", "dl.jobs"])).stderr).toBe("no dead letters for dl.jobs\n");
    // max_attempts 1: the first nack of a seq dead-letters it.
    const sub = client.consume("dl.jobs", { group: "w", from: "earliest", maxAttempts: 1 });
    for (let seq = 0; seq !== 4; ) {
      seq = ((await sub.next()).value as { seq: number }).seq;
      if (seq === 2 || seq === 4) sub.nack(seq, `boom ${seq}`);
      else sub.ack(seq);
    }
    // Open until the letters are written: the server drops a dead-lettering whose consumer has gone (the event comes again).
    await expect.poll(async () => ndjson((await ticker(["dlq", "dl.jobs"])).stdout).length, { timeout: 10_000 }).toBe(2);
    await sub.close();
    const letters = ndjson((await ticker(["--json", "dlq", "dl.jobs"])).stdout);
    expect(letters.map((l) => [l.stream, l.seq, l.type, l.payload.seq, l.payload.group, l.payload.reason, l.payload.event.key])).toEqual([
      ["dl.jobs.dlq", 1, "dead_letter", 2, "w", "boom 2", "k2"],
      ["dl.jobs.dlq", 2, "dead_letter", 4, "w", "boom 4", "k4"],
    ]);
    expect((await ticker(["dlq", "dl.jobs", "--group", "other"])).stdout).toBe("");
    expect(ndjson((await ticker(["dlq", "dl.jobs", "--from", "2", "--format", "payload"])).stdout).map((p) => p.seq)).toEqual([4]);
    // One letter a call on this server: two calls.
    const moved = await ticker(["dlq", "dl.jobs", "--redrive"]);
    expect([moved.code, moved.stdout]).toEqual([0, "moved 2, duplicates 0, skipped 0 (dlq seqs 1..2) in 2 calls\n"]);
    const redriven = ndjson((await ticker(["replay", "dl.jobs", "--from", "5"])).stdout);
    expect(redriven.map((e) => [e.seq, e.key, e.idempotency_key])).toEqual([
      [5, "k2", "redrive:1"],
      [6, "k4", "redrive:2"],
    ]);
    expect(await json(["dlq", "dl.jobs", "--redrive", "--max", "1"])).toEqual({ moved: 0, duplicates: 1, skipped: 0, from: 1, to: 1, calls: 1 });
    expect(await json(["dlq", "dl.jobs", "--redrive", "--group", "other"])).toMatchObject({ moved: 0, duplicates: 0, skipped: 2, calls: 2 });
    expect((await ticker(["replay", "dl.jobs"])).stderr).toMatch(/^6 events replayed/);
  });
});

describe("ticker bench", () => {
  it("prints publish and replay figures and deletes the stream it made, unless --keep", async () => {
    const r = await ticker(["bench", "--events", "2000", "--payload-bytes", "50"]);
    expect(r.code, r.stderr).toBe(0);
    const stream = /^(bench-\d+): 2000 events of 50 payload bytes, \d+ bytes in the log$/m.exec(r.stdout)?.[1];
    expect(stream).toBeDefined();
    expect(r.stdout).toMatch(/^publish +2000 events in [\d.]+ s: \d+ events\/s, [\d.]+ MB\/s$/m);
    expect(r.stdout).toMatch(/^replay +2000 events in [\d.]+ s: \d+ events\/s, [\d.]+ MB\/s$/m);
    expect(r.stderr).toBe(`deleted ${stream} (--keep keeps it)\n`);
    expect((await ticker(["stream", stream as string])).code).toBe(5);
    const kept = await json(["bench", "--events", "1000", "--stream", "bn.kept", "--keep"]);
    expect(kept).toMatchObject({ stream: "bn.kept", events: 1000, payload_bytes: 100, kept: true });
    expect(kept.publish.events_per_s).toBeGreaterThan(0);
    expect(kept.replay.mb_per_s).toBeGreaterThanOrEqual(0);
    expect((await json(["stream", "bn.kept"])).head_seq).toBe(1000);
    // A stream that was there is written to and never deleted.
    expect((await json(["bench", "--events", "1000", "--stream", "bn.kept"])).kept).toBe(true);
    expect((await json(["stream", "bn.kept"])).head_seq).toBe(2000);
  });
});

describe("exit statuses of the client commands", () => {
  it("an unknown stream is refused (5), with the server's error as JSON under --json", async () => {
    const commands = [
      ["replay", "no.such"],
      ["tail", "no.such"],
      ["stream", "no.such"],
      ["groups", "no.such"],
      ["lag", "no.such"],
      ["checkpoint", "no.such", "--group", "g"],
      ["dlq", "no.such"],
      ["dlq", "no.such", "--redrive"],
    ];
    await Promise.all(
      commands.map(async (args) => {
        const r = await ticker(["--json", ...args]);
        expect([r.code, r.stdout, args.join(" ")]).toEqual([5, "", args.join(" ")]);
        expect(JSON.parse(r.stderr).error).toMatchObject({ status: 404, code: "stream_not_found" });
      }),
    );
  });

  it("an unreachable server exits 6", async () => {
    const url = "http://127.0.0.1:1";
    const commands = [["streams"], ["publish", "x"], ["tail", "x"], ["replay", "x"], ["stream", "x", "--create"], ["bench", "--events", "1"]];
    await Promise.all(
      commands.map(async (args) => {
        const r = await ticker(args, lines([{ type: "a" }]), url);
        expect([r.code, args.join(" ")]).toEqual([6, args.join(" ")]);
        expect(r.stderr).toMatch(/cannot connect to 127\.0\.0\.1:1/);
      }),
    );
  });
});

describe("publish --file's progress bar", () => {
  it("in a terminal: a bar towards the file's event lines with events/s; piped: no bar, only the summary", async () => {
    const file = join(work, "progress.ndjson");
    writeFileSync(file, lines(Array.from({ length: 3000 }, (_, i) => ({ type: "p", payload: { i } }))));
    const command = `'${process.execPath}' '${TICKER_MAIN}' --url ${s.url} publish pb.s --file '${file}'`;
    const { stdout: screen } = await run("script", ["-qec", command, "/dev/null"], { timeout: 30_000 });
    expect(screen.replaceAll("\r", "")).toMatch(/publish pb\.s \[=+\] 100% \| 3000\/3000 events \| \d+ events\/s \| ETA 0s/);
    const piped = await ticker(["publish", "pb.s", "--file", file]);
    expect(piped.code).toBe(0);
    expect(piped.stderr).toMatch(/^3000 events published \(seqs 3001\.\.6000\) to pb\.s in [\d.]+ s, \d+ events\/s\n$/);
    const quiet = await run("script", ["-qec", `${command.replace("publish", "--json publish")} 2>&1 >/dev/null`, "/dev/null"], { timeout: 30_000 });
    expect(quiet.stdout).toBe("");
  });
});
