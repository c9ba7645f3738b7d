"use strict";

const $ = (id) => document.getElementById(id);
const DEBOUNCE_MS = 300;
const MAX_EXPLAIN_ATTEMPTS = 5;
// Word shading: blue supports the label, orange speaks against it; darker shades under a dark theme keep light text readable.
const HUES = {
  light: { supports: [96, 165, 250], against: [251, 146, 60] },
  dark: { supports: [29, 78, 216], against: [194, 65, 12] },
};

let model = null; // GET /model's answer; stays null when it failed
let current = null; // AbortController of the newest single-text request; older answers are dropped
let timer = 0;
let csv = "";
let batchBusy = false;
// One explanation request of this page at a time: the server's worker would otherwise spend itself on texts
// already typed over. While one runs, only the newest text waits for its turn.
let explaining = false;
let explainNext = null; // {text, controller} of the newest text whose explanation waits

// Any failure becomes one line: the server's {"error"}, else the HTTP status (a proxy's page), else "cannot reach".
async function api(path, body, signal) {
  const init = body === undefined ? { signal } : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), signal,
  };
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw signal?.aborted ? err : new Error("cannot reach the server");
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    // not JSON: described by its status below
  }
  if (response.ok && data !== null) return data;
  let message = typeof data?.error === "string" ? data.error : `HTTP ${response.status} ${response.statusText}`.trim();
  const retry = response.headers.get("Retry-After");
  const error = new Error(message);
  if (response.status === 503 && /^\d+$/.test(retry ?? "")) {
    error.message += ` (retry in ${retry} s)`;
    error.retryAfter = Number(retry);
  }
  throw error;
}

function say(element, text, isError = false) {
  element.textContent = text;
  element.classList.toggle("error", isError);
}

const percent = (p) => `${Math.round(p * 100)}%`;
const labelsOf = (probs) => model?.labels ?? Object.keys(probs);

// ---- one text ----

function clearResults() {
  for (const id of ["label", "confidence", "truncated", "legend", "explain-message"]) $(id).textContent = "";
  $("bars").replaceChildren();
  $("explanation").replaceChildren();
  if (model && !model.explain) $("legend").textContent = "This server gives no explanations.";
  markStale(false);
}

function markStale(stale) {
  $("result").classList.toggle("stale", stale);
  $("explanation").classList.toggle("stale", stale);
}

function onInput() {
  clearTimeout(timer);
  current?.abort();
  current = null;
  const text = $("text").value;
  if (!text.trim()) {
    clearResults();
    say($("message"), "Type a sentence to see its emotions.");
    return;
  }
  markStale(true);
  timer = setTimeout(() => predict(text), DEBOUNCE_MS);
}

async function predict(text) {
  const controller = new AbortController();
  current = controller;
  try {
    const data = await api("/predict", { text }, controller.signal);
    if (controller !== current) return;
    say($("message"), "");
    $("backend").textContent = data.backend; // the backend that answered
    showPrediction(data.predictions[0]);
    explain(text, controller); // not awaited: the bars never wait for the explanation
  } catch (err) {
    if (controller !== current) return; // superseded: a newer request owns the page
    clearResults();
    say($("message"), err.message, true);
  }
}

function showPrediction(prediction) {
  const { label, probs } = prediction;
  $("label").textContent = label;
  const calibration = !model ? ""
    : model.temperature === 1 ? " (probabilities as trained, not calibrated)"
    : ` (probabilities calibrated on validation, temperature ${model.temperature.toFixed(2)})`;
  $("confidence").textContent = `confidence ${percent(probs[label])}${calibration}`;
  $("truncated").textContent = prediction.truncated && model
    ? `Only the first ${model.max_length} word-pieces were read.` : "";
  $("bars").replaceChildren(...labelsOf(probs).map((name) => {
    const row = document.createElement("div");
    row.className = name === label ? "bar top" : "bar";
    row.dataset.label = name;
    const meter = document.createElement("meter");
    Object.assign(meter, { min: 0, max: 1, value: probs[name] });
    meter.setAttribute("aria-label", name);
    const nameCell = document.createElement("span");
    nameCell.textContent = name;
    const pct = document.createElement("span");
    pct.className = "pct";
    pct.textContent = percent(probs[name]);
    row.append(nameCell, meter, pct);
    return row;
  }));
  $("result").classList.remove("stale");
}

function explain(text, controller) {
  if (!model?.explain) return;
  explainNext = { text, controller };
  if (!explaining) runExplanations();
}

async function runExplanations() {
  explaining = true;
  while (explainNext) {
    const { text, controller } = explainNext;
    explainNext = null;
    if (controller === current) await explainOne(text, controller); // else typed over while it waited
  }
  explaining = false;
}

async function explainOne(text, controller) {
  for (let attempt = 1; ; attempt += 1) {
    try {
      // Not aborted when the text changes: the worker would finish it anyway, and the next one waits.
      const data = await api("/predict", { text, explain: true });
      if (controller !== current) return;
      say($("explain-message"), "");
      // Word offsets are those of the text as the model read it (its spelling step may have corrected it).
      showExplanation(data.predictions[0].read_as ?? text, data.predictions[0].explanation);
      return;
    } catch (err) {
      if (controller !== current) return;
      $("explanation").replaceChildren();
      $("legend").textContent = "";
      say($("explain-message"), `No explanation: ${err.message}`, true);
      // Busy (503 with Retry-After): ask again for this text, a few times at most, unless a newer one waits.
      if (err.retryAfter === undefined || attempt >= MAX_EXPLAIN_ATTEMPTS || explainNext) return;
      await new Promise((resolve) => setTimeout(resolve, err.retryAfter * 1000));
      if (controller !== current) return;
    }
  }
}

function swatch(text, rgb) {
  const span = document.createElement("span");
  span.className = "swatch";
  span.style.backgroundColor = `rgb(${rgb.join(", ")})`;
  span.textContent = text;
  return span;
}

// The shading in words too (colour alone reaches neither every eye nor a screen reader): the three strongest.
function strongest(words) {
  const top = [...words].sort((a, b) => Math.abs(b.score) - Math.abs(a.score)).slice(0, 3);
  const signed = (score) => `${score >= 0 ? "+" : "−"}${Math.abs(score).toFixed(2)}`;
  return top.length ? `Strongest: ${top.map((w) => `${w.text} ${signed(w.score)}`).join(", ")}.` : "";
}

function showExplanation(text, explanation) {
  const hues = HUES[matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light"];
  const largest = Math.max(0, ...explanation.words.map((w) => Math.abs(w.score))) || 1; // all zero: no shading
  const chars = Array.from(text); // the server's offsets count code points, not UTF-16 units
  const slice = (from, to) => chars.slice(from, to).join("");
  const nodes = [];
  let at = 0;
  for (const word of explanation.words) {
    if (word.start < at) continue; // an overlapping span would repeat text
    nodes.push(document.createTextNode(slice(at, word.start)));
    const span = document.createElement("span");
    span.className = "word";
    span.textContent = slice(word.start, word.end);
    const rgb = word.score >= 0 ? hues.supports : hues.against;
    span.style.backgroundColor = `rgba(${rgb.join(", ")}, ${(Math.abs(word.score) / largest).toFixed(3)})`;
    const description = `${span.textContent}: ${word.score.toFixed(2)}`;
    span.title = description;
    span.setAttribute("aria-label", description);
    nodes.push(span);
    at = word.end;
  }
  nodes.push(document.createTextNode(slice(at)));
  $("explanation").replaceChildren(...nodes);
  $("explanation").classList.remove("stale");
  $("legend").replaceChildren(
    `Word attributions (${explanation.method}, on the fp32 torch network) toward ${explanation.label}: `,
    swatch("blue", hues.supports), " supports, ", swatch("orange", hues.against), " speaks against. ",
    strongest(explanation.words),
  );
}

// ---- many texts ----

async function runBatch() {
  if (batchBusy) return; // the button stays focusable while busy; a second click waits for the first
  const message = $("batch-message");
  const file = $("file").files[0];
  const box = $("batch-text").value;
  if (!file && !box.trim()) {
    say(message, "Type texts (one per line) or choose a file.", true);
    return;
  }
  const maxBytes = model?.limits?.max_body_bytes;
  if (file && maxBytes && file.size > maxBytes) { // refuse before reading a huge file into memory
    say(message, `${file.name} has ${file.size.toLocaleString("en")} bytes; the limit is ${maxBytes.toLocaleString("en")}.`, true);
    return;
  }
  batchBusy = true;
  say(message, "Predicting…");
  try {
    const content = file ? await file.text().catch(() => { throw new Error(`cannot read ${file.name}`); }) : box;
    const data = await api("/predict/file", { filename: file ? file.name : "texts.txt", content });
    showRows(data.rows);
    csv = data.csv;
    $("download").disabled = false;
    say(message, `${data.rows.length} ${data.rows.length === 1 ? "text" : "texts"} predicted.`);
  } catch (err) {
    $("results").replaceChildren();
    $("results-box").hidden = true;
    csv = "";
    $("download").disabled = true;
    say(message, err.message, true);
  } finally {
    batchBusy = false;
  }
}

function cell(tag, text, className) {
  const element = document.createElement(tag);
  element.textContent = text;
  if (className) element.className = className;
  if (tag === "th") element.scope = "col";
  return element;
}

function showRows(rows) {
  const labels = rows.length ? labelsOf(rows[0].probs) : model?.labels ?? [];
  const head = document.createElement("tr");
  head.append(cell("th", "text"), cell("th", "label"), ...labels.map((name) => cell("th", name)));
  const body = rows.map((row) => {
    const tr = document.createElement("tr");
    tr.append(cell("td", row.text, "text"), cell("td", row.label),
      ...labels.map((name) => cell("td", row.probs[name].toFixed(3), "num")));
    return tr;
  });
  const thead = document.createElement("thead");
  thead.append(head);
  const tbody = document.createElement("tbody");
  tbody.append(...body);
  $("results").replaceChildren(thead, tbody);
  $("results-box").hidden = false; // a focusable scroll box only once it has something to scroll
}

function download() {
  // With a byte-order mark, spreadsheets read the file as UTF-8.
  const url = URL.createObjectURL(new Blob(["\ufeff", csv], { type: "text/csv;charset=utf-8" }));
  const link = document.createElement("a");
  link.href = url;
  link.download = "predictions.csv";
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000); // some browsers read the blob after click() returns
}

function onFileChange() {
  $("clear-file").hidden = $("file").files.length === 0;
}

function clearFile() {
  $("file").value = "";
  onFileChange();
  $("file").focus(); // the button disappears; keep keyboard focus nearby
}

// ---- model ----

async function loadModel() {
  try {
    model = await api("/model");
    $("backend").textContent = model.backend;
    $("labels").textContent = model.labels.join(", ");
    $("reads").textContent = `the first ${model.max_length} word-pieces of each text`;
    $("card").textContent = model.card || "No model card.";
    const { max_texts: texts, max_chars: chars, max_body_bytes: bytes } = model.limits;
    $("limits").textContent = `Up to ${texts.toLocaleString("en")} texts, each up to ${chars.toLocaleString("en")} characters, `
      + `${(bytes / 1e6).toLocaleString("en")} MB in all. Files: .txt (one text per line), .csv (a column named text), `
      + '.jsonl or .ndjson (one {"text": ...} per line).';
    if (!model.explain) $("legend").textContent = "This server gives no explanations.";
  } catch (err) { // unreachable or malformed: the page still predicts, in the answers' own label order
    model = null;
    $("backend").textContent = `unavailable (${err.message})`;
    say($("message"), `Cannot load the model description: ${err.message}`, true);
  }
}

$("run-batch").addEventListener("click", runBatch);
$("download").addEventListener("click", download);
$("file").addEventListener("change", onFileChange);
$("clear-file").addEventListener("click", clearFile);
onFileChange(); // a browser may restore a chosen file on reload
// The model's labels and temperature shape every result, so predictions start once they are known.
loadModel().then(() => {
  $("text").addEventListener("input", onInput);
  if ($("text").value.trim()) onInput(); // text typed while loading, or restored by the browser
});
