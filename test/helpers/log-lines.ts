// The server's log as records: every stdout/stderr line of a JSON-format
// server must parse, so a line that does not is a test failure, not skipped.
export interface LogLine {
  level: string;
  time: string;
  kind: string;
  msg: string;
  shard?: number;
  [field: string]: unknown;
}

export function logLines(output: string): LogLine[] {
  return output
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => {
      try {
        return JSON.parse(l) as LogLine;
      } catch {
        throw new Error(`a log line is not JSON: ${l}`);
      }
    });
}

export const linesOfKind = (output: string, kind: string): LogLine[] => logLines(output).filter((l) => l.kind === kind);

/** The first line of `kind` (and matching `where`) in `output()`, polled until it appears or `timeoutMs` passes. */
export async function lineOfKind(output: () => string, kind: string, where: (l: LogLine) => boolean = () => true, timeoutMs = 10_000): Promise<LogLine> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const line = linesOfKind(output(), kind).find(where);
    if (line) return line;
    if (Date.now() > deadline) throw new Error(`no "${kind}" log line within ${timeoutMs} ms:\n${output()}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
