import { defineConfig } from "vitest/config";

// `npm run test:faults`: the fault and property tests at their long scale.
export default defineConfig({
  test: {
    include: ["test/faults/**/*.test.ts"],
    testTimeout: 1_200_000,
    hookTimeout: 120_000,
    maxWorkers: 1,
    globalSetup: ["./test/setup/global-servers.ts"],
  },
});
