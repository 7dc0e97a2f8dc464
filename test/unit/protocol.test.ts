// The front-shard messages in the ring (src/shard/protocol.ts): what the
// writer puts in, the reader takes out, and a length the writer cannot have
// written makes the reader throw instead of reading past the message.
import { describe, it, expect } from "vitest";
import { Ring } from "../../src/ring/ring.js";
import { ContentType, Op, readRequest, readResponse, requestBytes, writeRequest, writeResponse } from "../../src/shard/protocol.js";

const ring = () => new Ring(Ring.allocate(4096));

describe("front-shard messages", () => {
  it("a request reads back with its op, id, meta and body; one over the ring's bound is refused by the writer", () => {
    const r = ring();
    const body = Buffer.from("payload bytes");
    expect(writeRequest(r, Op.Publish, 42, { stream: "s", ct: ContentType.Json }, body)).toBe(true);
    const req = readRequest(r, r.read()!);
    expect([req.op, req.reqId, req.meta, Buffer.from(req.body).toString()]).toEqual([Op.Publish, 42, { stream: "s", ct: ContentType.Json }, "payload bytes"]);
    r.release();
    const meta = { stream: "s", ct: ContentType.Json };
    const tooBig = new Uint8Array(r.messageBytesMax - requestBytes(JSON.stringify(meta).length, 0) + 1);
    expect(() => writeRequest(r, Op.Publish, 43, meta, tooBig)).toThrow(RangeError);
    expect(writeRequest(r, Op.Publish, 43, meta, tooBig.subarray(1))).toBe(true);
  });

  it("the shard's reader throws on a request whose meta length runs past the message", () => {
    const r = ring();
    writeRequest(r, Op.Publish, 1, { stream: "s", ct: ContentType.Json }, Buffer.from("body"));
    const msg = r.read()!;
    new DataView(r.buffer, 128).setUint32(msg.offset + 4, msg.length, true); // meta length = whole message
    expect(() => readRequest(r, msg)).toThrow(/protocol invariant/);
  });

  it("the front's reader throws on a response too short for its header", () => {
    const r = ring();
    expect(writeResponse(r, 5, 200, ContentType.Json, "{}")).toBe(true);
    const msg = r.read()!;
    expect(readResponse(r, msg).reqId).toBe(5);
    expect(() => readResponse(r, { ...msg, length: 4 })).toThrow(/protocol invariant/);
  });
});
