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

import { spawn } from "node:child_process";
import { lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";

import {
  buildConfig,
  CHANNELS,
  ConfigError,
  EX_CONFIG,
  GATEWAY_PORT,
  OPENCLAW_DIR,
  pluginChannels,
  pluginPath,
  withoutInstallRecords,
} from "./config.mjs";

const OPENCLAW = process.env.CLAWHQ_OPENCLAW_BIN || "/opt/openclaw/node_modules/openclaw/openclaw.mjs";
const SIGNAL_NUMBERS = { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 };

function fail(message) {
  process.stderr.write(`clawhq-entrypoint: ${message}\n`);
  process.exit(EX_CONFIG);
}

function seconds(name, fallback) {
  const raw = process.env[name];
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

async function main(argv) {
  let built;
  try {
    const openclawDir = process.env.CLAWHQ_OPENCLAW_DIR || OPENCLAW_DIR;
    const installed = installedPlugins(process.env, openclawDir);
    built = buildConfig(process.env, { installed, openclawDir });
  } catch (error) {
    if (error instanceof ConfigError) fail(error.message);
    throw error;
  }
  if (argv.includes("--print-config")) {
    process.stdout.write(`${JSON.stringify(built.config, null, 2)}\n`);
    return;
  }

  const env = { ...process.env, ...built.setEnv };
  for (const name of built.unsetEnv) delete env[name];
  const path = configPath(process.env);
  const check = argv.includes("--check-config");
  try {
    writeConfig(path, check ? withoutInstallRecords(built.config) : built.config);
  } catch (error) {
    fail(`cannot write ${path}: ${error.message}`);
  }
  try {
    for (const removed of removeModelCatalogs(stateDir(process.env))) {
      process.stderr.write(`clawhq-entrypoint: removed ${removed}: the providers come from ${path}\n`);
    }
  } catch (error) {
    fail(`cannot remove the agents' models.json: ${error.message}`);
  }

  const args = check
    ? ["config", "validate", "--json"]
    : ["gateway", "run", "--bind", "lan", "--port", String(GATEWAY_PORT)];
  const child = spawn(process.execPath, [OPENCLAW, ...args], { env, stdio: "inherit" });

  const stopReporter = check
    ? () => {}
    : (await import("./reporter.mjs")).startReporter({
        url: process.env.CLAWHQ_WEBHOOK_URL,
        token: process.env.CLAWHQ_WEBHOOK_TOKEN,
        gatewayPassword: process.env.OPENCLAW_GATEWAY_PASSWORD,
        port: GATEWAY_PORT,
        heartbeatSeconds: seconds("CLAWHQ_HEARTBEAT_INTERVAL", 30),
        usageSeconds: seconds("CLAWHQ_USAGE_INTERVAL", 60),
        statePath: join(dirname(path), "clawhq-usage.json"),
      });

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

main(process.argv.slice(2)).catch((error) => {
  process.stderr.write(`clawhq-entrypoint: ${error?.stack ?? error}\n`);
  process.exit(1);
});
