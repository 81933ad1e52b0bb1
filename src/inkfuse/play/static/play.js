// The inkfuse playground page: plain JavaScript, no build step, nothing from outside the app.
// One generation = one POST /api/generate whose response body is a stream of server-sent
// events (start, step..., panel..., done | error | cancelled), read with fetch's stream reader.
"use strict";

const $ = (id) => document.getElementById(id);
let runs = [];
let controller = null;   // AbortController of the running generation
let last = null;         // the last finished panel: {image, width, height, n}

function run() { return runs.find((r) => r.id === $("run").value); }

function option(select, value, text, selected) {
  const o = document.createElement("option");
  o.value = value; o.textContent = text ?? value; o.selected = !!selected;
  select.appendChild(o);
}

function showFor(selector, attribute, value) {
  document.querySelectorAll(selector).forEach((el) => {
    const wanted = el.dataset[attribute].split(" ");
    el.classList.toggle("hidden", !wanted.includes(value));
  });
}

function chooseRun() {
  const r = run();
  $("run-info").textContent = `${r.kind}, ${r.size[1]}×${r.size[0]}` +
    (r.latent ? " (latent)" : "") + `, ${r.channels === 1 ? "greyscale" : "RGB"}`;
  document.querySelectorAll(".for-text").forEach((e) => e.classList.toggle("hidden", r.kind !== "text"));
  document.querySelectorAll(".for-class").forEach((e) => e.classList.toggle("hidden", r.kind !== "class"));
  document.querySelectorAll(".for-context").forEach((e) => e.classList.toggle("hidden", r.kind !== "context"));
  $("prompt-examples").replaceChildren();
  r.prompts.forEach((p) => option($("prompt-examples"), p));
  if (r.kind === "text" && !$("prompt").value && r.prompts.length) $("prompt").value = r.prompts[0];
  $("label").replaceChildren();
  option($("label"), "", "each class in turn", true);
  r.classes.forEach((name, i) => option($("label"), i, `${i}: ${name}`));
  $("context").replaceChildren();
  r.context.forEach((name, i) => {
    const l = document.createElement("label");
    l.innerHTML = `<input type="checkbox" data-index="${i}"> ${name}`;
    $("context").appendChild(l);
  });
  for (const id of ["sampler", "sampler_b"]) {
    $(id).replaceChildren();
    r.samplers.forEach((s) => option($(id), s.name, s.name, s.name === r.defaults.sampler));
  }
  $("sampler_b").value = r.samplers.some((s) => s.name === "dpmpp-2m") ? "dpmpp-2m" : r.defaults.sampler;
  $("steps").value = r.defaults.steps;
  $("steps").max = Math.min(r.limits.steps, r.timesteps);
  $("guidance").value = r.defaults.guidance;
  $("guidance-value").textContent = r.defaults.guidance;
  $("eta").value = r.defaults.eta;
  chooseSampler();
}

function chooseSampler() {
  const s = run().samplers.find((x) => x.name === $("sampler").value);
  document.querySelectorAll(".for-option").forEach((el) =>
    el.classList.toggle("hidden", !s.options.includes(el.dataset.option)));
}

function chooseMode() { showFor(".for-mode", "mode", $("mode").value); }

// ---------------------------------------------------------------- the image editor (inpaint)

function loadSource(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => {
      for (const c of [$("source"), $("mask")]) { c.width = img.naturalWidth; c.height = img.naturalHeight; }
      $("source").getContext("2d").drawImage(img, 0, 0);
      clearMask();
      resolve();
    };
    img.onerror = () => reject(new Error("the browser could not read that image"));
    img.src = url;
  });
}

function clearMask() {
  const m = $("mask"), ctx = m.getContext("2d");
  ctx.fillStyle = "#000"; ctx.fillRect(0, 0, m.width, m.height);
}

function paint(event) {
  if (!(event.buttons & 1)) return;
  const m = $("mask"), box = m.getBoundingClientRect();
  const x = (event.clientX - box.left) * m.width / box.width;
  const y = (event.clientY - box.top) * m.height / box.height;
  const ctx = m.getContext("2d");
  const r = Number($("brush").value) * Math.max(m.width, m.height) / 64;
  ctx.fillStyle = "#fff"; ctx.beginPath(); ctx.arc(x, y, r, 0, 2 * Math.PI); ctx.fill();
}

function cropFirst(panel) {  // the first image of a result grid (1 px padding between cells)
  return new Promise((resolve) => {
    const img = new Image();
    img.onload = () => {
      const c = document.createElement("canvas"), pad = panel.n > 1 ? 1 : 0;
      c.width = panel.width; c.height = panel.height;
      c.getContext("2d").drawImage(img, pad, pad, panel.width, panel.height, 0, 0, panel.width, panel.height);
      resolve(c.toDataURL("image/png"));
    };
    img.src = panel.image;
  });
}

// ---------------------------------------------------------------- a generation

function request() {
  const r = run(), mode = $("mode").value;
  const body = {
    run: r.id, mode, sampler: $("sampler").value, steps: Number($("steps").value),
    guidance: Number($("guidance").value), seed: Number($("seed").value), n: Number($("n").value),
  };
  for (const name of ["eta", "churn"]) {
    if (!$(name).closest("label").classList.contains("hidden")) body[name] = Number($(name).value);
  }
  if (r.kind === "text") body.prompt = $("prompt").value;
  if (r.kind === "class" && $("label").value !== "") body.label = Number($("label").value);
  if (r.kind === "context") {
    body.context = [...$("context").querySelectorAll("input")].map((c) => (c.checked ? 1 : 0));
  }
  if (mode === "compare") {
    body.sampler_b = $("sampler_b").value; body.guidance_b = Number($("guidance_b").value);
  }
  if (mode === "sweep") {
    body.guidances = $("guidances").value.split(",").map((s) => s.trim()).filter((s) => s).map(Number);
    body.n = 1;
  }
  if (mode === "inpaint" || mode === "img2img") {
    if (!$("source").width) throw new Error("upload an image first, or use the last sample");
    body.image = $("source").toDataURL("image/png");
    body.n = 1;
    if (mode === "inpaint") body.mask = $("mask").toDataURL("image/png");
    else body.strength = Number($("strength").value);
  }
  return body;
}

function makePanels(titles) {
  $("panels").replaceChildren();
  $("panels").dataset.count = titles.length;
  return titles.map((title) => {
    const p = document.createElement("div");
    p.className = "panel";
    p.innerHTML = `<h2></h2><div class="views">
      <figure><img class="xt" alt="x_t"><figcaption>x<sub>t</sub></figcaption></figure>
      <figure><img class="x0" alt="predicted x0"><figcaption>x̂<sub>0</sub> (predicted)</figcaption></figure>
      <figure class="hidden"><img class="result" alt="result"><figcaption>result</figcaption></figure>
      </div><div class="meta"></div>`;
    p.querySelector("h2").textContent = title;
    $("panels").appendChild(p);
    return p;
  });
}

function fail(message) {
  $("error").textContent = message;
  $("status").textContent = "";
}

async function generate(event) {
  event.preventDefault();
  if (controller) controller.abort();
  $("error").textContent = "";
  let body;
  try { body = request(); } catch (e) { fail(e.message); return; }
  controller = new AbortController();
  $("generate").disabled = true; $("cancel").disabled = false;
  $("status").textContent = "waiting…";
  document.body.dataset.state = "running";
  delete document.body.dataset.previews;
  delete document.body.dataset.firstPreviewMs;
  const t0 = performance.now();
  let panels = [], first = null, previews = 0;
  try {
    const response = await fetch("/api/generate", {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify(body), signal: controller.signal,
    });
    if (!response.ok) {
      const answer = await response.json().catch(() => ({error: `HTTP ${response.status}`}));
      fail(answer.error || `HTTP ${response.status}`);
      document.body.dataset.state = "error";
      return;
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
        const name = /^event: (.*)$/m.exec(block)[1], data = JSON.parse(/^data: (.*)$/m.exec(block)[1]);
        if (name === "start") panels = makePanels(data.panels);
        else if (name === "step") {
          if (first === null) {
            first = performance.now() - t0;
            document.body.dataset.firstPreviewMs = first.toFixed(0);
          }
          previews += 1;
          document.body.dataset.previews = previews;
          const p = panels[data.panel];
          p.querySelector(".xt").src = data.x; p.querySelector(".x0").src = data.x0;
          $("status").textContent = `step ${data.i}/${data.steps} · ${data.nfe} model calls · ` +
            `${data.ms.toFixed(0)} ms · first preview after ${first.toFixed(0)} ms`;
        } else if (name === "panel") {
          const p = panels[data.panel], img = p.querySelector(".result");
          img.src = data.image; img.closest("figure").classList.remove("hidden");
          p.querySelector(".meta").textContent =
            `${data.n} × ${data.width}×${data.height} · ${data.nfe} model calls · ${data.ms.toFixed(0)} ms`;
          if (data.panel === 0) last = data;
        } else if (name === "done") {
          $("status").textContent = `done in ${data.ms.toFixed(0)} ms` +
            (first === null ? "" : ` · first preview after ${first.toFixed(0)} ms`);
          document.body.dataset.state = "done";
        } else if (name === "error") {
          fail(data.message); document.body.dataset.state = "error";
        } else if (name === "cancelled") {
          $("status").textContent = "cancelled"; document.body.dataset.state = "cancelled";
        }
      }
    }
  } catch (e) {
    if (e.name === "AbortError") { $("status").textContent = "cancelled"; document.body.dataset.state = "cancelled"; }
    else { fail(`the connection to the playground was lost (${e.message})`); document.body.dataset.state = "error"; }
  } finally {
    controller = null;
    $("generate").disabled = false; $("cancel").disabled = true;
  }
}

async function start() {
  try {
    const response = await fetch("/api/runs");
    runs = await response.json();
  } catch (e) { fail(`could not load the runs (${e.message})`); return; }
  runs.forEach((r, i) => option($("run"), r.id, r.id, i === 0));
  $("run").addEventListener("change", chooseRun);
  $("sampler").addEventListener("change", chooseSampler);
  $("mode").addEventListener("change", chooseMode);
  $("guidance").addEventListener("input", () => { $("guidance-value").textContent = $("guidance").value; });
  $("strength").addEventListener("input", () => { $("strength-value").textContent = $("strength").value; });
  $("reseed").addEventListener("click", () => { $("seed").value = Math.floor(Math.random() * 1e6); });
  $("controls").addEventListener("submit", generate);
  $("cancel").addEventListener("click", () => controller && controller.abort());
  $("upload").addEventListener("change", () => {
    const file = $("upload").files[0];
    if (!file) return;
    const reader = new FileReader();
    reader.onload = () => loadSource(reader.result).catch((e) => fail(e.message));
    reader.readAsDataURL(file);
  });
  $("use-last").addEventListener("click", async () => {
    if (!last) { fail("generate something first"); return; }
    await loadSource(await cropFirst(last));
  });
  $("mask").addEventListener("pointerdown", paint);
  $("mask").addEventListener("pointermove", paint);
  $("clear-mask").addEventListener("click", clearMask);
  chooseRun(); chooseMode();
  document.body.dataset.state = "ready";
}

start();
