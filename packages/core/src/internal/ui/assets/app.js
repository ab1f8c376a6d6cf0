// Over 400 lines on purpose: the whole page in one script served as is (no bundler, no framework), four views
// sharing one small renderer and one poller.
// offpeak web view: runs, one run's batches on a timeline, failures by kind, one row. Plain DOM, no dependencies.
// Everything shown comes from the read-only JSON API of `offpeak ui`; the page polls it (every second while a run is
// worked, every 5 s otherwise), so a run's progress, batches and cost move as the ledger changes.

const LIVE_MS = 1000
const IDLE_MS = 5000
const PAGE = 50
const MAX_LANES = 200
const SVG = "http://www.w3.org/2000/svg"

// ===== small helpers =====

/** an element: h("td", { class: "num", title: "…" }, child, …); strings become text (never HTML) */
const h = (tag, props, ...children) => {
  const el = document.createElement(tag)
  for (const [k, v] of Object.entries(props ?? {})) {
    if (v === undefined || v === null || v === false) continue
    if (k === "on") for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn)
    else if (k === "class") el.className = v
    else if (k === "style") Object.assign(el.style, v) // through the CSSOM: the page's CSP forbids style attributes
    else el.setAttribute(k, v === true ? "" : String(v))
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue
    el.append(c instanceof Node ? c : document.createTextNode(String(c)))
  }
  return el
}

/** an SVG element */
const s = (tag, attrs, ...children) => {
  const el = document.createElementNS(SVG, tag)
  for (const [k, v] of Object.entries(attrs ?? {})) if (v !== undefined && v !== null) el.setAttribute(k, String(v))
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue
    el.append(c instanceof Node ? c : document.createTextNode(String(c)))
  }
  return el
}

const num = (n) => Number(n).toLocaleString("en-US")

const duration = (ms) => {
  if (!Number.isFinite(ms) || ms < 0) return "–"
  if (ms < 1000) return `${Math.round(ms)} ms`
  const sec = ms / 1000
  if (sec < 60) return `${sec < 10 ? sec.toFixed(1) : Math.round(sec)} s`
  const min = Math.floor(sec / 60)
  if (min < 60) return `${min} min ${String(Math.round(sec % 60)).padStart(2, "0")} s`
  const hours = Math.floor(min / 60)
  if (hours < 48) return `${hours} h ${String(min % 60).padStart(2, "0")} min`
  return `${Math.floor(hours / 24)} d ${hours % 24} h`
}

const time = (iso) => (iso ? new Date(iso).toLocaleString(undefined, { hour12: false }) : "–")
const clock = (iso) => (iso ? new Date(iso).toLocaleTimeString(undefined, { hour12: false }) : "–")
const ago = (iso, now) => (iso ? `${duration(now - Date.parse(iso))} ago` : "")

const bytes = (n) =>
  n < 1024 ? `${n} B` : n < 1024 * 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1024 / 1024).toFixed(1)} MiB`

/** $ from picodollars: 2 decimals from $100, 4 from $1, else 6 */
const usd = (money) => {
  if (!money) return "–"
  const pico = BigInt(money.picodollars)
  const abs = pico < 0n ? -pico : pico
  const digits = abs >= 100_000_000_000_000n ? 2 : abs >= 1_000_000_000_000n ? 4 : 6
  const unit = 10n ** BigInt(12 - digits)
  const rounded = (abs + unit / 2n) / unit
  const scale = 10n ** BigInt(digits)
  const whole = (rounded / scale).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",")
  return `${pico < 0n && rounded !== 0n ? "-" : ""}$${whole}.${(rounded % scale).toString().padStart(digits, "0")}`
}

const pct = (part, whole) => (whole > 0 ? `${Math.round((100 * part) / whole)}%` : "–")

const json = (value) => h("pre", { class: "json" }, JSON.stringify(value, null, 2))

class HttpError extends Error {
  constructor(status, message) {
    super(message)
    this.status = status
  }
}

const api = async (path) => {
  const res = await fetch(path, { headers: { accept: "application/json" }, cache: "no-store" })
  const body = await res.json().catch(() => ({ error: `${res.status} ${res.statusText}` }))
  if (!res.ok) throw new HttpError(res.status, body.error ?? `${res.status}`)
  return body
}

const conn = document.getElementById("conn")
const setConnection = (ok, message) => {
  conn.className = ok ? "conn ok" : "conn lost"
  conn.textContent = ok ? message : `connection lost: ${message} (retrying)`
}

// ===== state badges =====

const stateBadge = (run) => {
  if (run.state === "running" && !run.live) {
    return h("span", { class: "badge stalled", title: "the ledger says running, but no live process holds the run: resume it" }, "running · no process")
  }
  return h("span", { class: `badge ${run.state}` }, run.state)
}

const progressBar = (counts, label) => {
  const total = Math.max(counts.items, 1)
  const ok = (100 * counts.delivered) / total
  const dead = (100 * counts.dead) / total
  return h(
    "div",
    { class: "bar", role: "progressbar", "aria-label": label, "aria-valuemin": 0, "aria-valuemax": counts.items, "aria-valuenow": counts.delivered + counts.dead },
    h("span", { class: "ok", style: { width: `${ok}%` } }),
    h("span", { class: "dead", style: { width: `${dead}%` } })
  )
}

// ===== the runs =====

const runsView = () => {
  const root = h("section", { class: "runs" })
  const update = (data) => {
    const now = data.now
    if (data.runs.length === 0) {
      root.replaceChildren(
        h("h1", {}, "Runs"),
        h("p", { class: "empty" }, "No runs in this ledger yet. Start one with ", h("code", {}, "offpeak run <module>"), ": it shows up here.")
      )
      return
    }
    const rows = data.runs.map((r) =>
      h(
        "tr",
        { "data-run": r.id, "data-state": r.state },
        h("td", {}, h("a", { href: `#/runs/${encodeURIComponent(r.id)}` }, r.id)),
        h("td", {}, r.pipeline),
        h("td", {}, stateBadge(r)),
        h("td", {}, r.provider),
        h("td", {}, r.mode),
        h("td", { title: time(r.createdAt) }, ago(r.createdAt, now)),
        h("td", { class: "num" }, duration(r.durationMs)),
        h("td", { class: "progress" }, progressBar(r.counts, `progress of ${r.id}`), h("small", {}, pct(r.counts.delivered + r.counts.dead, r.counts.items))),
        h("td", { class: "num", "data-col": "rows" }, num(r.counts.items)),
        h("td", { class: "num", "data-col": "succeeded" }, num(r.counts.delivered)),
        h("td", { class: `num ${r.counts.dead > 0 ? "bad" : ""}`, "data-col": "failed" }, num(r.counts.dead)),
        h("td", { class: "num", "data-col": "cost" }, r.cost ? usd(r.cost.spent) : "–")
      )
    )
    root.replaceChildren(
      h("h1", {}, "Runs"),
      h(
        "table",
        { class: "grid", "aria-label": "runs" },
        h("thead", {}, h("tr", {}, ["Run", "Pipeline", "State", "Provider", "Mode", "Started", "Duration", "Progress", "Rows", "Succeeded", "Failed", "Cost"].map((c) => h("th", {}, c)))),
        h("tbody", {}, rows)
      )
    )
  }
  return {
    root,
    async tick() {
      const data = await api("/api/runs")
      update(data)
      return data.runs.some((r) => r.live) ? LIVE_MS : IDLE_MS
    }
  }
}

// ===== one run =====

const card = (title, main, ...lines) =>
  h("div", { class: "card", "data-card": title.toLowerCase() }, h("h3", {}, title), h("div", { class: "big" }, main), ...lines.map((l) => h("div", { class: "sub" }, l)))

const summary = (run, now, batches) => {
  const c = run.counts
  // what the provider reports of the batches it holds (answers not yet collected)
  const atProvider = batches.filter((b) => b.state === "submitted")
  const lines = atProvider.reduce((n, b) => n + b.requestCount, 0)
  const answered = atProvider.reduce((n, b) => n + Math.min(b.requestCount, b.completed + b.failed), 0)
  const resume = h("code", { "data-test": "resume" }, `offpeak resume ${run.id}${info.ledgerFlags ? ` ${info.ledgerFlags}` : ""}`)
  const holder = run.holder ? `pid ${run.holder.pid} on ${run.holder.host}` : null
  const who = run.live && holder
    ? [`worked by ${holder}, heartbeat ${duration(now - run.holder.heartbeatAt)} ago`]
    : run.state === "running"
      ? [
        holder === null
          ? "no process works this run: resume it with "
          : run.holder.alive === false
            ? `its process (${holder}) is gone: resume it with `
            : `its process (${holder}) stopped renewing its lease: resume it with `,
        resume
      ]
      : run.state === "detached" || run.state === "failed"
        ? ["resume it with ", resume]
        : []
  const cost = run.cost
  return h(
    "div",
    {},
    h(
      "div",
      { class: "title" },
      h("h1", {}, run.id),
      stateBadge(run),
      h("span", { class: "muted" }, `${run.pipeline} · ${run.provider} · ${run.mode}`)
    ),
    h("p", { class: "muted meta" }, `started ${time(run.createdAt)} · ${run.live ? "running for" : run.state === "running" ? "stopped after" : "took"} ${duration(run.durationMs)}`, who.length ? [" · ", who] : null),
    run.message ? h("p", { class: "message" }, run.message) : null,
    h(
      "div",
      { class: "progress-line" },
      progressBar(c, "rows delivered"),
      h(
        "span",
        { "data-test": "progress" },
        `${num(c.delivered)} succeeded · ${num(c.dead)} failed · ${num(c.pendingItems)} pending of ${num(c.items)} rows`,
        run.sourceDone ? "" : " (source still being read)"
      )
    ),
    h(
      "div",
      { class: "cards" },
      card("Rows", num(c.items), `${num(c.delivered)} succeeded`, `${num(c.dead)} failed`, `${num(c.pendingItems)} pending`),
      card("Requests", num(c.requests), `${num(c.queued)} queued · ${num(c.batched)} in batches`, `${num(c.succeeded)} answered · ${num(c.failed)} failed`),
      card(
        "Batches",
        num(c.batches),
        `${num(c.openBatches)} open`,
        atProvider.length > 0 ? `${num(atProvider.length)} at the provider: ${num(answered)} of ${num(lines)} lines done` : null
      ),
      card("Tokens", num(run.tokens.input + run.tokens.output), `${num(run.tokens.input)} in · ${num(run.tokens.output)} out`, run.tokens.cachedInput > 0 ? `${num(run.tokens.cachedInput)} cached in` : null),
      card(
        "Cost",
        cost ? usd(cost.spent) : "–",
        cost ? `sync would be ${usd(cost.syncEquivalent)}` : "no priced answer yet",
        cost && BigInt(cost.saved.picodollars) > 0n ? `saved ${usd(cost.saved)}` : null,
        cost && BigInt(cost.reserved.picodollars) > 0n ? `${usd(cost.reserved)} reserved` : null,
        cost && cost.budget ? `budget ${usd(cost.budget)}` : null,
        cost && cost.unpriced > 0 ? `${num(cost.unpriced)} answers unpriced` : null
      ),
      card("Reuse", num(run.cachedRows + run.dedupedRows), `${num(run.cachedRows)} from the result cache`, `${num(run.dedupedRows)} shared a request`)
    )
  )
}

// ----- the timeline -----

const TICKS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400].map((s) => s * 1000)

/** a batch's stretches: waiting after it was sealed, at the provider (or its sync calls), collecting */
const segments = (b, now) => {
  const created = Date.parse(b.createdAt)
  const submitted = b.submittedAt ? Date.parse(b.submittedAt) : null
  const ended = b.endedAt ? Date.parse(b.endedAt) : null
  const out = []
  const waitingEnd = submitted ?? (b.state === "sealed" || b.state === "submitting" ? now : ended ?? created)
  out.push({ kind: "sealed", from: created, to: waitingEnd })
  if (submitted !== null) {
    out.push({ kind: b.mode === "sync" ? "sync" : "provider", from: submitted, to: ended ?? (b.state === "submitted" ? now : submitted) })
  }
  if (ended !== null && b.state === "ended") out.push({ kind: "collecting", from: ended, to: now })
  return out
}

const timeline = (run, batches, now) => {
  const wrap = h("div", { class: "timeline", id: "timeline" })
  if (batches.length === 0) {
    wrap.append(h("p", { class: "muted" }, run.sourceDone ? "No batch: every row was answered without sending one." : "No batch sealed yet."))
    return wrap
  }
  const shown = batches.length > MAX_LANES ? batches.slice(-MAX_LANES) : batches
  // while a process works the run, open batches run up to now; otherwise up to when the run was last seen
  const live = run.live
  let t0 = Date.parse(run.createdAt)
  let until = live ? now : Date.parse(run.createdAt) + run.durationMs
  for (const b of shown) {
    t0 = Math.min(t0, Date.parse(b.createdAt))
    for (const t of [b.createdAt, b.submittedAt, b.endedAt]) if (t) until = Math.max(until, Date.parse(t))
  }
  const t1 = Math.max(until, t0 + 1000)
  // the page's width less the box's padding and border (the SVG is built before it is in the page)
  const main = document.getElementById("app")
  const inner = main ? main.clientWidth - parseFloat(getComputedStyle(main).paddingLeft) - parseFloat(getComputedStyle(main).paddingRight) : 1000
  const width = Math.max(640, Math.floor(inner - 28))
  const gutter = 128
  const lane = 16
  const gap = 5
  const top = 22
  const height = top + shown.length * (lane + gap) + 4
  const x = (t) => gutter + ((t - t0) / (t1 - t0)) * (width - gutter - 12)
  const step = TICKS.find((t) => (t1 - t0) / t <= 8) ?? TICKS.at(-1)
  const axis = []
  for (let t = 0; t <= t1 - t0; t += step) {
    axis.push(
      s("line", { x1: x(t0 + t), x2: x(t0 + t), y1: top - 4, y2: height, class: "tick" }),
      s("text", { x: x(t0 + t), y: 12, class: "tick-label", "text-anchor": "middle" }, t === 0 ? "0" : `+${duration(t)}`)
    )
  }
  const lanes = shown.map((b, i) => {
    const y = top + i * (lane + gap)
    const done = b.completed + b.failed
    const info = [
      `${b.id} · ${b.mode} · ${b.state}${b.remoteState ? ` (provider: ${b.remoteState})` : ""}`,
      `${num(b.requestCount)} requests: ${num(b.completed)} answered, ${num(b.failed)} failed · ${bytes(b.bytes)}`,
      `sealed ${clock(b.createdAt)}`,
      b.submittedAt ? `submitted +${duration(Date.parse(b.submittedAt) - Date.parse(b.createdAt))}` : "not submitted",
      b.endedAt ? `ended +${duration(Date.parse(b.endedAt) - Date.parse(b.createdAt))}` : "",
      b.remoteId ? `remote ${b.remoteId}` : ""
    ].filter(Boolean).join("\n")
    const parts = segments(b, until).map((seg) => {
      const x1 = x(seg.from)
      const w = Math.max(2, x(seg.to) - x1)
      const rect = [s("rect", { x: x1, y, width: w, height: lane, rx: 3, class: `seg ${seg.kind}` })]
      if ((seg.kind === "provider" || seg.kind === "sync") && b.state === "submitted" && b.requestCount > 0) {
        rect.push(s("rect", { x: x1, y: y + lane - 4, width: (w * Math.min(done, b.requestCount)) / b.requestCount, height: 4, class: "seg-progress" }))
      }
      return rect
    })
    const last = segments(b, until).at(-1)
    const end = x(last.to)
    return s(
      "g",
      { class: "lane", "data-batch": b.id, "data-state": b.state, "data-mode": b.mode },
      s("title", {}, info),
      s("text", { x: gutter - 8, y: y + lane - 4, "text-anchor": "end", class: "lane-label" }, `#${b.seq} · ${num(b.requestCount)}`),
      parts,
      b.state === "collected"
        ? s("text", { x: end + 3, y: y + lane - 4, class: `mark ${b.remoteState === "split" ? "split" : "collected"}` }, b.remoteState === "split" ? "split" : "✓")
        : null,
      b.failed > 0 && b.state === "collected" ? s("text", { x: end + 16, y: y + lane - 4, class: "mark failed" }, `${num(b.failed)} failed`) : null
    )
  })
  const nowLine = live ? s("line", { x1: x(until), x2: x(until), y1: top - 6, y2: height, class: "now" }) : null
  wrap.append(
    h(
      "div",
      { class: "legend" },
      h("span", { class: "key sealed" }, "sealed, waiting to be sent"),
      h("span", { class: "key provider" }, "at the provider"),
      h("span", { class: "key sync" }, "synchronous calls"),
      h("span", { class: "key collecting" }, "ended, collecting"),
      h("span", { class: "key collected" }, "✓ collected"),
      batches.length > shown.length ? h("span", { class: "muted" }, `the latest ${shown.length} of ${num(batches.length)} batches`) : null
    ),
    s("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": `timeline of ${batches.length} batches` }, axis, lanes, nowLine)
  )
  return wrap
}

const batchTable = (runId, batches) =>
  h(
    "table",
    { class: "grid compact", "aria-label": "batches" },
    h("thead", {}, h("tr", {}, ["#", "Batch", "Mode", "State", "Provider state", "Remote id", "Requests", "Answered", "Failed", "Size", "Sealed", "Waited", "At provider"].map((c) => h("th", {}, c)))),
    h(
      "tbody",
      {},
      batches.map((b) => {
        const created = Date.parse(b.createdAt)
        const submitted = b.submittedAt ? Date.parse(b.submittedAt) : null
        const ended = b.endedAt ? Date.parse(b.endedAt) : null
        return h(
          "tr",
          { "data-batch": b.id },
          h("td", { class: "num" }, b.seq),
          h("td", { class: "mono", title: b.id }, b.id.startsWith(`${runId}-`) ? b.id.slice(runId.length + 1) : b.id),
          h("td", {}, b.mode),
          h("td", {}, h("span", { class: `badge batch-${b.state}` }, b.state)),
          h("td", {}, b.remoteState ?? "–"),
          h("td", { class: "mono" }, b.remoteId ?? "–"),
          h("td", { class: "num" }, num(b.requestCount)),
          h("td", { class: "num" }, num(b.completed)),
          h("td", { class: `num ${b.failed > 0 ? "bad" : ""}` }, num(b.failed)),
          h("td", { class: "num" }, bytes(b.bytes)),
          h("td", {}, clock(b.createdAt)),
          h("td", { class: "num" }, submitted ? duration(submitted - created) : "–"),
          h("td", { class: "num" }, submitted && ended ? duration(ended - submitted) : submitted ? "…" : "–")
        )
      })
    )
  )

// ----- failures -----

const failuresView = (runId, counts, selected, page, onKind) => {
  const total = counts.reduce((n, f) => n + f.rows, 0)
  const root = h("div", { id: "failures" })
  if (total === 0) {
    root.append(h("p", { class: "muted" }, "No row failed."))
    return root
  }
  root.append(
    h(
      "div",
      { class: "kinds", role: "tablist", "aria-label": "failure kinds" },
      counts.map((f) =>
        h(
          "button",
          { class: `kind ${selected === f.kind ? "on" : ""}`, role: "tab", "aria-selected": selected === f.kind ? "true" : "false", "data-kind": f.kind, on: { click: () => onKind(f.kind) } },
          h("span", {}, f.kind),
          h("span", { class: "count" }, num(f.rows))
        )
      ),
      h(
        "button",
        { class: `kind ${selected === "all" ? "on" : ""}`, role: "tab", "aria-selected": selected === "all" ? "true" : "false", "data-kind": "all", on: { click: () => onKind("all") } },
        h("span", {}, "all"),
        h("span", { class: "count" }, num(total))
      )
    )
  )
  if (selected) root.append(page)
  return root
}

const failurePage = (runId, data, pageNo, pages, go) => {
  const first = (pageNo - 1) * PAGE + 1
  return h(
    "div",
    { class: "failure-page" },
    h(
      "table",
      { class: "grid compact", "aria-label": `failed rows: ${data.kind}` },
      h("thead", {}, h("tr", {}, ["Row", "Key", "Kind", "Attempts", "Reason"].map((c) => h("th", {}, c)))),
      h(
        "tbody",
        {},
        data.rows.map((r) =>
          h(
            "tr",
            { "data-key": r.key },
            h("td", { class: "num" }, r.position),
            h("td", { class: "mono" }, h("a", { href: `#/runs/${encodeURIComponent(runId)}?${new URLSearchParams({ ...pages, key: r.key })}` }, r.key)),
            h("td", {}, r.kind),
            h("td", { class: "num" }, r.attempts),
            h("td", { class: "reason" }, r.message)
          )
        )
      )
    ),
    h(
      "div",
      { class: "pager" },
      h("button", { disabled: pageNo <= 1, on: { click: () => go(-1) } }, "← Previous"),
      h("span", { "data-test": "page" }, data.rows.length === 0 ? "no rows" : `rows ${num(first)}–${num(first + data.rows.length - 1)}`),
      h("button", { disabled: data.next === null, on: { click: () => go(1) } }, "Next →")
    )
  )
}

// ----- one row -----

const rowView = (row) => {
  const r = row.request
  const sections = [
    h("h3", {}, "Record"),
    row.record === null ? h("p", { class: "muted" }, "the row could not be read") : json(row.record)
  ]
  const failure = row.failure ?? r?.failure ?? null
  if (failure) {
    sections.push(
      h("h3", {}, "Failure"),
      h("p", { class: "failure" }, h("span", { class: "badge failed" }, failure.kind), " ", failure.message),
      failure.raw ? h("details", {}, h("summary", {}, "raw"), h("pre", { class: "json" }, failure.raw)) : null
    )
  }
  if (r) {
    sections.push(
      h("h3", {}, "Request"),
      h(
        "dl",
        { class: "facts" },
        h("dt", {}, "state"),
        h("dd", { "data-test": "request-state" }, r.state, r.cached ? " (answer from the result cache)" : ""),
        h("dt", {}, "sent"),
        h("dd", {}, r.attempts === 1 ? "once" : `${r.attempts} times`),
        h("dt", {}, "fingerprint"),
        h("dd", { class: "mono" }, r.fingerprint),
        h("dt", {}, "batch"),
        h("dd", { class: "mono" }, r.batch ? `${r.batch.id} (${r.batch.mode}, ${r.batch.state}${r.batch.remoteId ? `, ${r.batch.remoteId}` : ""})` : "–"),
        r.usage ? [h("dt", {}, "tokens"), h("dd", {}, `${num(r.usage.inputTokens)} in · ${num(r.usage.outputTokens)} out${r.usage.cachedInputTokens ? ` · ${num(r.usage.cachedInputTokens)} cached` : ""}`)] : null
      )
    )
    if (row.rendered) {
      if (row.rendered.ok) {
        sections.push(
          row.rendered.matches
            ? null
            : h("p", { class: "warn" }, "The pipeline module changed since this row was sent: the request below is what it renders now, not what was sent."),
          renderedRequest(row.rendered.request)
        )
      } else {
        sections.push(h("p", { class: "muted" }, row.rendered.error))
      }
    }
    sections.push(h("h3", {}, "Answer"))
    if (r.answer !== null) sections.push(h("div", { id: "answer" }, json(r.answer)))
    else if (r.embedding) sections.push(h("p", { id: "answer" }, `embedding of ${num(r.embedding.dimensions)} dimensions: [${r.embedding.head.join(", ")}, …]`))
    else sections.push(h("p", { class: "muted", id: "answer" }, r.state === "queued" || r.state === "batched" ? "not answered yet" : "no answer"))
  }
  return h("div", { class: "row-detail", "data-key": row.key }, h("h2", {}, `Row ${row.key}`, h("small", { class: "muted" }, ` · position ${row.position}`)), sections)
}

const renderedRequest = (req) => {
  if (req.kind === "embedding") {
    return h("div", { class: "rendered" }, h("p", {}, `embedding · ${req.model}${req.dimensions ? ` · ${req.dimensions} dimensions` : ""}`), h("pre", { class: "prompt" }, req.input))
  }
  const params = Object.entries(req.params ?? {}).map(([k, v]) => `${k} ${Array.isArray(v) ? v.join(", ") : v}`).join(" · ")
  return h(
    "div",
    { class: "rendered" },
    h("p", {}, `chat · ${req.model}${params ? ` · ${params}` : ""}${req.output ? ` · structured output "${req.output.name}"` : ""}`),
    req.messages.map((m) => h("div", { class: `msg ${m.role}` }, h("span", { class: "role" }, m.role), h("pre", { class: "prompt" }, m.content))),
    req.output ? h("details", {}, h("summary", {}, `output schema "${req.output.name}"`), json(req.output.schema)) : null
  )
}

const runView = (runId, search) => {
  const base = `/api/runs/${encodeURIComponent(runId)}`
  const root = h("section", { class: "run" })
  const head = h("div", { id: "summary" })
  const lines = h("div", {})
  const batchesBox = h("details", { class: "batches" })
  const failuresBox = h("div", {})
  const rowBox = h("div", { id: "row" })
  const keyInput = h("input", { type: "search", name: "key", placeholder: "a row's key", "aria-label": "row key", autocomplete: "off" })
  const form = h(
    "form",
    { class: "inspect", on: { submit: (e) => { e.preventDefault(); if (keyInput.value.trim()) setParams({ key: keyInput.value.trim() }) } } },
    h("label", {}, "Inspect a row: "),
    keyInput,
    h("button", { type: "submit" }, "Show")
  )
  root.append(
    h("p", { class: "crumbs" }, h("a", { href: "#/" }, "← all runs")),
    head,
    h("h2", {}, "Batches"),
    lines,
    batchesBox,
    h("h2", {}, "Failures"),
    failuresBox,
    h("h2", {}, "Rows"),
    form,
    rowBox
  )

  let params = new URLSearchParams(search)
  let failureKey = ""
  let failureCounts = []
  let rowKey = null
  let rowPending = false
  let batchStamp = ""

  const setParams = (patch) => {
    const next = new URLSearchParams(params)
    for (const [k, v] of Object.entries(patch)) {
      if (v === null || v === undefined || v === "") next.delete(k)
      else next.set(k, String(v))
    }
    location.hash = `#/runs/${encodeURIComponent(runId)}${next.size ? `?${next}` : ""}`
  }

  const loadFailures = async (force) => {
    const kind = params.get("kind")
    const after = Number(params.get("after") ?? 0)
    const stamp = `${kind}|${after}|${JSON.stringify(failureCounts)}`
    if (!force && stamp === failureKey) return
    failureKey = stamp
    let page = null
    if (kind) {
      const data = await api(`${base}/failures/${encodeURIComponent(kind)}?after=${after}&limit=${PAGE}`)
      const trail = (params.get("trail") ?? "").split(",").filter(Boolean).map(Number)
      page = failurePage(runId, data, trail.length + 1, Object.fromEntries([...params].filter(([k]) => k !== "key")), (dir) => {
        if (dir > 0 && data.next !== null) setParams({ after: data.next, trail: [...trail, after].join(",") })
        if (dir < 0) setParams({ after: trail.at(-1) ?? 0, trail: trail.slice(0, -1).join(",") })
      })
    }
    failuresBox.replaceChildren(failuresView(runId, failureCounts, kind, page, (k) => setParams({ kind: k === kind ? null : k, after: null, trail: null })))
  }

  const loadRow = async () => {
    const key = params.get("key")
    if (key === rowKey && key !== null && !rowPending) return
    rowKey = key
    if (key === null) {
      rowBox.replaceChildren()
      return
    }
    keyInput.value = key
    try {
      const row = await api(`${base}/row?key=${encodeURIComponent(key)}`)
      rowPending = row.request !== null && (row.request.state === "queued" || row.request.state === "batched")
      rowBox.replaceChildren(rowView(row))
    } catch (e) {
      rowPending = false
      if (e instanceof HttpError && e.status === 404) rowBox.replaceChildren(h("p", { class: "warn" }, e.message))
      else throw e
    }
  }

  return {
    root,
    same: (id) => id === runId,
    async navigate(search) {
      params = new URLSearchParams(search)
      await loadFailures(false)
      await loadRow()
    },
    async tick() {
      // the run first, then its batches: batches read after a run that says completed are all collected
      const data = await api(base)
      const batches = await api(`${base}/batches`)
      head.replaceChildren(summary(data.run, data.now, batches.batches))
      lines.replaceChildren(timeline(data.run, batches.batches, batches.now))
      // the table is built again only when a batch changed (it may hold thousands of rows)
      const stamp = JSON.stringify(batches.batches.map((b) => [b.id, b.state, b.remoteState, b.completed, b.failed, b.submittedAt, b.endedAt]))
      if (stamp !== batchStamp) {
        batchStamp = stamp
        batchesBox.hidden = batches.batches.length === 0
        batchesBox.replaceChildren(h("summary", {}, `${num(batches.batches.length)} batches`), batchTable(runId, batches.batches))
      }
      failureCounts = data.failures
      await loadFailures(false)
      await loadRow()
      document.title = `${data.run.id} · ${data.run.state} · offpeak`
      return data.run.live ? LIVE_MS : IDLE_MS
    }
  }
}

// ===== routing and polling =====

const app = document.getElementById("app")
let view = null
let timer = null
let generation = 0

const schedule = (ms) => {
  clearTimeout(timer)
  timer = setTimeout(poll, ms)
}

const poll = async () => {
  const mine = ++generation
  if (view === null) return
  try {
    const next = await view.tick()
    if (mine !== generation) return
    setConnection(true, next === LIVE_MS ? "live" : "up to date")
    app.removeAttribute("aria-busy")
    schedule(document.hidden ? IDLE_MS : next)
  } catch (e) {
    if (mine !== generation) return
    if (e instanceof HttpError && e.status === 404 && view.same) {
      app.replaceChildren(h("p", { class: "warn" }, e.message), h("p", {}, h("a", { href: "#/" }, "← all runs")))
      view = null
      return
    }
    setConnection(false, e.message)
    schedule(IDLE_MS)
  }
}

const route = async () => {
  const hash = location.hash.replace(/^#/, "") || "/"
  const [path, search = ""] = hash.split("?")
  const match = /^\/runs\/([^/]+)$/.exec(path)
  if (match) {
    const id = decodeURIComponent(match[1])
    if (!(view && view.same && view.same(id))) {
      view = runView(id, search)
      app.replaceChildren(view.root)
      await poll()
    }
    try {
      await view?.navigate?.(search)
    } catch (e) {
      setConnection(false, e.message)
    }
    return
  }
  view = runsView()
  app.replaceChildren(view.root)
  document.title = "runs · offpeak"
  await poll()
}

document.addEventListener("visibilitychange", () => {
  if (!document.hidden) schedule(0)
})
window.addEventListener("hashchange", route)

/** the ledger the server reads, and the flags that reach it (for `offpeak resume` hints) */
let info = { ledger: "", ledgerFlags: "" }
api("/api/info")
  .then((got) => {
    info = got
    document.getElementById("ledger").textContent = got.ledger
  })
  .catch(() => {})
  .finally(route)
