// The PostgreSQL schema of every store that keeps data there (group
// checkpoints, timeline reader positions, the cluster's tables), and its
// migration: run on start by `ticker serve`, by any number of nodes at once.
import postgres from "postgres";

const PG_IDLE_TIMEOUT_S = 5;
const PG_CLOSE_TIMEOUT_S = 5;

/**
 * Numbered schema migrations, applied in order, each once. Append only: a
 * released migration is never edited, a change is a new number. One list for
 * the whole schema, also the tables of other stores (2: timeline reader
 * positions, src/timeline/external-readers.ts; 3: cluster shards and nodes,
 * src/cluster/leases.ts; 4: the open tail, src/cluster/tail.ts; 5-7: the
 * segment manifest, src/cluster/archive.ts; 8: stream configs,
 * src/cluster/catalog.ts; 9: where archived segments' chunks start,
 * src/cluster/segment-chunks.ts; 12: ordered ingest's held events and
 * producers, src/cluster/ordered-store.ts).
 */
const MIGRATIONS: ReadonlyArray<{ version: number; sql: string }> = [
  {
    version: 1,
    sql: `create table ticker_checkpoints (
      stream text not null,
      group_name text not null,
      seq bigint not null,
      updated_at timestamptz not null default now(),
      primary key (stream, group_name)
    )`,
  },
  {
    version: 2,
    sql: `create table ticker_timeline_readers (
      timeline text not null,
      reader text not null,
      cursor text not null,
      updated_at_ms bigint not null,
      primary key (timeline, reader)
    )`,
  },
  {
    // Cluster mode (src/cluster/leases.ts): a row per cluster shard, a row per node.
    version: 3,
    sql: `create table ticker_cluster_shards (
      shard int primary key,
      owner text,
      epoch bigint not null default 0,
      lease_until timestamptz not null default '-infinity'
    );
    create table ticker_cluster_nodes (
      node_id text primary key,
      advertise_url text not null,
      heartbeat_until timestamptz not null
    )`,
  },
  {
    // Cluster mode (src/cluster/tail.ts): each stream's open tail, a row per published batch.
    version: 4,
    sql: `create table ticker_cluster_tail (
      stream text not null,
      first_seq bigint not null,
      last_seq bigint not null,
      shard int not null,
      epoch bigint not null,
      records bytea not null,
      primary key (stream, first_seq)
    )`,
  },
  {
    // Cluster mode (src/cluster/archive.ts): the manifest of archived segments, their commit point.
    version: 5,
    sql: `create table ticker_cluster_segments (
      stream text not null,
      base_seq bigint not null,
      last_seq bigint not null,
      epoch bigint not null,
      key text not null,
      bytes bigint not null,
      primary key (stream, base_seq)
    )`,
  },
  {
    // Cluster mode: a new owner lists a shard's streams from its tail rows and segments.
    version: 6,
    sql: `alter table ticker_cluster_segments add column shard int not null default -1;
    create index ticker_cluster_segments_shard on ticker_cluster_segments (shard);
    create index ticker_cluster_tail_shard on ticker_cluster_tail (shard)`,
  },
  {
    // Cluster mode: which archived segments have idempotency keys (a .keys object beside them), and their newest ingest_ts.
    version: 7,
    sql: `alter table ticker_cluster_segments add column keyed int not null default 0, add column last_ts bigint not null default 0`,
  },
  {
    // Cluster mode (src/cluster/catalog.ts): stream configs set with PUT, which every owner of the stream's shard applies.
    version: 8,
    sql: `create table ticker_cluster_streams (
      stream text primary key,
      shard int not null,
      config jsonb not null
    );
    create index ticker_cluster_streams_shard on ticker_cluster_streams (shard)`,
  },
  {
    // Cluster mode (src/cluster/secrets.ts): the timeline cursor secrets every node signs and verifies with, and when each signs.
    version: 9,
    sql: `create table ticker_cluster_secrets (
      name text primary key,
      keys jsonb not null
    )`,
  },
  {
    // Cluster mode (src/cluster/segment-chunks.ts): where each chunk of an archived segment starts; null before this.
    version: 10,
    sql: `alter table ticker_cluster_segments add column points bytea`,
  },
  {
    // Cluster mode (src/timeline/cluster-names.ts): named timelines, which every node serves (their readers: ticker_timeline_readers).
    version: 11,
    sql: `create table ticker_cluster_timelines (
      name text primary key,
      streams jsonb not null,
      created_at bigint not null,
      updated_at bigint not null
    )`,
  },
  {
    // Cluster mode (src/cluster/ordered-store.ts): producer_ordering's held events and each producer's last appended producer_seq.
    version: 12,
    sql: `create table ticker_cluster_held (
      stream text not null,
      producer_id text not null,
      producer_seq bigint not null,
      received_ms bigint not null,
      frame bytea not null,
      shard int not null,
      primary key (stream, producer_id, producer_seq)
    );
    create table ticker_cluster_producers (
      stream text not null,
      producer_id text not null,
      last_seq bigint not null,
      last_seen_ms bigint not null,
      shard int not null,
      primary key (stream, producer_id)
    )`,
  },
];

/**
 * Creates or upgrades the schema. Safe to run from several processes at once:
 * each takes the same transaction-scoped advisory lock first, so one applies
 * the missing migrations and the others then find nothing left to do.
 */
export async function migrate(postgresUrl: string): Promise<void> {
  const sql = postgres(postgresUrl, { max: 1, onnotice: () => {}, idle_timeout: PG_IDLE_TIMEOUT_S });
  try {
    await sql.begin(async (tx) => {
      await tx`select pg_advisory_xact_lock(hashtext('ticker_schema_migrations'))`;
      await tx`create table if not exists ticker_schema_migrations (
        version int primary key,
        applied_at timestamptz not null default now()
      )`;
      const applied = new Set((await tx<{ version: number }[]>`select version from ticker_schema_migrations`).map((r) => r.version));
      for (const m of MIGRATIONS) {
        if (applied.has(m.version)) continue;
        await tx.unsafe(m.sql);
        await tx`insert into ticker_schema_migrations (version) values (${m.version})`;
      }
    });
  } finally {
    await sql.end({ timeout: PG_CLOSE_TIMEOUT_S });
  }
}
