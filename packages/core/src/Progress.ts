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
  submitted: 0,
  inFlight: 0,
  maxInFlight: 0,
  batches: 0,
  succeeded: 0,
  failed: 0,
  remoteCompleted: 0
})

const fmt = (n: number) => n.toLocaleString("en-US")

/**
 * One progress line, e.g. `read 10,000 · submitted 9,000 · in flight 3 · succeeded 6,000 · failed 12`.
 *
 * @since 0.1.0
 * @category formatting
 */
export const format = (c: Counters): string =>
  [
    `read ${fmt(c.read)}`,
    ...(c.skipped > 0 ? [`resumed past ${fmt(c.skipped)}`] : []),
    `submitted ${fmt(c.submitted)}`,
    `in flight ${fmt(c.inFlight)}`,
    `succeeded ${fmt(c.succeeded)}`,
    `failed ${fmt(c.failed)}`
  ].join(" · ")

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
      return
    }
    case "RowsRead": {
      c.read += event.rows
      c.skipped += event.skipped
      return
    }
    case "SourceEnded": {
      c.sourceRows = event.counted
      return
    }
    case "BatchSealed": {
      c.batches++
      return
    }
    case "BatchSplit": {
      c.batches += 2
      return
    }
    case "BatchSubmitted": {
      c.submitted += event.requests
      return
    }
    case "BatchWatched": {
      c.inFlight++
      c.maxInFlight = Math.max(c.maxInFlight, c.inFlight)
      const done = reported.get(c) ?? new Map<string, number>()
      reported.set(c, done)
      done.set(event.batchId, 0)
      return
    }
    case "BatchProgress": {
      const done = reported.get(c)
      const before = done?.get(event.batchId)
      if (done === undefined || before === undefined) return
      c.remoteCompleted += event.done - before
      done.set(event.batchId, event.done)
      return
    }
    case "BatchEnded": {
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
    case "RetryRound":
    case "BackingOff":
    case "RunEnded":
      return
  }
}

