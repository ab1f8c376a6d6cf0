/**
 * The estimate as a readable table (what `offpeak estimate` and `offpeak run --dry-run` print).
 *
 * @internal
 */
import type { Estimate } from "../Estimate.ts"
import * as Prices from "../Prices.ts"

/** USD: 6 decimals under a cent, 4 under a dollar, else 2 */
export const usd = (amount: number): string => {
  const abs = Math.abs(amount)
  const digits = abs === 0 ? 2 : abs < 0.01 ? 6 : abs < 1 ? 4 : 2
  return Prices.formatUsd(Prices.fromUsd(amount.toFixed(12)), digits)
}

const int = (n: number) => Math.round(n).toLocaleString("en-US")

const bytes = (n: number) =>
  n >= 1 << 30
    ? `${(n / (1 << 30)).toFixed(1)} GiB`
    : n >= 1 << 20
    ? `${(n / (1 << 20)).toFixed(1)} MiB`
    : n >= 1024
    ? `${(n / 1024).toFixed(1)} KiB`
    : `${n} B`

const pad = (s: string, n: number) => s.length >= n ? s : s + " ".repeat(n - s.length)
const padStart = (s: string, n: number) => s.length >= n ? s : " ".repeat(n - s.length) + s

/** the table */
export const format = (e: Estimate): string => {
  const lines: Array<string> = []
  const label = (name: string, text: string) => lines.push(`  ${pad(name, 10)} ${text}`)
  lines.push(
    `estimate: ${e.pipeline} on ${e.provider} (mode ${e.mode})${e.models.length > 0 ? ` · ${e.models.join(", ")}` : ""}`
  )
  label("source", `${e.source.name}: ${e.source.note}`)
  label(
    "rows",
    `${int(e.rows.total)} · invalid ${int(e.rows.invalid)} · answered by the result cache ${int(e.rows.cached)} (free) · ` +
      `answered by the requests sent ${int(e.rows.sent)}` +
      (e.rows.deduped > 0 ? ` (${int(e.rows.deduped)} of them ask what another row asks: sent once)` : "")
  )
  for (const example of e.invalidExamples) label("", `invalid: ${example}`)
  const b = e.batches
  label(
    "requests",
    `${int(e.requests)} in ${int(b.count)} batch${b.count === 1 ? "" : "es"}${b.sync > 0 ? ` (${int(b.sync)} as synchronous calls)` : ""}` +
      ` · ${int(b.files)} file${b.files === 1 ? "" : "s"}, ${bytes(b.bytes)} · at most ${int(b.maxRequests)} requests and ` +
      `${bytes(b.maxBytes)} a batch${b.groups > 1 ? ` · ${b.groups} groups never share a batch` : ""}`
  )
  label(
    "input",
    `${int(e.inputTokens.total)} tokens (${e.inputTokens.exact ? "exact" : "estimated"}: ${e.inputTokens.method})` +
      (e.requests > 0 ? ` · ${e.inputTokens.perRequest.toFixed(1)} a request` : "")
  )
  const o = e.outputTokens
  label(
    "output",
    `at most ${int(o.bound)} tokens (Σ max tokens${
      o.withoutMaxTokens > 0 ? `; ${int(o.withoutMaxTokens)} requests without maxTokens at ${int(o.defaultMaxTokens)}` : ""
    })` +
      (o.expected !== null && o.perAnswer !== null && o.sample !== null
        ? ` · expected ${int(o.expected)} (${o.perAnswer.toFixed(1)} an answer in sample run ${o.sample.runId}, ` +
          `${int(o.sample.answers)} answers)`
        : " · expected: unknown (no sample run)")
  )
  label("cache", `${(e.cachedInput.share * 100).toFixed(0)} % of input assumed read from the prompt cache: ${e.cachedInput.note}`)
  const c = e.cost
  // a model without a price adds nothing to the sums: they are shown as a floor, or as unknown when nothing is priced
  const unpriced = c.unpriced.length > 0
  const cell = (v: number | null) =>
    padStart(v === null ? "-" : unpriced && v === 0 ? "unknown" : unpriced ? `≥ ${usd(v)}` : usd(v), 18)
  lines.push(`  ${pad("cost", 22)}${padStart("at most", 18)}${padStart("expected", 18)}`)
  lines.push(`  ${pad("  batch API", 22)}${cell(c.batch.boundUsd)}${cell(c.batch.expectedUsd)}`)
  lines.push(`  ${pad("  synchronous API", 22)}${cell(c.sync.boundUsd)}${cell(c.sync.expectedUsd)}`)
  lines.push(`  ${pad("  saving", 22)}${cell(c.saving.boundUsd)}${cell(c.saving.expectedUsd)}`)
  if (e.mode === "auto") {
    lines.push(
      `  ${pad(`  as auto sends it`, 22)}${cell(c.planned.boundUsd)}${cell(c.planned.expectedUsd)}` +
        `  (${int(c.planned.syncRequests)} requests synchronously)`
    )
  }
  if (c.budgetUsd !== null) {
    label(
      "budget",
      `${usd(c.budgetUsd)}: the run reserves ${usd(c.reservedUsd)} in all` +
        (c.overBudgetUsd === null ? " (within it)" : ` — ${usd(c.overBudgetUsd)} over`)
    )
  }
  if (unpriced) label("unpriced", `${c.unpriced.join(", ")}: no price known, not in the sums (a \`prices\` override gives one)`)
  if (e.dryRun !== null) {
    label("dry run", `${int(e.dryRun.files.length)} batch file${e.dryRun.files.length === 1 ? "" : "s"} in ${e.dryRun.dir}`)
    const shown = e.dryRun.files.slice(0, 10)
    for (const f of shown) label("", `${f.file}: ${int(f.requests)} requests, ${bytes(f.bytes)} (${f.mode}, ${f.group})`)
    if (e.dryRun.files.length > shown.length) label("", `… and ${int(e.dryRun.files.length - shown.length)} more`)
  }
  if (e.advice.length > 0) {
    lines.push("advice")
    for (const a of e.advice) lines.push(`  - ${a}`)
  }
  lines.push(`(estimated in ${(e.durationMs / 1000).toFixed(1)} s)`)
  return lines.join("\n")
}
