/**
 * Live counters of a run, for progress lines and tests. The runner updates
 * them per chunk and per batch (never per row in an Effect), and a reporter
 * samples them.
 *
 * @since 0.1.0
 */

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
  /** requests the provider reported done in batches still in flight */
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
