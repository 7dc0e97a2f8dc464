// Drives src/cli/progress.ts (the dist build) as publish and replay will: a
// progress line over ten steps, then "done" on stdout. A test runs it in a
// pseudo-terminal and through pipes to see where the line goes.
// usage: node progress-child.mjs <total events | unknown> [--json]
import { setTimeout as sleep } from "node:timers/promises";
import { startProgress } from "../../dist/src/cli/progress.js";

const [totalArg, jsonFlag] = process.argv.slice(2);
const total = totalArg === "unknown" ? undefined : Number(totalArg);
const steps = 10;
const progress = startProgress({ label: "publish", total, json: jsonFlag === "--json" });
for (let i = 0; i < steps; i++) {
  // Long enough for the bar to redraw between steps (it redraws 5 times a second).
  await sleep(120);
  progress.add(1000 / steps);
}
progress.stop();
process.stdout.write("done\n");
