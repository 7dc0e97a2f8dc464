import { defineConfig } from "vitest/config";

// `npm run test:mutation`: the unit tests Stryker runs against each mutant of
// the modules that keep Ticker's promises (see stryker.config.json). Only
// test/unit: integration tests start the server from dist/, which Stryker's
// mutants of src/ do not reach (docs/reliability-notes.md says why), and the
// store tests needing PostgreSQL/Redis (integration/external-checkpoints-store)
// touch none of them.
export default defineConfig({
  test: {
    include: ["test/unit/**/*.test.ts"],
    // The ring's cross-thread test loads the compiled ring into a worker
    // thread from dist/, which Stryker's sandbox does not build; the ring is
    // not among the mutated modules.
    exclude: ["test/unit/ring.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 30_000,
    // One module graph for every file: Stryker switches mutants at run time, so nothing
    // needs a fresh import, and a fresh graph per test file was most of the time per mutant.
    isolate: false,
  },
});
