/**
 * Live counters of a run, for progress lines and tests: a fold over the run's
 * events ({@link update}), sampled by a reporter.
 *
 * @since 0.1.0
 */
import type * as RunEvent from "./RunEvent.ts"

/**
 * The counters.
 *
 * @since 0.1.0
 * @category models
 */
export interface Counters {
  runId: string
  /** source rows read by this process (including rows skipped because an earlier attempt admitted them) */
  read: number
  /** rows skipped on resume */
  skipped: number
  /** source rows earlier attempts of the run admitted (what a resume reads on after) */
  admittedBefore: number
  /** requests in batches accepted by the provider */
  submitted: number
  /** batches submitted and not yet ended */
  inFlight: number
  /** the most batches in flight at once so far */
  maxInFlight: number
  /** batches sealed by this process or found open on resume */
  batches: number
  /** rows written to the sink */
  succeeded: number
  /** rows written to the dead-letter sink */
  failed: number
  /** requests the provider reported done in batches still in flight, and answers of synchronous calls */
  remoteCompleted: number
  /** rows the source said it holds in the run's range, when it can count (checked against the rows read) */
  sourceRows?: number | undefined
  /** when the counters started (epoch ms; reset when the run starts) */
  startedAt: number
  /** how much the source holds, when it can tell before it is read (`SourceSized`) */
  sourceSize?: { readonly rows?: number | undefined; readonly bytes?: number | undefined; readonly estimate: boolean } | undefined
  /** for a source sized in bytes: how far into it reading has got */
  bytesRead: number
  /** the source was read to its end */
  sourceDone: boolean
  /** batches by where they stand: `sealed` (waiting for a slot), `submitted`, or the provider's state while polled */
  batchStates: Map<string, string>
  /** batches that ended, by the provider's final state (`completed`, `expired`, `failed`, `cancelled`, `sync`, …) */
  batchesEnded: Record<string, number>
  /** batches split because the provider refused them as too large */
  splits: number
  /** retry rounds started, and requests they sent again */
  retryRounds: number
  retried: number
  /** provider calls that failed transiently and were tried again (429, 5xx, unreachable) */
  backoffs: number
  /** tokens and cost (USD) of the answers recorded by this process, and their synchronous price */
  inputTokens: number
  outputTokens: number
  cachedInputTokens: number
  spentUsd: number
  syncEquivalentUsd: number
}

/**
 * Fresh counters.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (runId = ""): Counters => ({
  runId,
  read: 0,
  skipped: 0,
  admittedBefore: 0,
  submitted: 0,
  inFlight: 0,
  maxInFlight: 0,
  batches: 0,
  succeeded: 0,
  failed: 0,
  remoteCompleted: 0,
  startedAt: Date.now(),
  bytesRead: 0,
  sourceDone: false,
  batchStates: new Map(),
  batchesEnded: {},
  splits: 0,
  retryRounds: 0,
  retried: 0,
  backoffs: 0,
  inputTokens: 0,
  outputTokens: 0,
  cachedInputTokens: 0,
  spentUsd: 0,
  syncEquivalentUsd: 0
})

const fmt = (n: number) => n.toLocaleString("en-US")

/**
 * Rows done: delivered to the sink or the dead letter (by this process and earlier attempts of the run).
 *
 * @since 0.1.0
 * @category getters
 */
export const done = (c: Counters): number => c.succeeded + c.failed

/**
 * The rows the run will have, when it can be told: the rows read once the source ended, else the source's size in
 * rows, else (a source sized in bytes) the rows read so far scaled by the bytes still to read. `estimate` when it is
 * not exact.
 *
 * @since 0.1.0
 * @category getters
 */
export const total = (c: Counters): { readonly rows: number; readonly estimate: boolean } | undefined => {
  const read = runRead(c)
  if (c.sourceDone) return { rows: read, estimate: false }
  const size = c.sourceSize
  if (size?.rows !== undefined) return { rows: Math.max(size.rows, read), estimate: size.estimate }
  if (size?.bytes !== undefined && size.bytes > 0 && c.bytesRead > 0 && c.read > 0) {
    return { rows: Math.max(read, Math.round(c.read * size.bytes / c.bytesRead)), estimate: true }
  }
  return undefined
}

/**
 * The run's source rows read so far: those earlier attempts admitted, and the new ones this process read (a resume
 * that reads from the start skips the admitted ones again).
 *
 * @since 0.1.0
 * @category getters
 */
export const runRead = (c: Counters): number => Math.max(c.read, c.admittedBefore + c.read - c.skipped)

/**
 * Batches by where they stand now: waiting to be sent (`sealed`), at the provider (by its state), and ended.
 *
 * @since 0.1.0
 * @category getters
 */
export const batchesByState = (c: Counters): {
  readonly waiting: number
  readonly atProvider: ReadonlyArray<readonly [state: string, batches: number]>
  readonly ended: number
} => {
  let waiting = 0
  const at = new Map<string, number>()
  for (const state of c.batchStates.values()) {
    if (state === "sealed") waiting++
    else at.set(state, (at.get(state) ?? 0) + 1)
  }
  const ended = Object.values(c.batchesEnded).reduce((a, b) => a + b, 0)
  return { waiting, atProvider: [...at.entries()].sort((a, b) => b[1] - a[1]), ended }
}

/**
 * One progress line, e.g. `read 10,000 · submitted 9,000 · in flight 3 · succeeded 6,000 · failed 12`, with the
 * percent done when the source's size is known.
 *
 * @since 0.1.0
 * @category formatting
 */
export const format = (c: Counters): string => {
  const size = total(c)
  return [
    `read ${fmt(runRead(c))}`,
    ...(c.skipped > 0 ? [`resumed past ${fmt(c.skipped)}`] : []),
    `submitted ${fmt(c.submitted)}`,
    `in flight ${fmt(c.inFlight)}`,
    `succeeded ${fmt(c.succeeded)}`,
    `failed ${fmt(c.failed)}`,
    ...(size !== undefined && size.rows > 0
      ? [`${size.estimate ? "~" : ""}${Math.min(100, Math.floor(100 * done(c) / size.rows))}% of ${size.estimate ? "~" : ""}${fmt(size.rows)} rows`]
      : [])
  ].join(" · ")
}

/** per counters: what each batch in flight has reported done so far */
const reported = new WeakMap<Counters, Map<string, number>>()

/**
 * Folds one event into the counters.
 *
 * @since 0.1.0
 * @category updating
 */
export const update = (c: Counters, event: RunEvent.RunEvent): void => {
  switch (event._tag) {
    case "RunStarted": {
      c.runId = event.runId
      c.succeeded = event.delivered
      c.failed = event.dead
      c.batches += event.openBatches
      c.admittedBefore = event.admitted ?? 0
      c.startedAt = Date.now()
      return
    }
    case "RowsRead": {
      c.read += event.rows
      c.skipped += event.skipped
      if (event.bytes !== undefined) c.bytesRead = Math.max(c.bytesRead, event.bytes)
      return
    }
    case "SourceSized": {
      c.sourceSize = { rows: event.rows, bytes: event.bytes, estimate: event.estimate === true }
      return
    }
    case "SourceEnded": {
      c.sourceRows = event.counted
      c.sourceDone = true
      return
    }
    case "BatchSealed": {
      c.batches++
      c.batchStates.set(event.batchId, "sealed")
      return
    }
    case "BatchSplit": {
      c.batches += 2
      c.splits++
      c.batchStates.delete(event.batchId)
      return
    }
    case "BatchSubmitted": {
      c.submitted += event.requests
      c.batchStates.set(event.batchId, event.mode === "sync" ? "sync" : "submitted")
      return
    }
    case "BatchWatched": {
      c.inFlight++
      c.maxInFlight = Math.max(c.maxInFlight, c.inFlight)
      const done = reported.get(c) ?? new Map<string, number>()
      reported.set(c, done)
      done.set(event.batchId, 0)
      if (!c.batchStates.has(event.batchId)) c.batchStates.set(event.batchId, event.mode === "sync" ? "sync" : "submitted")
      return
    }
    case "BatchProgress": {
      if (c.batchStates.has(event.batchId)) c.batchStates.set(event.batchId, event.providerState)
      const done = reported.get(c)
      const before = done?.get(event.batchId)
      if (done === undefined || before === undefined) return
      c.remoteCompleted += event.done - before
      done.set(event.batchId, event.done)
      return
    }
    case "BatchEnded": {
      if (c.batchStates.delete(event.batchId)) {
        c.batchesEnded[event.providerState] = (c.batchesEnded[event.providerState] ?? 0) + 1
      }
      const done = reported.get(c)
      const before = done?.get(event.batchId)
      if (done === undefined || before === undefined) return
      c.inFlight--
      // a batch's lines are delivered from here on; answers of synchronous calls stay counted as answered
      if (event.mode === "batch") c.remoteCompleted -= before
      done.delete(event.batchId)
      return
    }
    case "PartWritten": {
      c.succeeded += event.delivered
      c.failed += event.dead
      return
    }
    case "Answered": {
      c.inputTokens += event.inputTokens
      c.outputTokens += event.outputTokens
      c.cachedInputTokens += event.cachedInputTokens
      c.spentUsd += event.spentUsd
      c.syncEquivalentUsd += event.syncEquivalentUsd
      return
    }
    case "RetryRound": {
      c.retryRounds++
      c.retried += event.requests
      return
    }
    case "BackingOff": {
      c.backoffs++
      return
    }
    case "ProviderUnreachable":
    case "RunEnded":
      return
  }
}
