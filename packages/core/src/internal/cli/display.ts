/**
 * Over 400 lines on purpose: one renderer (each event's line, the status drawing, the plain mode) around one
 * switch over `RunEvent`; splitting it would split that switch.
 *
 * What `offpeak run` shows while a run works. On a terminal: a two-line status at the bottom (a bar with the percent
 * done, rows, rate, elapsed and ETA; batches by state, tokens and cost so far), redrawn in place, and one line above
 * it for each event that changes the picture (a batch submitted, finished, expired or split, a retry round, a back-off
 * after a 429, a provider that cannot be reached) and for each log line, so nothing garbles the bar. Off a terminal:
 * the same event lines, and one plain progress line at an interval. Colour only on a terminal, never with `NO_COLOR`.
 *
 * @internal
 */
import { Logger } from "effect"
import * as Progress from "../../Progress.ts"
import * as Redact from "../../Redact.ts"
import type * as RunEvent from "../../RunEvent.ts"

// ===== Terminal =====

/** where the display writes, and what it may do there */
export interface Terminal {
  readonly write: (text: string) => void
  /** a terminal: the status is redrawn in place */
  readonly isTTY: boolean
  /** ANSI colours allowed */
  readonly color: boolean
  /** box-drawing characters allowed (a UTF-8 locale) */
  readonly unicode: boolean
  readonly columns: () => number
}

/** a terminal on a Node stream: colour only on a TTY without `NO_COLOR` (or `TERM=dumb`) */
export const terminalOf = (stream: NodeJS.WriteStream, env: NodeJS.ProcessEnv = process.env): Terminal => {
  const isTTY = stream.isTTY === true && env.TERM !== "dumb"
  const locale = env.LC_ALL || env.LC_CTYPE || env.LANG || ""
  return {
    write: (text) => void stream.write(text),
    isTTY,
    color: isTTY && (env.NO_COLOR === undefined || env.NO_COLOR === "") && env.FORCE_COLOR !== "0",
    unicode: /utf-?8/i.test(locale),
    columns: () => stream.columns ?? 80
  }
}

const ESC = "\x1b["
const paint = (on: boolean, code: string) => (text: string) => on ? `${ESC}${code}m${text}${ESC}0m` : text

/** visible length of a line (ANSI codes do not count) */
const visible = (text: string) => text.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "").length

/** cuts a plain line to `width` characters */
const fit = (text: string, width: number) => text.length <= width ? text : width <= 1 ? text.slice(0, width) : `${text.slice(0, width - 1)}…`

// ===== Formatting =====

const int = (n: number) => Math.round(n).toLocaleString("en-US")
/** `n` and the noun in its number: "1 request", "2 requests" */
export const count = (n: number, one: string, many = `${one}s`) => `${int(n)} ${Math.round(n) === 1 ? one : many}`

/** `1.2k`, `3.4M` */
export const compact = (n: number): string =>
  n < 1_000 ? String(Math.round(n)) : n < 1_000_000 ? `${(n / 1_000).toFixed(n < 10_000 ? 1 : 0)}k` : n < 1e9 ? `${(n / 1e6).toFixed(n < 1e7 ? 1 : 0)}M` : `${(n / 1e9).toFixed(1)}G`

/** `0:07`, `12:34`, `1:02:03`, `2d 03:04:05` */
export const clock = (ms: number): string => {
  const s = Math.max(0, Math.round(ms / 1000))
  const d = Math.floor(s / 86_400)
  const h = Math.floor((s % 86_400) / 3_600)
  const m = Math.floor((s % 3_600) / 60)
  const sec = String(s % 60).padStart(2, "0")
  const hms = h > 0 || d > 0 ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`
  return d > 0 ? `${d}d ${hms}` : hms
}

/** `850 ms`, `2.5 s`, `3m 05s`, `1h 02m` */
export const duration = (ms: number): string => {
  if (ms < 1_000) return `${Math.round(ms)} ms`
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`
  const s = Math.round(ms / 1000)
  if (s < 3_600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`
  return `${Math.floor(s / 3_600)}h ${String(Math.floor((s % 3_600) / 60)).padStart(2, "0")}m`
}

/** `HH:MM:SS` local time */
export const timeOfDay = (epochMs: number): string => {
  const d = new Date(epochMs)
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, "0")).join(":")
}

/** money for a progress line: cents once past a dollar, else six digits */
export const usd = (dollars: number): string => `$${dollars.toFixed(dollars >= 1 ? 2 : 4)}`

/** the batch's number within its run (`b00003`), or its id */
const shortBatch = (runId: string, batchId: string) =>
  runId !== "" && batchId.startsWith(`${runId}-`) ? batchId.slice(runId.length + 1) : batchId

const ordinal = (n: number) => `${n}${n % 100 >= 11 && n % 100 <= 13 ? "th" : ["th", "st", "nd", "rd"][n % 10] ?? "th"}`

// ===== Event lines =====

/** how an event line looks: its text and its weight */
export interface EventLine {
  readonly text: string
  readonly tone: "info" | "good" | "warn" | "bad"
}

/** what the display remembers between events, to say more than one event tells */
interface Memory {
  /** requests and submission time of batches this process sent */
  readonly batches: Map<string, { readonly requests: number; readonly submittedAt: number }>
  /** since the last retry round: unanswered requests of expired and of cancelled batches (a deadline), failed lines */
  unanswered: { expired: number; cancelled: number }
  failedLines: number
  /** the run is being cancelled (`offpeak cancel`): a cancelled batch's unanswered requests end cancelled, not retried */
  readonly cancelling: boolean
  /** 429s answered so far */
  rateLimited: number
  /** the first time the provider could not be reached, and how many times since */
  unreachableSince: number | undefined
  unreachable: number
  /** when a line of each kind of repeated trouble was last printed, and how many were not printed since */
  readonly quiet: Map<string, { at: number; held: number }>
}

/** repeats of the same trouble within this long are counted, not printed (a storm says itself a few times, not per call) */
const QUIET_MS = 5_000

/** whether a repeated trouble is printed now; the count of those held back since the last one printed */
const loud = (memory: Memory, key: string, now: number): { readonly print: boolean; readonly held: number } => {
  const last = memory.quiet.get(key)
  if (last !== undefined && now - last.at < QUIET_MS) {
    last.held++
    return { print: false, held: 0 }
  }
  memory.quiet.set(key, { at: now, held: 0 })
  return { print: true, held: last?.held ?? 0 }
}

const heldBack = (held: number) => held > 0 ? ` (${held} more since the last line)` : ""

const newMemory = (cancelling = false): Memory => ({
  batches: new Map(),
  cancelling,
  unanswered: { expired: 0, cancelled: 0 },
  failedLines: 0,
  rateLimited: 0,
  unreachableSince: undefined,
  unreachable: 0,
  quiet: new Map()
})

/** the line an event deserves, if any (most events only move the status) */
export const describe = (event: RunEvent.RunEvent, counters: Progress.Counters, memory: Memory, now: number): EventLine | undefined => {
  const b = (id: string) => `batch ${shortBatch(counters.runId, id)}`
  switch (event._tag) {
    case "RunStarted":
      return event.resumed
        ? {
          text: `${memory.cancelling ? "cancelling" : "resumed"} run ${event.runId}: ${count(event.delivered + event.dead, "row")} already done` +
            (event.openBatches > 0 ? `, ${count(event.openBatches, "batch", "batches")} taken up where they were` : ""),
          tone: "info"
        }
        : { text: `run ${event.runId} started (${event.mode} mode)`, tone: "info" }
    case "SourceEnded":
      return {
        text: `source read to its end: ${count(event.rows, "row")}` +
          (event.counted !== undefined ? ` (the source counts ${int(event.counted)})` : ""),
        tone: "info"
      }
    case "BatchSubmitted": {
      memory.batches.set(event.batchId, { requests: event.requests, submittedAt: now })
      if (event.mode === "sync") return { text: `${b(event.batchId)}: ${count(event.requests, "request")} sent as synchronous calls`, tone: "info" }
      const what = event.mode === "table" ? count(event.requests, "row") : count(event.requests, "request")
      return {
        text: `${b(event.batchId)} submitted: ${what}${event.remoteId !== undefined ? ` (${event.remoteId})` : ""}`,
        tone: "info"
      }
    }
    case "BatchEnded": {
      const sent = memory.batches.get(event.batchId)
      memory.batches.delete(event.batchId)
      const took = sent === undefined ? "" : ` after ${duration(now - sent.submittedAt)}`
      const requests = sent?.requests
      if (event.mode === "sync") {
        memory.failedLines += event.failed
        return {
          text: `${b(event.batchId)}: ${int(event.completed)} synchronous calls answered` +
            (event.failed > 0 ? `, ${int(event.failed)} failed` : "") + took,
          tone: event.failed > 0 ? "warn" : "good"
        }
      }
      const failedLines = event.failed > 0 ? `, ${int(event.failed)} lines failed` : ""
      switch (event.providerState) {
        case "expired":
        case "cancelled": {
          // providers count the lines an expiry cut off as failed: every request without an answer is said once
          const missing = requests === undefined ? undefined : Math.max(0, requests - event.completed)
          if (missing !== undefined) memory.unanswered[event.providerState] += missing
          else memory.failedLines += event.failed
          return {
            text: `${b(event.batchId)} ${event.providerState} at the provider${took}: ${int(event.completed)}` +
              (requests !== undefined ? ` of ${int(requests)} answered` : ` answered${failedLines}`) +
              (missing !== undefined && missing > 0
                ? event.providerState === "cancelled" && memory.cancelling
                  ? `; the other ${int(missing)} are recorded as cancelled`
                  : `; the other ${int(missing)} go to a retry round (while attempts remain)`
                : ""),
            tone: "warn"
          }
        }
        case "failed":
          memory.failedLines += requests ?? 0
          return {
            text: `${b(event.batchId)} failed at the provider${took}` +
              (requests !== undefined ? ` (${int(requests)} requests)` : "") + ": its requests are retried or dead-lettered",
            tone: "bad"
          }
        default:
          memory.failedLines += event.failed
          return {
            text: `${b(event.batchId)} ${event.providerState}${took}: ${int(event.completed)} answered${failedLines}`,
            tone: event.failed > 0 ? "warn" : "good"
          }
      }
    }
    case "BatchSplit":
      return {
        text: `${b(event.batchId)} split into ${int(event.into[0])} + ${int(event.into[1])} requests: ${event.reason}`,
        tone: "warn"
      }
    case "RetryRound": {
      const why = event.reasons !== undefined && event.reasons.length > 0
        ? event.reasons.map((r) => `${int(r.requests)} ${r.kind}`).join(", ")
        : [
          ...(["expired", "cancelled"] as const).flatMap((how) =>
            memory.unanswered[how] > 0 ? [`${int(memory.unanswered[how])} unanswered in ${how} batches`] : []
          ),
          ...(memory.failedLines > 0 ? [`${int(memory.failedLines)} failed`] : [])
        ].join(", ")
      memory.unanswered = { expired: 0, cancelled: 0 }
      memory.failedLines = 0
      return {
        text: `retry round ${event.round}: ${count(event.requests, "request")} ${event.requests === 1 ? "goes" : "go"} out again in ${duration(event.waitMs)}` +
          (why !== "" ? ` (${why})` : ""),
        tone: "warn"
      }
    }
    case "BackingOff": {
      const colon = event.reason.indexOf(": ")
      const tag = colon < 0 ? event.reason : event.reason.slice(0, colon)
      const detail = colon < 0 ? "" : event.reason.slice(colon + 2)
      if (tag === "Transport") return undefined // said by ProviderUnreachable
      if (tag === "RateLimited") {
        memory.rateLimited++
        const said = loud(memory, `429 ${event.operation}`, now)
        if (!said.print) return undefined
        return {
          text: `rate limited (429, the ${ordinal(memory.rateLimited)} time) on ${event.operation}: ` +
            `backing off ${duration(event.delayMs)}${heldBack(said.held)}`,
          tone: "warn"
        }
      }
      const said = loud(memory, `${tag} ${event.operation}`, now)
      if (!said.print) return undefined
      return {
        text: `${event.operation} failed (${tag === "ServerError" ? "server error" : tag}: ${fit(detail, 160)}): ` +
          `next attempt in ${duration(event.delayMs)}${heldBack(said.held)}`,
        tone: "warn"
      }
    }
    case "ProviderUnreachable": {
      memory.unreachableSince ??= now
      memory.unreachable++
      const said = loud(memory, `unreachable ${event.message}`, now)
      if (!said.print) return undefined
      return {
        text: `provider unreachable: ${event.provider} ${event.operation}: ${event.message}; ` +
          `next attempt at ${timeOfDay(event.nextAttemptAt)} (in ${duration(event.delayMs)})` +
          (memory.unreachable > 1 ? `; failing for ${duration(now - memory.unreachableSince)}, ${memory.unreachable} calls` : ""),
        tone: "bad"
      }
    }
    case "BatchSealed":
    case "BatchWatched":
    case "BatchProgress":
    case "RowsRead":
    case "SourceSized":
    case "PartWritten":
    case "Answered":
    case "RunEnded":
      return undefined
  }
}

// ===== Status =====

/** done rows over time, for the rate and the ETA */
interface Sample {
  readonly at: number
  readonly done: number
}

/** how far back the rate looks */
const RATE_WINDOW_MS = 30_000

/** the status lines: the bar, and batches with tokens and cost */
export const status = (
  c: Progress.Counters,
  options: {
    readonly now: number
    /** when this process started on the run (its clock) */
    readonly startedAt: number
    readonly rate: number | undefined
    readonly width: number
    readonly color: boolean
    readonly unicode: boolean
  }
): ReadonlyArray<string> => {
  const { now, rate, width } = options
  const done = Progress.done(c)
  const total = Progress.total(c)
  const green = paint(options.color, "32")
  const cyan = paint(options.color, "36")
  const dim = paint(options.color, "2")
  const tilde = total?.estimate ? "~" : ""
  const percent = total !== undefined && total.rows > 0 ? Math.min(100, (100 * done) / total.rows) : undefined
  const elapsed = now - options.startedAt
  const remaining = total === undefined ? undefined : Math.max(0, total.rows - done)
  const eta = remaining === undefined
    ? "ETA —"
    : remaining === 0
    ? "ETA 0:00"
    : rate !== undefined && rate > 0
    ? `ETA ${tilde}${clock((remaining / rate) * 1000)}`
    : "ETA —"
  const facts = [
    total !== undefined ? `${int(done)}/${tilde}${int(total.rows)} rows` : `${int(done)} rows done · ${int(Progress.runRead(c))} read`,
    rate !== undefined ? `${rate >= 10 ? int(rate) : rate.toFixed(1)} rows/s` : "— rows/s",
    `${clock(elapsed)} elapsed`,
    eta
  ].join(" · ")
  const head = percent !== undefined ? `${tilde}${Math.floor(percent).toString().padStart(3)}% ` : ""
  const barWidth = Math.max(10, Math.min(40, width - visible(head) - facts.length - 4))
  let first: string
  if (total !== undefined && total.rows > 0 && width >= 40) {
    const full = options.unicode ? "█" : "#"
    const part = options.unicode ? "▒" : "="
    const empty = options.unicode ? "░" : "-"
    const doneCells = Math.min(barWidth, Math.floor((barWidth * done) / total.rows))
    const readCells = Math.min(barWidth - doneCells, Math.max(0, Math.floor((barWidth * Progress.runRead(c)) / total.rows) - doneCells))
    const bar = green(full.repeat(doneCells)) + cyan(part.repeat(readCells)) + dim(empty.repeat(barWidth - doneCells - readCells))
    const plain = `${head}[${"x".repeat(barWidth)}] ${facts}`
    first = plain.length <= width ? `${head}[${bar}] ${facts}` : fit(`${head}${facts}`, width)
  } else {
    first = fit(`${head}${facts}`, width)
  }
  const byState = Progress.batchesByState(c)
  const batches = [
    ...(byState.waiting > 0 ? [`${byState.waiting} waiting`] : []),
    ...(byState.atProvider.length > 0
      ? [`${byState.atProvider.reduce((n, [, k]) => n + k, 0)} at the provider (${byState.atProvider.map(([s, k]) => `${k} ${s}`).join(", ")})`]
      : []),
    `${byState.ended} ended`
  ].join(" · ")
  const money = c.spentUsd > 0 || c.syncEquivalentUsd > 0
    ? ` · ${usd(c.spentUsd)}${c.syncEquivalentUsd > c.spentUsd ? ` (sync ${usd(c.syncEquivalentUsd)})` : ""}`
    : ""
  const tokens = c.inputTokens + c.outputTokens > 0 ? ` · tokens ${compact(c.inputTokens)} in / ${compact(c.outputTokens)} out` : ""
  const second = fit(
    `batches ${batches} · succeeded ${int(c.succeeded)} · failed ${int(c.failed)}${tokens}${money}` +
      (c.retryRounds > 0 ? ` · retry rounds ${c.retryRounds}` : ""),
    width
  )
  return [first, dim(second)]
}

/** rows per second over the last `RATE_WINDOW_MS`, from the samples (oldest first) */
const rateOf = (samples: ReadonlyArray<Sample>, now: number, done: number): number | undefined => {
  const from = samples.find((s) => now - s.at <= RATE_WINDOW_MS) ?? samples[0]
  if (from === undefined || now - from.at < 1_000) return undefined
  return (done - from.done) / ((now - from.at) / 1000)
}

/** one plain progress line (off a terminal) */
export const plainLine = (c: Progress.Counters, rate: number | undefined, now: number, startedAt: number): string => {
  const total = Progress.total(c)
  const remaining = total === undefined ? undefined : Math.max(0, total.rows - Progress.done(c))
  return [
    Progress.format(c),
    ...(rate !== undefined ? [`${rate >= 10 ? int(rate) : rate.toFixed(1)} rows/s`] : []),
    `${clock(now - startedAt)} elapsed`,
    ...(remaining !== undefined && rate !== undefined && rate > 0 ? [`ETA ${clock((remaining / rate) * 1000)}`] : []),
    ...(c.inputTokens + c.outputTokens > 0 ? [`tokens ${compact(c.inputTokens)} in / ${compact(c.outputTokens)} out`] : []),
    ...(c.spentUsd > 0 ? [usd(c.spentUsd)] : [])
  ].join(" · ")
}

// ===== The display =====

/** the live display of one run */
export interface Display {
  /** an event of the run (after the counters folded it) */
  readonly event: (event: RunEvent.RunEvent) => void
  /** a line above the status (a notice, a log line) */
  readonly line: (text: string, tone?: EventLine["tone"]) => void
  /** redraws the status (a terminal), or prints the progress line when it is due (elsewhere) */
  readonly tick: () => void
  /** removes the status for good (before the summary); the cursor is shown again */
  readonly close: () => void
}

/** builds the display of `counters` on `terminal`; `intervalMs`: how often a plain progress line is printed */
export const make = (options: {
  readonly terminal: Terminal
  readonly counters: Progress.Counters
  readonly intervalMs?: number | undefined
  readonly now?: (() => number) | undefined
  /** the run is being cancelled (`offpeak cancel`) */
  readonly cancelling?: boolean | undefined
}): Display => {
  const { terminal, counters } = options
  const now = options.now ?? Date.now
  const intervalMs = options.intervalMs ?? 5_000
  const memory = newMemory(options.cancelling ?? false)
  const samples: Array<Sample> = []
  let doneAtStart = Progress.done(counters)
  let startedAt = now()
  let drawn = 0
  let closed = false
  // the first plain line once there is something to say
  let lastPlain = now()
  let lastPlainText = ""
  const tones: Record<EventLine["tone"], (s: string) => string> = {
    info: (s) => s,
    good: paint(terminal.color, "32"),
    warn: paint(terminal.color, "33"),
    bad: paint(terminal.color, "31")
  }
  const dim = paint(terminal.color, "2")

  const sample = () => {
    const t = now()
    const done = Progress.done(counters) - doneAtStart
    samples.push({ at: t, done })
    while (samples.length > 2 && t - samples[1]!.at > RATE_WINDOW_MS) samples.shift()
    return rateOf(samples, t, done)
  }

  /** erases the status lines drawn last (the cursor ends where the first one began) */
  const erase = () => {
    if (drawn === 0) return ""
    let out = `\r${ESC}2K`
    for (let i = 1; i < drawn; i++) out += `${ESC}1A${ESC}2K`
    drawn = 0
    return out
  }

  let hidden = false
  const frame = () => {
    // the cursor is hidden while the status is on screen (it would blink at the end of the bar)
    const hide = hidden ? "" : `${ESC}?25l`
    hidden = true
    const width = Math.max(20, terminal.columns() - 1)
    const lines = status(counters, {
      now: now(),
      startedAt,
      rate: sample(),
      width,
      color: terminal.color,
      unicode: terminal.unicode
    })
    drawn = lines.length
    return hide + lines.join("\n")
  }

  const say = (text: string, tone: EventLine["tone"]) => {
    if (closed) {
      terminal.write(`${text}\n`)
      return
    }
    const stamped = `${dim(timeOfDay(now()))} ${tones[tone](Redact.text(text))}`
    if (terminal.isTTY) terminal.write(`${erase()}${stamped}\n${frame()}`)
    else terminal.write(`${timeOfDay(now())} ${Redact.text(text)}\n`)
  }

  return {
    event: (event) => {
      if (event._tag === "RunStarted") {
        doneAtStart = Progress.done(counters)
        startedAt = now()
        samples.length = 0
      }
      const line = describe(event, counters, memory, now())
      if (line !== undefined) say(line.text, line.tone)
    },
    line: (text, tone = "info") => say(text, tone),
    tick: () => {
      if (closed) return
      if (terminal.isTTY) {
        terminal.write(`${erase()}${frame()}`)
        return
      }
      const t = now()
      if (t - lastPlain < intervalMs) return
      const text = plainLine(counters, sample(), t, startedAt)
      // the same figures again only once a minute: a 24-hour batch does not print 17,000 identical lines
      const body = Progress.format(counters)
      if (body === lastPlainText && t - lastPlain < 60_000) return
      lastPlain = t
      lastPlainText = body
      terminal.write(`${timeOfDay(t)} ${text}\n`)
    },
    close: () => {
      if (closed) return
      closed = true
      if (terminal.isTTY) terminal.write(`${erase()}${hidden ? `${ESC}?25h` : ""}`)
    }
  }
}

const safeJson = (u: unknown): string => {
  try {
    return JSON.stringify(u, (_, v) => typeof v === "bigint" ? v.toString() : v) ?? String(u)
  } catch {
    return String(u)
  }
}

/** a logger writing each log line through the display (above the status), its level named when it is not INFO */
export const logger = (display: Pick<Display, "line">) =>
  Logger.make(({ logLevel, message }) => {
    const text = (Array.isArray(message) ? message : [message])
      .map((m) => typeof m === "string" ? m : m instanceof Error ? m.message : safeJson(m))
      .join(" ")
    const tone: EventLine["tone"] = logLevel === "Warn" ? "warn" : logLevel === "Error" || logLevel === "Fatal" ? "bad" : "info"
    display.line(logLevel === "Info" ? text : `${logLevel.toUpperCase()} ${text}`, tone)
  })
