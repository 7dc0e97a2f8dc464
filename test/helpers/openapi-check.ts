// Real answers checked against the server's own /openapi.json: the operation
// (path template and method) must be documented, the status must be one the
// operation lists, its required headers present (Retry-After on a 429), and
// the body valid against the schema, with ajv (OpenAPI 3.1 schemas are JSON
// Schema 2020-12). A path the document lacks may only answer 404, and a
// method a documented path lacks only 405 with an Allow header naming the
// path's documented methods: those are the answers the server gives to what
// it does not serve. Every checked answer is recorded as seen, so a test can
// ask which (operation, status) pairs it has driven.
import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";

/** One answer as it arrived: what was asked and what came back. */
export interface Answer {
  method: string;
  url: string;
  status: number;
  headers: Headers | Record<string, string | string[] | undefined>;
  /** The raw body; empty for a HEAD or a body-less answer. */
  body: Uint8Array;
}

interface Operation {
  responses: Record<string, { headers?: Record<string, { required?: boolean }>; content?: Record<string, unknown> }>;
}
interface Doc {
  paths: Record<string, Record<string, Operation>>;
}

const METHODS = ["get", "put", "post", "delete", "patch", "options", "head", "trace"];

export class OpenApiChecker {
  /** "GET /v1/streams/{id} 404", for every answer checked. */
  readonly seen = new Set<string>();
  private readonly ajv = new Ajv2020({ strict: false, allErrors: true });
  private readonly templates: Array<{ template: string; re: RegExp; literal: number }>;

  constructor(private readonly doc: Doc) {
    addFormats(this.ajv);
    // The whole document under one id: a response schema is compiled by its
    // JSON pointer, and its $refs to #/components resolve within the document.
    this.ajv.addSchema({ ...doc, $id: "openapi" });
    this.templates = Object.keys(doc.paths).map((template) => ({
      template,
      re: new RegExp(`^${template.replace(/[.*+?^$()|[\]\\]/g, "\\$&").replace(/\{\w+\}/g, "[^/]+")}$`),
      // A literal segment beats a parameter (uWS matches "_secret/rotate" before ":name/events").
      literal: template.split("/").filter((s) => !s.startsWith("{")).length,
    }));
    this.templates.sort((a, b) => b.literal - a.literal);
  }

  /** The checker of the document `baseUrl` serves. */
  static async of(baseUrl: string): Promise<OpenApiChecker> {
    const r = await fetch(`${baseUrl}/openapi.json`);
    if (r.status !== 200) throw new Error(`GET /openapi.json: ${r.status}`);
    return new OpenApiChecker((await r.json()) as Doc);
  }

  /** The documented path template of a URL's path, or null. */
  templateOf(pathname: string): string | null {
    return this.templates.find((t) => t.re.test(pathname))?.template ?? null;
  }

  /** Throws, naming the request, unless the answer is one the document describes. */
  check(a: Answer): void {
    const url = new URL(a.url);
    const method = a.method.toLowerCase();
    const what = `${a.method.toUpperCase()} ${url.pathname}${url.search} → ${a.status}`;
    const fail = (why: string): never => {
      throw new Error(`openapi conformance: ${what}: ${why}\nbody: ${Buffer.from(a.body).toString("utf8").slice(0, 500)}`);
    };
    const template = this.templateOf(url.pathname);
    if (template === null) {
      if (a.status !== 404) fail("the path is not in /openapi.json and the answer is not 404");
      return this.checkErrorBody(a, method, fail);
    }
    const item = this.doc.paths[template];
    const op = item[method];
    if (!op) {
      const documented = METHODS.filter((m) => item[m]).map((m) => m.toUpperCase());
      if (a.status !== 405) fail(`${a.method.toUpperCase()} is not documented on ${template} and the answer is not 405`);
      const allow = header(a.headers, "allow");
      const allowed = (allow ?? "").split(",").map((m) => m.trim());
      if (allowed.sort().join() !== [...documented].sort().join()) fail(`Allow is ${JSON.stringify(allow)}, the document has ${documented.join(", ")}`);
      // Any other method's 405 is the 405 each of the path's operations documents.
      for (const m of documented) this.seen.add(`${m} ${template} 405`);
      return this.checkErrorBody(a, method, fail);
    }
    const response = op.responses[String(a.status)];
    if (!response) fail(`status ${a.status} is not documented for ${method.toUpperCase()} ${template} (it lists ${Object.keys(op.responses).join(", ")})`);
    for (const [name, h] of Object.entries(response.headers ?? {})) {
      if (h.required && header(a.headers, name) === null) fail(`the documented header ${name} is missing`);
    }
    this.seen.add(`${method.toUpperCase()} ${template} ${a.status}`);
    const pointer = `openapi#/paths/${pointerSegment(template)}/${method}/responses/${a.status}/content`;
    this.checkBody(a, method, response.content, pointer, fail);
  }

  private checkErrorBody(a: Answer, method: string, fail: (why: string) => never): void {
    if (method === "head") return;
    const content = { "application/json": { schema: { $ref: "#/components/schemas/Error" } } };
    this.checkBody(a, method, content, "openapi#/components/schemas/Error", fail, true);
  }

  private checkBody(
    a: Answer,
    method: string,
    content: Record<string, unknown> | undefined,
    pointer: string,
    fail: (why: string) => never,
    whole = false,
  ): void {
    // A HEAD answer carries the headers of the GET's answer, never a body (RFC 9110, 9.3.2).
    if (method === "head") return;
    if (!content) {
      if (a.body.byteLength > 0) fail("the document gives this answer no body, but it has one");
      return;
    }
    const ct = (header(a.headers, "content-type") ?? "").split(";")[0].trim().toLowerCase();
    if (!(ct in content)) fail(`content-type ${JSON.stringify(ct)} is not one of ${Object.keys(content).join(", ")}`);
    // Only JSON bodies have a schema to hold them to; FlatBuffers are docs/wire.md's.
    if (ct !== "application/json") return;
    let body: unknown;
    try {
      body = JSON.parse(Buffer.from(a.body).toString("utf8"));
    } catch (err) {
      fail(`the body is not JSON (${(err as Error).message})`);
    }
    const validate = this.ajv.getSchema(whole ? pointer : `${pointer}/${pointerSegment(ct)}/schema`);
    if (!validate) fail(`no schema at ${pointer}`);
    else if (!validate(body)) fail(`the body does not match the schema: ${this.ajv.errorsText(validate.errors, { separator: "; " })}`);
  }
}

/** A JSON pointer segment. */
const pointerSegment = (s: string) => s.replace(/~/g, "~0").replace(/\//g, "~1");

function header(h: Answer["headers"], name: string): string | null {
  if (h instanceof Headers) return h.get(name);
  const v = h[name.toLowerCase()];
  if (v === undefined) return null;
  return Array.isArray(v) ? v.join(", ") : v;
}

/**
 * From now on in this test file, every answer `api` (helpers/server.ts)
 * receives is checked against the /openapi.json of the server it came from;
 * a non-conforming answer fails the test that made the request.
 */
export function checkAnswersAgainstOpenApi(): void {
  checking = true;
}

// Module state is per test file: vitest gives each file its own module graph.
let checking = false;
/** One checker per server, built from the document that server serves. */
const byOrigin = new Map<string, Promise<OpenApiChecker>>();

/** Called by `api` with each answer; checks it when this test file asked for it. */
export async function noteAnswer(a: Answer): Promise<void> {
  if (!checking) return;
  const origin = new URL(a.url).origin;
  let c = byOrigin.get(origin);
  if (!c) byOrigin.set(origin, (c = OpenApiChecker.of(origin)));
  (await c).check(a);
}
