// The callsim bridge console: live calls, a call's transcript/events/timeline, history,
// session settings and tools. Plain DOM, no framework; text goes in through textContent only.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, props = {}, ...kids) => {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") n.className = v; else if (k === "text") n.textContent = v; else n.setAttribute(k, v);
  }
  for (const k of kids) n.append(k);
  return n;
};

async function api(path, opts = {}) {
  const r = await fetch(path, {credentials: "same-origin", ...opts});
  if (r.status === 401) { location.reload(); throw new Error("signed out"); }
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
  return body;
}

const fmtDur = (s) => { s = Math.max(0, Math.floor(s)); return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`; };
const clip = (s, n = 300) => (s && s.length > n ? s.slice(0, n) + " …" : s || "");

// ------------------------------------------------------------------ live calls
let clockSkew = 0;        // server time - our time (s)
let calls = [];
let selected = null;      // {sid, es, lastSeq, t0, tEnd, marks, dropped}

async function refreshCalls() {
  try {
    const r = await api("/api/calls");
    clockSkew = r.now - Date.now() / 1000;
    calls = r.calls;
  } catch (e) { return; }
  const tbody = $("#calls tbody");
  tbody.replaceChildren(...calls.map((c) => {
    const b = el("button", {type: "button", class: "linklike", text: c.from_number || "(unknown)"});
    b.addEventListener("click", () => select(c.call_sid));
    const tr = el("tr", {"data-sid": c.call_sid}, el("td", {}, b), el("td", {text: c.to_number}),
      el("td", {class: "dur", "data-started": String(c.started), text: fmtDur(now() - c.started)}),
      el("td", {text: c.state}), el("td", {text: String(c.barge_ins)}), el("td", {text: String(c.tool_calls)}));
    if (selected && selected.sid === c.call_sid) tr.setAttribute("aria-current", "true");
    return tr;
  }));
  $("#no-calls").hidden = calls.length > 0;
  if (!selected && calls.length) select(calls[calls.length - 1].call_sid);
}
const now = () => Date.now() / 1000 + clockSkew;

function select(sid) {
  if (selected && selected.es) selected.es.close();
  selected = {sid, es: null, lastSeq: 0, t0: null, tEnd: null, marks: [], dropped: 0};
  $("#call").hidden = false;
  $("#call-sid").textContent = sid;
  $("#call-from").textContent = "";
  $("#call-status").textContent = "";
  $("#dropped").hidden = true;
  $("#transcript").replaceChildren();
  $("#events").replaceChildren();
  for (const tr of document.querySelectorAll("#calls tr[data-sid]"))
    tr.toggleAttribute("aria-current", tr.dataset.sid === sid);
  const es = new EventSource(`/api/feed/${encodeURIComponent(sid)}`);
  selected.es = es;
  $("#feed-state").textContent = "connecting…";
  es.onopen = () => { $("#feed-state").textContent = "feed live"; };
  es.onerror = () => { if (es.readyState !== EventSource.CLOSED) $("#feed-state").textContent = "feed reconnecting…"; };
  es.onmessage = (m) => { if (selected && selected.es === es) onEvent(JSON.parse(m.data)); };
  renderTimeline();
}

function onEvent(ev) {
  const s = selected;
  if (ev.seq !== undefined) { if (ev.seq <= s.lastSeq) return; s.lastSeq = ev.seq; }
  if (s.t0 === null) s.t0 = ev.t;
  switch (ev.kind) {
    case "call_started":
      s.t0 = ev.t;
      $("#call-from").textContent = `from ${ev.from_number || "(unknown)"} to ${ev.to_number || "?"}`;
      $("#call-status").textContent = "live";
      addEvent(ev, "call started", `voice ${ev.voice}`);
      break;
    case "call_ended":
      s.tEnd = ev.t;
      $("#call-status").textContent = `ended: ${ev.status} after ${fmtDur(ev.duration_s)}`;
      addEvent(ev, "call ended", `${ev.status}, ${ev.duration_s} s`);
      s.es.close();
      $("#feed-state").textContent = "call over";
      search();  // the history now holds it
      break;
    case "transcript": transcriptLine(ev); break;
    case "barge_in": {
      const cut = (ev.truncates || []).map((t) => `reply cut at ${t.audio_end_ms} of ${t.received_ms} ms`).join("; ");
      const talk = ev.talk_over_ms === null || ev.talk_over_ms === undefined ? "" : `talk-over ~${ev.talk_over_ms} ms; `;
      addEvent(ev, "barge-in", talk + (cut || "nothing was playing"));
      break;
    }
    case "tool_call": addEvent(ev, `tool call ${ev.name}`, clip(ev.arguments)); break;
    case "tool_result": addEvent(ev, `tool result ${ev.name}${ev.ok ? "" : " (error)"}`, `${clip(ev.output)} (${ev.ms} ms)`); break;
    case "error": addEvent(ev, `error from ${ev.source}`, `${ev.code || ""} ${ev.message || ""}`); break;
    case "openai_fault": addEvent(ev, "OpenAI fault", ev.reason); break;
    case "transferred": addEvent(ev, "transferred", `to ${ev.to}: Twilio ends the stream next`); break;
    case "transfer_failed": addEvent(ev, "transfer failed", `${ev.error}; the call goes on`); break;
    case "dropped":
      s.dropped += ev.n;
      $("#dropped").hidden = false;
      $("#dropped").textContent = `${s.dropped} events dropped: this console fell behind the call.`;
      break;
    default: addEvent(ev, ev.kind, "");
  }
  if (ev.kind !== "dropped") { s.marks.push({t: ev.t, kind: ev.kind, role: ev.role, label: markLabel(ev)}); renderTimeline(); }
}

function markLabel(ev) {
  if (ev.kind === "transcript") return `${ev.role}: ${clip(ev.text, 80)}`;
  if (ev.kind === "tool_call" || ev.kind === "tool_result") return `${ev.kind.replace("_", " ")} ${ev.name}`;
  return ev.kind.replace("_", " ");
}

function offset(t) { return selected && selected.t0 !== null ? `+${(t - selected.t0).toFixed(1)} s` : ""; }

function addEvent(ev, what, detail) {
  const cls = ["error", "openai_fault", "transfer_failed"].includes(ev.kind) ? "ev bad" : `ev ${ev.kind}`;
  $("#events").append(el("li", {class: cls}, el("span", {class: "t", text: offset(ev.t)}), " ",
    el("strong", {text: what}), detail ? " " : "", detail ? el("span", {class: "detail", text: detail}) : ""));
}

function transcriptLine(ev) {
  const list = $("#transcript");
  let li = list.querySelector(`li[data-item="${CSS.escape(ev.item_id)}"]`);
  const kids = [el("span", {class: "t", text: offset(ev.t)}), " ",
    el("strong", {text: ev.role === "caller" ? "Caller" : ev.role === "assistant" ? "Assistant" : ev.role}), " ",
    el("span", {class: "text", text: ev.text})];
  if (ev.truncated) kids.push(" ", el("em", {class: "cut", text: `(interrupted: the caller heard ${ev.audio_end_ms} ms)`}));
  if (li) { li.replaceChildren(...kids); li.className = `line ${ev.role}${ev.truncated ? " truncated" : ""}`; }
  else list.append(el("li", {class: `line ${ev.role}${ev.truncated ? " truncated" : ""}`, "data-item": ev.item_id}, ...kids));
}

function renderTimeline() {
  const box = $("#timeline");
  const s = selected;
  if (!s || s.t0 === null) { box.replaceChildren(); return; }
  const end = s.tEnd || now();
  const span = Math.max(end - s.t0, 1);
  box.replaceChildren(...s.marks.map((m) => {
    const mark = el("span", {class: `mark ${m.kind} ${m.role || ""}`, title: `${offset(m.t)} ${m.label}`});
    mark.style.left = `${(100 * (m.t - s.t0) / span).toFixed(2)}%`;  // CSSOM: allowed by the page's CSP
    return mark;
  }), el("span", {class: "axis", text: fmtDur(span)}));
  box.setAttribute("aria-label", `Timeline of the call: ${s.marks.length} events over ${fmtDur(span)}`);
}

function tick() {
  for (const td of document.querySelectorAll("#calls td.dur")) td.textContent = fmtDur(now() - Number(td.dataset.started));
  if (selected && !selected.tEnd) renderTimeline();
}

// ------------------------------------------------------------------ history
async function search(ev) {
  if (ev) ev.preventDefault();
  const q = new URLSearchParams();
  for (const [k, v] of new FormData($("#search"))) if (v) q.set(k, v);
  let r;
  try { r = await api(`/api/conversations?${q}`); } catch (e) { return; }
  $("#conversations tbody").replaceChildren(...r.conversations.map((c) => {
    const b = el("button", {type: "button", class: "linklike", text: (c.started_at || "").replace("T", " ").slice(0, 19)});
    b.addEventListener("click", () => showConversation(c.call_sid));
    return el("tr", {"data-sid": c.call_sid}, el("td", {}, b), el("td", {text: c.from_number || ""}),
      el("td", {text: c.to_number || ""}), el("td", {text: c.status}), el("td", {text: String(c.utterance_count)}),
      el("td", {text: clip(c.match, 120)}));
  }));
}

async function showConversation(sid) {
  const c = await api(`/api/conversations/${encodeURIComponent(sid)}`);
  $("#conversation").hidden = false;
  $("#conv-sid").textContent = `${sid} from ${c.from_number || "(unknown)"}`;
  $("#conv-lines").replaceChildren(...c.utterances.map((u) => el("li", {class: `line ${u.role}`},
    el("strong", {text: u.role === "caller" ? "Caller" : u.role === "assistant" ? "Assistant" : u.role}), " ",
    el("span", {class: "text", text: u.text}),
    u.truncated ? el("em", {class: "cut", text: ` (interrupted: the caller heard ${u.audio_end_ms} ms)`}) : "")));
}

// ------------------------------------------------------------------ settings and tools
const NUMERIC = ["vad_threshold", "vad_prefix_padding_ms", "vad_silence_duration_ms"];

function fillSettings(view) {
  const f = $("#settings-form");
  for (const [k, v] of Object.entries(view.values)) {
    const input = f.elements.namedItem(k);
    if (!input || k === "tools") continue;
    if (input.type === "checkbox") input.checked = v; else input.value = v;
    input.closest("label").classList.toggle("overridden", view.overridden.includes(k));
  }
  $("#tool-switches").replaceChildren(el("legend", {text: "Tools offered to the model"}),
    ...view.tools_available.map((name) => {
      const cb = el("input", {type: "checkbox", name: "tool", value: name});
      cb.checked = view.values.tools.includes(name);
      return el("label", {}, cb, ` ${name}`);
    }));
}

async function loadSettings() { try { fillSettings(await api("/api/settings")); } catch (e) { /* signed out */ } }

async function saveSettings(ev) {
  ev.preventDefault();
  const f = $("#settings-form");
  const body = {tools: [...f.querySelectorAll("input[name=tool]:checked")].map((c) => c.value)};
  for (const k of ["instructions", "voice", "vad_type", "vad_eagerness", ...NUMERIC]) {
    const v = f.elements.namedItem(k).value;
    body[k] = NUMERIC.includes(k) ? Number(v) : v;
  }
  body.interrupt_response = f.elements.namedItem("interrupt_response").checked;
  await settingsCall("PUT", body);
}

async function settingsCall(method, body) {
  const msg = $("#settings-msg");
  try {
    const r = await api("/api/settings", {method, headers: {"Content-Type": "application/json"},
      body: body ? JSON.stringify(body) : undefined});
    fillSettings(r);
    msg.className = "ok";
    msg.textContent = r.changed.length ? `Saved (${r.changed.join(", ")}): new calls use it.` : "Nothing changed.";
    loadTools();
  } catch (e) { msg.className = "error"; msg.textContent = `Not saved: ${e.message}`; }
}

async function loadTools() {
  let r;
  try { r = await api("/tools"); } catch (e) { return; }
  $("#tool-list").replaceChildren(...r.tools.map((t) => el("details", {class: "tool"},
    el("summary", {}, el("code", {text: t.name}), ` ${t.enabled ? "" : "(off) "}${t.description}`),
    el("pre", {text: JSON.stringify(t.parameters, null, 2)}))));
}

// ------------------------------------------------------------------ phone numbers
async function loadNumbers() {
  const msg = $("#numbers-msg"), table = $("#numbers-table");
  let r;
  try { r = await api("/api/numbers"); } catch (e) { msg.textContent = `Numbers: ${e.message}`; table.hidden = true; return; }
  msg.textContent = `Calls to a number reach this bridge when its voice webhook is ${r.webhook_url}.`;
  table.hidden = false;
  $("#numbers-table tbody").replaceChildren(...r.numbers.map((n) => {
    const action = n.points_here ? el("span", {class: "ok", text: "points here"})
      : el("button", {type: "button", "data-sid": n.sid, text: "Point here"});
    if (!n.points_here) action.addEventListener("click", () => pointHere(n.sid, n.phone_number));
    return el("tr", {"data-sid": n.sid}, el("td", {text: n.phone_number}), el("td", {text: n.friendly_name || ""}),
      el("td", {}, el("code", {text: n.voice_url || "(none)"})), el("td", {}, action));
  }));
}

async function pointHere(sid, number) {
  const msg = $("#numbers-msg");
  if (!confirm(`Send calls to ${number} to this bridge?`)) return;
  try {
    await api(`/api/numbers/${encodeURIComponent(sid)}/point-here`, {method: "POST"});
    await loadNumbers();
    msg.textContent = `${number} now points at this bridge.`;
  } catch (e) { msg.className = "error"; msg.textContent = `Not changed: ${e.message}`; }
}

document.addEventListener("DOMContentLoaded", () => {
  $("#search").addEventListener("submit", search);
  $("#settings-form").addEventListener("submit", saveSettings);
  $("#settings-reset").addEventListener("click", () => settingsCall("DELETE"));
  refreshCalls(); search(); loadSettings(); loadTools(); loadNumbers();
  setInterval(refreshCalls, 1000);
  setInterval(tick, 500);
});
