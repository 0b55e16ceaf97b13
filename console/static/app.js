// Vigil console: a page on top of the same JSON API that /openapi.json describes. No inline script (CSP).
"use strict";

const state = { me: null, alert: null };
const $ = (id) => document.getElementById(id);

async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && state.me) headers["X-CSRF-Token"] = state.me.csrf_token;
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body),
                                       credentials: "same-origin" });
  if (response.status === 204) return null;
  const data = await response.json().catch(() => ({ detail: response.statusText }));
  if (!response.ok) {
    if (response.status === 401 && path !== "/api/login") showLogin();
    const error = new Error(data.detail || response.statusText);
    error.status = response.status;
    throw error;
  }
  return data;
}

function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

function row(cells, attrs) {
  const tr = el("tr", null, attrs);
  for (const c of cells) tr.appendChild(c instanceof Node ? wrap(c) : el("td", c));
  return tr;
}

function wrap(node) { const td = el("td"); td.appendChild(node); return td; }

function when(iso) { return iso ? new Date(iso).toISOString().replace("T", " ").slice(0, 19) + " UTC" : ""; }

// ------------------------------------------------------------------ session

function showLogin() {
  state.me = null;
  for (const v of document.querySelectorAll(".view")) v.hidden = true;
  $("nav").hidden = true; $("who").hidden = true; $("login").hidden = false;
}

const VIEWS = [
  { id: "review", label: "Review", roles: ["reviewer"], load: loadAlerts },
  { id: "watchlist", label: "Watchlist", roles: ["enroller", "authoriser"], load: loadWatchlist },
  { id: "deployments", label: "Deployments", roles: ["authoriser", "reviewer", "auditor"], load: loadDeployments },
  { id: "audit", label: "Audit", roles: ["auditor"], load: loadAudit },
  { id: "users", label: "Users", roles: ["admin"], load: loadUsers },
];

function showApp() {
  $("login").hidden = true;
  $("who-name").textContent = `${state.me.name} (${state.me.roles.join(", ")})`;
  $("who").hidden = false;
  const nav = $("nav");
  nav.replaceChildren();
  const mine = VIEWS.filter((v) => v.roles.some((r) => state.me.roles.includes(r)));
  for (const view of mine) {
    const b = el("button", view.label, { type: "button", id: `nav-${view.id}` });
    b.addEventListener("click", () => openView(view));
    nav.appendChild(b);
  }
  nav.hidden = false;
  if (mine.length) openView(mine[0]);
}

function openView(view) {
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== view.id;
  for (const b of $("nav").children) b.classList.toggle("current", b.id === `nav-${view.id}`);
  view.load().catch(report);
}

function report(error) { console.error(error); }

const has = (role) => state.me.roles.includes(role);

function button(label, onClick, attrs) {
  const b = el("button", label, { type: "button", ...(attrs || {}) });
  b.addEventListener("click", onClick);
  return b;
}

async function start() {
  try {
    state.me = await api("GET", "/api/me");
    showApp();
  } catch (e) {
    showLogin();
  }
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("login-error").textContent = "";
  try {
    state.me = await api("POST", "/api/login", { name: $("login-name").value, password: $("login-password").value });
    $("login-password").value = "";
    showApp();
  } catch (e) {
    $("login-error").textContent = e.message;
  }
});

$("logout").addEventListener("click", async () => {
  try { await api("POST", "/api/logout"); } finally { showLogin(); }
});

// ------------------------------------------------------------------ review

async function loadAlerts() {
  const status = $("alert-status").value;
  const alerts = await api("GET", "/api/alerts" + (status ? `?status=${status}` : ""));
  const body = $("alerts-table").tBodies[0];
  body.replaceChildren();
  for (const a of alerts) {
    const tr = row([when(a.seen_at), a.person_id, a.camera_id, a.score.toFixed(3), a.status,
                    `${a.confirmed_by.join(", ") || "-"} (${a.confirmed_by.length}/${a.confirmations_required})`],
                   { "data-alert-id": a.alert_id, class: "alert-row", tabindex: "0" });
    tr.addEventListener("click", () => showAlert(a.alert_id).catch(report));
    body.appendChild(tr);
  }
  if (!alerts.length) body.appendChild(row(["no alerts"], { class: "empty" }));
}

async function showAlert(alertId) {
  const a = await api("GET", `/api/alerts/${encodeURIComponent(alertId)}`);
  state.alert = a;
  $("alert-title").textContent = `${a.person_id} on ${a.camera_id}`;
  $("img-crop").src = a.images.crop;
  $("img-snapshot").src = a.images.snapshot;
  const enrolled = $("enrolled-figures");
  enrolled.replaceChildren();
  for (const url of a.images.enrolled) enrolled.appendChild(el("img", null, { src: url, alt: "enrolled photo", class: "enrolled" }));
  enrolled.appendChild(el("figcaption", a.images.enrolled.length ? "Enrolled" : "no enrolled photo left"));
  const facts = $("alert-facts");
  facts.replaceChildren();
  const pairs = [["Status", a.status], ["Score", `${a.score.toFixed(3)} (threshold ${a.threshold})`],
                 ["Track", a.track_id ? `${a.track_id} (${a.track_faces} faces, score ${a.track_score?.toFixed(3)})` : "-"],
                 ["Seen at", when(a.seen_at)], ["Camera", a.camera_id], ["Deployment", a.deployment_id ? `${a.deployment_id} (case ${a.case})` : "-"],
                 ["Run", a.run_id || "live"], ["Confirmed by", a.confirmed_by.join(", ") || "nobody yet"],
                 ["Rejected by", a.rejected_by || "-"], ["Alert id", a.alert_id]];
  for (const [k, v] of pairs) { facts.appendChild(el("dt", k)); facts.appendChild(el("dd", v)); }
  const isOpen = a.status === "open";
  $("confirm").disabled = !isOpen || a.confirmed_by.includes(state.me.name);
  $("reject").disabled = !isOpen;
  $("decision-status").textContent = "";
  $("alert-detail").hidden = false;
}

$("decision-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const decision = event.submitter ? event.submitter.value : "confirm";
  try {
    const a = await api("POST", `/api/alerts/${encodeURIComponent(state.alert.alert_id)}/decision`,
                        { decision, note: $("decision-note").value || null });
    $("decision-note").value = "";
    await showAlert(a.alert_id);
    $("decision-status").textContent = a.status === "confirmed" ? `Confirmed by ${a.confirmed_by.join(" and ")}`
      : a.status === "rejected" ? `Rejected by ${a.rejected_by}`
      : `Your confirmation is recorded (${a.confirmed_by.length}/${a.confirmations_required}); a second reviewer must confirm`;
    await loadAlerts();
  } catch (e) {
    $("decision-status").textContent = e.message;
  }
});

$("alert-status").addEventListener("change", () => loadAlerts().catch(report));
$("alerts-refresh").addEventListener("click", () => loadAlerts().catch(report));

// ------------------------------------------------------------------ audit

async function loadAudit() {
  const params = new URLSearchParams();
  for (const f of ["person", "actor", "action", "deployment"]) if ($(`audit-${f}`).value) params.set(f, $(`audit-${f}`).value);
  const events = await api("GET", "/api/audit?" + params);
  const body = $("audit-table").tBodies[0];
  body.replaceChildren();
  for (const e of events.reverse()) {
    body.appendChild(row([e.seq ?? "pending", when(e.produced_at), e.actor, e.action, e.subject, e.reason, JSON.stringify(e.details)]));
  }
}

$("audit-form").addEventListener("submit", (event) => { event.preventDefault(); loadAudit().catch(report); });

$("audit-verify").addEventListener("click", async () => {
  $("audit-result").textContent = "verifying ...";
  try {
    const r = await api("GET", "/api/audit/verify");
    $("audit-result").textContent = r.ok
      ? `The chain holds: ${r.events} sealed events verify, ${r.pending} pending, ${r.anchors} anchor(s) checked. ${r.anchor_note}`
      : `The chain breaks at ${r.first_break} (${r.breaks.length} break(s) in all)`;
    $("audit-result").classList.toggle("bad", !r.ok);
  } catch (e) {
    $("audit-result").textContent = e.message;
  }
});

// ------------------------------------------------------------------ watchlist

async function loadWatchlist() {
  const [persons, proposals] = await Promise.all([api("GET", "/api/watchlist"), api("GET", "/api/watchlist/proposals")]);
  const people = $("persons-table").tBodies[0];
  people.replaceChildren();
  for (const p of persons) {
    const remove = button("Remove", async () => {
      const reason = window.prompt(`Why remove ${p.person_id}? (recorded in the audit)`);
      if (!reason) return;
      try {
        const r = await api("POST", `/api/watchlist/${encodeURIComponent(p.person_id)}/remove`, { reason });
        $("watchlist-status").textContent = `removed ${r.person_id}: ${r.entries} vector(s), ${r.photos} photo(s) erased`;
        await loadWatchlist();
      } catch (e) { $("watchlist-status").textContent = e.message; }
    }, { class: "danger" });
    people.appendChild(row([p.person_id, p.entries, when(p.expires_at), p.enrolled_by.join(", "), p.sources.join("; "), remove]));
  }
  const body = $("proposals-table").tBodies[0];
  body.replaceChildren();
  for (const p of proposals) {
    const photos = el("span");
    if (has("authoriser")) for (const url of p.photos) photos.appendChild(el("img", null, { src: url, alt: "proposed photo", class: "thumb" }));
    if (!photos.children.length) photos.textContent = p.status === "pending" ? `${p.photos.length}` : "deleted";
    const actions = el("span");
    if (p.status === "pending" && has("authoriser")) {
      const own = p.proposed_by === state.me.name;
      for (const decision of ["approve", "reject"]) {
        actions.appendChild(button(decision === "approve" ? "Approve" : "Reject", async () => {
          try {
            const r = await api("POST", `/api/watchlist/proposals/${p.proposal_id}/decision`, { decision });
            $("watchlist-status").textContent = r.status === "approved"
              ? `approved: ${r.enrolled} photo(s) enrolled${Object.keys(r.refused).length ? `, refused: ${Object.values(r.refused).join("; ")}` : ""}`
              : "rejected";
            await loadWatchlist();
          } catch (e) { $("watchlist-status").textContent = e.message; }
        }, own ? { disabled: "", title: "nobody decides on their own proposal" } : { class: decision === "reject" ? "danger" : "" }));
      }
    }
    const status = p.status === "pending" ? "pending" : `${p.status} by ${p.decided_by}`;
    body.appendChild(row([when(p.proposed_at), p.person_id, p.reason, when(p.expires_at), p.proposed_by, photos, status, actions]));
  }
  $("proposal-form").hidden = !has("enroller");
}

function base64Of(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",")[1]);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

$("proposal-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const photos = await Promise.all([...$("proposal-photos").files].map(async (f) => ({ data: await base64Of(f) })));
    const p = await api("POST", "/api/watchlist/proposals", {
      person_id: $("proposal-person").value, reason: $("proposal-reason").value, source: $("proposal-source").value || null,
      expires: $("proposal-expires").value, photos });
    $("watchlist-status").textContent = `proposed ${p.person_id}; an authoriser must approve it`;
    $("proposal-form").reset();
    await loadWatchlist();
  } catch (e) { $("watchlist-status").textContent = e.message; }
});

// ------------------------------------------------------------------ deployments

async function loadDeployments() {
  const deployments = await api("GET", "/api/deployments");
  const body = $("deployments-table").tBodies[0];
  body.replaceChildren();
  for (const d of deployments.reverse()) {
    const end = d.ended_at || !has("authoriser") ? "" : button("End", async () => {
      const reason = window.prompt(`Why end ${d.deployment_id}? (recorded in the audit)`);
      if (!reason) return;
      try {
        await api("POST", `/api/deployments/${encodeURIComponent(d.deployment_id)}/end`, { reason });
        await loadDeployments();
      } catch (e) { $("deployment-status").textContent = e.message; }
    }, { class: "danger" });
    const stateText = d.ended_at ? `ended by ${d.ended_by}` : (new Date(d.ends_at) < new Date() ? "over" : "active");
    body.appendChild(row([d.deployment_id, d.case, d.purpose, d.cameras.join(", "),
                          `${when(d.starts_at)} - ${when(d.ends_at)}`, d.authorised_by, stateText, end]));
  }
  $("deployment-form").hidden = !has("authoriser");
}

$("deployment-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const list = (text) => text.split(",").map((x) => x.trim()).filter(Boolean);
  try {
    const d = await api("POST", "/api/deployments", {
      case: $("deployment-case").value, purpose: $("deployment-purpose").value, cameras: list($("deployment-cameras").value),
      ends_at: new Date($("deployment-ends").value).toISOString(),
      persons: $("deployment-persons").value ? list($("deployment-persons").value) : null });
    $("deployment-status").textContent = `started ${d.deployment_id}`;
    $("deployment-form").reset();
    await loadDeployments();
  } catch (e) { $("deployment-status").textContent = e.message; }
});

// ------------------------------------------------------------------ users

const ROLES = ["admin", "authoriser", "enroller", "reviewer", "auditor"];

async function loadUsers() {
  const users = await api("GET", "/api/users");
  const body = $("users-table").tBodies[0];
  body.replaceChildren();
  for (const u of users) {
    const toggle = el("button", u.disabled ? "Enable" : "Disable", { type: "button" });
    toggle.addEventListener("click", () => api("PATCH", `/api/users/${u.name}`, { disabled: !u.disabled })
      .then(loadUsers).catch((e) => { $("user-status").textContent = e.message; }));
    body.appendChild(row([u.name, u.roles.join(", "), u.disabled ? "disabled" : "active", toggle]));
  }
  const box = $("user-roles");
  if (box.querySelectorAll("input").length === 0) {
    for (const r of ROLES) {
      const label = el("label", ` ${r}`);
      label.prepend(el("input", null, { type: "checkbox", value: r }));
      box.appendChild(label);
    }
  }
}

$("user-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const roles = [...$("user-roles").querySelectorAll("input:checked")].map((i) => i.value);
  try {
    await api("POST", "/api/users", { name: $("user-name").value, password: $("user-password").value, roles });
    $("user-status").textContent = `added ${$("user-name").value}`;
    $("user-password").value = "";
    await loadUsers();
  } catch (e) {
    $("user-status").textContent = e.message;
  }
});

start();
