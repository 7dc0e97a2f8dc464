import { describe, it, expect } from "vitest";
import { JsonBatch } from "../../src/wire/json-batch.js";
import { EventFields } from "../../src/wire/event-layout.js";
import { ApiError } from "../../src/errors.js";

const LIMITS = { eventBytesMax: 1 << 20, fieldBytesMax: 1024 };

function scan(text: string, eventsMax = 1000): { jb: JsonBatch; buf: Buffer } {
  const raw = Buffer.from(text);
  const buf = Buffer.alloc(raw.length * 2 + 16);
  raw.copy(buf);
  const jb = new JsonBatch();
  jb.scan(buf, raw.length, eventsMax);
  return { jb, buf };
}

function codeOf(fn: () => unknown): string | null {
  try {
    fn();
    return null;
  } catch (err) {
    if (err instanceof ApiError) return err.code;
    throw err;
  }
}

const text = (buf: Buffer, at: number, len: number) => (at < 0 ? null : buf.toString("utf8", at, at + len));

describe("JSON publish body scanner", () => {
  it("finds every field of every event, payloads as the exact JSON text sent", () => {
    const body = `{"events":[{"type":"trade","key":"BTC-USD","producer_id":"feed","producer_seq":0,"producer_ts":1764000000000,"idempotency_key":"k\\u00e9","payload": {"px" : 91234.5, "a":[1,2,{"b":null}]} },
      {"type":"t\\n2","payload":"say \\"hi\\""}, {"type":"b","payload_base64":"AAEC"}, {"type":"n","payload":null,"key":null}]}`;
    const { jb, buf } = scan(body);
    expect(jb.count).toBe(4);
    const f = new EventFields();
    jb.fields(0, f, LIMITS);
    expect([text(buf, f.typeAt, f.typeLen), text(buf, f.keyAt, f.keyLen), text(buf, f.producerIdAt, f.producerIdLen), text(buf, f.idemAt, f.idemLen)]).toEqual([
      "trade",
      "BTC-USD",
      "feed",
      "ké",
    ]);
    expect([f.producerSeq, f.producerTs]).toEqual([0, 1764000000000]);
    expect(text(buf, f.payloadAt, f.payloadLen)).toBe(`{"px" : 91234.5, "a":[1,2,{"b":null}]}`);
    jb.fields(1, f, LIMITS);
    expect(text(buf, f.typeAt, f.typeLen)).toBe("t\n2");
    expect(JSON.parse(text(buf, f.payloadAt, f.payloadLen)!)).toBe(`say "hi"`);
    expect([f.keyAt, f.producerSeq]).toEqual([-1, -1]);
    jb.fields(2, f, LIMITS);
    expect([...buf.subarray(f.payloadAt, f.payloadAt + f.payloadLen)]).toEqual([0, 1, 2]);
    jb.fields(3, f, LIMITS);
    expect(text(buf, f.payloadAt, f.payloadLen)).toBe("null");
    expect(f.keyAt).toBe(-1);
  });

  it("rejects bad JSON anywhere with invalid_json, before any event rule", () => {
    const bad = [
      `{"events":[{"type":"a"},]}`,
      `{"events":[{"type":"a"}]`,
      `{"events":[{"type":"a}]}`,
      `{"events":[{"type":01}]}`,
      `{"events":[{"type":1.}]}`,
      `{"events":[{"type":-}]}`,
      `{"events":[{"type":1e}]}`,
      `{"events":[{"type":"a\tb"}]}`,
      `{"events":[{"type":"\\x"}]}`,
      `{"events":[{"type":"\\u12g4"}]}`,
      `{"events":[{"type":tru}]}`,
      `{"events":[]} x`,
      `{"events":[{"seq":1,"type":}]}`,
      `{"events" [1]}`,
      `{'events':[]}`,
      ``,
      `   `,
      `{"events":[${"[".repeat(300)}${"]".repeat(300)}]}`,
    ];
    for (const b of bad)
      expect(
        codeOf(() => scan(b)),
        b,
      ).toBe("invalid_json");
  });

  it("answers like JSON.parse on thousands of mutated bodies", () => {
    const seed = `{"events":[{"type":"a","payload":{"x":[1,-2.5e3,true,false,null,"s\\"t"]},"key":"k"},{"type":"b","producer_seq":12}]}`;
    let rnd = 12345;
    const next = () => (rnd = (rnd * 1103515245 + 12345) & 0x7fffffff);
    const alphabet = `{}[]":,.-+eE0123456789 \\ntrufalsn\\"ab`;
    for (let n = 0; n < 5000; n++) {
      const chars = seed.split("");
      for (let m = 1 + (next() % 3); m > 0; m--) {
        const at = next() % chars.length;
        const op = next() % 3;
        const c = alphabet[next() % alphabet.length];
        if (op === 0) chars.splice(at, 1);
        else if (op === 1) chars.splice(at, 0, c);
        else chars[at] = c;
      }
      const body = chars.join("");
      let parses = true;
      try {
        JSON.parse(body);
      } catch {
        parses = false;
      }
      const code = codeOf(() => scan(body));
      expect(code === "invalid_json", body).toBe(!parses);
    }
  });

  it("applies the event rules with the event's index", () => {
    const rule = (events: string) => {
      const { jb } = scan(`{"events":[${events}]}`);
      const f = new EventFields();
      for (let i = 0; i < jb.count; i++) jb.fields(i, f, LIMITS);
    };
    expect(codeOf(() => rule(`{"type":"a"},{"key":"k"}`))).toBe("invalid_event");
    expect(codeOf(() => rule(`{"type":""}`))).toBe("invalid_event");
    expect(codeOf(() => rule(`{"type":"a","seq":3}`))).toBe("invalid_event");
    expect(codeOf(() => rule(`{"type":"a","zzz":3}`))).toBe("invalid_event");
    expect(codeOf(() => rule(`{"type":"a","producer_seq":-1}`))).toBe("invalid_event");
    expect(codeOf(() => rule(`{"type":"a","producer_seq":1.5}`))).toBe("invalid_event");
    expect(codeOf(() => rule(`{"type":"a","producer_seq":9007199254740992}`))).toBe("invalid_event");
    expect(codeOf(() => rule(`{"type":"a","payload":1,"payload_base64":"AA=="}`))).toBe("invalid_event");
    expect(codeOf(() => rule(`{"type":"a","payload_base64":"A"}`))).toBe("invalid_event");
    expect(codeOf(() => rule(`[1]`))).toBe("invalid_event");
    expect(codeOf(() => rule(`{"type":"${"x".repeat(1025)}"}`))).toBe("invalid_event");
    expect(codeOf(() => rule(`{"type":"${"x".repeat(1024)}","producer_seq":1e3}`))).toBe(null);
    expect(codeOf(() => scan(`{"events":[${Array(11).fill(`{"type":"a"}`).join(",")}]}`, 10))).toBe("batch_too_large");
    expect(codeOf(() => scan(`{"events":[]}`))).toBe("invalid_body");
    expect(codeOf(() => scan(`{"evens":[]}`))).toBe("invalid_body");
    expect(codeOf(() => scan(`[{"type":"a"}]`))).toBe("invalid_body");
    expect(codeOf(() => scan(`{"events":{}}`))).toBe("invalid_body");
  });
});
