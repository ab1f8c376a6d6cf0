/**
 * A local emulator of Anthropic's Message Batches API, faithful enough that
 * the official `@anthropic-ai/sdk` drives a whole batch lifecycle against it:
 * create a batch with inline requests, poll it through `in_progress` →
 * (`canceling` →) `ended`, stream its results from the `results_url` it hands
 * out (an absolute URL on the emulator's own host and port), list, cancel and
 * delete batches. Answers come from the deterministic local engine
 * (`@offpeak/providers/local`).
 *
 * **Details**
 *
 * - State is derived lazily from timestamps on every read (no timers); when a
 *   batch first reaches its end its results file is written, in slices that
 *   yield to the event loop.
 * - Everything is persisted in `dir` (a JSON record, the requests and the
 *   results of every batch): a new `serve({ dir })` after a crash carries on
 *   as if nothing had happened.
 * - The create body (up to 256 MB) is read as a stream and checked request by
 *   request: `custom_id` pattern and uniqueness, `params` with `model`,
 *   `max_tokens` and `messages`, the request count (400), the body size (413,
 *   `request_too_large`). Other problems of a request's params come back as an
 *   `errored` result (`invalid_request_error`), as with the real API; that
 *   includes `temperature`, `top_p` and `top_k` under `anthropic-version`
 *   `2026-10-21` or later ("Extra inputs are not permitted").
 * - Faults of the real service on demand: errored lines (`lineFailures`),
 *   429/5xx on any endpoint with `retry-after` (`endpointFaults`; for create,
 *   also after the batch was created), a 404 right after create
 *   (`notFoundAfterCreateMs`), creates answered late (`createLatencyMs`), new
 *   batches listed late (`listLagMs`), expiry with partial results, slow
 *   progression, shuffled results.
 * - Counters for tests (`counters`, or `GET /_emulator/counters`): creates in
 *   flight, results downloads per batch, requests sent twice.
 * - Prompt caching: a prefix marked with `cache_control` is written by the
 *   first request that carries it and read by the later ones (per batch, and
 *   across `POST /v1/messages` calls), in `usage`.
 * - Also serves the synchronous `POST /v1/messages`.
 *
 * @example
 * ```ts
 * import { Emulator } from "@offpeak/providers/anthropic"
 * import Anthropic from "@anthropic-ai/sdk"
 *
 * const program = Effect.gen(function*() {
 *   const emulator = yield* Emulator.serve({ linesPerSecond: 1_000 })
 *   const client = new Anthropic({ apiKey: "test", baseURL: emulator.url })
 *   // client.messages.batches.create(...), .retrieve(...), .results(...), ...
 * }).pipe(Effect.scoped)
 * ```
 *
 * @since 0.1.0
 */
import { FinishedLog, Server } from "../../local/Kit.ts"
import { Effect, Schema, Scope } from "effect"
import { HttpRouter } from "effect/http"
import * as CountersModule from "./counters.ts"
import * as Routes from "./routes.ts"
import * as Runtime from "./runtime.ts"
import * as Store from "./store.ts"

// ===== Models =====

/**
 * The emulator's knobs. Timings and line failures apply to batches created
 * while they are set: each batch keeps the knobs it was created under,
 * restarts included.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** persist all state here; absent: a fresh temp folder, removed when the scope closes */
  readonly dir?: string | undefined
  /** seeds the injected failures (default 0) */
  readonly seed?: number | undefined
  /** processing speed while in progress (default 20,000 requests per second) */
  readonly linesPerSecond?: number | undefined
  /** time in `canceling` (default 20 ms) */
  readonly cancellingMs?: number | undefined
  /** a batch not done this long after creation ends with its other requests `expired` (default 24 h; also its `expires_at`) */
  readonly completionWindowMs?: number | undefined
  /**
   * per-request injected errors, e.g. `[{ type: "overloaded_error", rate: 0.02 }]`; drawn from a hash of
   * (seed, batch id, custom_id), so a request retried in another batch draws afresh
   */
  readonly lineFailures?:
    | ReadonlyArray<{ readonly type: "api_error" | "overloaded_error" | "invalid_request_error"; readonly rate: number }>
    | undefined
  /**
   * injected HTTP failures of whole calls, e.g. `[{ endpoint: "create", status: 529, times: 1 }]` or
   * `[{ status: 429, rate: 0.1, retryAfterMs: 200 }]` (endpoints: create, retrieve, list, cancel, delete, results, messages)
   */
  readonly endpointFaults?: ReadonlyArray<Runtime.EndpointFault> | undefined
  /** retrieve and results answer 404 for this long after a batch was created (propagation delay; default 0) */
  readonly notFoundAfterCreateMs?: number | undefined
  /**
   * a create is answered this long late (default 0); its batch exists (is listed, retrievable, processed) from the
   * moment the request arrived, so a client that dies meanwhile leaves a batch it never heard of
   */
  readonly createLatencyMs?: number | undefined
  /** the list shows a batch only this long after it was created (list lag; default 0) */
  readonly listLagMs?: number | undefined
  /** shuffle the order of result lines, seeded by the batch id (default true) */
  readonly shuffle?: boolean | undefined
  /** requests per batch (default 100,000; over it: 400) */
  readonly maxRequestsPerBatch?: number | undefined
  /** create body size limit (default 256,000,000 bytes; over it: 413 `request_too_large`) */
  readonly maxBodyBytes?: number | undefined
  /**
   * Append JSON lines to this file, times as wall-clock epoch milliseconds:
   * `{ id, endedAtMs, status, requests, createdAtMs, inputBytes, outputBytes }`
   * when a batch ends (its results file written; bytes of the requests as
   * received, one line each, and of the results file), and `{ id, seenAtMs }`
   * when a client first reads it as ended. For benchmarks (`bench/run.ts`);
   * absent: no log.
   */
  readonly finishedLog?: string | undefined
}

/**
 * Counters since the folder was created (they survive restarts and deletes).
 *
 * @since 0.1.0
 * @category models
 */
export interface Stats {
  readonly batchesCreated: number
  /** requests answered (succeeded or errored) by batches that ended */
  readonly linesProcessed: number
}

/**
 * How the emulator was used, for tests: creates received, in flight and
 * answered; per batch its creation, its answer, its custom ids and its results
 * downloads; requests sent again although their earlier send had not failed.
 * Also served (without an API key) at {@link COUNTERS_PATH}, `?ids=1` adding
 * the custom ids.
 *
 * @since 0.1.0
 * @category models
 */
export type Counters = CountersModule.Counters

/**
 * The path of the counters on the emulator's host (not part of the API).
 *
 * @since 0.1.0
 * @category constants
 */
export const COUNTERS_PATH: string = Routes.COUNTERS_PATH

/**
 * A running emulator.
 *
 * @since 0.1.0
 * @category models
 */
export interface Handle {
  /** the base URL to give the SDK (its paths start with `/v1`), e.g. `http://127.0.0.1:41234` */
  readonly url: string
  /** the folder holding its state */
  readonly dir: string
  readonly stats: Effect.Effect<Stats>
  /** the counters (`ids`: with every batch's custom ids) */
  readonly counters: (options?: { readonly ids?: boolean | undefined }) => Effect.Effect<Counters>
}

// ===== Errors =====

/**
 * The emulator could not start (folder not usable, port taken, …).
 *
 * @since 0.1.0
 * @category errors
 */
export class EmulatorError extends Schema.TaggedError<EmulatorError>()("EmulatorError", {
  message: Schema.String
}) {}

// ===== Constructors =====

const knobsOf = (options: Options): Store.Knobs => ({
  seed: options.seed ?? 0,
  linesPerSecond: options.linesPerSecond !== undefined && options.linesPerSecond > 0 ? options.linesPerSecond : 20_000,
  cancellingMs: Math.max(0, options.cancellingMs ?? 20),
  completionWindowMs: options.completionWindowMs ?? 24 * 60 * 60 * 1000,
  lineFailures: (options.lineFailures ?? []).map((f) => ({ type: f.type, rate: f.rate })),
  shuffle: options.shuffle ?? true,
  notFoundAfterCreateMs: Math.max(0, options.notFoundAfterCreateMs ?? 0)
})

const message = (cause: unknown) => (cause instanceof Error ? cause.message : String(cause))

/**
 * Starts the emulator on `host:port` (default `127.0.0.1`, an ephemeral
 * port). It stops when the scope closes.
 *
 * @since 0.1.0
 * @category constructors
 */
export const serve = (
  options: Options & { readonly port?: number | undefined; readonly host?: string | undefined } = {}
): Effect.Effect<Handle, EmulatorError, Scope.Scope> =>
  Effect.gen(function*() {
    const dir = yield* Server.stateFolder(options.dir, "offpeak-anthropic-emulator").pipe(
      Effect.mapError((message) => new EmulatorError({ message }))
    )
    const opened = yield* Effect.try({
      try: () => Store.open(dir),
      catch: (cause) => new EmulatorError({ message: `cannot open the emulator folder ${dir}: ${message(cause)}` })
    })
    const store: Store.Store = {
      ...opened,
      putBatch: FinishedLog.putBatch(opened, options.finishedLog, (rec) => ({
        status: "ended",
        requests: rec.total,
        createdAtMs: rec.created_ms,
        inputBytes: FinishedLog.fileSize(opened.requestsPath(rec.id)),
        outputBytes: FinishedLog.fileSize(opened.resultsPath(rec.id))
      }))
    }
    const made = yield* Runtime.make({
      store,
      knobs: knobsOf(options),
      maxRequestsPerBatch: options.maxRequestsPerBatch ?? 100_000,
      maxBodyBytes: options.maxBodyBytes ?? 256_000_000,
      createLatencyMs: options.createLatencyMs,
      listLagMs: options.listLagMs,
      endpointFaults: options.endpointFaults ?? []
    })
    const runtime: Runtime.Runtime = {
      ...made,
      read: FinishedLog.read(made, options.finishedLog, (rec) => rec !== undefined && rec.final !== null)
    }
    const origin = yield* Server.listen(HttpRouter.serve(Routes.layer(runtime), { disableLogger: true, disableListenLog: true }), options).pipe(
      Effect.mapError((message) => new EmulatorError({ message }))
    )
    const url = origin
    const stats = Effect.sync((): Stats => {
      let linesProcessed = 0
      for (const batch of store.batches.values()) {
        if (batch.final !== null) linesProcessed += batch.final.counts.succeeded + batch.final.counts.errored
      }
      return { batchesCreated: store.batches.size, linesProcessed }
    })
    const counters = (o?: { readonly ids?: boolean | undefined }) =>
      Effect.sync(() => CountersModule.counters(store, made.creates, o?.ids === true))
    return { url, dir, stats, counters }
  })
