// sdmesh dashboard: plain JavaScript, no framework, no build step, nothing from elsewhere.
//
// It talks to the agent that served it, like the CLI does: /v1/peers, /v1/pools,
// /v1/templates. Live updates come from /v1/events (Server-Sent Events); a slow poll keeps
// the page right when the stream is down. Every piece of server data reaches the page
// through textContent, never as markup.
"use strict";

const TOKEN_KEY = "sdmesh.token";
const POLL_LIVE_MS = 15000; // the stream tells us about changes; poll just in case
const POLL_DOWN_MS = 3000; // no stream: polling is all we have
const STREAM_RETRY_MS = 5000;
const MAX_EVENTS = 200;

const state = {
  token: readToken(),
  needToken: false,
  stream: null,
  streamLive: false,
  agentDown: false,
  apiError: "",
  pollTimer: null,
  refreshTimers: new Map(),
  refreshing: new Map(),
  templates: [],
  descriptorStale: true,
  descriptorTimer: null,
  // What the caller's role allows (GET /v1/whoami); nothing until the agent says so.
  actions: {},
};

const $ = (id) => document.getElementById(id);

function readToken() {
  try {
    return localStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return ""; // storage disabled: the token lives as long as the page
  }
}

function storeToken(token) {
  state.token = token;
  try {
    if (token) localStorage.setItem(TOKEN_KEY, token);
    else localStorage.removeItem(TOKEN_KEY);
  } catch {
    /* storage disabled */
  }
}

// ---------------------------------------------------------------------------- the API
class ApiError extends Error {
  constructor(status, message, fields) {
    super(message);
    this.status = status;
    this.fields = fields || {};
  }
}

async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch (error) {
    state.agentDown = true;
    showConnection();
    throw new ApiError(0, `the agent does not answer (${error.message})`);
  }
  if (state.agentDown) {
    state.agentDown = false;
    showConnection();
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (response.status === 401) {
    askForToken(state.token ? "The stored token was refused." : "");
    throw new ApiError(401, (data && data.error) || "this agent needs a token");
  }
  if (!response.ok) {
    const message = (data && data.error) || text.trim() || response.statusText;
    throw new ApiError(response.status, message, data && data.fields);
  }
  tokenAccepted();
  return data;
}

// ------------------------------------------------------------------------------ tokens
function askForToken(reason) {
  if (!state.needToken) {
    state.needToken = true;
    closeStream();
  }
  const panel = $("token-panel");
  panel.hidden = false;
  if (reason) $("token-reason").textContent = `${reason} Enter the agent's API token.`;
  showConnection();
}

// A request went through: if we were waiting for a token, everything can start again.
function tokenAccepted() {
  if (state.needToken) resume();
}

function resume() {
  state.needToken = false;
  scheduleRefresh("whoami", refreshWhoami, 0);
  $("token-panel").hidden = true;
  connectStream();
  if (!state.templates.length) loadTemplates();
}

function setupToken() {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token-input").value.trim();
    if (!token) return;
    storeToken(token);
    $("token-input").value = "";
    resume();
    refreshAll();
  });
  $("token-forget").addEventListener("click", () => {
    storeToken("");
    state.actions = {};
    applyRole();
    $("token-input").value = "";
    refreshAll();
  });
}

// ----------------------------------------------------------------------- live updates
// What the page can promise about freshness, from the state alone.
function showConnection() {
  const element = $("connection");
  let text = "Live";
  if (state.needToken) text = "Waiting for an access token";
  else if (state.agentDown) text = "The agent does not answer; retrying…";
  else if (state.apiError) text = state.apiError;
  else if (!state.streamLive) text = "Live updates unavailable; refreshing every few seconds";
  element.dataset.live = String(state.streamLive && !state.agentDown && !state.needToken);
  element.textContent = text;
}

function closeStream() {
  if (state.stream) state.stream.close();
  state.stream = null;
  state.streamLive = false;
}

function connectStream() {
  closeStream();
  showConnection();
  if (state.needToken || typeof EventSource === "undefined") return;
  // EventSource cannot send headers: the token travels as a query parameter.
  const query = state.token ? `?access_token=${encodeURIComponent(state.token)}` : "";
  const source = new EventSource(`/v1/events${query}`);
  state.stream = source;
  source.onopen = () => {
    state.streamLive = true;
    showConnection();
    refreshAll(); // whatever happened while we were not listening
    schedulePoll();
  };
  const receive = (message) => {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    if (event && typeof event === "object") onEvent(event);
  };
  source.onmessage = receive;
  for (const type of ["member", "pool", "component"]) source.addEventListener(type, receive);
  source.onerror = () => {
    if (state.stream !== source) return;
    state.streamLive = false;
    showConnection();
    schedulePoll();
    if (source.readyState === EventSource.CLOSED) {
      // The browser gave up (an error status, e.g. 401 or an agent without the stream).
      state.stream = null;
      setTimeout(() => {
        if (!state.stream) connectStream();
      }, STREAM_RETRY_MS);
    }
  };
}

function schedulePoll() {
  clearTimeout(state.pollTimer);
  const delay = state.streamLive ? POLL_LIVE_MS : POLL_DOWN_MS;
  state.pollTimer = setTimeout(() => {
    refreshAll();
    schedulePoll();
  }, delay);
}

function onEvent(event) {
  logEvent(event);
  if (event.type === "member") {
    scheduleRefresh("members", refreshMembers);
  } else if (event.type === "component") {
    updateComponent(event);
    scheduleRefresh("pools", refreshPools, 500);
  } else if (event.type === "overflow") {
    refreshAll(); // we missed some: read the whole state again
  } else {
    scheduleRefresh("pools", refreshPools);
  }
}

// Several events in a row make one refresh; a refresh asked for while one runs runs again.
function scheduleRefresh(key, refresh, delay = 250) {
  if (state.refreshTimers.has(key)) return;
  state.refreshTimers.set(
    key,
    setTimeout(async () => {
      state.refreshTimers.delete(key);
      if (state.refreshing.get(key)) {
        scheduleRefresh(key, refresh, Math.max(delay, 100));
        return;
      }
      state.refreshing.set(key, true);
      try {
        await refresh();
        if (state.apiError) {
          state.apiError = "";
          showConnection();
        }
      } catch (error) {
        if (!(error instanceof ApiError)) console.error(error);
        else if (error.status >= 400 && error.status !== 401) {
          state.apiError = `The agent refused a request (${error.status}): ${error.message}`;
          showConnection();
        }
      } finally {
        state.refreshing.set(key, false);
      }
    }, delay),
  );
}

function refreshAll() {
  scheduleRefresh("whoami", refreshWhoami, 0);
  scheduleRefresh("members", refreshMembers, 0);
  scheduleRefresh("pools", refreshPools, 0);
}

// ------------------------------------------------------------------------------- roles
// The agent says who we are and what our role allows; the page offers only that (the
// agent refuses the rest anyway, with a 403 naming the role needed).
function can(action) {
  return state.actions[action] === true;
}

async function refreshWhoami() {
  try {
    const caller = await api("/v1/whoami");
    state.actions = (caller && caller.actions) || {};
    $("whoami").textContent = caller ? `${caller.name} (${caller.role})` : "";
  } catch (error) {
    state.actions = {};
    $("whoami").textContent = "";
    if (error.status === 401) throw error;
  } finally {
    applyRole();
  }
}

function applyRole() {
  $("new-pool").hidden = !can("templates");
  for (const button of document.querySelectorAll("button.terminate")) {
    button.hidden = !can("terminate");
  }
}

// ---------------------------------------------------------------------------- helpers
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-")) node.dataset[camel(key.slice(5))] = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function camel(name) {
  return name.replace(/-([a-z])/g, (_, letter) => letter.toUpperCase());
}

function badge(value) {
  const text = value || "unknown";
  return el("span", { class: `state state-${text.replace(/[^a-z-]/g, "")}`, text });
}

function mib(value) {
  if (typeof value !== "number") return "—";
  return value >= 1024 ? `${(value / 1024).toFixed(value % 1024 ? 1 : 0)} GiB` : `${value} MiB`;
}

function shortPath(path) {
  return String(path || "").replace(/^sfConfig:/, "");
}

// ---------------------------------------------------------------------------- members
async function refreshMembers() {
  const [peers, health] = await Promise.all([
    api("/v1/peers"),
    api("/v1/health").catch(() => null),
  ]);
  if (health && health.name) {
    $("agent-name").textContent = `· ${health.name}`;
    document.title = `sdmesh · ${health.name}`;
  }
  renderMembers(Array.isArray(peers) ? peers : [], health ? health.name : "");
}

function renderMembers(peers, self) {
  const body = $("members").tBodies[0];
  const rows = peers.map((member) => {
    const meta = member.meta || {};
    const capacity = meta.capacity || {};
    const labels = Array.isArray(meta.labels) ? meta.labels : [];
    const total = capacity.memory_mib;
    const committed = capacity.memory_committed_mib;
    const free = capacity.memory_free_mib;
    const memory = el("td", { class: "num" });
    if (typeof total === "number") {
      memory.append(
        el("meter", {
          min: 0,
          max: total,
          value: typeof committed === "number" ? committed : 0,
          "aria-label": `memory committed on ${member.name}`,
        }),
        " ",
        `${mib(total)}`,
        el("br"),
        el("span", {
          class: "muted",
          // Some drivers (libvirt's test driver) cannot tell the free memory.
          text: `${mib(committed)} committed` + (typeof free === "number" ? ` · ${mib(free)} free` : ""),
        }),
      );
    } else {
      memory.textContent = "—";
    }
    const name = el("th", { scope: "row" }, member.name);
    if (member.name === self) name.append(" ", el("span", { class: "muted", text: "(this agent)" }));
    return el(
      "tr",
      { "data-member": member.name },
      name,
      el("td", {}, badge(member.state)),
      el("td", { class: "mono", text: member.address || "" }),
      el("td", { text: meta.hypervisor || "—" }),
      el("td", { class: "num", text: capacity.vcpus ?? "—" }),
      memory,
      el("td", { text: labels.length ? labels.join(", ") : "—" }),
    );
  });
  body.replaceChildren(...rows);
  $("members-empty").hidden = rows.length > 0;
}

// ------------------------------------------------------------------------------ pools
async function refreshPools() {
  const list = await api("/v1/pools");
  const pools = await Promise.all(
    (Array.isArray(list) ? list : []).map(async (summary) => {
      try {
        const detail = await api(`/v1/pools/${encodeURIComponent(summary.pool)}`);
        return { ...summary, ...detail };
      } catch (error) {
        if (error.status === 401) throw error;
        return { ...summary, components: null };
      }
    }),
  );
  renderPools(pools);
}

function poolCard(name) {
  const existing = [...$("pools").children].find((card) => card.dataset.pool === name);
  if (existing) return existing;
  const id = `pool-${name.replace(/[^a-z0-9_-]/gi, "_")}`;
  const terminate = el("button", {
    type: "button",
    class: "danger terminate",
    "aria-label": `Terminate pool ${name}`,
    text: "Terminate",
  });
  terminate.hidden = !can("terminate");
  terminate.addEventListener("click", () => terminatePool(name, terminate));
  const table = el(
    "table",
    { class: "components" },
    el("caption", { class: "visually-hidden", text: `Components of pool ${name}` }),
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        ...["Path", "Kind", "Host", "State", "Domain"].map((h) => el("th", { scope: "col", text: h })),
      ),
    ),
    el("tbody"),
  );
  return el(
    "article",
    { class: "pool", "data-pool": name, "aria-labelledby": `${id}-title` },
    el(
      "div",
      { class: "pool-head" },
      el("h3", { id: `${id}-title`, class: "mono", text: name }),
      el("span", { class: "pool-state" }),
      el("span", { class: "pool-meta" }),
      terminate,
    ),
    el("p", { class: "pool-reason", hidden: true }),
    el("p", { class: "pool-error error", role: "alert" }),
    el("div", { class: "table-wrap" }, table),
  );
}

function renderPools(pools) {
  const container = $("pools");
  // Live pools first, ended ones after, each group by name.
  const ended = (pool) => pool.state === "terminated" || pool.state === "failed";
  pools.sort((a, b) => ended(a) - ended(b) || String(a.pool).localeCompare(String(b.pool)));
  const cards = pools.map((pool) => {
    const card = poolCard(pool.pool);
    card.dataset.state = pool.state || "unknown";
    card.querySelector(".pool-state").replaceChildren(badge(pool.state));
    const meta = [];
    if (pool.shepherd) meta.push(`shepherd ${pool.shepherd}`);
    if (pool.generation) meta.push(`generation ${pool.generation}`);
    card.querySelector(".pool-meta").textContent = meta.join(" · ");
    const reason = card.querySelector(".pool-reason");
    reason.textContent = pool.reason || "";
    reason.hidden = !pool.reason;
    const button = card.querySelector("button.terminate");
    if (!button.dataset.busy) button.disabled = ["terminating", "terminated"].includes(pool.state);
    if (Array.isArray(pool.components)) {
      card.querySelector("tbody").replaceChildren(...pool.components.map(componentRow));
    }
    return card;
  });
  // Move only what moved, so a focused Terminate button keeps its focus across refreshes.
  cards.forEach((card, index) => {
    const here = container.children[index] || null;
    if (here !== card) container.insertBefore(card, here);
  });
  while (container.children.length > cards.length) container.lastElementChild.remove();
  $("pools-empty").hidden = cards.length > 0;
}

function componentRow(component) {
  return el(
    "tr",
    { "data-path": component.path },
    el("td", { class: "mono", title: component.path, text: shortPath(component.path) }),
    el("td", { text: component.kind || "" }),
    el("td", { class: "host", text: component.host || "—" }),
    el("td", { class: "component-state" }, badge(component.state)),
    el("td", { class: "mono domain", text: component.domain || "" }),
  );
}

// A component event updates its row at once; the refresh that follows fills in the rest.
function updateComponent(event) {
  const card = [...$("pools").children].find((c) => c.dataset.pool === event.pool);
  if (!card) return;
  const row = [...card.querySelectorAll("tbody tr")].find((r) => r.dataset.path === event.path);
  if (row) row.replaceWith(componentRow({ ...rowData(row), ...event }));
}

function rowData(row) {
  const cells = row.cells;
  return {
    path: row.dataset.path,
    kind: cells[1].textContent,
    host: cells[2].textContent === "—" ? "" : cells[2].textContent,
    domain: cells[4].textContent,
  };
}

async function terminatePool(name, button) {
  if (!window.confirm(`Terminate pool ${name}? Every host tears down its VMs and storage.`)) return;
  const card = button.closest("article");
  const problem = card.querySelector(".pool-error");
  problem.textContent = "";
  button.disabled = true;
  button.dataset.busy = "1";
  try {
    await api(`/v1/pools/${encodeURIComponent(name)}`, { method: "DELETE" });
  } catch (error) {
    button.disabled = false;
    problem.textContent = `Could not terminate ${name}: ${error.message}`;
  } finally {
    delete button.dataset.busy;
    scheduleRefresh("pools", refreshPools, 0);
  }
}

// -------------------------------------------------------------------------- templates
async function loadTemplates() {
  try {
    state.templates = (await api("/v1/templates")) || [];
  } catch (error) {
    showFormError(`Templates are unavailable: ${error.message}`);
    return;
  }
  $("form-error").textContent = "";
  const select = $("template-select");
  const chosen = select.value;
  select.replaceChildren(
    ...state.templates.map((t) => el("option", { value: t.name, text: `${t.title} (${t.name})` })),
  );
  if (chosen && state.templates.some((t) => t.name === chosen)) select.value = chosen;
  renderTemplateFields();
}

function currentTemplate() {
  return state.templates.find((t) => t.name === $("template-select").value);
}

function renderTemplateFields() {
  const template = currentTemplate();
  const fieldset = $("template-fields");
  const legend = fieldset.querySelector("legend");
  $("template-description").textContent = template ? template.description : "";
  fieldset.replaceChildren(legend, ...(template ? template.fields.map(fieldControl) : []));
  $("preview").hidden = true;
  markDescriptorStale();
}

function fieldControl(field) {
  const id = `field-${field.name}`;
  const helpId = `${id}-help`;
  const errorId = `${id}-error`;
  const common = { id, name: field.name, "aria-describedby": `${helpId} ${errorId}` };
  const shown = Array.isArray(field.default) ? field.default.join(", ") : field.default;
  let control;
  if (field.type === "choice") {
    control = el(
      "select",
      common,
      ...field.choices.map((choice) =>
        el("option", {
          value: choice,
          selected: choice === field.default,
          text: choice === field.default ? `${choice} (default)` : choice,
        }),
      ),
    );
  } else if (field.type === "bool") {
    control = el("input", { ...common, type: "checkbox", checked: Boolean(field.default) });
  } else if (field.type === "int") {
    control = el("input", {
      ...common,
      type: "number",
      inputmode: "numeric",
      step: 1,
      min: field.min,
      max: field.max,
      placeholder: String(shown),
    });
  } else {
    control = el("input", {
      ...common,
      type: "text",
      spellcheck: "false",
      autocomplete: "off",
      pattern: field.type === "list" ? undefined : field.pattern,
      placeholder: shown === "" ? (field.name === "name" ? "made up" : "") : String(shown),
    });
  }
  control.addEventListener("input", () => {
    clearFieldError(field.name);
    markDescriptorStale();
  });
  return el(
    "div",
    { class: "field" },
    el("label", { for: id, text: field.label || field.name }),
    control,
    el("p", { id: helpId, class: "help", text: fieldHelp(field) }),
    el("span", { id: errorId, class: "field-error" }),
  );
}

function fieldHelp(field) {
  let help = field.help;
  if (field.type === "int" && (field.min !== undefined || field.max !== undefined)) {
    help += ` (${field.min ?? "…"}–${field.max ?? "…"})`;
  }
  if (field.default !== "" && !(Array.isArray(field.default) && !field.default.length)) {
    const shown = Array.isArray(field.default) ? field.default.join(", ") : field.default;
    help += `; default: ${shown}`;
  }
  return help;
}

// Only what the user filled in: the agent fills up the missing fields with their defaults.
function formFields() {
  const template = currentTemplate();
  const fields = {};
  for (const field of template ? template.fields : []) {
    const control = $(`field-${field.name}`);
    if (!control) continue;
    if (field.type === "bool") fields[field.name] = control.checked;
    else if (control.value.trim() !== "") fields[field.name] = control.value.trim();
  }
  return fields;
}

function clearFieldError(name) {
  const control = $(`field-${name}`);
  if (control) control.removeAttribute("aria-invalid");
  const message = $(`field-${name}-error`);
  if (message) message.textContent = "";
}

function clearErrors() {
  $("form-error").textContent = "";
  for (const message of document.querySelectorAll(".field-error")) message.textContent = "";
  for (const control of document.querySelectorAll("[aria-invalid]")) {
    control.removeAttribute("aria-invalid");
  }
}

function showFormError(message, fields = {}) {
  $("form-error").textContent = message;
  let first = null;
  for (const [name, why] of Object.entries(fields)) {
    const control = $(`field-${name}`);
    const target = $(`field-${name}-error`);
    if (!control || !target) continue;
    control.setAttribute("aria-invalid", "true");
    target.textContent = why;
    first = first || control;
  }
  if (first) first.focus();
}

function setFormStatus(message) {
  $("form-status").textContent = message;
}

async function sendTemplate(dryRun) {
  const template = currentTemplate();
  if (!template) return null;
  clearErrors();
  return api(`/v1/templates/${encodeURIComponent(template.name)}`, {
    method: "POST",
    body: { fields: formFields(), dry_run: dryRun },
  });
}

function busy(on) {
  $("preview-button").disabled = on;
  $("submit-button").disabled = on;
}

async function preview() {
  busy(true);
  setFormStatus("Asking the agent where each VM would go…");
  try {
    const plan = await sendTemplate(true);
    if (!plan) return;
    showPlan(plan);
    showDescriptor(plan.descriptor);
    setFormStatus(`Preview for pool ${plan.pool}: nothing was started.`);
  } catch (error) {
    setFormStatus("");
    showFormError(error.message, error.fields);
  } finally {
    busy(false);
  }
}

function showPlan(plan) {
  const rows = (plan.placement || []).map((unit) =>
    el(
      "tr",
      {},
      el("td", { class: "mono", title: unit.path, text: shortPath(unit.path) }),
      el("td", { class: "host", text: unit.host || "(not placed)" }),
      el("td", { class: "num", text: unit.vcpus }),
      el("td", { class: "num", text: unit.memory_mib }),
    ),
  );
  $("preview-table").tBodies[0].replaceChildren(...rows);
  const hosts = new Set((plan.placement || []).map((u) => u.host).filter(Boolean));
  $("preview-summary").textContent =
    `${rows.length} unit(s) on ${hosts.size} host(s); shepherd ${plan.shepherd || "—"}.`;
  $("preview-unplaced").replaceChildren(
    ...(plan.unplaced || []).map((u) => el("li", { text: `${shortPath(u.path)}: ${u.reason}` })),
  );
  $("preview").hidden = false;
}

async function submitPool(event) {
  event.preventDefault();
  busy(true);
  setFormStatus("Submitting…");
  try {
    const result = await sendTemplate(false);
    if (!result) return;
    showDescriptor(result.descriptor);
    setFormStatus(`Pool ${result.pool} submitted; its shepherd is ${result.shepherd}.`);
    const name = $("field-name");
    if (name) name.value = ""; // a second submission needs a new name
    $("preview").hidden = true;
    scheduleRefresh("pools", refreshPools, 0);
  } catch (error) {
    setFormStatus("");
    showFormError(error.message, error.fields);
  } finally {
    busy(false);
  }
}

// While the descriptor is shown, it follows the fields (one dry run per pause in typing).
function markDescriptorStale() {
  state.descriptorStale = true;
  clearTimeout(state.descriptorTimer);
  if ($("descriptor-details").open) state.descriptorTimer = setTimeout(renderDescriptor, 400);
}

function showDescriptor(text) {
  $("descriptor").textContent = text || "";
  state.descriptorStale = false;
}

// The descriptor is hidden by default (seed 001); opening it renders the current fields.
async function renderDescriptor() {
  if (!state.descriptorStale) return;
  state.descriptorStale = false;
  try {
    const plan = await sendTemplate(true);
    if (plan) showDescriptor(plan.descriptor);
  } catch (error) {
    $("descriptor").textContent = `The fields do not make a descriptor yet: ${error.message}`;
    state.descriptorStale = true;
  }
}

// ----------------------------------------------------------------------------- events
function describeEvent(event) {
  if (event.type === "component") {
    const where = event.host ? ` on ${event.host}` : "";
    return `${event.pool}: ${shortPath(event.path)} ${event.state}${where}`;
  }
  if (event.type === "pool") return `pool ${event.pool} ${event.state || ""}`.trim();
  if (event.type === "member") {
    return `member ${event.name || event.member || ""} ${event.state || ""}`.trim();
  }
  if (event.type === "overflow") return `${event.dropped} event(s) missed; page refreshed`;
  return JSON.stringify(event);
}

function logEvent(event) {
  const list = $("events");
  // ``time`` is Unix seconds, stamped by the agent when it published the event.
  const when = typeof event.time === "number" ? new Date(event.time * 1000) : new Date();
  list.prepend(
    el(
      "li",
      { "data-type": event.type || "" },
      el("time", { datetime: when.toISOString(), text: when.toLocaleTimeString() }),
      describeEvent(event),
    ),
  );
  while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
  $("events-empty").hidden = true;
}

// ------------------------------------------------------------------------------- start
function start() {
  setupToken();
  $("template-select").addEventListener("change", renderTemplateFields);
  $("preview-button").addEventListener("click", preview);
  $("template-form").addEventListener("submit", submitPool);
  $("descriptor-details").addEventListener("toggle", () => {
    if ($("descriptor-details").open) renderDescriptor();
  });
  refreshAll();
  loadTemplates();
  connectStream();
  schedulePoll();
}

document.addEventListener("DOMContentLoaded", start);
