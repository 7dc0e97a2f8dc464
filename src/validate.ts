// One rule for what clients send, on every route (README, "Errors"): a query
// parameter or body field the route does not know, or a parameter given
// twice, is a 400 that names it; a number outside its range is a 400 that
// gives the range. The front checks query names before a request goes
// anywhere; the shard and the consume hub read values through intParam and
// bodies through parseBody.
import { isUtf8 } from "node:buffer";
import type { z } from "zod";
import { ApiError, type ErrorCode } from "./errors.js";

/** Characters of a client's parameter name or value echoed in an error. */
const ECHO_CHARS_MAX = 40;
const echo = (s: string) => JSON.stringify(s.length > ECHO_CHARS_MAX ? `${s.slice(0, ECHO_CHARS_MAX)}...` : s);

/** The route's parameters, checked: unknown or repeated names are refused. */
export function checkQuery(query: string, allowed: ReadonlySet<string>): URLSearchParams {
  let q: URLSearchParams;
  try {
    q = new URLSearchParams(query);
  } catch {
    throw new ApiError(400, "invalid_parameter", "the query string cannot be read");
  }
  const unknown: string[] = [];
  const repeated: string[] = [];
  const seen = new Set<string>();
  for (const k of q.keys()) {
    if (!allowed.has(k)) {
      if (!unknown.includes(k)) unknown.push(k);
    } else if (seen.has(k)) {
      if (!repeated.includes(k)) repeated.push(k);
    } else seen.add(k);
  }
  if (unknown.length > 0) {
    const names = unknown.slice(0, 5).map(echo).join(", ");
    const known = allowed.size === 0 ? "this route takes none" : `this route takes ${[...allowed].map((k) => `"${k}"`).join(", ")}`;
    throw new ApiError(400, "invalid_parameter", `unknown query parameter(s) ${names}; ${known}`, { parameters: unknown.slice(0, 5) });
  }
  if (repeated.length > 0) {
    throw new ApiError(400, "invalid_parameter", `query parameter(s) ${repeated.map(echo).join(", ")} given more than once`, { parameters: repeated });
  }
  return q;
}

/**
 * An integer parameter in [min, max], `dflt` when absent. Digits only: no
 * sign, no exponent, no fraction, at most 16 of them (safe integers).
 */
export function intParam(q: URLSearchParams, name: string, dflt: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const v = q.get(name);
  if (v === null) return dflt;
  return intValue(name, v, min, max);
}

export function intValue(name: string, v: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const n = /^\d{1,16}$/.test(v) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new ApiError(400, "invalid_parameter", `"${name}" must be an integer from ${min} to ${max}, got ${echo(v)}`, { parameter: name, min, max });
  }
  return n;
}

/**
 * A JSON body checked against a strict zod schema: unknown fields are named,
 * and the first other problem is reported with its field.
 */
export function parseBody<T extends z.ZodTypeAny>(schema: T, body: unknown, code: ErrorCode): z.infer<T> {
  const r = schema.safeParse(body);
  if (r.success) return r.data;
  const i = r.error.issues[0];
  const where = i.path.length ? `"${i.path.join(".")}"` : "body";
  const msg = i.code === "unrecognized_keys" ? `unknown field(s) ${i.keys.slice(0, 5).map(echo).join(", ")}` : `${where}: ${i.message}`;
  throw new ApiError(400, code, msg, i.code === "unrecognized_keys" ? { fields: i.keys.slice(0, 5) } : {});
}

/** Refuses fields of a JSON object body that the route does not know, naming them. */
export function rejectUnknownFields(body: object, allowed: ReadonlySet<string>, code: ErrorCode): void {
  const unknown = Object.keys(body).filter((k) => !allowed.has(k));
  if (unknown.length === 0) return;
  throw new ApiError(
    400,
    code,
    `unknown field(s) ${unknown.slice(0, 5).map(echo).join(", ")}; the body takes ${[...allowed].map((k) => `"${k}"`).join(", ")}`,
    {
      fields: unknown.slice(0, 5),
    },
  );
}

/**
 * Why bytes cannot be a JSON body, or null. JSON text is UTF-8 (RFC 8259).
 * A byte-order mark is refused on every JSON route: the RFC lets a parser
 * ignore one, but some of our clients' parsers do not, and a body must mean
 * the same to every reader (README, "Errors and input rules").
 */
export function jsonTextProblem(b: Uint8Array): string | null {
  if (b.length >= 3 && b[0] === 0xef && b[1] === 0xbb && b[2] === 0xbf) return "body starts with a UTF-8 byte-order mark; send JSON without one";
  if (!isUtf8(b)) return "body is not valid UTF-8";
  return null;
}

/** A JSON request body, by the rules every JSON route has (README, "Errors and input rules"); an empty one is `{}`. */
export function jsonBody(b: Buffer): unknown {
  return b.length === 0 ? {} : jsonText(b);
}

/** JSON text by those rules, or 400 invalid_json naming what is wrong with it. */
export function jsonText(b: Buffer): unknown {
  const problem = jsonTextProblem(b);
  if (problem) throw new ApiError(400, "invalid_json", `request body is not valid JSON: ${problem}`);
  try {
    return JSON.parse(b.toString("utf8"));
  } catch (err) {
    throw new ApiError(400, "invalid_json", `request body is not valid JSON: ${(err as Error).message}`);
  }
}
