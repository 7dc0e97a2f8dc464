// promtool (Prometheus's rule and exposition checker), from Debian's
// prometheus package, installed when missing. The package also brings the
// prometheus server and its service: a test wants the tool only, so the
// daemon the package's postinst may have started is stopped and disabled
// again, and nothing is left listening on :9090.
import { existsSync, readFileSync } from "node:fs";
import { aptInstall } from "./apt.js";
import { alive, onPath, run } from "./process.js";

/** Where the package's sysvinit script keeps the daemon's pid (/etc/init.d/prometheus). */
const SYSV_PID_PATH = "/run/prometheus/prometheus.pid";
const SERVICE_TIMEOUT_MS = 60_000;

/** promtool's path, installing Debian's prometheus package (without its recommended node exporter) first if it is not on PATH. */
export async function ensurePromtool(): Promise<string> {
  const found = onPath("promtool");
  if (found) return found;
  console.error("promtool not on PATH: apt-get install -y --no-install-recommends prometheus");
  await aptInstall(["prometheus"], "command -v promtool >/dev/null", { recommends: false });
  await stopPackagedDaemon();
  return onPath("promtool")!;
}

/**
 * The postinst enables and starts prometheus.service (or the init script)
 * unless policy-rc.d forbids it, as it does in most containers. Only called
 * right after this process installed the package, so the daemon is ours.
 */
async function stopPackagedDaemon(): Promise<void> {
  if (existsSync("/run/systemd/system")) {
    await run("systemctl", ["disable", "--now", "prometheus.service"], SERVICE_TIMEOUT_MS);
    if ((await run("systemctl", ["is-active", "--quiet", "prometheus.service"], SERVICE_TIMEOUT_MS)).ok)
      throw new Error("installing prometheus started prometheus.service, and it did not stop");
    return;
  }
  if (!alive(sysvPid())) return;
  await run("/etc/init.d/prometheus", ["stop"], SERVICE_TIMEOUT_MS);
  if (alive(sysvPid())) throw new Error(`installing prometheus started its daemon (pid ${sysvPid()}), and /etc/init.d/prometheus stop did not stop it`);
}

function sysvPid(): number {
  try {
    return Number.parseInt(readFileSync(SYSV_PID_PATH, "utf8"), 10);
  } catch {
    return 0;
  }
}
