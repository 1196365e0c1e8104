"use strict";
// 统计分析: residents' cases by category, grid and period, how long they took, the share
// finished late, and the centres' uptime by period — over the operator's scope — with the
// same figures to download as CSV or XLSX.

const PERIOD = { day: "按日 by day", week: "按周 by week", month: "按月 by month" };

function figureQuery() {
  const q = new URLSearchParams();
  for (const [k, id] of [["from", "fig-from"], ["to", "fig-to"], ["period", "fig-period"], ["grid", "fig-grid"]]) {
    if ($(id).value) q.set(k, $(id).value);
  }
  return q;
}

const bar = (n, max) => `<span class="bar" style="width:${max ? Math.round((n / max) * 120) : 0}px"></span> ${n}`;

function caseTable(rows, first, named) {
  const max = Math.max(0, ...rows.map((r) => r.registered));
  return `<table class="figures"><thead><tr><th>${first}</th><th>登记 Registered</th><th>办结 Finished</th><th>在办 Open</th><th>超期 Late</th><th>平均用时 Mean hours</th></tr></thead><tbody>
    ${rows.map((r) => `<tr data-key="${esc(r.key)}"><td>${esc(named ? (r.name || r.key || "未分派 unrouted") : (CATEGORY[r.key] || r.key))}</td><td>${bar(r.registered, max)}</td><td>${r.finished}</td><td>${r.open}</td>
      <td>${r.late ? `<span class="error">${r.late}</span>` : 0}</td><td>${r.mean_hours ?? "—"}</td></tr>`).join("") || `<tr><td colspan="6" class="muted">没有 None</td></tr>`}</tbody></table>`;
}

async function figures() {
  try {
    await loadGrids();
    if (!$("fig-grid").options.length) {
      $("fig-grid").innerHTML = `<option value="">全部 All my grids</option>` +
        grids.map((g) => `<option value="${esc(g.code)}">${indent[g.level] || ""}${esc(g.name)}</option>`).join("");
    }
    const q = figureQuery();
    const v = await call("GET", "/api/v1/figures?" + q);
    if (!$("fig-from").value) { $("fig-from").value = v.from; $("fig-to").value = v.to; }
    const c = v.cases;
    const t = c.time_to_finish;
    $("fig-summary").innerHTML = `<span id="fig-registered" data-n="${c.registered}"><b>${c.registered}</b> 件登记 registered</span>
      <span id="fig-late" data-share="${c.late_share}"><b>${(c.late_share * 100).toFixed(1)}%</b> 超期 late (${c.late})</span>
      <span>办结用时 Time to finish: 平均 mean ${t.mean_hours ?? "—"} h · 中位 p50 ${t.p50_hours ?? "—"} h · p90 ${t.p90_hours ?? "—"} h (${t.finished})</span>`;
    $("fig-category").innerHTML = caseTable(c.by_category, "类别 Category", false);
    $("fig-grid-table").innerHTML = caseTable(c.by_grid, "网格 Grid", true);
    $("fig-by-period").innerHTML = caseTable(c.by_period, "时段 Period", false);
    const cell = (p) => `<td class="${p < 95 ? "error" : ""}">${p}%</td>`;
    $("fig-uptime").innerHTML = `<table class="figures"><thead><tr><th>网关 Gateway</th><th></th>${v.periods.map((p) => `<th>${esc(p)}</th>`).join("")}</tr></thead><tbody>
      ${v.uptime.map((u) => `<tr data-gateway="${esc(u.gateway)}"><td rowspan="2">${esc(u.gateway)}</td><td class="muted">在线 up</td>${u.uptime_pct.map(cell).join("")}</tr>
        <tr><td class="muted">设备 devices</td>${u.device_uptime_pct.map(cell).join("")}</tr>`).join("") || `<tr><td class="muted">没有 None</td></tr>`}</tbody></table>`;
    const base = (path, extra) => { const x = new URLSearchParams(q); for (const [k, val] of Object.entries(extra)) x.set(k, val); return `${path}?${x}`; };
    $("fig-export").innerHTML = `导出 Export: <a id="fig-xlsx" href="${base("/api/v1/figures.xlsx", {})}">XLSX</a> · CSV ` +
      ["category", "grid", "period", "uptime"].map((k) => `<a class="fig-csv" data-table="${k}" href="${base("/api/v1/figures.csv", { table: k })}">${k}</a>`).join(" ");
  } catch (e) { say("读取统计失败 " + e.message); }
}

$("fig-form").addEventListener("submit", (e) => { e.preventDefault(); figures(); });
views.figures = figures;
resets.push(() => { $("fig-grid").innerHTML = ""; $("fig-from").value = ""; $("fig-to").value = ""; });
