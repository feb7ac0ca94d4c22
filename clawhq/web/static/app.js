// ClawHQ's dashboard: the little that plain HTML and htmx do not do. No eval, no inline
// handlers (the Content-Security-Policy allows neither); every page works without it except
// the live parts.
"use strict";

const csrf = () => document.querySelector('meta[name="clawhq-csrf"]')?.content || "";

// htmx requests carry the session's CSRF value (forms are checked by their Origin as well).
document.addEventListener("htmx:configRequest", (event) => {
  const token = csrf();
  if (token) event.detail.headers["X-CSRF-Token"] = token;
});

// Destructive forms ask first.
document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form.getAttribute && form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) event.preventDefault();
});

// The new-agent form: models suggested for the chosen provider; the key field only for an
// own key; a channel's credential fields only when it is ticked.
function syncAgentForm(form) {
  const provider = form.querySelector('[name="modelProvider"]');
  const model = form.querySelector('[name="model"]');
  if (provider && model) model.setAttribute("list", `models-${provider.value}`);
  const own = form.querySelector('[name="keySource"][value="own"]');
  const key = form.querySelector('[name="apiKey"]');
  if (own && key) key.closest(".field").hidden = !own.checked;
  for (const box of form.querySelectorAll('[name="channels"]')) {
    const fields = form.querySelector(`#credentials-${box.value}`);
    if (fields) fields.hidden = !box.checked;
  }
}

document.addEventListener("change", (event) => {
  const form = event.target.closest && event.target.closest("form.agent-form");
  if (form) syncAgentForm(form);
});

// Follow logs: an SSE source added on demand, given to htmx to wire.
document.addEventListener("click", (event) => {
  const button = event.target.closest && event.target.closest("[data-follow]");
  if (!button) return;
  const box = document.getElementById("log-follow");
  if (!box) return;
  if (box.firstElementChild) {
    box.replaceChildren();
    button.textContent = "Follow";
    button.setAttribute("aria-pressed", "false");
    return;
  }
  const source = document.createElement("div");
  source.setAttribute("hx-ext", "sse");
  source.setAttribute("sse-connect", button.getAttribute("data-follow"));
  source.setAttribute("sse-close", "end");
  const lines = document.createElement("ol");
  lines.className = "log";
  lines.setAttribute("sse-swap", "line,end");
  lines.setAttribute("hx-swap", "beforeend");
  lines.setAttribute("aria-live", "polite");
  lines.setAttribute("aria-label", "New log lines");
  source.append(lines);
  box.append(source);
  htmx.process(source);
  button.textContent = "Stop following";
  button.setAttribute("aria-pressed", "true");
});

// A live region's stream is open: said on the element (styles and tests can tell).
document.addEventListener("htmx:sseOpen", (event) => {
  event.target.setAttribute("data-connected", "true");
});

// The chat pane: the agent's chat API (POST /api/agents/{id}/v1/chat/completions), one
// conversation per agent and browser ("user" keeps it going on the gateway's side).
function say(log, who, text, kind) {
  const item = document.createElement("li");
  item.className = `chat-${kind}`;
  const name = document.createElement("strong");
  name.textContent = `${who}: `;
  const body = document.createElement("span");
  body.textContent = text;
  item.append(name, body);
  log.append(item);
  item.scrollIntoView({ block: "nearest" });
}

document.addEventListener("submit", async (event) => {
  const form = event.target;
  if (!form.matches || !form.matches("form.chat")) return;
  event.preventDefault();
  const log = form.parentElement.querySelector(".chat-log");
  const input = form.querySelector('[name="message"]');
  const button = form.querySelector("button");
  const text = input.value.trim();
  if (!text) return;
  say(log, "You", text, "me");
  input.value = "";
  button.disabled = true;
  const thread = `dashboard-${form.dataset.agent}`;
  try {
    const answer = await fetch(form.dataset.api, {
      method: "POST",
      headers: { "content-type": "application/json", "X-CSRF-Token": csrf() },
      body: JSON.stringify({
        model: "openclaw", user: thread, messages: [{ role: "user", content: text }] }),
    });
    if (!answer.ok) {
      const problem = await answer.json().catch(() => ({}));
      say(log, "ClawHQ", problem.detail || `the agent did not answer (${answer.status})`, "error");
      return;
    }
    const reply = await answer.json().catch(() => null);
    const content = reply?.choices?.[0]?.message?.content;
    say(log, form.dataset.name || "Agent", content ?? "(an answer with no text)", "agent");
  } catch {
    say(log, "ClawHQ", "ClawHQ could not be reached; try again", "error");
  } finally {
    button.disabled = false;
    input.focus();
  }
});

document.addEventListener("DOMContentLoaded", () => {
  for (const form of document.querySelectorAll("form.agent-form")) syncAgentForm(form);
});
