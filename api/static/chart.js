/* hqstream dashboard: candlestick chart of any timeframe drawn on a <canvas>.
 *
 * Pure drawing: it is given bars (Candle objects of candle.v2.avsc, with their
 * indicators) and draws price candles with MA5/10/20/60 overlays, volume bars,
 * a MACD (DIF, DEA, histogram) or RSI (6, 12, 24) pane, a right-hand price
 * axis, a time axis, the previous close and last price, and a crosshair with
 * an OHLCV + indicator tooltip. Values are the gateway's (TA-Lib definitions).
 * It never fetches data and never touches the DOM outside its canvas and tooltip.
 */
(function () {
  "use strict";

  const PALETTES = {
    cn: { up: "#f23645", down: "#10b981" },
    us: { up: "#10b981", down: "#f23645" },
  };
  const BG = "#111722";
  const GRID = "rgba(148, 163, 184, 0.08)";
  const AXIS_TEXT = "#7d8899";
  const CROSS = "rgba(203, 213, 225, 0.45)";
  const FONT = '11px "JetBrains Mono", "SF Mono", Menlo, Consolas, "DejaVu Sans Mono", monospace';
  const MIN_SLOTS = 60;
  const MIN_STEP = 4;

  const timeFmt = new Intl.DateTimeFormat("zh-CN", {
    timeZone: "Asia/Shanghai", hour: "2-digit", minute: "2-digit", hour12: false,
  });
  const dayFmt = new Intl.DateTimeFormat("zh-CN", {
    timeZone: "Asia/Shanghai", month: "2-digit", day: "2-digit",
  });
  const MA_LINES = [["ma5", "#f0b90b"], ["ma10", "#4c8dff"], ["ma20", "#c084fc"], ["ma60", "#22d3ee"]];
  const PANE_LINES = {
    macd: [["macd", "#f0b90b"], ["macd_signal", "#4c8dff"]],
    rsi: [["rsi6", "#f0b90b"], ["rsi12", "#4c8dff"], ["rsi24", "#c084fc"]],
  };
  const PANE_TITLE = { macd: "MACD(12,26,9)", rsi: "RSI(6,12,24)" };

  function ind(c, name) {
    const v = c.indicators ? c.indicators[name] : null;
    return typeof v === "number" && Number.isFinite(v) ? v : NaN;
  }

  function niceStep(raw) {
    if (!(raw > 0)) return 1;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const n = raw / mag;
    const f = n < 1.5 ? 1 : n < 3 ? 2 : n < 7 ? 5 : 10;
    return f * mag;
  }

  function compact(v) {
    if (!Number.isFinite(v)) return "--";
    const a = Math.abs(v);
    if (a >= 1e8) return (v / 1e8).toFixed(2) + "亿";
    if (a >= 1e4) return (v / 1e4).toFixed(1) + "万";
    return String(Math.round(v));
  }

  function decimalsFor(step) {
    return step >= 1 ? 2 : Math.min(4, Math.max(2, Math.ceil(-Math.log10(step)) + 1));
  }

  class CandleChart {
    constructor(canvas, tip) {
      this.canvas = canvas;
      this.tip = tip;
      this.ctx = canvas.getContext("2d");
      this.candles = [];
      this.prevClose = NaN;
      this.lastPrice = NaN;
      this.conv = "cn";
      this.tf = "1m";
      this.pane = "macd";
      this.mouse = null;
      this.layout = null;
      this.onNeedsDraw = null;
      canvas.addEventListener("mousemove", (e) => {
        const r = canvas.getBoundingClientRect();
        this.mouse = { x: e.clientX - r.left, y: e.clientY - r.top };
        this.requestDraw();
      });
      canvas.addEventListener("mouseleave", () => {
        this.mouse = null;
        this.requestDraw();
      });
      if (typeof ResizeObserver === "function") {
        new ResizeObserver(() => this.requestDraw()).observe(canvas);
      }
    }

    requestDraw() {
      if (this.onNeedsDraw) this.onNeedsDraw();
    }

    /** candles: array sorted by minute_ts. */
    setData(candles, prevClose, lastPrice) {
      this.candles = candles;
      this.prevClose = prevClose;
      this.lastPrice = lastPrice;
    }

    /** tf: the bars' timeframe (labels); pane: "macd" or "rsi". */
    setView(tf, pane) {
      this.tf = tf || "1m";
      this.pane = pane === "rsi" ? "rsi" : "macd";
    }

    label(ts) {
      return this.tf === "1d" ? dayFmt.format(ts) : timeFmt.format(ts);
    }

    setConvention(conv) {
      this.conv = conv === "us" ? "us" : "cn";
    }

    draw() {
      const canvas = this.canvas;
      const ctx = this.ctx;
      const dpr = window.devicePixelRatio || 1;
      const cssW = canvas.clientWidth;
      const cssH = canvas.clientHeight;
      if (cssW < 10 || cssH < 10) return;
      const pw = Math.round(cssW * dpr);
      const ph = Math.round(cssH * dpr);
      if (canvas.width !== pw || canvas.height !== ph) {
        canvas.width = pw;
        canvas.height = ph;
      }
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.fillStyle = BG;
      ctx.fillRect(0, 0, cssW, cssH);
      ctx.font = FONT;
      ctx.textBaseline = "middle";

      const pal = PALETTES[this.conv];
      const padL = 8;
      const axisW = 62;
      const padT = 10;
      const axisH = 20;
      const plotW = cssW - padL - axisW;
      const plotH = cssH - padT - axisH;
      const gap = 10;
      const volH = Math.max(32, Math.round(plotH * 0.14));
      const paneH = Math.max(48, Math.round(plotH * 0.22));
      const priceH = plotH - volH - paneH - 2 * gap;
      const priceTop = padT;
      const volTop = padT + priceH + gap;
      const paneTop = volTop + volH + gap;
      const maxVisible = Math.max(1, Math.floor(plotW / MIN_STEP));
      const visible = this.candles.slice(-maxVisible);
      const slots = Math.max(MIN_SLOTS, visible.length);
      const step = plotW / slots;
      const bodyW = Math.max(1, Math.min(12, Math.floor(step * 0.68)));

      // frame + grid
      ctx.strokeStyle = GRID;
      ctx.lineWidth = 1;
      ctx.strokeRect(padL + 0.5, priceTop + 0.5, plotW, priceH);
      ctx.strokeRect(padL + 0.5, volTop + 0.5, plotW, volH);
      ctx.strokeRect(padL + 0.5, paneTop + 0.5, plotW, paneH);
      this.layout = null;
      if (!visible.length) return;

      let lo = Infinity;
      let hi = -Infinity;
      let vmax = 0;
      for (const c of visible) {
        if (c.low < lo) lo = c.low;
        if (c.high > hi) hi = c.high;
        if (c.volume > vmax) vmax = c.volume;
        for (const [name] of MA_LINES) {
          const v = ind(c, name);
          if (v < lo) lo = v;
          if (v > hi) hi = v;
        }
      }
      if (Number.isFinite(this.lastPrice)) {
        lo = Math.min(lo, this.lastPrice);
        hi = Math.max(hi, this.lastPrice);
      }
      if (!(hi > lo)) {
        const m = Number.isFinite(hi) ? hi : 1;
        lo = m * 0.995;
        hi = m * 1.005;
      }
      const padP = (hi - lo) * 0.08;
      lo -= padP;
      hi += padP;
      const y = (p) => priceTop + ((hi - p) / (hi - lo)) * priceH;
      const xOf = (i) => padL + step * (i + 0.5);
      const yVol = (v) => volTop + volH - (vmax > 0 ? (v / vmax) * (volH - 4) : 0);

      // price grid + labels
      const pStep = niceStep((hi - lo) / 6);
      const dec = decimalsFor(pStep);
      ctx.textAlign = "left";
      for (let p = Math.ceil(lo / pStep) * pStep; p <= hi; p += pStep) {
        const yy = Math.round(y(p)) + 0.5;
        ctx.strokeStyle = GRID;
        ctx.beginPath();
        ctx.moveTo(padL, yy);
        ctx.lineTo(padL + plotW, yy);
        ctx.stroke();
        ctx.fillStyle = AXIS_TEXT;
        ctx.fillText(p.toFixed(dec), padL + plotW + 6, yy);
      }
      // volume axis label
      ctx.fillStyle = AXIS_TEXT;
      ctx.fillText(compact(vmax), padL + plotW + 6, volTop + 6);
      ctx.fillText("VOL", padL + 4, volTop + 9);

      // time labels
      const labelEvery = Math.max(1, Math.ceil(64 / step));
      ctx.textAlign = "center";
      for (let i = 0; i < visible.length; i += labelEvery) {
        const xx = Math.round(xOf(i)) + 0.5;
        ctx.strokeStyle = GRID;
        ctx.beginPath();
        ctx.moveTo(xx, priceTop);
        ctx.lineTo(xx, paneTop + paneH);
        ctx.stroke();
        ctx.fillStyle = AXIS_TEXT;
        const label = this.label(visible[i].minute_ts);
        const half = ctx.measureText(label).width / 2;
        const lx = Math.min(padL + plotW - half, Math.max(padL + half, xx));
        ctx.fillText(label, lx, paneTop + paneH + axisH / 2 + 1);
      }

      // previous close reference
      if (Number.isFinite(this.prevClose) && this.prevClose > lo && this.prevClose < hi) {
        const yy = Math.round(y(this.prevClose)) + 0.5;
        ctx.save();
        ctx.setLineDash([2, 4]);
        ctx.strokeStyle = "rgba(240, 185, 11, 0.45)";
        ctx.beginPath();
        ctx.moveTo(padL, yy);
        ctx.lineTo(padL + plotW, yy);
        ctx.stroke();
        ctx.restore();
      }

      // candles + volume
      for (let i = 0; i < visible.length; i++) {
        const c = visible[i];
        const upBar = c.close >= c.open;
        const col = upBar ? pal.up : pal.down;
        const cx = Math.round(xOf(i));
        ctx.strokeStyle = col;
        ctx.fillStyle = col;
        ctx.globalAlpha = c.closed === false ? 0.8 : 1;
        ctx.beginPath();
        ctx.moveTo(cx + 0.5, Math.round(y(c.high)));
        ctx.lineTo(cx + 0.5, Math.round(y(c.low)));
        ctx.stroke();
        const top = Math.round(y(Math.max(c.open, c.close)));
        const bot = Math.round(y(Math.min(c.open, c.close)));
        const bx = cx - Math.floor(bodyW / 2);
        ctx.fillRect(bx, top, bodyW, Math.max(1, bot - top));
        ctx.globalAlpha = 0.5;
        const vy = yVol(c.volume);
        ctx.fillRect(bx, vy, bodyW, volTop + volH - vy);
        ctx.globalAlpha = 1;
      }

      // moving averages over the candles, and their legend
      const line = (name, color, yOf) => {
        ctx.strokeStyle = color;
        ctx.lineWidth = 1.2;
        ctx.beginPath();
        let pen = false;
        for (let i = 0; i < visible.length; i++) {
          const v = ind(visible[i], name);
          if (!Number.isFinite(v)) { pen = false; continue; }
          if (pen) ctx.lineTo(xOf(i), yOf(v));
          else ctx.moveTo(xOf(i), yOf(v));
          pen = true;
        }
        ctx.stroke();
        ctx.lineWidth = 1;
      };
      const newest = (name) => {  // the newest bar that has the value
        for (let i = visible.length - 1; i >= 0; i--) {
          const v = ind(visible[i], name);
          if (Number.isFinite(v)) return v;
        }
        return NaN;
      };
      let legendX = padL + 6;
      const legend = (text, color, yy) => {
        ctx.fillStyle = color;
        ctx.textAlign = "left";
        ctx.fillText(text, legendX, yy);
        legendX += ctx.measureText(text).width + 10;
      };
      for (const [name, color] of MA_LINES) {
        line(name, color, y);
        const v = newest(name);
        legend(name.toUpperCase() + " " + (Number.isFinite(v) ? v.toFixed(dec) : "--"), color, priceTop + 9);
      }

      // the indicator pane: MACD (histogram + DIF/DEA) or RSI (6/12/24, guides at 30/70)
      const pane = this.pane;
      let pLo = pane === "rsi" ? 0 : Infinity;
      let pHi = pane === "rsi" ? 100 : -Infinity;
      if (pane === "macd") {
        for (const c of visible) {
          for (const name of ["macd", "macd_signal", "macd_hist"]) {
            const v = ind(c, name);
            if (v < pLo) pLo = v;
            if (v > pHi) pHi = v;
          }
        }
        const m = Math.max(Math.abs(pLo), Math.abs(pHi));
        pLo = Number.isFinite(m) && m > 0 ? -m * 1.1 : -1;
        pHi = -pLo;
      }
      const yPane = (v) => paneTop + ((pHi - v) / (pHi - pLo)) * paneH;
      const guides = pane === "rsi" ? [30, 70] : [0];
      ctx.save();
      ctx.setLineDash([2, 4]);
      ctx.strokeStyle = GRID;
      for (const g of guides) {
        const yy = Math.round(yPane(g)) + 0.5;
        ctx.beginPath();
        ctx.moveTo(padL, yy);
        ctx.lineTo(padL + plotW, yy);
        ctx.stroke();
        ctx.fillStyle = AXIS_TEXT;
        ctx.fillText(pane === "rsi" ? String(g) : "0", padL + plotW + 6, yy);
      }
      ctx.restore();
      if (pane === "macd") {
        const zero = yPane(0);
        for (let i = 0; i < visible.length; i++) {
          const v = ind(visible[i], "macd_hist");
          if (!Number.isFinite(v)) continue;
          ctx.fillStyle = v >= 0 ? pal.up : pal.down;
          const yy = yPane(v);
          ctx.fillRect(Math.round(xOf(i)) - Math.floor(bodyW / 2), Math.min(yy, zero), bodyW, Math.max(1, Math.abs(yy - zero)));
        }
      }
      legendX = padL + 6;
      legend(PANE_TITLE[pane], AXIS_TEXT, paneTop + 9);
      for (const [name, color] of PANE_LINES[pane]) {
        line(name, color, yPane);
        const v = newest(name);
        legend((name === "macd" ? "DIF" : name === "macd_signal" ? "DEA" : name.toUpperCase()) + " " + (Number.isFinite(v) ? v.toFixed(pane === "rsi" ? 2 : 3) : "--"), color, paneTop + 9);
      }

      // last price line and tag
      const last = Number.isFinite(this.lastPrice) ? this.lastPrice : visible[visible.length - 1].close;
      const ref = Number.isFinite(this.prevClose) ? this.prevClose : visible[0].open;
      const lastCol = last > ref ? pal.up : last < ref ? pal.down : "#8a94a6";
      const ly = Math.round(y(last)) + 0.5;
      ctx.save();
      ctx.setLineDash([4, 3]);
      ctx.strokeStyle = lastCol;
      ctx.globalAlpha = 0.7;
      ctx.beginPath();
      ctx.moveTo(padL, ly);
      ctx.lineTo(padL + plotW, ly);
      ctx.stroke();
      ctx.restore();
      this.tag(padL + plotW + 1, ly, last.toFixed(dec), lastCol, "#fff");

      this.layout = { padL, plotW, priceTop, priceH, volTop, volH, paneTop, paneH, step, lo, hi, visible, dec };
      this.drawCrosshair(y);
    }

    tag(x, yy, text, bg, fg) {
      const ctx = this.ctx;
      const w = ctx.measureText(text).width + 10;
      ctx.fillStyle = bg;
      ctx.fillRect(x, yy - 8, w, 16);
      ctx.fillStyle = fg;
      ctx.textAlign = "left";
      ctx.fillText(text, x + 5, yy + 0.5);
    }

    drawCrosshair(y) {
      const L = this.layout;
      const m = this.mouse;
      if (!L || !m || m.x < L.padL || m.x > L.padL + L.plotW) {
        this.tip.hidden = true;
        return;
      }
      const i = Math.min(L.visible.length - 1, Math.max(0, Math.floor((m.x - L.padL) / L.step)));
      const c = L.visible[i];
      const ctx = this.ctx;
      const cx = Math.round(L.padL + L.step * (i + 0.5)) + 0.5;
      ctx.save();
      ctx.setLineDash([3, 3]);
      ctx.strokeStyle = CROSS;
      ctx.beginPath();
      ctx.moveTo(cx, L.priceTop);
      ctx.lineTo(cx, L.paneTop + L.paneH);
      if (m.y >= L.priceTop && m.y <= L.priceTop + L.priceH) {
        ctx.moveTo(L.padL, Math.round(m.y) + 0.5);
        ctx.lineTo(L.padL + L.plotW, Math.round(m.y) + 0.5);
      }
      ctx.stroke();
      ctx.restore();
      if (m.y >= L.priceTop && m.y <= L.priceTop + L.priceH) {
        const p = L.hi - ((m.y - L.priceTop) / L.priceH) * (L.hi - L.lo);
        this.tag(L.padL + L.plotW + 1, Math.round(m.y) + 0.5, p.toFixed(L.dec), "#334155", "#e2e8f0");
      }
      const chg = c.close - c.open;
      const cls = chg > 0 ? "up" : chg < 0 ? "down" : "flat";
      this.tip.hidden = false;
      const fmt = (name, d) => (Number.isFinite(ind(c, name)) ? ind(c, name).toFixed(d) : "--");
      this.tip.innerHTML =
        `<b>${this.label(c.minute_ts)}</b>${c.closed === false ? " · open" : ""}<br>` +
        `O <b>${c.open.toFixed(2)}</b> H <b>${c.high.toFixed(2)}</b><br>` +
        `L <b>${c.low.toFixed(2)}</b> C <b class="${cls}">${c.close.toFixed(2)}</b><br>` +
        `Vol <b>${compact(c.volume)}</b> Amt <b>${compact(c.amount)}</b>` +
        (c.indicators
          ? `<br>MA5 <b>${fmt("ma5", 2)}</b> MA20 <b>${fmt("ma20", 2)}</b>` +
            `<br>DIF <b>${fmt("macd", 3)}</b> DEA <b>${fmt("macd_signal", 3)}</b>` +
            `<br>RSI6 <b>${fmt("rsi6", 1)}</b> RSI12 <b>${fmt("rsi12", 1)}</b>`
          : "");
      this.tip.style.left = m.x > L.padL + L.plotW / 2 ? "10px" : "";
      this.tip.style.right = "";
      if (m.x <= L.padL + L.plotW / 2) {
        this.tip.style.left = "auto";
        this.tip.style.right = "72px";
      }
      void y;
    }
  }

  window.HQChart = { CandleChart };
})();
