// The try-it page: submit a photo + hero video to this gateway, follow the job's server-sent
// events, play and download the result. Plain browser APIs only (fetch, FormData, streams).
"use strict";

const $ = (id) => document.getElementById(id);
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const picked = { source: null, driving: null };
let current = null; // { id, abort: AbortController }

function token() {
  const value = $("token").value.trim();
  sessionStorage.setItem("dynamics-token", value);
  return value;
}

function authHeaders() {
  const t = token();
  return t ? { Authorization: `Bearer ${t}` } : {};
}

// The stable error code from either body shape: RFC 9457 problem+json with a top-level `code`,
// or {"error": {"code", "message"}}.
async function errorOf(response) {
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON */ }
  if (body && typeof body.code === "string") {
    return { code: body.code, message: body.detail || body.message || body.title || "" };
  }
  if (body && body.error && typeof body.error.code === "string") {
    return { code: body.error.code, message: body.error.message || "" };
  }
  return { code: `http_${response.status}`, message: response.statusText };
}

function say(text, isError = false) {
  $("message").textContent = text;
  $("message").className = isError ? "error" : "";
}

function showPreview(kind, blob) {
  const el = kind === "source" ? $("source-preview") : $("driving-preview");
  if (el.dataset.url) URL.revokeObjectURL(el.dataset.url);
  el.dataset.url = URL.createObjectURL(blob);
  el.src = el.dataset.url;
  el.hidden = false;
  if (kind === "driving") el.play().catch(() => {});
}

function refreshSubmit() {
  $("submit").disabled = !(picked.source && picked.driving) || current !== null;
}

function pick(kind, file) {
  picked[kind] = file;
  if (file) showPreview(kind, file);
  refreshSubmit();
}

async function loadDemo() {
  say("loading the demo media ...");
  try {
    for (const [kind, path, name] of [["source", "/web/demo/source.jpg", "source.jpg"],
                                      ["driving", "/web/demo/hero.mp4", "hero.mp4"]]) {
      const response = await fetch(path);
      if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
      const blob = await response.blob();
      pick(kind, new File([blob], name, { type: blob.type }));
    }
    say("demo media ready: a photo and a 2 s hero clip");
  } catch (err) {
    say(`could not load the demo media: ${err.message}`, true);
  }
}

// Same-origin path of a result URL, so the page works whatever public URL the gateway signs.
function localUrl(url) {
  const u = new URL(url, location.href);
  return u.pathname + u.search;
}

function render(job) {
  $("job").hidden = false;
  $("job-id").textContent = job.id;
  const status = $("status");
  status.textContent = job.status;
  status.className = `badge ${job.status}`;
  $("stage").textContent = job.stage && job.stage !== job.status ? `stage: ${job.stage}` : "";
  $("frames").textContent = job.frames_total ? `${job.frames_done}/${job.frames_total} frames` : "";
  const queued = job.status === "queued" && job.queue_position != null
    ? ` (position ${job.queue_position})` : "";
  $("eta").textContent = job.eta_seconds != null && !TERMINAL.has(job.status)
    ? `ETA ${Math.round(job.eta_seconds)} s${queued}` : queued;
  const percent = Math.round((job.progress || 0) * 100);
  $("bar-fill").style.width = `${percent}%`;
  $("percent").textContent = `${percent} %`;
  $("percent").dataset.value = String(percent);

  const error = $("error");
  error.hidden = !job.error;
  if (job.error) error.textContent = `${job.error.code}: ${job.error.message}`;

  // While queued or running again after a failed attempt: why that attempt failed.
  const retrying = $("retrying");
  const retry = TERMINAL.has(job.status) ? null : job.retrying;
  retrying.hidden = !retry;
  if (retry) retrying.textContent = `retrying after: ${retry.code}: ${retry.message}`;

  const timings = Object.entries(job.timings || {});
  $("timings").hidden = timings.length === 0;
  const body = $("timings").querySelector("tbody");
  body.replaceChildren(...timings.map(([stage, seconds]) => {
    const row = document.createElement("tr");
    const name = document.createElement("td");
    const value = document.createElement("td");
    name.textContent = stage;
    value.textContent = Number(seconds).toFixed(2);
    row.append(name, value);
    return row;
  }));

  if (job.status === "succeeded" && job.result_url && $("result").hidden) {
    const url = localUrl(job.result_url);
    $("result-video").src = url;
    $("download").href = url;
    $("download").setAttribute("download", `${job.id}.mp4`);
    $("noise").hidden = !job.random_weights;
    $("result").hidden = false;
  }
}

// One event stream, read with fetch so an Authorization header can go with it (EventSource
// cannot send one). Parsed per the SSE rules; `:` lines are heartbeats.
async function* sse(url, lastId, signal) {
  const headers = { Accept: "text/event-stream", ...authHeaders() };
  if (lastId != null) headers["Last-Event-ID"] = lastId;
  const response = await fetch(url, { headers, signal, cache: "no-store" });
  if (!response.ok) {
    const err = await errorOf(response);
    throw Object.assign(new Error(`${err.code}: ${err.message}`), { fatal: true });
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "", event = "", data = [], id = lastId, retry = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    const lines = buffer.split(/\r\n|\r|\n/);
    buffer = lines.pop();
    for (const line of lines) {
      if (line === "") {
        if (data.length) yield { event: event || "message", data: data.join("\n"), id, retry };
        event = ""; data = [];
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const name = colon < 0 ? line : line.slice(0, colon);
      let field = colon < 0 ? "" : line.slice(colon + 1);
      if (field.startsWith(" ")) field = field.slice(1);
      if (name === "event") event = field;
      else if (name === "data") data.push(field);
      else if (name === "id" && !field.includes("\0")) id = field;
      else if (name === "retry" && /^\d+$/.test(field)) retry = Number(field);
    }
  }
}

async function follow(jobId, signal) {
  let lastId = null, delay = 1000, drops = 0;
  while (!signal.aborted) {
    try {
      for await (const message of sse(`/v1/jobs/${jobId}/events`, lastId, signal)) {
        lastId = message.id;
        if (message.retry != null) delay = message.retry;
        if (message.event !== "job") continue;
        drops = 0;
        const job = JSON.parse(message.data);
        render(job);
        if (TERMINAL.has(job.status)) return job;
      }
    } catch (err) {
      if (signal.aborted) return null;
      if (err.fatal) throw err;
    }
    drops += 1;
    if (drops > 5) throw new Error("the event stream keeps dropping");
    say(`reconnecting to the event stream (${drops}) ...`);
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
  return null;
}

async function submit(event) {
  event.preventDefault();
  if (!picked.source || !picked.driving) return;
  const form = new FormData();
  form.append("seconds", $("seconds").value || "2");
  form.append("source", picked.source, picked.source.name);
  form.append("driving", picked.driving, picked.driving.name);
  $("submit").disabled = true;
  $("result").hidden = true;
  $("result-video").removeAttribute("src");
  say("uploading ...");
  try {
    const response = await fetch("/v1/jobs", { method: "POST", body: form, headers: authHeaders() });
    if (!response.ok) {
      const err = await errorOf(response);
      throw new Error(`${err.code}: ${err.message}`);
    }
    const job = await response.json();
    current = { id: job.id, abort: new AbortController() };
    render(job);
    $("cancel").hidden = false;
    say("queued; following its progress");
    const final = await follow(job.id, current.abort.signal);
    if (final) say(final.status === "succeeded" ? "done" : `the job ${final.status}`,
                   final.status !== "succeeded");
  } catch (err) {
    say(err.message, true);
  } finally {
    current = null;
    $("cancel").hidden = true;
    refreshSubmit();
  }
}

async function cancel() {
  if (!current) return;
  const response = await fetch(`/v1/jobs/${current.id}`, { method: "DELETE", headers: authHeaders() });
  if (!response.ok) {
    const err = await errorOf(response);
    say(`${err.code}: ${err.message}`, true);
  }
}

$("token").value = sessionStorage.getItem("dynamics-token") || "";
$("source").addEventListener("change", (e) => pick("source", e.target.files[0] || null));
$("driving").addEventListener("change", (e) => pick("driving", e.target.files[0] || null));
$("demo").addEventListener("click", loadDemo);
$("cancel").addEventListener("click", cancel);
$("job-form").addEventListener("submit", submit);
