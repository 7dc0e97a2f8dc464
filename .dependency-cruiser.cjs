// The layer rule of src/ (docs/architecture.md): imports follow the data's
// path, front -> shard -> log / wire / ring / consumer, never back; the
// modules at src/ top level (errors, config, limits, bytes, crc, stream-id,
// validate) are leaves anyone may import and that import no layer.
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: "data-path-runs-forward",
      comment: "log, wire, ring and consumer are below the shard and the front: they never import them",
      severity: "error",
      from: { path: "^src/(log|wire|ring|consumer)/" },
      to: { path: "^src/(shard|front|cli)/" },
    },
    {
      name: "shard-below-front",
      comment: "a shard worker never imports the front (the main thread's I/O) or the CLI",
      severity: "error",
      from: { path: "^src/shard/" },
      to: { path: "^src/(front|cli)/" },
    },
    {
      name: "timeline-below-front",
      comment: "timeline stores and cursors serve the front; they never import it or the CLI",
      severity: "error",
      from: { path: "^src/timeline/" },
      to: { path: "^src/(front|cli)/" },
    },
    {
      name: "cluster-below-front",
      comment: "leases, fencing, the tail store and the archive serve the front and the shards' owners; they never import the front, the shards or the CLI",
      severity: "error",
      from: { path: "^src/cluster/" },
      to: { path: "^src/(front|shard|cli)/" },
    },
    {
      name: "front-below-cli",
      comment: "the CLI starts the front, not the other way round",
      severity: "error",
      from: { path: "^src/front/" },
      to: { path: "^src/cli/" },
    },
    {
      name: "client-stands-apart",
      comment: "ticker/client runs in users' processes: it uses the wire formats and leaves, never the server's layers",
      severity: "error",
      from: { path: "^src/client/" },
      to: { path: "^src/(front|shard|log|ring|consumer|timeline|cli)/" },
    },
    {
      name: "server-without-client",
      comment: "the server never imports the client (the CLI's commands may)",
      severity: "error",
      from: { path: "^src/(front|shard|log|ring|consumer|timeline|wire)/" },
      to: { path: "^src/client/" },
    },
    {
      name: "leaves-stay-leaves",
      comment: "src/*.ts are leaf modules: they import other leaves and packages only",
      severity: "error",
      from: { path: "^src/[^/]+\\.ts$" },
      to: { path: "^src/[^/]+/" },
    },
    {
      name: "src-stands-alone",
      comment: "the server never imports its tests or benchmarks",
      severity: "error",
      from: { path: "^src/" },
      to: { path: "^(test|loadtest|native-bench)/" },
    },
    {
      name: "no-circular",
      comment: "a cycle makes load order matter and hides which module owns what",
      severity: "error",
      from: {},
      to: { circular: true, viaOnly: { dependencyTypesNot: ["type-only"] } },
    },
    {
      name: "not-to-unresolvable",
      severity: "error",
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
    enhancedResolveOptions: { exportsFields: ["exports"], conditionNames: ["import", "require", "node", "default"], extensions: [".ts", ".js", ".mjs", ".cjs"] },
  },
};
