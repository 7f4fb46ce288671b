// tollgate console: a reference client of the public /v1 API.
// No framework and no build step. The DOM is built with `h()` (never
// innerHTML), so the strict Content-Security-Policy holds and no API text
// is ever read as markup. Tokens live in sessionStorage (this tab only).
"use strict";

const S = sessionStorage;
const $ = (sel) => document.querySelector(sel);
const COLORS = ["#0b5fff", "#e8710a", "#1a7f37", "#a142f4", "#d01884", "#12b5cb", "#b3261e", "#5b6470"];

function h(tag, attrs, ...kids) {
  const el = tag === "svg" || tag === "rect" || tag === "text" || tag === "g" || tag === "line" || tag === "title"
    ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids.flat()) if (k !== null && k !== undefined && k !== false) el.append(k instanceof Node ? k : String(k));
  return el;
}

function showError(message) {
  const a = $("#alert");
  a.textContent = message || "";
  a.hidden = !message;
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || `HTTP ${status}`);
    this.status = status;
    this.code = body && body.error && body.error.code;
  }
}

let refreshing = null;
async function refreshTokens() {
  const refresh = S.getItem("refresh");
  if (!refresh) return false;
  // One refresh at a time: a second use of a refresh token ends the session.
  refreshing = refreshing || fetch("/v1/auth/refresh", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ refresh_token: refresh }),
  }).then(async (r) => {
    if (!r.ok) return false;
    const t = await r.json();
    S.setItem("access", t.access_token);
    S.setItem("refresh", t.refresh_token);
    return true;
  }).finally(() => { refreshing = null; });
  return refreshing;
}

async function api(path, opts = {}) {
  const go = () => fetch(path, {
    method: opts.method || "GET",
    headers: Object.assign({ Authorization: `Bearer ${S.getItem("access") || ""}` },
      opts.body !== undefined ? { "Content-Type": "application/json" } : {}, opts.headers || {}),
    body: opts.body !== undefined ? JSON.stringify(opts.body) : undefined,
  });
  let r = await go();
  if (r.status === 401 && S.getItem("refresh") && await refreshTokens()) r = await go();
  if (r.status === 401 && !opts.login) { signOut(false); throw new ApiError(401, await r.json().catch(() => null)); }
  if (opts.raw) return r;
  const body = r.status === 204 ? null : await r.json().catch(() => null);
  if (!r.ok) throw new ApiError(r.status, body);
  return body;
}

// Runs an action, showing the API's message when it fails.
async function attempt(fn) {
  showError("");
  try { return await fn(); } catch (e) { showError(e.message); return undefined; }
}

function signOut(server = true) {
  const refresh = S.getItem("refresh");
  if (server && refresh) fetch("/v1/auth/logout", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ refresh_token: refresh }) });
  S.clear();
  me = null;
  location.hash = "#/login";
  render();
}

const fmt = (n) => (n === null || n === undefined ? "—" : Number(n).toLocaleString("en-US"));
const when = (t) => (t ? t.replace("T", " ").replace(/\.\d+Z$|Z$/, " UTC") : "—");
const table = (heads, rows) => h("div", { class: "table-wrap" },
  h("table", {}, h("thead", {}, h("tr", {}, heads.map((x) => h("th", { scope: "col" }, x)))), h("tbody", {}, rows)));
const field = (label, input) => h("label", {}, label, input);

let me = null;

// ---------- pages ----------

const userPages = [
  ["#/", "Overview", overview], ["#/ledger", "Ledger", ledger], ["#/grants", "Grants", grants],
  ["#/jobs", "Jobs", jobs], ["#/keys", "API keys", keys], ["#/playground", "Playground", playground],
  ["#/billing", "Billing", billing],
];
const adminPages = [
  ["#/admin/users", "Users", adminUsers], ["#/admin/usage", "Usage", adminUsage], ["#/admin/codes", "Codes", adminCodes],
  ["#/admin/logs", "Logs", adminLogs], ["#/admin/audit", "Audit", adminAudit], ["#/admin/webhooks", "Webhooks", adminWebhooks],
  ["#/admin/channels", "Channels", adminChannels], ["#/admin/models", "Models", adminModels],
  ["#/admin/payments", "Payments", adminPayments],
];

async function render() {
  const main = $("#main");
  const hash = location.hash || "#/";
  if (!S.getItem("access")) return mount(main, "Sign in", loginPage());
  if (!me) me = await attempt(() => api("/v1/me"));
  if (!me) return mount(main, "Sign in", loginPage());
  const pages = userPages.concat(me.role === "admin" ? adminPages : []);
  const [path] = hash.split("?");
  const page = pages.find(([p]) => p === path) || (path.startsWith("#/admin/users/") && me.role === "admin" ? ["", "User", adminUser] : pages[0]);
  $("#nav").replaceChildren(...pages.map(([p, name]) => h("a", { href: p, "aria-current": p === page[0] ? "page" : null }, name)));
  $("#who").replaceChildren(me.email, " ", h("button", { class: "secondary", type: "button", onclick: () => signOut() }, "Sign out"));
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  mount(main, page[1], body);
  await attempt(() => page[2](body, hash));
}

function mount(main, title, body) {
  document.title = `${title} · tollgate`;
  main.replaceChildren(h("h1", {}, title), body);
}

function loginPage() {
  $("#nav").replaceChildren();
  $("#who").replaceChildren();
  const email = h("input", { id: "email", type: "email", autocomplete: "username", required: true });
  const password = h("input", { id: "password", type: "password", autocomplete: "current-password", required: true });
  return h("div", { class: "login" }, h("form", {
    onsubmit: async (e) => {
      e.preventDefault();
      const t = await attempt(() => api("/v1/auth/login", { method: "POST", login: true, body: { email: email.value, password: password.value } }));
      if (!t) return;
      S.setItem("access", t.access_token);
      S.setItem("refresh", t.refresh_token);
      me = t.user;
      location.hash = "#/";
      render();
    },
  }, field("Email", email), field("Password", password), h("button", { type: "submit", id: "sign-in" }, "Sign in")));
}

async function overview(body) {
  const [bal, lim, use] = await Promise.all([api("/v1/credits/balance"), api("/v1/limits"), api("/v1/usage?group_by=day,model")]);
  const cap = lim.daily_cap;
  const capBar = h("div", { class: "bar", role: "img", "aria-label": `Spent today: ${lim.spent_today} of ${cap || "no cap"}` }, h("span"));
  capBar.firstChild.style.width = cap ? `${Math.min(100, (100 * lim.spent_today) / cap)}%` : "0%";
  const code = h("input", { id: "redeem-code", autocomplete: "off", required: true });
  body.replaceChildren(
    h("div", { class: "cards" },
      card("Balance", bal.balance, "balance"), card("Held", bal.held, "held"), card("Available", bal.available, "available"),
      card("Spent today", cap ? `${fmt(lim.spent_today)} / ${fmt(cap)}` : fmt(lim.spent_today), "spent-today")),
    h("p", { class: "muted" }, cap ? "Daily cap" : "No daily cap"), capBar,
    h("h2", {}, "Daily spend, last 30 days, by model"), spendChart(use.data, use.start, use.end),
    h("h2", {}, "Redeem a code"),
    h("form", { class: "row", onsubmit: async (e) => {
      e.preventDefault();
      const g = await attempt(() => api("/v1/credits/redeem", { method: "POST", body: { code: code.value.trim() } }));
      if (g) { code.value = ""; render(); }
    } }, field("Code", code), h("button", { type: "submit" }, "Redeem")));
}

const card = (label, n, id) => h("div", { class: "card" }, h("div", { class: "l" }, label), h("div", { class: "n", id }, typeof n === "number" ? fmt(n) : n));

function days(start, end) {
  const out = [];
  for (let t = Date.parse(start + "T00:00:00Z"); t <= Date.parse(end + "T00:00:00Z"); t += 86400000) out.push(new Date(t).toISOString().slice(0, 10));
  return out;
}

// A stacked bar chart of credits spent per day, one color per series
// (model or user). The y axis is in credits; hovering (or focusing) a bar
// shows its day, series and amount.
function spendChart(rows, start, end, seriesOf = (r) => r.model || "(consume)") {
  const ds = days(start, end);
  const series = [...new Set(rows.map(seriesOf))];
  const per = new Map(ds.map((d) => [d, new Map()]));
  for (const r of rows) { const m = per.get(r.day); if (m) m.set(seriesOf(r), (m.get(seriesOf(r)) || 0) + r.cost); }
  const max = Math.max(1, ...ds.map((d) => [...per.get(d).values()].reduce((a, b) => a + b, 0)));
  const W = 900, H = 300, pad = 70, top = 24, base = H - 20, bw = (W - pad) / ds.length;
  const svg = h("svg", { class: "chart", id: "spend-chart", viewBox: `0 0 ${W} ${H}`, role: "img",
    "aria-label": `Credits spent per day from ${start} to ${end}; total ${fmt(rows.reduce((a, r) => a + r.cost, 0))} credits` });
  const tip = h("div", { class: "chart-tip", id: "chart-tip", role: "status", hidden: true });
  const show = (text) => { tip.textContent = text; tip.hidden = false; };
  svg.append(h("text", { x: 2, y: 12, "font-size": 12, fill: "#5b6470" }, "credits / day"));
  for (const f of [0, 0.5, 1]) {
    const y = base - (base - top) * f;
    svg.append(h("line", { x1: pad, y1: y, x2: W, y2: y, stroke: f ? "#e3e6ea" : "#b0b7c0" }));
    svg.append(h("text", { x: pad - 6, y: y + 4, "font-size": 11, fill: "#5b6470", "text-anchor": "end" }, fmt(Math.round(max * f))));
  }
  ds.forEach((d, i) => {
    let y = base;
    series.forEach((s, j) => {
      const v = per.get(d).get(s) || 0;
      if (!v) return;
      const bh = ((base - top) * v) / max;
      y -= bh;
      const label = `${d} · ${s}: ${fmt(v)} credits`;
      svg.append(h("rect", { x: pad + i * bw + 1, y, width: Math.max(1, bw - 2), height: bh, fill: COLORS[j % COLORS.length], tabindex: 0,
        "aria-label": label, onmouseenter: () => show(label), onfocus: () => show(label), onmouseleave: () => { tip.hidden = true; } }, h("title", {}, label)));
    });
    if (i % 5 === 0) svg.append(h("text", { x: pad + i * bw, y: H - 4, "font-size": 11, fill: "#5b6470" }, d.slice(5)));
  });
  const legend = h("div", { class: "legend" }, series.length ? series.map((s, j) => {
    const sw = h("span", { class: "swatch" });
    sw.style.background = COLORS[j % COLORS.length];
    return h("span", {}, sw, s);
  }) : h("span", { class: "muted" }, "No spend in this range."));
  return h("div", { class: "chart-box" }, svg, tip, legend);
}

// A paged list: `load(after)` answers a list page; `row(item)` a <tr>.
function paged(body, heads, load, row, filter) {
  const tbody = h("tbody");
  const more = h("button", { class: "secondary", type: "button" }, "More");
  let after = null;
  const next = async () => {
    const list = await attempt(() => load(after));
    if (!list) return;
    for (const item of list.data) if (!filter || filter(item)) tbody.append(row(item));
    after = list.data.length ? list.data[list.data.length - 1].id : after;
    more.hidden = !list.has_more;
  };
  more.addEventListener("click", next);
  body.append(h("div", { class: "table-wrap" }, h("table", {}, h("thead", {}, h("tr", {}, heads.map((x) => h("th", { scope: "col" }, x)))), tbody)), more);
  return next();
}

async function ledger(body, hash, base = "/v1/credits/transactions") {
  const kind = h("select", { id: "kind-filter" }, ["all", "consume", "grant", "refund", "adjust", "expire", "void"].map((k) => h("option", { value: k }, k)));
  const list = h("div");
  const load = () => {
    list.replaceChildren();
    return paged(list, ["When", "Kind", "Amount", "Balance after", "Description"],
      (after) => api(`${base}?limit=50${after ? `&starting_after=${after}` : ""}`),
      (t) => h("tr", {}, h("td", {}, when(t.created_at)), h("td", {}, t.kind), h("td", { class: t.amount < 0 ? "neg" : "pos" }, fmt(t.amount)),
        h("td", {}, fmt(t.balance_after)), h("td", {}, t.description || "")),
      (t) => kind.value === "all" || t.kind === kind.value);
  };
  kind.addEventListener("change", load);
  body.replaceChildren(h("div", { class: "row" }, field("Kind", kind)), list);
  await load();
}

async function grants(body) {
  body.replaceChildren();
  await paged(body, ["Granted", "Amount", "Remaining", "Category", "Status", "Expires"],
    (after) => api(`/v1/credits/grants?limit=50${after ? `&starting_after=${after}` : ""}`),
    (g) => h("tr", {}, h("td", {}, when(g.created_at)), h("td", {}, fmt(g.amount)), h("td", {}, fmt(g.remaining)), h("td", {}, g.category),
      h("td", {}, g.status), h("td", {}, g.expires_at ? when(g.expires_at) : "never")));
}

function outputOf(job) {
  const o = job.output || {};
  const out = h("div", { class: "out" });
  for (const img of o.images || []) {
    const src = (img.file && img.file.signed_url) || img.url;
    if (src) out.append(h("img", { src, alt: `Image made by job ${job.id}`, width: 256, height: 256 }));
  }
  const video = (o.file && o.file.signed_url) || o.video_url;
  if (video) out.append(h("video", { src: video, controls: true, preload: "metadata", "aria-label": `Video made by job ${job.id}` }));
  if (o.text) out.append(h("div", { class: "answer" }, o.text));
  return out;
}

async function jobs(body) {
  const rows = h("tbody");
  const draw = async () => {
    const list = await api("/v1/jobs?limit=20");
    rows.replaceChildren(...list.data.map((j) => h("tr", { "data-job": j.id },
      h("td", { class: "mono" }, j.id), h("td", {}, j.type), h("td", {}, j.model), h("td", { class: "status" }, j.status), h("td", {}, j.credit_cost !== null && j.credit_cost !== undefined ? fmt(j.credit_cost) : `≤ ${fmt(j.estimated_cost)}`),
      h("td", {}, ["queued", "processing"].includes(j.status) ? h("button", { class: "danger", type: "button", onclick: () => act(j, "cancel") }, "Cancel") : null,
        ["failed", "canceled"].includes(j.status) ? h("button", { class: "secondary", type: "button", onclick: () => act(j, "retry") }, "Retry") : null),
      h("td", {}, outputOf(j)))));
    return list.data.some((j) => ["queued", "processing"].includes(j.status));
  };
  const act = async (j, what) => { await attempt(() => api(`/v1/jobs/${j.id}/${what}`, { method: "POST", body: {} })); await attempt(draw); };
  const heads = ["Job", "Type", "Model", "Status", "Cost", "", "Output"].map((x) => h("th", { scope: "col" }, x));
  body.replaceChildren(h("div", { class: "table-wrap" }, h("table", {}, h("thead", {}, h("tr", {}, heads)), rows)),
    h("p", { class: "muted" }, "Live: refreshed every 2 s while a job runs."));
  // Live status: poll while anything runs and this page is shown.
  while (location.hash.startsWith("#/jobs") && body.isConnected) {
    const running = await attempt(draw);
    await new Promise((r) => setTimeout(r, running ? 2000 : 5000));
  }
}

// A key list with create, edit and revoke: the caller's own keys
// (`/v1/api-keys`) or, for an admin, a user's (`/v1/admin/users/{id}/api-keys`).
// The fields are the API's: a limit left empty is no limit.
function keyFields(prefix, k = {}) {
  const f = {
    name: h("input", { id: `${prefix}-name`, required: true, maxlength: 100, value: k.name || "" }),
    spend_limit: h("input", { id: `${prefix}-spend-limit`, type: "number", min: 1, placeholder: "no limit", value: k.spend_limit ?? "" }),
    daily_spend_limit: h("input", { id: `${prefix}-daily-limit`, type: "number", min: 1, placeholder: "no limit", value: k.daily_spend_limit ?? "" }),
    rpm: h("input", { id: `${prefix}-rpm`, type: "number", min: 1, placeholder: "no limit", value: k.rpm ?? "" }),
    models: h("input", { id: `${prefix}-models`, placeholder: "every model", value: (k.models || []).join(", ") }),
    expires_at: h("input", { id: `${prefix}-expires`, type: "date", value: k.expires_at ? k.expires_at.slice(0, 10) : "" }),
  };
  const labels = { name: "Name", spend_limit: "Spend limit", daily_spend_limit: "Daily limit", rpm: "Requests / min", models: "Models", expires_at: "Expires" };
  // `clear`: empty fields are sent as null (an edit clears the limit);
  // otherwise left out (a new key has none).
  const body = (clear) => {
    const b = { name: f.name.value };
    const put = (key, v) => { if (v !== null) b[key] = v; else if (clear) b[key] = null; };
    for (const key of ["spend_limit", "daily_spend_limit", "rpm"]) put(key, f[key].value === "" ? null : Number(f[key].value));
    const m = f.models.value.split(",").map((x) => x.trim()).filter(Boolean);
    put("models", m.length ? m : null);
    put("expires_at", f.expires_at.value ? `${f.expires_at.value}T00:00:00Z` : null);
    return b;
  };
  return { inputs: Object.entries(f).map(([key, input]) => field(labels[key], input)), body };
}

async function keyPanel(body, base) {
  const make = keyFields("key");
  const shown = h("div", { id: "key-shown" });
  const list = h("div");
  const edit = (k) => {
    const e = keyFields("edit-key", k);
    shown.replaceChildren(h("form", { class: "row", "aria-label": `Edit ${k.name}`, onsubmit: async (ev) => {
      ev.preventDefault();
      if (await attempt(() => api(`${base}/${k.id}`, { method: "PATCH", body: e.body(true) }))) { shown.replaceChildren(); load(); }
    } }, ...e.inputs, h("button", { type: "submit", id: "edit-key-submit" }, "Save"),
      h("button", { type: "button", class: "secondary", onclick: () => shown.replaceChildren() }, "Cancel")));
  };
  const load = async () => {
    list.replaceChildren();
    await paged(list, ["Name", "Prefix", "Limits", "Spent", "Created", ""],
      (after) => api(`${base}?limit=50${after ? `&starting_after=${after}` : ""}`),
      (k) => h("tr", { "data-key": k.name }, h("td", {}, k.name), h("td", { class: "mono" }, k.prefix),
        h("td", { class: "key-limits" }, limitsText(k)), h("td", {}, `${fmt(k.spent_total)} (today ${fmt(k.spent_today)})`), h("td", {}, when(k.created_at)),
        h("td", {}, h("button", { class: "secondary", type: "button", "aria-label": `Edit ${k.name}`, onclick: () => edit(k) }, "Edit"),
          h("button", { class: "danger", type: "button", "aria-label": `Revoke ${k.name}`, onclick: async () => {
            if (await attempt(() => api(`${base}/${k.id}`, { method: "DELETE" }))) load();
          } }, "Revoke"))));
  };
  body.replaceChildren(
    h("form", { class: "row", onsubmit: async (e) => {
      e.preventDefault();
      const k = await attempt(() => api(base, { method: "POST", body: make.body(false) }));
      if (!k) return;
      const copy = h("button", { type: "button", class: "secondary", onclick: async () => { await navigator.clipboard.writeText(k.key).catch(() => {}); copy.textContent = "Copied"; } }, "Copy");
      shown.replaceChildren(h("div", { class: "notice" }, "The new key (shown only now): ", h("code", { id: "new-key" }, k.key), " ", copy));
      e.target.reset();
      load();
    } }, ...make.inputs, h("button", { type: "submit", id: "key-submit" }, "Create key")),
    shown, list);
  await load();
}

function keys(body) { return keyPanel(body, "/v1/api-keys"); }

const limitsText = (l) => ["spend_limit", "daily_spend_limit", "rpm", "models", "expires_at"].filter((k) => l[k] !== null && l[k] !== undefined)
  .map((k) => `${k}: ${Array.isArray(l[k]) ? l[k].join(" ") : l[k]}`).join(", ") || "none";

async function playground(body) {
  const models = (await api("/v1/models")).data;
  const chatModels = models.filter((m) => m.kind === "chat");
  const imageModels = models.filter((m) => m.kind === "image");
  const model = h("select", { id: "chat-model" }, chatModels.map((m) => h("option", { value: m.id }, m.id)));
  // Either API over the same models: OpenAI's chat completions, or
  // Anthropic's Messages (what Claude Code sends).
  const wire = h("select", { id: "chat-api" }, h("option", { value: "chat" }, "Chat completions"), h("option", { value: "messages" }, "Messages (Anthropic)"));
  const prompt = h("textarea", { id: "chat-prompt", required: true });
  const answer = h("div", { class: "answer", id: "chat-answer", "aria-live": "polite" });
  const cost = h("p", { id: "chat-cost", class: "muted" }, " ");
  const imgModel = h("select", { id: "image-model" }, imageModels.map((m) => h("option", { value: m.id }, m.id)));
  const imgPrompt = h("input", { id: "image-prompt", required: true });
  const imgOut = h("div", { id: "image-job" });
  body.replaceChildren(
    h("h2", {}, "Chat"),
    h("form", { onsubmit: async (e) => {
      e.preventDefault();
      const m = chatModels.find((x) => x.id === model.value);
      await attempt(() => chat(wire.value, m, prompt.value, answer, cost));
    } },
      h("div", { class: "row" }, field("Model", model), field("API", wire)), field("Message", prompt), h("div", { class: "row" }, h("button", { type: "submit", id: "chat-send" }, "Send"))),
    answer, cost,
    h("h2", {}, "Generate an image"),
    h("form", { class: "row", onsubmit: async (e) => {
      e.preventDefault();
      const job = await attempt(() => api("/v1/jobs", { method: "POST", body: { type: "image_generation", model: imgModel.value, input: { prompt: imgPrompt.value } } }));
      if (job) await watchJob(job, imgOut);
    } }, field("Model", imgModel), field("Prompt", imgPrompt), h("button", { type: "submit", id: "image-send" }, "Generate")),
    imgOut);
}

// Streams a chat: tokens appear as they arrive; the cost comes after.
// `wire` picks the API: "chat" (chunks with choices[0].delta.content) or
// "messages" (content_block_delta events with delta.text).
async function chat(wire, model, text, answer, costLine) {
  answer.textContent = "";
  costLine.textContent = " ";
  const before = (await api("/v1/credits/balance")).balance;
  const messages = [{ role: "user", content: text }];
  const r = wire === "messages"
    ? await api("/v1/messages", { method: "POST", raw: true, body: { model: model.id, max_tokens: Math.min(1024, model.max_output_tokens || 1024), stream: true, messages } })
    : await api("/v1/chat/completions", { method: "POST", raw: true, body: { model: model.id, stream: true, stream_options: { include_usage: true }, messages } });
  if (!r.ok) throw new ApiError(r.status, await r.json().catch(() => null));
  const reader = r.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const event = buf.slice(0, i);
      buf = buf.slice(i + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
        const chunk = JSON.parse(line.slice(6));
        const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
        if (delta && delta.content) answer.append(delta.content);
        if (chunk.type === "content_block_delta" && chunk.delta && chunk.delta.text) answer.append(chunk.delta.text);
      }
    }
  }
  const after = (await api("/v1/credits/balance")).balance;
  costLine.textContent = `Cost: ${fmt(before - after)} credits`;
}

async function watchJob(job, out) {
  for (;;) {
    out.replaceChildren(h("p", {}, `Job ${job.id}: `, h("span", { class: "status", id: "image-status" }, job.status)), outputOf(job));
    if (!["queued", "processing"].includes(job.status)) return;
    await new Promise((r) => setTimeout(r, 500));
    job = await api(`/v1/jobs/${job.id}`);
  }
}

// ---------- admin ----------

async function adminUsers(body) {
  const q = h("input", { id: "user-search", type: "search" });
  const email = h("input", { id: "new-email", type: "email", required: true });
  const password = h("input", { id: "new-password", type: "password", required: true, autocomplete: "new-password" });
  const role = h("select", { id: "new-role" }, h("option", { value: "user" }, "user"), h("option", { value: "admin" }, "admin"));
  const list = h("div");
  const load = async () => {
    list.replaceChildren();
    await paged(list, ["Email", "Id", "Role", "Created"],
      (after) => api(`/v1/admin/users?limit=50${q.value ? `&email=${encodeURIComponent(q.value)}` : ""}${after ? `&starting_after=${after}` : ""}`),
      (u) => h("tr", {}, h("td", {}, h("a", { href: `#/admin/users/${u.id}` }, u.email)), h("td", { class: "mono" }, u.id), h("td", {}, u.role), h("td", {}, when(u.created_at))));
  };
  body.replaceChildren(
    h("form", { class: "row", role: "search", onsubmit: (e) => { e.preventDefault(); attempt(load); } }, field("Search by email", q), h("button", { type: "submit" }, "Search")),
    h("h2", {}, "Create a user"),
    h("form", { class: "row", onsubmit: async (e) => {
      e.preventDefault();
      const u = await attempt(() => api("/v1/admin/users", { method: "POST", body: { email: email.value, password: password.value, role: role.value } }));
      if (u) location.hash = `#/admin/users/${u.id}`;
    } }, field("Email", email), field("Password", password), field("Role", role), h("button", { type: "submit", id: "create-user" }, "Create")),
    h("h2", {}, "Users"), list);
  await load();
}

async function adminUser(body, hash) {
  const id = hash.split("/")[3];
  const u = await api(`/v1/admin/users/${id}`);
  const amount = h("input", { id: "grant-amount", type: "number", required: true });
  const why = h("input", { id: "grant-description", required: true });
  const rpm = h("input", { id: "limit-rpm", type: "number", min: 1, value: u.limits && u.limits.rpm });
  const burst = h("input", { id: "limit-burst", type: "number", min: 1, value: u.limits && u.limits.burst });
  const maxCost = h("input", { id: "limit-max-cost", type: "number", min: 0, value: u.limits && u.limits.max_cost_per_request });
  const cap = h("input", { id: "limit-daily-cap", type: "number", min: 0, value: u.limits && u.limits.daily_cap });
  const gAmount = h("input", { id: "grant2-amount", type: "number", min: 1, required: true });
  const gCategory = h("select", { id: "grant2-category" }, ["promotional", "paid"].map((c) => h("option", { value: c }, c)));
  const gPriority = h("input", { id: "grant2-priority", type: "number", value: 0 });
  const gExpires = h("input", { id: "grant2-expires", type: "date" });
  const gWhy = h("input", { id: "grant2-description" });
  const role = h("select", { id: "user-role" }, ["user", "admin"].map((r) => h("option", { value: r, selected: r === u.role }, r)));
  const num = (i) => (i.value === "" ? null : Number(i.value));
  const again = () => render();
  const tabs = h("div");
  body.replaceChildren(
    h("p", {}, `${u.email} · ${u.role} · `, h("span", { class: "mono" }, u.id), u.deactivated_at ? h("strong", { class: "neg" }, ` · deactivated ${when(u.deactivated_at)}`) : ""),
    h("div", { class: "cards" }, card("Balance", u.balance, "user-balance"), card("Held", u.held), card("Available", u.available)),
    h("div", { class: "row" }, u.deactivated_at
      ? h("button", { type: "button", onclick: async () => { if (await attempt(() => api(`/v1/admin/users/${id}/reactivate`, { method: "POST", body: {} }))) again(); } }, "Reactivate")
      : h("button", { class: "danger", type: "button", onclick: async () => { if (await attempt(() => api(`/v1/admin/users/${id}`, { method: "DELETE" }))) again(); } }, "Deactivate")),
    h("form", { class: "row", onsubmit: async (e) => {
      e.preventDefault();
      if (await attempt(() => api(`/v1/admin/users/${id}`, { method: "PATCH", body: { role: role.value } }))) again();
    } }, field("Role", role), h("button", { type: "submit", id: "role-submit" }, "Set role")),
    h("h2", {}, "Grant or adjust credits"),
    h("form", { class: "row", onsubmit: async (e) => {
      e.preventDefault();
      if (await attempt(() => api(`/v1/admin/users/${id}/credits`, { method: "POST", body: { amount: Number(amount.value), description: why.value } }))) again();
    } }, field("Amount", amount), field("Description", why), h("button", { type: "submit", id: "grant-submit" }, "Apply")),
    h("h2", {}, "Limits"),
    h("form", { class: "row", onsubmit: async (e) => {
      e.preventDefault();
      const b = { rpm: num(rpm), burst: num(burst), max_cost_per_request: num(maxCost), daily_cap: num(cap) };
      if (await attempt(() => api(`/v1/admin/users/${id}/limits`, { method: "PUT", body: b }))) again();
    } }, field("Requests / min", rpm), field("Burst", burst), field("Max cost / request", maxCost), field("Daily cap", cap),
      h("button", { type: "submit", id: "limits-submit" }, "Save")),
    h("h2", {}, "A grant with terms"),
    h("form", { class: "row", onsubmit: async (e) => {
      e.preventDefault();
      const b = { amount: Number(gAmount.value), category: gCategory.value, priority: Number(gPriority.value || 0),
                  description: gWhy.value || undefined, expires_at: gExpires.value ? `${gExpires.value}T00:00:00Z` : undefined };
      if (await attempt(() => api(`/v1/admin/users/${id}/grants`, { method: "POST", body: b }))) again();
    } }, field("Credits", gAmount), field("Category", gCategory), field("Priority", gPriority), field("Expires", gExpires),
      field("Description", gWhy), h("button", { type: "submit", id: "grant2-submit" }, "Grant")),
    h("div", { class: "row" },
      h("button", { class: "secondary", type: "button", onclick: () => attempt(() => ledger(tabs, hash, `/v1/admin/users/${id}/transactions`)) }, "Ledger"),
      h("button", { class: "secondary", type: "button", onclick: () => attempt(() => userKeys(tabs, id)) }, "Keys"),
      h("button", { class: "secondary", type: "button", onclick: () => attempt(() => userJobs(tabs, id)) }, "Jobs"),
      h("button", { class: "secondary", type: "button", id: "user-grants", onclick: () => attempt(() => userGrants(tabs, id)) }, "Grants")),
    tabs);
}

function userKeys(tabs, id) { return keyPanel(tabs, `/v1/admin/users/${id}/api-keys`); }

function userJobs(tabs, id) {
  tabs.replaceChildren();
  return paged(tabs, ["Job", "Model", "Status", "Cost"],
    (a) => api(`/v1/admin/users/${id}/jobs?limit=50${a ? `&starting_after=${a}` : ""}`),
    (j) => h("tr", {}, h("td", { class: "mono" }, j.id), h("td", {}, j.model), h("td", {}, j.status),
      h("td", {}, j.credit_cost !== null && j.credit_cost !== undefined ? fmt(j.credit_cost) : `≤ ${fmt(j.estimated_cost)}`)));
}

function userGrants(tabs, id) {
  tabs.replaceChildren();
  return paged(tabs, ["Grant", "Amount", "Remaining", "Category", "Priority", "Expires", "Status", ""],
    (a) => api(`/v1/admin/users/${id}/grants?limit=50${a ? `&starting_after=${a}` : ""}`),
    (g) => h("tr", { "data-grant": g.id }, h("td", { class: "mono" }, g.id), h("td", {}, fmt(g.amount)), h("td", {}, fmt(g.remaining)),
      h("td", {}, g.category), h("td", {}, fmt(g.priority)), h("td", {}, when(g.expires_at)), h("td", { class: "status" }, g.status),
      h("td", {}, g.status === "active" ? h("button", { class: "danger", type: "button", "aria-label": `Void ${g.id}`,
        onclick: () => attempt(async () => { await api(`/v1/admin/grants/${g.id}/void`, { method: "POST", body: {} }); await userGrants(tabs, id); }) }, "Void") : "")));
}

async function adminUsage(body) {
  const end = new Date().toISOString().slice(0, 10);
  const start = new Date(Date.now() - 29 * 86400000).toISOString().slice(0, 10);
  const by = h("select", { id: "usage-series" }, ["model", "user"].map((x) => h("option", { value: x }, `by ${x}`)));
  const out = h("div");
  const draw = async () => {
    const r = await api(`/v1/admin/usage?start=${start}&end=${end}&group_by=day,${by.value}`);
    const seriesOf = by.value === "user" ? (x) => x.user_id : (x) => x.model || "(consume)";
    // Cost charged, what the providers billed (models with provider_cost
    // in the config) and the margin, per series.
    const totals = new Map();
    for (const x of r.data) {
      const t = totals.get(seriesOf(x)) || { cost: 0, provider: 0, margin: 0 };
      t.cost += x.cost; t.provider += x.provider_cost_micro || 0; t.margin += x.margin_micro || 0;
      totals.set(seriesOf(x), t);
    }
    const micro = (n) => fmt(Math.round(n / 1000) / 1000);
    const rows = [...totals].sort((a, b) => b[1].cost - a[1].cost).map(([k, t]) => h("tr", {},
      h("td", {}, k), h("td", {}, fmt(t.cost)), h("td", {}, micro(t.provider)),
      h("td", { class: t.margin < 0 ? "loss" : "" }, micro(t.margin))));
    out.replaceChildren(spendChart(r.data, r.start, r.end, seriesOf),
      table([by.value, "Cost", "Provider cost", "Margin"], rows));
  };
  const csv = h("button", { type: "button", class: "secondary", onclick: () => attempt(async () => {
    const r = await api(`/v1/admin/usage?start=${start}&end=${end}&group_by=day,model,user&format=csv`, { raw: true });
    if (!r.ok) throw new ApiError(r.status, await r.json().catch(() => null));
    const a = h("a", { href: URL.createObjectURL(await r.blob()), download: `usage-${start}-${end}.csv` });
    document.body.append(a); a.click(); a.remove();
  }) }, "Download CSV");
  by.addEventListener("change", () => attempt(draw));
  body.replaceChildren(h("div", { class: "row" }, field("Series", by), csv), out);
  await draw();
}

async function adminCodes(body) {
  const amount = h("input", { id: "code-amount", type: "number", min: 1, required: true });
  const count = h("input", { id: "code-count", type: "number", min: 1, value: 1, required: true });
  const category = h("select", { id: "code-category" }, ["promotional", "paid"].map((c) => h("option", { value: c }, c)));
  const priority = h("input", { id: "code-priority", type: "number", value: 0 });
  const grantDays = h("input", { id: "code-grant-days", type: "number", min: 1, placeholder: "never" });
  const redeemBy = h("input", { id: "code-redeem-by", type: "date" });
  const uses = h("input", { id: "code-max-redemptions", type: "number", min: 1, value: 1 });
  const why = h("input", { id: "code-description", placeholder: "optional" });
  const shown = h("div");
  const list = h("div");
  const load = async () => {
    list.replaceChildren();
    await paged(list, ["Code id", "Hint", "Amount", "Category", "Grant expires", "Redeem by", "Redeemed", "Status", ""],
      (a) => api(`/v1/admin/codes?limit=50${a ? `&starting_after=${a}` : ""}`),
      (c) => h("tr", { "data-code": c.id }, h("td", { class: "mono" }, c.id), h("td", { class: "mono" }, `…${c.hint}`), h("td", {}, fmt(c.amount)),
        h("td", {}, `${c.category} (priority ${fmt(c.priority)})`),
        h("td", {}, c.grant_expires_days ? `${fmt(c.grant_expires_days)} days after` : "never"), h("td", {}, c.redeem_by ? when(c.redeem_by) : "any time"),
        h("td", {}, `${fmt(c.redemptions)} / ${fmt(c.max_redemptions)}`), h("td", { class: "status" }, c.status),
        h("td", {}, c.status === "active" ? h("button", { class: "danger", type: "button", "aria-label": `Disable ${c.id}`,
          onclick: async () => { if (await attempt(() => api(`/v1/admin/codes/${c.id}/disable`, { method: "POST", body: {} }))) load(); } }, "Disable") : "")));
  };
  const opt = (i) => (i.value === "" ? undefined : Number(i.value));
  body.replaceChildren(h("form", { class: "row", onsubmit: async (e) => {
    e.preventDefault();
    const b = { amount: Number(amount.value), count: Number(count.value), category: category.value, priority: opt(priority),
                grant_expires_days: opt(grantDays), max_redemptions: opt(uses), description: why.value || undefined,
                redeem_by: redeemBy.value ? `${redeemBy.value}T23:59:59Z` : undefined };
    const r = await attempt(() => api("/v1/admin/codes", { method: "POST", body: b }));
    if (r) { shown.replaceChildren(h("div", { class: "notice", id: "new-codes" }, "New codes (shown only now): ", r.data.map((c) => h("code", {}, `${c.code} `)))); load(); }
  } }, field("Credits each", amount), field("How many", count), field("Category", category), field("Priority", priority),
    field("Grant expires (days)", grantDays), field("Redeem by", redeemBy), field("Redemptions each", uses), field("Description", why),
    h("button", { type: "submit", id: "code-submit" }, "Mint")), shown, list);
  await load();
}

// Money as the provider bills it: minor units and an ISO currency.
const money = (minor, currency) => `${(minor / 100).toFixed(2)} ${String(currency).toUpperCase()}`;

// Buying credits through Stripe: packages, plans, auto top-up and the
// caller's payments. Checkout returns to this page, which must be under
// one of the server's `payments.return_urls`.
async function billing(body) {
  const cat = await api("/v1/payments/catalog", { raw: true });
  if (cat.status === 404) {
    body.replaceChildren(h("p", { class: "muted", id: "billing-off" }, "Payments are not enabled on this server."));
    return;
  }
  const catalog = await cat.json();
  const back = `${location.origin}${location.pathname}#/billing`;
  const buy = async (item) => {
    const r = await attempt(() => api("/v1/payments/checkout", { method: "POST", body: { ...item, success_url: `${back}?paid=1`, cancel_url: back } }));
    if (r) location.assign(r.url);
  };
  const plan = (await api("/v1/me")).plan;
  const topup = (await api("/v1/payments/auto-topup")).setting;
  const tPackage = h("select", { id: "topup-package" }, catalog.packages.map((p) => h("option", { value: p.id, selected: topup && topup.package === p.id }, p.name || p.id)));
  const tThreshold = h("input", { id: "topup-threshold", type: "number", min: 1, required: true, value: topup ? topup.threshold : "" });
  const tEnabled = h("input", { id: "topup-enabled", type: "checkbox", checked: !topup || topup.enabled });
  const list = h("div");
  body.replaceChildren(
    location.hash.includes("paid=1") ? h("div", { class: "notice", id: "billing-returned" }, "Thank you: your credits appear as soon as Stripe confirms the payment.") : "",
    h("p", { id: "billing-plan" }, plan ? `Plan ${plan.plan} (${plan.status}), current period ends ${when(plan.current_period_end)}` : "No plan.",
      " ", h("button", { class: "secondary", type: "button", onclick: () => attempt(async () => {
        const r = await api("/v1/payments/portal", { method: "POST", body: { return_url: back } });
        location.assign(r.url);
      }) }, "Manage billing")),
    h("h2", {}, "Credit packages"),
    table(["Package", "Credits", "Price", "Expires", ""], catalog.packages.map((p) => h("tr", { "data-package": p.id },
      h("td", {}, p.name || p.id), h("td", {}, fmt(p.credits)), h("td", {}, money(p.price, p.currency)),
      h("td", {}, p.expires_days ? `${fmt(p.expires_days)} days after purchase` : "never"),
      h("td", {}, h("button", { type: "button", "aria-label": `Buy ${p.id}`, onclick: () => buy({ package: p.id }) }, "Buy"))))),
    h("h2", {}, "Plans"),
    catalog.plans.length ? table(["Plan", "Credits each period", "Price", "Leftover credits", ""], catalog.plans.map((p) => h("tr", { "data-plan": p.id },
      h("td", {}, p.name || p.id), h("td", {}, fmt(p.credits_per_period)), h("td", {}, `${money(p.price, p.currency)} / ${p.interval}`),
      h("td", {}, p.rollover ? "carried over" : "expire with the period"),
      h("td", {}, h("button", { type: "button", "aria-label": `Subscribe ${p.id}`, onclick: () => buy({ plan: p.id }) }, "Subscribe"))))) : h("p", { class: "muted" }, "No plans."),
    h("h2", {}, "Auto top-up"),
    h("form", { class: "row", onsubmit: async (e) => {
      e.preventDefault();
      const b = { package: tPackage.value, threshold: Number(tThreshold.value), enabled: tEnabled.checked };
      if (await attempt(() => api("/v1/payments/auto-topup", { method: "PUT", body: b }))) render();
    } }, field("Package", tPackage), field("When available credits fall below", tThreshold), field("On", tEnabled),
      h("button", { type: "submit", id: "topup-submit" }, "Save")),
    h("p", { class: "muted" }, "Charges the card of your last purchase, at most once each time credits cross below the threshold."),
    h("h2", {}, "Your payments"), list);
  await paged(list, ["When", "What", "Amount", "Credits", "Status"],
    (a) => api(`/v1/payments?limit=50${a ? `&starting_after=${a}` : ""}`),
    (p) => h("tr", { "data-payment": p.id }, h("td", {}, when(p.created_at)), h("td", {}, `${p.kind} ${p.item}`),
      h("td", {}, money(p.amount_minor, p.currency)), h("td", {}, fmt(p.credits)), h("td", { class: "status" }, p.status)));
  // Every request of the page has answered (a test waits for this).
  body.append(h("span", { id: "billing-ready", hidden: true }));
}

async function adminPayments(body) {
  body.replaceChildren();
  await paged(body, ["Payment", "User", "What", "Amount", "Credits", "Status", "Refunded", "Taken back", "Shortfall", "Frozen"],
    (a) => api(`/v1/admin/payments?limit=50${a ? `&starting_after=${a}` : ""}`),
    (p) => h("tr", { "data-payment": p.id }, h("td", { class: "mono" }, p.id), h("td", {}, h("a", { href: `#/admin/users/${p.user_id}` }, p.user_id)),
      h("td", {}, `${p.kind} ${p.item}`), h("td", {}, money(p.amount_minor, p.currency)), h("td", {}, fmt(p.credits)),
      h("td", { class: "status" }, p.status), h("td", {}, money(p.refunded_minor, p.currency)), h("td", {}, fmt(p.credits_taken_back)),
      h("td", { class: p.shortfall > 0 ? "loss" : "" }, fmt(p.shortfall)), h("td", {}, fmt(p.frozen))));
}

// A log's details as fields (nested values as compact JSON).
const details = (d) => h("dl", { class: "details" }, Object.entries(d || {}).flatMap(([k, v]) => [
  h("dt", {}, k), h("dd", { class: "mono" }, typeof v === "object" && v !== null ? JSON.stringify(v) : String(v))]));

async function adminLogs(body) {
  const level = h("select", { id: "log-level" }, ["", "info", "warn", "error"].map((l) => h("option", { value: l }, l || "any level")));
  const type = h("select", { id: "log-type" }, ["", "business", "system"].map((l) => h("option", { value: l }, l || "any type")));
  const list = h("div");
  const load = async () => {
    list.replaceChildren();
    const f = `${level.value ? `&level=${level.value}` : ""}${type.value ? `&log_type=${type.value}` : ""}`;
    await paged(list, ["When", "Type", "Level", "Action", "User", "Details"],
      (a) => api(`/v1/admin/logs?limit=50${f}${a ? `&starting_after=${a}` : ""}`),
      (l) => h("tr", {}, h("td", {}, when(l.created_at)), h("td", {}, l.log_type), h("td", {}, l.level), h("td", {}, l.action), h("td", { class: "mono" }, l.user_id || ""), h("td", {}, details(l.details))));
  };
  level.addEventListener("change", () => attempt(load));
  type.addEventListener("change", () => attempt(load));
  body.replaceChildren(h("div", { class: "row" }, field("Level", level), field("Type", type)), list);
  await load();
}

async function adminAudit(body) {
  const out = h("div", { id: "audit-result" }, h("p", { class: "muted" }, "The audit walks every ledger row, balance, hold, grant and the usage aggregate."));
  body.replaceChildren(h("button", { type: "button", id: "run-audit", onclick: () => attempt(async () => {
    out.replaceChildren(h("p", {}, "Running…"));
    const r = await api("/v1/admin/audit");
    out.replaceChildren(
      h("p", {}, h("strong", { class: r.valid ? "pos" : "neg" }, r.valid ? "Valid" : `${r.mismatch_count} mismatches`),
        ` · ${fmt(r.rows_checked)} rows, ${fmt(r.users_checked)} users`),
      h("p", {}, "Chain head: ", h("code", { class: "mono" }, r.head ? `${r.head.id}:${r.head.hash}` : "(empty ledger)")),
      r.mismatches.length ? h("pre", { class: "mono" }, JSON.stringify(r.mismatches, null, 2)) : "");
  }) }, "Run the audit"), out);
}

async function adminWebhooks(body) {
  const url = h("input", { id: "hook-url", type: "url", required: true, placeholder: "https://app.example.com/hooks/tollgate" });
  const events = h("input", { id: "hook-events", placeholder: "job.completed, credits.low (empty: every event)" });
  const shown = h("div", { id: "hook-secret" });
  const endpoints = h("div");
  const deliveries = h("div");
  const loadEndpoints = async () => {
    endpoints.replaceChildren();
    await paged(endpoints, ["Endpoint", "URL", "Events", "Source", ""],
      (a) => api(`/v1/admin/webhooks?limit=50${a ? `&starting_after=${a}` : ""}`),
      (e) => h("tr", { "data-endpoint": e.url }, h("td", { class: "mono" }, e.id), h("td", { class: "mono" }, e.url),
        h("td", {}, e.events.length ? e.events.join(", ") : "every event"), h("td", {}, e.source),
        h("td", {}, e.source === "api" ? h("button", { class: "danger", type: "button", "aria-label": `Delete ${e.url}`,
          onclick: () => attempt(async () => { await api(`/v1/admin/webhooks/${e.id}`, { method: "DELETE" }); await loadEndpoints(); }) }, "Delete") : "")));
  };
  const form = h("form", { class: "row", onsubmit: async (e) => {
    e.preventDefault();
    const list = events.value.split(",").map((x) => x.trim()).filter(Boolean);
    const r = await attempt(() => api("/v1/admin/webhooks", { method: "POST", body: { url: url.value, events: list } }));
    if (r) {
      shown.replaceChildren(h("div", { class: "notice" }, "Signing secret (shown only now): ", h("code", {}, r.secret)));
      url.value = ""; events.value = "";
      await attempt(loadEndpoints);
    }
  } }, field("URL", url), field("Events", events), h("button", { type: "submit", id: "hook-submit" }, "Add endpoint"));
  body.replaceChildren(h("h2", {}, "Endpoints"), form, shown, endpoints, h("h2", {}, "Deliveries"), deliveries);
  await loadEndpoints();
  await paged(deliveries, ["Delivery", "Event", "Endpoint", "Status", "Attempts", "Last status", ""],
    (a) => api(`/v1/admin/webhook-deliveries?limit=50${a ? `&starting_after=${a}` : ""}`),
    (d) => h("tr", {}, h("td", { class: "mono" }, d.id), h("td", {}, d.event_type), h("td", { class: "mono" }, d.endpoint_id), h("td", {}, d.status), h("td", {}, fmt(d.attempts)),
      h("td", {}, d.last_status_code ?? d.last_error ?? ""),
      h("td", {}, d.status === "failed" ? h("button", { class: "secondary", type: "button", onclick: () => attempt(() => api(`/v1/admin/webhook-deliveries/${d.id}/redeliver`, { method: "POST", body: {} })) }, "Redeliver") : "")));
}

// "a=x, b" -> [{model: "a", upstream: "x"}, {model: "b"}]
const parseServes = (text) => text.split(",").map((x) => x.trim()).filter(Boolean).map((x) => {
  const [model, upstream] = x.split("=").map((y) => y.trim());
  return upstream ? { model, upstream } : { model };
});
const showServes = (models) => models.map((m) => (m.upstream && m.upstream !== m.model ? `${m.model}=${m.upstream}` : m.model)).join(", ");

async function adminChannels(body) {
  const name = h("input", { id: "ch-name", required: true, placeholder: "openai-main" });
  const kind = h("select", { id: "ch-kind" }, ["openai", "anthropic", "google", "dashscope", "dev"].map((k) => h("option", { value: k }, k)));
  const baseUrl = h("input", { id: "ch-base-url", type: "url", placeholder: "default for the kind" });
  const models = h("input", { id: "ch-models", placeholder: "gpt-4o, fast=gpt-4o-mini" });
  const weight = h("input", { id: "ch-weight", type: "number", min: 0, max: 10000, value: 1 });
  const priority = h("input", { id: "ch-priority", type: "number", min: -1000, max: 1000, value: 0 });
  const key = h("input", { id: "ch-key", type: "password", autocomplete: "off", placeholder: "new key (stored sealed, never shown again)" });
  const submit = h("button", { type: "submit", id: "ch-submit" }, "Add channel");
  const result = h("div", { id: "ch-test-result" });
  const list = h("div");
  let editing = null;
  const edit = (c) => {
    editing = c;
    name.value = c.name; kind.value = c.kind; kind.disabled = true; baseUrl.value = c.base_url || "";
    models.value = showServes(c.models); weight.value = c.weight; priority.value = c.priority; key.value = "";
    submit.textContent = `Save ${c.name}`;
  };
  const load = async () => {
    const end = new Date().toISOString().slice(0, 10);
    const start = new Date(Date.now() - 29 * 86400000).toISOString().slice(0, 10);
    const [r, usage] = await Promise.all([api("/v1/admin/channels"), api(`/v1/admin/usage?start=${start}&end=${end}&group_by=channel`)]);
    const spend = new Map(usage.data.map((u) => [u.channel, u.cost]));
    const act = (label, cls, fn) => h("button", { class: cls, type: "button", "aria-label": label, onclick: () => attempt(fn) }, label.split(" ")[0]);
    const rows = r.data.map((c) => {
      const latest = c.keys.map((k) => k.stats).filter((s) => s.last_used_at).sort((a, b) => (a.last_used_at < b.last_used_at ? 1 : -1))[0];
      const lastError = c.keys.map((k) => k.disabled_reason || k.stats.last_error).find(Boolean);
      return h("tr", { "data-channel": c.name },
        h("td", {}, h("strong", {}, c.name), h("div", { class: "muted" }, `${c.kind} · ${c.source}`)),
        h("td", {}, c.enabled ? "enabled" : "disabled"),
        h("td", {}, `${c.weight} / ${c.priority}`),
        h("td", {}, showServes(c.models)),
        h("td", {}, c.keys.length ? c.keys.map((k) => h("div", { class: `mono key-${k.status}` }, `…${k.last4} ${k.status}`)) : "no key"),
        h("td", {}, latest && latest.last_latency_ms !== null ? `${fmt(latest.last_latency_ms)} ms` : "—"),
        h("td", { class: "mono" }, lastError || ""),
        h("td", {}, fmt(spend.get(c.id) || 0)),
        h("td", {},
          act(`Test ${c.name}`, "secondary", async () => {
            result.replaceChildren(h("p", {}, `Testing ${c.name}…`));
            const t = await api(`/v1/admin/channels/${c.id}/test`, { method: "POST", body: {} });
            result.replaceChildren(h("p", { class: t.ok ? "pos" : "neg" }, t.ok ? `${c.name}: OK in ${fmt(t.latency_ms)} ms — ${t.answer}` : `${c.name}: failed (${t.status}) ${t.error}`));
            await load();
          }),
          act(`Edit ${c.name}`, "secondary", async () => edit(c)),
          c.enabled
            ? act(`Disable ${c.name}`, "danger", async () => { await api(`/v1/admin/channels/${c.id}`, { method: "PATCH", body: { enabled: false } }); await load(); })
            : act(`Enable ${c.name}`, "secondary", async () => { await api(`/v1/admin/channels/${c.id}`, { method: "PATCH", body: { enabled: true } }); await load(); })));
    });
    list.replaceChildren(table(["Channel", "Status", "Weight / priority", "Models", "Keys", "Latency", "Last error", "Spend (30 d)", ""], rows));
  };
  const form = h("form", { class: "row", onsubmit: async (e) => {
    e.preventDefault();
    const fields = { name: name.value, base_url: baseUrl.value, models: parseServes(models.value), weight: Number(weight.value), priority: Number(priority.value) };
    const done = await attempt(async () => {
      if (editing) {
        await api(`/v1/admin/channels/${editing.id}`, { method: "PATCH", body: fields });
        if (key.value) await api(`/v1/admin/channels/${editing.id}/keys`, { method: "POST", body: { key: key.value } });
      } else {
        if (!fields.base_url) delete fields.base_url;
        await api("/v1/admin/channels", { method: "POST", body: Object.assign(fields, { kind: kind.value, keys: key.value ? [key.value] : [] }) });
      }
      return true;
    });
    if (done) {
      editing = null; kind.disabled = false; submit.textContent = "Add channel";
      for (const i of [name, baseUrl, models, key]) i.value = "";
      await attempt(load);
    }
  } }, field("Name", name), field("Kind", kind), field("Base URL", baseUrl), field("Models (model=upstream, …)", models),
    field("Weight", weight), field("Priority", priority), field("Key", key), submit);
  body.replaceChildren(form, result, list);
  await load();
}

async function adminModels(body) {
  const name = h("input", { id: "model-name", required: true });
  const kind = h("select", { id: "model-kind" }, ["chat", "image", "video", "embedding", "speech", "transcription", "moderation"].map((k) => h("option", { value: k }, k)));
  const input = h("input", { id: "model-input", type: "number", min: 0, value: 0 });
  const output = h("input", { id: "model-output", type: "number", min: 0, value: 0 });
  const list = h("div");
  const load = async () => {
    const r = await api("/v1/admin/models");
    list.replaceChildren(table(["Model", "Kind", "Input / 1M", "Output / 1M", "Routes", "Revision", "Status", ""], r.data.map((m) => {
      const inP = h("input", { type: "number", min: 0, value: m.price.input_per_1m || 0, "aria-label": `Input price of ${m.name}`, class: "narrow" });
      const outP = h("input", { type: "number", min: 0, value: m.price.output_per_1m || 0, "aria-label": `Output price of ${m.name}`, class: "narrow" });
      const patch = (b) => attempt(async () => { await api(`/v1/admin/models/${encodeURIComponent(m.name)}`, { method: "PATCH", body: b }); await load(); });
      return h("tr", { "data-model": m.name },
        h("td", {}, h("strong", {}, m.name), h("div", { class: "muted" }, m.source)),
        h("td", {}, m.kind), h("td", {}, inP), h("td", {}, outP),
        h("td", {}, m.channels.map((c) => h("div", {}, `${c.channel} → ${c.upstream} (p${c.priority})`))),
        h("td", {}, fmt(m.revision)), h("td", {}, m.enabled ? "enabled" : "disabled"),
        h("td", {},
          h("button", { type: "button", class: "secondary", "aria-label": `Save price of ${m.name}`, onclick: () => patch({ price: Object.assign({}, m.price, { input_per_1m: Number(inP.value), output_per_1m: Number(outP.value) }) }) }, "Save price"),
          m.enabled
            ? h("button", { type: "button", class: "danger", "aria-label": `Disable ${m.name}`, onclick: () => patch({ enabled: false }) }, "Disable")
            : h("button", { type: "button", class: "secondary", "aria-label": `Enable ${m.name}`, onclick: () => patch({ enabled: true }) }, "Enable")));
    })));
  };
  body.replaceChildren(h("form", { class: "row", onsubmit: async (e) => {
    e.preventDefault();
    const r = await attempt(() => api("/v1/admin/models", { method: "POST", body: { name: name.value, kind: kind.value, price: { input_per_1m: Number(input.value), output_per_1m: Number(output.value) } } }));
    if (r) { name.value = ""; await attempt(load); }
  } }, field("Name", name), field("Kind", kind), field("Input credits / 1M tokens", input), field("Output credits / 1M tokens", output),
    h("button", { type: "submit", id: "model-submit" }, "Add model")), list);
  await load();
}

window.addEventListener("hashchange", render);
window.addEventListener("DOMContentLoaded", render);
