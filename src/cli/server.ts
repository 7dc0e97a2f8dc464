// `ticker serve` once its configuration is valid: takes the data dir, starts
// the shards and the front, logs recovery, and stops cleanly on SIGTERM and
// SIGINT. Loaded only by serve, so the client commands start without the
// server's modules (uWebSockets, worker pools).
import type { Config } from "../config.js";
import { ShardPool } from "../front/shards.js";
import { ListenError, createFront, type Front } from "../front/app.js";
import type { ClusterRuntime } from "../front/cluster-runtime.js";
import { enableAccessLog } from "../front/http.js";
import { DataDirLockedError, lockDataDir } from "./data-dir-lock.js";
import { startScrub } from "../log/scrub.js";
import { Auth, KeysFileError } from "../front/auth.js";
import { TlsFilesError, checkTlsFiles } from "../front/tls.js";
import { SecretsFileError } from "../timeline/cursor.js";
import { TimelineStores } from "../timeline/stores.js";
import { CliError, ExitCode } from "./exit-codes.js";
import { resolve } from "node:path";
import { createLogger, logger, setLogger } from "../logger.js";
import { counts } from "../front/front-metrics.js";
import type { WorkerEvent } from "../shard/protocol.js";
import { compactDescriptions } from "../shard/descriptions.js";

/** A shard's recovery report as ticker_recovery_findings_total counts. */
function noteRecoveryFindings(r: Extract<WorkerEvent, { type: "ready" }>): void {
  const findings = counts.recovery;
  // Every kind from the start, at 0: rate() and alerts need the series before the first finding.
  for (const kind of ["torn_tail", "rebuilt_index", "corruption", "file_damage"]) findings.add(kind, 0);
  findings.add("unreadable_stream", r.unreadable.length);
  for (const { report } of r.recovery) {
    if (report.truncatedBytes > 0) findings.add("torn_tail");
    findings.add("rebuilt_index", report.rebuiltIndexes);
    findings.add("corruption", report.corruptions.length);
    findings.add("file_damage", report.files.length);
  }
}

/**
 * Runs the server in this process until a signal stops it (process.exit(0)).
 * Resolves once it is ready; a start that cannot go on throws a CliError
 * with the status (exit-codes.ts).
 */
export async function runServer(given: Config): Promise<void> {
  // Cluster mode keeps group checkpoints in the cluster's PostgreSQL unless postgres_url names another.
  const config = given.cluster_postgres_url && !given.postgres_url ? { ...given, postgres_url: given.cluster_postgres_url } : given;
  const log = createLogger(config);
  setLogger(log);
  if (config.access_log) enableAccessLog();
  const dataDir = resolve(config.data_dir);
  let auth: Auth;
  try {
    checkTlsFiles(config);
    auth = new Auth(config.api_keys_file);
  } catch (err) {
    if (err instanceof KeysFileError || err instanceof TlsFilesError) throw new CliError(err.message, ExitCode.usage);
    throw err;
  }
  if (auth.enabled)
    log.info({ kind: "security", keys: auth.keyCount, file: config.api_keys_file }, `api keys: ${auth.keyCount} loaded from ${config.api_keys_file}`);
  else if (config.host !== "127.0.0.1" && config.host !== "::1" && config.host !== "localhost") {
    log.warn(
      { kind: "security", host: config.host },
      `WARNING: listening on ${config.host} without API keys: anyone who can reach this port can read and write every stream.`,
    );
  }
  // Keys are read again; requests taken after this see the new ones. (Also
  // without a keys file: SIGHUP would otherwise end the server.)
  process.on("SIGHUP", () => {
    const r = auth.reload();
    if (r.ok) log.info({ kind: "security" }, r.message);
    else log.error({ kind: "security" }, r.message);
  });

  const started = Date.now();
  // Before anything reads or writes the data dir: one owner at a time.
  try {
    lockDataDir(config.data_dir); // held until the process exits
  } catch (err) {
    if (err instanceof DataDirLockedError) throw new CliError(err.message, ExitCode.dataDirLocked);
    throw err;
  }
  // The schema is in place before any shard loads or writes checkpoints.
  const databases = new Set([config.postgres_url, config.cluster_postgres_url].filter((url) => url !== ""));
  for (const url of databases) await (await import("../consumer/schema.js")).migrate(url);
  let timelines: TimelineStores;
  try {
    timelines = await TimelineStores.open(config);
  } catch (err) {
    if (err instanceof SecretsFileError) throw new CliError(err.message, ExitCode.usage);
    throw err;
  }
  for (const line of timelines.damage) log.error({ kind: "recovery", damaged: line }, `recovery: DAMAGED ${line}`);
  counts.recovery.add("file_damage", timelines.damage.length);
  // Before the shards append to it.
  const descriptionDamage = compactDescriptions(dataDir);
  for (const line of descriptionDamage) log.error({ kind: "recovery", damaged: line }, `recovery: DAMAGED ${line}`);
  counts.recovery.add("file_damage", descriptionDamage.length);
  const pool = new ShardPool(config);
  let ready = false;
  let cluster: ClusterRuntime | null = null;
  const front = createFront(
    config,
    pool,
    () => ready,
    auth,
    timelines,
    () => cluster,
  );
  let port: number;
  try {
    port = await front.listen();
  } catch (err) {
    if (err instanceof ListenError) throw new CliError(err.message, ExitCode.listenFailed);
    throw err;
  }
  const scheme = config.tls_cert_file ? "https" : "http";
  const host = config.host.includes(":") ? `[${config.host}]` : config.host;
  const url = `${scheme}://${host}:${port}`;
  log.info(
    {
      kind: "listening",
      url,
      data_dir: dataDir,
      shards: config.shards,
      default_durability: config.default_durability,
      default_retention_ms: config.default_retention_ms,
      api_keys: auth.enabled,
      postgres: config.postgres_url !== "",
      redis: config.redis_url !== "",
    },
    // The defaults in the text too: --log-format pretty shows only the message.
    `ticker listening on ${url} (data dir ${dataDir}, ${config.shards} shards); new streams: durability ${config.default_durability}, retention ${config.default_retention_ms} ms`,
  );
  const reports = await pool.ready();
  if (config.cluster_postgres_url) cluster = await joinCluster(config, pool, front);
  ready = true;
  let streams = 0;
  for (const r of reports) {
    streams += r.streams;
    noteRecoveryFindings(r);
    for (const dir of r.unreadable)
      log.error({ kind: "recovery", dir }, `recovery: ${dir}: DAMAGED stream.json and its copy, and the directory name does not give the id; not opened`);
    for (const { stream, report } of r.recovery) {
      const uncommitted = report.uncommittedRecords > 0 ? ` (${report.uncommittedRecords} records of a batch that was never acknowledged)` : "";
      log.warn(
        {
          kind: "recovery",
          stream,
          truncated_bytes: report.truncatedBytes,
          uncommitted_records: report.uncommittedRecords,
          rebuilt_indexes: report.rebuiltIndexes,
        },
        `recovery: stream ${stream}: cut ${report.truncatedBytes} torn bytes${uncommitted}, rebuilt ${report.rebuiltIndexes} index(es)`,
      );
      for (const f of report.files) log.error({ kind: "recovery", stream, damaged: f }, `recovery: stream ${stream}: DAMAGED ${f}`);
      for (const c of report.corruptions) {
        log.error(
          { kind: "recovery", stream, seq: c.seq, segment: c.segment, position: c.position, reason: c.reason },
          `recovery: stream ${stream}: DAMAGED record ${c.seq} in segment ${c.segment} at byte ${c.position} (${c.reason}); it will not be served`,
        );
      }
    }
  }
  log.info({ kind: "ready", streams, ms: Date.now() - started }, `ticker ready: ${streams} streams recovered in ${Date.now() - started} ms`);

  const scrubItems = reports.flatMap((r) => r.scrub);
  const scrubber = startScrub(scrubItems, (item, damage) => {
    if (!damage) return pool.notify(item.stream, { type: "verified", stream: item.stream, baseSeq: item.baseSeq });
    const info = { segment: item.baseSeq, ...damage };
    counts.recovery.add("corruption");
    log.error(
      { kind: "scrub", stream: item.stream, seq: damage.seq, segment: item.baseSeq, position: damage.position, reason: damage.reason },
      `scrub: stream ${item.stream}: DAMAGED record ${damage.seq} in segment ${item.baseSeq} at byte ${damage.position} (${damage.reason}); it will not be served`,
    );
    pool.notify(item.stream, { type: "corruption", stream: item.stream, info });
  });
  void scrubber.done.then(() => {
    if (scrubItems.length > 0) log.info({ kind: "scrub", segments: scrubItems.length }, `scrub: verified ${scrubItems.length} closed segments`);
  });

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ kind: "shutdown", signal, in_flight: pool.inFlight }, `${signal}: stopping (finishing ${pool.inFlight} requests in flight)`);
    front.stopListening();
    // Consumers are told first; the acks they sent are written before the shards stop.
    front.consumers.closeAll();
    const stopAt = Date.now();
    const deadline = stopAt + config.shutdown_timeout_ms;
    while ((pool.inFlight > 0 || front.consumers.pendingWrites > 0 || front.timelines.inFlight > 0) && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 10));
    await scrubber.stop();
    // Its shards go to the other nodes now rather than when their leases run out.
    await cluster?.stop().catch((err: Error) => log.warn({ kind: "cluster", err: err.message }, `cluster: leaving failed: ${err.message}`));
    await pool.shutdown();
    await timelines.close(); // the reader positions PostgreSQL has not had yet
    log.info({ kind: "shutdown", ms: Date.now() - stopAt }, "stopped");
    process.exit(0);
  };
  process.on("SIGTERM", () => void stop("SIGTERM"));
  process.on("SIGINT", () => void stop("SIGINT"));
}

/** Cluster mode: the node joins, and its shard threads learn which publishes they may take. */
async function joinCluster(config: Config, pool: ShardPool, front: Front): Promise<ClusterRuntime> {
  const { ClusterRuntime } = await import("../front/cluster-runtime.js");
  const { clusterShardOf } = await import("../cluster/leases.js");
  const rt = await ClusterRuntime.start(config, pool, (shard) => front.consumers.moved((stream) => clusterShardOf(stream, config.cluster_shards) === shard));
  pool.clusterEpoch = (stream) => {
    const r = rt.route(stream);
    return r.kind === "local" ? r.epoch : undefined;
  };
  logger().info(
    { kind: "cluster", node_id: config.node_id, advertise_url: config.advertise_url, cluster_shards: config.cluster_shards },
    `cluster: node ${config.node_id} joined (${config.advertise_url}, ${config.cluster_shards} cluster shards)`,
  );
  return rt;
}
