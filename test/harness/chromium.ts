// A real Chromium for the browser tests: Debian's package (playwright's own
// download needs the internet, ../shared/ENVIRONMENT.md "Browsers"), driven
// by playwright-core, headless, with a profile of its own per launch.
import { type Browser, chromium } from "playwright-core";
import { aptInstall } from "./apt.js";

export const CHROMIUM_PATH = "/usr/bin/chromium";

/**
 * What works on these machines: no sandbox (tests run as root, where
 * Chromium's sandbox refuses to start), no GPU, and nothing that reaches
 * for the network on its own; shared memory in /tmp, since a container's
 * /dev/shm may be too small for a renderer. playwright adds --headless and a fresh
 * --user-data-dir (a temp dir it removes on close).
 */
const ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage"];

/** Installs Debian's chromium if missing (once per machine, under apt.ts's lock) and starts it. */
export async function launchChromium(): Promise<Browser> {
  await aptInstall(["chromium"], `test -x ${CHROMIUM_PATH}`);
  return chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: ARGS });
}
