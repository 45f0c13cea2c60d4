// agentkit dashboard: plain JS, no build step, no other origin.
// Auth: the token is asked for once, kept in sessionStorage (this tab), and sent as an
// Authorization header on every request. Live streams use fetch() + a small SSE reader
// (EventSource cannot send headers), resuming with Last-Event-ID after a dropped connection.
"use strict";

const TOKEN_KEY = "agentkit.token";
const $ = (id) => document.getElementById(id);

// --- small helpers ------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, String(value));
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const money = (v) => (v === null || v === undefined ? "—" : "$" + Number(v).toFixed(v < 1 ? 4 : 2));
const shortId = (id) => id.replace(/^claude-agent-/, "").replace(/^(\d{13})-/, (m, ms) => ms.slice(-6) + "-");
const baseName = (path) => (path ? path.replace(/\/+$/, "").split("/").pop() : "—");

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return s + "s";
  const m = Math.floor(s / 60);
  if (m < 60) return m + "m " + String(s % 60).padStart(2, "0") + "s";
  return Math.floor(m / 60) + "h " + String(m % 60).padStart(2, "0") + "m";
}

function elapsedOf(agent) {
  const start = agent.started_at || agent.created;
  if (!start) return agent.elapsed_s;
  const end = agent.state === "running" ? Date.now() / 1000 : agent.finished_at || start + (agent.elapsed_s || 0);
  return end - start;
}

function clock(ts) {
  return ts ? new Date(ts * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" }) : "—";
}

function toast(text, kind) {
  const el = $("toast");
  el.textContent = text;
  el.dataset.kind = kind || "info";
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (el.hidden = true), 4000);
}

// --- API ----------------------------------------------------------------------------------

class AuthError extends Error {}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  if (token()) headers.Authorization = "Bearer " + token();
  const response = await fetch(path, { ...options, headers, cache: "no-store", credentials: "omit" });
  if (response.status === 401) throw new AuthError("the server refused the token");
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail || response.status + " " + response.statusText);
  return body;
}

// An SSE stream read with fetch (so it can carry the Authorization header). Reconnects with
// Last-Event-ID after a network error; ends when the server ends the stream or on close().
class LiveStream {
  constructor(path, onMessage, { onState, resume = true } = {}) {
    this.path = path;
    this.onMessage = onMessage;
    this.onState = onState || (() => {});
    this.resume = resume;
    this.lastId = null;
    this.closed = false;
    this.finished = false;
    this.controller = null;
    this.run();
  }

  close() {
    this.closed = true;
    if (this.controller) this.controller.abort();
  }

  async run() {
    let delay = 500;
    while (!this.closed) {
      this.controller = new AbortController();
      try {
        const headers = { Accept: "text/event-stream", Authorization: "Bearer " + token() };
        if (this.lastId) headers["Last-Event-ID"] = this.lastId;
        const response = await fetch(this.path, { headers, signal: this.controller.signal, cache: "no-store", credentials: "omit" });
        if (response.status === 401) throw new AuthError("the server refused the token");
        if (!response.ok) {
          const body = await response.json().catch(() => ({}));
          const error = new Error(body.detail || "HTTP " + response.status);
          error.retry = response.status >= 500; // the host or Docker may come back
          throw error;
        }
        this.onState("live");
        delay = 500;
        await this.read(response.body);
        if (this.finished) {
          this.onState("ended");
          return; // the server said so: the agent finished
        }
        // the connection ended without an end event (server restart, cut off): resume
      } catch (error) {
        if (this.closed) return;
        if (error instanceof AuthError) return showGate(error.message);
        const network = error instanceof TypeError || error.name === "AbortError";
        if (!network && !error.retry) {
          this.onState("error", error.message);
          return;
        }
      }
      if (this.closed) return;
      this.onState("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 8000);
    }
  }

  async read(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        this.dispatch(block);
      }
    }
  }

  dispatch(block) {
    let event = "message", id = null;
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
      else if (field === "id") id = value;
    }
    if (!data.length) return;
    if (id !== null && this.resume) this.lastId = id;
    if (event === "end") this.finished = true;
    let parsed;
    try {
      parsed = JSON.parse(data.join("\n"));
    } catch {
      return;
    }
    this.onMessage(event, parsed, id);
  }
}

// --- state --------------------------------------------------------------------------------

const state = {
  agents: new Map(),
  workspaces: [],
  costs: null,
  fleet: null,
  agentStream: null,
  view: null,
};

function setLive(mode) {
  const pill = $("live");
  pill.dataset.state = mode;
  pill.textContent = { live: "live", reconnecting: "reconnecting…", off: "offline", error: "error" }[mode] || mode;
}

// --- gate ---------------------------------------------------------------------------------

function showGate(message) {
  for (const stream of [state.fleet, state.agentStream]) if (stream) stream.close();
  state.fleet = state.agentStream = null;
  sessionStorage.removeItem(TOKEN_KEY);
  setLive("off");
  $("overview").hidden = $("agent").hidden = true;
  $("signout").hidden = true;
  $("crumbs").replaceChildren();
  $("gate").hidden = false;
  const error = $("gate-error");
  error.hidden = !message;
  error.textContent = message ? "Refused: " + message + ". Check AGENTKIT_API_TOKEN and try again." : "";
  $("token").focus();
}

async function connect(candidate) {
  sessionStorage.setItem(TOKEN_KEY, candidate);
  try {
    await api("/v1/agents");
  } catch (error) {
    if (error instanceof AuthError) return showGate(error.message);
    throw error;
  }
  $("gate").hidden = true;
  $("signout").hidden = false;
  startFleet();
  route();
}

// --- overview -----------------------------------------------------------------------------

function startFleet() {
  if (state.fleet) return;
  state.fleet = new LiveStream("/v1/events?agent_events=false", onFleet, { onState: setLive });
  refreshSide();
}

let sideTimer = null;
function refreshSide() {
  clearTimeout(sideTimer);
  sideTimer = setTimeout(async () => {
    try {
      const [workspaces, costs] = await Promise.all([api("/v1/workspaces"), api("/v1/costs")]);
      state.workspaces = workspaces;
      state.costs = costs;
      renderWorkspaces();
      renderChart();
      renderSummary();
    } catch (error) {
      if (error instanceof AuthError) showGate(error.message);
    }
  }, 150);
}

function onFleet(event, data) {
  if (event === "snapshot") {
    state.agents = new Map(data.agents.map((a) => [a.id, a]));
    renderFleet();
  } else if (event === "agent") {
    const before = state.agents.get(data.id);
    state.agents.set(data.id, data);
    renderFleet();
    if (!before || before.state !== data.state) refreshSide();
    if (state.view && state.view.id === data.id) renderAgentHead(data);
  }
}

function stateBadge(value) {
  return h("span", { class: "badge", "data-state": value }, value.replace("_", " "));
}

function renderSummary() {
  const agents = [...state.agents.values()];
  const running = agents.filter((a) => a.state === "running").length;
  const failed = agents.filter((a) => !["running", "succeeded"].includes(a.state)).length;
  $("stat-running").textContent = running;
  $("stat-finished").textContent = agents.length - running;
  $("stat-failed").textContent = failed ? failed + " not succeeded" : "";
  $("stat-cost").textContent = state.costs ? money(state.costs.total_usd) : "—";
  $("stat-workspaces").textContent = state.workspaces.length;
}

function renderFleet() {
  const rows = [...state.agents.values()].sort((a, b) => (b.created || 0) - (a.created || 0));
  const body = $("fleet").tBodies[0];
  body.replaceChildren(
    ...rows.map((a) =>
      h(
        "tr",
        { class: "row", "data-id": a.id, "data-state": a.state, tabindex: 0, onclick: () => go("#/agents/" + a.id),
          onkeydown: (e) => e.key === "Enter" && go("#/agents/" + a.id) },
        h("td", { class: "mono", title: a.id }, shortId(a.id)),
        h("td", {}, stateBadge(a.state)),
        h("td", { title: a.workspace || "" }, baseName(a.workspace)),
        h("td", { class: "task-cell", title: a.task || "" }, a.task || "—"),
        h("td", { class: "num elapsed", "data-id": a.id }, duration(elapsedOf(a))),
        h("td", { class: "num" }, a.turns ?? "—"),
        h("td", { class: "num" }, money(a.cost_usd)),
      ),
    ),
  );
  $("fleet-empty").hidden = rows.length > 0;
  $("fleet-note").textContent = rows.length ? rows.length + " total" : "";
  renderSummary();
}

function renderWorkspaces() {
  const body = $("workspaces").tBodies[0];
  body.replaceChildren(
    ...state.workspaces.map((w) =>
      h(
        "tr",
        {},
        h("td", { class: "mono" }, w.name),
        h("td", {}, w.branch || "—"),
        h("td", { class: "num" }, w.changed_files || 0),
        h("td", { class: "task-cell", title: w.last_commit ? w.last_commit.subject : "" }, w.last_commit ? w.last_commit.subject + " · " + w.last_commit.age : "—"),
        h("td", {}, w.agent_running ? stateBadge("running") : h("span", { class: "muted" }, "idle")),
      ),
    ),
  );
  $("workspaces-empty").hidden = state.workspaces.length > 0;
}

function renderChart() {
  const box = $("chart");
  const runs = (state.costs && state.costs.runs) || [];
  $("cost-note").textContent = runs.length ? runs.length + " finished run" + (runs.length > 1 ? "s" : "") : "";
  if (!runs.length) {
    box.replaceChildren(h("p", { class: "empty" }, "No finished runs with a cost yet."));
    return;
  }
  const W = 640, H = 240, L = 56, R = 16, T = 16, B = 34;
  let total = 0;
  const points = runs.map((r) => ({ t: r.finished_at || 0, v: (total += r.cost_usd), run: r }));
  const t0 = points[0].t, t1 = Math.max(points[points.length - 1].t, t0 + 1);
  const vmax = total > 0 ? total * 1.1 : 1;
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => H - B - (v / vmax) * (H - T - B);
  let line = `M ${x(t0)} ${y(0)}`;
  for (const p of points) line += ` H ${x(p.t).toFixed(1)} V ${y(p.v).toFixed(1)}`;
  const area = line + ` H ${x(t1)} V ${y(0)} Z`;
  const grid = [0, 0.5, 1].map((f) => {
    const v = vmax * f;
    return svg("g", {}, svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }),
      svg("text", { x: L - 8, y: y(v) + 4, class: "axis", "text-anchor": "end" }, money(v)));
  });
  const labels = [t0, (t0 + t1) / 2, t1].map((t, i) =>
    svg("text", { x: x(t), y: H - 10, class: "axis", "text-anchor": ["start", "middle", "end"][i] }, clock(t)));
  const dots = points.map((p) =>
    svg("circle", { cx: x(p.t), cy: y(p.v), r: 4, class: "dot" },
      svg("title", {}, `${shortId(p.run.id)} · ${p.run.state} · ${money(p.run.cost_usd)} (total ${money(p.v)})`)));
  box.replaceChildren(
    svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart-svg", role: "img", "aria-label": "cumulative cost over time" },
      svg("defs", {}, svg("linearGradient", { id: "fill", x1: 0, y1: 0, x2: 0, y2: 1 },
        svg("stop", { offset: "0%", "stop-color": "#6366f1", "stop-opacity": 0.28 }),
        svg("stop", { offset: "100%", "stop-color": "#6366f1", "stop-opacity": 0.02 }))),
      grid, svg("path", { d: area, fill: "url(#fill)" }), svg("path", { d: line, class: "line" }), dots, labels),
  );
}

// --- agent page ---------------------------------------------------------------------------

function renderAgentHead(a) {
  $("agent-id").textContent = a.id;
  const badge = $("agent-state");
  badge.dataset.state = a.state;
  badge.textContent = a.state.replace("_", " ");
  $("agent-task").textContent = a.task || "";
  $("stop").hidden = a.state !== "running";
  const meta = [
    ["Workspace", baseName(a.workspace)],
    ["Started", clock(a.started_at || a.created)],
    ["Elapsed", duration(elapsedOf(a))],
    ["Turns", a.turns ?? "—"],
    ["Cost", money(a.cost_usd)],
    ["Session", a.session_id || "—"],
  ];
  if (a.error && a.state !== "succeeded") meta.push(["Error", a.error]);
  $("agent-meta").replaceChildren(
    ...meta.flatMap(([k, v]) => [
      h("dt", {}, k),
      h("dd", { class: k === "Elapsed" ? "elapsed" : "", "data-id": a.id, title: k === "Workspace" ? a.workspace || "" : null }, v),
    ]),
  );
}

const toolItems = new Map(); // tool_use_id -> <details> of the call, to fold its result in

function streamItem(event) {
  switch (event.type) {
    case "text":
      return h("li", { class: "ev ev-text" }, h("div", { class: "ev-label" }, "agent"), h("div", { class: "prose" }, event.content));
    case "thinking":
      return h("li", { class: "ev ev-thinking" }, h("details", {}, h("summary", {}, "thinking"), h("div", { class: "prose muted" }, event.content)));
    case "tool_use": {
      const input = typeof event.input === "string" ? event.input : JSON.stringify(event.input, null, 2);
      const summaryText = (event.text || "tool " + event.name).replace(/^tool \S+:\s*/, "");
      const details = h("details", { class: "tool" },
        h("summary", {}, h("span", { class: "tool-name" }, event.name), h("span", { class: "tool-arg" }, summaryText), h("span", { class: "tool-status", "data-state": "running" }, "running")),
        h("div", { class: "tool-body" }, h("div", { class: "ev-label" }, "input"), h("pre", {}, input)));
      if (event.tool_use_id) toolItems.set(event.tool_use_id, details);
      return h("li", { class: "ev ev-tool" }, details);
    }
    case "tool_result": {
      const call = event.tool_use_id && toolItems.get(event.tool_use_id);
      const result = [h("div", { class: "ev-label" }, event.is_error ? "error" : "output"), h("pre", { class: event.is_error ? "error" : "" }, event.content || "(empty)")];
      if (call) {
        call.querySelector(".tool-body").append(...result);
        const status = call.querySelector(".tool-status");
        status.dataset.state = event.is_error ? "error" : "ok";
        status.textContent = event.is_error ? "error" : "done";
        return null;
      }
      return h("li", { class: "ev ev-tool" }, h("details", { class: "tool" }, h("summary", {}, "tool result"), ...result));
    }
    case "result":
      return h("li", { class: "ev ev-result", "data-error": event.is_error },
        h("div", { class: "ev-label" }, event.is_error ? "finished with an error" : "finished"),
        h("div", { class: "prose" }, event.result || ""),
        h("div", { class: "muted small" }, [event.num_turns != null ? event.num_turns + " turns" : null, event.total_cost_usd != null ? money(event.total_cost_usd) : null].filter(Boolean).join(" · ")));
    case "init":
      return h("li", { class: "ev ev-system" }, `session ${event.session_id || "?"} started` + (event.model ? ` · ${event.model}` : ""));
    case "api_retry":
      return h("li", { class: "ev ev-system warn" }, event.text || "API retry");
    case "output":
      return h("li", { class: "ev ev-system" }, h("pre", {}, event.content));
    default:
      return null;
  }
}

function openAgent(id) {
  if (state.agentStream) state.agentStream.close();
  toolItems.clear();
  state.view = { id };
  $("overview").hidden = true;
  $("agent").hidden = false;
  $("crumbs").replaceChildren(h("a", { href: "#/" }, "Fleet"), h("span", { class: "sep" }, "/"), h("span", { class: "mono" }, shortId(id)));
  const list = $("stream");
  list.replaceChildren();
  $("stream-note").textContent = "";
  const known = state.agents.get(id);
  if (known) renderAgentHead(known);
  api("/v1/agents/" + encodeURIComponent(id)).then(renderAgentHead).catch((error) => {
    if (error instanceof AuthError) showGate(error.message);
    else toast(error.message, "error");
  });
  let count = 0;
  state.agentStream = new LiveStream("/v1/agents/" + encodeURIComponent(id) + "/events", (event, data) => {
    if (event === "end") {
      renderAgentHead(data);
      $("stream-note").textContent = count + " events · finished";
      return;
    }
    if (event !== "agent.event") return;
    count += 1;
    const stick = window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
    const item = streamItem(data);
    if (item) list.append(item);
    $("stream-note").textContent = count + " events";
    if (stick) window.scrollTo(0, document.body.scrollHeight);
  }, { onState: (mode, message) => { if (mode === "error") toast(message, "error"); } });
}

async function stopAgent() {
  const id = state.view && state.view.id;
  if (!id) return;
  $("confirm-id").textContent = id;
  const dialog = $("confirm");
  dialog.returnValue = "";
  dialog.showModal();
  dialog.addEventListener("close", async () => {
    if (dialog.returnValue !== "stop") return;
    $("stop").disabled = true;
    try {
      const status = await api("/v1/agents/" + encodeURIComponent(id) + "/stop", { method: "POST" });
      renderAgentHead(status);
      state.agents.set(status.id, status);
      toast("Agent stopped", "ok");
    } catch (error) {
      if (error instanceof AuthError) showGate(error.message);
      else toast("Could not stop: " + error.message, "error");
    } finally {
      $("stop").disabled = false;
    }
  }, { once: true });
}

// --- routing ------------------------------------------------------------------------------

function go(hash) {
  if (location.hash !== hash) location.hash = hash;
  else route();
}

function route() {
  if (!token()) return showGate("");
  const match = location.hash.match(/^#\/agents\/([A-Za-z0-9-]{1,80})$/);
  if (match) return openAgent(match[1]);
  if (state.agentStream) state.agentStream.close();
  state.agentStream = null;
  state.view = null;
  $("agent").hidden = true;
  $("overview").hidden = false;
  $("crumbs").replaceChildren();
  renderFleet();
}

function tick() {
  for (const cell of document.querySelectorAll(".elapsed[data-id]")) {
    const agent = state.agents.get(cell.dataset.id);
    if (agent && agent.state === "running") cell.textContent = duration(elapsedOf(agent));
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("gate-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token").value.trim();
    $("token").value = "";
    if (value) connect(value).catch((error) => toast(error.message, "error"));
  });
  $("signout").addEventListener("click", () => showGate(""));
  $("stop").addEventListener("click", stopAgent);
  window.addEventListener("hashchange", route);
  setInterval(tick, 1000);
  // a token handed over in the URL fragment (never sent to the server) is taken and removed
  const fragment = location.hash.match(/^#token=([^&]+)$/);
  if (fragment) {
    history.replaceState(null, "", location.pathname + location.search + "#/");
    let handed = "";
    try {
      handed = decodeURIComponent(fragment[1]);
    } catch {
      return showGate("the token in the address was malformed");
    }
    connect(handed).catch((error) => toast(error.message, "error"));
  } else if (token()) {
    connect(token()).catch((error) => toast(error.message, "error"));
  } else {
    showGate("");
  }
});
