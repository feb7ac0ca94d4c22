// Turns the environment ClawHQ gives an agent container into OpenClaw's config. Pure: no I/O,
// so it can be tested with any Node.js (see tests/unit/test_openclaw_entrypoint.py).
//
// Secrets never enter the config file: every credential is an OpenClaw SecretRef naming an
// environment variable ({source: "env", ...}), resolved by the gateway at run time. The file
// lives on the agent's workspace volume, so this keeps keys off the disk.

export const GATEWAY_PORT = 18789;

/** Exit code for a configuration the container cannot run with (sysexits' EX_CONFIG). */
export const EX_CONFIG = 78;

/** ClawHQ's provider names -> OpenClaw's provider id and the env variable holding its key. */
export const PROVIDERS = Object.freeze({
  claude: { id: "anthropic", keyEnv: "ANTHROPIC_API_KEY" },
  openai: { id: "openai", keyEnv: "OPENAI_API_KEY" },
  gemini: { id: "google", keyEnv: "GEMINI_API_KEY" },
  deepseek: { id: "deepseek", keyEnv: "DEEPSEEK_API_KEY" },
  grok: { id: "xai", keyEnv: "XAI_API_KEY" },
});

/** Where the image installs OpenClaw and its channel plugins (npm packages `@openclaw/<id>`). */
export const OPENCLAW_DIR = "/opt/openclaw";

/**
 * Channels this image can run: the env variables each needs, and for the ones that are not
 * built into openclaw, the plugin (`@openclaw/<id>`, installed in the image beside openclaw).
 */
export const CHANNELS = Object.freeze({
  telegram: { env: ["TELEGRAM_BOT_TOKEN"] },
  slack: { env: ["SLACK_BOT_TOKEN", "SLACK_APP_TOKEN"], plugin: "@openclaw/slack" },
  discord: { env: ["DISCORD_BOT_TOKEN"], plugin: "@openclaw/discord" },
  // No credential: the owner links WhatsApp by scanning a QR code in the Control UI, and the
  // session stays in the state directory on the workspace volume (~/.openclaw/credentials).
  whatsapp: { env: [], plugin: "@openclaw/whatsapp" },
});

/** Channels ClawHQ knows but this image cannot run headless, and why (none at present). */
export const UNSUPPORTED_CHANNELS = Object.freeze({});

/** The folder of a channel plugin's npm package in the image. */
export function pluginPath(id, openclawDir = OPENCLAW_DIR) {
  return `${openclawDir}/node_modules/${CHANNELS[id].plugin}`;
}

/** The channels of CLAWHQ_CHANNELS that need one of the image's plugins. */
export function pluginChannels(env) {
  return channelList(env).filter((id) => CHANNELS[id]?.plugin);
}

export class ConfigError extends Error {}

const envRef = (id) => ({ source: "env", provider: "default", id });

function required(env, name, why) {
  const value = (env[name] ?? "").trim();
  if (!value) throw new ConfigError(`${name} is not set: ${why}`);
  return value;
}

/** The model reference `provider/model`, from CLAWHQ_MODEL_PROVIDER and CLAWHQ_MODEL. */
export function modelRef(env) {
  const name = required(env, "CLAWHQ_MODEL_PROVIDER", "it names the model provider");
  const provider = PROVIDERS[name];
  if (!provider) {
    throw new ConfigError(
      `unknown model provider ${JSON.stringify(name)} in CLAWHQ_MODEL_PROVIDER ` +
        `(known: ${Object.keys(PROVIDERS).join(", ")})`,
    );
  }
  const model = required(env, "CLAWHQ_MODEL", "it names the model");
  return model.startsWith(`${provider.id}/`) ? model : `${provider.id}/${model}`;
}

/** The channel ids listed in CLAWHQ_CHANNELS (a JSON list of strings; empty when unset). */
export function channelList(env) {
  const raw = (env.CLAWHQ_CHANNELS ?? "").trim();
  if (!raw) return [];
  let parsed;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw new ConfigError("CLAWHQ_CHANNELS is not JSON: expected a list like [\"telegram\"]");
  }
  if (!Array.isArray(parsed) || parsed.some((c) => typeof c !== "string")) {
    throw new ConfigError("CLAWHQ_CHANNELS must be a JSON list of channel names");
  }
  return [...new Set(parsed)];
}

function channelBlock(id, env) {
  if (Object.hasOwn(UNSUPPORTED_CHANNELS, id)) {
    throw new ConfigError(`channel ${id} is not supported by this image: ${UNSUPPORTED_CHANNELS[id]}`);
  }
  const spec = CHANNELS[id];
  if (!spec) {
    throw new ConfigError(
      `unknown channel ${JSON.stringify(id)} in CLAWHQ_CHANNELS ` +
        `(supported: ${Object.keys(CHANNELS).join(", ")})`,
    );
  }
  const missing = spec.env.filter((name) => !(env[name] ?? "").trim());
  if (missing.length) {
    throw new ConfigError(`channel ${id} is listed but ${missing.join(" and ")} is not set`);
  }
  switch (id) {
    case "telegram":
      return { enabled: true, botToken: envRef("TELEGRAM_BOT_TOKEN") };
    case "slack": // Socket Mode, so no public URL is needed.
      return {
        enabled: true,
        mode: "socket",
        botToken: envRef("SLACK_BOT_TOKEN"),
        appToken: envRef("SLACK_APP_TOKEN"),
      };
    case "discord":
      return { enabled: true, token: envRef("DISCORD_BOT_TOKEN") };
    case "whatsapp": // unknown senders ask for access, which the owner approves
      return { enabled: true, dmPolicy: "pairing" };
    default:
      throw new ConfigError(`channel ${id} has no config block in this image`);
  }
}

/**
 * The install record OpenClaw keeps for a plugin installed from its official npm package,
 * pointing at the package in the image. `installed` is what the image holds:
 * `{ version, integrity }` (npm's lockfile), read by the entrypoint.
 *
 * OpenClaw gives channel plugins that are not bundled with it their state stores and inbound
 * admission only when such a record ties them to their official package ("trusted official
 * install"); a plugin merely loaded by path is refused (`PluginTrustRefusalError`). Records
 * live in the state database on the volume: the retired config key `plugins.installs` is how
 * one gets there, as the gateway imports it at start (and then drops it from the file).
 */
export function installRecord(id, installed, openclawDir = OPENCLAW_DIR) {
  const name = CHANNELS[id].plugin;
  const spec = `${name}@${installed.version}`;
  return {
    source: "npm",
    spec,
    installPath: pluginPath(id, openclawDir),
    version: installed.version,
    resolvedName: name,
    resolvedVersion: installed.version,
    resolvedSpec: spec,
    ...(installed.integrity ? { integrity: installed.integrity } : {}),
  };
}

/**
 * The credentials of the channels not listed, kept from the gateway: OpenClaw takes a token in
 * its env (DISCORD_BOT_TOKEN, SLACK_*) for a configured channel and then tries to install the
 * channel's plugin with npm at start, which fails here and stops the gateway.
 */
function unlistedChannelEnv(channels) {
  return Object.entries(CHANNELS)
    .filter(([id]) => !Object.hasOwn(channels, id))
    .flatMap(([, spec]) => spec.env);
}

/** The config as the gateway keeps it once it has imported the install records at start. */
export function withoutInstallRecords(config) {
  if (!config.plugins?.installs) return config;
  const { installs: _installs, ...plugins } = config.plugins;
  return { ...config, plugins };
}

/**
 * The whole config and the environment changes for the gateway process.
 * `installed` maps each plugin channel of CLAWHQ_CHANNELS to what the image holds of its
 * plugin (`{ version, integrity }`, see installRecord); `openclawDir` is where.
 * Throws ConfigError (one line, for the container log) when ClawHQ's env cannot be run.
 */
export function buildConfig(env, { installed = {}, openclawDir = OPENCLAW_DIR } = {}) {
  const primary = modelRef(env);
  const provider = PROVIDERS[env.CLAWHQ_MODEL_PROVIDER.trim()];
  const apiKey = required(env, "CLAWHQ_API_KEY", "the agent has no model provider key");
  required(
    env,
    "OPENCLAW_GATEWAY_TOKEN",
    "the gateway refuses to listen beyond loopback without auth",
  );
  const channels = {};
  for (const id of channelList(env)) channels[id] = channelBlock(id, env);

  const config = {
    gateway: {
      mode: "local",
      bind: "lan",
      port: GATEWAY_PORT,
      auth: { mode: "token", token: envRef("OPENCLAW_GATEWAY_TOKEN") },
    },
    agents: { defaults: { model: { primary } } },
    // The image pins OpenClaw: no self-update checks, no hosted catalog downloads, no mDNS.
    update: { checkOnStart: false },
    models: { catalogRefresh: { enabled: false } },
    discovery: { mdns: { mode: "off" } },
  };
  if (Object.keys(channels).length) config.channels = channels;
  const plugins = Object.keys(channels).filter((id) => CHANNELS[id].plugin);
  if (plugins.length) {
    const entries = {};
    const installs = {};
    for (const id of plugins) {
      if (!installed[id]?.version) {
        throw new ConfigError(`channel ${id}: its plugin ${CHANNELS[id].plugin} is not in this image`);
      }
      entries[id] = { enabled: true };
      installs[id] = installRecord(id, installed[id], openclawDir);
    }
    config.plugins = { entries, installs };
  }
  return {
    config,
    // The provider key goes to the gateway under the provider's own name; ClawHQ's copies of
    // the key and of the webhook token stay out of the gateway (and of the agent's tools).
    setEnv: { [provider.keyEnv]: apiKey, DO_NOT_TRACK: "1", OPENCLAW_DISABLE_BONJOUR: "1" },
    unsetEnv: ["CLAWHQ_API_KEY", "CLAWHQ_WEBHOOK_TOKEN", ...unlistedChannelEnv(channels)],
  };
}
