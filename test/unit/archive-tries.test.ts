// The bound on a read that waits for archived segments (src/shard/history-view.ts
// ArchiveTries): a snapshot's key index reads the whole archive, a segment a
// fetch, so only the fetches after which it got no further count; past
// ARCHIVE_ATTEMPTS_MAX of those it is 503 storage_error, never a wait forever.
import { describe, expect, it } from "vitest";
import { ApiError } from "../../src/errors.js";
import { ARCHIVE_ATTEMPTS_MAX, ArchiveMiss, ArchiveTries } from "../../src/shard/history-view.js";

/** Runs a read that misses on every try, at the progress `progressAt(try)` gives, until it fails; how many times it ran. */
async function triesUntilFailed(progressAt: (attempt: number) => number, attemptsCap: number): Promise<{ ran: number; err: unknown }> {
  const tries = new ArchiveTries();
  let ran = 0;
  return new Promise((resolve) => {
    const attempt = () => {
      ran++;
      if (ran > attemptsCap) return resolve({ ran, err: null });
      tries.wait(new ArchiveMiss(Promise.resolve()), progressAt(ran), attempt, (err) => resolve({ ran, err }));
    };
    attempt();
  });
}

describe("tries of an archived read", () => {
  it("a read that gets no further is 503 storage_error after ARCHIVE_ATTEMPTS_MAX runs", async () => {
    const { ran, err } = await triesUntilFailed(() => 7, 1000);
    expect(ran).toBe(ARCHIVE_ATTEMPTS_MAX);
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).status).toBe(503);
    expect((err as ApiError).code).toBe("storage_error");
  });

  it("a read that gets further at each fetch goes on past ARCHIVE_ATTEMPTS_MAX fetches", async () => {
    const { ran, err } = await triesUntilFailed((n) => n * 100, 10 * ARCHIVE_ATTEMPTS_MAX);
    expect(err).toBeNull();
    expect(ran).toBe(10 * ARCHIVE_ATTEMPTS_MAX + 1);
  });

  it("progress gives the tries back, and stalling after it counts from there", async () => {
    // Further at runs 1..3, then stuck at 300.
    const { ran, err } = await triesUntilFailed((n) => Math.min(n, 3) * 100, 1000);
    expect((err as ApiError).status).toBe(503);
    expect(ran).toBe(3 + ARCHIVE_ATTEMPTS_MAX - 1);
  });
});
