// The progress line of long client commands (publish a file, replay a
// stream): events done, events/s and, when the total is known, a bar and an
// ETA. It is for a person watching: drawn on stderr only when stderr is a
// terminal and the output is not --json, so a pipe, a log file or a script
// reading stdout never gets a byte of it.
import cliProgress from "cli-progress";

/** Redraws a second; a faster bar costs the command CPU and a person cannot read it. */
const REDRAWS_PER_S = 5;

export interface Progress {
  /** `events` more are done. */
  add(events: number): void;
  /** Draws the last state and ends the line; call it on success and on failure. */
  stop(): void;
}

export interface ProgressOptions {
  /** What is being counted, at the start of the line ("publish", "replay md.btc-usd"). */
  label: string;
  /** Events the command will do, when it knows (a file's lines, a range of seqs). */
  total?: number;
  /** --json: machine output, so no bar. */
  json: boolean;
  /** Where the bar goes; stderr unless a test says otherwise. */
  stream?: NodeJS.WriteStream;
}

const NONE: Progress = { add() {}, stop() {} };

/** Whether a progress line is drawn: a command skips work only the bar needs (counting a file's lines) when it is not. */
export function progressShown(json: boolean, stream: NodeJS.WriteStream = process.stderr): boolean {
  return !json && stream.isTTY === true;
}

/** A progress line, or one that draws nothing when nobody is watching a terminal. */
export function startProgress(opts: ProgressOptions): Progress {
  const stream = opts.stream ?? process.stderr;
  if (!progressShown(opts.json, stream)) return NONE;
  const known = opts.total !== undefined;
  const bar = new cliProgress.SingleBar({
    stream,
    fps: REDRAWS_PER_S,
    format: known
      ? "{label} [{bar}] {percentage}% | {value}/{total} events | {rate} events/s | ETA {eta_formatted}"
      : "{label} {value} events | {rate} events/s | {duration_formatted}",
    barsize: 30,
    etaBuffer: 50,
    // Without it the ETA is only recomputed on add(), and stalls while the server is slow.
    etaAsynchronousUpdate: true,
  });
  const started = performance.now();
  let done = 0;
  const rate = () => {
    const s = (performance.now() - started) / 1000;
    return s > 0 ? Math.round(done / s) : 0;
  };
  bar.start(opts.total ?? 0, 0, { label: opts.label, rate: 0 });
  return {
    add(events) {
      done += events;
      bar.update(done, { rate: rate() });
    },
    stop() {
      bar.update(done, { rate: rate() });
      bar.stop();
    },
  };
}
