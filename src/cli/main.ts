#!/usr/bin/env node
// The `ticker` command. `ticker serve` runs a node in the foreground.
import { parseArgs } from "node:util";
import { CONFIG_KEYS, ConfigError, loadConfig, type Config } from "../config.js";
import { ShardPool } from "../front/shards.js";
import { ListenError, createFront } from "../front/app.js";
import { DataDirLockedError, lockDataDir } from "./data-dir-lock.js";
import { startScrub } from "../log/scrub.js";
import { Auth, KeysFileError } from "../front/auth.js";
import { TlsFilesError, checkTlsFiles } from "../front/tls.js";
import { SecretsFileError } from "../timeline/cursor.js";
import { TimelineStores } from "../timeline/stores.js";

const USAGE = `usage: ticker serve [--host 127.0.0.1] [--port 8080] [--data-dir ./data] [--config file.json]
       [--api-keys-file keys.json] [--tls-cert cert.pem --tls-key key.pem] [--<key> value ...]

Every configuration key (see README, "Configuration") can be given as a flag
(--segment-bytes-max 1048576), as TICKER_<KEY> in the environment, or in the
JSON config file. --tls-cert and --tls-key are short for --tls-cert-file and
--tls-key-file.`;

/** Short flags for config keys whose full flag reads long. */
const FLAG_ALIASES: Record<string, string> = { "tls-cert": "tls-cert-file", "tls-key": "tls-key-file" };

async function serve(argv: string[]): Promise<void> {
  const options: Record<string, { type: "string" }> = { config: { type: "string" } };
  for (const key of CONFIG_KEYS) options[key.replaceAll("_", "-")] = { type: "string" };
  for (const alias of Object.keys(FLAG_ALIASES)) options[alias] = { type: "string" };
  let flags: Record<string, unknown>;
  try {
    flags = parseArgs({ args: argv, options, strict: true, allowPositionals: false }).values;
    for (const [alias, full] of Object.entries(FLAG_ALIASES)) {
      if (flags[alias] === undefined) continue;
      flags[full] = flags[alias];
      delete flags[alias];
    }
  } catch (err) {
    console.error(`${(err as Error).message}\n\n${USAGE}`);
    process.exit(2);
  }
  let config: Config;
  try {
    config = loadConfig(flags);
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(err.message);
      process.exit(2);
    }
    throw err;
  }
  let auth: Auth;
  try {
    checkTlsFiles(config);
    auth = new Auth(config.api_keys_file);
  } catch (err) {
    if (err instanceof KeysFileError || err instanceof TlsFilesError) {
      console.error(err.message);
      process.exit(2);
    }
    throw err;
  }
  if (auth.enabled) console.log(`api keys: ${auth.keyCount} loaded from ${config.api_keys_file}`);
  else if (config.host !== "127.0.0.1" && config.host !== "::1" && config.host !== "localhost") {
    console.warn(`WARNING: listening on ${config.host} without API keys: anyone who can reach this port can read and write every stream.`);
  }
  // Keys are read again; requests taken after this see the new ones. (Also
  // without a keys file: SIGHUP would otherwise end the server.)
  process.on("SIGHUP", () => {
    const r = auth.reload();
    (r.ok ? console.log : console.error)(r.message);
  });

  const started = Date.now();
  // Before anything reads or writes the data dir: one owner at a time.
  try {
    lockDataDir(config.data_dir); // held until the process exits
  } catch (err) {
    if (err instanceof DataDirLockedError) {
      console.error(err.message);
      process.exit(3);
    }
    throw err;
  }
  // The schema is in place before any shard loads or writes checkpoints.
  if (config.postgres_url) await (await import("../consumer/external.js")).migrate(config.postgres_url);
  let timelines: TimelineStores;
  try {
    timelines = await TimelineStores.open(config);
  } catch (err) {
    if (!(err instanceof SecretsFileError)) throw err;
    console.error(err.message);
    process.exit(2);
  }
  for (const line of timelines.damage) console.error(`recovery: DAMAGED ${line}`);
  const pool = new ShardPool(config);
  let ready = false;
  const front = createFront(config, pool, () => ready, auth, timelines);
  let port: number;
  try {
    port = await front.listen();
  } catch (err) {
    if (!(err instanceof ListenError)) throw err;
    console.error(err.message);
    process.exit(4);
  }
  const scheme = config.tls_cert_file ? "https" : "http";
  const host = config.host.includes(":") ? `[${config.host}]` : config.host;
  console.log(`ticker listening on ${scheme}://${host}:${port} (data dir ${config.data_dir}, ${config.shards} shards)`);
  const reports = await pool.ready();
  ready = true;
  let streams = 0;
  for (const r of reports) {
    streams += r.streams;
    for (const dir of r.unreadable)
      console.error(`recovery: ${dir}: DAMAGED stream.json and its copy, and the directory name does not give the id; not opened`);
    for (const { stream, report } of r.recovery) {
      const uncommitted = report.uncommittedRecords > 0 ? ` (${report.uncommittedRecords} records of a batch that was never acknowledged)` : "";
      console.log(`recovery: stream ${stream}: cut ${report.truncatedBytes} torn bytes${uncommitted}, rebuilt ${report.rebuiltIndexes} index(es)`);
      for (const f of report.files) console.error(`recovery: stream ${stream}: DAMAGED ${f}`);
      for (const c of report.corruptions) {
        console.error(`recovery: stream ${stream}: DAMAGED record ${c.seq} in segment ${c.segment} at byte ${c.position} (${c.reason}); it will not be served`);
      }
    }
  }
  console.log(`ticker ready: ${streams} streams recovered in ${Date.now() - started} ms`);

  const scrubItems = reports.flatMap((r) => r.scrub);
  const scrubber = startScrub(scrubItems, (item, damage) => {
    if (!damage) return pool.notify(item.stream, { type: "verified", stream: item.stream, baseSeq: item.baseSeq });
    const info = { segment: item.baseSeq, ...damage };
    console.error(
      `scrub: stream ${item.stream}: DAMAGED record ${damage.seq} in segment ${item.baseSeq} at byte ${damage.position} (${damage.reason}); it will not be served`,
    );
    pool.notify(item.stream, { type: "corruption", stream: item.stream, info });
  });
  void scrubber.done.then(() => {
    if (scrubItems.length > 0) console.log(`scrub: verified ${scrubItems.length} closed segments`);
  });

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.log(`${signal}: stopping (finishing ${pool.inFlight} requests in flight)`);
    front.stopListening();
    // Consumers are told first; the acks they sent are written before the shards stop.
    front.consumers.closeAll();
    const deadline = Date.now() + config.shutdown_timeout_ms;
    while ((pool.inFlight > 0 || front.consumers.pendingWrites > 0 || front.timelines.inFlight > 0) && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 10));
    await scrubber.stop();
    await pool.shutdown();
    await timelines.close(); // the reader positions PostgreSQL has not had yet
    console.log("stopped");
    process.exit(0);
  };
  process.on("SIGTERM", () => void stop("SIGTERM"));
  process.on("SIGINT", () => void stop("SIGINT"));
}

const [command, ...rest] = process.argv.slice(2);
if (command === "serve") {
  serve(rest).catch((err) => {
    console.error(err);
    process.exit(1);
  });
} else {
  console.error(USAGE);
  process.exit(command === undefined || command === "help" || command === "--help" ? 0 : 2);
}
