"""The dashboard's one page and its script: plain HTML, CSS and JavaScript, served by
the dashboard itself. Nothing is fetched from anywhere else (the server's
Content-Security-Policy forbids it): the charts come from ``/api/charts`` as SVG, the
numbers from ``/api/stream`` (server-sent events, one snapshot per interval)."""

from __future__ import annotations

PAGE_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>shardnet dashboard</title>
<style>
body { font-family: DejaVu Sans, Helvetica, Arial, sans-serif; margin: 16px auto;
       max-width: 1460px; padding: 0 12px; color: #222; background: #f6f7f9; }
h1 { font-size: 21px; margin: 0 0 2px 0; } h2 { font-size: 16px; margin: 18px 0 6px 0; }
#meta { color: #555; font-size: 13px; }
#conn { font-size: 13px; margin-top: 2px; }
.ok { color: #2ca02c; } .bad { color: #d62728; } .warn { color: #b8860b; }
#shards { display: flex; gap: 12px; flex-wrap: wrap; margin-top: 12px; }
.shard { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 8px 14px;
         min-width: 330px; }
.shard h3 { margin: 0 0 6px 0; font-size: 15px; }
.shard dl { display: grid; grid-template-columns: auto auto auto auto; gap: 2px 14px;
            margin: 0; font-size: 13px; }
.shard dt { color: #666; } .shard dd { margin: 0; font-weight: bold; text-align: right; }
#charts { display: flex; flex-wrap: wrap; gap: 8px; }
.chart { background: #fff; border: 1px solid #ddd; border-radius: 6px; }
.chart svg { display: block; }
.cols { display: flex; gap: 16px; flex-wrap: wrap; align-items: flex-start; }
.cols > section { flex: 1 1 600px; }
table { border-collapse: collapse; font-size: 12.5px; background: #fff; width: 100%; }
th, td { border: 1px solid #ddd; padding: 2px 7px; text-align: right; white-space: nowrap; }
th { background: #eef0f3; }
td.l, th.l { text-align: left; }
code, .hash { font-family: DejaVu Sans Mono, monospace; font-size: 12px; }
button.tx { font-family: DejaVu Sans Mono, monospace; font-size: 11.5px; border: none;
            background: none; color: #1f5fa8; cursor: pointer; padding: 0 3px; }
#search { display: flex; gap: 6px; }
#tx { flex: 1; font-family: DejaVu Sans Mono, monospace; font-size: 13px; padding: 4px; }
#tx-result { margin-top: 8px; font-size: 13px; }
.row-down td { background: #fdecea; }
</style></head>
<body data-tick="0">
<h1>shardnet dashboard</h1>
<div id="meta">connecting...</div>
<div id="conn" class="warn">waiting for the first snapshot</div>
<div id="shards"></div>
<h2>Over time</h2>
<div id="charts"><p>charts load with the first snapshot</p></div>
<div class="cols">
<section><h2>Nodes</h2>
<table id="nodes"><thead><tr><th class="l">node</th><th class="l">state</th><th>height</th>
<th>view</th><th>primary</th><th>view changes</th><th>mempool</th><th>peers</th><th>tx/s</th>
<th>latency ms (mean / p99)</th></tr></thead><tbody></tbody></table></section>
<section><h2>Transaction search</h2>
<form id="search"><input id="tx" placeholder="transaction hash (64 hex digits)"
 autocomplete="off" spellcheck="false"><button type="submit">find</button></form>
<div id="tx-result">Paste a hash, or click one in the latest blocks ("receipts of": a
transaction of another shard whose receipt the block applied).</div>
<h2>Latest blocks</h2>
<table id="blocks"><thead><tr><th>shard</th><th>height</th><th class="l">time</th>
<th>txs</th><th>failed</th><th>inbound</th><th>view</th><th class="l">hash</th>
<th class="l">some transactions</th><th class="l">receipts of</th></tr></thead>
<tbody></tbody></table></section>
</div>
<script src="/dashboard.js"></script>
</body></html>
"""

PAGE_JS = r"""
"use strict";
const CHARTS_EVERY_MS = 2000;
const $ = (id) => document.getElementById(id);

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}
function num(v, digits) {
  if (v === null || v === undefined) return "-";
  return Number(v).toLocaleString("en-US", {maximumFractionDigits: digits || 0});
}
function clock(ms) {
  return ms ? new Date(ms).toISOString().substring(11, 23) : "-";
}
function short(hash) { return hash ? hash.substring(0, 12) + "..." : "-"; }

function renderShard(s) {
  let card = $("shard-" + s.shard);
  if (!card) {
    card = document.createElement("div");
    card.className = "shard";
    card.id = "shard-" + s.shard;
    card.innerHTML = "<h3></h3><dl></dl>";
    $("shards").appendChild(card);
  }
  card.dataset.height = s.height === null ? "" : String(s.height);
  const h3 = card.querySelector("h3");
  h3.textContent = "shard " + s.shard + "  (" + s.nodes_up + "/" + s.nodes + " nodes up)";
  h3.className = s.nodes_up === s.nodes ? "" : (s.nodes_up > 0 ? "warn" : "bad");
  const items = [
    ["height", num(s.height), "height"], ["tx/s", num(s.tps, 1), "tps"],
    ["view", num(s.view), "view"], ["view changes", num(s.view_changes), "view-changes"],
    ["latency mean", s.latency_mean_ms === null ? "-" : num(s.latency_mean_ms) + " ms",
     "latency"],
    ["latency p99", s.latency_p99_ms === null ? "-" : num(s.latency_p99_ms) + " ms", "p99"],
    ["mempool", num(s.mempool), "mempool"], ["peers (min)", num(s.peers_min), "peers"],
  ];
  const dl = card.querySelector("dl");
  dl.replaceChildren();
  for (const [label, value, cls] of items) {
    const dt = document.createElement("dt"); dt.textContent = label;
    const dd = document.createElement("dd"); dd.textContent = value; dd.className = cls;
    dl.append(dt, dd);
  }
}

function renderNodes(nodes) {
  const body = $("nodes").querySelector("tbody");
  body.replaceChildren();
  for (const n of nodes) {
    const row = document.createElement("tr");
    row.id = "node-" + n.name;
    if (!n.up) row.className = "row-down";
    cell(row, n.name + (n.is_primary ? " *" : ""), "l");
    const state = n.up ? (n.events === "live" ? "up" : "up, events: " + n.events)
                       : "unreachable: " + n.error;
    cell(row, state, "l " + (n.up ? (n.events === "live" ? "ok" : "warn") : "bad"));
    cell(row, num(n.height)); cell(row, num(n.view)); cell(row, num(n.primary));
    cell(row, num(n.view_changes)); cell(row, num(n.mempool)); cell(row, num(n.peers));
    cell(row, num(n.tps, 1));
    cell(row, num(n.latency_mean_ms) + " / " + num(n.latency_p99_ms));
    body.appendChild(row);
  }
}

function txLinks(td, hashes, cls) {
  for (const hash of hashes) {
    const button = document.createElement("button");
    button.className = cls; button.type = "button"; button.title = hash;
    button.dataset.tx = hash; button.textContent = hash.substring(0, 10);
    button.addEventListener("click", () => { $("tx").value = hash; search(hash); });
    td.appendChild(button);
  }
}

function renderBlocks(blocks) {
  const body = $("blocks").querySelector("tbody");
  body.replaceChildren();
  for (const b of blocks) {
    const row = document.createElement("tr");
    cell(row, b.shard); cell(row, num(b.height)); cell(row, clock(b.time_ms), "l");
    cell(row, num(b.txs)); cell(row, num(b.failed)); cell(row, num(b.inbound));
    cell(row, b.view); cell(row, short(b.hash), "l hash");
    txLinks(cell(row, "", "l"), b.tx_sample, "tx");
    txLinks(cell(row, "", "l"), b.origin_sample, "tx origin");
    body.appendChild(row);
  }
}

function render(s) {
  document.body.dataset.tick = String(s.tick);
  $("meta").textContent = "chain " + s.chain_id + " - " + s.num_shards + " shards - " +
    s.nodes_up + "/" + s.nodes_total + " nodes up - from " + s.source +
    " - every " + s.interval_s + " s, last " + Math.round(s.window_s / 60) + " min kept";
  $("conn").textContent = "live, updated " + new Date(s.time * 1000).toLocaleTimeString();
  $("conn").className = "ok";
  for (const shard of s.shards) renderShard(shard);
  renderNodes(s.nodes);
  renderBlocks(s.blocks);
}

let chartsBusy = false;
let chartsAt = 0;
function loadCharts() {
  if (chartsBusy || Date.now() - chartsAt < CHARTS_EVERY_MS) return;
  chartsBusy = true;
  fetch("/api/charts").then((r) => r.ok ? r.text() : Promise.reject(r.status))
    .then((html) => { $("charts").innerHTML = html; chartsAt = Date.now(); })
    .catch(() => {}).finally(() => { chartsBusy = false; });
}

function showTx(tx) {
  const out = $("tx-result");
  out.replaceChildren();
  const head = document.createElement("div");
  head.id = "tx-status";
  head.dataset.status = tx.status;
  head.textContent = tx.hash.substring(0, 16) + "...: " + tx.status + " (shard " + tx.shard +
    (tx.height === null || tx.height === undefined ? "" : ", height " + tx.height) + ")" +
    (tx.error ? " - " + tx.error + ": " + tx.detail : "") +
    (tx.outcome && tx.outcome.error ? " - call failed: " + tx.outcome.error : "");
  head.className = tx.status === "finalized" ? "ok" : (tx.status === "committed" ||
    tx.status === "pending" ? "warn" : "bad");
  out.appendChild(head);
  if (tx.hops.length) {
    const table = document.createElement("table");
    table.id = "hops";
    table.innerHTML = "<thead><tr><th>hop</th><th>shard</th><th>height</th>" +
      "<th class='l'>how</th><th class='l'>block time</th><th>after</th>" +
      "<th class='l'>block</th><th>txs</th></tr></thead><tbody></tbody>";
    const body = table.querySelector("tbody");
    for (const hop of tx.hops) {
      const row = document.createElement("tr");
      row.className = "hop";
      cell(row, hop.hop); cell(row, hop.shard); cell(row, num(hop.height));
      cell(row, hop.src_shard === undefined ? "committed on its shard"
        : "receipt " + hop.seq + " from shard " + hop.src_shard, "l");
      cell(row, clock(hop.time_ms), "l");
      cell(row, hop.after_ms === null ? "-" : "+" + num(hop.after_ms) + " ms");
      cell(row, hop.block ? short(hop.block.hash) : "-", "l hash");
      cell(row, hop.block ? num(hop.block.txs) : "-");
      body.appendChild(row);
    }
    out.appendChild(table);
  }
  if (tx.pending_receipts && tx.pending_receipts.length) {
    const p = document.createElement("div");
    p.textContent = "receipts not applied yet: " + JSON.stringify(tx.pending_receipts);
    out.appendChild(p);
  }
}

function search(hash) {
  const out = $("tx-result");
  out.textContent = "searching...";
  fetch("/api/tx/" + encodeURIComponent(hash.trim()))
    .then((r) => r.json().then((body) => [r.ok, body]))
    .then(([ok, body]) => {
      if (ok) { showTx(body); return; }
      out.textContent = body.error + ": " + body.detail;
      out.className = "bad";
    })
    .catch((e) => { out.textContent = "dashboard server unreachable: " + e; });
  out.className = "";
}

$("search").addEventListener("submit", (event) => {
  event.preventDefault();
  search($("tx").value);
});

const stream = new EventSource("/api/stream");
stream.addEventListener("snapshot", (event) => {
  render(JSON.parse(event.data));
  loadCharts();
});
stream.addEventListener("error", () => {
  $("conn").textContent = "dashboard server unreachable: retrying";
  $("conn").className = "bad";
});
"""
