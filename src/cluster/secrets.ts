// The secrets the nodes of a cluster share: today the timeline cursor
// secrets, so that a cursor one node signed is verified by any other (a
// client's next page may go to any node). One row holds every key with the
// time it starts signing and the time it stops verifying; the first node to
// start writes the first key (an insert that does nothing if a node already
// has), and every node reads the row again every SECRETS_RELOAD_MS.
//
// A rotation adds a key that starts signing ROTATION_PROPAGATION_MS later,
// and gives the keys before it a valid_until of that moment plus the grace
// period. Every node reads the new key, and verifies with it, before any
// node signs with it; so a cursor is never refused for a key its node does
// not know yet. A secret from the config (timeline_cursor_secret, the same
// on every node) is used instead of all this, as on one node.
import { randomBytes } from "node:crypto";
import postgres from "postgres";
import { z } from "zod";
import { ApiError } from "../errors.js";
import { logger } from "../logger.js";
import { TIMELINE_CURSOR_SECRET_CHARS_MAX, TIMELINE_CURSOR_SECRET_CHARS_MIN } from "../limits.js";
import { type CursorKeys, CursorSigner, PREVIOUS_SECRETS_MAX } from "../timeline/cursor.js";

const CURSOR_SECRETS = "timeline_cursor";
/** 32 random bytes, base64url: 43 characters (the config's bounds are 32 to 1,024). */
const SECRET_BYTES = 32;
/** How often each node reads the keys again. */
export const SECRETS_RELOAD_MS = 1000;
/** How long after a rotation its key starts signing: several reloads, so every node verifies it first (and a clock a little apart). */
export const ROTATION_PROPAGATION_MS = 5000;

const keySchema = z
  .object({
    secret: z.string().min(TIMELINE_CURSOR_SECRET_CHARS_MIN).max(TIMELINE_CURSOR_SECRET_CHARS_MAX),
    active_from: z.number().int().min(0),
    valid_until: z.number().int().min(0).nullable(),
  })
  .strict();
const keysSchema = z
  .array(keySchema)
  .min(1)
  .max(PREVIOUS_SECRETS_MAX + 2);
type StoredKey = z.infer<typeof keySchema>;

const newSecret = () => randomBytes(SECRET_BYTES).toString("base64url");

/** The signing key at `now` (the latest started and still valid) and every other key that verifies. */
export function keysAt(keys: readonly StoredKey[], now: number): CursorKeys {
  const valid = keys.filter((k) => k.valid_until === null || k.valid_until >= now);
  const started = valid.filter((k) => k.active_from <= now);
  // Never none: the oldest valid key signs if none has started (a clock behind the one that rotated).
  const candidates = started.length > 0 ? started : valid;
  const current = candidates.reduce((a, b) => (b.active_from > a.active_from ? b : a));
  return {
    current: current.secret,
    others: valid.filter((k) => k !== current).map((k) => ({ secret: k.secret, validUntil: k.valid_until ?? Number.POSITIVE_INFINITY })),
  };
}

/** The keys after a rotation at `now`: a new one signing from now + ROTATION_PROPAGATION_MS, those before it valid `graceMs` past that. */
export function rotated(keys: readonly StoredKey[], now: number, graceMs: number, secret = newSecret()): { keys: StoredKey[]; next: StoredKey } {
  const next: StoredKey = { secret, active_from: now + ROTATION_PROPAGATION_MS, valid_until: null };
  const until = next.active_from + graceMs;
  const kept = keys
    .filter((k) => k.valid_until === null || k.valid_until >= now)
    .map((k) => ({ ...k, valid_until: k.valid_until === null ? until : Math.min(k.valid_until, until) }))
    .sort((a, b) => b.active_from - a.active_from)
    .slice(0, PREVIOUS_SECRETS_MAX);
  return { keys: [next, ...kept], next };
}

export class ClusterSecrets {
  private readonly reload: NodeJS.Timeout;

  private constructor(
    private readonly sql: postgres.Sql,
    private readonly signer: CursorSigner,
    private readonly graceMs: number,
  ) {
    this.reload = setInterval(() => void this.refresh(), SECRETS_RELOAD_MS);
    this.reload.unref();
  }

  /** The cluster's keys (the first node's, made now if no node has yet), in a signer that follows them. */
  static async open(postgresUrl: string, dataDir: string, graceMs: number): Promise<ClusterSecrets> {
    const sql = postgres(postgresUrl, { max: 1, onnotice: () => {}, idle_timeout: 30 });
    const first: StoredKey[] = [{ secret: newSecret(), active_from: 0, valid_until: null }];
    await sql`insert into ticker_cluster_secrets (name, keys) values (${CURSOR_SECRETS}, ${sql.json(first)}) on conflict (name) do nothing`;
    const keys = await ClusterSecrets.read(sql);
    const now = keysAt(keys, Date.now());
    const signer = CursorSigner.open(dataDir, { secret: now.current, previousSecret: null, graceMs });
    signer.useKeys(now);
    return new ClusterSecrets(sql, signer, graceMs);
  }

  get cursorSigner(): CursorSigner {
    return this.signer;
  }

  private static async read(sql: postgres.Sql | postgres.TransactionSql): Promise<StoredKey[]> {
    const [row] = await sql<{ keys: unknown }[]>`select keys from ticker_cluster_secrets where name = ${CURSOR_SECRETS}`;
    const r = keysSchema.safeParse(row?.keys);
    if (!r.success) throw new Error(`the cluster's cursor secrets (ticker_cluster_secrets) are not usable: ${r.error.issues[0].message}`);
    return r.data;
  }

  /** Reads the keys again; a failure keeps the ones the signer has (and is logged). */
  async refresh(): Promise<void> {
    try {
      this.signer.useKeys(keysAt(await ClusterSecrets.read(this.sql), Date.now()));
    } catch (err) {
      logger().warn({ kind: "timeline", err: (err as Error).message }, `timeline cursor secrets: reading them again failed: ${(err as Error).message}`);
    }
  }

  /** POST /v1/timelines/_secret/rotate in cluster mode. */
  async rotate(): Promise<{ key_id: number; previous_valid_until: number; signs_from: number }> {
    let next: StoredKey | null = null;
    try {
      await this.sql.begin(async (tx) => {
        await tx`select 1 from ticker_cluster_secrets where name = ${CURSOR_SECRETS} for update`;
        const r = rotated(await ClusterSecrets.read(tx), Date.now(), this.graceMs);
        await tx`update ticker_cluster_secrets set keys = ${tx.json(r.keys)} where name = ${CURSOR_SECRETS}`;
        next = r.next;
      });
    } catch (err) {
      throw new ApiError(503, "storage_error", `the cursor secret was not rotated (${(err as Error).message}); retry`);
    }
    await this.refresh();
    const k = next as unknown as StoredKey;
    return { key_id: this.signer.idOf(k.secret), previous_valid_until: k.active_from + this.graceMs, signs_from: k.active_from };
  }

  async close(): Promise<void> {
    clearInterval(this.reload);
    await this.sql.end({ timeout: 2 });
  }
}
