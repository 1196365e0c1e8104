// A terminal's page signs in once: the terminal's token — from the address's fragment
// (#token=…, never sent to a server) or typed in by the installer — is exchanged for an
// HttpOnly session cookie, and the fragment is dropped from the address. Every request of the
// page then carries the cookie; the token is kept nowhere.
"use strict";

function gridedgeAskToken(message) {
  return new Promise((resolve) => {
    const box = document.createElement("form");
    box.id = "device-signin";
    box.style.cssText = "position:fixed;inset:0;display:flex;flex-direction:column;gap:12px;" +
      "align-items:center;justify-content:center;background:#000c;color:#fff;z-index:99;font:18px system-ui";
    box.innerHTML = '<div>终端登录 · Sign this terminal in</div>' +
      '<input name="token" type="password" autocomplete="off" placeholder="终端令牌 terminal token" style="font:18px system-ui;padding:8px;width:20em">' +
      '<button type="submit" style="font:18px system-ui;padding:8px 24px">登录 Sign in</button>' +
      '<div class="why" style="color:#f99"></div>';
    box.querySelector(".why").textContent = message || "";
    box.addEventListener("submit", (e) => {
      e.preventDefault();
      const token = box.querySelector("input").value.trim();
      if (!token) return;
      box.remove();
      resolve(token);
    });
    document.body.appendChild(box);
    box.querySelector("input").focus();
  });
}

async function gridedgeDeviceSession() {
  const who = await fetch("/api/v1/device-session");
  if (who.ok) return who.json();
  const fragment = new URLSearchParams(location.hash.slice(1));
  let token = fragment.get("token");
  if (fragment.has("token")) history.replaceState(null, "", location.pathname + location.search);
  let why = "";
  for (;;) {
    if (!token) token = await gridedgeAskToken(why);
    const r = await fetch("/api/v1/device-session", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token }),
    });
    if (r.ok) return r.json();
    try { why = (await r.json()).error || String(r.status); } catch (_) { why = String(r.status); }
    token = null;
  }
}
