"""The comparison page served at ``/``: plain HTML and JavaScript, no external assets.

It sends one ``POST /api/compare`` (image as a data URL, question, modes, K, score) and shows
each mode's answer side by side with its visual-token count, per-stage times and kept-token overlay.
"""

from __future__ import annotations

import json

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>shirg serve: compare visual-token modes</title>
<style>
  [hidden] { display: none !important; }
  body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #1d1d1f; background: #fafafa; }
  h1 { font-size: 1.3rem; margin: 0 0 .3rem; }
  p.lead { margin: 0 0 1rem; color: #555; }
  form { display: grid; grid-template-columns: 220px 1fr; gap: 1rem; align-items: start;
         background: #fff; padding: 1rem; border: 1px solid #ddd; border-radius: 8px; }
  #preview { width: 200px; height: 200px; object-fit: contain; background: #eee; border: 1px solid #ccc; }
  label { display: block; margin: .35rem 0; }
  input[type=text], textarea { width: 100%; box-sizing: border-box; font: inherit; padding: .3rem; }
  fieldset { border: 1px solid #ddd; border-radius: 6px; margin: .4rem 0; }
  .row { display: flex; gap: 1.5rem; flex-wrap: wrap; align-items: center; }
  button { font: inherit; padding: .4rem 1rem; cursor: pointer; }
  #status { margin: .8rem 0; min-height: 1.2rem; }
  #status.error { color: #b00020; }
  #results { display: flex; gap: 1rem; flex-wrap: wrap; }
  .result { background: #fff; border: 1px solid #ddd; border-radius: 8px; padding: .8rem;
            flex: 1 1 300px; max-width: 440px; }
  .result h2 { font-size: 1.05rem; margin: 0 0 .4rem; }
  .answer { font-size: 1.4rem; font-weight: 600; margin: .2rem 0 .5rem; }
  .answer.ok::after { content: "  \\2713 expected"; color: #1a7f37; font-size: .9rem; }
  .answer.wrong::after { content: "  \\2717 not the expected answer"; color: #b00020; font-size: .9rem; }
  .times { font-size: .85rem; color: #444; }
  .result img { width: 100%; margin-top: .4rem; }
  .note { font-size: .85rem; color: #666; }
</style>
</head>
<body>
<h1>shirg serve</h1>
<p class="lead">Ask a question about an image and compare how each visual-token mode answers:
how many visual tokens it spends, where the time goes, and which tokens it kept.</p>
<form id="ask-form">
  <div>
    <img id="preview" alt="no image yet">
    <label>Image <input id="image-file" type="file"
      accept="image/png,image/jpeg,image/webp,image/gif,image/bmp"></label>
    <button id="use-example" type="button">Use the bundled example</button>
  </div>
  <div>
    <label for="question">Question</label>
    <input id="question" type="text" placeholder="What number is written on the yellow square?">
    <div id="expected" class="note"></div>
    <fieldset><legend>Modes</legend><div id="modes" class="row"></div></fieldset>
    <fieldset><legend>Selection</legend>
      <div class="row">
        <label>K (hi-detail tokens kept) <input id="k" type="number" min="1" step="1"></label>
        <label>Score <select id="score"><option value="text">text</option>
          <option value="saliency">saliency</option>
          <option value="head">head (needs an adapter's tower head)</option></select></label>
      </div>
      <div class="note" id="k-note"></div>
    </fieldset>
    <label id="key-row" hidden>API key <input id="api-key" type="password" autocomplete="off"></label>
    <button id="ask" type="submit">Ask</button>
  </div>
</form>
<div id="status" role="status"></div>
<div id="results"></div>
<script id="config" type="application/json">__CONFIG__</script>
<script>
"use strict";
const cfg = JSON.parse(document.getElementById("config").textContent);
let imageData = null, expected = [];
const $ = (id) => document.getElementById(id);
const status = (text, isError) => { $("status").textContent = text; $("status").className = isError ? "error" : ""; };

for (const m of cfg.modes) {
  const label = document.createElement("label");
  const box = document.createElement("input");
  box.type = "checkbox"; box.name = "mode"; box.value = m; box.checked = cfg.default_modes.includes(m);
  label.append(box, " " + m);
  $("modes").append(label);
}
$("k").max = cfg.max_k; $("k").placeholder = String(cfg.default_k);
$("k-note").textContent = `default K = ${cfg.default_k} of ${cfg.max_k} tokens at ${cfg.resolution} px; ` +
  "K applies to the selection modes (not lowres or full)";
$("score").value = cfg.score;
$("key-row").hidden = !cfg.needs_key;
$("use-example").hidden = !cfg.has_example;

function setImage(dataUrl) { imageData = dataUrl; $("preview").src = dataUrl; }

$("image-file").addEventListener("change", () => {
  const file = $("image-file").files[0];
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => { setImage(reader.result); expected = []; $("expected").textContent = ""; };
  reader.readAsDataURL(file);
});

$("use-example").addEventListener("click", async () => {
  status("loading the bundled example ...");
  const r = await fetch("/api/example");
  const ex = await r.json();
  if (!r.ok) { status(ex.error ? ex.error.message : "no example", true); return; }
  setImage(ex.image); $("question").value = ex.question; expected = ex.answers;
  $("expected").textContent = "expected answer: " + ex.answers.join(" | ");
  status("example loaded");
});

function fmtTimes(t) {
  return Object.entries(t).map(([k, v]) => `${k} ${(v * 1000).toFixed(1)} ms`).join(", ");
}

function render(results) {
  const box = $("results"); box.textContent = "";
  const norm = (s) => s.trim().toLowerCase();
  for (const r of results) {
    const card = document.createElement("section");
    card.className = "result"; card.dataset.mode = r.mode;
    const h = document.createElement("h2"); h.textContent = r.mode;
    const a = document.createElement("div"); a.className = "answer"; a.textContent = r.answer || "(empty)";
    if (expected.length) a.classList.add(expected.map(norm).includes(norm(r.answer)) ? "ok" : "wrong");
    const tok = document.createElement("div"); tok.className = "tokens";
    tok.textContent = `${r.visual_tokens} visual tokens (prompt ${r.prompt_tokens} tokens)`;
    const tm = document.createElement("div"); tm.className = "times";
    tm.textContent = fmtTimes(r.time_s) + (r.batch_size > 1 ? ` (batch of ${r.batch_size})` : "");
    card.append(h, a, tok, tm);
    if (r.fallback) { const f = document.createElement("div"); f.className = "note";
      f.textContent = "fell back to lavida: " + r.fallback; card.append(f); }
    if (r.overlay) { const img = document.createElement("img"); img.className = "overlay";
      img.alt = r.mode + " kept tokens"; img.src = r.overlay; card.append(img); }
    else { const n = document.createElement("div"); n.className = "note";
      n.textContent = "no selection: this mode sees every token of its own view"; card.append(n); }
    box.append(card);
  }
}

$("ask-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const modes = [...document.querySelectorAll("input[name=mode]:checked")].map((b) => b.value);
  if (!imageData) { status("choose an image or the bundled example first", true); return; }
  if (!$("question").value.trim()) { status("type a question", true); return; }
  if (!modes.length) { status("choose at least one mode", true); return; }
  const body = { image: imageData, question: $("question").value, modes, score: $("score").value };
  if ($("k").value) body.k = Number($("k").value);
  const headers = { "Content-Type": "application/json" };
  if (cfg.needs_key) headers["Authorization"] = "Bearer " + $("api-key").value;
  $("ask").disabled = true; status("answering in " + modes.join(", ") + " ...");
  const t0 = performance.now();
  try {
    const r = await fetch("/api/compare", { method: "POST", headers, body: JSON.stringify(body) });
    const out = await r.json();
    if (!r.ok) { status(out.error ? out.error.message : ("HTTP " + r.status), true); return; }
    render(out.results);
    status(`answered in ${((performance.now() - t0) / 1000).toFixed(2)} s`);
    document.body.dataset.state = "answered";
  } catch (e) {
    status("request failed: " + e, true);
  } finally {
    $("ask").disabled = false;
  }
});
</script>
</body>
</html>
"""


def render_page(config: dict) -> str:
    """The page with the server's settings (modes, K range, score) embedded as JSON."""
    text = json.dumps(config).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return _PAGE.replace("__CONFIG__", text)
