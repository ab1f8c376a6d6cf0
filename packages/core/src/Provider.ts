/**
 * The provider service: what offpeak needs from a batch API, in terms that fit
 * every protocol it targets.
 *
 * | protocol | how a batch reaches it | how results come back |
 * |---|---|---|
 * | OpenAI Batch (and compatible hosts), Gemini file batches | a JSONL file is uploaded, then a batch is created over it | an output file, lines keyed by custom id |
 * | Anthropic Message Batches, Gemini inline batches | the lines go inline in the create call | a results stream keyed by custom id |
 * | Vertex batch prediction from BigQuery | a server-side job over a table; no line passes through this process | an output table joined on pass-through key columns |
 *
 * The first two are a {@link Lines} submission: the pipeline writes the encoded
 * lines to a local JSONL file and the adapter uploads it or sends its lines
 * inline. The third is a {@link Table} submission. In both, results come back as
 * a stream of {@link LineResult}s in any order, each carrying the id it is
 * joined on: the custom id (the request's fingerprint) or the row's key.
 *
 * Everything provider-specific (wire format, endpoints, status names, error
 * shapes) stays in the adapter's folder.
 *
 * @since 0.1.0
 */
import type { Option } from "effect"
import { Config, Context, Duration, Effect, Result as R, Schedule, Stream } from "effect"
import type * as ProviderError from "./ProviderError.ts"
import type * as Request from "./Request.ts"
import type { FailureKind, Usage } from "./Result.ts"

// ===== Models =====

/**
 * Hard limits of one provider. The Batcher never builds a batch past
 * `maxRequests` or `maxBytes` (bytes of the encoded lines, newline included);
 * a single line over `maxRequestBytes` fails alone.
 *
 * @since 0.1.0
 * @category models
 */
export interface Limits {
  readonly maxRequests: number
  readonly maxBytes: number
  readonly maxRequestBytes: number
  /** a sensible default for batches in flight at once */
  readonly maxInFlight: number
}

/**
 * One request encoded for the provider. Requests can share a batch only when
 * their `group` is equal (OpenAI: one endpoint and one model per file).
 *
 * @since 0.1.0
 * @category models
 */
export interface Encoded {
  readonly line: string
  /** UTF-8 bytes of `line` plus its newline */
  readonly bytes: number
  readonly group: string
}

/**
 * A batch of encoded lines written to a local JSONL file (one line per
 * request, in `Encoded.line` form).
 *
 * @since 0.1.0
 * @category models
 */
export interface Lines {
  readonly _tag: "Lines"
  /** offpeak's own id of the batch, stable across restarts; adapters tag the remote batch with it */
  readonly batchId: string
  readonly runId: string
  /** when offpeak sealed the batch (epoch ms): `find` needs look no further back */
  readonly sealedAt: number
  readonly group: string
  readonly path: string
  readonly count: number
  readonly bytes: number
  /** what `Service.upload` answered for this batch (its uploaded file): `submit` creates over it instead of uploading */
  readonly uploaded?: string | undefined
}

/**
 * A server-side job over a table (pushdown): the provider reads `input` and writes `output` itself, and no row passes
 * through this process. The source staged `input` (its rows and a request column) and lands `output` (see
 * `Source.Pushdown`); the adapter creates the job, tagged with `batchId` so `find` can tell it after a crash.
 * @since 0.1.0
 * @category models
 */
export interface Table {
  readonly _tag: "Table"
  readonly batchId: string
  readonly runId: string
  readonly sealedAt: number
  /** the kind of table the source staged (`bigquery`, `gcs`): an adapter takes the kinds in its `tables` */
  readonly kind: string
  readonly model: string
  /** where the job reads its requests, e.g. `bq://project.dataset.table` */
  readonly input: string
  /** where the job writes its answers, e.g. `bq://project.dataset.table` */
  readonly output: string
  /** the columns that pass through from input to output, joining each answer to its row */
  readonly keyColumns: ReadonlyArray<string>
  /** rows in `input` */
  readonly rows: number
}

/**
 * What a batch is made of.
 *
 * @since 0.1.0
 * @category models
 */
export type Submission = Lines | Table

/**
 * A batch that exists at the provider. `id` is the provider's batch id;
 * `meta` keeps anything else the adapter needs later (an input file id, …).
 *
 * @since 0.1.0
 * @category models
 */
export interface RemoteBatch {
  readonly id: string
  readonly meta?: Readonly<Record<string, string>> | undefined
}

/**
 * The provider-neutral lifecycle of a remote batch.
 *
 * @since 0.1.0
 * @category models
 */
export type State =
  | "validating"
  | "running"
  | "finalizing"
  | "completed"
  | "failed"
  | "expired"
  | "cancelling"
  | "cancelled"

/**
 * A batch-level problem, such as a validation error on line 12 of the file.
 *
 * @since 0.1.0
 * @category models
 */
export interface Issue {
  readonly code: string
  readonly message: string
  /** 1-based line of the submitted file, when the provider names one */
  readonly line?: number | undefined
}

/**
 * A snapshot of a remote batch.
 *
 * @since 0.1.0
 * @category models
 */
export interface Status {
  readonly state: State
  /** the provider's own status word */
  readonly providerState: string
  readonly counts: { readonly total: number; readonly completed: number; readonly failed: number }
  readonly issues: ReadonlyArray<Issue>
}

/**
 * A chat answer.
 *
 * @since 0.1.0
 * @category models
 */
export interface ChatResponse {
  readonly _tag: "ChatResponse"
  readonly text: string
  readonly finishReason: "stop" | "length" | "content_filter" | "tool_calls" | "other"
  readonly usage: Usage
}

/**
 * An embedding answer.
 *
 * @since 0.1.0
 * @category models
 */
export interface EmbeddingResponse {
  readonly _tag: "EmbeddingResponse"
  /** float32, as providers compute them (and as `base64` encodings carry them) */
  readonly vector: Float32Array
  readonly usage: Usage
}

/**
 * A successful answer to one request.
 *
 * @since 0.1.0
 * @category models
 */
export type Response = ChatResponse | EmbeddingResponse

/**
 * One line of a batch's results: a response, or the provider's error for it.
 * `id` is the custom id (the fingerprint) for {@link Lines}, the key for {@link Table}.
 *
 * @since 0.1.0
 * @category models
 */
export type LineResult =
  | { readonly _tag: "LineSucceeded"; readonly id: string; readonly response: Response }
  | {
    readonly _tag: "LineFailed"
    readonly id: string
    readonly kind: FailureKind
    /** true when sending the same request again can succeed (429, 5xx, timeouts, expiry, cancellation) */
    readonly retryable: boolean
    readonly message: string
    readonly status?: number | undefined
    readonly raw?: string | undefined
  }

// ===== Service Interface =====

/**
 * What a provider adapter implements.
 *
 * @since 0.1.0
 * @category models
 */
export interface Service {
  readonly name: string
  /**
   * Where the requests go, when it is not the provider's own API: `emulator` for a local emulator, or the base URL
   * of a compatible host. Answers are reused from the result cache only between runs of the same provider and
   * endpoint, so an emulator's made-up answers never stand for the real API's.
   */
  readonly endpoint?: string | undefined
  readonly limits: Limits
  /** encodes one request with `customId`; fails with a reason when the provider cannot take it */
  readonly encode: (request: Request.Request, customId: string) => R.Result<Encoded, string>
  /** creates the remote batch (uploading its file first where the protocol needs one, unless `uploaded` says it is) */
  readonly submit: (submission: Submission) => Effect.Effect<RemoteBatch, ProviderError.ProviderError>
  /**
   * Uploads a batch's file ahead of its create, for a protocol that creates over an uploaded file. The runner calls
   * it outside the run's one-create-at-a-time lock, so files upload side by side while creates stay one at a time,
   * and hands its answer to `submit` as `Lines.uploaded`; undefined when this batch needs no upload (it goes inline).
   * An upload no create follows costs nothing but the file (a crash in between uploads again on resume).
   */
  readonly upload?: ((submission: Lines) => Effect.Effect<string | undefined, ProviderError.ProviderError>) | undefined
  /**
   * Finds a remote batch an earlier `submit` created for `submission.batchId`,
   * so a crash between create and the ledger write never pays twice.
   */
  readonly find: (submission: Submission) => Effect.Effect<Option.Option<RemoteBatch>, ProviderError.ProviderError>
  readonly status: (batch: RemoteBatch) => Effect.Effect<Status, ProviderError.ProviderError>
  /** every result line of a terminal batch, in any order */
  readonly results: (
    batch: RemoteBatch,
    status: Status
  ) => Stream.Stream<LineResult, ProviderError.ProviderError>
  readonly cancel: (batch: RemoteBatch) => Effect.Effect<void, ProviderError.ProviderError>
  /** decodes a structured-output answer with the request's schema (providers differ in how optional keys come back) */
  readonly decodeOutput: (output: Request.Output, text: string) => R.Result<unknown, string>
  /** how often to poll a running batch; its input is the status the last poll read (see {@link pollSchedule}) */
  readonly pollSchedule: Schedule.Schedule<unknown, Status>
  /**
   * Sends one encoded line (what `encode` made of a request, as a batch file
   * would carry it) through the synchronous API: full price, answered at once.
   * Pipelines in `sync` and `auto` mode use it. Adapters bound their own
   * concurrency and back off on rate limits; an answer about the request (a
   * 400, a 429 after the backoff) is a `LineFailed` with its custom id, not an
   * error.
   */
  readonly sync: (line: string) => Effect.Effect<LineResult, ProviderError.ProviderError>
  /**
   * The kinds of table ({@link Table}) this provider can run a job over, none by default. A pipeline whose source
   * can stage a table of one of these kinds (`Source.pushdown`) runs pushed down: no row passes through offpeak.
   */
  readonly tables?: ReadonlyArray<string> | undefined
}

/**
 * The provider service tag.
 *
 * @since 0.1.0
 * @category services
 */
export class Provider extends Context.Service<Provider, Service>()("@offpeak/core/Provider") {}

// ===== Utilities =====

/**
 * True for states a batch never leaves.
 *
 * @since 0.1.0
 * @category predicates
 */
export const isTerminal = (state: State): boolean =>
  state === "completed" || state === "failed" || state === "expired" || state === "cancelled"

/** bytes decoded at once at most: strings decoded from ~96 KiB or more came out ~30× slower per byte (`bench/decode.ts`) */
const DECODE_BYTES = 64 * 1024

/**
 * The lines of a stream of UTF-8 bytes (a downloaded results file), without their `\n` / `\r\n`. Bytes are decoded
 * in pieces of at most 64 KiB (views, not copies), however large the chunks that arrive.
 *
 * @example
 * ```ts
 * Stream.fromAsyncIterable(file.createReadStream(), onError).pipe(Provider.textLines)
 * ```
 *
 * @since 0.1.0
 * @category utilities
 */
export const textLines = <E, R>(bytes: Stream.Stream<Uint8Array, E, R>): Stream.Stream<string, E, R> =>
  bytes.pipe(
    Stream.mapArray((chunks) => {
      if (chunks.every((c) => c.byteLength <= DECODE_BYTES)) return chunks
      const out: Array<Uint8Array> = []
      for (const c of chunks) {
        for (let at = 0; at < c.byteLength; at += DECODE_BYTES) out.push(c.subarray(at, at + DECODE_BYTES))
      }
      return out as unknown as typeof chunks
    }),
    Stream.decodeText(),
    Stream.splitLines
  )

/**
 * The lines of an HTTP response's body (a batch's results), decoded as UTF-8 while they arrive (see
 * {@link textLines}); no line when the response has no body. A body that breaks fails the stream with `onError`'s error.
 *
 * @example
 * ```ts
 * Provider.responseLines(await fetch(url), toProviderError("files.content")).pipe(Stream.map(decodeLine))
 * ```
 *
 * @since 0.1.0
 * @category utilities
 */
export const responseLines = <E>(response: globalThis.Response, onError: (error: unknown) => E): Stream.Stream<string, E> =>
  response.body === null
    ? Stream.empty
    : textLines(Stream.fromReadableStream<Uint8Array, E>({ evaluate: () => response.body!, onError }))

/**
 * A provider's raw answer cut to 2,000 characters, as kept with a failed line (`LineFailed.raw`) and in error messages:
 * enough to see what came back, never a whole megabyte in the ledger or a log.
 *
 * @example
 * ```ts
 * Provider.clipRaw("x".repeat(5000)).length // 2001
 * ```
 *
 * @since 0.1.0
 * @category utilities
 */
export const clipRaw = (text: string): string => text.length > 2000 ? `${text.slice(0, 2000)}…` : text

/**
 * UTF-8 size of an encoded line plus its newline.
 *
 * @since 0.1.0
 * @category utilities
 */
export const lineBytes = (line: string): number => Buffer.byteLength(line, "utf8") + 1

/**
 * True when a running batch has answered every request and only its results
 * are still being written: OpenAI's `finalizing`, or counts that add up to the
 * total while it runs. (Anthropic counts nothing before a batch ends, so its
 * batches never look finishing.)
 *
 * @since 0.1.0
 * @category predicates
 */
export const isFinishing = (status: Status): boolean =>
  status.state === "finalizing" ||
  (status.state === "running" && status.counts.total > 0 &&
    status.counts.completed + status.counts.failed >= status.counts.total)

/**
 * The poll cadence of a running batch: `initial`, growing 1.5× a poll up to
 * `max`; while the batch {@link isFinishing}, every `initial` again, so its
 * results are fetched soon after they are ready rather than up to `max` later.
 *
 * @example
 * ```ts
 * provider.status(remote).pipe(Effect.repeat({
 *   schedule: Provider.pollSchedule({ initial: "5 seconds", max: "1 minute" }),
 *   until: (s) => Provider.isTerminal(s.state)
 * }))
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const pollSchedule = (
  interval: { readonly initial: Duration.Input; readonly max: Duration.Input }
): Schedule.Schedule<unknown, Status> => {
  const initial = Duration.fromInputUnsafe(interval.initial)
  return Schedule.min([Schedule.exponential(initial, 1.5), Schedule.spaced(interval.max)]).pipe(
    Schedule.setInputType<Status>(),
    Schedule.modifyDelay(({ duration, input }) =>
      Effect.succeed(isFinishing(input) ? Duration.min(duration, initial) : duration)
    )
  )
}

/**
 * The poll cadence every adapter's `layerConfig` reads: `OFFPEAK_POLL_INITIAL`
 * and `OFFPEAK_POLL_MAX` (durations such as `5 seconds`; default 5 seconds
 * growing to 1 minute).
 *
 * @since 0.1.0
 * @category config
 */
export const pollIntervalConfig: Config.Config<{ readonly initial: Duration.Duration; readonly max: Duration.Duration }> =
  Config.all({
    initial: Config.Duration("OFFPEAK_POLL_INITIAL").pipe(Config.withDefault(Duration.seconds(5))),
    max: Config.Duration("OFFPEAK_POLL_MAX").pipe(Config.withDefault(Duration.minutes(1)))
  })
