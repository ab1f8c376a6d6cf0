/**
 * A local emulator of the Gemini API's batch mode and Files API, faithful
 * enough that the official `@google/genai` SDK drives whole batch lifecycles
 * against it: upload a JSONL file with the resumable protocol
 * (`x-goog-upload-url`, `x-goog-upload-status: final`), create a batch from
 * it or from inline requests (`models/*:batchGenerateContent`), create an
 * embedding batch (`models/*:asyncBatchEmbedContent`), poll the operation
 * through `BATCH_STATE_PENDING` → `BATCH_STATE_RUNNING` →
 * `BATCH_STATE_SUCCEEDED` (or `_FAILED`, `_EXPIRED`, `_CANCELLED`, which the
 * SDK rewrites to `JOB_STATE_*`), read the results inline
 * (`metadata.output.inlinedResponses`) or download the responses file
 * (`files/batch-<id>:download?alt=media`), list, cancel and delete batches.
 * Answers come from the deterministic local engine
 * (`@offpeak/providers/local`): schema-valid JSON for a
 * `responseJsonSchema`, hashed n-gram embeddings.
 *
 * **Details**
 *
 * - Served under `/v1beta` (the API reference) and `/v1` (what
 *   `@google/genai` 3.x sends by default). Every call needs an API key
 *   (`x-goog-api-key`, which the SDK sends, or `?key=`).
 * - The batch is an `Operation` (`{name: "batches/…", metadata, done,
 *   error}`); `metadata.batchStats` counts are int64 strings, left out when 0
 *   (proto3 JSON); a cancelled batch ends `done` with `error.code = 1`.
 * - Results are keyed: inline responses carry the request's `metadata`
 *   (`{"key": …}`), lines of the responses file its `key`. They come back in
 *   shuffled order (`shuffle`, default true), although Google documents input
 *   order: a client must join on the key.
 * - State is derived lazily from timestamps on every read (no timers); when
 *   a batch first ends its results are written, in slices that yield to the
 *   event loop. Everything is persisted in `dir`: a new `serve({ dir })` after
 *   a crash carries on.
 * - Limits: the create body (inline requests) and synchronous bodies are
 *   refused over `maxInlineBytes` (400 "Request payload size exceeds the
 *   limit"); files over `maxFileBytes` are refused at upload (400 "The file
 *   is too large").
 * - Faults on demand (see {@link Options}): per-line errors
 *   (`lineFailures`, as `google.rpc.Status` with gRPC codes), whole-batch
 *   failures (`failBatches`), expiry with partial results
 *   (`completionWindowMs`), HTTP errors on any endpoint (`endpointFaults`;
 *   a 429 carries a RetryInfo `retryDelay`), slow progression
 *   (`linesPerSecond`, `pendingMs`), creates that go through but answer 500
 *   (`createSucceedsThenFails`) or answer late (`createLatency`), 404 right
 *   after a create (`notFoundAfterCreateMs`).
 * - Also serves the synchronous `models/*:generateContent`,
 *   `models/*:embedContent` and `models/*:batchEmbedContents`.
 *
 * @example
 * ```ts
 * import { GeminiEmulator } from "@offpeak/providers/google"
 * import { GoogleGenAI } from "@google/genai"
 *
 * const program = Effect.gen(function*() {
 *   const emulator = yield* GeminiEmulator.serve({ linesPerSecond: 1_000 })
 *   const ai = new GoogleGenAI({ apiKey: "test", httpOptions: { baseUrl: emulator.url } })
 *   // ai.files.upload(...), ai.batches.create(...), ai.batches.get(...), ...
 * }).pipe(Effect.scoped)
 * ```
 *
 * @since 0.1.0
 */
import { FinishedLog, Server } from "../local/Kit.ts"
import { Effect, Schema, Scope } from "effect"
import { HttpRouter } from "effect/http"
import * as Routes from "./internal/geminiEmulatorRoutes.ts"
import * as Runtime from "./internal/geminiEmulatorRuntime.ts"
import * as Store from "./internal/geminiEmulatorStore.ts"

// ===== Models =====

/**
 * An endpoint a fault can target, named after the `@google/genai` method that
 * calls it (`ai.batches.get` → `"batches.get"`; `"models.embedContent"` also
 * covers `:batchEmbedContents`).
 *
 * @since 0.1.0
 * @category models
 */
export type EndpointName = Runtime.EndpointName

/**
 * The emulator's knobs: plain JSON, so the CLI can pass them as
 * `--knobs '{…}'` or `OFFPEAK_EMULATOR_KNOBS`.
 *
 * - Per-batch knobs (timings, `lineFailures`, `shuffle`,
 *   `notFoundAfterCreateMs`) apply to batches created while they are set:
 *   each batch keeps the knobs it was created under, restarts included.
 * - Server-wide faults (`endpointFaults`, `createSucceedsThenFails`,
 *   `failBatches`) count calls from when `serve` started.
 * - Every injected fault is deterministic given `seed`: "the first N" counts
 *   calls in arrival order, and rates are draws from a hash of (seed, what is
 *   counted, its ordinal or key), never from `Math.random` or the clock.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** persist all state here; absent: a fresh temp folder, removed when the scope closes */
  readonly dir?: string | undefined
  /** seeds the injected failures (default 0) */
  readonly seed?: number | undefined
  /** time in `BATCH_STATE_PENDING` (default 20 ms); an input file is validated then */
  readonly pendingMs?: number | undefined
  /** processing speed while running (default 20,000 requests per second) */
  readonly linesPerSecond?: number | undefined
  /** time between a cancel and `BATCH_STATE_CANCELLED` (default 20 ms) */
  readonly cancellingMs?: number | undefined
  /**
   * a batch not done this long after creation ends `BATCH_STATE_EXPIRED`, with the results of the requests done by
   * then (default 48 h: third-party sources, not verified against an official page)
   */
  readonly completionWindowMs?: number | undefined
  /**
   * per-request injected errors, e.g. `[{ code: "RESOURCE_EXHAUSTED", rate: 0.02 }, { code: "INVALID_ARGUMENT", rate: 0.01 }]`
   * (`google.rpc.Code` names); drawn from a hash of (seed, batch id, key), so a request retried in another batch draws afresh
   */
  readonly lineFailures?: ReadonlyArray<{ readonly code: string; readonly rate: number }> | undefined
  /** shuffle the order of results, seeded by the batch id (default true) */
  readonly shuffle?: boolean | undefined
  /** the largest create body (inline requests) and synchronous body (default 20 MiB; over it: 400) */
  readonly maxInlineBytes?: number | undefined
  /** the largest file the Files API takes (default 2 GB, unverified; over it: 400 at upload) */
  readonly maxFileBytes?: number | undefined
  /** `GET batches/{id}` answers 404 for this long after the batch's creation (propagation delay); list sees it */
  readonly notFoundAfterCreateMs?: number | undefined
  /**
   * HTTP errors on chosen endpoints (`"*"` or absent: any), e.g.
   * `[{ endpoint: "batches.get", status: 429, times: 2, retryAfter: 1 }, { status: 503, rate: 0.05 }]`.
   * A 429 carries a `google.rpc.RetryInfo` detail with `retryDelay: "<retryAfter>s"` (default 1), and a
   * `retry-after` header too with `retryAfterHeader: true`. `times`: the first N calls that reach the rule
   * fail; `rate`: (after them) each call fails with this probability; neither: every call fails. Rules are
   * tried in order; the first that fires answers, before anything happens (a refused create creates nothing).
   */
  readonly endpointFaults?: ReadonlyArray<Runtime.EndpointFault> | undefined
  /** the first N creates make the batch and then answer 500 anyway (a client must find it, not create it again) */
  readonly createSucceedsThenFails?: number | undefined
  /** creates make the batch, then wait `ms` before answering (a create answered late): the first `times`, or every one */
  readonly createLatency?: { readonly ms: number; readonly times?: number | undefined } | undefined
  /**
   * whole-batch failures: the chosen batches end `BATCH_STATE_FAILED` with `error: {code, message}` when
   * their pending time ends. `times`: the first N batches created; `rate`: (after them) each with this
   * probability; neither: every batch. `code` is a `google.rpc.Code` name (default `INTERNAL`).
   */
  readonly failBatches?: Runtime.FailBatches | undefined
  /**
   * Append JSON lines to this file, times as wall-clock epoch milliseconds:
   * `{ id, endedAtMs, status, requests, createdAtMs, inputBytes, outputBytes }` when a batch ends (its results
   * written), and `{ id, seenAtMs }` when a client first reads it as ended. For benchmarks; absent: no log.
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
  /** batches created from inline requests */
  readonly inlineBatches: number
  readonly filesUploaded: number
  /** requests answered (succeeded or failed) by batches that ended */
  readonly linesProcessed: number
}

/**
 * A running emulator.
 *
 * @since 0.1.0
 * @category models
 */
export interface Handle {
  /** the base URL to give the SDK (`httpOptions.baseUrl`), e.g. `http://127.0.0.1:41234` */
  readonly url: string
  /** the folder holding its state */
  readonly dir: string
  readonly stats: Effect.Effect<Stats>
}

// ===== Errors =====

/**
 * The emulator could not start (folder not usable, port taken, bad knobs, …).
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
  pendingMs: Math.max(0, options.pendingMs ?? 20),
  linesPerSecond: options.linesPerSecond !== undefined && options.linesPerSecond > 0 ? options.linesPerSecond : 20_000,
  cancellingMs: Math.max(0, options.cancellingMs ?? 20),
  completionWindowMs: options.completionWindowMs ?? 48 * 60 * 60 * 1000,
  lineFailures: (options.lineFailures ?? []).map((f) => ({ code: f.code, rate: f.rate })),
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
    const faults: Runtime.FaultKnobs = {
      seed: options.seed ?? 0,
      endpointFaults: options.endpointFaults ?? [],
      createSucceedsThenFails: Math.max(0, options.createSucceedsThenFails ?? 0),
      createLatency: options.createLatency ?? null,
      failBatches: options.failBatches ?? null
    }
    const wrong = Runtime.check(faults)
    if (wrong !== undefined) return yield* new EmulatorError({ message: `bad emulator knobs: ${wrong}` })
    const dir = yield* Server.stateFolder(options.dir, "offpeak-gemini-emulator").pipe(
      Effect.mapError((message) => new EmulatorError({ message }))
    )
    const opened = yield* Effect.try({
      try: () => Store.open(dir),
      catch: (cause) => new EmulatorError({ message: `cannot open the emulator folder ${dir}: ${message(cause)}` })
    })
    const inputBytes = (rec: Store.BatchRecord) =>
      rec.inputFile !== null
        ? opened.files.get(rec.inputFile.slice("files/".length))?.bytes ?? 0
        : FinishedLog.fileSize(opened.requestsPath(rec.id))
    const outputBytes = (rec: Store.BatchRecord) =>
      rec.final?.output === "inline"
        ? FinishedLog.fileSize(opened.resultsPath(rec.id))
        : rec.final?.output != null
        ? opened.files.get(rec.final.output.slice("files/".length))?.bytes ?? 0
        : 0
    const store: Store.Store = {
      ...opened,
      putBatch: FinishedLog.putBatch(opened, options.finishedLog, (rec) => ({
        status: rec.final?.state ?? "unknown",
        requests: rec.final?.total ?? 0,
        createdAtMs: rec.created_ms,
        inputBytes: inputBytes(rec),
        outputBytes: outputBytes(rec)
      }))
    }
    const made = yield* Runtime.make({
      store,
      knobs: knobsOf(options),
      maxInlineBytes: options.maxInlineBytes ?? 20 * 1024 * 1024,
      maxFileBytes: options.maxFileBytes ?? 2_000_000_000,
      faults
    })
    const runtime: Runtime.Runtime = {
      ...made,
      read: FinishedLog.read(made, options.finishedLog, (rec) => rec !== undefined && rec.final !== null)
    }
    const url = yield* Server.listen(HttpRouter.serve(Routes.layer(runtime), { disableLogger: true, disableListenLog: true }), options).pipe(
      Effect.mapError((message) => new EmulatorError({ message }))
    )
    const stats = Effect.sync((): Stats => {
      let linesProcessed = 0
      let inlineBatches = 0
      for (const batch of store.batches.values()) {
        if (batch.final !== null) linesProcessed += batch.final.succeeded + batch.final.failed
        if (batch.inputFile === null) inlineBatches++
      }
      return { batchesCreated: store.batches.size, inlineBatches, filesUploaded: store.filesUploaded(), linesProcessed }
    })
    return { url, dir, stats }
  })
