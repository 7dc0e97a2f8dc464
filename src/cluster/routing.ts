// Which node serves a stream: the shard map as the lease table says, for
// answering a request for a shard owned elsewhere with 307 to its owner.
// The table is the truth; a change notice (PostgreSQL NOTIFY on
// NOTICE_CHANNEL, sent by a node that claims or releases a shard) is only a
// hint to read it again sooner than the periodic refresh would.
import type postgres from "postgres";
import { clusterShardOf, type ShardLeases } from "./leases.js";

export const NOTICE_CHANNEL = "ticker_cluster";

export interface ShardOwner {
  shard: number;
  owner: string | null;
  epoch: number;
  /** Where the owner is reached; null when the shard is free or its lease ran out. */
  url: string | null;
}

export class ShardMap {
  private owners: ShardOwner[] = [];
  private unlisten: (() => Promise<void>) | null = null;
  private refreshing: Promise<void> | null = null;

  constructor(
    private readonly leases: ShardLeases,
    private readonly shards: number,
  ) {}

  /** Reads the table (the truth). */
  refresh(): Promise<void> {
    this.refreshing ??= this.leases
      .map()
      .then((rows) => {
        this.owners = rows.map((r) => ({ shard: r.shard, owner: r.live ? r.owner : null, epoch: r.epoch, url: r.live ? r.advertise_url : null }));
      })
      .finally(() => {
        this.refreshing = null;
      });
    return this.refreshing;
  }

  /** Reads the table again whenever a node says the map changed; stop with close(). */
  async listen(sql: postgres.Sql): Promise<void> {
    const { unlisten } = await sql.listen(NOTICE_CHANNEL, () => void this.refresh().catch(() => undefined));
    this.unlisten = unlisten;
  }

  async close(): Promise<void> {
    await this.unlisten?.();
    this.unlisten = null;
  }

  /** The owner of a stream's shard as last read; null before the first read. */
  ownerOf(stream: string): ShardOwner | null {
    return this.owners[clusterShardOf(stream, this.shards)] ?? null;
  }

  /** Every shard's owner, for GET /v1/cluster. */
  all(): readonly ShardOwner[] {
    return this.owners;
  }
}

/** Tells every node the shard map changed (a hint: they read the table again). */
export async function announce(sql: postgres.Sql, shards: number[]): Promise<void> {
  if (shards.length > 0) await sql`select pg_notify(${NOTICE_CHANNEL}, ${shards.join(",")})`;
}

/** Where a 307 sends a request for `pathAndQuery`: the same path and query at the owner's advertised origin. */
export function redirectLocation(ownerUrl: string, pathAndQuery: string): string {
  const base = new URL(ownerUrl);
  if (!pathAndQuery.startsWith("/")) throw new Error(`a request path starts with "/": ${pathAndQuery}`);
  return new URL(pathAndQuery, base).href;
}
