/**
 * The Vertex AI batch prediction adapter, through the official
 * `@google/genai` in Vertex mode (and `@google-cloud/storage` for files). Also
 * works with the local emulator: set `baseURL` and an `authClient` that sends
 * no credentials (`new PassThroughClient()` from `google-auth-library`).
 *
 * **Two kinds of submission**
 *
 * - `Table` (pushdown, `tables: ["bigquery"]`): a job over a BigQuery table the
 *   source staged (`Source.Pushdown`): `inputConfig.bigquerySource` is the
 *   staged `input`, `outputConfig.bigqueryDestination` the `output` table
 *   (which must not exist yet). No row passes through this process: the
 *   source tallies and lands the output table itself, so {@link make}'s
 *   `results` refuses a table job (`Unsupported`).
 * - `Lines` (a JSONL batch file): the file is uploaded to Cloud Storage
 *   (`staging.bucket`, under `staging.prefix`) with `@google-cloud/storage`,
 *   the job is created over it with a JSONL destination under the same
 *   prefix, and the results are read from `outputInfo.gcsOutputDirectory`
 *   (the directory the job made, never the prefix) — every
 *   `predictions*.jsonl` object in it — and joined on the key each line
 *   carries:
 *   - Gemini chat: `{"request": GenerateContentRequest}`, the custom id in the
 *     request's `labels` (`offpeak_key`, `offpeak_key_2`), which the output
 *     line echoes with its request;
 *   - Gemini embedding (`gemini-embedding-*`): `{"key", "request": {content,
 *     embed_content_config}}`, the key echoed;
 *   - text embedding (`text-embedding-*`): the batch line is
 *     `{"key", "content"}`; the uploaded file holds `{"content"}` only (the
 *     model's instance) and the answers, which echo the instance, are joined
 *     on the content through the local batch file: within one batch (one
 *     model, one dimension count) a content is one request. The dimension
 *     count goes as the job's `modelParameters.outputDimensionality`
 *     (unverified against the API).
 *
 * **Finding a job after a crash**: every job is created with the display name
 * `offpeak <batchId>` and the labels `offpeak_batch` / `offpeak_run` (sent
 * through `httpOptions.extraBody`: the SDK's create config has no labels);
 * `find` lists jobs with the filter `display_name="…"` (newest pages first,
 * at most 50 pages of 100) and adopts the one whose display name matches.
 *
 * **Details**
 *
 * - States: `JOB_STATE_QUEUED`, `_PENDING` → validating; `_RUNNING`,
 *   `_UPDATING`, `_PAUSED` → running; `_SUCCEEDED`, `_PARTIALLY_SUCCEEDED` →
 *   completed; `_FAILED` → failed (its `error` the issue); `_CANCELLING`,
 *   `_CANCELLED`, `_EXPIRED` as named. Counts from `completionStats` (int64
 *   strings): total = successful + failed + incomplete (when known).
 * - A failed line's `status` is read for a `google.rpc.Code` (JSON, a status
 *   name or an HTTP status in the text): `RESOURCE_EXHAUSTED`, `INTERNAL`,
 *   `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `ABORTED`, `UNKNOWN` and
 *   `CANCELLED` are retryable, the rest final.
 * - The uploaded input object is deleted once the job's results were read.
 * - `sync` sends `:generateContent`, `:embedContent` or `:predict` (the SDK
 *   picks by model) under an {@link AdaptiveLimit}.
 * - Structured output, system instructions, sampling parameters and
 *   `decodeOutput` are the Gemini adapter's (`GeminiBatch`): Vertex takes the
 *   same `GenerateContentRequest`.
 *
 * **Limits** ({@link limits}): 200,000 requests and 1 GB per JSONL input file
 * are not verified against an official page and are labelled so.
 *
 * @since 0.1.0
 */
import { Files } from "../local/Kit.ts"
import type { Storage } from "@google-cloud/storage"
import { ApiError, GoogleGenAI } from "@google/genai"
import * as AdaptiveLimit from "@offpeak/core/AdaptiveLimit"
import * as Failpoint from "@offpeak/core/Failpoint"
import * as Provider from "@offpeak/core/Provider"
import * as ProviderError from "@offpeak/core/ProviderError"
import * as Telemetry from "@offpeak/core/Telemetry"
import type * as Request from "@offpeak/core/Request"
import { Config, Duration, Effect, Layer, Option, Predicate, Result, Schedule, Stream } from "effect"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as GeminiBatch from "./GeminiBatch.ts"
import * as Wire from "./internal/vertexWire.ts"

// ===== Options =====

/**
 * Options of the adapter.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** the Google Cloud project jobs run in */
  readonly project: string
  /** the region, e.g. `us-central1` (the BigQuery datasets must be in it) */
  readonly location: string
  /** another endpoint, e.g. the local emulator's URL (default: the SDK's `https://{location}-aiplatform.googleapis.com`) */
  readonly baseURL?: string | undefined
  /** the API version in every path (default the SDK's, `v1beta1`) */
  readonly apiVersion?: string | undefined
  /**
   * an auth client of `google-auth-library` used as is (`new PassThroughClient()` for the emulator); default:
   * Google's application default credentials, found by the SDK
   */
  readonly authClient?: unknown
  /** where `Lines` batches are uploaded: a bucket, a prefix in it, and the client (default: one made for `project`) */
  readonly staging?: {
    readonly bucket: string
    readonly prefix?: string | undefined
    /** a `@google-cloud/storage` client, or the endpoint to make one for (e.g. the Cloud Storage emulator's URL) */
    readonly storage?: Storage | { readonly apiEndpoint?: string | undefined } | undefined
  } | undefined
  /** first and longest pause between two status polls */
  readonly pollInterval?: { readonly initial: Duration.Input; readonly max: Duration.Input } | undefined
  /** tighter limits than the API's (see {@link limits}) */
  readonly limits?: Partial<Provider.Limits> | undefined
  /** how many more times a synchronous call answered 429 or 5xx is sent (default 3) */
  readonly maxRetries?: number | undefined
  /** synchronous calls at once (default 8): the most the adaptive limit allows */
  readonly syncConcurrency?: number | undefined
  /** the adaptive limit of synchronous calls, to share one between adapters */
  readonly syncLimit?: AdaptiveLimit.AdaptiveLimit | undefined
}

/**
 * The API's limits as far as they are known: 200,000 requests and 1 GB per
 * JSONL input (**unverified**: no official page in the reference);
 * `maxRequestBytes` 10 MB; `maxInFlight` 4 (offpeak's default).
 *
 * @since 0.1.0
 * @category constants
 */
export const limits: Provider.Limits = {
  maxRequests: 200_000,
  maxBytes: 1_000_000_000,
  maxRequestBytes: 10_000_000,
  maxInFlight: 4
}

const sha = (s: string) => crypto.createHash("sha256").update(s).digest("hex")

/**
 * The display name a job is created with (`offpeak <batchId>`, a hash past 128 characters).
 *
 * @since 0.1.0
 * @category encoding
 */
export const displayNameOf = GeminiBatch.displayNameOf

/**
 * The labels a job is created with: `offpeak_batch` and `offpeak_run`, label-safe (a hash when the id is not).
 *
 * @since 0.1.0
 * @category encoding
 */
export const jobLabels = (submission: { readonly batchId: string; readonly runId: string }): Record<string, string> => ({
  offpeak_batch: Wire.labelValue(submission.batchId, sha),
  offpeak_run: Wire.labelValue(submission.runId, sha)
})

// ===== Encoding =====

const fail = (message: string) => Result.fail(`cannot encode the request for Vertex AI: ${message}`)

/**
 * Encodes a request as a batch line (see the module documentation for the
 * line of each kind of model); `group` is `generate <model>`, `embed <model>`
 * or `embed <model> <dimensions>` (text embedding: one dimension count per job).
 *
 * @since 0.1.0
 * @category encoding
 */
export const encode = (request: Request.Request, customId: string): Result.Result<Provider.Encoded, string> => {
  const kind = Wire.modelKind(request.model)
  const model = Wire.bareModel(request.model)
  let line: string
  let group: string
  if (request._tag === "Chat") {
    if (kind !== "generate") return fail(`${request.model} is an embedding model; a chat request needs a Gemini model`)
    const labels = Wire.keyLabels(customId)
    if (labels === undefined) return fail(`the custom id ${JSON.stringify(customId)} cannot be a label value (lowercase letters, digits, _ and -)`)
    let body: ReturnType<typeof GeminiBatch.generateContentRequest>
    try {
      body = GeminiBatch.generateContentRequest(request)
    } catch (error) {
      return fail(error instanceof Error ? error.message : String(error))
    }
    const { model: _, ...rest } = body
    line = JSON.stringify({ model, request: { ...rest, labels } })
    group = `generate ${model}`
  } else {
    if (kind === "generate") return fail(`${request.model} is not an embedding model (text-embedding-*, gemini-embedding-*)`)
    if (request.input.length === 0) return fail("the input text is empty")
    if (kind === "embed-gemini") {
      line = JSON.stringify({
        model,
        key: customId,
        request: {
          content: { parts: [{ text: request.input }] },
          ...(request.dimensions !== undefined ? { embed_content_config: { output_dimensionality: request.dimensions } } : {})
        }
      })
      group = `embed ${model}`
    } else {
      line = JSON.stringify({ model, key: customId, content: request.input, ...(request.dimensions !== undefined ? { dimensions: request.dimensions } : {}) })
      group = `embed ${model}${request.dimensions !== undefined ? ` ${request.dimensions}` : ""}`
    }
  }
  return Result.succeed({ line, bytes: Provider.lineBytes(line), group })
}

/** a batch line as {@link encode} writes it */
interface Line {
  readonly model: string
  readonly key?: string | undefined
  readonly content?: string | undefined
  readonly dimensions?: number | undefined
  readonly request?: {
    readonly contents?: unknown
    readonly systemInstruction?: unknown
    readonly generationConfig?: Record<string, unknown>
    readonly labels?: Readonly<Record<string, string>>
    readonly content?: { readonly parts?: ReadonlyArray<{ readonly text?: string }> }
    readonly embed_content_config?: { readonly output_dimensionality?: number }
  } | undefined
}

/** the line a JSONL input file holds for a batch line: the model's own form (no `model`; text embedding: the instance) */
export const inputLine = (text: string): string => {
  const line = JSON.parse(text) as Line
  if (line.content !== undefined) return JSON.stringify({ content: line.content })
  if (line.key !== undefined) return JSON.stringify({ key: line.key, request: line.request })
  return JSON.stringify({ request: line.request })
}

/**
 * Decodes a structured-output answer with the request's schema (the Gemini adapter's decoding).
 *
 * @since 0.1.0
 * @category decoding
 */
export const decodeOutput = GeminiBatch.decodeOutput

// ===== Status =====

const stateOf = (state: string | undefined): Provider.State => {
  switch (state) {
    case "JOB_STATE_RUNNING":
    case "JOB_STATE_UPDATING":
    case "JOB_STATE_PAUSED":
      return "running"
    case "JOB_STATE_SUCCEEDED":
    case "JOB_STATE_PARTIALLY_SUCCEEDED":
      return "completed"
    case "JOB_STATE_FAILED":
      return "failed"
    case "JOB_STATE_CANCELLING":
      return "cancelling"
    case "JOB_STATE_CANCELLED":
      return "cancelled"
    case "JOB_STATE_EXPIRED":
      return "expired"
    default:
      // UNSPECIFIED, QUEUED, PENDING
      return "validating"
  }
}

/**
 * The provider-neutral status of a `BatchPredictionJob` (see the module documentation).
 *
 * @since 0.1.0
 * @category decoding
 */
export const toStatus = (job: Wire.JobJson): Provider.Status => {
  const state = stateOf(job.state)
  const stats = job.completionStats ?? {}
  const succeeded = Wire.int64(stats.successfulCount)
  const failed = Wire.int64(stats.failedCount)
  const incomplete = Wire.int64(stats.incompleteCount)
  const issues: Array<Provider.Issue> = []
  if (state === "failed" || (state === "expired" && job.error !== undefined)) {
    const code = typeof job.error?.code === "number" ? Wire.CODE_NAMES[job.error.code] ?? String(job.error.code) : "FAILED"
    issues.push({ code, message: job.error?.message ?? "the job failed with no message" })
  }
  return {
    state,
    providerState: job.state ?? "JOB_STATE_UNSPECIFIED",
    counts: { total: succeeded + failed + Math.max(0, incomplete), completed: succeeded, failed },
    issues
  }
}

// ===== Results =====

const lineFailure = (id: string, status: string, raw: string): Provider.LineResult => {
  const s = Wire.readStatus(status)
  return {
    _tag: "LineFailed",
    id,
    kind: s.code === 1 ? "cancelled" : "provider_error",
    retryable: s.retryable,
    message: `${Wire.CODE_NAMES[s.code] ?? "UNKNOWN"} (${s.code}): ${s.message}`,
    raw: Provider.clipRaw(raw)
  }
}

/**
 * Decodes one line of a job's JSONL output: `id` is the key it carries (the request's labels, `key`, or — text
 * embedding — `keyOf(instance content)`); undefined when it names none.
 *
 * @since 0.1.0
 * @category decoding
 */
export const decodeOutputLine = (text: string, keyOf?: (content: string) => string | undefined): Provider.LineResult | undefined => {
  if (text.trim().length === 0) return undefined
  let entry: {
    key?: unknown
    request?: { labels?: unknown }
    instance?: { content?: unknown }
    status?: unknown
    response?: unknown
    predictions?: ReadonlyArray<{ embeddings?: { values?: ReadonlyArray<number>; statistics?: { token_count?: number } } }>
  }
  try {
    entry = JSON.parse(text)
  } catch {
    return undefined
  }
  const key = typeof entry.key === "string"
    ? entry.key
    : Wire.keyOfLabels(entry.request?.labels) ??
      (typeof entry.instance?.content === "string" && keyOf !== undefined ? keyOf(entry.instance.content) : undefined)
  if (key === undefined) return undefined
  const status = typeof entry.status === "string" ? entry.status : entry.status === undefined || entry.status === null ? "" : JSON.stringify(entry.status)
  if (status.length > 0) return lineFailure(key, status, text)
  if (Array.isArray(entry.predictions)) {
    const e = entry.predictions[0]?.embeddings
    if (!Array.isArray(e?.values)) return { _tag: "LineFailed", id: key, kind: "provider_error", retryable: false, message: "no embedding values", raw: Provider.clipRaw(text) }
    return {
      _tag: "LineSucceeded",
      id: key,
      response: { _tag: "EmbeddingResponse", vector: Float32Array.from(e.values), usage: { inputTokens: e.statistics?.token_count ?? 0, outputTokens: 0 } }
    }
  }
  if (entry.response === undefined || entry.response === null) {
    return { _tag: "LineFailed", id: key, kind: "provider_error", retryable: false, message: "neither a response nor a status", raw: Provider.clipRaw(text) }
  }
  return GeminiBatch.decodeResponse(key, entry.response, text)
}

// ===== Errors =====

interface Seen {
  text: string | undefined
  headers: Headers | undefined
}

const errorBodyOf = (cause: ApiError): unknown => {
  try {
    return JSON.parse(cause.message)
  } catch {
    return undefined
  }
}

const retryDelayOf = (body: unknown): number | undefined => {
  const details = (body as { error?: { details?: unknown } } | null)?.error?.details
  if (!Array.isArray(details)) return undefined
  for (const d of details) {
    const delay = (d as { "@type"?: unknown; retryDelay?: unknown })
    if (typeof delay["@type"] === "string" && delay["@type"].endsWith("google.rpc.RetryInfo") && typeof delay.retryDelay === "string") {
      const m = /^(\d+(?:\.\d+)?)s$/.exec(delay.retryDelay)
      if (m !== null) return Math.round(Number(m[1]) * 1000)
    }
  }
  return undefined
}

const toProviderError = (operation: string, seen?: Seen) => (cause: unknown): ProviderError.ProviderError => {
  if (cause instanceof ApiError) {
    const body = errorBodyOf(cause) as { error?: { message?: unknown; status?: unknown } } | undefined
    const status = typeof body?.error?.status === "string" ? body.error.status : undefined
    const message = typeof body?.error?.message === "string" ? `${status ?? cause.status}: ${body.error.message}` : cause.message
    return new ProviderError.ProviderError({
      provider: "vertex",
      operation,
      reason: ProviderError.reasonOfStatus(cause.status, message, {
        retryAfterMs: ProviderError.retryAfterMs(seen?.headers) ?? retryDelayOf(body),
        code: status
      })
    })
  }
  const code = (cause as { code?: unknown } | null)?.code
  if (typeof code === "number" && code >= 400) {
    // a @google-cloud/storage error
    return new ProviderError.ProviderError({ provider: "vertex", operation, reason: ProviderError.reasonOfStatus(code, cause instanceof Error ? cause.message : String(cause)) })
  }
  return new ProviderError.ProviderError({ provider: "vertex", operation, reason: ProviderError.reasonOfFailure(cause) })
}

const localError = (operation: string, message: string) =>
  new ProviderError.ProviderError({ provider: "vertex", operation, reason: new ProviderError.Protocol({ message }) })

const unsupported = (operation: string, message: string) =>
  new ProviderError.ProviderError({ provider: "vertex", operation, reason: new ProviderError.Unsupported({ message }) })

// ===== Constructors =====

/** at most this many list pages are read when looking for a job */
const MAX_PAGES = 50
/** HTTP statuses a synchronous call is sent again after */
const SYNC_RETRY = new Set([408, 429, 500, 502, 503, 504])

/** a fetch reporting every answer to `limit`: a 429 halves it and pauses new calls for `retry-after` or `retryDelay` */
const limitedFetch = (limit: AdaptiveLimit.AdaptiveLimit): typeof globalThis.fetch => async (input, init) => {
  const response = await globalThis.fetch(input, init)
  if (response.status === 429) {
    let wait = AdaptiveLimit.retryAfterMs(response.headers)
    if (wait === undefined) {
      try {
        wait = retryDelayOf(JSON.parse(await response.clone().text()))
      } catch {
        wait = undefined
      }
    }
    limit.overloaded(wait)
  } else if (response.ok) limit.succeeded()
  return response
}

/** what a remote job's `meta` records */
interface Meta {
  /** `table` or `lines` */
  readonly kind: string
  /** the uploaded input (`gs://…`), for a `Lines` job */
  readonly input?: string | undefined
  /** the model's kind */
  readonly model?: string | undefined
  /** the local batch file (text embedding: the content → key join) */
  readonly path?: string | undefined
}

const metaOf = (batch: Provider.RemoteBatch): Meta => ({ kind: "table", ...batch.meta } as Meta)

/**
 * Builds the adapter.
 *
 * @example
 * ```ts
 * const provider = yield* VertexBatch.make({
 *   project: "my-project", location: "us-central1",
 *   staging: { bucket: "my-bucket", prefix: "offpeak" }
 * })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options): Effect.Effect<Provider.Service> =>
  Effect.sync(() => {
    const httpBase = {
      ...(options.baseURL !== undefined ? { baseUrl: options.baseURL.replace(/\/+$/, "") } : {}),
      ...(options.apiVersion !== undefined ? { apiVersion: options.apiVersion } : {})
    }
    const auth = options.authClient !== undefined ? { googleAuthOptions: { authClient: options.authClient as never } } : {}
    const ai = new GoogleGenAI({ vertexai: true, project: options.project, location: options.location, httpOptions: httpBase, ...auth })
    const pollSchedule = Provider.pollSchedule(options.pollInterval ?? { initial: "5 seconds", max: "1 minute" })

    let storageClient: Storage | undefined
    const storage = Effect.suspend(() => {
      if (storageClient !== undefined) return Effect.succeed(storageClient)
      const given = options.staging?.storage
      if (given !== undefined && "bucket" in given && typeof (given as Storage).bucket === "function") {
        storageClient = given as Storage
        return Effect.succeed(storageClient)
      }
      // loaded only when a Lines batch needs it: a pushdown-only process never loads the Storage client
      return Effect.tryPromise({
        try: async () => {
          const { Storage: S } = await import("@google-cloud/storage")
          const endpoint = (given as { apiEndpoint?: string } | undefined)?.apiEndpoint
          storageClient = new S({ projectId: options.project, ...(endpoint !== undefined ? { apiEndpoint: endpoint } : {}) })
          return storageClient
        },
        catch: (e) => localError("storage", `cannot load @google-cloud/storage: ${String(e)}`)
      })
    })
    const staging = options.staging
    const prefix = (staging?.prefix ?? "offpeak").replace(/^\/+|\/+$/g, "")

    /** a call through the SDK with a fetch of its own keeping the response text (with `keepText`) and an error's headers */
    const call = <A>(
      operation: string,
      keepText: boolean,
      f: (httpOptions: { readonly fetch: typeof globalThis.fetch }, signal: AbortSignal) => Promise<A>
    ) =>
      Effect.suspend(() => {
        const seen: Seen = { text: undefined, headers: undefined }
        const fetch: typeof globalThis.fetch = async (input, init) => {
          const response = await globalThis.fetch(input, init)
          if (!response.ok) seen.headers = response.headers
          else if (keepText) seen.text = await response.clone().text()
          return response
        }
        return Effect.tryPromise({ try: (signal) => f({ fetch }, signal), catch: toProviderError(operation, seen) }).pipe(
          Effect.map((value) => ({ value, text: seen.text }))
        )
      }).pipe(Telemetry.providerCall("vertex", operation))

    const jobOf = (operation: string, text: string | undefined) =>
      Effect.try({
        try: () => JSON.parse(text ?? "") as Wire.JobJson,
        catch: () => localError(operation, `the answer is not a batch prediction job: ${Provider.clipRaw(text ?? "(empty)")}`)
      })

    const getJob = (name: string) =>
      call("batches.get", true, (httpOptions, abortSignal) => ai.batches.get({ name, config: { httpOptions, abortSignal } })).pipe(
        Effect.flatMap(({ text }) => jobOf("batches.get", text))
      )

    // ----- submit and find -----

    const objectOf = (submission: Provider.Lines) =>
      `${prefix}/${Wire.labelValue(submission.runId, sha)}/${Wire.labelValue(submission.batchId, sha)}.jsonl`
    const outputPrefixOf = (submission: Provider.Lines) =>
      `gs://${staging?.bucket}/${prefix}/${Wire.labelValue(submission.runId, sha)}/${Wire.labelValue(submission.batchId, sha)}-output`

    const metaOfLines = (submission: Provider.Lines): Record<string, string> => {
      const [, model = ""] = submission.group.split(" ")
      return { kind: "lines", input: `gs://${staging?.bucket}/${objectOf(submission)}`, model: Wire.modelKind(model), path: submission.path }
    }

    /** the file to upload: each batch line in the model's own form ({@link inputLine}), in a temp file removed with the scope */
    const uploadFile = (submission: Provider.Lines) =>
      Effect.acquireRelease(
        Effect.gen(function*() {
          const temp = path.join(os.tmpdir(), `offpeak-vertex-${process.pid}-${crypto.randomBytes(6).toString("hex")}.jsonl`)
          const fd = fs.openSync(temp, "w")
          try {
            let pending: Array<string> = []
            let size = 0
            yield* Files.forEachLine(submission.path, (data, start, end) => {
              if (end === start) return
              const line = inputLine(data.toString("utf8", start, end)) + "\n"
              pending.push(line)
              size += line.length
              if (size >= 1 << 20) {
                fs.writeSync(fd, pending.join(""))
                pending = []
                size = 0
              }
            })
            if (pending.length > 0) fs.writeSync(fd, pending.join(""))
          } finally {
            fs.closeSync(fd)
          }
          return temp
        }).pipe(Effect.mapError((e) => localError("storage.upload", `cannot write the input file: ${String(e)}`))),
        (temp) => Effect.sync(() => fs.rmSync(temp, { force: true }))
      )

    const create = (
      submission: Provider.Submission,
      model: string,
      src: string,
      dest: string,
      extra: Record<string, unknown>
    ) =>
      Effect.gen(function*() {
        const displayName = displayNameOf(submission.batchId)
        const { text } = yield* call("batches.create", true, (httpOptions, abortSignal) =>
          ai.batches.create({
            model,
            src,
            config: { displayName, dest, httpOptions: { ...httpOptions, extraBody: { labels: jobLabels(submission), ...extra } }, abortSignal }
          }))
        const job = yield* jobOf("batches.create", text)
        if (typeof job.name !== "string") return yield* localError("batches.create", "the created job has no name")
        return job.name
      })

    /** a JSONL batch's lines in the model's own form, uploaded to the staging bucket: the `gs://` URI a job reads */
    const upload = (submission: Provider.Lines): Effect.Effect<string, ProviderError.ProviderError> =>
      Effect.gen(function*() {
        if (staging === undefined) {
          return yield* unsupported("submit", "a JSONL batch needs a Cloud Storage staging bucket (`staging: { bucket }`, or OFFPEAK_VERTEX_BUCKET)")
        }
        const client = yield* storage
        const object = objectOf(submission)
        yield* Effect.scoped(Effect.gen(function*() {
          const file = yield* uploadFile(submission)
          yield* Effect.tryPromise({
            try: () => client.bucket(staging.bucket).upload(file, { destination: object, contentType: "application/jsonl", resumable: submission.bytes > 8 * 1024 * 1024 }),
            catch: toProviderError("storage.upload")
          })
        }))
        yield* Failpoint.hit("batch.uploaded")
        return `gs://${staging.bucket}/${object}`
      })

    const submit = (submission: Provider.Submission): Effect.Effect<Provider.RemoteBatch, ProviderError.ProviderError> =>
      Effect.gen(function*() {
        if (submission._tag === "Table") {
          if (submission.kind !== "bigquery") {
            return yield* unsupported("submit", `Vertex AI batch prediction runs over BigQuery tables, not ${submission.kind}`)
          }
          yield* Failpoint.hit("batch.uploaded")
          const name = yield* create(submission, submission.model, submission.input, submission.output, {})
          return { id: name, meta: { kind: "table" } }
        }
        const [, model = "", dims] = submission.group.split(" ")
        const input = submission.uploaded ?? (yield* upload(submission))
        const name = yield* create(
          submission,
          model,
          input,
          outputPrefixOf(submission),
          dims !== undefined ? { modelParameters: { outputDimensionality: Number(dims) } } : {}
        )
        return { id: name, meta: metaOfLines(submission) }
      })

    const find = (submission: Provider.Submission) =>
      Effect.gen(function*() {
        const tag = displayNameOf(submission.batchId)
        const filter = `display_name=${JSON.stringify(tag)}`
        let pageToken: string | undefined = undefined
        for (let page = 0; page < MAX_PAGES; page++) {
          const token: string | undefined = pageToken
          const { text }: { readonly text: string | undefined } = yield* call("batches.list", true, (httpOptions, abortSignal) =>
            ai.batches.list({ config: { pageSize: 100, filter, ...(token !== undefined ? { pageToken: token } : {}), httpOptions, abortSignal } }))
          const list: { batchPredictionJobs?: ReadonlyArray<Wire.JobJson>; nextPageToken?: string } = yield* Effect.try({
            try: () => JSON.parse(text ?? "") as { batchPredictionJobs?: ReadonlyArray<Wire.JobJson>; nextPageToken?: string },
            catch: () => localError("batches.list", `the answer is not a list: ${Provider.clipRaw(text ?? "(empty)")}`)
          })
          for (const job of list.batchPredictionJobs ?? []) {
            if (job.displayName === tag && typeof job.name === "string") {
              return Option.some<Provider.RemoteBatch>({ id: job.name, meta: submission._tag === "Table" ? { kind: "table" } : metaOfLines(submission) })
            }
          }
          if (list.nextPageToken === undefined || list.nextPageToken === "") break
          pageToken = list.nextPageToken
        }
        return Option.none<Provider.RemoteBatch>()
      })

    // ----- status, results, cancel -----

    const status = (batch: Provider.RemoteBatch) => Effect.map(getJob(batch.id), toStatus)

    /** text embedding: content → custom id, from the local batch file */
    const contentKeys = (file: string) =>
      Effect.gen(function*() {
        const keys = new Map<string, string>()
        yield* Files.forEachLine(file, (data, start, end) => {
          if (end === start) return
          const line = JSON.parse(data.toString("utf8", start, end)) as { key: string; content: string }
          keys.set(line.content, line.key)
        })
        return keys
      }).pipe(Effect.mapError((e) => localError("results", `cannot read the batch file to join the answers on their content: ${String(e)}`)))

    const results = (batch: Provider.RemoteBatch): Stream.Stream<Provider.LineResult, ProviderError.ProviderError> => {
      const meta = metaOf(batch)
      if (meta.kind === "table") {
        return Stream.fail(unsupported("results", "a table job's answers are in its output table: the source lands them (Source.Pushdown)"))
      }
      return Stream.unwrap(Effect.gen(function*() {
        const job = yield* getJob(batch.id)
        const dir = job.outputInfo?.gcsOutputDirectory
        if (dir === undefined) return Stream.empty
        const out = Wire.parseGs(dir)
        if (typeof out === "string") return yield* localError("results", out)
        const client = yield* storage
        const [files] = yield* Effect.tryPromise({
          try: () => client.bucket(out.bucket).getFiles({ prefix: `${out.name.replace(/\/+$/, "")}/` }),
          catch: toProviderError("storage.list")
        })
        const outputs = files.map((f) => f.name).filter((n) => /\/predictions[^/]*\.jsonl$/.test(n)).sort()
        const keys = meta.model === "embed-text" && meta.path !== undefined ? yield* contentKeys(meta.path) : undefined
        const keyOf = keys === undefined ? undefined : (content: string) => keys.get(content)
        const lines = Stream.fromIterable(outputs).pipe(
          // a Node stream as an async iterable passes a broken download (or a checksum mismatch) on as an error
          Stream.flatMap((name) =>
            Stream.fromAsyncIterable(
              client.bucket(out.bucket).file(name).createReadStream() as AsyncIterable<Uint8Array>,
              toProviderError("storage.download")
            ).pipe(Provider.textLines), { concurrency: 1 }),
          Stream.map((text) => decodeOutputLine(text, keyOf)),
          Stream.filter(Predicate.isNotUndefined)
        )
        // the uploaded input is not needed once the answers were read: best effort
        const cleanup = meta.input === undefined ? Effect.void : Effect.gen(function*() {
          const input = Wire.parseGs(meta.input!)
          if (typeof input === "string") return
          yield* Effect.tryPromise(() => client.bucket(input.bucket).file(input.name).delete({ ignoreNotFound: true })).pipe(Effect.ignore)
        })
        return Stream.concat(lines, Stream.fromEffect(cleanup).pipe(Stream.drain))
      }))
    }

    const cancel = (batch: Provider.RemoteBatch) =>
      call("batches.cancel", false, (httpOptions, abortSignal) => ai.batches.cancel({ name: batch.id, config: { httpOptions, abortSignal } })).pipe(Effect.asVoid)

    // ----- sync -----

    const syncLimit = options.syncLimit ?? AdaptiveLimit.make({ max: options.syncConcurrency ?? 8 })
    const syncAi = new GoogleGenAI({
      vertexai: true,
      project: options.project,
      location: options.location,
      httpOptions: { ...httpBase, fetch: limitedFetch(syncLimit) },
      ...auth
    })
    const maxRetries = Math.max(0, options.maxRetries ?? 3)
    const sync = (text: string): Effect.Effect<Provider.LineResult, ProviderError.ProviderError> => {
      const line = JSON.parse(text) as Line
      const key = line.key ?? Wire.keyOfLabels(line.request?.labels) ?? ""
      const embedding = line.content ?? line.request?.content?.parts?.map((p) => p.text ?? "").join("")
      const dims = line.dimensions ?? line.request?.embed_content_config?.output_dimensionality
      const send = (abortSignal: AbortSignal): Promise<Provider.LineResult> =>
        embedding !== undefined
          ? syncAi.models.embedContent({
            model: line.model,
            contents: [embedding],
            config: { ...(dims !== undefined ? { outputDimensionality: dims } : {}), abortSignal }
          }).then((r): Provider.LineResult => {
            const e = r.embeddings?.[0]
            if (!Array.isArray(e?.values)) return { _tag: "LineFailed", id: key, kind: "provider_error", retryable: false, message: "no embedding values" }
            return {
              _tag: "LineSucceeded",
              id: key,
              response: { _tag: "EmbeddingResponse", vector: Float32Array.from(e.values), usage: { inputTokens: e.statistics?.tokenCount ?? 0, outputTokens: 0 } }
            }
          })
          : syncAi.models.generateContent({
            model: line.model,
            contents: line.request?.contents as never,
            config: {
              ...line.request?.generationConfig,
              ...(line.request?.systemInstruction !== undefined ? { systemInstruction: line.request.systemInstruction as never } : {}),
              abortSignal
            }
          }).then((r) => GeminiBatch.decodeResponse(key, r))
      return Effect.tryPromise({ try: send, catch: (cause) => cause }).pipe(
        syncLimit.withPermit,
        Effect.retry({
          while: (cause) => cause instanceof ApiError && SYNC_RETRY.has(cause.status),
          times: maxRetries,
          schedule: Schedule.exponential("200 millis", 2).pipe(Schedule.jittered)
        }),
        Effect.catch((cause): Effect.Effect<Provider.LineResult, ProviderError.ProviderError> => {
          // an HTTP answer about this request is the line's result; a broken connection is an error to retry
          if (cause instanceof ApiError) {
            const body = errorBodyOf(cause) as { error?: { message?: unknown; status?: unknown } } | undefined
            const name = typeof body?.error?.status === "string" ? body.error.status : undefined
            const failed = lineFailure(key, JSON.stringify({ code: cause.status, status: name, message: body?.error?.message ?? cause.message }), cause.message)
            return Effect.succeed(failed._tag === "LineFailed" ? { ...failed, status: cause.status } : failed)
          }
          return Effect.fail(toProviderError(embedding !== undefined ? "models.embedContent" : "models.generateContent")(cause))
        })
      )
    }

    return Provider.Provider.of({
      name: "vertex",
      limits: { ...limits, ...options.limits },
      encode,
      upload,
      submit,
      find,
      status,
      results,
      cancel,
      decodeOutput,
      pollSchedule,
      sync,
      tables: ["bigquery"]
    })
  })

/**
 * The adapter as a layer.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<Provider.Provider> => Layer.effect(Provider.Provider, make(options))

/**
 * The adapter configured from the environment: `GOOGLE_CLOUD_PROJECT`
 * (required), `GOOGLE_CLOUD_LOCATION` (default `us-central1`),
 * `GOOGLE_VERTEX_BASE_URL` (optional, the SDK's own variable),
 * `OFFPEAK_VERTEX_BUCKET` and `OFFPEAK_VERTEX_PREFIX` (the Cloud Storage
 * staging of JSONL batches; without a bucket only table jobs run), and the
 * poll cadence `OFFPEAK_POLL_INITIAL` / `OFFPEAK_POLL_MAX`. Credentials are
 * Google's application default credentials.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  config: Config.Config<Options> = Config.all({
    project: Config.String("GOOGLE_CLOUD_PROJECT"),
    location: Config.String("GOOGLE_CLOUD_LOCATION").pipe(Config.withDefault("us-central1")),
    baseURL: Config.String("GOOGLE_VERTEX_BASE_URL").pipe(Config.option, Config.map(Option.getOrUndefined)),
    bucket: Config.String("OFFPEAK_VERTEX_BUCKET").pipe(Config.option, Config.map(Option.getOrUndefined)),
    prefix: Config.String("OFFPEAK_VERTEX_PREFIX").pipe(Config.option, Config.map(Option.getOrUndefined)),
    pollInterval: Provider.pollIntervalConfig
  }).pipe(Config.map(({ bucket, prefix, ...rest }): Options => ({
    ...rest,
    ...(bucket !== undefined ? { staging: { bucket, ...(prefix !== undefined ? { prefix } : {}) } } : {})
  })))
): Layer.Layer<Provider.Provider, Config.ConfigError> => Layer.effect(Provider.Provider, Effect.flatMap(config, make))
