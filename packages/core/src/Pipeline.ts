/**
 * A pipeline is a value: where records come from, what each one asks of a
 * model, and where results go. `offpeak run <module>` runs the pipeline a
 * module exports; the same value runs from code with {@link run}.
 *
 * @since 0.1.0
 */
import type { Duration, Effect, Schema } from "effect"
import * as Runner from "./internal/run/run.ts"
import type { RunError } from "./Run.ts"
import type * as Ledger from "./Ledger.ts"
import type * as Run from "./Run.ts"
import type * as Prices from "./Prices.ts"
import type * as Progress from "./Progress.ts"
import type * as Provider from "./Provider.ts"
import type * as Request from "./Request.ts"
import type * as Result from "./Result.ts"
import type * as RunEvent from "./RunEvent.ts"
import type * as Sink from "./Sink.ts"
import type * as Source from "./Source.ts"

/**
 * Batch limits of a pipeline. Each is capped by the provider's own limit.
 *
 * @since 0.1.0
 * @category models
 */
export interface BatchOptions {
  /** requests per batch */
  readonly maxRequests?: number | undefined
  /** bytes of encoded lines per batch */
  readonly maxBytes?: number | undefined
  /** batches at the provider at once; the source is not read ahead of this */
  readonly maxInFlight?: number | undefined
  /** a batch still open this long after its first request is sent as it is */
  readonly flushAfter?: Duration.Input | undefined
  /** in `auto` mode, a batch of fewer requests than this goes through the synchronous API (default 100) */
  readonly syncBelow?: number | undefined
  /**
   * Requests that share a prompt prefix go to the same batches (a batch per prefix is filled at a time), so a
   * provider's prompt cache can answer the prefix once for many requests. The prefix is a request's first
   * `cachePrefix` messages when it says (`Request.chat({ cachePrefix })`, which also marks it for Anthropic's cache),
   * else every message but the last. Default false.
   */
  readonly groupByPrefix?: boolean | undefined
}

/**
 * Retry policy of failed requests.
 *
 * @since 0.1.0
 * @category models
 */
export interface RetryOptions {
  /** attempts per request, the first included (default 3) */
  readonly maxAttempts?: number | undefined
  /** pause before the first retry round; doubles each round, up to a minute (default 1 second) */
  readonly backoff?: Duration.Input | undefined
  /** resubmit answers cut at the token limit or by a content filter (default false: they go to the dead letter) */
  readonly truncated?: boolean | undefined
  /** extra attempts for answers that do not decode with the output schema (default 0) */
  readonly decodeErrors?: number | undefined
  /**
   * How long a provider call goes on being retried while the provider answers 429, 5xx or cannot be reached
   * (default 6 hours: a batch has 24). Back-off doubles from half a second up to a minute, jittered, and never shorter than
   * the provider's `retry-after`; past this the run stops, resumable, with the reason.
   */
  readonly transientFor?: Duration.Input | undefined
}

/**
 * What a pipeline's `request` function knows besides the record.
 *
 * @since 0.1.0
 * @category models
 */
export interface RequestContext {
  /** the provider the run sends to (`openai`, `anthropic`, …) */
  readonly provider: string
}

/**
 * What `Pipeline.make` takes. `R` is the record type, `A` the decoded output,
 * `Row` what the sink receives (by default the `Succeeded` result itself).
 *
 * @since 0.1.0
 * @category models
 */
export interface Config<R, A, Row = Result.Succeeded<R, A>> {
  /** names runs and their files */
  readonly name: string
  readonly source: Source.Source<R>
  /** a stable, unique id of the record (an id column); resume and dedupe rely on it, never on row order */
  readonly key: (record: R) => string
  /** the request for one record; `context.provider` lets one pipeline pick each provider's model */
  readonly request: (record: R, context: RequestContext) => Request.Request
  /** the structured output of chat requests; answers are decoded with it */
  readonly output?: Schema.Codec<A, any> | undefined
  /** the name of the output schema sent to providers (default `output`) */
  readonly outputName?: string | undefined
  /** turns a result into the sink's row, e.g. `(r) => ({ id: r.key, ...r.output })` (default: the result itself) */
  readonly row?: ((result: Result.Succeeded<R, A>) => Row) | undefined
  readonly sink: Sink.Sink<NoInfer<Row>>
  /** where failed rows go, with their reason (default: JSONL part files under the run's state folder) */
  readonly deadLetter?: Sink.Sink<Result.Failed<NoInfer<R>>> | undefined
  /**
   * The most this pipeline's runs may spend, in USD (`12.5` or `"12.50"`): before a batch is sent (or a `sync` batch's
   * calls), its worst case — input tokens plus each request's `maxTokens` (4,096 when unset) at the price of the mode —
   * is reserved in the ledger; a batch that would pass the budget is not sent, its rows stay pending
   * (`budget_refused`), and `resume` with a higher budget sends them. Reservations become the answers' real cost as
   * they come back. A run's budget is fixed when it starts (`--budget` / `RunOptions.budget` change it).
   */
  readonly budget?: number | string | undefined
  /** prices per model (USD per million tokens) over the bundled price data, e.g. for a fine-tuned or private model */
  readonly prices?: Prices.Overrides | undefined
  /** the provider the CLI uses unless told otherwise (default `openai`) */
  readonly provider?: string | undefined
  /**
   * How requests are sent (default `batch`): `batch`, the provider's batch
   * API (half price, answered within 24 h); `sync`, one synchronous call per
   * request (full price, answered at once; as many at a time as the
   * adapter's adaptive limit allows, which halves on 429); `auto`, batches
   * of fewer than `batch.syncBelow` requests (a small job, the tail of a
   * large one, a retry round) go synchronously, the rest as batches.
   */
  readonly mode?: Run.Mode | undefined
  readonly batch?: BatchOptions | undefined
  readonly retry?: RetryOptions | undefined
  /**
   * A new run reads only what the source has after the checkpoint where the
   * pipeline's last completed run stopped (sources with a checkpoint column,
   * e.g. `Postgres.source({ checkpoint: { column: "updated_at" } })`); other
   * rows were delivered by earlier runs. Without it every run reads the whole
   * source, and answers already known come from the result cache.
   */
  readonly incremental?: boolean | undefined
  /**
   * The time by which every row must be answered (a `Date`, an ISO time, or epoch ms). Batches go to the batch API
   * while there is time; from `deadline − deadlineMargin` on, batches still at the provider are cancelled (the answers
   * they returned are kept, nothing is paid twice) and every row left goes through the synchronous API.
   */
  readonly deadline?: Date | string | number | undefined
  /**
   * How long before the deadline to switch: by default how long this provider's batches have taken in this ledger
   * (the slowest of the last 50, at least a minute), else 15 minutes.
   */
  readonly deadlineMargin?: Duration.Input | undefined
}

/**
 * A pipeline value.
 *
 * @since 0.1.0
 * @category models
 */
export interface Pipeline<R, A, Row = any> extends Config<R, A, Row> {
  readonly _tag: "Pipeline"
}

/**
 * Builds a pipeline.
 *
 * @example
 * ```ts
 * export default Pipeline.make({
 *   name: "triage",
 *   source: Csv.source({ path: "tickets.csv", schema: Ticket }),
 *   key: (t) => t.id,
 *   request: (t) => Request.chat({ model: "gpt-4o-mini", system: "Triage this ticket.", prompt: t.body }),
 *   output: Triage,
 *   sink: Jsonl.sink({ dir: "out/triage" })
 * })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <R, A = unknown, Row = Result.Succeeded<R, A>>(config: Config<R, A, Row>): Pipeline<R, A, Row> => ({
  ...config,
  _tag: "Pipeline"
})

/**
 * True for pipeline values (what a module must export for `offpeak run`).
 *
 * @since 0.1.0
 * @category guards
 */
export const isPipeline = (u: unknown): u is Pipeline<unknown, unknown> =>
  typeof u === "object" && u !== null && (u as { _tag?: unknown })._tag === "Pipeline"

/**
 * How to run.
 *
 * @since 0.1.0
 * @category models
 */
export interface RunOptions {
  /** a new run gets this id (default: `<name>-<timestamp>-<random>`) */
  readonly runId?: string | undefined
  /** continue an existing run instead of starting one */
  readonly resume?: string | undefined
  /** folder for batch files and the default dead-letter sink (default `.offpeak`) */
  readonly stateDir?: string | undefined
  /** the module path recorded so `offpeak resume` can load the pipeline again */
  readonly module?: string | undefined
  /** the provider name recorded with the run (default: the pipeline's, else `openai`) */
  readonly provider?: string | undefined
  /** the run's deadline, over the pipeline's (see `Config.deadline`) */
  readonly deadline?: Date | string | number | undefined
  /** the run's budget in USD, over the pipeline's (a resume with a higher budget sends what the budget refused) */
  readonly budget?: number | string | undefined
  /** how a new run sends its requests, over the pipeline's `mode`; a resumed run keeps the mode it was started with */
  readonly mode?: Run.Mode | undefined
  /** live counters, updated as the run goes (the run's events folded, see `Progress.update`) */
  readonly progress?: Progress.Counters | undefined
  /** called with each event of the run as it happens (batches sealed, submitted, polled, ended, parts written, …) */
  readonly onEvent?: ((event: RunEvent.RunEvent) => void) | undefined
  /**
   * How long the run's lease outlives its last heartbeat (default 30 seconds, or `OFFPEAK_LEASE_TTL`): a process on
   * another machine may take a run over that long after its owner stopped renewing (a dead process on the same host
   * frees it at once). The owner renews it every third of that.
   */
  readonly leaseTtl?: Duration.Input | undefined
  /**
   * Cancel the run (with `resume`): send nothing more, cancel its batches at
   * the provider, deliver the answers that came back, and record every other
   * row as `cancelled` in the dead letter. A cancelled run stays cancelled.
   */
  readonly cancel?: boolean | undefined
}

/**
 * What a finished (or detached) run did.
 *
 * @since 0.1.0
 * @category models
 */
export interface Summary {
  readonly runId: string
  readonly state: Run.State
  /** rows of the run in the ledger */
  readonly rows: number
  readonly succeeded: number
  readonly failed: number
  /** rows not yet delivered (a run that stopped early) */
  readonly pending: number
  readonly batches: number
  readonly deadLetter: string
  readonly progress: Progress.Counters
  /** how long this process worked the run */
  readonly durationMs: number
  /** rows that ended failed, by kind (most first) */
  readonly failedByKind: ReadonlyArray<{ readonly kind: Result.FailureKind; readonly rows: number }>
  /** rows answered from the result cache of earlier runs (no request sent), and rows that shared a request with another row */
  readonly cachedRows: number
  readonly dedupedRows: number
  /** tokens of the answers this run paid for (cache copies excluded) */
  readonly usage: Usage
  /**
   * What those answers cost at the provider's prices for the mode they were sent in, and what the same answers would
   * have cost through the synchronous API, in USD (summed exactly in picodollars, see `Prices`); `budgetUsd` the run's
   * budget; `unpriced` names models with no price (add a `prices` override), whose answers are not in the sums.
   */
  readonly cost: {
    readonly spentUsd: number
    readonly syncEquivalentUsd: number
    readonly budgetUsd: number | null
    readonly unpriced: ReadonlyArray<string>
  }
}

/**
 * Token totals of a run's answers.
 *
 * @since 0.1.0
 * @category models
 */
export interface Usage {
  readonly inputTokens: number
  readonly outputTokens: number
  readonly cachedInputTokens: number
}

/**
 * Runs a pipeline to the end: reads the source, submits batches, polls them,
 * and delivers every row to the sink or the dead-letter sink. Interrupting it
 * detaches: remote batches keep running and `resume` picks them up.
 *
 * @since 0.1.0
 * @category running
 */
export const run: <R, A, Row>(
  pipeline: Pipeline<R, A, Row>,
  options?: RunOptions
) => Effect.Effect<Summary, RunError, Provider.Provider | Ledger.Ledger> = Runner.run

export {
  /**
   * The run could not go on (the source cannot be read, a sink is unavailable, the provider keeps failing, another
   * process owns the run). The ledger keeps everything done so far: resume the run once the cause is fixed.
   *
   * @since 0.1.0
   * @category errors
   */
  RunError
} from "./Run.ts"
