"use strict";
// 账号管理 (administrators): operator accounts kept at central — create, disable, reset a
// password, change a role or a scope. Central refuses an administrator disabling or demoting
// themselves, and says why.

const ROLE = { operator: "操作员 Operator", supervisor: "主管 Supervisor", administrator: "管理员 Administrator" };

function scopeOptions(selected) {
  return `<option value="">全街道 Whole street</option>` + (grids || []).map((g) =>
    `<option value="${esc(g.code)}"${g.code === selected ? " selected" : ""}>${indent[g.level] || ""}${esc(g.name)}</option>`).join("");
}

async function accounts() {
  try {
    await loadGrids();
    $("acc-scope").innerHTML = scopeOptions("");
    const v = await call("GET", "/api/v1/operators");
    $("account-rows").innerHTML = v.accounts.map((a) => `<tr class="account" data-name="${esc(a.name)}" data-disabled="${a.disabled}">
      <td><b>${esc(a.name)}</b></td>
      <td><select class="acc-role">${Object.entries(ROLE).map(([k, l]) => `<option value="${k}"${k === a.role ? " selected" : ""}>${esc(l)}</option>`).join("")}</select></td>
      <td><select class="acc-scope">${scopeOptions(a.scope)}</select></td>
      <td>${a.disabled ? pill("offline", "已停用 disabled") : pill("online", "启用 active")}</td>
      <td class="muted">${a.source === "central" ? "中心 central" : "配置文件 central.toml"}${a.updated_by ? ` · ${esc(a.updated_by)}` : ""}</td>
      <td><button class="act acc-save">保存 Save</button>
        <button class="act acc-toggle">${a.disabled ? "启用 Enable" : "停用 Disable"}</button>
        <button class="act acc-reset">重置密码 Reset password</button></td></tr>`).join("");
  } catch (e) { say("读取账号失败 " + e.message); }
}
views.accounts = accounts;

$("account-rows").addEventListener("click", async (e) => {
  const b = e.target.closest("button");
  const row = e.target.closest("tr[data-name]");
  if (!b || !row) return;
  const name = row.dataset.name;
  const path = `/api/v1/operators/${encodeURIComponent(name)}`;
  try {
    if (b.classList.contains("acc-save")) {
      const scope = row.querySelector(".acc-scope").value;
      await call("PATCH", path, { role: row.querySelector(".acc-role").value, scope: scope || null });
      say(`已保存 ${name} saved`);
    } else if (b.classList.contains("acc-toggle")) {
      await call("PATCH", path, { disabled: row.dataset.disabled !== "true" });
    } else if (b.classList.contains("acc-reset")) {
      const password = prompt(`${name} 的新密码（至少 10 位）New password (10+ characters)`);
      if (!password) return;
      await call("PUT", path + "/password", { password });
      say(`已重置 ${name} 的密码 password reset`);
    }
    accounts();
  } catch (err) { say("未能保存 Not saved: " + err.message); }
});

$("account-new").addEventListener("submit", async (e) => {
  e.preventDefault();
  const scope = $("acc-scope").value;
  try {
    await call("POST", "/api/v1/operators", {
      name: $("acc-name").value.trim(), role: $("acc-role").value, scope: scope || undefined, password: $("acc-password").value,
    });
    $("account-new").reset();
    say("已创建 created");
    accounts();
  } catch (err) { say("未能创建 Not created: " + err.message); }
});
