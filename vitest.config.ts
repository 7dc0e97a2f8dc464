import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 120_000,
    hookTimeout: 60_000,
    // Two cores: integration files start real servers with worker threads.
    maxWorkers: 2,
    // One private PostgreSQL and one Redis for the run (installed if missing).
    globalSetup: ["./test/setup/global-servers.ts"],
  },
});
