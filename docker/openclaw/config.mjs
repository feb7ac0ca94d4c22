// Turns the environment ClawHQ gives an agent container into OpenClaw's config. Pure: no I/O,
// so it can be tested with any Node.js (see tests/unit/test_openclaw_entrypoint.py).
//
// Secrets never enter the config file: every credential is an OpenClaw SecretRef naming an
// environment variable ({source: "env", ...}), resolved by the gateway at run time. The file
// lives on the agent's workspace volume, so this keeps keys off the disk.

export const GATEWAY_PORT = 18789;

/** Exit code for a configuration the container cannot run with (sysexits' EX_CONFIG). */
export const EX_CONFIG = 78;

/**
 * ClawHQ's provider names -> OpenClaw's provider id, the env variable holding its key, the
 * provider's own API path (kept when CLAWHQ_LLM_BASE_URL replaces its origin: ClawHQ forwards
 * `/llm/<id><rest>` to `<origin><rest>`), and OpenClaw's adapter for it (`api`). Checked
 * against the real gateway (tests/integration/test_openclaw_llm_paths.py): with baseUrl
 * `<CLAWHQ_LLM_BASE_URL><basePath>` the requests go to
 *   anthropic  <base>/v1/messages                            x-api-key
 *   openai     <base>/v1/responses                           Authorization: Bearer
 *   google     <base>/v1beta/models/<m>:streamGenerateContent?alt=sse   x-goog-api-key
 *   deepseek   <base>/chat/completions                       Authorization: Bearer
 *   xai        <base>/v1/responses                           Authorization: Bearer
 * `api` has to be written with the baseUrl: a provider block without it loses the bundled
 * provider's adapter (openai and google then post to <baseUrl>/chat/completions, anthropic's
 * utility model too). DeepSeek's provider is an external plugin
 * (@openclaw/deepseek-provider) that is not in the image and that the gateway would try to
 * install with npm at start (and fail to start): it is blocked and DeepSeek configured as a
 * plain OpenAI-compatible provider instead (`custom`).
 */
export const PROVIDERS = Object.freeze({
  claude: {
    id: "anthropic",
    keyEnv: "ANTHROPIC_API_KEY",
    origin: "https://api.anthropic.com",
    basePath: "",
    api: "anthropic-messages",
  },
  openai: {
    id: "openai",
    keyEnv: "OPENAI_API_KEY",
    origin: "https://api.openai.com",
    basePath: "/v1",
    api: "openai-responses",
  },
  gemini: {
    id: "google",
    keyEnv: "GEMINI_API_KEY",
    origin: "https://generativelanguage.googleapis.com",
    basePath: "/v1beta",
    api: "google-generative-ai",
  },
  deepseek: {
    id: "deepseek",
    keyEnv: "DEEPSEEK_API_KEY",
    origin: "https://api.deepseek.com",
    basePath: "",
    api: "openai-completions",
    custom: { plugin: "deepseek", contextWindow: 128000 },
  },
  grok: {
    id: "xai",
    keyEnv: "XAI_API_KEY",
    origin: "https://api.x.ai",
    basePath: "/v1",
    api: "openai-responses",
  },
});

/** The header ClawHQ's proxy puts its per-container identity secret in. */
export const IDENTITY_HEADER = "x-clawhq-identity";

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

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** CLAWHQ_PROXY_ADDRESSES: the IPv4 addresses or CIDRs ClawHQ's proxy connects from. */
export function proxyAddresses(env) {
  const raw = required(env, "CLAWHQ_PROXY_ADDRESSES", "trusted-proxy auth needs the proxy's address");
  const addresses = raw.split(",").map((a) => a.trim()).filter(Boolean);
  for (const address of addresses) {
    const [ip, bits, extra] = address.split("/");
    const prefixOk = bits === undefined || (/^\d{1,2}$/.test(bits) && Number(bits) <= 32);
    if (!IPV4.test(ip) || !prefixOk || extra !== undefined) {
      throw new ConfigError(`CLAWHQ_PROXY_ADDRESSES: ${JSON.stringify(address)} is not an IPv4 address or CIDR`);
    }
    // The gateway never trusts a loopback proxy without allowLoopback, which this image does
    // not set: a loopback address would only make every proxied request fail.
    if (ip.startsWith("127.")) {
      throw new ConfigError(`CLAWHQ_PROXY_ADDRESSES: ${address} is loopback, which the gateway never trusts here`);
    }
  }
  return [...new Set(addresses)];
}

/** CLAWHQ_PROXY_IDENTITY: the secret the proxy sends in X-ClawHQ-Identity. */
export function proxyIdentity(env) {
  const identity = required(env, "CLAWHQ_PROXY_IDENTITY", "trusted-proxy auth needs the proxy's identity");
  if (!/^[A-Za-z0-9_-]{32,}$/.test(identity)) {
    throw new ConfigError("CLAWHQ_PROXY_IDENTITY must be at least 32 URL-safe characters (A-Z a-z 0-9 _ -)");
  }
  return identity;
}

/** CLAWHQ_PUBLIC_ORIGIN: the browser origin of ClawHQ (scheme://host[:port], nothing more). */
export function publicOrigin(env) {
  const raw = required(env, "CLAWHQ_PUBLIC_ORIGIN", "the Control UI only accepts listed origins");
  let url;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError(`CLAWHQ_PUBLIC_ORIGIN is not a URL: ${JSON.stringify(raw)}`);
  }
  const bare = url.pathname === "/" && !url.search && !url.hash && !url.username && !url.password;
  if (!["http:", "https:"].includes(url.protocol) || !bare || raw.replace(/\/$/, "") !== url.origin) {
    throw new ConfigError(`CLAWHQ_PUBLIC_ORIGIN must be an origin like http://host:port, not ${JSON.stringify(raw)}`);
  }
  return url.origin;
}

/** CLAWHQ_BASE_PATH: the path prefix the Control UI is served under, e.g. /agents/<id>. */
export function basePath(env) {
  const raw = required(env, "CLAWHQ_BASE_PATH", "the Control UI is served under ClawHQ's path for the agent");
  const path = raw.replace(/\/+$/, "");
  if (!/^(\/[A-Za-z0-9._~-]+)+$/.test(path) || path.split("/").some((s) => s === "." || s === "..")) {
    throw new ConfigError(`CLAWHQ_BASE_PATH must be a path like /agents/<id>, not ${JSON.stringify(raw)}`);
  }
  return path;
}

/**
 * CLAWHQ_LLM_BASE_URL: where the agent reaches ClawHQ's LLM gateway for its provider
 * (`http://<clawhq>/llm/<id>`). The provider's baseUrl is it plus the provider's API path
 * (PROVIDERS). Optional for older ClawHQs: unset, the provider's default (undefined).
 */
export function llmBaseUrl(env, provider) {
  const raw = (env.CLAWHQ_LLM_BASE_URL ?? "").trim();
  if (!raw) return undefined;
  let url;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError(`CLAWHQ_LLM_BASE_URL is not a URL: ${JSON.stringify(raw)}`);
  }
  if (!["http:", "https:"].includes(url.protocol) || url.search || url.hash || url.username || url.password) {
    throw new ConfigError(
      `CLAWHQ_LLM_BASE_URL must be an http(s) URL without credentials or query, not ${JSON.stringify(raw)}`,
    );
  }
  // Behind an egress proxy, ClawHQ is reached through the entrypoint's relay (llmRelay).
  const origin = llmRelay(env) ? `http://127.0.0.1:${RELAY_PORT}` : url.origin;
  return `${origin}${url.pathname.replace(/\/+$/, "")}${provider.basePath}`;
}

/**
 * CLAWHQ_EGRESS_PROXY: ClawHQ's forward proxy (`http://host:port`, no credentials, path, query
 * or fragment), through which an agent under an `allowlist` egress policy reaches the outside.
 * Its origin; undefined when unset (no proxy: nothing changes).
 */
export function egressProxy(env) {
  const raw = (env.CLAWHQ_EGRESS_PROXY ?? "").trim();
  if (!raw) return undefined;
  let url;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError(`CLAWHQ_EGRESS_PROXY is not a URL: ${JSON.stringify(raw)}`);
  }
  const bare = url.pathname === "/" && !url.search && !url.hash && !url.username && !url.password;
  if (!["http:", "https:"].includes(url.protocol) || !bare) {
    throw new ConfigError(
      `CLAWHQ_EGRESS_PROXY must be a proxy URL like http://host:port, without credentials or path, not ${JSON.stringify(raw)}`,
    );
  }
  return url.origin;
}

/** The username ClawHQ's forward proxy expects; the password is the agent's LLM token. */
export const EGRESS_PROXY_USER = "agent";

/**
 * proxy.*: OpenClaw's managed network proxy (Proxyline), which routes the gateway's fetch,
 * node:http(s) and WebSocket clients through ClawHQ's proxy, loopback excepted
 * (`gateway-only`). The credentials are in the URL (Proxyline sends them as
 * `Proxy-Authorization: Basic`), the password as `${<provider key variable>}`: OpenClaw
 * substitutes it from the gateway's env when it loads the config, so the file holds the
 * variable's name, not the token (the gateway's env holds the token already, as the provider
 * key). The managed proxy has no bypass list beyond loopback: ClawHQ itself is reached
 * through the entrypoint's loopback relay instead (see llmRelay).
 */
export function proxyBlock(origin, provider) {
  const url = new URL(origin);
  return {
    enabled: true,
    proxyUrl: `${url.protocol}//${EGRESS_PROXY_USER}:\${${provider.keyEnv}}@${url.host}`,
    loopbackMode: "gateway-only",
  };
}

/** Where the entrypoint's relay to ClawHQ listens, inside the container (loopback only). */
// Clear of the gateway (18789), its sandbox listener (+1) and the ports OpenClaw reserves
// (18790-18799, browser CDP profiles from 18800).
export const RELAY_PORT = 17989;

/**
 * With an egress proxy, ClawHQ's LLM gateway (CLAWHQ_LLM_BASE_URL, plain http: the bridge's
 * gateway address) is reached through a TCP relay on 127.0.0.1:RELAY_PORT that the
 * entrypoint runs: the gateway's managed proxy sends everything but loopback to the proxy,
 * and the relay connects to ClawHQ directly. `{ host, port }` of ClawHQ, or undefined (no
 * proxy, no CLAWHQ_LLM_BASE_URL, or an https one, which then goes through the proxy: a relay
 * would break its certificate's name).
 */
export function llmRelay(env) {
  if (!egressProxy(env)) return undefined;
  const raw = (env.CLAWHQ_LLM_BASE_URL ?? "").trim();
  if (!raw) return undefined;
  const url = new URL(raw); // validated by llmBaseUrl
  if (url.protocol !== "http:") return undefined;
  return { host: url.hostname.replace(/^\[|\]$/g, ""), port: Number(url.port || 80) };
}

/**
 * models.providers.<id>: the provider's baseUrl, adapter and key (a SecretRef to its env
 * variable, so that what OpenClaw writes to the agent's models.json on the volume is the
 * variable's name, never the key, and a key left in that file is never preferred). Nothing for
 * a bundled provider without CLAWHQ_LLM_BASE_URL (OpenClaw's own defaults); DeepSeek always
 * gets one, with its model, since no plugin in the image provides it.
 */
export function providerBlock(env, provider, primary) {
  const baseUrl = llmBaseUrl(env, provider);
  if (!baseUrl && !provider.custom) return undefined;
  const block = {
    baseUrl: baseUrl ?? `${provider.origin}${provider.basePath}`,
    api: provider.api,
    apiKey: envRef(provider.keyEnv),
  };
  if (provider.custom) {
    const id = primary.slice(provider.id.length + 1);
    // The model's own baseUrl: OpenClaw would otherwise take one for the same model id from a
    // models.json left on the volume over the provider's.
    block.models = [{ id, name: id, baseUrl: block.baseUrl, contextWindow: provider.custom.contextWindow }];
  }
  return block;
}

/**
 * gateway.* for ClawHQ's authenticated reverse proxy: trusted-proxy auth keyed on a
 * per-container secret header, the Control UI under ClawHQ's path and origin, and the
 * OpenAI-compatible HTTP endpoints. The local password is for callers inside the container
 * (the reporter), which the gateway only accepts over loopback without forwarded headers.
 */
function gatewayBlock(env) {
  required(env, "OPENCLAW_GATEWAY_PASSWORD", "callers inside the container authenticate with it");
  const identity = proxyIdentity(env);
  return {
    mode: "local",
    bind: "lan",
    port: GATEWAY_PORT,
    trustedProxies: proxyAddresses(env),
    auth: {
      mode: "trusted-proxy",
      trustedProxy: {
        userHeader: IDENTITY_HEADER,
        allowUsers: [identity],
        // The browser's device is enrolled without a pairing step (non-admin scopes) ...
        deviceAutoApprove: { enabled: true },
      },
      // ... and the owner's session gets admin (config, channel login) on top, for this
      // identity only and without writing an admin device grant.
      identityScopes: { [identity]: ["operator.admin"] },
    },
    controlUi: { basePath: basePath(env), allowedOrigins: [publicOrigin(env)] },
    http: { endpoints: { chatCompletions: { enabled: true } } },
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
  const gateway = gatewayBlock(env);
  const providerConfig = providerBlock(env, provider, primary);
  const channels = {};
  for (const id of channelList(env)) channels[id] = channelBlock(id, env);

  const config = {
    gateway,
    agents: { defaults: { model: { primary } } },
    // The image pins OpenClaw: no self-update checks, no hosted catalog downloads, no mDNS.
    update: { checkOnStart: false },
    models: {
      catalogRefresh: { enabled: false },
      ...(providerConfig && { providers: { [provider.id]: providerConfig } }),
    },
    discovery: { mdns: { mode: "off" } },
  };
  if (Object.keys(channels).length) config.channels = channels;
  const proxyOrigin = egressProxy(env);
  if (proxyOrigin) config.proxy = proxyBlock(proxyOrigin, provider);
  const entries = {};
  const installs = {};
  for (const id of Object.keys(channels).filter((c) => CHANNELS[c].plugin)) {
    if (!installed[id]?.version) {
      throw new ConfigError(`channel ${id}: its plugin ${CHANNELS[id].plugin} is not in this image`);
    }
    entries[id] = { enabled: true };
    installs[id] = installRecord(id, installed[id], openclawDir);
  }
  // A provider's external plugin the image lacks: disabled, so that the gateway does not try
  // to install it at start (it has no npm, and the plugin's release need not match OpenClaw's).
  if (provider.custom) entries[provider.custom.plugin] = { enabled: false };
  if (Object.keys(entries).length) {
    config.plugins = { entries, ...(Object.keys(installs).length && { installs }) };
  }
  return {
    config,
    relay: llmRelay(env),
    // The provider key goes to the gateway under the provider's own name; ClawHQ's copies of
    // the key, the webhook token and the proxy identity (the gateway reads it from the config)
    // stay out of the gateway (and of the agent's tools). OPENCLAW_GATEWAY_PASSWORD stays: the
    // gateway reads it from its env (see docs/openclaw-image.md). A shared token would make
    // the gateway refuse trusted-proxy mode.
    setEnv: { [provider.keyEnv]: apiKey, DO_NOT_TRACK: "1", OPENCLAW_DISABLE_BONJOUR: "1" },
    unsetEnv: [
      "CLAWHQ_API_KEY",
      "CLAWHQ_WEBHOOK_TOKEN",
      "CLAWHQ_PROXY_IDENTITY",
      "OPENCLAW_GATEWAY_TOKEN",
      ...unlistedChannelEnv(channels),
    ],
  };
}
