import { describe, it, expect } from "vitest";
import { encodeCommand, ReplyCounter, RespProtocolError, walkXrange, XrangeReader } from "../../loadtest/lib/resp.js";

const bulk = (s: string) => `$${Buffer.byteLength(s)}\r\n${s}\r\n`;

/** An XRANGE reply: entries of one field `p` each. */
function xrangeReply(entries: [id: string, value: string][]): Buffer {
  return Buffer.from(`*${entries.length}\r\n${entries.map(([id, v]) => `*2\r\n${bulk(id)}*2\r\n${bulk("p")}${bulk(v)}`).join("")}`);
}

/** Feeds `bytes` in two chunks split at `cut` and returns the counter. */
function feedSplit(bytes: Buffer, cut: number): ReplyCounter {
  const c = new ReplyCounter();
  c.feed(bytes.subarray(0, cut));
  c.feed(bytes.subarray(cut));
  return c;
}

describe("ReplyCounter", () => {
  // XADD ids, a status, an integer, a null bulk, an empty bulk, an empty array,
  // a null array, a bulk holding CRLF and "*" bytes, and a nested XRANGE page.
  const replies = [
    bulk("1700000000000-0"),
    "+OK\r\n",
    ":-42\r\n",
    "$-1\r\n",
    "$0\r\n\r\n",
    "*0\r\n",
    "*-1\r\n",
    bulk("a\r\n*3\r\n$1\r\n-ERR"),
    xrangeReply([
      ["1-0", "x".repeat(100)],
      ["1-1", "y".repeat(100)],
    ]).toString(),
  ];
  const stream = Buffer.from(replies.join(""));

  it("counts replies split across chunk boundaries at every byte", () => {
    for (let cut = 0; cut <= stream.length; cut++) {
      const c = feedSplit(stream, cut);
      expect(c.replies, `cut at ${cut}`).toBe(replies.length);
      expect(c.errors).toBe(0);
      expect(c.idle).toBe(true);
    }
    const c = new ReplyCounter();
    let done = 0;
    for (let i = 0; i < stream.length; i++) done += c.feed(stream.subarray(i, i + 1));
    expect(done).toBe(replies.length);
  });

  it("does not count a reply until its last byte has arrived", () => {
    let at = 0;
    const c = new ReplyCounter();
    replies.forEach((r, i) => {
      const bytes = Buffer.from(r);
      c.feed(bytes.subarray(0, bytes.length - 1));
      expect(c.replies).toBe(i);
      expect(c.feed(bytes.subarray(bytes.length - 1))).toBe(1);
      at += bytes.length;
    });
    expect(at).toBe(stream.length);
  });

  it("reports an error reply, as a reply, wherever the chunks split", () => {
    const bytes = Buffer.from(`${bulk("1-0")}-ERR wrong number of arguments for 'xadd' command\r\n${bulk("1-1")}`);
    for (let cut = 0; cut <= bytes.length; cut++) {
      const c = feedSplit(bytes, cut);
      expect(c.replies).toBe(3);
      expect(c.errors).toBe(1);
      expect(c.error).toBe("ERR wrong number of arguments for 'xadd' command");
    }
  });

  it("rejects bytes that cannot start a RESP2 reply", () => {
    expect(() => new ReplyCounter().feed(Buffer.from("%1\r\n"))).toThrow(RespProtocolError);
  });

  it("counts a pipeline of encoded commands as the server echoes them", () => {
    // The request side: one XADD as the peer pre-encodes it.
    expect(encodeCommand(["XADD", "bench", "*", "p", "v"]).toString()).toBe("*5\r\n$4\r\nXADD\r\n$5\r\nbench\r\n$1\r\n*\r\n$1\r\np\r\n$1\r\nv\r\n");
    // A RESP command is itself an array of bulks: 1,000 of them are 1,000 "replies".
    const c = new ReplyCounter();
    expect(c.feed(Buffer.concat(Array.from({ length: 1000 }, (_, i) => encodeCommand(["XADD", "bench", "*", "p", String(i)]))))).toBe(1000);
  });
});

describe("XrangeReader", () => {
  const p = Buffer.from("p");
  const page = xrangeReply([
    ["1700000000000-0", "a".repeat(100)],
    ["1700000000000-1", "b".repeat(100)],
    ["1700000000001-0", "c".repeat(100)],
  ]);

  it("walks a nested XRANGE-shaped array for its count and last id", () => {
    expect(walkXrange(page, { field: p, valueBytes: 100 })).toEqual({ entries: 3, last: { ms: 1700000000001, seq: 0 }, lastId: "1700000000001-0" });
  });

  it("walks the same page split across chunk boundaries at every byte, and byte by byte", () => {
    const reader = new XrangeReader({ field: p, valueBytes: 100 });
    for (let cut = 0; cut < page.length; cut++) {
      reader.start();
      expect(reader.feed(page.subarray(0, cut)), `cut at ${cut}`).toBe(false);
      expect(reader.feed(page.subarray(cut))).toBe(true);
      expect(reader.result()).toEqual({ entries: 3, last: { ms: 1700000000001, seq: 0 }, lastId: "1700000000001-0" });
    }
    reader.start();
    let done = false;
    for (let i = 0; i < page.length; i++) {
      expect(done).toBe(false);
      done = reader.feed(page.subarray(i, i + 1));
    }
    expect(done).toBe(true);
    expect(reader.result().lastId).toBe("1700000000001-0");
  });

  it("reads an empty page", () => {
    expect(walkXrange(Buffer.from("*0\r\n"))).toEqual({ entries: 0, last: null, lastId: "" });
  });

  it("rejects ids that do not rise, within a page and past the previous page", () => {
    expect(() =>
      walkXrange(
        xrangeReply([
          ["5-1", "v"],
          ["5-1", "v"],
        ]),
      ),
    ).toThrow(/does not rise/);
    expect(() => walkXrange(xrangeReply([["5-1", "v"]]), {}, { ms: 5, seq: 1 })).toThrow(/does not rise/);
    expect(walkXrange(xrangeReply([["5-2", "v"]]), {}, { ms: 5, seq: 1 }).entries).toBe(1);
  });

  it("rejects entries of another shape, a reply cut short, bytes past it and an error reply", () => {
    expect(() => walkXrange(xrangeReply([["1-0", "short"]]), { field: p, valueBytes: 100 })).toThrow(/value of 5 bytes/);
    expect(() => walkXrange(xrangeReply([["1-0", "v"]]), { field: Buffer.from("q") })).toThrow(/another field/);
    expect(() => walkXrange(xrangeReply([["1-x", "v"]]))).toThrow(/bad id/);
    expect(() => walkXrange(page.subarray(0, page.length - 1))).toThrow(/cut short after 2 of 3/);
    expect(() => walkXrange(Buffer.concat([page, Buffer.from("+OK\r\n")]))).toThrow(/after the XRANGE reply/);
    expect(() => walkXrange(Buffer.from("-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"))).toThrow(/WRONGTYPE/);
  });
});
