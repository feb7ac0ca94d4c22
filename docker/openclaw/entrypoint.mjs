#!/usr/bin/env node
// ClawHQ's entrypoint for the OpenClaw image: writes OpenClaw's config from ClawHQ's env,
// starts the gateway headless, forwards SIGTERM/SIGINT to it and exits with its code, and runs
// the reporter (heartbeat, usage) beside it.
//
//   entrypoint.mjs                 write the config, run the gateway
//   entrypoint.mjs --print-config  print the config that would be written (no secrets) and exit
//   entrypoint.mjs --check-config  write the config and run `openclaw config validate` on it
//                                  (less the plugin install records, which the gateway takes
//                                  out of the file at start and `config validate` rejects)
//
// A configuration it cannot run (unknown provider or channel, missing credential) is one line
// on stderr and exit code 78.
//
// It runs in two stages, so that no process of the agent's uid but the gateway holds a secret
// in its environment (`/proc/<pid>/environ` is readable by every process of the same uid, and
// it shows the environment the process was exec'd with: deleting a variable does not change
// it). Stage one takes the secrets (from its env, or from CLAWHQ_SECRETS_FILE), writes the
// config, puts what stage two needs in a private file on /tmp and replaces itself
// (process.execve, same pid) with stage two, exec'd with the environment less every secret.
// Stage two reads that file and removes it before it starts the gateway (so no agent code ever
// runs while it exists), then runs the gateway with its env and the reporter with the webhook
// token. Stage two runs from PRIVATE_NODE where the image has it, so that no process of the
// uid can read its memory either. What PID 1 (the init) holds is beyond the image's reach:
// ClawHQ keeps secrets out of it by passing them in CLAWHQ_SECRETS_FILE, not in the env. See
// docs/openclaw-image.md, "Secrets in the container".
//
//   entrypoint.mjs --stage2 <file> (internal) stage two, with the hand-over file of stage one

import { spawn } from "node:child_process";
import { connect, createServer } from "node:net";
import {
  accessSync,
  constants,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import {
  buildConfig,
  CHANNELS,
  ConfigError,
  EX_CONFIG,
  GATEWAY_PORT,
  OPENCLAW_DIR,
  pluginChannels,
  pluginPath,
  PROVIDERS,
  RELAY_PORT,
  withoutInstallRecords,
} from "./config.mjs";

const SCRIPT = fileURLToPath(import.meta.url);
const STAGE2 = "--stage2";
/**
 * An execute-only copy of node (mode 0111, root's), if the image has one: stage two is exec'd
 * from it when it is there. The kernel makes a process exec'd from a binary its uid cannot read
 * non-dumpable, so its /proc files (environ, mem) are root's and other processes of the uid,
 * the agent's tools among them, can neither read its memory nor ptrace it: the webhook token in
 * the reporter's memory is then out of their reach even on a kernel without Yama.
 */
const PRIVATE_NODE = "/usr/local/libexec/clawhq-node";
const SIGNAL_NUMBERS = { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 };

/**
 * The secrets ClawHQ gives an agent (the names controller/spec.py passes as secrets): what
 * CLAWHQ_SECRETS_FILE may hold, and what stage two's own environment never holds.
 */
const SECRET_NAMES = Object.freeze([
  "CLAWHQ_API_KEY",
  "CLAWHQ_WEBHOOK_TOKEN",
  "CLAWHQ_PROXY_IDENTITY",
  "OPENCLAW_GATEWAY_PASSWORD",
  ...Object.values(CHANNELS).flatMap((channel) => channel.env),
]);

/** Every name a secret can have in stage one's or the gateway's env. */
const HIDDEN_NAMES = new Set([
  ...SECRET_NAMES,
  "OPENCLAW_GATEWAY_TOKEN",
  ...Object.values(PROVIDERS).map((provider) => provider.keyEnv),
]);

function fail(message) {
  process.stderr.write(`clawhq-entrypoint: ${message}\n`);
  process.exit(EX_CONFIG);
}

function seconds(env, name, fallback) {
  const raw = env[name];
  if (raw === undefined || raw.trim() === "") return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < 0) fail(`${name} must be a number of seconds, not ${raw}`);
  return value;
}

function stateDir(env) {
  return env.OPENCLAW_STATE_DIR || join(env.HOME || "/home/openclaw", ".openclaw");
}

function configPath(env) {
  return env.OPENCLAW_CONFIG_PATH || join(stateDir(env), "openclaw.json");
}

/**
 * The env with the secrets of CLAWHQ_SECRETS_FILE over it (and that variable gone). The file
 * (a JSON object: name -> value, names from SECRET_NAMES) is removed as soon as it is read,
 * whatever it holds, so that it is gone before anything of the agent runs; `-` reads the
 * secrets from stdin (a pipe ClawHQ writes and closes) instead. ClawHQ puts the file in place
 * before each start (docs/openclaw-image.md): secrets passed as the container's env stay in the
 * init process's environ (PID 1), which nothing in the image can clean.
 */
function withSecretsFile(env) {
  const { CLAWHQ_SECRETS_FILE: raw, ...rest } = env;
  const source = (raw ?? "").trim();
  if (!source) return rest;
  let text;
  if (source === "-") {
    try {
      text = readFileSync(0, "utf8");
    } catch (error) {
      fail(`CLAWHQ_SECRETS_FILE: cannot read the secrets from stdin: ${error.message}`);
    }
  } else {
    // Removed whatever happens next (fail() exits at once: no finally would run).
    let problem;
    try {
      if (lstatSync(source).isFile()) text = readFileSync(source, "utf8");
      else problem = `${source} is not a regular file`;
    } catch (error) {
      problem =
        error.code === "ENOENT"
          ? `${source} is not there (ClawHQ puts it in place before each start)`
          : `cannot read ${source}: ${error.message}`;
    }
    try {
      rmSync(source, { force: true }); // a symlink goes itself, never what it points to
    } catch (error) {
      problem ??= `cannot remove ${source}: ${error.message}`;
    }
    if (problem) fail(`CLAWHQ_SECRETS_FILE: ${problem}`);
  }
  let secrets;
  try {
    secrets = JSON.parse(text);
  } catch {
    fail("CLAWHQ_SECRETS_FILE: not JSON: expected an object of secrets by name");
  }
  if (secrets === null || typeof secrets !== "object" || Array.isArray(secrets)) {
    fail("CLAWHQ_SECRETS_FILE: expected a JSON object of secrets by name");
  }
  for (const [name, value] of Object.entries(secrets)) {
    if (!SECRET_NAMES.includes(name)) {
      fail(`CLAWHQ_SECRETS_FILE: ${JSON.stringify(name)} is not a secret this image takes (${SECRET_NAMES.join(", ")})`);
    }
    if (typeof value !== "string") fail(`CLAWHQ_SECRETS_FILE: ${name} must be a string`);
  }
  return { ...rest, ...secrets };
}

/**
 * Removes every agent's models.json (`<state>/agents/<id>/agent/models.json`) and returns the
 * paths removed. OpenClaw merges what it finds there with openclaw.json's providers (its writer
 * keeps a baseUrl found there over the config's; a model listed there keeps its own baseUrl),
 * and the file may be another release's, a CLI run's or the agent's own (the volume is
 * agent-writable). ClawHQ owns the providers, so it goes; OpenClaw writes one again from
 * openclaw.json if it needs it. See docs/openclaw-image.md.
 */
function removeModelCatalogs(dir) {
  let agents;
  try {
    agents = readdirSync(join(dir, "agents"));
  } catch {
    return []; // a first start: no agents yet
  }
  const removed = [];
  for (const agent of agents) {
    const path = join(dir, "agents", agent, "agent", "models.json");
    try {
      lstatSync(path);
    } catch {
      continue;
    }
    rmSync(path, { force: true, recursive: true });
    removed.push(path);
  }
  return removed;
}

/** What the image holds of each plugin the listed channels need: `{ version, integrity }`. */
function installedPlugins(env, openclawDir) {
  const installed = {};
  const ids = pluginChannels(env);
  if (!ids.length) return installed;
  let lock = {};
  try {
    lock = JSON.parse(readFileSync(join(openclawDir, "package-lock.json"), "utf8")).packages ?? {};
  } catch {
    // No lockfile: the records then carry no integrity.
  }
  for (const id of ids) {
    try {
      const manifest = JSON.parse(readFileSync(join(pluginPath(id, openclawDir), "package.json"), "utf8"));
      if (manifest.name !== CHANNELS[id].plugin) continue;
      const integrity = lock[`node_modules/${manifest.name}`]?.integrity;
      installed[id] = { version: manifest.version, ...(integrity ? { integrity } : {}) };
    } catch {
      // Not installed: buildConfig refuses the channel.
    }
  }
  return installed;
}

function writeConfig(path, config) {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const text = `// Written by ClawHQ at every start from the agent's settings: edits here do not last.\n${JSON.stringify(config, null, 2)}\n`;
  writeFileSync(`${path}.clawhq-tmp`, text, { mode: 0o600 });
  renameSync(`${path}.clawhq-tmp`, path);
}

/** Runs the gateway (or the config check) with `env`; exits with its code. */
function runGateway(node, bin, args, env, stopReporter = () => {}) {
  const child = spawn(node, [bin, ...args], { env, stdio: "inherit" });
  for (const signal of ["SIGTERM", "SIGINT", "SIGHUP"]) {
    process.on(signal, () => child.kill(signal));
  }
  child.on("error", (error) => {
    stopReporter();
    process.stderr.write(`clawhq-entrypoint: cannot start the gateway: ${error.message}\n`);
    process.exit(1);
  });
  child.on("exit", (code, signal) => {
    stopReporter();
    process.exit(code ?? 128 + (SIGNAL_NUMBERS[signal] ?? 0));
  });
}

/**
 * Stage one: everything that needs ClawHQ's env, then process.execve into stage two with the
 * env less its secrets (and the hand-over file in a fresh 0700 folder on /tmp, a tmpfs).
 */
async function stageOne(argv) {
  const env = withSecretsFile(process.env);
  const bin = env.CLAWHQ_OPENCLAW_BIN || "/opt/openclaw/node_modules/openclaw/openclaw.mjs";
  let built;
  try {
    const openclawDir = env.CLAWHQ_OPENCLAW_DIR || OPENCLAW_DIR;
    const installed = installedPlugins(env, openclawDir);
    built = buildConfig(env, { installed, openclawDir });
  } catch (error) {
    if (error instanceof ConfigError) fail(error.message);
    throw error;
  }
  if (argv.includes("--print-config")) {
    process.stdout.write(`${JSON.stringify(built.config, null, 2)}\n`);
    return;
  }

  const gatewayEnv = { ...env, ...built.setEnv };
  for (const name of built.unsetEnv) delete gatewayEnv[name];
  const path = configPath(env);
  const check = argv.includes("--check-config");
  const reporter = check
    ? null
    : {
        url: env.CLAWHQ_WEBHOOK_URL,
        token: env.CLAWHQ_WEBHOOK_TOKEN,
        gatewayPassword: env.OPENCLAW_GATEWAY_PASSWORD,
        port: GATEWAY_PORT,
        heartbeatSeconds: seconds(env, "CLAWHQ_HEARTBEAT_INTERVAL", 30),
        usageSeconds: seconds(env, "CLAWHQ_USAGE_INTERVAL", 60),
        statePath: join(dirname(path), "clawhq-usage.json"),
      };
  try {
    writeConfig(path, check ? withoutInstallRecords(built.config) : built.config);
  } catch (error) {
    fail(`cannot write ${path}: ${error.message}`);
  }
  try {
    for (const removed of removeModelCatalogs(stateDir(env))) {
      process.stderr.write(`clawhq-entrypoint: removed ${removed}: the providers come from ${path}\n`);
    }
  } catch (error) {
    fail(`cannot remove the agents' models.json: ${error.message}`);
  }

  const args = check
    ? ["config", "validate", "--json"]
    : ["gateway", "run", "--bind", "lan", "--port", String(GATEWAY_PORT)];
  // A one-shot check runs no agent and no reporter: no second stage.
  if (check) return runGateway(process.execPath, bin, args, gatewayEnv);

  if (typeof process.execve !== "function") {
    process.stderr.write(`clawhq-entrypoint: Node.js ${process.version} has no process.execve (22.15 or later has)\n`);
    process.exit(1);
  }
  let node = process.execPath;
  try {
    accessSync(PRIVATE_NODE, constants.X_OK);
    node = PRIVATE_NODE;
  } catch {
    accessSync(node, constants.X_OK); // a failed execve aborts the process: a message first
  }
  const folder = mkdtempSync(join(tmpdir(), "clawhq-entrypoint-")); // mode 0700
  const handover = join(folder, "stage2.json");
  // The gateway runs on the ordinary node (stage one's), stage two on the private one if any.
  const handed = { node: process.execPath, bin, args, gatewayEnv, reporter, relay: built.relay };
  writeFileSync(handover, JSON.stringify(handed), { mode: 0o600, flag: "wx" });
  const stage2Env = Object.fromEntries(Object.entries(gatewayEnv).filter(([name]) => !HIDDEN_NAMES.has(name)));
  process.execve(node, [node, ...process.execArgv, SCRIPT, STAGE2, handover], stage2Env);
}

/**
 * Whether other processes of this uid can read this process's memory: it is dumpable (its
 * /proc files are its uid's, not root's: see PRIVATE_NODE) and the kernel has no Yama ptrace
 * restriction (absent, or kernel.yama.ptrace_scope=0; with 1 the agent's processes, all below
 * the gateway, cannot attach to the entrypoint, their ancestor).
 */
function memoryReadableBySameUid() {
  try {
    if (statSync("/proc/self/environ").uid !== process.getuid()) return false;
  } catch {
    // no /proc: say nothing of it
    return false;
  }
  try {
    return readFileSync("/proc/sys/kernel/yama/ptrace_scope", "utf8").trim() === "0";
  } catch {
    return true;
  }
}

/**
 * The relay to ClawHQ behind an egress proxy (config.mjs, llmRelay): 127.0.0.1:RELAY_PORT,
 * each connection piped to ClawHQ's host:port. OpenClaw's managed proxy lets only loopback
 * go direct, so the gateway reaches ClawHQ's LLM gateway here; this process has no proxy
 * routing and connects directly (the firewall lets ClawHQ's port through). It carries bytes
 * only: the LLM token stays in the gateway's requests.
 */
function startRelay({ host, port }) {
  const server = createServer({ allowHalfOpen: false }, (inbound) => {
    const outbound = connect({ host, port });
    const close = () => {
      inbound.destroy();
      outbound.destroy();
    };
    inbound.on("error", close).on("close", close);
    outbound.on("error", close).on("close", close);
    inbound.pipe(outbound);
    outbound.pipe(inbound);
  });
  server.unref(); // the gateway's exit ends the process, not the relay
  return new Promise((resolve) => {
    server.once("error", (error) => {
      process.stderr.write(`clawhq-entrypoint: cannot listen on 127.0.0.1:${RELAY_PORT}: ${error.message}\n`);
      process.exit(1);
    });
    server.listen(RELAY_PORT, "127.0.0.1", resolve);
  });
}

/** Stage two: the hand-over file read and removed, then the gateway and the reporter. */
async function stageTwo(handover) {
  if (!/\/clawhq-entrypoint-[^/]+\/stage2\.json$/.test(handover ?? "")) {
    throw new Error(`${STAGE2} takes stage one's hand-over file, not ${handover}`);
  }
  let text;
  try {
    text = readFileSync(handover, "utf8");
  } finally {
    rmSync(handover, { force: true });
    rmdirSync(dirname(handover));
  }
  const { node, bin, args, gatewayEnv, reporter, relay } = JSON.parse(text);
  if (reporter.url && reporter.token && memoryReadableBySameUid()) {
    process.stderr.write(
      "clawhq-entrypoint: this kernel lets processes of one uid read each other's memory " +
        `(no Yama, or kernel.yama.ptrace_scope=0) and the image has no ${PRIVATE_NODE}: ` +
        "the agent's tools can read the reporter's webhook token from its memory " +
        "(docs/openclaw-image.md)\n",
    );
  }
  // Before the gateway, so that its first model call finds the relay listening.
  if (relay) await startRelay(relay);
  const { startReporter } = await import("./reporter.mjs");
  let stopReporter = () => {};
  runGateway(node, bin, args, gatewayEnv, () => stopReporter());
  stopReporter = startReporter(reporter);
}

const argv = process.argv.slice(2);
(argv[0] === STAGE2 ? stageTwo(argv[1]) : stageOne(argv)).catch((error) => {
  process.stderr.write(`clawhq-entrypoint: ${error?.stack ?? error}\n`);
  process.exit(1);
});
