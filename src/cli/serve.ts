// `ticker serve`: every configuration key is a --kebab-case flag, generated
// from the config schema with its description and default (one source for
// the flags, their help and the README's table). The flags go to loadConfig
// as they are, so flag > TICKER_<KEY> > --config file > default stays
// config.ts's rule, and a bad value is refused with the key's name.
import { Command, Option } from "commander";
import { ConfigError, configDocs, loadConfig, type ConfigKey, type ConfigKeyDoc } from "../config.js";
import { CliError, ExitCode } from "./exit-codes.js";

/** Short flags for config keys whose full flag reads long. */
const FLAG_ALIASES: ReadonlyArray<{ flag: string; key: ConfigKey }> = [
  { flag: "tls-cert", key: "tls_cert_file" },
  { flag: "tls-key", key: "tls_key_file" },
];

const EXAMPLES = `
Every key is also TICKER_<KEY> in the environment (TICKER_DATA_DIR=/var/lib/ticker)
and a snake_case key of the --config file (or TICKER_CONFIG); flags win over the
environment, which wins over the file. Exit statuses: docs/cli.md.

Examples:
  $ ticker serve                                      # 127.0.0.1:8080, data in ./data
  $ ticker serve --port 9000 --data-dir /var/lib/ticker --shards 4
  $ TICKER_DEFAULT_DURABILITY=fsync ticker serve --config ticker.json
  $ ticker serve --host 0.0.0.0 --api-keys-file keys.json --tls-cert cert.pem --tls-key key.pem`;

const flagOf = (key: string): string => `--${key.replaceAll("_", "-")}`;

function valueName(doc: ConfigKeyDoc): string {
  if (doc.values) return doc.values.join("|");
  if (typeof doc.default === "number") return "n";
  if (typeof doc.default === "boolean") return "true|false";
  return "value";
}

/** The default as --help shows it: this machine's value, and the rule where it depends on the machine. */
function shownDefault(doc: ConfigKeyDoc): string {
  const value = doc.default === "" ? "none" : String(doc.default);
  return doc.defaultRule ? `${value} here; ${doc.defaultRule}` : value;
}

export function serveCommand(): Command {
  const cmd = new Command("serve")
    .description("run a Ticker server in the foreground until SIGTERM or SIGINT")
    .option("--config <file>", "JSON file of snake_case config keys (default: $TICKER_CONFIG, else none)");
  // Option attribute (commander's camelCase name) -> config key.
  const keyOf = new Map<string, ConfigKey>();
  for (const doc of configDocs()) {
    // No commander default: an absent flag must leave the key to the environment and the file.
    const option = new Option(`${flagOf(doc.key)} <${valueName(doc)}>`, `${doc.description.replaceAll("`", "")} (default: ${shownDefault(doc)})`);
    keyOf.set(option.attributeName(), doc.key);
    cmd.addOption(option);
  }
  for (const { flag, key } of FLAG_ALIASES) {
    const option = new Option(`--${flag} <path>`, `short for ${flagOf(key)}`);
    keyOf.set(option.attributeName(), key);
    cmd.addOption(option);
  }
  return cmd.addHelpText("after", EXAMPLES).action(async (opts: Record<string, string | undefined>) => {
    const flags: Record<string, string | undefined> = { config: opts.config };
    for (const [attribute, key] of keyOf) if (opts[attribute] !== undefined) flags[key] = opts[attribute];
    let config: ReturnType<typeof loadConfig>;
    try {
      config = loadConfig(flags);
    } catch (err) {
      if (err instanceof ConfigError) throw new CliError(err.message, ExitCode.usage);
      throw err;
    }
    const { runServer } = await import("./server.js");
    await runServer(config);
  });
}
