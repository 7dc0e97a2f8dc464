import { describe, it, expect } from "vitest";
import { DedupWindow } from "../../src/shard/dedup.js";

describe("idempotency window", () => {
  it("remembers a key's seq until it falls out of the window", () => {
    const w = new DedupWindow(1000, 100);
    w.add("a", 1, 10_000);
    w.add("b", 2, 10_500);
    expect(w.get("a")).toBe(1);
    w.expire(11_000); // a is exactly at the edge: kept
    expect(w.get("a")).toBe(1);
    w.expire(11_001);
    expect(w.get("a")).toBeUndefined();
    expect(w.get("b")).toBe(2);
  });

  it("holds at most dedup_keys_max keys, dropping the oldest first", () => {
    const w = new DedupWindow(1e9, 3);
    for (let i = 1; i <= 5; i++) w.add(`k${i}`, i, i);
    expect(w.size).toBe(3);
    expect(w.get("k1")).toBeUndefined();
    expect(w.get("k2")).toBeUndefined();
    expect(w.get("k5")).toBe(5);
  });

  it("a key appended again after expiry keeps its newer seq when the old entry expires", () => {
    const w = new DedupWindow(100, 10);
    w.add("k", 1, 0);
    w.expire(200);
    w.add("k", 7, 200);
    w.expire(250);
    expect(w.get("k")).toBe(7);
  });

  it("a window of 0 remembers nothing", () => {
    const w = new DedupWindow(0, 10);
    w.add("k", 1, 0);
    expect(w.get("k")).toBeUndefined();
  });

  it("stays bounded over a long run of keys", () => {
    const w = new DedupWindow(1000, 50_000);
    for (let i = 0; i < 200_000; i++) {
      w.add(`k${i}`, i + 1, i);
      if (i % 1000 === 0) w.expire(i);
    }
    expect(w.size).toBeLessThanOrEqual(2001);
  });
});
