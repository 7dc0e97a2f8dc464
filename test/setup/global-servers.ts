// vitest globalSetup: one private PostgreSQL and one Redis for the whole run,
// so test files that need them share a start-up (~1 s each) instead of paying
// it per file. Tests read the URLs with `inject("postgresUrl")` /
// `inject("redisUrl")`.
import type { TestProject } from "vitest/node";
import { startPostgres } from "../harness/postgres.js";
import { startRedis } from "../harness/redis.js";

declare module "vitest" {
  export interface ProvidedContext {
    postgresUrl: string;
    redisUrl: string;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const [postgres, redis] = await Promise.allSettled([startPostgres(), startRedis()]);
  const stopAll = async () => {
    await Promise.all([postgres, redis].map((s) => (s.status === "fulfilled" ? s.value.stop() : undefined)));
  };
  if (postgres.status === "rejected" || redis.status === "rejected") {
    await stopAll();
    throw postgres.status === "rejected" ? postgres.reason : (redis as PromiseRejectedResult).reason;
  }
  project.provide("postgresUrl", postgres.value.url);
  project.provide("redisUrl", redis.value.url);
  return stopAll;
}
