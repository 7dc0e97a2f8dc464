// The cluster's cursor keys over time (src/cluster/secrets.ts): which key
// signs at a moment and which verify, before and after rotations, whatever
// the order of rotations and reads.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { keysAt, ROTATION_PROPAGATION_MS, rotated } from "../../src/cluster/secrets.js";
import { PREVIOUS_SECRETS_MAX } from "../../src/timeline/cursor.js";

const secret = (n: number) => `secret-${String(n).padStart(32, "0")}`;
const GRACE_MS = 60_000;

describe("the cluster's cursor keys", () => {
  it("a rotation's key verifies at once, signs only from ROTATION_PROPAGATION_MS on, and the one before verifies for the grace after that", () => {
    const first = [{ secret: secret(0), active_from: 0, valid_until: null }];
    const { keys, next } = rotated(first, 1_000, GRACE_MS, secret(1));
    expect(next.active_from).toBe(1_000 + ROTATION_PROPAGATION_MS);
    const soon = keysAt(keys, 1_001);
    expect(soon.current).toBe(secret(0));
    expect(soon.others.map((o) => o.secret)).toEqual([secret(1)]);
    const later = keysAt(keys, next.active_from);
    expect(later.current).toBe(secret(1));
    expect(later.others).toEqual([{ secret: secret(0), validUntil: next.active_from + GRACE_MS }]);
    expect(keysAt(keys, next.active_from + GRACE_MS + 1).others).toEqual([]);
  });

  it("after any rotations, some key always signs, the signing key is the latest started one, and every kept key verifies until its time", () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 20_000 }), { minLength: 1, maxLength: 20 }), fc.integer({ min: 0, max: 200_000 }), (gaps, probe) => {
        let keys = [{ secret: secret(0), active_from: 0, valid_until: null as number | null }];
        let now = 0;
        for (const [i, gap] of gaps.entries()) {
          now += gap;
          keys = rotated(keys, now, GRACE_MS, secret(i + 1)).keys;
          expect(keys.length).toBeLessThanOrEqual(PREVIOUS_SECRETS_MAX + 1);
        }
        const at = now + probe;
        const k = keysAt(keys, at);
        const started = keys.filter((x) => x.active_from <= at && (x.valid_until === null || x.valid_until >= at));
        if (started.length > 0) expect(k.current).toBe(started.reduce((a, b) => (b.active_from > a.active_from ? b : a)).secret);
        // The newest key never expires: there is always one to sign with.
        expect(keys.some((x) => x.valid_until === null)).toBe(true);
        for (const o of k.others) expect(o.validUntil).toBeGreaterThanOrEqual(at);
      }),
    );
  });
});
