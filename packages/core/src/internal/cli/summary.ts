/**
 * The end of a run as the user reads it: state and duration, rows, succeeded, failed by kind, answers from the cache
 * and requests saved by dedupe, batches, tokens, cost against the synchronous price, where the results and the dead
 * letter went, and — when the run is not done — its id and the exact command that resumes it. The same report is
 * `--json`'s (`Json.Summary`).
 *
 * @internal
 */
import { Effect } from "effect"
import * as Ledger from "../../Ledger.ts"
import type * as Pipeline from "../../Pipeline.ts"
import * as Prices from "../../Prices.ts"
import type * as Progress from "../../Progress.ts"
import { count, duration } from "./display.ts"
import type * as Json from "./json.ts"
import * as Table from "./table.ts"

/** the report of a run's end (`--json` prints it as it is) */
export type Report = typeof Json.Summary.Type

const int = (n: number) => n.toLocaleString("en-US")
const money = (usd: number) => {
  const m = Prices.fromUsd(usd)
  return Prices.formatUsd(m, m >= 1_000_000_000_000n ? 2 : m >= 10_000_000_000n ? 4 : 6)
}

/** the report of a run that ended (or was cancelled) with a summary */
export const fromSummary = (
  summary: Pipeline.Summary,
  options: { readonly results: string; readonly resume: string; readonly maxDeadExceeded: boolean }
): Report => ({
  runId: summary.runId,
  state: summary.state,
  message: summary.state === "completed" || summary.pending === 0 ? null : `${int(summary.pending)} rows were not delivered`,
  durationMs: Math.max(0, Math.round(summary.durationMs)),
  rows: summary.rows,
  succeeded: summary.succeeded,
  failed: summary.failed,
  pending: summary.pending,
  failedByKind: summary.failedByKind,
  cachedRows: summary.cachedRows,
  dedupedRows: summary.dedupedRows,
  batches: summary.batches,
  tokens: summary.usage,
  cost: {
    spentUsd: summary.cost.spentUsd,
    syncEquivalentUsd: summary.cost.syncEquivalentUsd,
    budgetUsd: summary.cost.budgetUsd,
    unpriced: summary.cost.unpriced
  },
  results: options.results,
  deadLetter: summary.deadLetter,
  resume: summary.state === "completed" || summary.state === "cancelled" ? null : options.resume,
  maxDeadExceeded: options.maxDeadExceeded
})

/** the report of a run that stopped with an error (or detached), from what the ledger recorded */
export const fromLedger = (
  ledger: Ledger.Service,
  options: {
    readonly runId: string
    /** default `failed` */
    readonly state?: "failed" | "detached"
    readonly message: string
    readonly durationMs: number
    readonly results: string
    readonly deadLetter: string
    readonly resume: string
  }
): Effect.Effect<Report, Ledger.LedgerError> =>
  Effect.gen(function*() {
    const counts = yield* ledger.counts(options.runId)
    const byKind = yield* ledger.failureCounts(options.runId)
    const spend = yield* ledger.spend(options.runId)
    return {
      runId: options.runId,
      state: options.state ?? "failed",
      message: options.message,
      durationMs: Math.max(0, Math.round(options.durationMs)),
      rows: counts.items,
      succeeded: counts.delivered,
      failed: counts.dead,
      pending: counts.pendingItems,
      failedByKind: byKind,
      cachedRows: spend.cachedRows,
      dedupedRows: spend.dedupedRows,
      batches: counts.batches,
      tokens: Ledger.spendReport(spend).usage,
      cost: { ...Ledger.spendReport(spend).cost, unpriced: [] },
      results: options.results,
      deadLetter: options.deadLetter,
      resume: options.resume,
      maxDeadExceeded: false
    }
  })

/**
 * A run's rows in one line that adds up: failures recorded but not in the dead letter yet (a run that stopped before
 * delivering them) count as failed, not pending, and say so.
 */
export const rowsLine = (rows: {
  readonly rows: number
  readonly succeeded: number
  readonly dead: number
  readonly pending: number
  readonly failedByKind: ReadonlyArray<{ readonly kind: string; readonly rows: number }>
}, succeededLabel = "succeeded"): string => {
  const recorded = rows.failedByKind.reduce((n, k) => n + k.rows, 0)
  const waiting = Math.max(0, Math.min(recorded - rows.dead, rows.pending))
  const kinds = rows.failedByKind.map((k) => `${k.kind} ${int(k.rows)}`).join(", ")
  const notes = [kinds, ...(waiting > 0 ? [`${int(waiting)} not in the dead letter yet`] : [])].filter((x) => x !== "")
  return `${int(rows.rows)} · ${succeededLabel} ${int(rows.succeeded)} · failed ${int(rows.dead + waiting)}` +
    (notes.length > 0 ? ` (${notes.join("; ")})` : "") +
    (rows.pending - waiting > 0 ? ` · pending ${int(rows.pending - waiting)}` : "")
}

/** the summary as text: one line per fact, the labels aligned */
export const render = (
  report: Report,
  options: {
    readonly counters?: Progress.Counters | undefined
    readonly maxDead?: string | undefined
    readonly color?: boolean | undefined
    /** a resumed run: when the run started (the duration, retry rounds and back-offs are this process's) */
    readonly startedAt?: string | undefined
  } = {}
): string => {
  const paint = (code: string) => (s: string) => options.color === true ? `\x1b[${code}m${s}\x1b[0m` : s
  const stateColor = report.state === "completed" ? paint("32") : report.state === "failed" ? paint("31") : paint("33")
  const c = options.counters
  const lines: Array<[string, string]> = []
  lines.push(["rows", rowsLine({ ...report, dead: report.failed })])
  if (c?.sourceRows !== undefined) lines.push(["source", `${int(c.sourceRows)} rows in this run's range, every one read`])
  if (report.cachedRows > 0 || report.dedupedRows > 0) {
    lines.push([
      "saved",
      `${count(report.cachedRows, "answer")} from the result cache · ${count(report.dedupedRows, "row")} shared a request (dedupe)`
    ])
  }
  const extras = [
    ...(c !== undefined && (c.batchesEnded["expired"] ?? 0) > 0 ? [`${c.batchesEnded["expired"]} expired`] : []),
    ...(c !== undefined && c.splits > 0 ? [`${c.splits} split`] : []),
    ...(c !== undefined && c.retryRounds > 0
      ? [`${count(c.retryRounds, "retry round")} sent ${count(c.retried, "request")} again`]
      : []),
    ...(c !== undefined && c.backoffs > 0 ? [`${c.backoffs} provider calls backed off`] : [])
  ]
  lines.push(["batches", [int(report.batches), ...extras].join(" · ")])
  const t = report.tokens
  if (t.inputTokens + t.outputTokens > 0) {
    lines.push([
      "tokens",
      `${int(t.inputTokens)} in${t.cachedInputTokens > 0 ? ` (${int(t.cachedInputTokens)} cached)` : ""} · ${int(t.outputTokens)} out`
    ])
  }
  const cost = report.cost
  if (cost.spentUsd > 0 || cost.syncEquivalentUsd > 0 || cost.unpriced.length > 0) {
    const saved = cost.syncEquivalentUsd - cost.spentUsd
    lines.push([
      "cost",
      `${money(cost.spentUsd)}` +
        (cost.syncEquivalentUsd > 0 && saved > 0
          ? ` · ${money(cost.syncEquivalentUsd)} through the synchronous API (${money(saved)} saved)`
          : "") +
        (cost.budgetUsd !== null ? ` · budget ${money(cost.budgetUsd)}` : "") +
        (cost.unpriced.length > 0 ? ` · no price for ${cost.unpriced.join(", ")} (add a prices override)` : "")
    ])
  }
  lines.push(["results", report.results])
  if (report.failed > 0) lines.push(["dead letter", `${report.deadLetter} · offpeak failures ${report.runId}`])
  if (report.resume !== null) lines.push(["resume", report.resume])
  if (report.maxDeadExceeded) {
    lines.push(["max dead", paint("31")(`${int(report.failed)} rows failed, more than --max-dead ${options.maxDead ?? ""}`.trim())])
  }
  const width = Math.max(...lines.map(([label]) => label.length))
  const head = `run ${report.runId}: ${stateColor(report.state)}` +
    (report.state === "completed" || report.state === "cancelled" ? ` in ${duration(report.durationMs)}` : ` after ${duration(report.durationMs)}`) +
    (options.startedAt !== undefined ? ` (this process; the run started ${Table.dateTime(options.startedAt)})` : "") +
    (report.message !== null ? ` — ${report.message}` : "")
  return [head, ...lines.map(([label, value]) => `  ${label.padEnd(width)}  ${value}`)].join("\n") + "\n"
}

/**
 * `--max-dead`: `n` rows or `p%` of the rows; undefined when the flag is not a count or a percent.
 */
export const parseMaxDead = (flag: string): ((failed: number, rows: number) => boolean) | undefined => {
  const count = /^\s*(\d+)\s*$/.exec(flag)
  if (count !== null) return (failed) => failed > Number(count[1])
  const percent = /^\s*(\d+(?:\.\d+)?)\s*%\s*$/.exec(flag)
  if (percent !== null && Number(percent[1]) <= 100) return (failed, rows) => failed * 100 > Number(percent[1]) * rows
  return undefined
}
