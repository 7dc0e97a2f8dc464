// The framing of another node's answers to a timeline part (src/front/
// cluster-timelines.ts): what one node writes the other reads back whole,
// and any bytes at all are read in a bounded walk that either accounts for
// every byte or gives up (null), never throws, never loops.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { readAnswers, writeAnswers } from "../../src/front/cluster-timelines.js";

const answer = fc.record({ status: fc.integer({ min: 0, max: 0xffff_ffff }), body: fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)) });

describe("timeline part answers on the wire", () => {
  it("reads back what was written, answer for answer", () => {
    fc.assert(
      fc.property(fc.array(answer, { maxLength: 8 }), (answers) => {
        const back = readAnswers(writeAnswers(answers));
        expect(back?.map((a) => [a.status, [...a.body]])).toEqual(answers.map((a) => [a.status, [...a.body]]));
      }),
    );
  });

  it("takes any bytes without throwing: each answer read lies inside them and together they cover them exactly, or null", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (raw) => {
        const body = Buffer.from(raw);
        const back = readAnswers(body);
        if (back === null) return;
        expect(back.reduce((n, a) => n + 8 + a.body.length, 0)).toBe(body.length);
      }),
      { numRuns: 2000 },
    );
  });

  it("refuses a body cut anywhere inside an answer", () => {
    fc.assert(
      fc.property(fc.array(answer, { minLength: 1, maxLength: 4 }), fc.nat(), (answers, cutAt) => {
        const whole = writeAnswers(answers);
        const ends = new Set<number>();
        let at = 0;
        for (const a of answers) ends.add((at += 8 + a.body.length));
        const cut = cutAt % whole.length;
        if (cut === 0 || ends.has(cut)) return;
        expect(readAnswers(whole.subarray(0, cut))).toBeNull();
      }),
    );
  });
});
