/* Doorstep fleet UI: one page, a hash router, plain DOM. Talks only to the REST API
 * (the REST API, OpenAPI at /docs). Views re-render every REFRESH_MS by patching the DOM in place
 * (no flicker, focus kept); the status bar says when data was last fetched and warns when
 * a refresh fails. Device models are described by /static/models.json, generated from
 * gateway/profiles (enum labels, bit names, units). */
"use strict";

(() => {
  const REFRESH_MS = 2000;
  const SEVERITIES = ["critical", "major", "minor", "info"];
  const ROLES = ["viewer", "maintainer", "operator", "admin"];
  const RANGES = { "1h": 3600, "6h": 6 * 3600, "24h": 24 * 3600 };
  const SVG_NS = "http://www.w3.org/2000/svg";

  const state = {
    me: null, // {name, role}
    catalog: {}, // model -> {kind, description, key_points, points: {name: {unit, enum, bits}}}
    clockOffsetMs: 0, // server clock - browser clock
    lastOk: null, // Date of the last successful refresh
    token: 0, // bumps on every route change; stale async work checks it
    timer: null,
    flash: null, // {kind: "ok"|"error", text} shown above a view until the next route
    pending: new Set(), // alarm ids being acknowledged
    afterLogin: "#/",
  };

  const $ = (sel) => document.querySelector(sel);
  const view = () => $("#view");

  // ---------- DOM building and in-place patching ----------

  function h(tag, attrs, ...children) {
    const svg = tag.startsWith("svg:");
    const el = svg ? document.createElementNS(SVG_NS, tag.slice(4)) : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === false || v === null || v === undefined) continue;
      el.setAttribute(k, v === true ? "" : String(v));
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
    }
  }

  function sameNode(a, b) {
    if (a.nodeType !== b.nodeType || a.nodeName !== b.nodeName) return false;
    if (a.nodeType !== Node.ELEMENT_NODE) return true;
    return a.getAttribute("data-key") === b.getAttribute("data-key");
  }

  function syncAttributes(have, want) {
    for (const { name } of Array.from(have.attributes)) {
      if (name === "open" && have.nodeName === "DETAILS") continue; // the user's choice
      if (!want.hasAttribute(name)) have.removeAttribute(name);
    }
    for (const { name, value } of Array.from(want.attributes)) {
      if (have.getAttribute(name) !== value) have.setAttribute(name, value);
    }
    if (have.nodeName === "BUTTON" || have.nodeName === "INPUT" || have.nodeName === "SELECT") {
      have.disabled = want.hasAttribute("disabled");
    }
  }

  /** Make parent's children look like `wanted` while keeping the nodes that match. */
  function patch(parent, wanted) {
    const have = Array.from(parent.childNodes);
    wanted.forEach((w, i) => {
      const o = have[i];
      if (!o) {
        parent.appendChild(w);
      } else if (!sameNode(o, w)) {
        parent.replaceChild(w, o);
      } else if (o.nodeType === Node.ELEMENT_NODE) {
        syncAttributes(o, w);
        patch(o, Array.from(w.childNodes));
        if (o.nodeName === "SELECT") {
          const chosen = o.querySelector("option[selected]");
          o.value = chosen ? chosen.value : o.options.length ? o.options[0].value : "";
        }
      } else if (o.nodeValue !== w.nodeValue) {
        o.nodeValue = w.nodeValue;
      }
    });
    for (let i = wanted.length; i < have.length; i++) parent.removeChild(have[i]);
  }

  function show(nodes) {
    patch(view(), [].concat(nodes).flat(Infinity).filter(Boolean));
  }

  // ---------- formatting ----------

  const pad = (n) => String(n).padStart(2, "0");
  const clock = (d) => `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  const serverNow = () => Date.now() + state.clockOffsetMs;

  function ago(iso) {
    if (!iso) return "never";
    const s = Math.max(0, Math.round((serverNow() - Date.parse(iso)) / 1000));
    if (s < 90) return `${s} s ago`;
    if (s < 90 * 60) return `${Math.round(s / 60)} min ago`;
    if (s < 36 * 3600) return `${Math.round(s / 3600)} h ago`;
    return `${Math.round(s / 86400)} d ago`;
  }

  function when(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    const today = new Date().toDateString() === d.toDateString();
    const date = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
    return today ? clock(d) : `${date} ${clock(d)}`;
  }

  function duration(s) {
    if (s === null || s === undefined) return "–";
    s = Math.round(s);
    const d = Math.floor(s / 86400), hh = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60);
    if (d) return `${d} d ${hh} h`;
    if (hh) return `${hh} h ${m} min`;
    return m ? `${m} min ${s % 60} s` : `${s} s`;
  }

  function num(v, digits) {
    if (typeof v !== "number" || !Number.isFinite(v)) return String(v);
    const d = digits ?? (Number.isInteger(v) ? 0 : Math.abs(v) < 10 ? 2 : 1);
    return v.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
  }

  const isNumber = (v) => typeof v === "number" && Number.isFinite(v);
  const rank = (role) => ROLES.indexOf(role);
  const sevRank = (s) => (SEVERITIES.indexOf(s) + 5) % 5; // unknown severities last

  // ---------- API ----------

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function detailOf(data, fallback) {
    if (data && typeof data.detail === "string") return data.detail;
    if (data && Array.isArray(data.detail)) {
      return data.detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
    }
    return fallback;
  }

  async function api(method, path, body) {
    const opts = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    let r;
    try {
      r = await fetch(path, opts);
    } catch (e) {
      throw new ApiError(0, "server unreachable");
    }
    const text = await r.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (e) {
      data = null;
    }
    if (!r.ok) {
      const err = new ApiError(r.status, detailOf(data, `${r.status} ${r.statusText}`.trim()));
      if (r.status === 401 && path !== "/api/login") loggedOut();
      throw err;
    }
    return data;
  }

  const get = (path) => api("GET", path);
  const qs = (params) => {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== "") q.set(k, v);
    return q.toString();
  };

  // ---------- device catalog (enum labels, bit names, units) ----------

  function pointInfo(model, point) {
    const m = state.catalog[model];
    return (m && m.points && m.points[point]) || {};
  }

  function setBits(value, bits) {
    if (!isNumber(value)) return [];
    const out = [];
    for (let i = 0; i < 32; i++) {
      if (Math.floor(value / 2 ** i) % 2 === 1) out.push(bits && bits[i] ? bits[i] : `bit ${i}`);
    }
    return out;
  }

  const popcount = (value) => setBits(value, null).length;

  /** A point's value as a person reads it: enum label, set bits, number with unit. */
  function formatValue(model, point, value) {
    const info = pointInfo(model, point);
    if (value === null || value === undefined) return "–";
    if (info.enum && isNumber(value)) return info.enum[value] ?? `unknown (${value})`;
    if (info.bits && isNumber(value)) {
      const on = setBits(value, info.bits);
      return on.length ? on.join(", ") : "none";
    }
    if (typeof value === "boolean") return value ? "yes" : "no";
    if (isNumber(value)) return info.unit ? `${num(value)} ${info.unit}` : num(value);
    return String(value);
  }

  // ---------- status bar ----------

  function markUpdated() {
    state.lastOk = new Date();
    $("#updated").textContent = `updated ${clock(state.lastOk)}`;
    $("#stale").hidden = true;
    $("#stale").textContent = "";
  }

  function markStale(err) {
    const since = state.lastOk ? `since ${clock(state.lastOk)}` : "yet";
    const el = $("#stale");
    el.textContent = `⚠ Not updated ${since}: ${err.message}. Retrying every ${REFRESH_MS / 1000} s.`;
    el.hidden = false;
  }

  // ---------- session ----------

  function showSession() {
    const me = state.me;
    $("#nav").hidden = !me;
    $("#who").hidden = !me;
    $("#who-name").textContent = me ? me.name : "";
    $("#who-role").textContent = me ? me.role : "";
  }

  function loggedOut() {
    if (!state.me) return;
    state.me = null;
    showSession();
    state.flash = {
      kind: "error", text: "Your session ended: please log in again.", page: "#/login",
    };
    if (!location.hash.startsWith("#/login")) {
      state.afterLogin = location.hash || "#/";
      location.hash = "#/login";
    }
  }

  /** The logged-in user, or null (a 401); throws when the server cannot be asked. */
  async function fetchMe() {
    try {
      return await get("/api/me");
    } catch (e) {
      if (e.status === 401) return null;
      throw e;
    }
  }

  // ---------- views ----------

  function flashBox() {
    const f = state.flash;
    if (!f) return null;
    return h("p", { class: `flash flash-${f.kind}`, role: f.kind === "error" ? "alert" : "status" },
      f.text);
  }

  function badge(online) {
    return online
      ? h("span", { class: "badge online" }, "● online")
      : h("span", { class: "badge offline" }, "▲ offline");
  }

  function qualityNote(q) {
    if (!q || q === "good") return null;
    return h("span", { class: `qual q-${q}` }, ` (${q})`);
  }

  // --- login ---

  const loginView = {
    title: "Log in",
    live: false,
    load: async () => null,
    render: () => [
      h("h1", {}, "Log in"),
      flashBox(),
      h("form", { id: "login-form", class: "login", "data-form": "login" },
        h("label", { for: "login-name" }, "Name"),
        h("input", { id: "login-name", name: "name", autocomplete: "username", required: true }),
        h("label", { for: "login-password" }, "Password"),
        h("input", {
          id: "login-password", name: "password", type: "password",
          autocomplete: "current-password", required: true,
        }),
        h("button", { type: "submit" }, "Log in"),
        h("p", { id: "login-error", class: "error", role: "alert" })),
    ],
  };

  async function submitLogin(form) {
    const err = $("#login-error");
    err.textContent = "";
    const button = form.querySelector("button");
    button.disabled = true;
    try {
      state.me = await api("POST", "/api/login", {
        name: form.elements.name.value, password: form.elements.password.value,
      });
      state.flash = null;
      showSession();
      const target = state.afterLogin && !state.afterLogin.startsWith("#/login")
        ? state.afterLogin : "#/";
      state.afterLogin = "#/";
      if (location.hash === target) route(); else location.hash = target;
    } catch (e) {
      err.textContent = e.status === 0 ? "The server cannot be reached." : e.message;
      form.elements.password.select();
    } finally {
      button.disabled = false;
    }
  }

  // --- overview ---

  function urgency(g) {
    const a = g.open_alarms || {};
    // smaller sorts first: offline or critical, then major or unacknowledged, then the rest
    const group = !g.online || a.critical > 0 ? 0 : a.major > 0 || g.unacked_alarms > 0 ? 1 : 2;
    return [group, g.online ? 1 : 0, -(a.critical || 0), -(a.major || 0),
      -(g.unacked_alarms || 0), -(a.minor || 0), -(a.info || 0)];
  }

  function compareArrays(a, b) {
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i] < b[i] ? -1 : 1;
    return 0;
  }

  const overviewView = {
    title: "Overview",
    live: true,
    load: () => get("/api/overview"),
    render(data) {
      if (data.generated_at) state.clockOffsetMs = Date.parse(data.generated_at) - Date.now();
      const rows = [];
      const empty = [];
      for (const site of data.sites) {
        if (!site.gateways.length) empty.push(site);
        for (const g of site.gateways) rows.push({ site, g });
      }
      rows.sort((x, y) => compareArrays(urgency(x.g), urgency(y.g))
        || x.site.name.localeCompare(y.site.name) || x.g.name.localeCompare(y.g.name));
      const offline = rows.filter((r) => !r.g.online).length;
      const total = { unacked: 0 };
      for (const s of SEVERITIES) total[s] = 0;
      for (const { g } of rows) {
        for (const s of SEVERITIES) total[s] += (g.open_alarms || {})[s] || 0;
        total.unacked += g.unacked_alarms || 0;
      }
      return [
        h("h1", {}, "Overview"),
        flashBox(),
        h("p", { class: "summary", id: "summary" },
          `${data.sites.length} sites, ${rows.length} gateways: `,
          h("span", { class: offline ? "warn" : "" }, `${offline} offline`), ", ",
          h("span", { class: total.critical ? "sev-critical-text" : "" },
            `${total.critical} critical`), `, ${total.major} major alarms open, `,
          `${total.unacked} unacknowledged`),
        h("div", { class: "scroll" }, h("table", { class: "grid overview", id: "overview" },
          h("caption", {}, "Gateways, those needing a person first"),
          h("thead", {}, h("tr", {},
            ["Status", "Site", "Gateway", "Last seen", "Version"].map((t) =>
              h("th", { scope: "col" }, t)),
            SEVERITIES.map((s) => h("th", { scope: "col", class: "n" }, s)),
            ["Unacked", "Outbox", "Devices"].map((t) => h("th", { scope: "col", class: "n" }, t)))),
          h("tbody", {}, rows.map(({ site, g }) => {
            const a = g.open_alarms || {};
            return h("tr", {
              "data-key": `${site.name}/${g.name}`,
              "data-gateway": `${site.name}/${g.name}`,
              class: !g.online ? "row-offline" : a.critical ? "row-critical" : "",
            },
            h("td", {}, badge(g.online)),
            h("td", {}, h("a", { href: `#/site/${encodeURIComponent(site.name)}` },
              site.title || site.name), site.title && site.title !== site.name
              ? h("small", { class: "site-name" }, ` ${site.name}`) : null),
            h("th", { scope: "row" }, g.name),
            h("td", { title: g.last_seen || "" }, ago(g.last_seen)),
            h("td", {}, g.version || "–"),
            SEVERITIES.map((s) => h("td", {
              class: `n ${a[s] ? `sev sev-${s}` : "zero"}`, "data-severity": s,
            }, h("span", { class: "sr-only" }, `${s}: `), String(a[s] || 0))),
            h("td", { class: `n ${g.unacked_alarms ? "warn" : "zero"}` },
              String(g.unacked_alarms || 0)),
            h("td", { class: "n" }, g.outbox_depth === null || g.outbox_depth === undefined
              ? "–" : String(g.outbox_depth)),
            h("td", { class: "n" }, String(g.devices ?? "–")));
          })))),
        rows.length ? null : h("p", {}, "No gateways are registered yet."),
        empty.length
          ? h("p", { class: "muted" }, "Sites without gateways: ",
            empty.map((s) => s.title || s.name).join(", "))
          : null,
      ];
    },
  };

  // --- site ---

  const ELEVATOR_CODES = {
    0: "fault free", 1: "safety circuit open while running", 2: "door-close fault",
    3: "door-open fault", 4: "car stopped outside unlocking zone", 5: "unintended car movement",
    6: "motor run-time limiter tripped", 7: "floor position lost", 8: "prevent-rerun fault",
    40: "back to automatic", 41: "main power off", 42: "stop service", 43: "inspection",
    44: "fire return", 45: "firefighter operation", 46: "emergency power", 47: "earthquake",
    90: "alarm button pressed", 91: "bottom overtravel", 92: "top overtravel",
    93: "trapped at landing", 94: "overspeed", 95: "door open while running",
    96: "trapped outside door zone",
  };

  const CP_STATES = {
    A: "no vehicle", B: "vehicle connected, not charging", C: "charging",
    D: "charging, ventilation needed", E: "no power / short circuit", F: "charger not available",
  };

  /** Facts about one device: {label, text, point?, quality?, bad?} (bad = needs a person). */
  function fact(dev, label, point, text, bad) {
    const p = point ? dev.points[point] : null;
    if (point && !p) return null;
    return { label, point, text, quality: p ? p.quality : null, bad: Boolean(bad) };
  }

  const v = (dev, point) => (dev.points[point] ? dev.points[point].value : undefined);
  const label = (dev, point) => formatValue(dev.model, point, v(dev, point));
  const has = (dev, point) => dev.points[point] !== undefined;

  function doorList(value) {
    const doors = setBits(value, null).map((b) => b.replace("bit ", ""))
      .map((i) => `door ${Number(i) + 1}`);
    return doors.length ? doors.join(", ") : "none";
  }

  /** The 16 doors of a locker board: number, and in words what is special about each. */
  function doorGrid(d) {
    const bit = (value, i) => isNumber(value) && Math.floor(value / 2 ** i) % 2 === 1;
    const items = v(d, "item_bitmap"), locked = v(d, "locked_bitmap");
    const forced = v(d, "forced_open_bitmap"), late = v(d, "door_open_too_long_bitmap");
    if (!isNumber(items) && !isNumber(locked)) return null;
    return h("ol", { class: "doors", "aria-label": `Doors of ${d.name}` },
      Array.from({ length: 16 }, (_, i) => {
        const words = [];
        if (bit(forced, i)) words.push("forced open");
        else if (isNumber(locked) && !bit(locked, i)) words.push("open");
        if (bit(late, i)) words.push("open too long");
        if (bit(items, i)) words.push("parcel");
        const cls = bit(forced, i) || bit(late, i) ? "door door-bad"
          : words.includes("open") ? "door door-open" : bit(items, i) ? "door door-full" : "door";
        return h("li", { class: cls, title: `door ${i + 1}: ${words.join(", ") || "empty"}` },
          h("span", { class: "door-n" }, String(i + 1)),
          h("span", { class: "door-s" }, bit(forced, i) || bit(late, i) ? "⚠"
            : words.includes("open") ? "○" : bit(items, i) ? "■" : "·"),
          h("span", { class: "sr-only" }, `: ${words.join(", ") || "empty"}`));
      }));
  }

  const RENDERERS = {
    "ELV-24476": (d) => {
      const mode = v(d, "service_mode");
      const code = v(d, "message_code");
      const faults = setBits(v(d, "fault_bitmap"), pointInfo(d.model, "fault_bitmap").bits);
      const moving = v(d, "car_status") === 1;
      return [
        fact(d, "Position", "car_position", `floor ${v(d, "car_position")}`),
        fact(d, "Car", "car_status", moving
          ? `running ${label(d, "car_direction")}` : "stopped"),
        fact(d, "Door", "car_door_state", label(d, "car_door_state"),
          v(d, "car_door_state") === 6),
        fact(d, "Mode", "service_mode",
          mode === 1 ? "normal service" : `out of service: ${label(d, "service_mode")}`,
          mode !== 1),
        v(d, "req_out_of_service") === 1
          ? fact(d, "Requested", "req_out_of_service", "out of service (by the gateway)", true)
          : null,
        fact(d, "Passengers", "passenger_status",
          v(d, "passenger_status") === 1 ? "person(s) in car" : "car empty"),
        fact(d, "Load", "load_pct", `${label(d, "load_pct")}${v(d, "overload") === 1
          ? " — overload" : ""}`, v(d, "overload") === 1),
        fact(d, "Fault", "message_code", !code ? "none"
          : `code ${code}: ${ELEVATOR_CODES[code] || "unknown code"}`, Boolean(code)),
        faults.length ? fact(d, "Fault bits", "fault_bitmap", faults.join(", "), true) : null,
        v(d, "alarm_button") === 1 ? fact(d, "Alarm button", "alarm_button", "pressed", true) : null,
        fact(d, "Power", "main_power", label(d, "main_power"), v(d, "main_power") === 1),
        v(d, "fire_recall_feedback")
          ? fact(d, "Fire recall", "fire_recall_feedback", label(d, "fire_recall_feedback"), true)
          : null,
      ];
    },
    "LCK-16": (d) => {
      const items = v(d, "item_bitmap"), locked = v(d, "locked_bitmap");
      const forced = v(d, "forced_open_bitmap"), late = v(d, "door_open_too_long_bitmap");
      const board = v(d, "board_status");
      return [
        fact(d, "Occupancy", "item_bitmap", `${popcount(items)}/16 occupied`),
        fact(d, "Doors", "locked_bitmap", `${16 - popcount(locked)}/16 open`),
        fact(d, "Forced open", "forced_open_bitmap", doorList(forced), popcount(forced) > 0),
        fact(d, "Open too long", "door_open_too_long_bitmap", doorList(late), popcount(late) > 0),
        fact(d, "Board", "board_status", board ? label(d, "board_status") : "ok", Boolean(board)),
      ];
    },
    "EVSE-HEC": (d) => {
      const cp = label(d, "cp_state");
      const phases = ["l1_current", "l2_current", "l3_current"].filter((p) => has(d, p));
      const amps = phases.map((p) => v(d, p)).filter(isNumber);
      const fault = v(d, "fault_code"), temp = v(d, "temperature");
      return [
        fact(d, "State", "cp_state", `${cp} — ${CP_STATES[cp] || "unknown"}${has(d, "charging_state")
          ? ` (${label(d, "charging_state")})` : ""}`, cp === "E" || cp === "F"),
        phases.length ? fact(d, "Current", phases[0], `${num(Math.max(...amps), 1)} A${amps.length > 1
          ? ` (${phases.map((p, i) => `L${i + 1} ${num(v(d, p), 1)}`).join(" · ")})` : ""}`) : null,
        fact(d, "Setpoint", "max_current", `${num(v(d, "max_current"), 1)} A`),
        fact(d, "Applied", "applied_current", `${num(v(d, "applied_current"), 1)} A`),
        fact(d, "Power", "power", label(d, "power")),
        fact(d, "Temperature", "temperature", label(d, "temperature"), temp >= 60),
        fact(d, "Locked", "remote_lock", v(d, "remote_lock") === 0
          ? "locked (state F)" : "unlocked"),
        v(d, "lockout_latched") === 1
          ? fact(d, "Lockout", "lockout_latched", "latched — manual reset needed", true) : null,
        fact(d, "Fault", "fault_code", label(d, "fault_code"), Boolean(fault)),
        fact(d, "Contactor", "contactor", label(d, "contactor"), v(d, "contactor") === 2),
        v(d, "residual_current_status")
          ? fact(d, "Residual current", "residual_current_status",
            label(d, "residual_current_status"), true) : null,
        v(d, "failsafe_active") === 1
          ? fact(d, "Failsafe", "failsafe_active", "failsafe current applied (watchdog)", true)
          : null,
      ];
    },
    "SUNSPEC-INV": (d) => {
      const st = label(d, "st"), events = v(d, "evt1");
      const enabled = v(d, "wmaxlim_ena");
      return [
        fact(d, "Power", "w", label(d, "w")),
        fact(d, "Limit", "wmaxlimpct", `${label(d, "wmaxlimpct")}${enabled === 0
          ? " (limit disabled)" : enabled === 1 ? " (limit enabled)" : ""}`),
        fact(d, "State", "st", st, st === "FAULT"),
        fact(d, "Grid", "conn", label(d, "conn"), v(d, "conn") === 0),
        fact(d, "Events", "evt1", events ? label(d, "evt1") : "none", Boolean(events)),
      ];
    },
    "SUNSPEC-METER": (d) => {
      const signed = (p) => {
        const w = v(d, p);
        if (!isNumber(w)) return String(w);
        const dir = w > 0 ? "import" : w < 0 ? "export" : "";
        return `${w > 0 ? "+" : w < 0 ? "−" : ""}${num(Math.abs(w))} W ${dir}`.trim();
      };
      return [
        fact(d, "Grid power", "w", signed("w")),
        ...["wpha", "wphb", "wphc"].map((p, i) => fact(d, `Phase ${"ABC"[i]}`, p, signed(p))),
        fact(d, "Current", "a", label(d, "a")),
        fact(d, "Imported", "totwhimp", label(d, "totwhimp")),
        fact(d, "Exported", "totwhexp", label(d, "totwhexp")),
      ];
    },
    "SIO-1": (d) => [
      fact(d, "State", "state", label(d, "state"), has(d, "state") && v(d, "state") !== 1),
      fact(d, "Inputs", "input_bitmap", label(d, "input_bitmap")),
      fact(d, "Outputs", "output_bitmap", label(d, "output_bitmap")),
      fact(d, "Watchdog left", "watchdog_remaining", `${num(v(d, "watchdog_remaining") * 10)} ms`),
      fact(d, "Failsafe trips", "failsafe_trips", label(d, "failsafe_trips")),
    ],
  };

  /** Points worth a history link: numeric and measured. */
  const HISTORY_POINTS = {
    "EVSE-HEC": ["l1_current", "applied_current", "power", "temperature"],
    "SUNSPEC-INV": ["w", "wmaxlimpct"],
    "SUNSPEC-METER": ["w"],
    "ELV-24476": ["car_position", "load_pct"],
  };

  function historyHref(site, gateway, device, point) {
    return `#/history?${qs({ site, gateway, device, point, range: "1h" })}`;
  }

  function pointsTable(dev, caption) {
    const names = Object.keys(dev.points).sort();
    return h("table", { class: "grid points" },
      h("caption", { class: "sr-only" }, caption),
      h("thead", {}, h("tr", {}, ["Point", "Value", "Quality", "Read"].map((t) =>
        h("th", { scope: "col" }, t)))),
      h("tbody", {}, names.map((n) => {
        const p = dev.points[n];
        return h("tr", { "data-key": n, class: p.quality !== "good" ? `q-row-${p.quality}` : "" },
          h("th", { scope: "row" }, n),
          h("td", {}, formatValue(dev.model, n, p.value)),
          h("td", { class: `q-${p.quality}` }, p.quality),
          h("td", { title: p.at || "" }, ago(p.at)));
      })));
  }

  function deviceCard(site, gw, dev) {
    const render = RENDERERS[dev.model];
    const facts = render ? render(dev).filter(Boolean) : [];
    const qualities = Object.values(dev.points).map((p) => p.quality);
    const notGood = qualities.filter((q) => q !== "good");
    const allOffline = qualities.length > 0 && notGood.length === qualities.length
      && qualities.every((q) => q === "offline");
    const info = state.catalog[dev.model];
    const bad = facts.some((f) => f.bad);
    const links = (HISTORY_POINTS[dev.model] || []).filter((p) => has(dev, p));
    return h("section", {
      class: `device${bad ? " device-bad" : ""}${notGood.length ? " device-degraded" : ""}`,
      "data-key": dev.name, "data-device": dev.name, "aria-labelledby": `dev-${gw.name}-${dev.name}`,
    },
    h("h3", { id: `dev-${gw.name}-${dev.name}` }, dev.name,
      h("span", { class: "model" }, ` ${dev.model || "unknown model"}`)),
    h("p", { class: "device-meta" },
      info ? `${info.kind.replace("_", " ")} · ` : "",
      `seen ${ago(dev.last_seen)}`,
      allOffline ? h("span", { class: "qual q-offline" }, " · ▲ device offline")
        : notGood.length ? h("span", { class: "qual q-stale" },
          ` · ⚠ ${notGood.length} of ${qualities.length} points not good`) : ""),
    dev.model === "LCK-16" ? doorGrid(dev) : null,
    facts.length ? h("dl", { class: "facts" }, facts.map((f) => [
      h("dt", {}, f.label),
      h("dd", {
        class: [f.bad ? "bad" : "", f.quality && f.quality !== "good" ? `q-${f.quality}` : ""]
          .join(" ").trim(),
        "data-point": f.point || "",
      }, f.bad ? "⚠ " : "", f.text, qualityNote(f.quality)),
    ])) : null,
    links.length ? h("p", { class: "history-links" }, "History: ", links.map((p, i) => [
      i ? " · " : "", h("a", { href: historyHref(site, gw.name, dev.name, p) }, p)])) : null,
    Object.keys(dev.points).length
      ? h("details", { class: "all-points", open: !render },
        h("summary", {}, `All points (${Object.keys(dev.points).length})`),
        pointsTable(dev, `All points of ${dev.name}`))
      : h("p", { class: "muted" }, "No readings yet."));
  }

  function healthBlock(gw) {
    const hl = gw.health;
    if (!hl) return h("p", { class: "muted" }, "No health report yet.");
    const items = [
      ["CPU", `${num(hl.cpu_percent, 0)} %`, hl.cpu_percent >= 90],
      ["Memory", `${num(hl.memory_mib, 0)} MiB`, false],
      ["Disk free", `${num(hl.disk_free_mib, 0)} MiB`, hl.disk_free_mib < 100],
      ["Uptime", duration(hl.uptime_s), false],
      ["Outbox", `${hl.outbox_depth} queued${hl.outbox_dropped ? `, ${hl.outbox_dropped} dropped`
        : ""}`, hl.outbox_dropped > 0],
      ["Reported", hl.at ? ago(new Date(hl.at * 1000).toISOString()) : "–", false],
    ];
    const buses = Object.entries(hl.buses || {});
    const loop = Object.entries(hl.loop || {});
    return h("div", { class: "health" },
      h("h3", {}, "Gateway health"),
      h("dl", { class: "facts" }, items.map(([k, val, bad]) => [
        h("dt", {}, k), h("dd", { class: bad ? "bad" : "" }, bad ? "⚠ " : "", val)])),
      buses.length ? h("details", {}, h("summary", {}, `Buses (${buses.length})`),
        h("table", { class: "grid" },
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Bus"),
            h("th", { scope: "col" }, "Statistics"))),
          h("tbody", {}, buses.map(([name, stats]) => h("tr", { "data-key": name },
            h("th", { scope: "row" }, name),
            h("td", {}, Object.entries(stats).map(([k, x]) =>
              `${k} ${isNumber(x) ? num(x) : x}`).join(" · "))))))) : null,
      loop.length ? h("details", {}, h("summary", {}, "Control loop"),
        h("p", {}, loop.map(([k, x]) => `${k} ${isNumber(x) ? num(x) : x}`).join(" · "))) : null);
  }

  function siteView(name) {
    return {
      title: `Site ${name}`,
      live: true,
      load: () => get(`/api/sites/${encodeURIComponent(name)}`),
      render(site) {
        return [
          h("p", { class: "crumbs" }, h("a", { href: "#/" }, "Overview"), " › ", site.name),
          h("h1", {}, site.title || site.name),
          flashBox(),
          h("p", {}, h("a", { href: `#/alarms?${qs({ site: site.name })}` },
            "Alarms of this site")),
          site.gateways.length ? null : h("p", {}, "No gateways registered at this site."),
          site.gateways.map((g) => {
            const a = g.open_alarms || {};
            return h("section", { class: "gateway", "data-key": g.name, "data-gateway": g.name,
              "aria-labelledby": `gw-${g.name}` },
            h("h2", { id: `gw-${g.name}` }, `Gateway ${g.name} `, badge(g.online)),
            h("p", { class: "gw-meta" }, `last seen ${ago(g.last_seen)} · version ${g.version || "–"}`,
              " · open alarms: ", SEVERITIES.map((s) => h("span", {
                class: a[s] ? `chip sev-${s}` : "chip zero" }, `${a[s] || 0} ${s}`)),
              ` · ${g.unacked_alarms || 0} unacknowledged`),
            g.online ? null : h("p", { class: "note offline-note" },
              `▲ This gateway is offline: the values below are as it last reported them (${
                ago(g.last_seen)}).`),
            healthBlock(g),
            h("div", { class: "devices" },
              [...g.devices].sort((x, y) => x.name.localeCompare(y.name))
                .map((d) => deviceCard(site.name, g, d))));
          }),
        ];
      },
    };
  }

  // --- alarms ---

  function alarmsView(params) {
    const filter = ["open", "unacked", "all"].includes(params.get("state"))
      ? params.get("state") : "open";
    const site = params.get("site") || "";
    return {
      title: "Alarms",
      live: true,
      load: () => get(`/api/alarms?${qs({ state: filter, site, limit: 200 })}`),
      render(alarms) {
        const canAck = state.me && rank(state.me.role) >= rank("maintainer");
        const rows = [...alarms].sort((x, y) => {
          const xo = x.cleared_at ? 1 : 0, yo = y.cleared_at ? 1 : 0;
          return xo - yo || sevRank(x.severity) - sevRank(y.severity)
            || Date.parse(y.raised_at) - Date.parse(x.raised_at);
        });
        const why = `Acknowledging alarms needs the maintainer role; you are ${state.me.role}.`;
        return [
          h("h1", {}, site ? `Alarms of ${site}` : "Alarms"),
          flashBox(),
          h("form", { class: "filters", "data-form": "alarm-filter" },
            h("label", { for: "alarm-state" }, "Show"),
            h("select", { id: "alarm-state", name: "state", "data-change": "alarm-filter" },
              [["open", "open alarms"], ["unacked", "unacknowledged"], ["all", "all, also cleared"]]
                .map(([val, text]) => h("option", { value: val, selected: val === filter }, text))),
            site ? h("a", { href: `#/alarms?${qs({ state: filter })}` }, `all sites`) : null),
          canAck ? null : h("p", { class: "note", id: "ack-why" }, why),
          rows.length === 0 ? h("p", { id: "no-alarms" }, "No alarms to show.") :
            h("div", { class: "scroll" }, h("table", { class: "grid alarms", id: "alarms" },
              h("caption", {}, `${rows.length} alarms, most severe first`),
              h("thead", {}, h("tr", {}, ["Severity", "Raised", "Where", "Message", "State",
                "Action"].map((t) => h("th", { scope: "col" }, t)))),
              h("tbody", {}, rows.map((a) => {
                const acked = Boolean(a.acked_at);
                const busy = state.pending.has(a.id);
                return h("tr", {
                  "data-key": String(a.id), "data-alarm": String(a.id),
                  class: `${a.cleared_at ? "cleared" : "active"} ${acked ? "acked" : "unacked"}`,
                },
                h("td", {}, h("span", { class: `chip sev-${a.severity}` }, a.severity)),
                h("td", { title: a.raised_at }, when(a.raised_at), h("br"),
                  h("small", {}, ago(a.raised_at))),
                h("td", {}, h("a", { href: `#/site/${encodeURIComponent(a.site)}` }, a.site),
                  ` / ${a.gateway}`, a.device ? ` / ${a.device}` : ""),
                h("td", {}, a.message, h("br"), h("small", { class: "muted" },
                  [a.interlock, a.key].filter(Boolean).join(" · "))),
                h("td", { class: "alarm-state" },
                  a.cleared_at ? `✓ cleared ${when(a.cleared_at)}` : h("strong", {}, "● active"),
                  h("br"),
                  acked ? `✓ acknowledged by ${a.acked_by || "?"} ${when(a.acked_at)}`
                    : h("span", { class: "warn" }, "not acknowledged")),
                h("td", {}, acked ? "–" : h("button", {
                  type: "button", "data-action": "ack", "data-id": String(a.id),
                  disabled: !canAck || busy, "aria-describedby": canAck ? null : "ack-why",
                  title: canAck ? null : why,
                }, busy ? "Acknowledging…" : "Acknowledge")));
              })))),
        ];
      },
    };
  }

  async function acknowledge(id) {
    state.pending.add(id);
    refreshNow();
    try {
      const a = await api("POST", `/api/alarms/${encodeURIComponent(id)}/ack`);
      state.flash = {
        kind: "ok", text: `Alarm “${a.message}” acknowledged.`, page: location.hash,
      };
    } catch (e) {
      state.flash = { kind: "error", text: `Not acknowledged: ${e.message}`, page: location.hash };
      if (e.status === 403) {
        // the role may have changed since login: show the one the server knows now
        try {
          state.me = (await fetchMe()) || state.me;
          showSession();
        } catch (ignored) {
          // the refusal is shown; the role in the header stays as it was
        }
      }
    } finally {
      state.pending.delete(id);
      refreshNow();
    }
  }

  // --- history ---

  function chart(series, bucketS, sinceMs, untilMs, unit, title) {
    const W = 800, H = 280, L = 64, R = 16, T = 16, B = 36;
    const pts = series.filter((b) => isNumber(b.avg));
    const lo0 = Math.min(...pts.map((b) => (isNumber(b.min) ? b.min : b.avg)));
    const hi0 = Math.max(...pts.map((b) => (isNumber(b.max) ? b.max : b.avg)));
    const span = hi0 - lo0 || Math.abs(hi0) || 1;
    const lo = lo0 - span * 0.05, hi = hi0 + span * 0.05;
    const x = (ms) => L + ((ms - sinceMs) / (untilMs - sinceMs)) * (W - L - R);
    const y = (val) => T + (1 - (val - lo) / (hi - lo)) * (H - T - B);
    const fx = (n) => n.toFixed(1);
    // split into runs where buckets are adjacent (a gap in the data is a gap in the line)
    // Gateways report by exception (a quiet point at least every 5 min), so only a silence
    // longer than that and three buckets is a gap in the line.
    const bucketMs = bucketS ? bucketS * 1000 : (untilMs - sinceMs) / Math.max(series.length, 1);
    const gapMs = Math.max(3 * bucketMs, 10 * 60 * 1000);
    const runs = [];
    let prev = null;
    for (const b of pts) {
      const t = Date.parse(b.t);
      if (prev === null || t - prev > gapMs) runs.push([]);
      runs[runs.length - 1].push({ t, b });
      prev = t;
    }
    const band = runs.map((run) => {
      const top = run.map(({ t, b }) => `${fx(x(t))},${fx(y(isNumber(b.max) ? b.max : b.avg))}`);
      const bottom = run.slice().reverse()
        .map(({ t, b }) => `${fx(x(t))},${fx(y(isNumber(b.min) ? b.min : b.avg))}`);
      return `M${top.join(" L")} L${bottom.join(" L")} Z`;
    }).join(" ");
    const line = runs.map((run) =>
      `M${run.map(({ t, b }) => `${fx(x(t))},${fx(y(b.avg))}`).join(" L")}`).join(" ");
    const yTicks = niceTicks(lo, hi, 5);
    const xTicks = [0, 1, 2, 3, 4].map((i) => sinceMs + ((untilMs - sinceMs) * i) / 4);
    const hm = (ms) => { const d = new Date(ms); return `${pad(d.getHours())}:${pad(d.getMinutes())}`; };
    return h("svg:svg", {
      class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": "chart-title",
    },
    h("svg:title", { id: "chart-title" }, title),
    h("svg:rect", { x: L, y: T, width: W - L - R, height: H - T - B, class: "plot-bg" }),
    yTicks.map((val) => [
      h("svg:line", { x1: L, x2: W - R, y1: fx(y(val)), y2: fx(y(val)), class: "gridline" }),
      h("svg:text", { x: L - 6, y: fx(y(val) + 4), class: "tick", "text-anchor": "end" },
        `${num(val)}${unit ? ` ${unit}` : ""}`),
    ]),
    xTicks.map((ms) => h("svg:text", { x: fx(x(ms)), y: H - 12, class: "tick",
      "text-anchor": "middle" }, hm(ms))),
    h("svg:path", { d: band, class: "band" }),
    h("svg:path", { d: line, class: "avg" }));
  }

  /** Round values between lo and hi, about `count` of them, 1/2/5 × 10^k apart. */
  function niceTicks(lo, hi, count) {
    const raw = (hi - lo) / count;
    const mag = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 5, 10].map((f) => f * mag).find((s) => s >= raw) || raw;
    const out = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) {
      out.push(Math.abs(t) < step * 1e-9 ? 0 : Number(t.toPrecision(12)));
    }
    return out;
  }

  function historyView(params) {
    const sel = {
      site: params.get("site") || "", gateway: params.get("gateway") || "",
      device: params.get("device") || "", point: params.get("point") || "",
    };
    const range = RANGES[params.get("range")] ? params.get("range") : "1h";
    return {
      title: "History",
      live: true,
      async load() {
        const overview = await get("/api/overview");
        state.clockOffsetMs = Date.parse(overview.generated_at) - Date.now();
        const site = sel.site ? await get(`/api/sites/${encodeURIComponent(sel.site)}`) : null;
        let history = null;
        const untilMs = serverNow();
        const sinceMs = untilMs - RANGES[range] * 1000;
        if (sel.site && sel.gateway && sel.device && sel.point) {
          history = await get(`/api/history?${qs({
            ...sel, since: new Date(sinceMs).toISOString(), until: new Date(untilMs).toISOString(),
            buckets: 200,
          })}`);
        }
        return { overview, site, history, sinceMs, untilMs };
      },
      render({ overview, site, history, sinceMs, untilMs }) {
        const gw = site ? site.gateways.find((g) => g.name === sel.gateway) : null;
        const dev = gw ? gw.devices.find((d) => d.name === sel.device) : null;
        const numeric = dev ? Object.keys(dev.points).filter((p) => isNumber(dev.points[p].value)
          && !pointInfo(dev.model, p).enum && !pointInfo(dev.model, p).bits).sort() : [];
        if (dev && sel.point && !numeric.includes(sel.point)) numeric.unshift(sel.point);
        const select = (id, labelText, key, options) => [
          h("label", { for: id }, labelText),
          h("select", { id, name: key, "data-change": "history" },
            h("option", { value: "" }, "– choose –"),
            options.map((o) => h("option", { value: o, selected: o === sel[key] }, o))),
        ];
        const unit = dev ? pointInfo(dev.model, sel.point).unit || "" : "";
        const series = history ? history.series.filter((b) => isNumber(b.avg)) : [];
        const what = `${sel.point} of ${sel.device} (${sel.site} / ${sel.gateway}), last ${range}`;
        let body;
        if (!history) {
          body = h("p", {}, "Choose a site, gateway, device and point.");
        } else if (!series.length) {
          body = h("p", { id: "no-data" }, `No readings of ${what}.`);
        } else {
          const last = series[series.length - 1];
          const lo = Math.min(...series.map((b) => (isNumber(b.min) ? b.min : b.avg)));
          const hi = Math.max(...series.map((b) => (isNumber(b.max) ? b.max : b.avg)));
          const u = unit ? ` ${unit}` : "";
          body = [
            h("figure", { class: "chart-box" },
              chart(history.series, history.bucket_seconds, sinceMs, untilMs, unit, `${what}: min ${num(lo)}${u}, max ${
                num(hi)}${u}`),
              h("figcaption", {}, h("span", { class: "key-band" }, "▮"), " min–max per interval  ",
                h("span", { class: "key-avg" }, "━"), " average.  ",
                `Range ${num(lo)}–${num(hi)}${u}; latest average ${num(last.avg)}${u} at ${
                  when(last.t)}.`)),
            h("details", {}, h("summary", {}, "Show as table"),
              h("table", { class: "grid" },
                h("thead", {}, h("tr", {}, ["From", "Min", "Avg", "Max", "Readings"].map((t) =>
                  h("th", { scope: "col" }, t)))),
                h("tbody", {}, series.map((b) => h("tr", { "data-key": b.t },
                  h("td", {}, when(b.t)), h("td", {}, num(b.min)), h("td", {}, num(b.avg)),
                  h("td", {}, num(b.max)), h("td", {}, String(b.n ?? "")))))))
          ];
        }
        const keyLinks = site ? site.gateways.flatMap((g) => g.devices.flatMap((d) =>
          (HISTORY_POINTS[d.model] || []).filter((p) => has(d, p)).map((p) => ({ g, d, p })))) : [];
        return [
          h("h1", {}, "History"),
          flashBox(),
          h("form", { class: "filters history-form", "data-form": "history" },
            select("h-site", "Site", "site", overview.sites.map((s) => s.name)),
            select("h-gateway", "Gateway", "gateway", site ? site.gateways.map((g) => g.name) : []),
            select("h-device", "Device", "device", gw ? gw.devices.map((d) => d.name).sort() : []),
            select("h-point", "Point", "point", numeric),
            h("div", { class: "ranges", role: "group", "aria-label": "Time range" },
              Object.keys(RANGES).map((r) => h("button", {
                type: "button", "data-action": "range", "data-range": r,
                "aria-pressed": r === range ? "true" : "false",
              }, r.replace("h", " h"))))),
          keyLinks.length ? h("nav", { class: "key-points", "aria-label": "Key points" },
            "Key points: ", keyLinks.map(({ g, d, p }, i) => [i ? " · " : "", h("a", {
              href: historyHref(sel.site, g.name, d.name, p).replace("range=1h", `range=${range}`),
              "aria-current": sel.gateway === g.name && sel.device === d.name && sel.point === p
                ? "true" : null,
            }, `${d.name} ${p}`)])) : null,
          body,
        ];
      },
    };
  }

  function setHistory(changes) {
    const params = new URLSearchParams(location.hash.split("?")[1] || "");
    const order = ["site", "gateway", "device", "point"];
    for (const [k, val] of Object.entries(changes)) {
      params.set(k, val);
      // a new site empties the gateway, device and point below it
      if (order.includes(k)) order.slice(order.indexOf(k) + 1).forEach((d) => params.delete(d));
    }
    for (const [k, val] of Array.from(params.entries())) if (!val) params.delete(k);
    location.hash = `#/history?${params.toString()}`;
  }

  // ---------- router and refresh loop ----------

  function resolve() {
    const [path, query] = (location.hash.replace(/^#/, "") || "/").split("?");
    const params = new URLSearchParams(query || "");
    let m;
    if (path === "/login") return loginView;
    if (path === "/" || path === "") return overviewView;
    if ((m = path.match(/^\/site\/([^/]+)$/))) return siteView(decodeURIComponent(m[1]));
    if (path === "/alarms") return alarmsView(params);
    if (path === "/history") return historyView(params);
    return {
      title: "Not found", live: false, load: async () => null,
      render: () => [h("h1", {}, "Not found"), h("p", {}, `No page at ${location.hash}. `,
        h("a", { href: "#/" }, "Go to the overview"))],
    };
  }

  let current = null;
  let currentPath = null;

  async function tick(token) {
    if (token !== state.token || !current) return;
    clearTimeout(state.timer);
    if (document.hidden && view().getAttribute("data-loaded") === "yes") {
      // nobody is looking: no requests until the tab is visible again (visibilitychange)
      state.timer = setTimeout(() => tick(token), REFRESH_MS);
      return;
    }
    try {
      const data = await current.load();
      if (token !== state.token) return;
      show(current.render(data));
      if (current.live) markUpdated();
    } catch (e) {
      if (token !== state.token) return;
      if (e.status === 401) return; // loggedOut() moved us to the login page
      if (view().getAttribute("data-loaded") !== "yes") {
        show([h("h1", {}, current.title), flashBox(),
          h("p", { class: "error", role: "alert" }, `Could not load this page: ${e.message}`)]);
      }
      markStale(e);
    }
    view().setAttribute("data-loaded", "yes");
    if (current.live && token === state.token) {
      state.timer = setTimeout(() => tick(token), REFRESH_MS);
    }
  }

  function refreshNow() {
    tick(state.token);
  }

  async function route() {
    const token = ++state.token;
    clearTimeout(state.timer);
    if (!state.me && !location.hash.startsWith("#/login")) {
      state.afterLogin = location.hash || "#/";
      let me = null;
      try {
        me = await fetchMe();
      } catch (e) {
        markStale(e);
      }
      if (token !== state.token || state.me) return; // moved on, or logged in meanwhile
      state.me = me;
      showSession();
      if (!state.me) {
        location.hash = "#/login";
        return;
      }
    }
    if (state.me && location.hash.startsWith("#/login")) {
      location.hash = "#/";
      return;
    }
    if (state.flash && state.flash.page !== location.hash) state.flash = null;
    const previousPath = currentPath;
    currentPath = location.hash.split("?")[0] || "#/";
    current = resolve();
    document.title = `${current.title} · Doorstep fleet`;
    for (const a of document.querySelectorAll("#nav a")) {
      const target = a.getAttribute("href");
      const here = location.hash.split("?")[0] || "#/";
      if (target === here) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    const el = view();
    el.removeAttribute("data-loaded");
    if (currentPath !== previousPath) {
      // a new page starts empty; the same page with other parameters is patched in place
      // (and the login form keeps what was typed)
      el.replaceChildren(h("p", { class: "muted" }, "Loading…"));
    }
    if (!current.live) {
      $("#updated").textContent = "";
      $("#stale").hidden = true;
    }
    await tick(token);
    if (token === state.token) {
      if (!el.contains(document.activeElement)) {
        (el.querySelector("#login-name") || el).focus({ preventScroll: true });
      }
    }
  }

  // ---------- events (delegated) ----------

  document.addEventListener("click", (ev) => {
    const el = ev.target.closest("[data-action]");
    if (!el || el.disabled) return;
    const action = el.getAttribute("data-action");
    if (action === "ack") acknowledge(el.getAttribute("data-id"));
    if (action === "range") setHistory({ range: el.getAttribute("data-range") });
  });

  document.addEventListener("change", (ev) => {
    const el = ev.target;
    const kind = el.getAttribute && el.getAttribute("data-change");
    if (kind === "history") setHistory({ [el.name]: el.value });
    if (kind === "alarm-filter") {
      const params = new URLSearchParams(location.hash.split("?")[1] || "");
      params.set("state", el.value);
      location.hash = `#/alarms?${params.toString()}`;
    }
  });

  document.addEventListener("submit", (ev) => {
    const form = ev.target;
    ev.preventDefault();
    if (form.getAttribute("data-form") === "login") submitLogin(form);
  });

  window.addEventListener("hashchange", route);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && current && current.live) refreshNow();
  });

  async function start() {
    $("#logout").addEventListener("click", async () => {
      try {
        await api("POST", "/api/logout");
      } catch (e) {
        // logged out on the server or not: the browser forgets the user either way
      }
      state.me = null;
      state.flash = { kind: "ok", text: "You are logged out.", page: "#/login" };
      showSession();
      state.afterLogin = "#/";
      if (location.hash === "#/login") route(); else location.hash = "#/login";
    });
    try {
      state.catalog = await get("/static/models.json");
    } catch (e) {
      state.catalog = {}; // devices then show as generic tables
    }
    try {
      state.me = await fetchMe();
    } catch (e) {
      markStale(e);
    }
    showSession();
    route();
  }

  start();
})();
