import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 120_000,
    hookTimeout: 60_000,
    // expect.poll waits on real servers and child processes: its default 1 s
    // is shorter than a node child's start on a loaded 2-core machine.
    expect: { poll: { timeout: 10_000 } },
    // Two cores: integration files start real servers with worker threads.
    maxWorkers: 2,
    // One private PostgreSQL and one Redis for the run (installed if missing).
    globalSetup: ["./test/setup/global-servers.ts"],
  },
});
