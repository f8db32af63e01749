/* hqstream dashboard: live A-share quotes from the gateway.
 *
 * Data: REST /api/realtime/* for the first picture, then the WebSocket
 * /api/realtime/ws (docs/websocket.md) for live updates. Incoming messages only
 * update in-memory state; the DOM is touched once per animation frame for what
 * changed, and every list is capped, so a fast feed never floods the page.
 * It never loads anything from outside the gateway (no CDN, no fonts).
 */
(function () {
  "use strict";

  // ------------------------------------------------------------------ config
  const API = "/api/realtime";
  const MARKETS = ["ALL", "SH", "SZ", "BJ"];
  const MARKET_NAMES = { ALL: "全市场", SH: "上证", SZ: "深证", BJ: "北证" };
  const DEFAULT_WATCH = ["000001", "600519", "300750", "688981", "920819", "601318", "000858", "002594", "600036", "300059"];
  const MAX_ROWS = 200;
  const MAX_ALERTS = 100;
  const MAX_CANDLES = 600;
  const RANK_ROWS = 10;
  const PING_EVERY_MS = 10000;
  const PONG_DEADLINE_MS = 8000;
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 30000;
  const SORT_EVERY_MS = 1000;
  const CODE_RE = /^\d{6}$/;

  const params = new URLSearchParams(location.search);
  // The API key never travels in a URL a server sees (proxy logs, history): it comes
  // from the fragment (#api_key=..., removed from the address bar at once) or a
  // prompt, and is kept in sessionStorage (this tab only).
  const KEY_SLOT = "hq.api_key";
  const NEED_KEY = "This gateway requires an API key: open the page with #api_key=YOUR_KEY";
  function readApiKey() {
    const frag = new URLSearchParams(location.hash.replace(/^#/, ""));
    const given = frag.get("api_key");
    if (given) {
      frag.delete("api_key");
      const rest = frag.toString();
      history.replaceState(null, "", location.pathname + location.search + (rest ? "#" + rest : ""));
      try { sessionStorage.setItem(KEY_SLOT, given); } catch (e) { /* storage off: this page only */ }
      return given;
    }
    try { return sessionStorage.getItem(KEY_SLOT) || ""; } catch (e) { return ""; }
  }
  const API_KEY = readApiKey();
  let keyAsked = false;
  // No key (or a refused one): ask once; a new key reloads the page with it.
  function askForKey(refused) {
    try { sessionStorage.removeItem(KEY_SLOT); } catch (e) { /* nothing stored */ }
    if (keyAsked) return;
    keyAsked = true;
    const key = window.prompt(refused ? "The API key was refused. API key:" : "This gateway requires an API key:");
    if (key && key.trim()) {
      try { sessionStorage.setItem(KEY_SLOT, key.trim()); } catch (e) { /* storage off */ }
      location.reload();
    }
  }
  // ?market=SH|SZ|BJ|ALL also streams every quote of that market; its codes join the table (capped).
  const FEED_MARKET = ["SH", "SZ", "BJ", "ALL"].includes((params.get("market") || "").toUpperCase()) ? params.get("market").toUpperCase() : "";
  const store = {
    get(k, d) { try { const v = localStorage.getItem("hq." + k); return v === null ? d : JSON.parse(v); } catch (e) { return d; } },
    set(k, v) { try { localStorage.setItem("hq." + k, JSON.stringify(v)); } catch (e) { /* private mode */ } },
  };

  // ------------------------------------------------------------------ state
  const urlCodes = (params.get("codes") || "").split(",").map((s) => s.trim()).filter((s) => CODE_RE.test(s));
  const savedWatch = store.get("watch", null);
  // the chart's timeframes and the indicator groups it draws (MA overlays, MACD or RSI pane)
  const TIMEFRAMES = ["1m", "5m", "15m", "30m", "60m", "1d"];
  const CHART_INDICATORS = ["ma", "macd", "rsi"];
  const OPEN_BAR_REFRESH_MS = 3000;
  const state = {
    watch: dedupe(urlCodes.length ? urlCodes : Array.isArray(savedWatch) ? savedWatch.filter((c) => CODE_RE.test(c)) : DEFAULT_WATCH).slice(0, MAX_ROWS),
    removed: new Set(),
    extra: [],
    quotes: new Map(),
    stats: new Map(),
    alerts: [],
    alertKeys: new Set(),
    candles: new Map(),
    tf: TIMEFRAMES.includes(store.get("tf", "1m")) ? store.get("tf", "1m") : "1m",
    pane: store.get("pane", "macd") === "rsi" ? "rsi" : "macd",
    selected: null,
    rankMarket: "ALL",
    rankRest: new Map(),
    conv: store.get("conv", "cn") === "us" ? "us" : "cn",
    sort: { key: null, dir: -1 },
    clockOffset: null,
  };
  state.selected = params.get("code") && CODE_RE.test(params.get("code")) ? params.get("code") : store.get("selected", null);
  if (!state.selected || !state.watch.includes(state.selected)) state.selected = state.watch[0] || null;

  const dirty = { rows: new Set(), order: true, cards: new Set(MARKETS), ranks: true, alerts: true, chart: true, detail: true };
  let lastSort = 0;

  // ------------------------------------------------------------------ helpers
  const $ = (sel, root) => (root || document).querySelector(sel);
  function dedupe(a) { return Array.from(new Set(a)); }
  function num(v) { const n = typeof v === "number" ? v : parseFloat(v); return Number.isFinite(n) ? n : NaN; }
  function el(tag, cls, text) { const e = document.createElement(tag); if (cls) e.className = cls; if (text !== undefined) e.textContent = text; return e; }
  function setText(e, t) { if (e.textContent !== t) e.textContent = t; }
  function setCls(e, base, dir) { const c = dir ? base + " " + dir : base; if (e.className !== c) e.className = c; }
  function dir(v) { return v > 0 ? "up" : v < 0 ? "down" : "flat"; }
  const nf2 = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  const nf0 = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  const clockFmt = new Intl.DateTimeFormat("zh-CN", { timeZone: "Asia/Shanghai", hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  function fPrice(v) { v = num(v); return Number.isFinite(v) && v > 0 ? v.toFixed(2) : "--"; }
  function fSigned(v, d) { v = num(v); return Number.isFinite(v) ? (v > 0 ? "+" : "") + v.toFixed(d === undefined ? 2 : d) : "--"; }
  function fPct(v) { v = num(v); return Number.isFinite(v) ? (v > 0 ? "+" : "") + v.toFixed(2) + "%" : "--"; }
  function fInt(v) { v = num(v); return Number.isFinite(v) ? nf0.format(v) : "--"; }
  function fBig(v) {
    v = num(v);
    if (!Number.isFinite(v)) return "--";
    const a = Math.abs(v);
    if (a >= 1e8) return nf2.format(v / 1e8) + "亿";
    if (a >= 1e4) return nf2.format(v / 1e4) + "万";
    return nf0.format(v);
  }
  function fYi(v) { v = num(v); return Number.isFinite(v) ? nf2.format(v / 1e8) : "--"; }
  function fTime(ms) { ms = num(ms); return Number.isFinite(ms) && ms > 0 ? clockFmt.format(ms) : "--:--:--"; }
  function listOf(payload) {
    if (Array.isArray(payload)) return payload;
    if (payload && typeof payload === "object") {
      for (const k of ["data", "items", "quotes", "candles", "alerts", "results", "ranks"]) {
        if (Array.isArray(payload[k])) return payload[k];
      }
      const vals = Object.values(payload);
      if (vals.length && vals.every((v) => v && typeof v === "object" && !Array.isArray(v))) return vals;
    }
    return [];
  }

  // ------------------------------------------------------------------ render scheduling
  let frameRequested = false;
  function schedule() {
    if (frameRequested) return;
    frameRequested = true;
    requestAnimationFrame(render);
  }

  function render() {
    frameRequested = false;
    if (dirty.cards.size) { for (const m of dirty.cards) renderCard(m); dirty.cards.clear(); }
    if (dirty.order) { renderRowsOrder(); dirty.order = false; }
    if (dirty.rows.size) {
      for (const code of dirty.rows) { const r = rows.get(code); if (r) updateRow(r); }
      dirty.rows.clear();
      if (state.sort.key && Date.now() - lastSort > SORT_EVERY_MS) renderRowsOrder();
    }
    if (dirty.ranks) { renderRanks(); dirty.ranks = false; }
    if (dirty.alerts) { renderAlerts(); dirty.alerts = false; }
    if (dirty.detail) { renderDetail(); dirty.detail = false; }
    if (dirty.chart) { dirty.chart = false; drawChart(); }
  }

  // ------------------------------------------------------------------ market cards
  const cards = new Map();
  function buildCard(m) {
    const root = $(`.card[data-market="${m}"]`);
    root.innerHTML = "";
    const top = el("div", "card-top");
    const title = el("span", "card-title", m === "ALL" ? "A-shares" : m);
    title.append(el("span", "zh", MARKET_NAMES[m]));
    const ts = el("span", "card-ts", "--:--:--");
    top.append(title, ts);
    const main = el("div", "card-main");
    const avg = el("span", "card-avg num flat", "--");
    const avgLabel = el("span", "card-avg-label");
    avgLabel.append("avg change", document.createElement("br"));
    const stocks = el("span", "num", "--");
    avgLabel.append(stocks, " stocks");
    main.append(avg, avgLabel);
    const bar = el("div", "breadth");
    bar.setAttribute("role", "img");
    const bUp = el("span", "b-up"); const bFlat = el("span", "b-flat"); const bDown = el("span", "b-down");
    bar.append(bUp, bFlat, bDown);
    const legend = el("div", "breadth-legend");
    const lUp = el("span", "up", "▲ --"); const lFlat = el("span", "flat", "— --"); const lDown = el("span", "down", "▼ --");
    legend.append(lUp, lFlat, lDown);
    const grid = el("div", "card-grid");
    const kv = (k) => { const d = el("div", "kv"); const v = el("span", "v", "--"); d.append(el("span", "k", k), v); grid.append(d); return v; };
    const refs = {
      root, ts, avg, stocks, bar, bUp, bFlat, bDown, lUp, lFlat, lDown,
      lu: kv("涨停 Limit up"), ld: kv("跌停 Limit down"), sus: kv("停牌 Suspended"),
      amt: kv("成交额 Amount (亿)"), vol: kv("成交量 Volume"), upr: kv("上涨占比 Up ratio"),
    };
    root.append(top, main, bar, legend, grid);
    cards.set(m, refs);
    return refs;
  }

  function renderCard(m) {
    const c = cards.get(m) || buildCard(m);
    const s = state.stats.get(m);
    if (!s) { c.root.classList.add("is-empty"); return; }
    c.root.classList.remove("is-empty");
    const avg = num(s.avg_change_pct);
    setText(c.ts, fTime(s.ts));
    setText(c.avg, fPct(avg));
    setCls(c.avg, "card-avg num", dir(avg));
    c.root.classList.toggle("is-up", avg > 0);
    c.root.classList.toggle("is-down", avg < 0);
    setText(c.stocks, fInt(s.stocks));
    const up = num(s.advancers) || 0, down = num(s.decliners) || 0, flat = num(s.unchanged) || 0;
    const tot = up + down + flat;
    c.bUp.style.width = tot ? (100 * up / tot) + "%" : "0";
    c.bFlat.style.width = tot ? (100 * flat / tot) + "%" : "0";
    c.bDown.style.width = tot ? (100 * down / tot) + "%" : "0";
    c.bar.setAttribute("aria-label", `${up} up, ${flat} unchanged, ${down} down`);
    setText(c.lUp, "▲ " + fInt(up)); setText(c.lFlat, "— " + fInt(flat)); setText(c.lDown, "▼ " + fInt(down));
    setText(c.lu, fInt(s.limit_up)); setCls(c.lu, "v", num(s.limit_up) > 0 ? "up" : "");
    setText(c.ld, fInt(s.limit_down)); setCls(c.ld, "v", num(s.limit_down) > 0 ? "down" : "");
    setText(c.sus, fInt(s.suspended));
    setText(c.amt, fYi(s.amount));
    setText(c.vol, fBig(s.volume));
    setText(c.upr, tot ? (100 * up / tot).toFixed(1) + "%" : "--");
  }

  function applyStats(list) {
    for (const s of list) {
      if (!s || !MARKETS.includes(s.market)) continue;
      const old = state.stats.get(s.market);
      if (old && num(old.ts) > num(s.ts)) continue;
      state.stats.set(s.market, s);
      dirty.cards.add(s.market);
      if (s.market === state.rankMarket) dirty.ranks = true;
    }
    schedule();
  }

  // ------------------------------------------------------------------ watchlist table
  const tbody = $("#watch-body");
  const rows = new Map();
  let flip = false;

  function buildRow(code) {
    const tr = el("tr");
    tr.dataset.code = code;
    tr.tabIndex = 0;
    tr.setAttribute("aria-selected", String(code === state.selected));
    const td = (cls) => { const c = el("td", cls); tr.append(c); return c; };
    const r = {
      code, tr,
      code_: td("c-code"), name: td("c-name"), price: td("c-price r"), change: td("c-chg r"),
      pct: td("c-pct r"), volume: td("c-vol r"), amount: td("c-amt r"), ba: td("c-ba r"), time: td("c-time r"),
      rmCell: td("c-rm"), lastPrice: NaN, lastKey: "",
    };
    r.code_.textContent = code;
    r.name.textContent = "…";
    r.pill = el("span", "pill flat", "--");
    r.pct.append(r.pill);
    const rm = el("button", "rm", "×");
    rm.type = "button";
    rm.tabIndex = -1;
    rm.title = "Remove " + code;
    rm.setAttribute("aria-label", "Remove " + code);
    rm.addEventListener("click", (e) => { e.stopPropagation(); removeCode(code); });
    r.rmCell.append(rm);
    for (const c of [r.price, r.change, r.pct, r.volume, r.amount, r.ba, r.time]) c.addEventListener("animationend", clearFlash);
    rows.set(code, r);
    updateRow(r);
    return r;
  }

  function clearFlash(e) { e.currentTarget.classList.remove("flash-up", "flash-down", "fa", "fb"); }

  function flash(cell, d) {
    cell.classList.remove("flash-up", "flash-down", "fa", "fb");
    cell.classList.add(d > 0 ? "flash-up" : "flash-down", flip ? "fa" : "fb");
  }

  function updateRow(r) {
    const q = state.quotes.get(r.code);
    if (!q) return;
    const price = num(q.price), chg = num(q.change), pct = num(q.change_pct);
    const d = q.suspended ? "flat" : dir(chg);
    const name = q.name || r.code;
    const key = name + (q.is_st ? "|st" : "") + (q.at_limit_up ? "|lu" : "") + (q.at_limit_down ? "|ld" : "") + (q.suspended ? "|sus" : "");
    if (key !== r.lastKey) {
      r.lastKey = key;
      r.name.textContent = name;
      if (q.at_limit_up) r.name.append(el("span", "tag tag-lu", "涨停"));
      if (q.at_limit_down) r.name.append(el("span", "tag tag-ld", "跌停"));
      if (q.suspended) r.name.append(el("span", "tag tag-sus", "停牌"));
    }
    const shown = q.traded === false && !(price > 0) ? NaN : price;
    setText(r.price, fPrice(shown)); setCls(r.price, "c-price r", d);
    setText(r.change, fSigned(chg)); setCls(r.change, "c-chg r", d);
    setText(r.pill, fPct(pct)); setCls(r.pill, "pill", d);
    setText(r.volume, fBig(q.volume));
    setText(r.amount, fBig(q.amount));
    const ba = fPrice(q.bid) + " / " + fPrice(q.ask);
    setText(r.ba, ba);
    setText(r.time, fTime(q.exchange_ts));
    if (Number.isFinite(r.lastPrice) && Number.isFinite(price) && price !== r.lastPrice) {
      flip = !flip;
      flash(r.price, price - r.lastPrice);
      flash(r.pct, price - r.lastPrice);
    }
    if (Number.isFinite(price)) r.lastPrice = price;
  }

  function sortValue(code, key) {
    const q = state.quotes.get(code);
    if (key === "code") return code;
    if (!q) return null;
    if (key === "name") return q.name || "";
    return num(q[key]);
  }

  function renderRowsOrder() {
    lastSort = Date.now();
    let order = dedupe(state.watch.concat(state.extra)).slice(0, MAX_ROWS);
    const { key, dir: sdir } = state.sort;
    if (key) {
      order.sort((a, b) => {
        const va = sortValue(a, key), vb = sortValue(b, key);
        const na = va === null || (typeof va === "number" && !Number.isFinite(va));
        const nb = vb === null || (typeof vb === "number" && !Number.isFinite(vb));
        if (na || nb) return na === nb ? 0 : na ? 1 : -1;
        if (typeof va === "string") return sdir * va.localeCompare(vb);
        return sdir * (va - vb);
      });
    }
    for (const [code, r] of rows) if (!order.includes(code)) { r.tr.remove(); rows.delete(code); }
    let prev = null;
    for (const code of order) {
      const r = rows.get(code) || buildRow(code);
      const want = prev ? prev.nextSibling : tbody.firstChild;
      if (want !== r.tr) tbody.insertBefore(r.tr, want);
      prev = r.tr;
    }
    $("#watch-empty").hidden = order.length > 0;
  }

  const SESSIONS = [
    [9 * 60 + 15, 9 * 60 + 25, "auction", "集合竞价 Opening auction"],
    [9 * 60 + 25, 9 * 60 + 30, "break", "待开盘 Pre-open"],
    [9 * 60 + 30, 11 * 60 + 30, "continuous", "连续竞价 Continuous"],
    [11 * 60 + 30, 13 * 60, "break", "午间休市 Lunch break"],
    [13 * 60, 14 * 60 + 57, "continuous", "连续竞价 Continuous"],
    [14 * 60 + 57, 15 * 60, "auction", "收盘集合竞价 Closing auction"],
  ];
  const hmFmt = new Intl.DateTimeFormat("en-GB", { timeZone: "Asia/Shanghai", hour: "2-digit", minute: "2-digit", hour12: false });
  const sessionEl = $("#session");
  let lastExchangeTs = 0;
  function renderSession() {
    if (!lastExchangeTs) return;
    const [h, m] = hmFmt.format(lastExchangeTs).split(":").map(Number);
    const t = h * 60 + m;
    const hit = SESSIONS.find(([a, b]) => t >= a && t < b);
    const [phase, label] = hit ? [hit[2], hit[3]] : [t >= 15 * 60 ? "closed" : "pre", t >= 15 * 60 ? "已收盘 Closed" : "盘前 Pre-market"];
    sessionEl.hidden = false;
    sessionEl.dataset.phase = phase;
    setText(sessionEl, label);
    sessionEl.title = "Exchange time of the latest quote: " + fTime(lastExchangeTs);
  }

  function applyQuotes(list) {
    let fresh = false;
    for (const q of list) {
      if (!q || !CODE_RE.test(q.code || "")) continue;
      if (num(q.exchange_ts) > lastExchangeTs) lastExchangeTs = num(q.exchange_ts);
      const old = state.quotes.get(q.code);
      if (old && num(old.exchange_ts) > num(q.exchange_ts)) continue;
      state.quotes.set(q.code, q);
      if (!rows.has(q.code)) {
        if (state.removed.has(q.code)) continue;
        if (!state.watch.includes(q.code)) {
          if (!FEED_MARKET || state.extra.includes(q.code) || state.watch.length + state.extra.length >= MAX_ROWS) continue;
          state.extra.push(q.code);
        }
        fresh = true;
      }
      dirty.rows.add(q.code);
      if (q.code === state.selected) { dirty.detail = true; dirty.chart = true; }
    }
    if (fresh) dirty.order = true;
    schedule();
  }

  function addCode(code, select) {
    if (!CODE_RE.test(code)) return "Enter 6 digits";
    state.removed.delete(code);
    if (!state.watch.includes(code)) {
      if (state.watch.length >= MAX_ROWS) return `At most ${MAX_ROWS} stocks`;
      state.watch.push(code);
      store.set("watch", state.watch);
      feed.send({ type: "subscribe_stock", stock_code: code });
      loadQuotes([code]);
      dirty.order = true;
      schedule();
    }
    if (select) selectCode(code);
    return "";
  }

  function removeCode(code) {
    const i = state.watch.indexOf(code);
    if (i >= 0) state.watch.splice(i, 1);
    const j = state.extra.indexOf(code);
    if (j >= 0) state.extra.splice(j, 1);
    state.removed.add(code);
    store.set("watch", state.watch);
    addMsg.textContent = "";
    feed.send({ type: "unsubscribe_stock", stock_code: code });
    const r = rows.get(code);
    const next = r && (r.tr.nextElementSibling || r.tr.previousElementSibling);
    if (r) { r.tr.remove(); rows.delete(code); }
    if (code === state.selected) selectCode(state.watch[0] || null);
    if (next) next.focus();
    dirty.order = true;
    schedule();
  }

  function selectCode(code) {
    if (code === state.selected && code !== null) return;
    const old = state.selected;
    state.selected = code;
    store.set("selected", code);
    for (const r of rows.values()) r.tr.setAttribute("aria-selected", String(r.code === code));
    if (old && old !== code) feed.send({ type: "unsubscribe_candles", stock_code: old });
    if (old && old === backfill.code) backfill.code = null;
    if (old && !state.watch.includes(old)) feed.send({ type: "unsubscribe_stock", stock_code: old });
    state.candles = new Map();
    dirty.chart = true;
    dirty.detail = true;
    if (code) subscribeChart(code);
    schedule();
  }

  function subscribeChart(code) {
    // subscribing again switches the timeframe (one per stock and connection)
    feed.send({ type: "subscribe_candles", stock_code: code, tf: state.tf, indicators: CHART_INDICATORS });
    loadCandles(code);
  }

  tbody.addEventListener("click", (e) => {
    const tr = e.target.closest("tr[data-code]");
    if (tr) selectCode(tr.dataset.code);
  });
  tbody.addEventListener("keydown", (e) => {
    const tr = e.target.closest("tr[data-code]");
    if (!tr || e.target !== tr) return;
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); selectCode(tr.dataset.code); }
    else if (e.key === "ArrowDown" && tr.nextElementSibling) { e.preventDefault(); tr.nextElementSibling.focus(); }
    else if (e.key === "ArrowUp" && tr.previousElementSibling) { e.preventDefault(); tr.previousElementSibling.focus(); }
    else if (e.key === "Delete" || e.key === "Backspace") { e.preventDefault(); removeCode(tr.dataset.code); }
  });

  for (const th of document.querySelectorAll("th[data-sort]")) {
    th.tabIndex = 0;
    th.setAttribute("aria-sort", "none");
    const act = () => {
      const key = th.dataset.sort;
      if (state.sort.key !== key) state.sort = { key, dir: key === "code" || key === "name" ? 1 : -1 };
      else if (state.sort.dir === -1 && key !== "code" && key !== "name") state.sort.dir = 1;
      else if (state.sort.dir === 1 && (key === "code" || key === "name")) state.sort.dir = -1;
      else state.sort = { key: null, dir: -1 };
      for (const h of document.querySelectorAll("th[data-sort]")) {
        h.setAttribute("aria-sort", h.dataset.sort === state.sort.key ? (state.sort.dir > 0 ? "ascending" : "descending") : "none");
      }
      dirty.order = true;
      schedule();
    };
    th.addEventListener("click", act);
    th.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); act(); } });
  }

  const addForm = $("#add-form"), addInput = $("#add-code"), addMsg = $("#add-msg");
  let addMsgTimer = 0;
  addInput.addEventListener("input", () => {
    const v = addInput.value;
    const bad = v !== "" && !/^\d{0,6}$/.test(v);
    addInput.setAttribute("aria-invalid", String(bad));
    addMsg.textContent = bad ? "Digits only" : "";
    addMsg.className = bad ? "add-msg err" : "add-msg";
  });
  addForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const code = addInput.value.trim();
    const exists = state.watch.includes(code);
    const err = addCode(code, true);
    addInput.setAttribute("aria-invalid", String(Boolean(err)));
    addMsg.className = err ? "add-msg err" : "add-msg";
    addMsg.textContent = err || (exists ? code + " already listed" : "Added " + code);
    if (!err) addInput.value = "";
    clearTimeout(addMsgTimer);
    addMsgTimer = setTimeout(() => { if (!addInput.value) addMsg.textContent = ""; }, 3000);
  });

  // ------------------------------------------------------------------ detail: chart header + order book
  const chartQuote = $("#chart-quote"), book = $("#book");
  function renderDetail() {
    const code = state.selected;
    const q = code ? state.quotes.get(code) : null;
    chartQuote.innerHTML = "";
    book.innerHTML = "";
    if (!code) return;
    const d = q ? dir(num(q.change)) : "flat";
    chartQuote.append(el("span", "cq-name", q ? q.name : code), el("span", "cq-code", code + (q ? "." + q.market : "")));
    if (q) chartQuote.append(el("span", "cq-price " + d, fPrice(q.price)), el("span", "cq-chg " + d, fSigned(q.change) + "  " + fPct(q.change_pct)));
    const bh = el("h3", "", "Order book 五档");
    book.append(bh);
    if (!q) { book.append(el("div", "flat", "No quote yet")); return; }
    const ap = q.ask_prices || [], av = q.ask_volumes || [], bp = q.bid_prices || [], bv = q.bid_volumes || [];
    const vmax = Math.max(1, ...av.slice(0, 5).map(num).filter(Number.isFinite), ...bv.slice(0, 5).map(num).filter(Number.isFinite));
    const prev = num(q.prev_close);
    const line = (side, lvl, p, v) => {
      const row = el("div", "book-row " + side);
      const bar = el("span", "bar");
      bar.style.width = Number.isFinite(num(v)) ? Math.round(60 * num(v) / vmax) + "%" : "0";
      row.append(el("span", "lvl", (side === "ask" ? "卖" : "买") + lvl), el("span", "px " + (num(p) > 0 ? dir(num(p) - prev) : "flat"), fPrice(p)), el("span", "vol", Number.isFinite(num(v)) && num(p) > 0 ? fBig(num(v) / 100) : "--"), bar);
      book.append(row);
    };
    for (let i = 4; i >= 0; i--) line("ask", i + 1, ap[i], av[i]);
    book.append(el("div", "book-mid " + dir(num(q.change)), fPrice(q.price)));
    for (let i = 0; i < 5; i++) line("bid", i + 1, bp[i], bv[i]);
    const st = el("div", "book-stats");
    const kv = (k, v, c) => st.append(el("span", "k", k), el("span", "v" + (c ? " " + c : ""), v));
    kv("Open", fPrice(q.open), dir(num(q.open) - prev));
    kv("High", fPrice(q.high), dir(num(q.high) - prev));
    kv("Low", fPrice(q.low), dir(num(q.low) - prev));
    kv("Prev close", fPrice(q.prev_close));
    kv("Limit ↑/↓", fPrice(q.limit_up) + "/" + fPrice(q.limit_down));
    kv("Volume", fBig(q.volume));
    kv("Amount", fBig(q.amount));
    book.append(st);
  }

  // ------------------------------------------------------------------ candles
  const chart = new window.HQChart.CandleChart($("#chart"), $("#chart-tip"));
  chart.setConvention(state.conv);
  chart.onNeedsDraw = () => { dirty.chart = true; schedule(); };
  const chartEmpty = $("#chart-empty");

  function applyCandles(list, replace) {
    if (replace) state.candles = new Map();
    for (const c of list) {
      if (!c || c.code !== state.selected || (c.tf || "1m") !== state.tf) continue;
      const t = num(c.minute_ts);
      if (!Number.isFinite(t)) continue;
      const old = state.candles.get(t);
      if (old && old.closed && c.closed === false) continue;
      if (old && !c.closed && num(old.ticks) > num(c.ticks)) continue;
      const indicators = c.indicators || (old && old.indicators) || null;
      state.candles.set(t, { minute_ts: t, open: num(c.open), high: num(c.high), low: num(c.low), close: num(c.close), volume: num(c.volume) || 0, amount: num(c.amount) || 0, ticks: num(c.ticks), closed: c.closed !== false, indicators });
    }
    if (state.candles.size > MAX_CANDLES) {
      const keys = Array.from(state.candles.keys()).sort((a, b) => a - b);
      for (const k of keys.slice(0, keys.length - MAX_CANDLES)) state.candles.delete(k);
    }
    dirty.chart = true;
    schedule();
  }

  function drawChart() {
    const list = Array.from(state.candles.values()).filter((c) => Number.isFinite(c.open) && Number.isFinite(c.close) && Number.isFinite(c.high) && Number.isFinite(c.low)).sort((a, b) => a.minute_ts - b.minute_ts);
    const q = state.selected ? state.quotes.get(state.selected) : null;
    chart.setData(list, q ? num(q.prev_close) : NaN, q && num(q.price) > 0 ? num(q.price) : NaN);
    chart.setView(state.tf, state.pane);
    chart.draw();
    chartEmpty.hidden = list.length > 0;
    chartEmpty.textContent = state.selected ? "Waiting for candles of " + state.selected + "…" : "Select a stock";
  }

  // ------------------------------------------------------------------ rankings
  const rankLists = {};
  for (const d of document.querySelectorAll(".rank")) rankLists[d.dataset.list] = d.querySelector("ol");
  const REST_METRIC = { top_gainers: ["change_pct", "desc"], top_losers: ["change_pct", "asc"], top_turnover: ["amount", "desc"] };

  function renderRanks() {
    const s = state.stats.get(state.rankMarket);
    for (const [list, ol] of Object.entries(rankLists)) {
      let entries = s && Array.isArray(s[list]) && s[list].length ? s[list] : state.rankRest.get(state.rankMarket + ":" + list) || [];
      entries = entries.slice(0, RANK_ROWS);
      const frag = document.createDocumentFragment();
      if (!entries.length) frag.append(el("li", "none", "No data yet"));
      for (const e of entries) {
        const li = el("li");
        li.tabIndex = 0;
        li.dataset.code = e.code;
        const name = el("span", "r-name", e.name || e.code);
        name.append(el("small", "", e.code));
        const pct = num(e.change_pct);
        const val = list === "top_turnover" ? el("span", "r-val", fBig(e.amount)) : el("span", "r-val " + dir(pct), fPct(pct));
        li.append(name, el("span", "r-px " + dir(pct), fPrice(e.price)), val);
        li.title = `${e.name || ""} ${e.code} · ${fPct(pct)} · ${fBig(e.amount)} — click to watch`;
        frag.append(li);
      }
      ol.replaceChildren(frag);
    }
  }

  async function loadRanksRest(market) {
    for (const [list, [metric, order]] of Object.entries(REST_METRIC)) {
      try {
        const data = await api(`/rank/${market}/${metric}?limit=${RANK_ROWS}` + (order === "asc" ? "&order=asc" : ""));
        let items = listOf(data).filter((x) => x && CODE_RE.test(x.code || ""));
        if (metric === "amount") items = items.map((x) => (Number.isFinite(num(x.amount)) ? x : Object.assign({}, x, { amount: num(x.value) })));
        if (order === "asc") items = items.slice().sort((a, b) => num(a.change_pct) - num(b.change_pct));
        state.rankRest.set(market + ":" + list, items);
      } catch (e) { /* stats messages will fill it */ }
    }
    dirty.ranks = true;
    schedule();
  }

  const rankTabs = $("#rank-tabs");
  rankTabs.addEventListener("click", (e) => {
    const b = e.target.closest("button[data-market]");
    if (!b) return;
    state.rankMarket = b.dataset.market;
    for (const x of rankTabs.querySelectorAll("button")) x.setAttribute("aria-selected", String(x === b));
    const s = state.stats.get(state.rankMarket);
    if (!s || !(s.top_gainers || []).length) loadRanksRest(state.rankMarket);
    dirty.ranks = true;
    schedule();
  });
  function onPick(e) {
    const li = e.target.closest("li[data-code]");
    if (!li) return;
    if (e.type === "keydown" && e.key !== "Enter" && e.key !== " ") return;
    e.preventDefault();
    addCode(li.dataset.code, true);
  }
  for (const root of [$(".ranks"), $("#alerts")]) { root.addEventListener("click", onPick); root.addEventListener("keydown", onPick); }

  // ------------------------------------------------------------------ alerts
  const alertsEl = $("#alerts"), alertsCount = $("#alerts-count");
  const KIND = {
    LIMIT_UP_TOUCH: ["涨停 Limit up", "k-up"], LIMIT_UP_LEAVE: ["开板 Off limit", "k-info"],
    LIMIT_DOWN_TOUCH: ["跌停 Limit dn", "k-down"], LIMIT_DOWN_LEAVE: ["翘板 Off limit", "k-info"],
    FAST_MOVE: ["异动 Fast move", ""], VOLUME_SPIKE: ["放量 Vol spike", "k-info"],
  };
  // The list is always state.alerts, newest first: rendering reconciles the DOM
  // with it by key (existing items are kept, new ones built), so alerts that
  // arrive from REST and the WebSocket in any order and in the same frame all
  // show. Items that arrived live (not in the initial load) flash once.
  const alertNodes = new Map();
  const liveAlertKeys = new Set();
  function alertKey(a) { return a.code + "|" + a.kind + "|" + a.exchange_ts; }
  function applyAlerts(list, initial) {
    let added = 0;
    for (const a of list) {
      if (!a || !a.code) continue;
      const k = alertKey(a);
      if (state.alertKeys.has(k)) continue;
      state.alertKeys.add(k);
      state.alerts.push(a);
      if (!initial) liveAlertKeys.add(k);
      added += 1;
    }
    if (!added) return;
    state.alerts.sort((a, b) => num(b.exchange_ts) - num(a.exchange_ts));
    for (const a of state.alerts.splice(MAX_ALERTS)) state.alertKeys.delete(alertKey(a));
    dirty.alerts = true;
    schedule();
  }

  function alertItem(a, fresh) {
    const li = el("li", fresh ? "fresh" : "");
    li.tabIndex = 0;
    li.dataset.code = a.code;
    li.dataset.key = alertKey(a);
    const kind = KIND[a.kind] || [a.kind, ""];
    let kcls = kind[1];
    if (a.kind === "FAST_MOVE") kcls = num(a.value) >= 0 ? "k-up" : "k-down";
    const what = el("span", "a-what", (a.name || a.code) + " ");
    what.append(el("small", "", a.code), el("small", "", a.message || ""));
    const pct = num(a.change_pct);
    li.append(el("span", "a-time", fTime(a.exchange_ts)), el("span", "a-kind " + kcls, kind[0]), what, el("span", "a-num " + dir(pct), fPrice(a.price) + "  " + fPct(pct)));
    li.title = a.message || "";
    return li;
  }

  function renderAlerts() {
    if (!state.alerts.length) {
      alertNodes.clear();
      alertsEl.replaceChildren(el("li", "none", "No alerts yet"));
    } else {
      const items = state.alerts.map((a) => {
        const k = alertKey(a);
        let li = alertNodes.get(k);
        if (!li) {
          li = alertItem(a, liveAlertKeys.has(k));
          alertNodes.set(k, li);
        }
        return li;
      });
      const keep = new Set(items);
      for (const [k, li] of alertNodes) if (!keep.has(li)) alertNodes.delete(k);
      // moves only the nodes that are out of place; kept nodes stay put
      let cursor = alertsEl.firstChild;
      for (const li of items) {
        if (li === cursor) cursor = cursor.nextSibling;
        else alertsEl.insertBefore(li, cursor);
      }
      while (cursor) { const next = cursor.nextSibling; cursor.remove(); cursor = next; }
    }
    liveAlertKeys.clear();
    setText(alertsCount, String(state.alerts.length));
  }

  // ------------------------------------------------------------------ REST
  const banner = $("#banner");
  function showBanner(text) { banner.textContent = text; banner.hidden = !text; }

  async function api(path) {
    const headers = { Accept: "application/json" };
    if (API_KEY) headers["X-API-Key"] = API_KEY;
    const resp = await fetch(API + path, { headers, cache: "no-store" });
    if (resp.status === 401 || resp.status === 403) {
      showBanner(API_KEY ? "The API key was refused by the gateway." : NEED_KEY);
      if (resp.status === 401) askForKey(Boolean(API_KEY));
      throw new Error("auth " + resp.status);
    }
    if (!resp.ok) throw new Error(path + " -> HTTP " + resp.status);
    return resp.json();
  }

  async function loadQuotes(codes) {
    if (!codes.length) return;
    try {
      applyQuotes(listOf(await api("/quotes?codes=" + codes.join(","))));
    } catch (e) {
      await Promise.all(codes.slice(0, 20).map(async (c) => {
        try { applyQuotes([await api("/stock/" + c)]); } catch (err) { /* not quoted yet */ }
      }));
    }
  }

  function candlesPath(code, limit) {
    const q = state.quotes.get(code);
    const date = q && q.trade_date && state.tf !== "1d" ? "&date=" + encodeURIComponent(q.trade_date) : "";
    return "/stock/" + code + "/candles?tf=" + state.tf + "&indicators=" + CHART_INDICATORS.join(",") + date + (limit ? "&limit=" + limit : "");
  }

  async function loadCandles(code) {
    const tf = state.tf;
    let list = [];
    try { list = listOf(await api(candlesPath(code, 0))); } catch (e) { /* none stored */ }
    if (code !== state.selected || tf !== state.tf) return;
    if (list.length) applyCandles(list, false);
    else if (tf === "1m") backfillFromReplay(code);
  }

  // The open bar's indicator values are evaluated by the gateway when asked
  // (the workers store the state, not a value per tick): refresh the newest bars.
  setInterval(async () => {
    const code = state.selected, tf = state.tf;
    if (!code || document.hidden) return;
    let list = [];
    try { list = listOf(await api(candlesPath(code, 2))); } catch (e) { return; }
    if (code === state.selected && tf === state.tf) applyCandles(list, false);
  }, OPEN_BAR_REFRESH_MS);

  const tfTabs = $("#tf-tabs"), paneTabs = $("#pane-tabs");
  function markTabs() {
    for (const b of tfTabs.querySelectorAll("button")) b.setAttribute("aria-selected", String(b.dataset.tf === state.tf));
    for (const b of paneTabs.querySelectorAll("button")) b.setAttribute("aria-selected", String(b.dataset.pane === state.pane));
  }
  tfTabs.addEventListener("click", (e) => {
    const b = e.target.closest("button[data-tf]");
    if (!b || b.dataset.tf === state.tf) return;
    state.tf = b.dataset.tf;
    store.set("tf", state.tf);
    markTabs();
    state.candles = new Map();
    if (backfill.code === state.selected) backfill.code = null;
    if (state.selected) subscribeChart(state.selected);
    dirty.chart = true;
    schedule();
  });
  paneTabs.addEventListener("click", (e) => {
    const b = e.target.closest("button[data-pane]");
    if (!b) return;
    state.pane = b.dataset.pane;
    store.set("pane", state.pane);
    markTabs();
    dirty.chart = true;
    schedule();
  });
  markTabs();

  // No stored candles for the day (a fresh stack, a Redis that lost them):
  // the chart back-fills from a replay of the stock's trading day, which the
  // gateway reads from Kafka on the exchange clock; the page folds the quotes
  // into 1-minute candles (volume from the cumulative volume's growth).
  const backfill = { code: null, candles: new Map(), volume: 0 };
  function backfillFromReplay(code) {
    const q = state.quotes.get(code);
    const ts = q ? num(q.exchange_ts) : NaN;
    if (!Number.isFinite(ts)) return;
    const dayStart = ts - ((ts + 8 * 3600e3) % 86400e3); // midnight in Shanghai
    Object.assign(backfill, { code, candles: new Map(), volume: 0 });
    feed.send({ type: "subscribe_stock", stock_code: code, since: dayStart });
  }
  function applyReplay(code, quotes) {
    applyQuotes(quotes.slice(-1));
    if (code !== backfill.code || code !== state.selected || state.tf !== "1m") return;
    for (const q of quotes) {
      const ts = num(q.exchange_ts), price = num(q.price), volume = num(q.volume);
      if (!Number.isFinite(ts) || !(price > 0)) continue;
      const minute = ts - (ts % 60000);
      const traded = Math.max(0, (Number.isFinite(volume) ? volume : 0) - backfill.volume);
      backfill.volume = Math.max(backfill.volume, volume || 0);
      const c = backfill.candles.get(minute);
      if (!c) backfill.candles.set(minute, { code, tf: "1m", minute_ts: minute, open: price, high: price, low: price, close: price, volume: traded, amount: traded * price, ticks: 1, closed: true });
      else Object.assign(c, { high: Math.max(c.high, price), low: Math.min(c.low, price), close: price, volume: c.volume + traded, amount: c.amount + traded * price, ticks: c.ticks + 1 });
    }
    const built = Array.from(backfill.candles.values());
    const newest = built.reduce((a, c) => Math.max(a, c.minute_ts), -Infinity);
    // the newest minute may still be open: live candles of the workers take over
    applyCandles(built.map((c) => (c.minute_ts === newest ? { ...c, closed: false, ticks: 0 } : c)), false);
  }

  const footerStatus = $("#footer-status");
  async function loadStatus() {
    try {
      const s = await api("/status");
      const frag = document.createDocumentFragment();
      frag.append(el("span", "st-dot " + (s.ok ? "ok" : "bad")), "Gateway " + (s.ok ? "healthy" : "degraded"));
      if (typeof s.pushing === "boolean") frag.append(" · push " + (s.pushing ? "on" : "paused"));
      if (Number.isFinite(num(s.websocket_clients))) frag.append(" · " + num(s.websocket_clients) + " WS clients");
      for (const [name, c] of Object.entries(s.components || {}).slice(0, 8)) {
        const item = el("span", "st-item");
        item.title = c && c.detail ? String(c.detail) : "";
        item.append(el("span", "st-dot " + (c && c.ok ? "ok" : "bad")), name);
        frag.append(item);
      }
      footerStatus.replaceChildren(frag);
    } catch (e) {
      footerStatus.textContent = "Gateway status unavailable";
    }
  }

  async function initialLoad() {
    await Promise.all([
      ...MARKETS.map(async (m) => { try { applyStats([await api(`/market/${m}/summary`)]); } catch (e) { /* no summary yet */ } }),
      loadQuotes(state.watch.slice()),
      (async () => { try { applyAlerts(listOf(await api("/alerts?limit=50")), true); } catch (e) { /* none */ } })(),
      loadStatus(),
    ]);
    if (state.selected) loadCandles(state.selected);
    const s = state.stats.get(state.rankMarket);
    if (!s || !(s.top_gainers || []).length) loadRanksRest(state.rankMarket);
  }

  // ------------------------------------------------------------------ WebSocket
  const connEl = $("#conn"), connText = $("#conn-text");
  const rate = { frames: 0, items: 0 };

  const feed = {
    ws: null, attempt: 0, retryAt: 0, retryTimer: null, pingTimer: null, pingSent: 0, pingId: 0, rtt: null,
    connect() {
      clearTimeout(this.retryTimer);
      this.setState("connecting", this.attempt ? `Reconnecting… (attempt ${this.attempt + 1})` : "Connecting…");
      const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + API + "/ws";
      let ws;
      try { ws = new WebSocket(url); } catch (e) { this.retry(); return; }
      this.ws = ws;
      ws.onopen = () => {
        if (API_KEY) ws.send(JSON.stringify({ type: "auth", api_key: API_KEY }));
        this.attempt = 0;
        this.send({ type: "subscribe_stats" });
        this.send({ type: "subscribe_alerts" });
        for (const code of state.watch) this.send({ type: "subscribe_stock", stock_code: code });
        if (FEED_MARKET === "ALL") this.send({ type: "subscribe_all" });
        else if (FEED_MARKET) this.send({ type: "subscribe_market", market: FEED_MARKET });
        if (state.selected) this.send({ type: "subscribe_candles", stock_code: state.selected, tf: state.tf, indicators: CHART_INDICATORS });
        this.setState("open", "Live");
        this.ping();
        clearInterval(this.pingTimer);
        this.pingTimer = setInterval(() => this.ping(), PING_EVERY_MS);
      };
      ws.onmessage = (ev) => this.onMessage(ev.data);
      ws.onclose = (ev) => {
        if (this.ws !== ws) return;
        this.ws = null;
        clearInterval(this.pingTimer);
        if (ev.code === 1008) {
          this.setState("auth", "Not authorised");
          showBanner(API_KEY ? "The gateway refused the API key (WebSocket closed 1008)." : NEED_KEY);
          this.attempt = Math.max(this.attempt, 5);
        }
        this.retry();
      };
    },
    retry() {
      const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * Math.pow(2, this.attempt));
      const delay = Math.round(base * (0.5 + Math.random() * 0.5));
      this.attempt += 1;
      this.retryAt = Date.now() + delay;
      this.retryTimer = setTimeout(() => this.connect(), delay);
      this.tickRetry();
    },
    tickRetry() {
      if (this.ws || !this.retryAt) return;
      const left = Math.max(0, Math.ceil((this.retryAt - Date.now()) / 1000));
      if (connEl.dataset.state !== "auth") this.setState("reconnecting", `Reconnecting in ${left}s`);
    },
    setState(s, text) {
      connEl.dataset.state = s;
      setText(connText, text + (s === "open" && this.rtt !== null ? ` · ${this.rtt} ms` : ""));
      connEl.title = s === "reconnecting" ? `Connection lost; retry ${this.attempt} with exponential backoff` : text;
    },
    send(obj) {
      if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(obj));
    },
    ping() {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
      const id = ++this.pingId;
      this.pingSent = Date.now();
      this.send({ type: "ping", id });
      const ws = this.ws;
      setTimeout(() => { if (this.ws === ws && this.pingId === id && this.pingSent) ws.close(4000, "pong timeout"); }, PONG_DEADLINE_MS);
    },
    onMessage(raw) {
      let m;
      try { m = JSON.parse(raw); } catch (e) { return; }
      if (!m || typeof m !== "object") return;
      rate.frames += 1;
      switch (m.type) {
        case "quotes": rate.items += (m.data || []).length; applyQuotes(m.data || []); break;
        case "stats": rate.items += (m.data || []).length; applyStats(m.data || []); break;
        case "alerts": rate.items += (m.data || []).length; applyAlerts(m.data || [], false); break;
        case "candles": rate.items += (m.data || []).length; applyCandles(m.data || [], false); break;
        case "replay": rate.items += (m.data || []).length; applyReplay(m.stock_code, m.data || []); break;
        case "replay_done": if (m.stock_code === backfill.code) backfill.code = null; break;
        case "snapshot":
          if (Array.isArray(m.quotes)) applyQuotes(m.quotes);
          if (Array.isArray(m.stats)) applyStats(m.stats);
          if (Array.isArray(m.candles)) applyCandles(m.candles, false);
          if (Array.isArray(m.alerts)) applyAlerts(m.alerts, false);
          break;
        case "pong": {
          const now = Date.now();
          if (this.pingSent) {
            this.rtt = now - this.pingSent;
            if (Number.isFinite(num(m.ts))) state.clockOffset = num(m.ts) - (this.pingSent + now) / 2;
            this.pingSent = 0;
            this.setState("open", "Live");
          }
          break;
        }
        case "error":
          if (m.code === "not_authenticated") showBanner(NEED_KEY);
          else if (m.code === "bad_code") { addMsg.className = "add-msg err"; addMsg.textContent = m.message || "Unknown code"; }
          break;
        default: break;
      }
    },
  };

  // ------------------------------------------------------------------ header: clock, rates, colours
  const serverTime = $("#server-time"), msgRate = $("#msg-rate"), updRate = $("#upd-rate");
  setInterval(() => {
    setText(msgRate, String(rate.frames));
    setText(updRate, String(rate.items));
    rate.frames = 0;
    rate.items = 0;
    if (state.clockOffset !== null) setText(serverTime, fTime(Date.now() + state.clockOffset));
    renderSession();
    feed.tickRetry();
  }, 1000);

  const convBtn = $("#conv-toggle"), convLabel = $("#conv-label");
  function applyConv() {
    document.body.classList.toggle("conv-cn", state.conv === "cn");
    document.body.classList.toggle("conv-us", state.conv === "us");
    convLabel.textContent = state.conv === "cn" ? "红涨绿跌 Red = up" : "绿涨红跌 Green = up";
    convBtn.setAttribute("aria-pressed", String(state.conv === "cn"));
    chart.setConvention(state.conv);
    dirty.chart = true;
    schedule();
  }
  convBtn.addEventListener("click", () => { state.conv = state.conv === "cn" ? "us" : "cn"; store.set("conv", state.conv); applyConv(); });

  // ------------------------------------------------------------------ start
  applyConv();
  for (const m of MARKETS) buildCard(m);
  schedule();
  feed.connect();
  initialLoad();
  setInterval(loadStatus, 30000);
  window.hqDashboard = { state, feed };
})();
