/* Doorstep fleet screens: the little the server cannot do. Pages are rendered on the server
 * and kept live by htmx (hx-get every few seconds, morphed in by idiomorph); this script
 * only (1) keeps each value's age ("3 sec. ago") current between refreshes, (2) says when the
 * last refresh worked or that it failed, (3) logs in and out through the JSON API, (4) shows
 * the server's refusal of an action, (5) sends the alarm list's actions (acknowledge a
 * selection or a site, shelve with a reason) to the JSON API and pauses the refresh while a
 * person selects, (6) draws history plots with uPlot, and (7) builds a new rollout's JSON
 * from its form for the API's preview and creation. */
"use strict";

(() => {
  const lang = document.documentElement.lang || "en";
  const relative = new Intl.RelativeTimeFormat(lang, { numeric: "always", style: "short" });
  const clock = new Intl.DateTimeFormat(lang, { hour: "2-digit", minute: "2-digit", second: "2-digit" });

  /* the same rounding as the server (Babel, threshold 1.5) */
  function ago(seconds) {
    const s = Math.max(0, Math.round(seconds));
    if (s < 90) return relative.format(-s, "second");
    if (s < 90 * 60) return relative.format(-Math.round(s / 60), "minute");
    if (s < 36 * 3600) return relative.format(-Math.round(s / 3600), "hour");
    return relative.format(-Math.round(s / 86400), "day");
  }

  function tickAges(root) {
    const now = Date.now();
    for (const el of (root || document).querySelectorAll("time.age[datetime]")) {
      const text = ago((now - Date.parse(el.getAttribute("datetime"))) / 1000);
      if (el.textContent !== text) el.textContent = text;
    }
  }

  function say(text, kind) {
    const box = document.getElementById("notice");
    if (!box) return;
    box.textContent = text;
    box.dataset.kind = kind;
    box.hidden = !text;
  }

  function refreshed(ok) {
    const status = document.getElementById("updated");
    if (!status) return;
    if (ok) {
      status.dataset.last = String(Date.now());
      status.textContent = status.dataset.okText.replace("%s", clock.format(new Date()));
      status.classList.remove("failing");
    } else {
      const last = Number(status.dataset.last || Date.now());
      status.textContent = status.dataset.failText.replace("%s", clock.format(new Date(last)));
      status.classList.add("failing");
    }
  }

  document.addEventListener("htmx:afterSwap", (e) => tickAges(e.target));
  document.addEventListener("htmx:afterRequest", (e) => {
    const live = e.detail.elt && e.detail.elt.id === "live";
    const status = e.detail.xhr ? e.detail.xhr.status : 0;
    if (status === 401) {
      window.location.assign("/login?next=" + encodeURIComponent(location.pathname + location.search));
      return;
    }
    if (live) refreshed(e.detail.successful);
  });
  document.addEventListener("htmx:responseError", (e) => {
    const elt = e.detail.elt;
    if (elt.id === "live") return;
    let detail = "";
    try {
      detail = JSON.parse(e.detail.xhr.responseText).detail;
    } catch (err) {
      detail = e.detail.xhr.statusText;
    }
    const refused = elt.dataset.refused || "%s";
    say(refused.replace("%s", typeof detail === "string" ? detail : JSON.stringify(detail)), "error");
  });
  document.addEventListener("htmx:sendError", (e) => {
    if (e.detail.elt.id === "live") refreshed(false);
  });
  document.addEventListener("htmx:afterRequest", (e) => {
    const elt = e.detail.elt;
    if (elt.dataset.done && e.detail.successful) {
      say(elt.dataset.done, "ok");
      refreshLive();
    }
  });

  /* a choice that is a whole request (language, what to show): sent as soon as it is made
   * (the page's policy allows no inline handlers) */
  document.addEventListener("change", (e) => {
    const elt = e.target;
    if (elt.matches && elt.matches("select[data-submit]") && elt.form) elt.form.submit();
  });

  /* A live refresh waits while a person is in the middle of something on it: alarms ticked
   * for acknowledging, a shelve form open, a field being typed in. */
  function busy(live) {
    return Boolean(
      live.querySelector("input[type=checkbox]:checked") ||
      live.querySelector("details.shelve[open], details.hold[open]") ||
      (document.activeElement && live.contains(document.activeElement) && document.activeElement.matches("input, select, textarea"))
    );
  }

  document.addEventListener("htmx:beforeRequest", (e) => {
    const live = e.detail.elt;
    if (live.id !== "live") return;
    const paused = document.getElementById("paused");
    const wait = busy(live);
    if (paused) paused.hidden = !wait;
    if (wait) e.preventDefault();
  });

  /* what a refresh must not undo: a <details> the person opened or closed */
  function keepOpenState() {
    if (!window.Idiomorph) return;
    Idiomorph.defaults.callbacks.beforeAttributeUpdated = (name, node) =>
      !(name === "open" && node.tagName === "DETAILS");
  }

  function refreshLive() {
    const live = document.getElementById("live");
    if (live) htmx.trigger(live, "refresh");
  }

  /* the API's refusal: its sentence, or each field at fault (a 422) named by where it is */
  function why(detail) {
    if (typeof detail === "string") return detail;
    return detail.map((d) => {
      const where = (d.loc || []).filter((part) => part !== "body").join(".");
      return where ? where + ": " + d.msg : d.msg;
    }).join("; ");
  }

  /* an action answered by the JSON API: say what happened in the person's words */
  async function act(elt, url, body) {
    const r = await post(url, body, elt.dataset.method);
    let detail = r.statusText;
    let data = null;
    try {
      data = await r.json();
      if (data && data.detail !== undefined) detail = why(data.detail);
    } catch (err) { /* no JSON body */ }
    if (r.status === 401) {
      window.location.assign("/login?next=" + encodeURIComponent(location.pathname + location.search));
      return false;
    }
    if (!r.ok) {
      say((elt.dataset.refused || "%s").replace("%s", detail), "error");
      return false;
    }
    const problems = data && Array.isArray(data.problems) ? data.problems : [];
    say([elt.dataset.done || ""].concat(problems.length && elt.dataset.problems ? [elt.dataset.problems.replace("%s", problems.join("; "))] : []).join(" "), problems.length ? "error" : "ok");
    /* done: its form empties (a ticked box would hold the refresh) and closes */
    if (elt.tagName === "FORM") elt.reset();
    const details = elt.closest("details");
    if (details) details.open = false;
    refreshLive();
    return true;
  }

  function wireActions() {
    document.addEventListener("submit", async (e) => {
      const form = e.target.closest("form[data-api]");
      if (!form) return;
      e.preventDefault();
      const numbers = (form.dataset.numbers || "").split(" ").filter(Boolean);
      const body = {};
      for (const [k, v] of new FormData(form).entries()) body[k] = numbers.includes(k) ? Number(v) : v;
      /* a ticked box may send the form elsewhere (abort, or abort and go back) */
      const route = form.querySelector("input[data-route]:checked");
      await act(form, route ? route.dataset.route : form.dataset.api, body);
    });
    const selected = document.getElementById("ack-selected");
    if (selected) {
      selected.addEventListener("click", async () => {
        const ids = Array.from(document.querySelectorAll("#alarms input[name=ids]:checked")).map((c) => Number(c.value));
        if (!ids.length) {
          say(selected.dataset.none, "error");
          return;
        }
        if (await act(selected, "/api/alarms/ack", { ids })) {
          for (const c of document.querySelectorAll("#alarms input[name=ids]:checked")) c.checked = false;
        }
      });
    }
    const site = document.getElementById("ack-site");
    if (site) {
      site.addEventListener("click", () => {
        const list = document.getElementById("alarms");
        act(site, "/api/alarms/ack", { site: site.dataset.site, up_to_id: Number(list.dataset.newest) || undefined });
      });
    }
  }

  async function post(url, body, method) {
    const r = await fetch(url, {
      method: method || "POST",
      credentials: "same-origin",
      headers: body ? { "Content-Type": "application/json" } : {},
      body: body ? JSON.stringify(body) : undefined,
    });
    return r;
  }

  function wireLogin() {
    const form = document.getElementById("login-form");
    if (!form) return;
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const error = document.getElementById("login-error");
      const r = await post("/api/login", { name: form.elements.name.value, password: form.elements.password.value });
      if (r.ok) {
        window.location.assign(form.dataset.next || "/");
        return;
      }
      error.textContent = r.status === 429 ? form.dataset.tooMany : form.dataset.failed;
      error.hidden = false;
    });
  }

  function wireLogout() {
    const button = document.getElementById("logout");
    if (!button) return;
    button.addEventListener("click", async () => {
      await post("/api/logout");
      window.location.assign("/login");
    });
  }

  /* ---------- history plots (uPlot) ---------- */

  const numberFormat = new Intl.NumberFormat(lang, { maximumFractionDigits: 2 });
  const whenFormat = new Intl.DateTimeFormat(lang, { dateStyle: "short", timeStyle: "short" });
  const hourFormat = new Intl.DateTimeFormat(lang, { hour: "2-digit", minute: "2-digit" });

  /* the time axis and legend in the person's language (uPlot's own are English) */
  function timeSeries(el) {
    return { label: el.dataset.timeLabel, value: (u, ts) => (ts == null ? "–" : whenFormat.format(new Date(ts * 1000))) };
  }
  const timeAxis = { values: (u, splits) => splits.map((ts) => hourFormat.format(new Date(ts * 1000))) };

  function plotNumber(el, d) {
    const css = getComputedStyle(el);
    const line = css.getPropertyValue("--plot-line").trim() || "#1f5fa8";
    const band = css.getPropertyValue("--plot-band").trim() || "rgba(31,95,168,0.2)";
    const unit = d.unit ? " " + d.unit : "";
    const fmt = (u, v) => (v == null ? "–" : numberFormat.format(v) + unit);
    return {
      data: [d.t, d.max, d.avg, d.min],
      opts: {
        scales: { x: { time: true, min: d.since, max: d.until } },
        series: [
          timeSeries(el),
          { label: el.dataset.maxLabel, stroke: band, width: 1, value: fmt },
          { label: el.dataset.avgLabel, stroke: line, width: 2, value: fmt },
          { label: el.dataset.minLabel, stroke: band, width: 1, value: fmt },
        ],
        bands: [{ series: [1, 3], fill: band }],
        axes: [timeAxis, { values: (u, vals) => vals.map((v) => numberFormat.format(v) + unit), size: 70 }],
      },
    };
  }

  function plotState(el, d) {
    const css = getComputedStyle(el);
    const line = css.getPropertyValue("--plot-line").trim() || "#1f5fa8";
    const t = [d.since], v = [d.initial];
    d.t.forEach((x, i) => { t.push(x); v.push(d.v[i]); });
    t.push(d.until); v.push(v[v.length - 1]);
    /* the axis names the states the span went through (all of them if it has none) */
    const seen = new Set(v.filter((x) => x != null));
    const all = Object.keys(d.labels).map(Number).sort((a, b) => a - b);
    const keys = seen.size ? all.filter((k) => seen.has(k)).concat([...seen].filter((k) => !all.includes(k))) : all;
    keys.sort((a, b) => a - b);
    const label = (x) => (x == null ? "–" : d.labels[String(x)] || String(x));
    const ruler = document.createElement("canvas").getContext("2d");
    ruler.font = "12px " + getComputedStyle(document.body).fontFamily;
    const widest = Math.max(...keys.map((k) => ruler.measureText(label(k)).width));
    const axis = Math.ceil(Math.min(el.clientWidth * 0.45, widest + 20));
    return {
      data: [t, v],
      opts: {
        scales: { x: { time: true, min: d.since, max: d.until }, y: { range: [keys[0] - 0.5, keys[keys.length - 1] + 0.5] } },
        series: [timeSeries(el), { label: d.label, stroke: line, width: 2, paths: uPlot.paths.stepped({ align: 1 }), value: (u, x) => label(x) }],
        axes: [timeAxis, { splits: () => keys, values: (u, vals) => vals.map(label), size: axis }],
      },
    };
  }

  function drawPlots() {
    for (const el of document.querySelectorAll("[data-plot]")) {
      const d = JSON.parse(el.querySelector("script[type='application/json']").textContent);
      const made = d.kind === "state" ? plotState(el, d) : plotNumber(el, d);
      const size = () => ({ width: el.clientWidth, height: Math.max(220, Math.min(420, el.clientWidth * 0.5)) });
      const chart = new uPlot(Object.assign({ title: d.label }, size(), made.opts), made.data, el.querySelector(".plot"));
      new ResizeObserver(() => chart.setSize(size())).observe(el);
    }
  }

  /* ---------- a new rollout: the form as the API's JSON, preview, start ---------- */

  function rolloutBody(form) {
    const field = (root, name) => root.querySelector(`[data-field="${name}"]`).value.trim();
    const names = (text) => text.split(/[\s,]+/).filter(Boolean);
    const body = { name: field(form, "name"), release: Number(field(form, "release")), phases: [] };
    if (field(form, "site")) body.site = field(form, "site");
    if (field(form, "tag")) body.tag = field(form, "tag");
    body.gateways = names(field(form, "gateways"));
    if (field(form, "per_minute")) body.per_minute = Number(field(form, "per_minute"));
    for (const row of form.querySelectorAll("[data-phase-row]")) {
      if (!field(row, "name")) continue;  /* an empty row is left out */
      const phase = { name: field(row, "name"), gateways: names(field(row, "gateways")) };
      const size = field(row, "size");
      if (size && field(row, "kind") === "count") phase.count = Number(size);
      if (size && field(row, "kind") === "percent") phase.percent = Number(size);
      if (field(row, "success")) phase.success = Number(field(row, "success")) / 100;
      const failures = field(row, "failures") || "0";
      if (field(row, "failures_kind") === "percent") {
        phase.max_failures = null;
        phase.max_failure_share = Number(failures) / 100;
      } else {
        phase.max_failures = Number(failures);
      }
      if (field(row, "soak")) phase.soak_s = Number(field(row, "soak")) * 60;
      if (field(row, "timeout")) phase.timeout_s = Number(field(row, "timeout")) * 60;
      body.phases.push(phase);
    }
    return body;
  }

  function showPreview(box, shown) {
    const list = box.querySelector("#preview-phases");
    list.replaceChildren();
    for (const [phase, members] of Object.entries(shown.phases)) {
      const item = document.createElement("li");
      item.dataset.phase = phase;
      const head = document.createElement("strong");
      head.textContent = (members.length === 1 ? box.dataset.one : box.dataset.many).replace("%p", phase).replace("%n", String(members.length));
      item.append(head, " ", members.join(", "));
      list.append(item);
    }
    box.querySelector("#preview-skipped").textContent = box.dataset.skipped
      .replace("%v", shown.release).replace("%l", shown.skipped.length ? shown.skipped.join(", ") : box.dataset.none);
    box.hidden = false;
  }

  function wireRolloutForm() {
    const form = document.getElementById("rollout-form");
    if (!form) return;
    document.getElementById("add-phase").addEventListener("click", () => {
      const rows = document.getElementById("phases");
      const n = String(Date.now());
      const holder = document.createElement("div");
      holder.innerHTML = document.getElementById("phase-template").innerHTML.replaceAll("__N__", n);
      const row = holder.firstElementChild;
      rows.append(row);
      row.querySelector("input").focus();
    });
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const creating = e.submitter && e.submitter.value === "create";
      const url = creating ? "/api/rollouts" : "/api/rollouts/preview";
      const r = await post(url, rolloutBody(form));
      if (r.status === 401) {
        window.location.assign("/login?next=" + encodeURIComponent(location.pathname + location.search));
        return;
      }
      let data = null;
      try { data = await r.json(); } catch (err) { /* no JSON body */ }
      if (!r.ok) {
        const refused = creating ? form.dataset.refused : form.dataset.previewRefused;
        say(refused.replace("%s", data && data.detail !== undefined ? why(data.detail) : r.statusText), "error");
        return;
      }
      say("", "ok");
      if (creating) window.location.assign("/rollouts/" + data.id);
      else showPreview(document.getElementById("preview"), data);
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    tickAges();
    setInterval(tickAges, 1000);
    keepOpenState();
    wireLogin();
    wireLogout();
    wireActions();
    wireRolloutForm();
    if (window.uPlot) drawPlots();
    const status = document.getElementById("updated");
    if (status && document.getElementById("live")) refreshed(true);  // only a live screen
  });
})();
