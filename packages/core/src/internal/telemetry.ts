/**
 * What the runner tells OpenTelemetry (see `Telemetry`): a run's events folded into the metrics, in this one place,
 * and the attributes of the run's span. Nothing happens unless `Telemetry.RecordMetrics` is on.
 *
 * @internal
 */
import { Context, Effect, Metric } from "effect"
import type * as Ledger from "../Ledger.ts"
import type * as Provider from "../Provider.ts"
import type * as RunEvent from "../RunEvent.ts"
import * as Telemetry from "../Telemetry.ts"

/** picodollars (see `Prices`) in USD */

/** updates the metrics from one run's events, with the run's pipeline and provider as attributes */
const recorder = (context: Context.Context<never>, labels: { readonly pipeline: string; readonly provider: string }) => {
  const m = Telemetry.metrics
  const base = { "offpeak.pipeline": labels.pipeline, "offpeak.provider": labels.provider }
  // one metric value per series (the metric with its attributes), made once
  const series = new Map<string, Metric.Metric<number, unknown>>()
  const at = (name: string, metric: Metric.Metric<number, unknown>, extra?: Readonly<Record<string, string>>) => {
    const key = extra === undefined ? name : `${name}\u0000${JSON.stringify(extra)}`
    let found = series.get(key)
    if (found === undefined) {
      found = Metric.withAttributes(metric, { ...base, ...extra })
      series.set(key, found)
    }
    return found
  }
  const add = (name: keyof typeof m, value: number, extra?: Readonly<Record<string, string>>) => {
    if (value !== 0) at(name, m[name], extra).updateUnsafe(value, context)
  }
  let inFlight = 0
  const setInFlight = (n: number) => {
    inFlight = Math.max(0, n)
    at("batchesInFlight", m.batchesInFlight).updateUnsafe(inFlight, context)
  }
  return (event: RunEvent.RunEvent): void => {
    switch (event._tag) {
      case "RowsRead":
        return add("rowsRead", event.rows - event.skipped)
      case "PartWritten":
        add("rowsDelivered", event.delivered)
        return add("rowsFailed", event.dead)
      case "Answered":
        add("answers", event.succeeded, { "offpeak.outcome": "succeeded" })
        add("answers", event.failed, { "offpeak.outcome": "failed" })
        add("tokens", event.inputTokens, { "offpeak.token.type": "input" })
        add("tokens", event.outputTokens, { "offpeak.token.type": "output" })
        add("tokens", event.cachedInputTokens, { "offpeak.token.type": "cached_input" })
        add("cost", event.spentUsd)
        return add("costSyncEquivalent", event.syncEquivalentUsd)
      case "BatchSealed":
        return add("batches", 1, { "offpeak.batch.state": "sealed", "offpeak.batch.mode": event.mode })
      case "BatchSubmitted":
        return add("batches", 1, { "offpeak.batch.state": "submitted", "offpeak.batch.mode": event.mode })
      case "BatchSplit":
        return add("batches", 1, { "offpeak.batch.state": "split" })
      case "BatchWatched":
        return setInFlight(inFlight + 1)
      case "BatchEnded":
        add("batches", 1, { "offpeak.batch.state": event.providerState, "offpeak.batch.mode": event.mode })
        return setInFlight(inFlight - 1)
      case "RetryRound":
        add("retryRounds", 1)
        return add("retryRequests", event.requests)
      case "BackingOff":
        return add("backoffs", 1, { "offpeak.operation": event.operation })
      case "RunEnded":
        add("runs", 1, { "offpeak.run.state": event.state })
        return setInFlight(0)
      default:
        return
    }
  }
}

/**
 * A run's options with its events also folded into the metrics, when `Telemetry.RecordMetrics` is on; the same
 * options otherwise.
 */
export const observe = <O extends { readonly onEvent?: ((event: RunEvent.RunEvent) => void) | undefined }>(
  options: O,
  labels: { readonly pipeline: string; readonly provider: string }
): Effect.Effect<O> =>
  Effect.map(Effect.context<never>(), (context) => {
    if (!Context.get(context, Telemetry.RecordMetrics)) return options
    const record = recorder(context, labels)
    const onEvent = options.onEvent
    return {
      ...options,
      onEvent: (event: RunEvent.RunEvent) => {
        record(event)
        onEvent?.(event)
      }
    }
  })

/** the `offpeak.run` span's attributes at the end of a run */
export const summaryAttributes = (summary: {
  readonly state: string
  readonly rows: number
  readonly succeeded: number
  readonly failed: number
  readonly batches: number
  readonly usage: { readonly inputTokens: number; readonly outputTokens: number }
  readonly cost: { readonly spentUsd: number }
}): Record<string, unknown> => ({
  "offpeak.run.state": summary.state,
  "offpeak.rows": summary.rows,
  "offpeak.rows.succeeded": summary.succeeded,
  "offpeak.rows.failed": summary.failed,
  "offpeak.batches": summary.batches,
  "offpeak.tokens.input": summary.usage.inputTokens,
  "offpeak.tokens.output": summary.usage.outputTokens,
  "offpeak.cost.usd": summary.cost.spentUsd
})

/**
 * The options of a batch's span: its id, and with `full` (the `offpeak.batch` span itself) its run, size, mode and
 * provider, and its remote id when it has one already.
 */
export const batchSpan = (
  batch: Ledger.Batch,
  options?: { readonly provider: string; readonly full: true }
): { readonly attributes: Record<string, unknown> } => ({
  attributes: options === undefined
    ? { "offpeak.batch.id": batch.id }
    : {
      "offpeak.run.id": batch.runId,
      "offpeak.batch.id": batch.id,
      "offpeak.batch.requests": batch.requestCount,
      "offpeak.batch.bytes": batch.bytes,
      "offpeak.batch.mode": batch.mode,
      "offpeak.provider": options.provider,
      ...(batch.remoteId !== null ? { "offpeak.batch.remote_id": batch.remoteId } : {})
    }
})

/** what the provider last said of a batch, as span attributes */
export const statusAttributes = (status: Provider.Status): Record<string, unknown> => ({
  "offpeak.batch.provider_state": status.providerState,
  "offpeak.batch.completed": status.counts.completed,
  "offpeak.batch.failed": status.counts.failed,
  "offpeak.batch.total": status.counts.total
})
