// Amarula dashboard: plain DOM, no dependencies. Every value from the API
// is rendered with textContent (never innerHTML). The key stays in this
// tab's sessionStorage.
"use strict";

const $ = (sel) => document.querySelector(sel);
let key = sessionStorage.getItem("amarula-key") || "";
let eventsProfile = "";
let eventsNext = "now";
let qrTimer = 0;

async function api(method, path, body, accept) {
  const headers = { Authorization: "Bearer " + key };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (accept) headers.Accept = accept;
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (accept === "image/png" && res.ok) return res.blob();
  const text = await res.text();
  const data = text ? JSON.parse(text) : null;
  if (!res.ok) {
    const err = new Error(data && data.error ? data.error.code + ": " + data.error.message : res.status + "");
    err.status = res.status;
    throw err;
  }
  return data;
}

function status(msg) { $("#status").textContent = msg; }

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text == null ? "" : String(text);
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

function button(td, label, fn) {
  const b = document.createElement("button");
  b.textContent = label;
  b.addEventListener("click", fn);
  td.appendChild(b);
}

function when(unix) { return unix ? new Date(unix * 1000).toLocaleString() : ""; }

async function loadNodes() {
  const body = $("#nodes tbody");
  try {
    const c = await api("GET", "/v1/cluster");
    body.replaceChildren();
    for (const n of c.nodes || []) {
      const tr = document.createElement("tr");
      [n.name, n.address, n.state, n.profiles, n.version].forEach((v) => cell(tr, v));
      body.appendChild(tr);
    }
    $("#cluster-note").textContent = "profiles: " + c.profiles_total + ", unassigned: " + c.unassigned;
  } catch (e) {
    body.replaceChildren();
    $("#cluster-note").textContent = e.status === 501 ? "single node" : e.message;
  }
}

async function loadProfiles() {
  const data = await api("GET", "/v1/profiles");
  const body = $("#profiles tbody");
  body.replaceChildren();
  for (const p of data.profiles) {
    const tr = document.createElement("tr");
    cell(tr, p.id);
    cell(tr, p.state, "state-" + p.state);
    cell(tr, p.owner);
    cell(tr, p.jid);
    cell(tr, p.push_name);
    cell(tr, when(p.connected_since));
    const actions = cell(tr, "");
    button(actions, "QR", () => showQR(p.id));
    button(actions, "Events", () => watchEvents(p.id));
    button(actions, p.state === "stopped" || p.state === "conflict" ? "Connect" : "Stop", async () => {
      const verb = p.state === "stopped" || p.state === "conflict" ? "connect" : "stop";
      try { await api("POST", "/v1/profiles/" + p.id + "/" + verb); refresh(); } catch (e) { status(e.message); }
    });
    body.appendChild(tr);
  }
}

async function showQR(id) {
  clearTimeout(qrTimer);
  $("#qr-view").hidden = false;
  $("#qr-profile").textContent = id;
  try {
    const blob = await api("GET", "/v1/profiles/" + id + "/qr", undefined, "image/png");
    const img = $("#qr-img");
    if (img.src) URL.revokeObjectURL(img.src);
    img.src = URL.createObjectURL(blob);
    $("#qr-note").textContent = "";
    qrTimer = setTimeout(() => showQR(id), 5000); // codes rotate
  } catch (e) {
    $("#qr-note").textContent = e.message;
  }
}

async function watchEvents(id) {
  eventsProfile = id;
  eventsNext = "0";
  $("#events-profile").textContent = "of " + id;
  $("#events tbody").replaceChildren();
  pollEvents();
}

async function pollEvents() {
  if (!eventsProfile) return;
  try {
    const page = await api("GET", "/v1/profiles/" + eventsProfile + "/events?limit=100&after=" + encodeURIComponent(eventsNext));
    const body = $("#events tbody");
    for (const ev of page.events) {
      const tr = document.createElement("tr");
      cell(tr, ev.id);
      cell(tr, ev.time);
      cell(tr, ev.type);
      cell(tr, JSON.stringify(ev.data), "data");
      body.prepend(tr);
    }
    while (body.children.length > 200) body.lastChild.remove();
    eventsNext = page.next;
  } catch (e) {
    status(e.message);
  }
}

async function refresh() {
  if (!key) { status("enter the admin key"); return; }
  try {
    await Promise.all([loadNodes(), loadProfiles()]);
    status("updated " + new Date().toLocaleTimeString());
  } catch (e) {
    status(e.message);
  }
}

$("#login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  key = $("#key").value;
  sessionStorage.setItem("amarula-key", key);
  $("#key").value = "";
  refresh();
});

$("#create").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const body = { id: $("#new-id").value };
  if ($("#new-url").value) body.webhook = { url: $("#new-url").value };
  try { await api("POST", "/v1/profiles", body); $("#new-id").value = ""; refresh(); } catch (e) { status(e.message); }
});

$("#qr-close").addEventListener("click", () => { clearTimeout(qrTimer); $("#qr-view").hidden = true; });

refresh();
setInterval(refresh, 5000);
setInterval(pollEvents, 2000);
