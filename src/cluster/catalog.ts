// Stream configs in cluster mode: a `PUT /v1/streams/{id}` is written here,
// fenced by the shard's lease like every other write of an owner, before it
// is applied to the owner's copy and answered; a new owner applies them to
// the copies it catches up. Keyed by stream, with its shard, so a gain
// lists a shard's configs in one statement.
import type postgres from "postgres";
import { fence } from "./leases.js";

export class StreamCatalog {
  constructor(
    private readonly sql: postgres.Sql,
    private readonly nodeId: string,
  ) {}

  /** Writes a stream's whole config under `epoch`; false (nothing written) if the epoch is no longer current. */
  async put(shard: number, epoch: number, stream: string, config: object): Promise<boolean> {
    const sql = this.sql;
    const r = await sql`insert into ticker_cluster_streams (stream, shard, config)
      select ${stream}, ${shard}, ${sql.json(config as postgres.JSONValue)} from (${fence(sql, shard, this.nodeId, epoch)}) as lease
      on conflict (stream) do update set config = excluded.config`;
    return r.count === 1;
  }

  /** The configs of a shard's streams, by stream. */
  async ofShard(shard: number): Promise<Map<string, Record<string, unknown>>> {
    const rows = await this.sql<{ stream: string; config: Record<string, unknown> }[]>`
      select stream, config from ticker_cluster_streams where shard = ${shard}`;
    return new Map(rows.map((r) => [r.stream, r.config]));
  }
}
