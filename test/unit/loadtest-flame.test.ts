import { describe, expect, it } from "vitest";
import { flameFrames } from "../../loadtest/reports/flame.js";

const frame = (functionName: string, url = "") => ({ functionName, url, lineNumber: 0 });

// root → main → { work → crc, idle }; samples: 1 ms steps.
const profile = {
  nodes: [
    { id: 1, callFrame: frame("(root)"), children: [2, 5] },
    { id: 2, callFrame: frame("main", "file:///app/dist/src/main.js"), children: [3] },
    { id: 3, callFrame: frame("work", "file:///app/dist/src/work.js"), children: [4] },
    { id: 4, callFrame: frame("crc", "node:zlib") },
    { id: 5, callFrame: frame("(idle)") },
  ],
  samples: [2, 3, 3, 4, 4, 4, 5, 5, 5, 5],
  timeDeltas: Array.from({ length: 10 }, () => 1000),
};

describe("flame graph layout", () => {
  it("a frame is as wide as its own and its callees' samples; idle time is not drawn", () => {
    const { frames, busyMs } = flameFrames(profile);
    expect(busyMs).toBe(6);
    const byName = new Map(frames.map((f) => [f.name.split(" ")[0], f]));
    expect([...byName.keys()]).toEqual(["main", "work", "crc"]);
    expect(byName.get("main")).toMatchObject({ depth: 0, x0: 0, x1: 6, kind: "Ticker" });
    expect(byName.get("work")).toMatchObject({ depth: 1, x0: 0, x1: 5 });
    expect(byName.get("crc")).toMatchObject({ depth: 2, x0: 0, x1: 3, kind: "Node.js" });
  });
});
