// The cluster-mode keys of the config, checked together (config.ts calls
// this from its cross-key check): cluster mode is on when
// cluster_postgres_url is set, and then a node needs its id, where it is
// reached and the archive; off, those keys would be accepted and do nothing,
// so they are refused.
const NODE_ID = /^[A-Za-z0-9._-]{1,64}$/;

interface ClusterKeys {
  cluster_postgres_url: string;
  node_id: string;
  advertise_url: string;
  archive: string;
}

export function clusterProblems(c: ClusterKeys): Array<{ key: keyof ClusterKeys; message: string }> {
  const problems: Array<{ key: keyof ClusterKeys; message: string }> = [];
  if (c.cluster_postgres_url === "") {
    for (const key of ["node_id", "advertise_url", "archive"] as const)
      if (c[key] !== "") problems.push({ key, message: "is a cluster-mode key: set cluster_postgres_url (--cluster-postgres-url) too, or leave it out" });
    return problems;
  }
  if (!/^postgres(ql)?:\/\//.test(c.cluster_postgres_url))
    problems.push({ key: "cluster_postgres_url", message: "must be a postgres:// or postgresql:// URL" });
  if (!NODE_ID.test(c.node_id)) problems.push({ key: "node_id", message: "cluster mode needs a node id of 1 to 64 characters of A-Za-z0-9._- (--node-id)" });
  if (!advertisable(c.advertise_url))
    problems.push({
      key: "advertise_url",
      message: "cluster mode needs the http:// or https:// origin other nodes reach this one at, without a path (--advertise-url)",
    });
  if (!/^(file|s3):\/\/./.test(c.archive))
    problems.push({ key: "archive", message: "cluster mode needs an archive: file:///dir or s3://bucket/prefix (--archive)" });
  return problems;
}

function advertisable(url: string): boolean {
  try {
    const u = new URL(url);
    return (u.protocol === "http:" || u.protocol === "https:") && (u.pathname === "/" || u.pathname === "") && u.search === "" && u.hash === "";
  } catch {
    return false;
  }
}
