// What the front keeps about timelines, opened once at start: the cursor
// signer (its secret the cluster's in cluster mode), the named timelines and
// the reader positions. PostgreSQL and
// Redis are connected (and their module loaded) only when configured.
import type { Config } from "../config.js";
import { CursorSigner } from "./cursor.js";
import type { ExternalReaders } from "./external-readers.js";
import { NamedTimelines } from "./names.js";
import { ReaderPositions } from "./readers.js";

export class TimelineStores {
  private constructor(
    readonly signer: CursorSigner,
    readonly names: NamedTimelines,
    readonly readers: ReaderPositions,
    private readonly external: ExternalReaders | null,
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
    return new TimelineStores(signer, names, new ReaderPositions(names, config.timeline_readers_max, external), external);
  }

  /** Lines for the start-up log about files that were not loaded. */
  get damage(): readonly string[] {
    return this.names.damage;
  }

  /** Writes the positions PostgreSQL has not had yet and ends the external clients. */
  async close(): Promise<void> {
    await this.external?.close();
  }
}
