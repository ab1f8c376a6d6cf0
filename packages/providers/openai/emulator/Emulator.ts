/**
 * A local emulator of OpenAI's Files + Batch API, faithful enough that the
 * official `openai` SDK drives a whole batch lifecycle against it: upload a
 * JSONL file, create a batch, poll it through `validating` → `in_progress` →
 * `finalizing` → `completed` (or `failed`, `expired`, `cancelling` →
 * `cancelled`), download the output and error files. Answers come from the
 * deterministic local engine (`@offpeak/providers/local`).
 *
 * **Details**
 *
 * - State is derived lazily from timestamps on every read (no timers); when a
 *   batch first reaches a terminal state its output and error files are
 *   written, in slices that yield to the event loop.
 * - Everything is persisted in `dir` (files as bytes, batches as JSON): a new
 *   `serve({ dir })` after a crash carries on as if nothing had happened.
 * - Faults of the real service on demand (see {@link Options}): per-line HTTP
 *   errors (`lineFailures`) and non-HTTP errors (`lineErrors`), lost lines
 *   (`dropLines`), validation failures, whole-batch failures (`failBatches`,
 *   `enqueuedTokenLimit`), expiry with partial output, slow progression,
 *   shuffled output order, HTTP 429/5xx on any endpoint (`endpointFaults`),
 *   creates that go through but answer 500 (`createSucceedsThenFails`),
 *   downloads cut mid-body (`resetDownloads`), 404 right after a create
 *   (`notFoundAfterCreateMs`), `error_file_id: ""` (`emptyErrorFileId`),
 *   creates answered late while their batch already exists (`createLatencyMs`),
 *   uploads read at a link's rate (`uploadBytesPerSecond`).
 * - Also serves the synchronous `POST /v1/chat/completions` and
 *   `POST /v1/embeddings`.
 *
 * @example
 * ```ts
 * import { Emulator } from "@offpeak/providers/openai"
 * import OpenAI from "openai"
 *
 * const program = Effect.gen(function*() {
 *   const emulator = yield* Emulator.serve({ linesPerSecond: 1_000 })
 *   const client = new OpenAI({ apiKey: "test", baseURL: emulator.url })
 *   // client.files.create(...), client.batches.create(...), ...
 * }).pipe(Effect.scoped)
 * ```
 *
 * @since 0.1.0
 */
import { FinishedLog, Server } from "../../local/Kit.ts"
import { Effect, Schema, Scope } from "effect"
import { HttpRouter } from "effect/http"
import * as Faults from "./faults.ts"
import * as Routes from "./routes.ts"
import * as Runtime from "./runtime.ts"
import * as Store from "./store.ts"

// ===== Models =====

/**
 * An endpoint of the Files and Batch APIs, or of the synchronous chat and
 * embeddings APIs, named after its SDK method (`client.files.create` →
 * `"files.create"`, `client.chat.completions.create` → `"chat.completions.create"`).
 *
 * @since 0.1.0
 * @category models
 */
export type EndpointName = Faults.EndpointName

/**
 * The emulator's knobs: plain JSON, so the CLI can pass them as
 * `--knobs '{…}'` or `OFFPEAK_EMULATOR_KNOBS`.
 *
 * - Per-batch knobs (timings, `lineFailures`, `lineErrors`, `dropLines`,
 *   `emptyErrorFileId`, `notFoundAfterCreateMs`, `enqueuedTokenLimit`, …)
 *   apply to batches created while they are set: each batch keeps the knobs it
 *   was created under, restarts included.
 * - Server-wide faults (`endpointFaults`, `createSucceedsThenFails`,
 *   `resetDownloads`, `failBatches`) count calls from when `serve` started: a
 *   restarted emulator counts afresh.
 * - Every injected fault is deterministic given `seed`: "the first N" counts
 *   calls in arrival order, and rates are draws from a hash of (seed, what is
 *   counted, its ordinal or id), never from `Math.random` or the clock.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** persist all state here (files and batches); absent: a fresh temp folder, removed when the scope closes */
  readonly dir?: string | undefined
  /** seeds the injected failures (default 0) */
  readonly seed?: number | undefined
  /** time spent in `validating` (default 20 ms) */
  readonly validationMs?: number | undefined
  /** processing speed in `in_progress` (default 20,000 lines per second) */
  readonly linesPerSecond?: number | undefined
  /** time in `finalizing` (default 20 ms) */
  readonly finalizingMs?: number | undefined
  /** time in `cancelling` (default 20 ms) */
  readonly cancellingMs?: number | undefined
  /** a batch not done this long after creation expires with partial output (default 24 h) */
  readonly completionWindowMs?: number | undefined
  /**
   * per-line injected HTTP errors, e.g. `[{ status: 500, rate: 0.02 }, { status: 400, rate: 0.01 }]`;
   * drawn from a hash of (seed, batch id, custom_id), so a line retried in another batch draws afresh
   */
  readonly lineFailures?: ReadonlyArray<{ readonly status: number; readonly rate: number }> | undefined
  /** shuffle the order of output and error lines, seeded by the batch id (default true) */
  readonly shuffle?: boolean | undefined
  /** requests per batch (default 50,000) */
  readonly maxLinesPerBatch?: number | undefined
  /** upload size limit (default 200 MB; over it: 400 "File is too large.") */
  readonly maxFileBytes?: number | undefined

  /**
   * HTTP errors on chosen endpoints (`"*"`: any of them), e.g.
   * `[{ endpoint: "batches.retrieve", status: 429, times: 2 }, { endpoint: "*", status: 503, rate: 0.05 }]`.
   *
   * - `status`: any HTTP error (the real world sends 429, 500, 502, 503), with
   *   a body in the API's error shape, so the SDK raises `RateLimitError`
   *   (429) or `InternalServerError` (5xx). A 429 carries
   *   `retry-after: <retryAfter>` (seconds, default 0).
   * - `times`: the first N calls that reach this rule fail; `rate`: (after
   *   them) each call fails with this probability; neither: every call fails.
   * - Rules are tried in order and the first that fires answers; a call is
   *   counted by each rule tried. The fault answers after the API key check
   *   and before anything happens: a refused `files.create` stores no file, a
   *   refused `batches.create` creates no batch, a refused `batches.cancel`
   *   cancels nothing.
   */
  readonly endpointFaults?:
    | ReadonlyArray<{
      readonly endpoint: EndpointName | "*"
      readonly status: number
      readonly times?: number | undefined
      readonly rate?: number | undefined
      readonly retryAfter?: number | undefined
    }>
    | undefined
  /**
   * The first N successful `POST /v1/batches` create the batch and then
   * answer 500 anyway (the "did my create go through?" case: a client must
   * find the batch, e.g. by its metadata, rather than create it again).
   */
  readonly createSucceedsThenFails?: number | undefined
  /**
   * Every `POST /v1/batches` is answered this long late (default 0). The
   * batch exists from the moment the request arrived (listed, retrievable,
   * validated and processed as any other), so a client that dies while it
   * waits leaves a batch it never heard of: it must find it by its metadata
   * rather than create it again. The answer shows the batch as it is when
   * the answer leaves.
   */
  readonly createLatencyMs?: number | undefined
  /**
   * How fast each upload (`POST /v1/files`) is read, in bytes per second: a
   * link to the provider, per connection. The body is read no faster, so the
   * client's upload takes its size over this rate. Unset: as fast as it comes.
   */
  readonly uploadBytesPerSecond?: number | undefined
  /**
   * The first `times` successful answers of `GET /v1/files/{id}/content` send
   * their headers (with the full `content-length`) and `afterBytes` bytes of
   * the body (at most all but the last byte), then drop the connection: the
   * client sees a network error mid-stream.
   */
  readonly resetDownloads?: { readonly times: number; readonly afterBytes: number } | undefined
  /** `GET /v1/batches/{id}` answers 404 for this long after the batch's creation (propagation delay); list and cancel see it */
  readonly notFoundAfterCreateMs?: number | undefined
  /**
   * Whole-batch failures: the chosen batches go `validating` → `failed` with
   * `errors.data = [{ code, message, param: null, line: null }]`, whatever
   * their input. `times`: the first N batches created; `rate`: (after them)
   * each batch with this probability; neither: every batch. `message`
   * defaults to the real one for `token_limit_exceeded` ("Enqueued token limit
   * reached for <model> …") and a generic one otherwise.
   */
  readonly failBatches?: {
    readonly rate?: number | undefined
    readonly times?: number | undefined
    readonly code: string
    readonly message?: string | undefined
  } | undefined
  /**
   * The organization's enqueued token limit: a batch whose estimated input
   * tokens (`Engine.countTokens` of every message content or embedding
   * input), plus those of the batches `in_progress` when its validation ends,
   * exceed it fails validation with `token_limit_exceeded` and no line, as the
   * real API does (so halves of it may get through).
   */
  readonly enqueuedTokenLimit?: number | undefined
  /**
   * Per-line non-HTTP errors, e.g. `[{ code: "request_timeout", rate: 0.02 }]`:
   * the line goes to the error file as `{"response": null, "error": {"code", "message"}}`.
   * Drawn with the same hash as `lineFailures` (after its rates), so a line
   * gets at most one of them.
   */
  readonly lineErrors?: ReadonlyArray<{ readonly code: string; readonly rate: number }> | undefined
  /**
   * The fraction of lines that end in neither the output nor the error file
   * (providers have shipped this); `request_counts` still count them as what
   * they were. Drawn from a hash of (seed, batch id, custom_id).
   */
  readonly dropLines?: number | undefined
  /** a batch that ends without an error file reports `error_file_id: ""` instead of null (seen on the live API) */
  readonly emptyErrorFileId?: boolean | undefined
  /**
   * Append JSON lines to this file, times as wall-clock epoch milliseconds:
   * `{ id, endedAtMs, status, requests, createdAtMs, inputBytes, outputBytes }`
   * when a batch reaches a terminal state (its output files written; bytes of
   * the input file and of the output and error files), and `{ id, seenAtMs }`
   * when a client first reads it as terminal. For benchmarks
   * (`bench/run.ts`); absent: no log.
   */
  readonly finishedLog?: string | undefined
}

/**
 * Counters since the folder was created (they survive restarts).
 *
 * @since 0.1.0
 * @category models
 */
export interface Stats {
  readonly batchesCreated: number
  readonly filesUploaded: number
  /** requests answered (successfully or with an HTTP error) by batches that ended */
  readonly linesProcessed: number
}

/**
 * A running emulator.
 *
 * @since 0.1.0
 * @category models
 */
export interface Handle {
  /** the base URL to give the SDK, ending in `/v1`, e.g. `http://127.0.0.1:41234/v1` */
  readonly url: string
  /** the folder holding its state */
  readonly dir: string
  readonly stats: Effect.Effect<Stats>
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
  validationMs: Math.max(0, options.validationMs ?? 20),
  linesPerSecond: options.linesPerSecond !== undefined && options.linesPerSecond > 0 ? options.linesPerSecond : 20_000,
  finalizingMs: Math.max(0, options.finalizingMs ?? 20),
  cancellingMs: Math.max(0, options.cancellingMs ?? 20),
  completionWindowMs: options.completionWindowMs ?? 24 * 60 * 60 * 1000,
  lineFailures: (options.lineFailures ?? []).map((f) => ({ status: f.status, rate: f.rate })),
  shuffle: options.shuffle ?? true,
  maxLinesPerBatch: options.maxLinesPerBatch ?? 50_000,
  notFoundAfterCreateMs: Math.max(0, options.notFoundAfterCreateMs ?? 0),
  enqueuedTokenLimit: options.enqueuedTokenLimit ?? null,
  lineErrors: (options.lineErrors ?? []).map((e) => ({ code: e.code, rate: e.rate })),
  dropLines: options.dropLines ?? 0,
  emptyErrorFileId: options.emptyErrorFileId ?? false
})

const faultKnobsOf = (options: Options): Faults.FaultKnobs => ({
  seed: options.seed ?? 0,
  endpointFaults: (options.endpointFaults ?? []).map((f) => ({
    endpoint: f.endpoint,
    status: f.status,
    times: f.times,
    rate: f.rate,
    retryAfter: f.retryAfter
  })),
  createSucceedsThenFails: Math.max(0, options.createSucceedsThenFails ?? 0),
  resetDownloads: options.resetDownloads ?? null,
  failBatches: options.failBatches ?? null
})

const TERMINAL: ReadonlySet<Store.BatchStatus> = new Set(["completed", "failed", "expired", "cancelled"])

const message = (cause: unknown) => (cause instanceof Error ? cause.message : String(cause))

/**
 * Starts the emulator on `host:port` (default `127.0.0.1`, an ephemeral
 * port), serving under `/v1`. It stops when the scope closes.
 *
 * @since 0.1.0
 * @category constructors
 */
export const serve = (
  options: Options & { readonly port?: number | undefined; readonly host?: string | undefined } = {}
): Effect.Effect<Handle, EmulatorError, Scope.Scope> =>
  Effect.gen(function*() {
    const faultKnobs = faultKnobsOf(options)
    const wrong = Faults.check(faultKnobs)
    if (wrong !== undefined) return yield* new EmulatorError({ message: `bad emulator knobs: ${wrong}` })
    const dir = yield* Server.stateFolder(options.dir, "offpeak-openai-emulator").pipe(
      Effect.mapError((message) => new EmulatorError({ message }))
    )
    const opened = yield* Effect.try({
      try: () => Store.open(dir),
      catch: (cause) => new EmulatorError({ message: `cannot open the emulator folder ${dir}: ${message(cause)}` })
    })
    const bytesOf = (id: string | null) => (id === null ? 0 : opened.files.get(id)?.bytes ?? 0)
    const store: Store.Store = {
      ...opened,
      putBatch: FinishedLog.putBatch(opened, options.finishedLog, (rec) => ({
        status: rec.final?.status ?? "unknown",
        requests: rec.final?.request_counts.total ?? 0,
        createdAtMs: rec.created_ms,
        inputBytes: bytesOf(rec.input_file_id),
        outputBytes: bytesOf(rec.final?.output_file_id ?? null) + bytesOf(rec.final?.error_file_id || null)
      }))
    }
    const made = yield* Runtime.make(
      store,
      knobsOf(options),
      options.maxFileBytes ?? 200 * 1024 * 1024,
      faultKnobs,
      Math.max(0, options.createLatencyMs ?? 0),
      Math.max(0, options.uploadBytesPerSecond ?? 0)
    )
    const runtime: Runtime.Runtime = {
      ...made,
      read: FinishedLog.read(made, options.finishedLog, (batch) => batch !== undefined && TERMINAL.has(batch.status))
    }
    const origin = yield* Server.listen(HttpRouter.serve(Routes.layer(runtime), { disableLogger: true, disableListenLog: true }), options).pipe(
      Effect.mapError((message) => new EmulatorError({ message }))
    )
    const url = `${origin}/v1`
    const stats = Effect.sync((): Stats => {
      let linesProcessed = 0
      for (const batch of store.batches.values()) if (batch.final !== null) linesProcessed += batch.processed
      return { batchesCreated: store.batches.size, filesUploaded: store.filesUploaded(), linesProcessed }
    })
    return { url, dir, stats }
  })
