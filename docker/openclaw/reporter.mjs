// Reports to ClawHQ from inside the container: a heartbeat while the gateway answers its health
// path, and usage (messages, tokens) read from the gateway's own `sessions.usage` RPC.
//
// Usage is reported as increments. OpenClaw gives per-day totals (UTC dates) over a 30-day
// window; what was already reported is kept per day in a small file on the workspace volume,
// so a restart never counts a message twice. An increment keeps its eventId until ClawHQ has
// accepted it, so a retry after a lost answer is deduplicated by ClawHQ.

import { randomUUID } from "node:crypto";
import { readFileSync, renameSync, writeFileSync } from "node:fs";

const REQUEST_TIMEOUT_MS = 10_000;
const KEEP_DAYS = 40;

const log = (message) => process.stderr.write(`clawhq-reporter: ${message}\n`);

async function post(url, token, body) {
  const response = await fetch(url, {
    method: "POST",
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  await response.arrayBuffer();
  if (!response.ok) throw new Error(`${url} answered ${response.status}`);
}

export async function gatewayHealthy(port) {
  try {
    const response = await fetch(`http://127.0.0.1:${port}/healthz`, {
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    const body = await response.json();
    return response.ok && body?.ok === true;
  } catch {
    return false;
  }
}

/**
 * One RPC over the gateway's WebSocket, as a trusted local backend client. Under trusted-proxy
 * auth the gateway accepts its local password only over loopback, without forwarded headers.
 */
export function gatewayRpc(port, password, method, params) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
    const timer = setTimeout(() => finish(new Error(`${method}: timed out`)), 30_000);
    const finish = (error, value) => {
      clearTimeout(timer);
      try {
        ws.close();
      } catch {}
      error ? reject(error) : resolve(value);
    };
    ws.onerror = () => finish(new Error(`${method}: cannot reach the gateway`));
    ws.onmessage = (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (frame.type === "event" && frame.event === "connect.challenge") {
        ws.send(
          JSON.stringify({
            type: "req",
            id: "connect",
            method: "connect",
            params: {
              minProtocol: 4,
              maxProtocol: 4,
              client: { id: "gateway-client", version: "clawhq", platform: "linux", mode: "backend" },
              role: "operator",
              scopes: ["operator.read"],
              caps: [],
              commands: [],
              permissions: {},
              auth: { password },
            },
          }),
        );
      } else if (frame.type === "res" && frame.id === "connect") {
        if (!frame.ok) return finish(new Error(`connect: ${frame.error?.message ?? "refused"}`));
        ws.send(JSON.stringify({ type: "req", id: "call", method, params }));
      } else if (frame.type === "res" && frame.id === "call") {
        if (!frame.ok) return finish(new Error(`${method}: ${frame.error?.message ?? "failed"}`));
        finish(null, frame.payload);
      }
    };
  });
}

/** Per-day {messages, tokens} from a `sessions.usage` answer. */
export function dailyUsage(payload) {
  const days = {};
  for (const day of payload?.aggregates?.daily ?? []) {
    if (typeof day?.date !== "string") continue;
    days[day.date] = {
      messages: Math.max(0, Math.trunc(Number(day.messages) || 0)),
      tokens: Math.max(0, Math.trunc(Number(day.tokens) || 0)),
    };
  }
  return days;
}

/** What is new since `reported` (both per day): the increment and the days it covers. */
export function usageIncrement(current, reported) {
  let messages = 0;
  let tokens = 0;
  const days = {};
  for (const [date, now] of Object.entries(current)) {
    const before = reported[date] ?? { messages: 0, tokens: 0 };
    const dm = Math.max(0, now.messages - before.messages);
    const dt = Math.max(0, now.tokens - before.tokens);
    if (dm || dt) {
      messages += dm;
      tokens += dt;
      days[date] = {
        messages: Math.max(now.messages, before.messages),
        tokens: Math.max(now.tokens, before.tokens),
      };
    }
  }
  return { messages, tokens, days };
}

function loadState(path) {
  try {
    const state = JSON.parse(readFileSync(path, "utf8"));
    return { reported: state.reported ?? {}, pending: state.pending ?? null };
  } catch {
    return { reported: {}, pending: null };
  }
}

function saveState(path, state) {
  const cutoff = new Date(Date.now() - KEEP_DAYS * 86_400_000).toISOString().slice(0, 10);
  for (const date of Object.keys(state.reported)) {
    if (date < cutoff) delete state.reported[date];
  }
  writeFileSync(`${path}.tmp`, JSON.stringify(state), { mode: 0o600 });
  renameSync(`${path}.tmp`, path);
}

/**
 * Starts the reporter; returns a function that stops it. Does nothing without a webhook URL.
 * options: {url, token, gatewayPassword, port, heartbeatSeconds, usageSeconds, statePath}
 */
export function startReporter(options) {
  const { url, token, gatewayPassword, port, statePath } = options;
  if (!url || !token) {
    log("CLAWHQ_WEBHOOK_URL or CLAWHQ_WEBHOOK_TOKEN is not set: not reporting to ClawHQ");
    return () => {};
  }
  const timers = [];
  let lastError = "";
  const complain = (error) => {
    const message = String(error?.message ?? error);
    if (message !== lastError) log(message); // say it once, not every interval
    lastError = message;
  };

  const heartbeat = async () => {
    if (!(await gatewayHealthy(port))) return;
    await post(url, token, { type: "heartbeat" });
    lastError = "";
  };

  let usageRunning = false; // one round at a time: two would report the same increment twice
  const usage = async () => {
    if (usageRunning) return;
    usageRunning = true;
    try {
      if (!(await gatewayHealthy(port))) return;
      const state = loadState(statePath);
      if (!state.pending) {
        const payload = await gatewayRpc(port, gatewayPassword, "sessions.usage", {
          agentScope: "all",
        });
        const increment = usageIncrement(dailyUsage(payload), state.reported);
        if (!increment.messages && !increment.tokens) return;
        state.pending = { eventId: randomUUID(), ...increment };
        saveState(statePath, state);
      }
      const { eventId, messages, tokens, days } = state.pending;
      await post(url, token, { type: "usage", messages, tokens, eventId });
      Object.assign(state.reported, days);
      state.pending = null;
      saveState(statePath, state);
    } finally {
      usageRunning = false;
    }
  };

  const every = (seconds, task) => {
    if (!(seconds > 0)) return;
    const run = () => task().catch(complain);
    timers.push(setInterval(run, seconds * 1000));
    if (seconds > 5) timers.push(setTimeout(run, 5000)); // soon after start, too
  };
  every(options.heartbeatSeconds, heartbeat);
  every(options.usageSeconds, usage);
  return () => timers.forEach((t) => clearInterval(t));
}
