// The secrets the nodes of a cluster share: today the timeline cursor
// secret, so that a cursor one node signed is verified by any other (a
// client's next page may go to any node). The first node to start makes it,
// one statement that only inserts if no node has; every node then reads the
// one that won. A secret from the config (timeline_cursor_secret, the same
// on every node) is used instead.
import { randomBytes } from "node:crypto";
import postgres from "postgres";

const CURSOR_SECRET = "timeline_cursor";
/** 32 random bytes, base64url: 43 characters (the config's bounds are 32 to 1,024). */
const SECRET_BYTES = 32;

export async function clusterCursorSecret(postgresUrl: string): Promise<string> {
  const sql = postgres(postgresUrl, { max: 1, onnotice: () => {}, idle_timeout: 5 });
  try {
    await sql`insert into ticker_cluster_secrets (name, secret) values (${CURSOR_SECRET}, ${randomBytes(SECRET_BYTES).toString("base64url")})
      on conflict (name) do nothing`;
    const [row] = await sql<{ secret: string }[]>`select secret from ticker_cluster_secrets where name = ${CURSOR_SECRET}`;
    return row.secret;
  } finally {
    await sql.end({ timeout: 2 });
  }
}
