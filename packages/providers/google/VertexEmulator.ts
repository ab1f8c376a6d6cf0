/**
 * A local emulator of Vertex AI batch prediction (`batchPredictionJobs`),
 * faithful enough that the official `@google/genai` in Vertex mode drives
 * whole jobs against it, reading its input from and writing its output to
 * the local BigQuery and Cloud Storage emulators
 * (`@offpeak/io/bigquery`, `@offpeak/io/gcs`) through the official
 * `@google-cloud/bigquery` and `@google-cloud/storage` clients.
 *
 * **What it serves** (under `/v1beta1`, what the SDK sends, and `/v1`; with or
 * without `projects/{p}/locations/{l}/`)
 *
 * - `batchPredictionJobs` create, get, list (`filter` on `display_name`,
 *   `labels.<key>` and `state`, `pageSize`, `pageToken`; newest first),
 *   `:cancel`, delete (of an ended job). Job ids are numbers, as Vertex's.
 * - The lifecycle `JOB_STATE_QUEUED` (only with `maxRunningJobs`, while no
 *   slot is free) → `JOB_STATE_PENDING` → `JOB_STATE_RUNNING` →
 *   `JOB_STATE_SUCCEEDED`, or `_FAILED` (with `error`), `_CANCELLING` →
 *   `_CANCELLED` (error code 1; rows written before are kept), `_EXPIRED`
 *   (past `completionWindowMs`, rows written before are kept).
 *   `completionStats` (`successfulCount`, `failedCount`, `incompleteCount`,
 *   int64 strings) grow as chunks are written.
 * - Input: a BigQuery table (`bq://p.d.t`) with a `request` column of
 *   `GenerateContentRequest` JSON (Gemini models) or a `content` column (text
 *   embedding models), other scalar columns passed through; or one Cloud
 *   Storage JSONL object (`{"request": …}` lines, `{"content": …}` for text
 *   embedding, `{"key", "request": {content, embed_content_config}}` for
 *   Gemini embedding models), other top-level fields echoed.
 * - Output: a BigQuery table — `bq://p.d` gets a new `predictions_<time>`
 *   table, `bq://p.d.t` must not exist yet (the job fails otherwise), `bq://p`
 *   a new dataset — with the passed-through columns, `request` and
 *   `response` (JSON) or `predictions` (JSON text, STRING), `status` (empty, or the error as
 *   JSON text) and `processed_time`; or Cloud Storage objects
 *   `predictions_<n>.jsonl` under `<prefix>/prediction-model-<time>/`, the
 *   directory named in `outputInfo.gcsOutputDirectory` (never the prefix
 *   itself). Lines are `{"status", "processed_time", "request", "response"}`.
 *   Output rows are shuffled within each chunk (`shuffle`).
 * - Synchronous `publishers/google/models/*:generateContent`,
 *   `:embedContent` (Gemini embedding) and `:predict` (text embedding).
 * - No authentication is checked (the SDK with `PassThroughClient` sends none).
 *
 * **Faults** (see {@link Options}): failed rows in `status` (`rowFailures`),
 * answers that do not decode (`malformedAnswers`), whole-job failure
 * (`failJobs`), slow progression (`rowsPerSecond`, `pendingMs`), a queue
 * (`maxRunningJobs`), expiry, HTTP errors on any endpoint, creates that go
 * through and answer 500 (`createSucceedsThenFails`) or answer late
 * (`createLatency`).
 *
 * **State** is on disk (`dir`): a job record per job, written after each
 * chunk; a new `serve` on the folder carries every unfinished job on from its
 * last written chunk (chunk writes are idempotent: a BigQuery load job per
 * chunk with an id of its own, an object per chunk).
 *
 * @example
 * ```ts
 * import { VertexEmulator } from "@offpeak/providers/vertex"
 * import { GoogleGenAI } from "@google/genai"
 * import { PassThroughClient } from "google-auth-library"
 *
 * const program = Effect.gen(function*() {
 *   const vertex = yield* VertexEmulator.serve({ bigqueryUrl: bq.url, storageUrl: gcs.url })
 *   const ai = new GoogleGenAI({
 *     vertexai: true, project: "p", location: "us-central1",
 *     httpOptions: { baseUrl: vertex.url }, googleAuthOptions: { authClient: new PassThroughClient() }
 *   })
 *   // ai.batches.create({ model: "gemini-2.5-flash", src: "bq://p.ds.in", config: { dest: "bq://p.ds" } }) …
 * }).pipe(Effect.scoped)
 * ```
 *
 * @since 0.1.0
 */
import { Server } from "../local/Kit.ts"
import { BigQuery } from "@google-cloud/bigquery"
import { Storage } from "@google-cloud/storage"
import { Effect, Schema, Scope } from "effect"
import { HttpRouter } from "effect/http"
import { PassThroughClient } from "google-auth-library"
import * as Routes from "./internal/vertexEmulatorRoutes.ts"
import * as Store from "./internal/vertexEmulatorStore.ts"

// ===== Models =====

/**
 * An endpoint a fault can target (`models.embedContent` also covers `:predict`).
 *
 * @since 0.1.0
 * @category models
 */
export type EndpointName = Routes.EndpointName

/**
 * The emulator's knobs: plain JSON, so the CLI can pass them as
 * `--knobs '{…}'` or `OFFPEAK_EMULATOR_KNOBS`. Per-job knobs apply to jobs
 * created while they are set (restarts included); server-wide faults count
 * calls from when `serve` started. Every injected fault is deterministic
 * given `seed`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** persist all state here; absent: a fresh temp folder, removed when the scope closes */
  readonly dir?: string | undefined
  /** the BigQuery emulator's (or any BigQuery endpoint's) origin: jobs over `bq://` read and write there */
  readonly bigqueryUrl?: string | undefined
  /** the Cloud Storage emulator's origin: jobs over `gs://` read and write there */
  readonly storageUrl?: string | undefined
  /** seeds the injected failures (default 0) */
  readonly seed?: number | undefined
  /** time in `JOB_STATE_PENDING` (default 20 ms) */
  readonly pendingMs?: number | undefined
  /** rows answered per second while running (default 100,000: as fast as the emulators go) */
  readonly rowsPerSecond?: number | undefined
  /** rows read, answered and written at a time (default 10,000) */
  readonly chunkRows?: number | undefined
  /** time between a cancel and `JOB_STATE_CANCELLED` (default 20 ms) */
  readonly cancellingMs?: number | undefined
  /** a job not done this long after creation ends `JOB_STATE_EXPIRED` (default 24 h) */
  readonly completionWindowMs?: number | undefined
  /**
   * per-row injected failures, e.g. `[{ code: "RESOURCE_EXHAUSTED", rate: 0.02 }]` (`google.rpc.Code` names): the
   * row's `status` holds the error and it has no response
   */
  readonly rowFailures?: ReadonlyArray<{ readonly code: string; readonly rate: number }> | undefined
  /** the share of chat answers that do not decode: cut at the token limit (`MAX_TOKENS`), prose, or JSON of another shape (default 0) */
  readonly malformedAnswers?: number | undefined
  /** shuffle each chunk's output rows, seeded by the job (default true) */
  readonly shuffle?: boolean | undefined
  /** at most this many jobs run at once; the others wait in `JOB_STATE_QUEUED` (default: no limit) */
  readonly maxRunningJobs?: number | undefined
  /**
   * HTTP errors on chosen endpoints (`"*"` or absent: any), e.g.
   * `[{ endpoint: "batchPredictionJobs.get", status: 503, times: 2 }]`: the first `times` calls that reach the rule
   * fail, then each with probability `rate` (neither: every call). A 429 carries a RetryInfo `retryDelay`.
   */
  readonly endpointFaults?: ReadonlyArray<Routes.EndpointFault> | undefined
  /** the first N creates make the job and then answer 500 anyway (a client must find it, not create it again) */
  readonly createSucceedsThenFails?: number | undefined
  /** creates make the job, then wait `ms` before answering: the first `times`, or every one */
  readonly createLatency?: { readonly ms: number; readonly times?: number | undefined } | undefined
  /** whole-job failures: the first `times` jobs created, then each with probability `rate`; `code` a `google.rpc.Code` name (default `INTERNAL`) */
  readonly failJobs?: Routes.FailJobs | undefined
}

/**
 * Counters since `serve` started (jobs: since the folder was created).
 *
 * @since 0.1.0
 * @category models
 */
export interface Stats {
  readonly jobsCreated: number
  /** rows answered (succeeded or failed) since `serve` started */
  readonly rowsProcessed: number
  /** requests received per endpoint */
  readonly requests: Readonly<Record<string, number>>
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
 * The emulator could not start (folder not usable, port taken, bad knobs).
 *
 * @since 0.1.0
 * @category errors
 */
export class EmulatorError extends Schema.TaggedError<EmulatorError>()("EmulatorError", {
  message: Schema.String
}) {}

// ===== Constructors =====

const message = (cause: unknown) => (cause instanceof Error ? cause.message : String(cause))

/**
 * Starts the emulator on `host:port` (default `127.0.0.1`, an ephemeral
 * port). It stops when the scope closes; unfinished jobs carry on at the next
 * `serve` on the same `dir`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const serve = (
  options: Options & { readonly port?: number | undefined; readonly host?: string | undefined } = {}
): Effect.Effect<Handle, EmulatorError, Scope.Scope> =>
  Effect.gen(function*() {
    const seed = options.seed ?? 0
    const faults: Routes.FaultKnobs = {
      seed,
      endpointFaults: options.endpointFaults ?? [],
      createSucceedsThenFails: Math.max(0, options.createSucceedsThenFails ?? 0),
      createLatency: options.createLatency ?? null,
      failJobs: options.failJobs ?? null
    }
    const wrong = Routes.check(faults) ??
      (options.rowFailures ?? []).map((f, i) => (typeof f.rate !== "number" || f.rate < 0 || f.rate > 1 ? `rowFailures[${i}].rate must be within 0 and 1` : undefined)).find((m) => m !== undefined)
    if (wrong !== undefined) return yield* new EmulatorError({ message: `bad emulator knobs: ${wrong}` })
    const dir = yield* Server.stateFolder(options.dir, "offpeak-vertex-emulator").pipe(Effect.mapError((message) => new EmulatorError({ message })))
    const store = yield* Effect.try({
      try: () => Store.open(dir),
      catch: (cause) => new EmulatorError({ message: `cannot open the emulator folder ${dir}: ${message(cause)}` })
    })
    const knobs: Store.Knobs = {
      seed,
      pendingMs: Math.max(0, options.pendingMs ?? 20),
      rowsPerSecond: options.rowsPerSecond !== undefined && options.rowsPerSecond > 0 ? options.rowsPerSecond : 100_000,
      chunkRows: Math.max(1, Math.floor(options.chunkRows ?? 10_000)),
      cancellingMs: Math.max(0, options.cancellingMs ?? 20),
      completionWindowMs: options.completionWindowMs ?? 24 * 60 * 60 * 1000,
      rowFailures: (options.rowFailures ?? []).map((f) => ({ code: f.code, rate: f.rate })),
      malformedAnswers: Math.min(1, Math.max(0, options.malformedAnswers ?? 0)),
      shuffle: options.shuffle ?? true
    }
    const clients = new Map<string, BigQuery>()
    const bigqueryUrl = options.bigqueryUrl
    let rowsProcessed = 0
    const runtime = yield* Routes.make({
      store,
      knobs,
      faults,
      context: {
        bigquery: bigqueryUrl === undefined ? undefined : (project) => {
          let client = clients.get(project)
          if (client === undefined) {
            client = new BigQuery({ projectId: project, apiEndpoint: bigqueryUrl, authClient: new PassThroughClient() as never })
            clients.set(project, client)
          }
          return client
        },
        storage: options.storageUrl === undefined ? undefined : new Storage({ projectId: "emulator", apiEndpoint: options.storageUrl }),
        slots: options.maxRunningJobs === undefined ? undefined : { max: Math.max(1, options.maxRunningJobs), running: new Set<string>() },
        countRows: (n) => {
          rowsProcessed += n
        }
      }
    })
    const url = yield* Server.listen(HttpRouter.serve(Routes.layer(runtime), { disableLogger: true, disableListenLog: true }), options).pipe(
      Effect.mapError((message) => new EmulatorError({ message }))
    )
    const stats = Effect.sync((): Stats => ({ jobsCreated: store.jobs.size, rowsProcessed, requests: { ...runtime.requests } }))
    return { url, dir, stats }
  })
