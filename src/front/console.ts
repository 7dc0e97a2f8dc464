// The operator's web console (docs/operations.md, "Console"): a handful of
// static files read once at start and served from memory, so a request for
// the page never touches the disk and no build step runs. The page holds no
// data: it reads the JSON API with the key the operator types, which is why
// its routes are open like /healthz.
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type uWS from "uWebSockets.js";
import { ApiError } from "../errors.js";
import { ContentType } from "../shard/protocol.js";
import { checkQuery } from "../validate.js";
import type { GuardedApp } from "./auth.js";
import { exchange, send, sendError } from "./http.js";
import { NO_PARAMS } from "./query-params.js";

/**
 * The package root: the first folder above this file with a package.json.
 * Found, not counted in "../": this file runs from dist/src/front/ (the
 * server) and from src/front/ (tests), and the assets stay in src/.
 */
const PACKAGE_ROOT = (() => {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "package.json")) && dirname(dir) !== dir) dir = dirname(dir);
  return dir;
})();

const CONSOLE_DIR = join(PACKAGE_ROOT, "src", "ops", "console");
const require = createRequire(import.meta.url);

const HTML = "text/html; charset=utf-8";
const JS = "text/javascript; charset=utf-8";
const CSS = "text/css; charset=utf-8";

/** Every file the console serves, by the name in its URL; nothing else under /console/ is answered but 404. */
const FILES: ReadonlyArray<{ name: string; path: string; type: string }> = [
  { name: "index.html", path: join(CONSOLE_DIR, "index.html"), type: HTML },
  { name: "app.js", path: join(CONSOLE_DIR, "app.js"), type: JS },
  { name: "api.js", path: join(CONSOLE_DIR, "api.js"), type: JS },
  { name: "stream.js", path: join(CONSOLE_DIR, "stream.js"), type: JS },
  { name: "style.css", path: join(CONSOLE_DIR, "style.css"), type: CSS },
  { name: "uPlot.iife.min.js", path: require.resolve("uplot/dist/uPlot.iife.min.js"), type: JS },
  { name: "uPlot.min.css", path: require.resolve("uplot/dist/uPlot.min.css"), type: CSS },
];

interface Asset {
  body: Buffer;
  type: string;
}

let loaded: Map<string, Asset> | null = null;

/** The files, read on first use (at route registration, so a missing file stops the start, not a request). */
function assets(): Map<string, Asset> {
  loaded ??= new Map(FILES.map((f) => [f.name, { body: readFileSync(f.path), type: f.type }]));
  return loaded;
}

const notFound = (req: uWS.HttpRequest) => new ApiError(404, "not_found", `no route for ${req.getMethod().toUpperCase()} ${req.getUrl()}`);

/** Registers GET /console (and /console/<file>); the 405s are app.ts's, beside the other routes'. */
export function consoleRoutes(routes: GuardedApp): void {
  const files = assets();
  /** Answers with `a` (or 404); a query is refused as on every route: the console keeps its state in the URL's hash. */
  const serve = (res: uWS.HttpResponse, req: uWS.HttpRequest, a: Asset | undefined) => {
    const x = exchange(res, req);
    if (!a) return sendError(x, notFound(req));
    try {
      checkQuery(req.getQuery() ?? "", NO_PARAMS);
    } catch (err) {
      return sendError(x, err as ApiError);
    }
    // A page fetched again after an upgrade must not run last version's script.
    send(x, 200, ContentType.None, a.body, { "content-type": a.type, "cache-control": "no-cache" });
  };
  const index = files.get("index.html");
  // uWS tells "/console/" from "/console"; both are the page (documented once, as /console).
  for (const path of ["/console", "/console/"]) routes.get(path, "open", (res, req) => serve(res, req, index));
  routes.get("/console/:file", "open", (res, req) => serve(res, req, files.get(req.getParameter(0) ?? "")));
}
