// A private PostgreSQL for the cluster modules' tests, with a fresh migrated
// database per test (its shard, node and tail rows start empty).
import postgres from "postgres";
import { migrate } from "../../src/consumer/schema.js";
import type { ServerProcess } from "../harness/process.js";
import { startPostgres } from "../harness/postgres.js";

export interface ClusterDb {
  /** A fresh migrated database; the function opens clients on it. */
  fresh(): Promise<() => postgres.Sql>;
  /** A fresh migrated database's URL, and the same URL through another port (a proxy's). */
  freshUrl(): Promise<{ url: string; port: number; via(port: number): string }>;
  stop(): Promise<void>;
}

export async function clusterDb(): Promise<ClusterDb> {
  const pg: ServerProcess = await startPostgres();
  const admin = postgres(pg.url, { max: 1, onnotice: () => {} });
  const clients: postgres.Sql[] = [];
  let databases = 0;
  const freshUrl = async () => {
    const name = `ticker_cluster_${++databases}`;
    await admin.unsafe(`create database ${name}`);
    const url = pg.url.replace(/\/postgres$/, `/${name}`);
    await migrate(url);
    return { url, port: pg.port, via: (port: number) => url.replace(`:${pg.port}/`, `:${port}/`) };
  };
  return {
    freshUrl,
    async fresh() {
      const { url } = await freshUrl();
      return () => {
        const c = postgres(url, { max: 2, onnotice: () => {} });
        clients.push(c);
        return c;
      };
    },
    async stop() {
      await Promise.allSettled(clients.map((c) => c.end()));
      await admin.end();
      await pg.stop();
    },
  };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `probe` until it gives something other than null, or fails naming `what` after `ms`. */
export async function until<T>(what: string, probe: () => Promise<T | null> | T | null, ms = 15_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== null) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(25);
  }
}
