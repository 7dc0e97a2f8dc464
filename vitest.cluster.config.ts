import { defineConfig } from "vitest/config";

// `npm run test:cluster`: failovers of a three-node cluster, measured (docs/CLUSTER.md); at most 20 minutes.
export default defineConfig({
  test: {
    include: ["test/cluster/**/*.measure.ts"],
    testTimeout: 1_200_000,
    hookTimeout: 120_000,
    maxWorkers: 1,
    globalSetup: ["./test/setup/global-servers.ts"],
  },
});
