// What the front keeps about timelines, opened once at start: the cursor
// signer, the named timelines and the reader positions; in cluster mode the
// cluster's (the secrets, the timelines and the positions in PostgreSQL).
// PostgreSQL and Redis are connected (and their module loaded) only when
// configured.
import type { Config } from "../config.js";
import { CursorSigner } from "./cursor.js";
import type { ExternalReaders } from "./external-readers.js";
import { NamedTimelines } from "./names.js";
import type { TimelineNames, TimelineReaders } from "./name-store.js";
import { ReaderPositions } from "./readers.js";

type Rotation = { key_id: number; previous_valid_until: number };

/** What cluster mode keeps in PostgreSQL besides the timelines themselves. */
interface ClusterParts {
  streamsExist: (streams: readonly string[]) => Promise<void>;
  /** null: the config gives the secret (rotating it is 409, as on one node). */
  rotate: (() => Promise<Rotation>) | null;
  close: () => Promise<void>;
}

export class TimelineStores {
  private constructor(
    readonly signer: CursorSigner,
    readonly names: TimelineNames,
    readonly readers: TimelineReaders,
    private readonly cluster: ClusterParts | null,
    private readonly external: ExternalReaders | null,
  ) {}

  /**
   * Opens the data dir's secrets and timelines (after the data dir lock and
   * the schema migration). Throws SecretsFileError for a secrets file it
   * cannot use; a damaged timeline file is left out and listed in `damage`.
   */
  static async open(config: Config): Promise<TimelineStores> {
    const fromConfig = () =>
      CursorSigner.open(config.data_dir, {
        secret: config.timeline_cursor_secret || null,
        previousSecret: config.timeline_cursor_previous_secret || null,
        graceMs: config.timeline_cursor_grace_ms,
      });
    if (config.cluster_postgres_url) return TimelineStores.openCluster(config, fromConfig);
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
    return new TimelineStores(fromConfig(), names, new ReaderPositions(names, config.timeline_readers_max, external), null, external);
  }

  /** Cluster mode: every node serves every timeline from PostgreSQL, and signs with the cluster's secrets unless the config gives one. */
  private static async openCluster(config: Config, fromConfig: () => CursorSigner): Promise<TimelineStores> {
    const { ClusterReaders, ClusterTimelines, clusterTimelinesSql } = await import("./cluster-names.js");
    const { ClusterSecrets } = await import("../cluster/secrets.js");
    const secrets = config.timeline_cursor_secret
      ? null
      : await ClusterSecrets.open(config.cluster_postgres_url, config.data_dir, config.timeline_cursor_grace_ms);
    const sql = clusterTimelinesSql(config.cluster_postgres_url);
    const names = new ClusterTimelines(sql, config.timelines_max);
    const parts: ClusterParts = {
      streamsExist: (streams) => names.streamsExist(streams),
      rotate: secrets ? () => secrets.rotate() : null,
      close: async () => {
        await secrets?.close();
        await sql.end({ timeout: 2 });
      },
    };
    return new TimelineStores(secrets?.cursorSigner ?? fromConfig(), names, new ClusterReaders(sql, config.timeline_readers_max), parts, null);
  }

  /** Lines for the start-up log about files that were not loaded. */
  get damage(): readonly string[] {
    return this.names.damage;
  }

  /** Every stream of a timeline's set exists (cluster mode: in PostgreSQL); null: the shards are asked (timeline-admin.ts). */
  get streamsExist(): ((streams: readonly string[]) => Promise<void>) | null {
    return this.cluster?.streamsExist ?? null;
  }

  /** POST /v1/timelines/_secret/rotate: the data dir's secret, or the cluster's (409 when the config gives it). */
  rotate(): Promise<Rotation> {
    const cluster = this.cluster?.rotate;
    return cluster ? cluster() : Promise.resolve().then(() => this.signer.rotate());
  }

  /** Writes the positions PostgreSQL has not had yet and ends the external clients. */
  async close(): Promise<void> {
    await this.external?.close();
    await this.cluster?.close();
  }
}
