// Stream descriptions across real server restarts: the two data-dir files,
// a data dir whose stream directories hold stream.json + stream.json.bak
// (as servers before those files wrote them), and a lost main file.
import { describe, it, expect } from "vitest";
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { api, perTestServers, replayAll } from "../helpers/server.js";
import { escapeStreamId } from "../../src/shard/stream-config.js";

const { start, dir } = perTestServers();

const MAIN = "stream-descriptions.log";
const COPY = "stream-descriptions.copy.log";
const STREAMS = ["inst-a", "inst-b", "Inst_C"];

/** Creates the streams with a config of their own and 3 events each, and stops the server cleanly. */
async function populate(dataDir: string): Promise<void> {
  const s = await start(dataDir, ["--shards", "2"]);
  for (const [i, id] of STREAMS.entries()) {
    expect((await api(`${s.url}/v1/streams/${id}`, "PUT", { retention_ms: 1_000_000 + i })).status).toBe(201);
    expect((await api(`${s.url}/v1/streams/${id}/events`, "POST", { events: [1, 2, 3].map((n) => ({ type: "t", payload: n })) })).status).toBe(200);
  }
  expect(await s.stop()).toBe(0);
}

/** Each stream still has its config and events, and takes the next one at seq 4. */
async function checkStreams(url: string): Promise<void> {
  for (const [i, id] of STREAMS.entries()) {
    const info = (await api(`${url}/v1/streams/${id}`, "GET")).json;
    expect(info.retention_ms).toBe(1_000_000 + i);
    expect(info.damaged_files).toBeUndefined();
    expect((await replayAll(url, id)).map((e) => e.payload)).toEqual([1, 2, 3]);
  }
}

describe("stream descriptions", () => {
  it("new streams are described in the data dir's two files, not in their directories, and keep their config through a restart", async () => {
    const dataDir = dir();
    await populate(dataDir);
    for (const id of STREAMS) expect(readdirSync(join(dataDir, "streams", escapeStreamId(id)))).toEqual(["00000000000000000001.log"]);
    expect(readFileSync(join(dataDir, MAIN), "utf8")).toBe(readFileSync(join(dataDir, COPY), "utf8"));
    const s = await start(dataDir, ["--shards", "2"]);
    await checkStreams(s.url);
  });

  it("a data dir of stream.json + stream.json.bak directories (written before the files) opens, and a config change moves that stream's description to the files", async () => {
    const dataDir = dir();
    await populate(dataDir);
    // The old shape: each description as stream.json and its copy, and no files.
    for (const line of readFileSync(join(dataDir, MAIN), "utf8").split("\n").filter(Boolean)) {
      const [name, text] = line.split("\t");
      for (const f of ["stream.json", "stream.json.bak"]) writeFileSync(join(dataDir, "streams", name, f), text);
    }
    rmSync(join(dataDir, MAIN));
    rmSync(join(dataDir, COPY));
    let s = await start(dataDir, ["--shards", "2"]);
    await checkStreams(s.url);
    expect((await api(`${s.url}/v1/streams/inst-a`, "PUT", { retention_ms: 1_000_000 })).status).toBe(200);
    expect(existsSync(join(dataDir, "streams", "inst-a", "stream.json"))).toBe(false);
    expect(existsSync(join(dataDir, "streams", "inst-b", "stream.json"))).toBe(true);
    expect(await s.stop()).toBe(0);
    s = await start(dataDir, ["--shards", "2"]);
    await checkStreams(s.url);
    expect((await api(`${s.url}/v1/streams/inst-b/events`, "POST", { events: [{ type: "t" }] })).json.first_seq).toBe(4);
  });

  it("with the main file gone the copy describes every stream, the loss is reported, and the start rewrites the main file", async () => {
    const dataDir = dir();
    await populate(dataDir);
    const copy = readFileSync(join(dataDir, COPY), "utf8");
    rmSync(join(dataDir, MAIN));
    const s = await start(dataDir, ["--shards", "2"]);
    expect(s.output()).toContain(`recovery: DAMAGED ${MAIN} holds 0 lines and ${COPY} 3: one was cut or torn`);
    await checkStreams(s.url);
    expect(readFileSync(join(dataDir, MAIN), "utf8").split("\n").filter(Boolean).sort()).toEqual(copy.split("\n").filter(Boolean).sort());
  });
});
