// What the client commands print. Results go to stdout: one JSON value with
// --json, aligned text otherwise; notes for a person (summaries, a standby's
// wait) go to stderr, and not at all with --json. Events go out as lines
// through LineOut, which writes them in chunks, waits for each chunk to be
// written (the pipe's backpressure), and notices a reader that has gone.
import type { ConsumedEvent } from "../client/consume.js";
import type { CliContext } from "./context.js";
import { CliError, ExitCode } from "./exit-codes.js";

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

/** A line on stderr for a person; --json keeps stderr for errors only. */
export function note(ctx: CliContext, text: string): void {
  if (!ctx.json) process.stderr.write(`${text}\n`);
}

/** Rows as columns padded to their widest cell, the header first. */
export function printTable(header: string[], rows: Array<Array<string | number | null>>): void {
  const cells = [header, ...rows.map((r) => r.map((c) => (c === null ? "-" : String(c))))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => r[i].length)));
  for (const r of cells) process.stdout.write(`${r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join("  ")}\n`);
}

/** "1 event", "2 events". */
export const counted = (n: number, noun: string): string => `${n} ${noun}${n === 1 ? "" : "s"}`;

/** `key  value` lines, the keys padded to the longest. */
export function printFields(fields: Record<string, unknown>): void {
  const width = Math.max(...Object.keys(fields).map((k) => k.length));
  for (const [k, v] of Object.entries(fields))
    process.stdout.write(`${k.padEnd(width)}  ${v === null ? "-" : typeof v === "object" ? JSON.stringify(v) : String(v)}\n`);
}

export type EventFormat = "ndjson" | "payload";
export const EVENT_FORMATS: EventFormat[] = ["ndjson", "payload"];

/**
 * One event as one line: its API JSON form (ndjson), or its payload alone
 * (a JSON payload as compact JSON, a binary one as base64, none as an empty
 * line). Never the stored JSON text as is: it may hold newlines.
 */
export function eventLine(e: ConsumedEvent, format: EventFormat): string {
  if (format === "ndjson") return JSON.stringify(e.toJSON());
  const enc = e.payload_encoding;
  return enc === "json" ? JSON.stringify(e.payload) : enc === "binary" ? e.payload_bytes.toString("base64") : "";
}

/** Lines gathered before a write: a few pipe buffers' worth, one syscall. */
const CHUNK_CHARS_MAX = 256 * 1024;

/** Lines to stdout, written in chunks. `gone` once the reader closed its end (EPIPE: `| head`). */
export class LineOut {
  private chunk = "";
  gone = false;
  private failure: Error | null = null;

  constructor(private readonly out: NodeJS.WriteStream = process.stdout) {
    // Without a listener a write error would end the process with a stack.
    out.on("error", (err) => this.failed(err));
  }

  private failed(err: NodeJS.ErrnoException): void {
    if (err.code === "EPIPE") this.gone = true;
    else this.failure ??= err;
  }

  /** Adds a line; true once the chunk should be flushed. */
  add(line: string): boolean {
    this.chunk += `${line}\n`;
    return this.chunk.length >= CHUNK_CHARS_MAX;
  }

  /**
   * Writes the chunk and resolves once it is written: true, or false when
   * the reader has gone (then none of it counts as written). Another write
   * error (a full disk) is thrown.
   */
  async flush(): Promise<boolean> {
    const text = this.chunk;
    this.chunk = "";
    if (!this.gone && text.length > 0)
      await new Promise<void>((resolve) =>
        this.out.write(text, (err) => {
          if (err) this.failed(err);
          resolve();
        }),
      );
    if (this.failure) throw new CliError(`cannot write the output: ${this.failure.message}`, ExitCode.failure);
    return !this.gone;
  }
}
