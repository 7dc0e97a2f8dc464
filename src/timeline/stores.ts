// What the front keeps about timelines, opened once at start: the cursor
// signer, the named timelines and the reader positions; in cluster mode the
// cluster's (the secret, the timelines and the positions in PostgreSQL). PostgreSQL and
// Redis are connected (and their module loaded) only when configured.
import type { Config } from "../config.js";
import { CursorSigner } from "./cursor.js";
import type { ExternalReaders } from "./external-readers.js";
import { NamedTimelines } from "./names.js";
import type { TimelineNames, TimelineReaders } from "./name-store.js";
import { ReaderPositions } from "./readers.js";

export class TimelineStores {
  private constructor(
    readonly signer: CursorSigner,
    readonly names: TimelineNames,
    readonly readers: TimelineReaders,
    /** Every stream of a timeline's set exists (cluster mode: in PostgreSQL); null: the shards are asked (timeline-admin.ts). */
    readonly streamsExist: ((streams: readonly string[]) => Promise<void>) | null,
    private readonly close_: () => Promise<void>,
  ) {}

  /**
   * Opens the data dir's secrets and timelines (after the data dir lock and
   * the schema migration). Throws SecretsFileError for a secrets file it
   * cannot use; a damaged timeline file is left out and listed in `damage`.
   */
  static async open(config: Config): Promise<TimelineStores> {
    // Cluster mode: the secret every node shares (PostgreSQL's), unless the config gives one.
    let secret = config.timeline_cursor_secret || null;
    if (!secret && config.cluster_postgres_url) secret = await (await import("../cluster/secrets.js")).clusterCursorSecret(config.cluster_postgres_url);
    const signer = CursorSigner.open(config.data_dir, {
      secret,
      previousSecret: config.timeline_cursor_previous_secret || null,
      graceMs: config.timeline_cursor_grace_ms,
    });
    if (config.cluster_postgres_url) {
      // Cluster mode: every node serves every timeline from PostgreSQL.
      const { ClusterReaders, ClusterTimelines, clusterTimelinesSql } = await import("./cluster-names.js");
      const sql = clusterTimelinesSql(config.cluster_postgres_url);
      const names = new ClusterTimelines(sql, config.timelines_max);
      const readers = new ClusterReaders(sql, config.timeline_readers_max);
      return new TimelineStores(
        signer,
        names,
        readers,
        (streams) => names.streamsExist(streams),
        () => sql.end({ timeout: 2 }),
      );
    }
    const names = NamedTimelines.open(config.data_dir, config.timelines_max);
    let external: ExternalReaders | null = null;
    if (config.postgres_url || config.redis_url) {
      const { ExternalReaders } = await import("./external-readers.js");
      external = await ExternalReaders.open({
        postgresUrl: config.postgres_url || undefined,
        redisUrl: config.redis_url || undefined,
        flushIntervalMs: config.checkpoint_flush_interval_ms,
        keyPrefix: config.redis_key_prefix,
      });
    }
    const readers = new ReaderPositions(names, config.timeline_readers_max, external);
    return new TimelineStores(signer, names, readers, null, async () => await external?.close());
  }

  /** Lines for the start-up log about files that were not loaded. */
  get damage(): readonly string[] {
    return this.names.damage;
  }

  /** Writes the positions PostgreSQL has not had yet and ends the external clients. */
  close(): Promise<void> {
    return this.close_();
  }
}
