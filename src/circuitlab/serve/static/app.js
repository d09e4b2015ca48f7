// circuitlab explorer: one page, views whose state lives in the address (#/VIEW?model=...&prompt=...).
// Plain JavaScript, no build step; circuitsvis (served by this server) draws the attention patterns.
"use strict";

const state = { analyses: {}, models: [], view: null, args: {}, model: null, job: null, source: null, last: null };
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

async function api(path, body) {
  const opts = body === undefined ? {} : { method: "POST", headers: { "Content-Type": "application/json" },
                                           body: JSON.stringify(body) };
  const r = await fetch(path, opts);
  const data = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
  if (!r.ok) throw new Error(data.error || `HTTP ${r.status}`);
  return data;
}

function status(text, error) {
  const s = $("status");
  s.textContent = text || "";
  s.className = error ? "error" : "";
}

// ---- the address bar holds the state --------------------------------------------------------------------------

function readHash() {
  const h = location.hash.replace(/^#\/?/, "");
  const [view, query] = h.split("?");
  const params = new URLSearchParams(query || "");
  const args = {};
  for (const [k, v] of params) if (k !== "model" && k !== "job") args[k] = v;
  return { view: view || "next_token", model: params.get("model"), args, job: params.get("job") };
}

function writeHash(view, model, args, job) {
  const p = new URLSearchParams();
  if (model) p.set("model", model);
  for (const [k, v] of Object.entries(args)) if (v !== "" && v !== null && v !== undefined) p.set(k, v);
  if (job) p.set("job", job);
  const q = p.toString();
  const next = `#/${view}${q ? "?" + q : ""}`;
  if (location.hash !== next) location.hash = next; else route();
}

// ---- forms -----------------------------------------------------------------------------------------------------

function typed(spec, text) {
  if (text === "" || text === undefined || text === null) return null;
  if (spec.kind === "int") return Number.parseInt(text, 10);
  if (spec.kind === "float") return Number.parseFloat(text);
  return text;
}

function buildForm(analysis, values) {
  const form = $("form");
  form.replaceChildren();
  for (const [name, spec] of Object.entries(analysis.args)) {
    let input;
    if (spec.kind === "choice") {
      input = el("select", { name, id: `arg-${name}` });
      for (const c of spec.choices) input.append(el("option", { value: c, text: c }));
      input.value = values[name] ?? spec.default;
    } else {
      const short = spec.kind === "int" || spec.kind === "float" || spec.kind === "token";
      input = el("input", { type: "text", name, id: `arg-${name}`, class: short ? "short" : "" });
      input.value = values[name] ?? (spec.default ?? "");
      if (spec.help) input.placeholder = spec.help;
    }
    form.append(el("label", { title: spec.help || "" }, name + (spec.required ? " *" : ""), input));
  }
  form.append(el("button", { type: "submit", id: "run", text: analysis.job ? "Run job" : "Show" }));
}

function formArgs(analysis) {
  const out = {};
  for (const [name, spec] of Object.entries(analysis.args)) {
    const v = $(`arg-${name}`).value;
    if (v !== "") out[name] = v;
    if (spec.kind === "choice" && v === String(spec.default)) delete out[name];
  }
  return out;
}

function requestArgs(analysis, args) {
  const out = {};
  for (const [name, spec] of Object.entries(analysis.args)) {
    const v = typed(spec, args[name]);
    if (v !== null) out[name] = v;
  }
  return out;
}

// ---- drawing results -------------------------------------------------------------------------------------------

const fmt = (x) => (x === null || x === undefined) ? "NaN" : (typeof x === "string" ? x : Number(x).toPrecision(4));

function colour(v, scale) {
  if (v === null || typeof v !== "number" || !scale) return "#fff";
  const t = Math.max(-1, Math.min(1, v / scale));
  const a = Math.abs(t);
  const [r, g, b] = t > 0 ? [220, 38, 38] : [37, 99, 235];
  const mix = (c) => Math.round(255 + (c - 255) * a);
  return `rgb(${mix(r)},${mix(g)},${mix(b)})`;
}

function heatmap(values, rows, cols, caption) {
  const flat = values.flat().filter((v) => typeof v === "number");
  const scale = Math.max(...flat.map(Math.abs), 1e-12);
  const table = el("table", { class: "cl-table heatmap" });
  if (caption) table.append(el("caption", { text: caption }));
  const head = el("tr", {}, el("th", {}));
  for (const c of cols) head.append(el("th", { text: c }));
  table.append(head);
  values.forEach((row, i) => {
    const tr = el("tr", {}, el("th", { text: rows[i] }));
    row.forEach((v, j) => {
      const td = el("td", { text: fmt(v), title: `${rows[i]} / ${cols[j]}: ${v}`,
                            "data-row": rows[i], "data-col": cols[j], "data-value": String(v) });
      td.style.background = colour(v, scale);
      tr.append(td);
    });
    table.append(tr);
  });
  return table;
}

function topTable(values, rows, cols, k) {
  // a result too large for a heatmap (e.g. every neuron of every layer): its k largest entries by |value|
  const cells = [];
  values.forEach((row, i) => row.forEach((v, j) => { if (typeof v === "number") cells.push([Math.abs(v), i, j, v]); }));
  cells.sort((a, b) => b[0] - a[0]);
  const t = el("table", { class: "cl-table" }, el("caption", { text: `the ${k} largest of ${cells.length} values by size ` +
                                                                   "(export CSV for all)" }),
               el("tr", {}, el("th", { text: "row" }), el("th", { text: "column" }), el("th", { text: "value" })));
  for (const [, i, j, v] of cells.slice(0, k)) t.append(el("tr", {}, el("td", { text: rows[i] }), el("td", { text: cols[j] }),
                                                          el("td", { text: fmt(v) })));
  return t;
}

function labelsOf(res, axis, n) {
  const l = (res.labels || {})[axis];
  return l && l.length === n ? l : Array.from({ length: n }, (_, i) => `${axis} ${i}`);
}

function drawResult(res, out) {
  // any Result: 1-D as one row, 2-D as a heatmap, 3-D as one heatmap per index of the first axis
  const v = res.values.data, shape = res.values.shape, axes = res.axes;
  out.append(el("h3", { text: res.title || res.kind }));
  out.append(el("p", { class: "meta", text: [res.model, res.task, res.metric].filter(Boolean).join(" · ") }));
  if (shape.length === 0) out.append(el("p", { text: fmt(v) }));
  else if (shape.length === 1 && shape[0] > 4000)
    out.append(topTable([v], [res.metric || "value"], labelsOf(res, axes[0], shape[0]), 30));
  else if (shape.length === 1) out.append(heatmap([v], [res.metric || "value"], labelsOf(res, axes[0], shape[0])));
  else if (shape.length === 2 && shape[0] * shape[1] > 4000)
    out.append(topTable(v, labelsOf(res, axes[0], shape[0]), labelsOf(res, axes[1], shape[1]), 30));
  else if (shape.length === 2)
    out.append(heatmap(v, labelsOf(res, axes[0], shape[0]), labelsOf(res, axes[1], shape[1])));
  else if (shape.length === 3) {
    const first = labelsOf(res, axes[0], shape[0]);
    v.forEach((m, i) => out.append(heatmap(m, labelsOf(res, axes[1], shape[1]), labelsOf(res, axes[2], shape[2]),
                                           `${axes[0]} ${first[i]}`)));
  } else out.append(el("p", { text: `a ${shape.length}-axis result: export it as JSON or CSV` }));
}

const drawers = {
  next_token(data, out) {
    const r = data.result, probs = r.values.data[0], toks = r.tokens[0];
    out.append(el("p", { class: "headline", id: "headline" }, "top next token ", el("b", { text: JSON.stringify(toks[0]) }),
                  ` p = ${fmt(probs[0])}`));
    const t = el("table", { class: "cl-table", id: "next-token-table" },
                 el("tr", {}, el("th", { text: "rank" }), el("th", { text: "token" }), el("th", { text: "probability" }),
                    el("th", {})));
    probs.forEach((p, i) => t.append(el("tr", {}, el("td", { text: i + 1 }), el("td", { class: "tok", text: JSON.stringify(toks[i]) }),
      el("td", { text: fmt(p) }), el("td", {}, Object.assign(el("span", { class: "bar" }), { style: `width:${Math.round(200 * p)}px` })))));
    out.append(t);
  },
  logit_lens(data, out) {
    const f = data.result.fields, top = f.top, prob = f.answer_prob, rank = f.answer_rank;
    const layers = prob.labels.layer;
    out.append(el("p", { class: "headline" }, "tracked answer ", el("b", { text: prob.labels.batch[0] })));
    const t = el("table", { class: "cl-table", id: "lens-table" }, el("tr", {}, el("th", { text: "layer" }),
      el("th", { text: "P(answer)" }), el("th", { text: "rank" }), el("th", { text: "top tokens (probability)" })));
    layers.forEach((lab, i) => {
      const toks = top.tokens[i][0].map((s, j) => `${JSON.stringify(s)} ${fmt(top.values.data[i][0][j])}`).join("   ");
      const td = el("td", { text: fmt(prob.values.data[0][i]) });
      td.style.background = colour(prob.values.data[0][i], 1);
      t.append(el("tr", {}, el("th", { text: lab }), td, el("td", { text: rank.values.data[0][i] }),
                  el("td", { class: "tok", text: toks })));
    });
    out.append(t);
  },
  dla(data, out) {
    const r = data.result, v = r.values.data, shape = r.values.shape;
    let best = null;
    const walk = (x, idx) => Array.isArray(x) ? x.forEach((y, i) => walk(y, idx.concat(i)))
                                              : (best === null || x > best[1]) && (best = [idx, x]);
    walk(v, []);
    const label = best[0].map((i, k) => labelsOf(r, r.axes[k], shape[k])[i]).join("");
    out.append(el("p", { class: "headline", id: "dla-top", "data-label": label, "data-value": String(best[1]) },
                  `top ${r.axes.join(" / ")}: `, el("b", { text: label }), ` ${fmt(best[1])} (${r.metric})`));
    drawResult(r, out);
  },
  attention(data, out) {
    const r = data.result, [L, H, Q] = r.values.shape;
    const pattern = [], names = [];
    for (let l = 0; l < L; l++) for (let h = 0; h < H; h++) { pattern.push(r.values.data[l][h]); names.push(`L${l}H${h}`); }
    out.append(el("h3", { text: "Attention patterns" }),
               el("p", { class: "meta", text: `${L} layers x ${H} heads on ${Q} tokens; click a head to enlarge` }));
    const mount = el("div", { id: "attention-view", class: "cl-view" });
    out.append(mount);
    if (typeof CircuitsVis === "undefined") { mount.textContent = "circuitsvis did not load"; return; }
    CircuitsVis.render("attention-view", CircuitsVis.AttentionHeads,
                       { attention: pattern, tokens: r.meta.tokens, attentionHeadNames: names, maskUpperTri: true });
  },
  patch(data, out) {
    const r = data.result;
    out.append(el("p", { class: "headline", id: "job-headline" },
                  `clean ${fmt(r.meta.clean_value)}, corrupted ${fmt(r.meta.corrupted_value)} (${r.metric})`));
    drawResult(r, out);
  },
  trace(data, out) {
    const r = data.result;
    out.append(el("p", { class: "headline", id: "job-headline" },
                  `P(answer) clean ${fmt(r.meta.clean_prob)}, subject corrupted ${fmt(r.meta.corrupted_prob)}`));
    drawResult(r, out);
  },
  xmd(data, out) {
    const r = data.result, fb = r.meta.feedback;
    out.append(el("p", { class: "headline", id: "job-headline" },
                  `feedback: ${fb.irrelevant} irrelevant, penalty ${fb.lam}; reversed-correlation accuracy ` +
                  `${fmt(r.values.data[0][2])} before, ${fmt(r.values.data[1][2])} after`));
    drawResult(r, out);
    out.append(el("h3", { text: "Integrated gradients of the score over each signed test review" }),
               el("p", { class: "meta", text: "red: pushes towards positive; blue: towards negative; the tokens " +
                                               "marked irrelevant are outlined" }));
    for (const ex of r.meta.examples) {
      const cols = ex.tokens.map((t, i) => JSON.stringify(t));
      const table = heatmap([ex.before, ex.after], [`before (score ${fmt(ex.before_score)})`,
                                                    `after (score ${fmt(ex.after_score)})`], cols,
                            `${ex.text} (label ${ex.label})`);
      table.classList.add("xmd-example");
      for (const tr of table.querySelectorAll("tr"))
        ex.marked.forEach((p) => { const c = tr.children[p + 1]; if (c) c.style.outline = "2px solid #111"; });
      out.append(table);
    }
    if (data.id) out.append(el("p", {}, "The classifiers are saved with this run: ",
      el("a", { href: `#/classify?model=${encodeURIComponent(state.model)}&run=${data.id}&which=after`, id: "try-saved" },
         "apply the one after the feedback to your own review"), " (the JSON export holds both heads)."));
  },
  classify(data, out) {
    const r = data.result, score = r.meta.score;
    out.append(el("p", { class: "headline", id: "classify-score", "data-score": String(score) },
                  `score ${fmt(score)}: ${score > 0 ? "positive" : "negative"} (the classifier ${r.meta.which} the feedback of run ${r.meta.run})`));
    out.append(heatmap(r.values.data, ["attribution"], r.meta.tokens.map((t) => JSON.stringify(t))));
  },
};

// ---- running views and jobs ------------------------------------------------------------------------------------

async function runView(analysis, args) {
  status(`computing ${analysis.title}...`);
  const body = { model: state.model, args: requestArgs(analysis, args) };
  const t0 = performance.now();
  const data = await api(`api/view/${analysis.name}`, body);
  const out = $("output");
  out.replaceChildren();
  drawers[analysis.name](data, out);
  state.last = { kind: "view", analysis, body };
  $("exports").hidden = false;
  status(`${analysis.title}: ${(data.seconds * 1000).toFixed(0)} ms on the server, ${(performance.now() - t0).toFixed(0)} ms in all`);
}

function showJob(analysis, data) {
  const out = $("output");
  out.replaceChildren();
  drawers[analysis.name]({ result: data.result, id: data.id }, out);
  state.last = { kind: "job", analysis, id: data.id };
  $("exports").hidden = false;
  status(`${analysis.title}: job ${data.id} ${data.status}${data.cached ? " (stored result)" : ""}`);
}

function follow(analysis, job) {
  if (state.source) state.source.close();
  const out = $("output");
  const bar = el("progress", { id: "job-progress", max: 1, value: 0 });
  const text = el("span", { id: "job-progress-text", text: " queued" });
  const cancel = el("button", { type: "button", id: "cancel", text: "Cancel" });
  cancel.onclick = () => api(`api/jobs/${job.id}/cancel`, {}).catch((e) => status(e.message, true));
  out.replaceChildren(el("p", {}, bar, text, " ", cancel));
  status(`job ${job.id} ${job.status}`);
  const source = new EventSource(`api/jobs/${job.id}/events`);
  state.source = source;
  source.addEventListener("progress", (e) => {
    const s = JSON.parse(e.data), p = s.progress || {};
    if (p.total) { bar.max = p.total; bar.value = p.n; }
    text.textContent = ` ${s.status}: ${p.desc || ""} ${p.total ? `${p.n} / ${p.total}` : ""}`;
  });
  source.addEventListener("end", async (e) => {
    source.close();
    const s = JSON.parse(e.data);
    if (s.status === "done") showJob(analysis, await api(`api/jobs/${job.id}`));
    else { out.replaceChildren(); status(`job ${job.id} ${s.status}: ${s.error || ""}`, s.status !== "cancelled"); }
  });
  source.onerror = () => { if (source.readyState === EventSource.CLOSED) status("lost the connection to the server", true); };
}

async function runJob(analysis, args, rerun) {
  const data = await api("api/jobs", { model: state.model, analysis: analysis.name, args: requestArgs(analysis, args), rerun: !!rerun });
  if (data.status === "done") showJob(analysis, data); else follow(analysis, data);
}

async function showHistory() {
  $("form").replaceChildren();
  $("exports").hidden = true;
  $("intro").textContent = "Past jobs stored on this server, newest first: open one to see its stored result.";
  const data = await api("api/history?limit=200");
  const t = el("table", { class: "cl-table", id: "history-table" }, el("tr", {},
    ...["when", "model", "analysis", "arguments", "status", "seconds"].map((h) => el("th", { text: h }))));
  for (const r of data.runs) {
    const p = new URLSearchParams({ model: r.model, ...Object.fromEntries(Object.entries(r.args).filter(([, v]) => v !== null)) });
    const link = el("a", { href: `#/${r.analysis}?${p}`, text: r.analysis });
    const secs = r.finished ? (r.finished - r.created).toFixed(2) : "";
    t.append(el("tr", { "data-status": r.status }, el("td", { text: new Date(r.created * 1000).toLocaleString() }),
      el("td", { text: r.model }), el("td", {}, link), el("td", { class: "tok", text: JSON.stringify(r.args) }),
      el("td", { text: r.status + (r.error ? `: ${r.error}` : "") }), el("td", { text: secs })));
  }
  $("output").replaceChildren(t);
  status(`${data.runs.length} run(s)`);
}

async function route() {
  const { view, model, args } = readHash();
  if (model && state.models.some((m) => m.name === model)) state.model = model;
  $("model").value = state.model;
  for (const a of $("views").children) a.classList.toggle("active", a.dataset.view === view);
  if (state.source) { state.source.close(); state.source = null; }
  $("output").replaceChildren();
  $("exports").hidden = true;
  status("");
  try {
    if (view === "history") return await showHistory();
    const analysis = state.analyses[view];
    if (!analysis) return status(`no view ${view}`, true);
    state.view = view;
    $("intro").textContent = analysis.help;
    buildForm(analysis, args);
    // run when the address holds the arguments (a view with no required argument waits for its button)
    const ready = Object.keys(args).length > 0 && Object.entries(analysis.args).every(([n, s]) => !s.required || args[n]);
    if (!ready) return;
    if (analysis.job) await runJob(analysis, args); else await runView(analysis, args);
  } catch (e) {
    status(e.message, true);
  }
}

async function download(format) {
  const last = state.last;
  if (!last) return;
  try {
    const r = last.kind === "view"
      ? await fetch(`api/view/${last.analysis.name}/export?format=${format}`,
                    { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(last.body) })
      : await fetch(`api/jobs/${last.id}/export?format=${format}`);
    if (!r.ok) throw new Error((await r.json()).error);
    const url = URL.createObjectURL(await r.blob());
    const a = el("a", { href: url, download: `${last.analysis.name}.${format}` });
    document.body.append(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 5000);
  } catch (e) { status(e.message, true); }
}

async function start() {
  const data = await api("api/models");
  state.models = data.models;
  state.model = data.models[0].name;
  for (const a of data.analyses) state.analyses[a.name] = a;
  const nav = $("views");
  for (const [name, title] of data.analyses.map((a) => [a.name, a.title]).concat([["history", "History"]])) {
    nav.append(el("a", { href: `#/${name}`, "data-view": name, text: title }));
  }
  for (const m of data.models) $("model").append(el("option", { value: m.name, text: m.name }));
  $("model").onchange = () => { state.model = $("model").value; const h = readHash(); writeHash(h.view, state.model, h.args); };
  $("form").onsubmit = (e) => {
    e.preventDefault();
    const analysis = state.analyses[state.view];
    writeHash(state.view, state.model, formArgs(analysis));
  };
  for (const b of $("exports").querySelectorAll("button")) b.onclick = () => download(b.dataset.format);
  window.addEventListener("hashchange", route);
  await route();
}

document.addEventListener("DOMContentLoaded", () => start().catch((e) => status(e.message, true)));
