"use strict";
// 诉求办理: the case queue (by status, grid, category, overdue) and a case's page with its
// timeline and the actions the operator may take on it now. Central says which actions
// (`actions` on the case), so the workflow's rules live in one place.

const CASE_STATUS = {
  registered: "已登记 Registered", routed: "已分派 Routed", assigned: "已派单 Assigned",
  accepted: "已接单 Accepted", handling: "处置中 Handling", in_progress: "办理中 In progress",
  transferred: "已转办 Transferred", reported: "已上报 Reported up", resolved: "已办结 Resolved",
  closed: "已结案 Closed", received: "已受理 Received", reviewing: "审查中 Reviewing",
  decided: "已决定 Decided", delivered: "已送达 Delivered",
};
const CATEGORY = { report: "问题反映 Report", dispute: "矛盾纠纷 Dispute", application: "事项申请 Application" };
const ACTION = {
  register: "登记 Registered", assign: "派单 Assign", accept: "接单 Accept", handle: "处置 Handle",
  mediate: "调解 Mediate", agree: "达成调解协议 Agreement", refer: "移交 Refer", resolve: "办结 Resolve",
  visit: "回访 Follow-up visit", close: "结案 Close", transfer: "转办 Transfer",
  report_up: "上报街道 Report up", supervise: "督办 Supervise", note: "备注 Note",
  receive: "受理 Receive", review: "审查 Review", decide: "决定 Decide", deliver: "送达 Deliver",
  remind: "到期提醒 Reminder",
};
// What each action asks for besides its note: [field, label, kind].
const FIELDS = {
  assign: [["station", "承办网格站 Station", "station"], ["person", "承办人 Person", "text"]],
  mediate: [["parties", "当事人（逗号分隔）Parties, comma separated", "list"]],
  refer: [["to", "移交单位 Referred to", "text"]],
  transfer: [["department", "转办部门 Department", "text"]],
  decide: [["approved", "决定 Decision", "decision"]],
};
// Actions whose note is required (the rest take an optional one; `decide` a reason).
const NOTE_REQUIRED = new Set(["handle", "mediate", "agree", "refer", "resolve", "visit", "transfer", "report_up", "supervise", "note"]);

const caseStatus = (s) => pill(s, CASE_STATUS[s] || s);
const when = (t) => (t ? new Date(t).toLocaleString("zh-CN") : "—");

// The grids this operator reaches, from central (parents first), loaded once per login.
let grids = null;
async function loadGrids() {
  if (grids) return grids;
  const v = await call("GET", "/api/v1/grids");
  grids = v.grids;
  return grids;
}
const gridName = (code) => (grids || []).find((g) => g.code === code)?.name || code || "—";
const indent = { street: "", area: "　", base: "　　" };

function fillFilters() {
  $("f-status").innerHTML = `<option value="">全部状态 Any status</option>` +
    Object.entries(CASE_STATUS).filter(([k]) => k !== "routed" && k !== "in_progress")
      .map(([k, v]) => `<option value="${k}">${esc(v)}</option>`).join("");
  $("f-category").innerHTML = `<option value="">全部类别 Any category</option>` +
    Object.entries(CATEGORY).map(([k, v]) => `<option value="${k}">${esc(v)}</option>`).join("");
  $("f-grid").innerHTML = `<option value="">全部网格 Any grid</option>` +
    grids.map((g) => `<option value="${esc(g.code)}">${indent[g.level] || ""}${esc(g.name)}</option>`).join("");
}

// The queue, a page at a time (`before` the last receipt shown).
let lastReceipt = null;
function filterQuery(before) {
  const q = new URLSearchParams();
  if ($("f-status").value) q.set("status", $("f-status").value);
  if ($("f-grid").value) q.set("grid", $("f-grid").value);
  if ($("f-category").value) q.set("category", $("f-category").value);
  if ($("f-overdue").checked) q.set("overdue", "true");
  q.set("limit", "50");
  if (before) q.set("before", before);
  return q;
}

function caseRow(c) {
  const s = c.submission || {};
  return `<tr class="case${c.overdue ? " overdue" : ""}" data-receipt="${esc(c.receipt)}" data-status="${esc(c.status)}" data-overdue="${c.overdue}">
    <td><a href="#case/${encodeURIComponent(c.receipt)}">${esc(c.receipt)}</a></td>
    <td>${esc(CATEGORY[s.category] || s.category)}</td>
    <td><b>${esc(s.title)}</b>${c.supervised ? ` ${pill("major", "督办 ×" + c.supervised)}` : ""}</td>
    <td>${esc(c.station_name || gridName(c.station))}${c.at_street ? ` ${pill("transferred", "街道 street")}` : ""}</td>
    <td>${esc(c.assignee || "—")}</td>
    <td>${caseStatus(c.status)}</td>
    <td class="due">${c.due ? when(c.due) : "—"}${c.overdue ? " 逾期 overdue" : ""}</td></tr>`;
}

async function queue(more) {
  try {
    await loadGrids();
    if (!$("f-grid").options.length) fillFilters();
    const v = await call("GET", "/api/v1/cases?" + filterQuery(more ? lastReceipt : null));
    const rows = v.cases.map(caseRow).join("");
    if (more) $("case-rows").insertAdjacentHTML("beforeend", rows);
    else $("case-rows").innerHTML = rows || `<tr><td colspan="7" class="muted">没有符合条件的诉求 No cases match</td></tr>`;
    if (v.cases.length) lastReceipt = v.cases[v.cases.length - 1].receipt;
    const shown = $("case-rows").querySelectorAll("tr.case").length;
    $("case-total").textContent = `${shown} / ${v.total}`;
    $("case-more").hidden = shown >= v.total;
  } catch (e) { say("读取诉求失败 " + e.message); }
}

$("case-filter").addEventListener("submit", (e) => { e.preventDefault(); queue(false); });
$("case-more").addEventListener("click", () => queue(true));
// `#cases/CODE`: the queue of a grid (the map's case counts link here).
views.cases = async (grid) => {
  if (grid !== undefined) {
    try { await loadGrids(); } catch (e) { say(e.message); return; }
    if (!$("f-grid").options.length) fillFilters();
    $("f-grid").value = grid;
  }
  queue(false);
};

// One case.
let shownCase = null;
function renderCase(c) {
  shownCase = c;
  const s = c.submission || {};
  $("case-head").dataset.receipt = c.receipt;
  $("case-head").dataset.status = c.status;
  $("case-head").innerHTML = `<h2>${esc(s.title)} ${caseStatus(c.status)}</h2>
    <dl class="fields">
      <dt>回执编号 Receipt</dt><dd>${esc(c.receipt)}</dd>
      <dt>类别 Category</dt><dd>${esc(CATEGORY[s.category] || s.category)}${s.item_code ? " · " + esc(s.item_code) : ""}</dd>
      <dt>承办网格站 Station</dt><dd>${esc(c.station_name || gridName(c.station))}${c.at_street ? " · 已上报街道 at the street" : ""}</dd>
      <dt>承办人 Assignee</dt><dd>${esc(c.assignee || "—")}</dd>
      ${c.department ? `<dt>转办部门 Department</dt><dd>${esc(c.department)}</dd>` : ""}
      <dt>登记时间 Registered</dt><dd>${when(c.created)}</dd>
      <dt>办理期限 Due</dt><dd>${when(c.due)}${c.supervised ? ` ${pill("major", "督办 ×" + c.supervised)}` : ""}</dd>
      ${c.outcome ? `<dt>结果 Outcome</dt><dd>${esc(c.outcome)}</dd>` : ""}
      ${c.mediations ? `<dt>调解 Mediations</dt><dd>${c.mediations}${c.visited ? " · 已回访 visited" : ""}</dd>` : ""}
    </dl>`;
  const contact = s.contact || {};
  $("case-submission").innerHTML = `<h3>群众反映 What the resident said</h3><p>${esc(s.description || "—")}</p>
    <p class="muted">联系人 Contact: ${esc(contact.name || "—")} ${esc(contact.phone || "")} · 网关 Gateway ${esc(c.gateway)}</p>`;
  $("case-timeline").innerHTML = c.history.map((h) => `<li data-action="${esc(h.action)}"><b>${esc(ACTION[h.action] || h.action || CASE_STATUS[h.status] || h.status)}</b> ${caseStatus(h.status)}
      <div class="muted">${when(h.at)} · ${esc(h.by)}</div>
      ${h.note ? `<div>${esc(h.note)}</div>` : ""}${detailsText(h.details)}</li>`).join("");
  $("case-actions").innerHTML = (c.actions || []).map((a) => `<button class="act case-action" data-action="${a}">${esc(ACTION[a] || a)}</button>`).join("")
    || `<span class="muted">现在没有可做的操作 Nothing to do now</span>`;
  $("case-step").hidden = true;
}

function detailsText(d) {
  if (!d || typeof d !== "object") return "";
  const parts = [];
  if (d.station) parts.push(`网格站 ${gridName(d.station)}`);
  if (d.person) parts.push(`承办人 ${d.person}`);
  if (d.session) parts.push(`第 ${d.session} 次调解 session ${d.session}`);
  if (d.parties?.length) parts.push(`当事人 ${d.parties.join("、")}`);
  if (d.to) parts.push(`移交 ${d.to}`);
  if (d.department) parts.push(`部门 ${d.department}`);
  if (d.approved !== undefined) parts.push(d.approved ? "准予 approved" : "不予 refused");
  if (d.times) parts.push(`督办第 ${d.times} 次`);
  return parts.length ? `<div class="muted">${esc(parts.join(" · "))}</div>` : "";
}

// Nothing of the last case shown stays on the page: another may be opened, or another
// operator may log in.
function clearCase() {
  shownCase = null;
  for (const id of ["case-head", "case-submission", "case-timeline", "case-actions"]) $(id).innerHTML = "";
  for (const k of ["receipt", "status", "missing"]) delete $("case-head").dataset[k];
  $("case-step").hidden = true;
}

async function openCase(receipt) {
  clearCase();
  try {
    await loadGrids();
    renderCase(await call("GET", "/api/v1/cases/" + encodeURIComponent(receipt)));
  } catch (e) {
    // Another station's case answers as none: the page says no more than that.
    $("case-head").dataset.missing = "true";
    $("case-head").innerHTML = `<h2>没有这件诉求，或不在您的管辖范围 No such case within your scope</h2><p class="muted">${esc(e.message)}</p>`;
  }
}
views.case = (receipt) => openCase(receipt || "");

// The form of one action: its fields and its note.
function stepForm(action) {
  const f = $("case-step");
  const fields = (FIELDS[action] || []).map(([name, label, kind]) => {
    if (kind === "station") {
      const bases = grids.filter((g) => g.level === "base");
      return `<label>${esc(label)} <select name="${name}" required>${bases.map((g) => `<option value="${esc(g.code)}"${g.code === shownCase.station ? " selected" : ""}>${esc(g.name)}</option>`).join("")}</select></label>`;
    }
    if (kind === "decision") {
      return `<label>${esc(label)} <select name="${name}"><option value="true">准予 Approve</option><option value="false">不予 Refuse</option></select></label>`;
    }
    return `<label>${esc(label)} <input name="${name}" ${kind === "list" ? "" : "required"} maxlength="64"></label>`;
  }).join("");
  const noteName = action === "decide" ? "reason" : "note";
  const noteLabel = action === "decide" ? "理由（不予时必填）Reason (required when refused)" : "说明 Note";
  f.innerHTML = `<b>${esc(ACTION[action] || action)}</b>${fields}
    <label>${noteLabel} <textarea name="${noteName}" rows="3" maxlength="2000"${NOTE_REQUIRED.has(action) ? " required" : ""}></textarea></label>
    <button class="act" type="submit" id="case-step-go">提交 Submit</button> <button class="act" type="button" id="case-step-cancel">取消 Cancel</button>
    <p class="error" id="case-step-error"></p>`;
  f.dataset.action = action;
  f.hidden = false;
}

$("case-actions").addEventListener("click", (e) => {
  const b = e.target.closest("button.case-action");
  if (b) stepForm(b.dataset.action);
});

$("case-step").addEventListener("click", (e) => {
  if (e.target.id === "case-step-cancel") $("case-step").hidden = true;
});

$("case-step").addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = $("case-step");
  const body = { action: f.dataset.action };
  for (const el of f.elements) {
    if (!el.name) continue;
    if (el.name === "parties") body.parties = el.value.split(/[,，、]/).map((p) => p.trim()).filter(Boolean);
    else if (el.name === "approved") body.approved = el.value === "true";
    else body[el.name] = el.value;
  }
  $("case-step-go").disabled = true;
  try {
    renderCase(await call("POST", `/api/v1/cases/${encodeURIComponent(shownCase.receipt)}/actions`, body));
  } catch (err) {
    $("case-step-error").textContent = "未能办理 Not taken: " + err.message;
    $("case-step-go").disabled = false;
  }
});

resets.push(() => { grids = null; clearCase(); $("f-grid").innerHTML = ""; $("case-rows").innerHTML = ""; });
