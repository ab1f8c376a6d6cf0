/**
 * The Anthropic Message Batches adapter, through the official
 * `@anthropic-ai/sdk`. Also works with hosts that speak the same protocol
 * (and the local emulator): set `baseURL`.
 *
 * Protocol: the encoded lines (`{"custom_id","params"}`, `params` being a
 * Messages API request) go inline in `POST /v1/messages/batches`, streamed
 * from the batch file; status is polled with a backoff schedule
 * (`in_progress` → `canceling` → `ended`); results are streamed from the
 * batch's `results_url` (JSONL, any order), joined by `custom_id`.
 *
 * **Details**
 *
 * - System messages become the top-level `system` (text blocks); user and
 *   assistant turns stay in order; `maxTokens` → `max_tokens`, which Anthropic
 *   requires (default {@link DEFAULT_MAX_TOKENS}); `stop` → `stop_sequences`.
 * - Structured output is a single tool whose `input_schema` is the output
 *   schema, forced with `tool_choice`; the answer is the `tool_use` block's
 *   `input`, returned as JSON text and decoded by `decodeOutput`. A schema
 *   whose root is not an object is wrapped as `{ value: … }` (tool inputs are
 *   objects) and unwrapped on decode.
 * - `cachePrefix` N puts `cache_control: {type: "ephemeral"}` on the last
 *   block of the first N messages (a system message counts as one).
 * - `group` is the model: Anthropic lets one batch mix models, but one model
 *   per batch keeps batches, costs and caches simple.
 * - Anthropic batches have no metadata. The adapter keeps a small submit
 *   journal per batch file, in a folder beside theirs (`<batch folder>.anthropic-journal/`,
 *   see `internal/submitJournal.ts`), so that `find` can tell its own batch
 *   from others after a crash: see {@link make}.
 *
 * **Gotchas**
 *
 * - `temperature` and `top_p` are sent only when {@link Options}
 *   `anthropicVersion` is older than `2026-10-21`: the API version this SDK
 *   sends by default refuses them with a 400 even at their default values.
 *   Under it they are dropped, like `seed`, which Anthropic never had.
 * - Embedding requests are refused at encode time: Anthropic has no
 *   embeddings API.
 * - A batch can answer 404 for a little while right after it was created
 *   (propagation delay): `status` and `results` retry a 404 while the batch is
 *   younger than `notFoundGrace`.
 * - Usage: `inputTokens` counts every input token (`input_tokens` plus cache
 *   writes and reads), `cachedInputTokens` the cache reads, as with OpenAI.
 *
 * @since 0.1.0
 */
import Anthropic from "@anthropic-ai/sdk"
import type { BatchCreateParams, MessageBatch, MessageBatchIndividualResponse } from "@anthropic-ai/sdk/resources/messages/batches"
import type {
  ContentBlock,
  Message,
  MessageCreateParamsNonStreaming,
  MessageParam,
  TextBlockParam,
  Tool
} from "@anthropic-ai/sdk/resources/messages/messages"
import * as AdaptiveLimit from "@offpeak/core/AdaptiveLimit"
import * as Failpoint from "@offpeak/core/Failpoint"
import * as Provider from "@offpeak/core/Provider"
import * as ProviderError from "@offpeak/core/ProviderError"
import * as StreamingFetch from "@offpeak/core/StreamingFetch"
import * as Telemetry from "@offpeak/core/Telemetry"
import type * as Request from "@offpeak/core/Request"
import type { FailureKind, Usage } from "@offpeak/core/Result"
import {
  Array as Arr,
  Cause,
  Config,
  Deferred,
  Duration,
  Effect,
  Exit,
  Layer,
  Option,
  Predicate,
  Redacted,
  Result,
  Schema,
  Stream
} from "effect"
import * as AnthropicStructuredOutput from "effect/ai/AnthropicStructuredOutput"
import * as BatchFile from "./internal/batchFile.ts"
import * as Ownership from "./internal/ownership.ts"
import * as Journal from "./internal/submitJournal.ts"

// ===== Options =====

/**
 * Options of the adapter.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  readonly apiKey: Redacted.Redacted<string>
  /** e.g. `https://api.anthropic.com` (the default) or the local emulator; paths start with `/v1` */
  readonly baseURL?: string | undefined
  /**
   * the `anthropic-version` header (default: the SDK's own, `2026-10-21`);
   * versions before `2026-10-21` also get `temperature` and `top_p`
   */
  readonly anthropicVersion?: string | undefined
  /** `max_tokens` of requests that set no `maxTokens` (default 1024) */
  readonly defaultMaxTokens?: number | undefined
  /** first and longest pause between two status polls */
  readonly pollInterval?: { readonly initial: Duration.Input; readonly max: Duration.Input } | undefined
  /** tighter limits than the API's (100,000 requests, 256 MB per batch) */
  readonly limits?: Partial<Provider.Limits> | undefined
  /**
   * how many times the SDK retries a failed call (429, 5xx, network) before the
   * error reaches offpeak; never applies to creating a batch (see {@link make})
   */
  readonly maxRetries?: number | undefined
  /**
   * synchronous calls at once (`sync`, default 8): the most the adaptive limit allows; it halves on a 429 (or 529) and
   * waits out `retry-after`, then grows back by one after as many answers in a row
   */
  readonly syncConcurrency?: number | undefined
  /** the adaptive limit of synchronous calls, to share one between adapters (default: one of `syncConcurrency`) */
  readonly syncLimit?: AdaptiveLimit.AdaptiveLimit | undefined
  /** how long after its creation a 404 on a batch is taken for propagation delay and retried (default 2 minutes) */
  readonly notFoundGrace?: Duration.Input | undefined
  /**
   * how long after an unanswered create ended `find` still expects its batch to appear in the list before it
   * answers that there is none (default 5 seconds; see {@link make})
   */
  readonly listGrace?: Duration.Input | undefined
  /**
   * how far the provider's clock may be from this machine's before an answered create measured the offset
   * (default 10 minutes): it widens the window in which an unanswered create can have made a batch
   */
  readonly clockSkew?: Duration.Input | undefined
}

/**
 * The largest request body Anthropic takes, read as decimal megabytes (the
 * smaller reading of "256 MB").
 *
 * @since 0.1.0
 * @category constants
 */
export const MAX_BODY_BYTES = 256_000_000

/**
 * The API's own limits: 100,000 requests and 256 MB per batch. The byte limit
 * is on the whole HTTP body, which is the lines joined by commas inside
 * `{"requests":[…]}`: the batch's line bytes (each counted with its newline)
 * plus 14, so `maxBytes` keeps a few bytes of margin.
 *
 * @since 0.1.0
 * @category constants
 */
export const limits: Provider.Limits = {
  maxRequests: 100_000,
  maxBytes: MAX_BODY_BYTES - 64,
  maxRequestBytes: MAX_BODY_BYTES - 64,
  maxInFlight: 4
}

/**
 * `max_tokens` when the request sets none (Anthropic requires it).
 *
 * @since 0.1.0
 * @category constants
 */
export const DEFAULT_MAX_TOKENS = 1024

/**
 * Anthropic's rule for `custom_id`. Fingerprints (64 lowercase hex characters) fit it.
 *
 * @since 0.1.0
 * @category constants
 */
export const CUSTOM_ID: RegExp = /^[a-zA-Z0-9_-]{1,64}$/

/**
 * The API version that removed `temperature`, `top_p` and `top_k`.
 *
 * @since 0.1.0
 * @category constants
 */
export const SAMPLING_REMOVED_IN = "2026-10-21"

// ===== Encoding =====

/**
 * Sampling parameters of API versions before `2026-10-21` (absent from this
 * SDK's types, which follow `2026-10-21`).
 *
 * @since 0.1.0
 * @category models
 */
export interface LegacySampling {
  temperature?: number
  top_p?: number
}

/**
 * The `params` of one batch line: a Messages API request as the SDK types it.
 *
 * @since 0.1.0
 * @category models
 */
export type Params = MessageCreateParamsNonStreaming & LegacySampling

/**
 * A request line of a Message Batch (the SDK's `BatchCreateParams.Request`).
 *
 * @since 0.1.0
 * @category models
 */
export interface RequestLine {
  readonly custom_id: string
  readonly params: Params
}

/**
 * How requests are encoded.
 *
 * @since 0.1.0
 * @category models
 */
export interface EncodeOptions {
  /** `max_tokens` when the request sets none (default {@link DEFAULT_MAX_TOKENS}) */
  readonly defaultMaxTokens?: number | undefined
  /** send `temperature` and `top_p` (only API versions before `2026-10-21` accept them; default false) */
  readonly sampling?: boolean | undefined
}

interface Structured {
  readonly codec: Schema.Codec<unknown, unknown>
  readonly inputSchema: Tool.InputSchema
  /** the schema's root is not an object: the tool input is `{ value: … }` */
  readonly wrapped: boolean
}

const structured = new WeakMap<object, Structured>()

const structuredFor = (schema: Schema.Codec<unknown, any>): Structured => {
  let entry = structured.get(schema)
  if (entry === undefined) {
    const { codec, jsonSchema } = AnthropicStructuredOutput.toCodecAnthropic(schema as any) as {
      readonly codec: Schema.Codec<unknown, unknown>
      readonly jsonSchema: Record<string, unknown>
    }
    if (jsonSchema.type === "object") {
      entry = { codec, inputSchema: jsonSchema as Tool.InputSchema, wrapped: false }
    } else {
      const { $defs, ...root } = jsonSchema
      entry = {
        codec,
        inputSchema: {
          type: "object",
          properties: { value: root },
          required: ["value"],
          additionalProperties: false,
          ...($defs !== undefined ? { $defs } : {})
        },
        wrapped: true
      }
    }
    structured.set(schema, entry)
  }
  return entry
}

/**
 * The tool name of a structured output (`^[a-zA-Z0-9_-]{1,64}$`).
 *
 * @since 0.1.0
 * @category encoding
 */
export const toolName = (name: string): string => name.replace(/[^A-Za-z0-9_-]/g, "_").slice(0, 64) || "output"

const EPHEMERAL = { type: "ephemeral" } as const

/**
 * The Messages API request of a chat request, typed against the SDK. Throws
 * when Anthropic cannot take the request (no user or assistant turn).
 *
 * @since 0.1.0
 * @category encoding
 */
export const messageParams = (request: Request.Chat, options: EncodeOptions = {}): Params => {
  const n = request.cachePrefix ?? 0
  const marked = n > 0 ? Math.min(n, request.messages.length) - 1 : -1
  const system: Array<TextBlockParam> = []
  const messages: Array<MessageParam> = []
  request.messages.forEach((m, i) => {
    if (m.role === "system") {
      system.push(i === marked ? { type: "text", text: m.content, cache_control: EPHEMERAL } : { type: "text", text: m.content })
    } else {
      messages.push({
        role: m.role,
        content: i === marked ? [{ type: "text", text: m.content, cache_control: EPHEMERAL }] : m.content
      })
    }
  })
  if (messages.length === 0) {
    throw new Error("Anthropic needs at least one user or assistant message; this request has only system messages")
  }
  const p = request.params
  const params: Params = {
    model: request.model,
    max_tokens: p.maxTokens ?? options.defaultMaxTokens ?? DEFAULT_MAX_TOKENS,
    messages
  }
  if (system.length === 1 && system[0]!.cache_control === undefined) params.system = system[0]!.text
  else if (system.length > 0) params.system = system
  if (p.stop !== undefined && p.stop.length > 0) params.stop_sequences = [...p.stop]
  if (options.sampling === true) {
    if (p.temperature !== undefined) params.temperature = p.temperature
    if (p.topP !== undefined) params.top_p = p.topP
  }
  if (request.output !== undefined) {
    const name = toolName(request.output.name)
    params.tools = [{
      name,
      description: `Answer with the ${request.output.name} object.`,
      input_schema: structuredFor(request.output.schema).inputSchema
    }]
    params.tool_choice = { type: "tool", name }
  }
  return params
}

/**
 * The batch line of a chat request, typed against the SDK.
 *
 * @since 0.1.0
 * @category encoding
 */
export const requestLine = (request: Request.Chat, customId: string, options?: EncodeOptions): RequestLine => ({
  custom_id: customId,
  params: messageParams(request, options)
})

const encodeWith = (options: EncodeOptions) =>
(request: Request.Request, customId: string): Result.Result<Provider.Encoded, string> => {
  if (request._tag !== "Chat") {
    return Result.fail(`Anthropic has no embeddings API: the ${request.model} embedding request cannot be sent`)
  }
  if (!CUSTOM_ID.test(customId)) {
    return Result.fail(`the custom id "${customId}" does not match Anthropic's ^[a-zA-Z0-9_-]{1,64}$`)
  }
  try {
    // the line is exactly what the SDK's `messages.batches.create` takes for one request
    const line: BatchCreateParams.Request = requestLine(request, customId, options)
    const text = JSON.stringify(line)
    return Result.succeed({ line: text, bytes: Provider.lineBytes(text), group: request.model })
  } catch (error) {
    return Result.fail(`cannot encode the request for Anthropic: ${error instanceof Error ? error.message : String(error)}`)
  }
}

/**
 * Encodes a request as a batch line (the default encoding: no sampling
 * parameters, `max_tokens` 1024 when unset). The adapter's own `encode`
 * follows its {@link Options}.
 *
 * @since 0.1.0
 * @category encoding
 */
export const encode: (request: Request.Request, customId: string) => Result.Result<Provider.Encoded, string> =
  encodeWith({})

const decodedMessage = (cause: unknown): string => {
  const text = String(cause)
  const match = /SchemaError[^:]*: ([\s\S]*)/.exec(text)
  return (match?.[1] ?? text).trim().split("\n").slice(0, 6).join("; ")
}

/**
 * Decodes a structured-output answer (the tool input, as JSON text) with the
 * request's schema.
 *
 * @since 0.1.0
 * @category decoding
 */
export const decodeOutput = (output: Request.Output, text: string): Result.Result<unknown, string> => {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    return Result.fail(`the answer is not JSON: ${text.length > 200 ? `${text.slice(0, 200)}…` : text}`)
  }
  const entry = structuredFor(output.schema)
  if (entry.wrapped) {
    if (typeof json !== "object" || json === null || !("value" in json)) {
      return Result.fail(`the answer does not match ${output.name}: the tool input has no "value"`)
    }
    json = (json as { value: unknown }).value
  }
  const decoded = Schema.decodeUnknownExit(entry.codec)(json)
  return decoded._tag === "Success"
    ? Result.succeed(decoded.value)
    : Result.fail(`the answer does not match ${output.name}: ${decodedMessage(decoded.cause)}`)
}

// ===== Errors =====

const toProviderError = (operation: string) => (cause: unknown): ProviderError.ProviderError =>
  new ProviderError.ProviderError({ provider: "anthropic", operation, reason: ProviderError.reasonOfSdkError(cause) })

const call = <A>(operation: string, f: (signal: AbortSignal) => Promise<A>) =>
  Effect.tryPromise({ try: f, catch: toProviderError(operation) }).pipe(Telemetry.providerCall("anthropic", operation))

const localError = (operation: string, message: string) =>
  new ProviderError.ProviderError({ provider: "anthropic", operation, reason: new ProviderError.Protocol({ message }) })

// ===== Status =====

const totalOf = (c: MessageBatch["request_counts"]) => c.processing + c.succeeded + c.errored + c.canceled + c.expired

const stateOf = (batch: MessageBatch): Provider.State => {
  switch (batch.processing_status) {
    case "in_progress":
      return "running"
    case "canceling":
      return "cancelling"
    case "ended": {
      const c = batch.request_counts
      if (batch.cancel_initiated_at !== null && c.canceled > 0) return "cancelled"
      if (c.expired > 0) return "expired"
      return "completed"
    }
  }
}

/**
 * The provider-neutral status of a Message Batch: `in_progress` is running,
 * `canceling` cancelling; an ended batch is `cancelled` when a cancel left
 * requests unprocessed, `expired` when the 24 h window closed on some, else
 * `completed`. Counts stay 0 (all `processing`) until the batch ends.
 *
 * @since 0.1.0
 * @category decoding
 */
export const toStatus = (batch: MessageBatch): Provider.Status => {
  const c = batch.request_counts
  return {
    state: stateOf(batch),
    providerState: batch.processing_status,
    counts: { total: totalOf(c), completed: c.succeeded, failed: c.errored + c.canceled + c.expired },
    issues: []
  }
}

// ===== Results =====

const usageOf = (u: Message["usage"] | undefined): Usage => {
  if (u === undefined || u === null) return { inputTokens: 0, outputTokens: 0 }
  const read = typeof u.cache_read_input_tokens === "number" ? u.cache_read_input_tokens : undefined
  const written = typeof u.cache_creation_input_tokens === "number" ? u.cache_creation_input_tokens : 0
  return {
    inputTokens: (u.input_tokens ?? 0) + written + (read ?? 0),
    outputTokens: u.output_tokens ?? 0,
    ...(read !== undefined ? { cachedInputTokens: read } : {})
  }
}

const finishReasonOf = (r: Message["stop_reason"]): Provider.ChatResponse["finishReason"] => {
  switch (r) {
    case null:
    case "end_turn":
    case "stop_sequence":
    case "tool_use":
      return "stop"
    case "max_tokens":
    case "model_context_window_exceeded":
      return "length"
    case "refusal":
      return "content_filter"
    default:
      return "other"
  }
}

const ERROR_STATUS: Record<string, number> = {
  invalid_request_error: 400,
  authentication_error: 401,
  billing_error: 402,
  permission_error: 403,
  not_found_error: 404,
  conflict_error: 409,
  request_too_large: 413,
  rate_limit_error: 429,
  api_error: 500,
  timeout_error: 504,
  overloaded_error: 529
}

const RETRYABLE = new Set(["rate_limit_error", "api_error", "overloaded_error", "timeout_error", "conflict_error"])

/**
 * The answer of a message: the text of its text blocks, or, when it called a
 * tool (structured output), that tool's `input` as JSON text.
 *
 * @since 0.1.0
 * @category decoding
 */
export const decodeMessage = (id: string, message: Message): Provider.LineResult => {
  const content: ReadonlyArray<ContentBlock> = Array.isArray(message.content) ? message.content : []
  const tool = content.find((b) => b.type === "tool_use")
  const text = tool !== undefined && "input" in tool
    ? JSON.stringify(tool.input ?? {})
    : content.filter((b) => b.type === "text").map((b) => (b as { text: string }).text).join("")
  return {
    _tag: "LineSucceeded",
    id,
    response: { _tag: "ChatResponse", text, finishReason: finishReasonOf(message.stop_reason), usage: usageOf(message.usage) }
  }
}

/**
 * A line failure from an Anthropic error type (`invalid_request_error`,
 * `overloaded_error`, …): retryable for rate limits, server errors, overload
 * and timeouts.
 *
 * @since 0.1.0
 * @category decoding
 */
export const decodeError = (id: string, type: string, message: string, raw?: string): Provider.LineResult => ({
  _tag: "LineFailed",
  id,
  kind: "provider_error",
  retryable: RETRYABLE.has(type),
  ...(ERROR_STATUS[type] !== undefined ? { status: ERROR_STATUS[type] } : {}),
  message: `${type}: ${message}`,
  ...(raw !== undefined ? { raw: Provider.clipRaw(raw) } : {})
})

const ended = (id: string, kind: FailureKind, message: string): Provider.LineResult => ({
  _tag: "LineFailed",
  id,
  kind,
  retryable: true,
  message
})

/**
 * Decodes one result line. `undefined` for a line that names no `custom_id`
 * (it cannot be joined to anything).
 *
 * @since 0.1.0
 * @category decoding
 */
export const decodeResult = (line: MessageBatchIndividualResponse): Provider.LineResult | undefined => {
  if (line === null || typeof line !== "object" || typeof line.custom_id !== "string") return undefined
  const id = line.custom_id
  const result = line.result as MessageBatchIndividualResponse["result"] | undefined
  switch (result?.type) {
    case "succeeded":
      return decodeMessage(id, result.message)
    case "errored": {
      // the error response `{type: "error", error: {type, message}}`; some hosts send the inner object alone
      const outer = result.error as unknown as { error?: { type?: unknown; message?: unknown }; type?: unknown; message?: unknown }
      const inner = typeof outer?.error === "object" && outer.error !== null ? outer.error : outer
      const type = typeof inner?.type === "string" ? inner.type : "api_error"
      const message = typeof inner?.message === "string" ? inner.message : "no message"
      return decodeError(id, type, message, JSON.stringify(result.error))
    }
    case "canceled":
      return ended(id, "cancelled", "canceled: the batch was canceled before this request was processed")
    case "expired":
      return ended(id, "expired", "expired: the batch's 24 h window closed before this request was processed")
    default:
      return {
        _tag: "LineFailed",
        id,
        kind: "provider_error",
        retryable: false,
        message: `unknown result type ${JSON.stringify((result as { type?: unknown } | undefined)?.type ?? null)}`,
        raw: Provider.clipRaw(JSON.stringify(line))
      }
  }
}

// ===== Constructors =====

const MINUTE = 60_000
/** how far the provider's clock may be from ours until an answered create measured it (default of `clockSkew`) */
const SKEW_MS = 10 * MINUTE
/** the widening of a measured clock offset */
const MARGIN_MS = 2_000
/** the create call's timeout: an attempt is in flight no longer than this */
const CREATE_TIMEOUT_MS = 30 * MINUTE
/** at most this many list pages are read when looking for a batch */
const MAX_PAGES = 100
/** how long after an ambiguous attempt ended the polls of the file's batch look for a duplicate listed late */
const WATCH_MS = 10 * MINUTE
/** and at most this often */
const WATCH_EVERY_MS = 2_000

/** when this process started: an attempt started before was in flight at most until then */
const PROCESS_START = Math.floor(performance.timeOrigin)

/**
 * Crash point for the crash torture, inside a create: the request's whole body has been sent and its answer is not
 * in (with an emulator that answers creates late, the batch exists while the process dies):
 * `OFFPEAK_FAILPOINTS=batch.create.sent:2`.
 */
const CREATE_SENT: Failpoint.Name = "batch.create.sent"
const createSentArmed = (process.env.OFFPEAK_FAILPOINTS ?? "").split(",").some((f) => f.trim().split(":")[0] === CREATE_SENT)

/** the create body, and the crash point once it has been sent (the body ends, then the request is complete) */
async function* bodyOf(file: string): AsyncGenerator<Uint8Array> {
  yield* BatchFile.requestBody(file)
  // the request ends when this generator returns: count the pass (and die) a moment later, before the answer
  if (createSentArmed) setTimeout(() => Failpoint.hitSync(CREATE_SENT), 100)
}

/** journal times are compared with the provider's `created_at`: always the wall clock, never a test clock */
const wallClock = Effect.sync(() => Date.now())

const remoteOf = (id: string, at: number, submission?: Provider.Lines): Provider.RemoteBatch => ({
  id,
  meta: submission === undefined
    ? { submittedAt: String(at) }
    : { submittedAt: String(at), file: submission.path, batch: submission.batchId }
})

/** a create answered with an HTTP status the API gives before creating anything: no batch exists */
const isRefusal = (error: ProviderError.ProviderError) => {
  const status = (error.reason as { readonly status?: unknown }).status
  return typeof status === "number" && ((status >= 400 && status < 500) || status === 529)
}

const listedOf = (batch: MessageBatch): Ownership.Listed => ({
  id: batch.id,
  createdMs: Date.parse(batch.created_at),
  count: totalOf(batch.request_counts),
  ended: batch.processing_status === "ended"
})

/**
 * Builds the adapter.
 *
 * **Finding a batch after a crash**
 *
 * Before it sends `POST /v1/messages/batches`, `submit` records the attempt
 * (its start time) in the batch file's journal and flushes it; when the API
 * answers it records the batch id (and the batch's `created_at`, which
 * measures the offset between the clocks); when the call fails it records
 * when, and whether the API refused (a 4xx or 529: nothing was created). `find`
 * reads the journal:
 *
 * 1. no journal, or only attempts refused or already found absent: none;
 * 2. an attempt with an id: that batch;
 * 3. attempts without an answer (a crash, a timeout, a broken connection while
 *    the create was in flight): the batches created while one of them was in
 *    flight, with as many requests as the file, not claimed by another batch
 *    file's journal of the run, are the candidates (`internal/ownership.ts`).
 *    An ended candidate whose results carry exactly the file's custom ids is
 *    ours (each candidate's custom ids are read once and cached in the journal
 *    folder, so repeated looks never download them again). A running candidate
 *    is adopted only when it is the only one and no unanswered attempt of
 *    another batch file could have made it; when several could be ours, `find`
 *    waits (polling) for them to end and decides on their custom ids. With no
 *    candidate, it lists again once `listGrace` has passed since the attempt
 *    ended (a new batch can be listed late), then marks the attempts absent
 *    and answers none. Claims are read fresh at each decision, and an adopted
 *    batch is claimed in the same synchronous step, so concurrent looks for
 *    sibling files never adopt the same batch.
 *
 * `submit` runs the same look-up before sending again when the journal holds
 * an unanswered attempt, so repeated submits of one batch never create two.
 * Creating a batch is never retried by the SDK itself (its body is a stream,
 * and a retry after a lost answer would create a second batch).
 *
 * **Duplicates.** When a create went through although its call failed, and the
 * list showed the batch only after the look-up gave up, the file ends up with
 * two batches. While the batch the file holds is polled (for 10 minutes after
 * such an attempt), `status` looks for that second batch: ended and carrying
 * the file's custom ids, it is recorded (its results are harmless: results are
 * joined by custom id); still running, created while the attempt was in flight
 * (by the measured clock offset) and explainable by nothing else of the run, it
 * is cancelled.
 *
 * Residual risk: a batch of exactly the same size, created by another process
 * or person in the same workspace while one of our creates was in flight,
 * still running, and the only candidate, can be adopted in place of ours
 * (ours was then never created); our requests come back without a result
 * line (failed as `lost`, retryable) and are sent again. A create that the list
 * shows later than `listGrace` after its call ended is not found by `find`
 * (the duplicate watch above catches it while it runs). A running batch
 * cannot be proven ours before it ends (Anthropic shows no custom ids until
 * then), so cancelling a duplicate rests on its creation time and size: a
 * foreign batch of the same size created within those few seconds would be
 * cancelled (the adapter logs every cancel). The journal is what says whether a
 * create was ever sent: a journal folder removed while its batch files stay
 * makes a crashed batch look unsent.
 *
 * @example
 * ```ts
 * const provider = yield* AnthropicBatch.make({ apiKey: Redacted.make(process.env.ANTHROPIC_API_KEY!) })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options): Effect.Effect<Provider.Service> =>
  Effect.sync(() => {
    const client = new Anthropic({
      apiKey: Redacted.value(options.apiKey),
      maxRetries: options.maxRetries ?? 3,
      ...(options.baseURL !== undefined ? { baseURL: options.baseURL } : {}),
      ...(options.anthropicVersion !== undefined ? { defaultHeaders: { "anthropic-version": options.anthropicVersion } } : {})
    })
    const encodeOptions: EncodeOptions = {
      defaultMaxTokens: options.defaultMaxTokens,
      sampling: options.anthropicVersion !== undefined && options.anthropicVersion < SAMPLING_REMOVED_IN
    }
    const pollInterval = options.pollInterval ?? { initial: "5 seconds", max: "1 minute" }
    const pollSchedule = Provider.pollSchedule(pollInterval)
    const millis = (input: Duration.Input) => Duration.toMillis(Duration.fromInputUnsafe(input))
    const graceMs = millis(options.notFoundGrace ?? "2 minutes")
    const listGraceMs = millis(options.listGrace ?? "5 seconds")
    const skewMs = millis(options.clockSkew ?? SKEW_MS)
    const waitInitialMs = Math.max(1, millis(pollInterval.initial))
    const waitMaxMs = Math.max(waitInitialMs, millis(pollInterval.max))
    const clockNow = (): Ownership.Clock => ({
      now: Date.now(),
      processStart: PROCESS_START,
      skewMs,
      marginMs: MARGIN_MS,
      createTimeoutMs: CREATE_TIMEOUT_MS
    })

    // ----- a 404 right after create is propagation delay -----

    const withGrace = <A>(remote: Provider.RemoteBatch, effect: Effect.Effect<A, ProviderError.ProviderError>) => {
      const submittedAt = Number(remote.meta?.submittedAt)
      return Number.isFinite(submittedAt)
        ? ProviderError.retryNotFound(effect, { since: submittedAt, grace: Duration.millis(graceMs) })
        : effect
    }

    // ----- the journal and the evidence it holds -----

    const journalOp = <A>(operation: string, f: () => A) =>
      Effect.try({
        try: f,
        catch: (e) => localError(operation, `cannot keep the submit journal: ${e instanceof Error ? e.message : String(e)}`)
      })

    // a batch file never changes once sealed: its digest is read once
    const digests = new Map<string, string>()

    /** the digest of the batch file's custom ids */
    const fileDigest = (submission: { readonly path: string }) =>
      Effect.suspend(() => {
        const known = digests.get(submission.path)
        if (known !== undefined) return Effect.succeed(known)
        return Effect.tryPromise({
          try: async () => Journal.digestOf(await BatchFile.customIds(submission.path)),
          catch: (e) => localError("find", `cannot read the batch file: ${e instanceof Error ? e.message : String(e)}`)
        }).pipe(Effect.tap((digest) => Effect.sync(() => digests.set(submission.path, digest))))
      })

    interface Looking {
      readonly path: string
      readonly batchId: string
      /** the batch file's request count */
      readonly count: number
      /** the digest of the batch file's custom ids (undefined: the file is gone) */
      readonly digest: string | undefined
      readonly unreadable: ReadonlySet<string>
    }

    /** the run's journals as they are now: read fresh for every decision */
    const evidenceOf = (looking: Looking): Ownership.Evidence => {
      const own = Journal.read(looking.path, looking.batchId)
      if (own === undefined) throw new Error(`the submit journal of ${looking.batchId} is gone`)
      return {
        own,
        others: Journal.others(looking.path),
        digest: looking.digest,
        remote: (id) => Journal.readRemote(looking.path, id),
        unreadable: looking.unreadable
      }
    }

    /** every batch listed, newest first, back to `since` (provider clock) */
    const listSince = (since: number) =>
      Effect.gen(function*() {
        const out: Array<Ownership.Listed> = []
        let after: string | undefined = undefined
        for (let page = 0; page < MAX_PAGES; page++) {
          const list = yield* call("messages.batches.list", (signal) =>
            client.messages.batches.list({ limit: 100, ...(after !== undefined ? { after_id: after } : {}) }, { signal }))
          let older = false
          for (const batch of list.data) {
            const listed = listedOf(batch)
            if (listed.createdMs < since) {
              older = true
              break
            }
            out.push(listed)
          }
          if (older || !list.has_more || list.last_id === null) break
          after = list.last_id
        }
        return out
      })

    // ----- the custom ids of remote batches: read once, cached in the journal folder -----

    const reading = new Map<string, Deferred.Deferred<Journal.RemoteIds | undefined, ProviderError.ProviderError>>()

    const download = (id: string) =>
      call("messages.batches.results", async (signal): Promise<Journal.RemoteIds> => {
        const decoder = await client.messages.batches.results(id, {}, { signal })
        const ids: Array<string> = []
        let lines = 0
        for await (const line of decoder) {
          lines++
          if (typeof line?.custom_id === "string") ids.push(line.custom_id)
        }
        return { id, lines, digest: Journal.digestOf(ids) }
      }).pipe(
        Effect.catchIf(
          (e) => e.reason._tag === "NotFound" || e.reason._tag === "Protocol",
          () => Effect.succeed(undefined)
        )
      )

    /** the custom ids an ended batch's results carry (undefined: unreadable now); one download per batch */
    const remoteIds = (path: string, id: string): Effect.Effect<Journal.RemoteIds | undefined, ProviderError.ProviderError> =>
      Effect.suspend(() => {
        const known = Journal.readRemote(path, id)
        if (known !== undefined) return Effect.succeed(known)
        const pending = reading.get(id)
        if (pending !== undefined) return Deferred.await(pending)
        const deferred = Deferred.makeUnsafe<Journal.RemoteIds | undefined, ProviderError.ProviderError>()
        reading.set(id, deferred)
        return download(id).pipe(
          Effect.tap((remote) => remote === undefined ? Effect.void : journalOp("find", () => Journal.writeRemote(path, remote))),
          Effect.onExit((exit) =>
            Effect.sync(() => reading.delete(id)).pipe(Effect.andThen(Deferred.done(deferred, exit)), Effect.asVoid)
          )
        )
      })

    /** reads the custom ids of `ids` and records the verdicts in the own journal; the unreadable ones are returned */
    const confirm = (looking: Looking, ids: ReadonlyArray<string>) =>
      Effect.gen(function*() {
        const unreadable: Array<string> = []
        const verdicts: Record<string, Journal.Verdict> = {}
        for (const id of ids) {
          const remote = yield* remoteIds(looking.path, id)
          if (remote === undefined) unreadable.push(id)
          else if (looking.digest !== undefined) {
            verdicts[id] = remote.lines === looking.count && remote.digest === looking.digest ? "match" : "mismatch"
          }
        }
        if (Object.keys(verdicts).length > 0) {
          yield* journalOp("find", () => Journal.update(looking.path, looking.batchId, (j) => Journal.withVerdicts(j, verdicts)))
        }
        return unreadable
      })

    // ----- duplicates of a file's batch -----

    /**
     * Looks for a second batch of a file that holds one (see {@link make}): ended and proven by its custom ids,
     * it is recorded; running and explainable by nothing else, it is cancelled.
     */
    const checkDuplicates = (
      file: { readonly path: string; readonly batchId: string },
      listed?: ReadonlyArray<Ownership.Listed>
    ) =>
      Effect.gen(function*() {
        const own = yield* journalOp("find", () => Journal.read(file.path, file.batchId))
        if (own === undefined || Ownership.held(own) === undefined || Ownership.unanswered(own).length === 0) return
        const unreadable = new Set<string>()
        let looking: Looking = { ...file, count: own.count, digest: digests.get(file.path), unreadable }
        const batches = listed ??
          (yield* listSince(
            yield* journalOp("find", () => Ownership.earliest([own, ...Journal.others(file.path)], Ownership.unanswered(own), clockNow()))
          ))
        let actions = yield* journalOp("find", () => Ownership.duplicates(evidenceOf(looking), batches, clockNow()))
        const toRead = actions.filter((a) => a._tag === "Confirm").map((a) => a.id)
        if (toRead.length > 0) {
          // the file's own custom ids are read only when a batch's must be compared with them (the file may be gone)
          looking = { ...looking, digest: Option.getOrUndefined(yield* fileDigest(file).pipe(Effect.option)) }
          if (looking.digest !== undefined) {
            for (const id of yield* confirm(looking, toRead)) unreadable.add(id)
            actions = yield* journalOp("find", () => Ownership.duplicates(evidenceOf(looking), batches, clockNow()))
          }
        }
        for (const action of actions) {
          if (action._tag === "Confirm") continue
          let what: Journal.Duplicate = action._tag === "Cancel" ? "cancelled" : "ended"
          if (action._tag === "Cancel") {
            const cancelled = yield* call("messages.batches.cancel", (signal) => client.messages.batches.cancel(action.id, {}, { signal })).pipe(
              Effect.as(true),
              // refused: it has ended meanwhile
              Effect.catchIf((e) => e.reason._tag !== "Transport", () => Effect.succeed(false))
            )
            if (!cancelled) {
              // then its custom ids tell whether it is ours
              if (looking.digest === undefined) {
                looking = { ...looking, digest: Option.getOrUndefined(yield* fileDigest(file).pipe(Effect.option)) }
              }
              if (looking.digest === undefined || (yield* confirm(looking, [action.id])).length > 0) continue
              const verdict = Journal.read(file.path, file.batchId)?.verdicts?.[action.id]
              if (verdict !== "match") continue
              what = "ended"
            }
          }
          yield* journalOp("find", () => Journal.update(file.path, file.batchId, (j) => Journal.withDuplicate(j, action.id, what)))
          yield* Effect.logWarning(
            `anthropic: batch ${action.id} duplicates ${Ownership.held(own)} of ${file.batchId} (a create that went through ` +
              `although its call failed): ${what === "cancelled" ? "cancelled" : "it had ended; its results are not used"}`
          )
        }
      })

    const lastWatch = new Map<string, number>()

    /** while a batch is polled, looks now and then for a late-listed duplicate of it (see {@link make}) */
    const watch = (batch: Provider.RemoteBatch) =>
      Effect.suspend(() => {
        const file = batch.meta?.file
        const batchId = batch.meta?.batch
        if (file === undefined || batchId === undefined) return Effect.void
        const now = Date.now()
        if (now - (lastWatch.get(batch.id) ?? 0) < WATCH_EVERY_MS) return Effect.void
        lastWatch.set(batch.id, now)
        const own = Journal.read(file, batchId)
        if (own === undefined || Ownership.held(own) !== batch.id) return Effect.void
        const open = Ownership.unanswered(own)
        if (open.length === 0 || now > Math.max(...open.map((a) => Ownership.endOf(a, clockNow()))) + WATCH_MS) {
          return Effect.void
        }
        return checkDuplicates({ path: file, batchId }).pipe(
          Effect.catch((e) => Effect.logWarning(`anthropic: looking for duplicates of ${batch.id}: ${e.message}`))
        )
      })

    // ----- submit and find -----

    // the create's body (the whole batch, up to 256 MB) is streamed from the file and never held: see StreamingFetch
    const uploads = client.withOptions({ fetch: StreamingFetch.fetch })
    const create = (submission: Provider.Lines) =>
      call("messages.batches.create", (signal) =>
        uploads.post<MessageBatch>("/v1/messages/batches", {
          body: bodyOf(submission.path),
          headers: { "content-type": "application/json" },
          maxRetries: 0,
          timeout: CREATE_TIMEOUT_MS,
          signal
        }))

    /** one decision on a listing, and the claim of an adopted batch, in one synchronous step */
    const decideAndClaim = (looking: Looking, listed: ReadonlyArray<Ownership.Listed>) =>
      journalOp("find", () => {
        const evidence = evidenceOf(looking)
        const decision = Ownership.decide(evidence, listed, clockNow())
        if (decision._tag === "Adopt") {
          Journal.write(looking.path, Journal.adopt(evidence.own, decision.attempt, decision.id, Date.now()))
        }
        return decision
      })

    const lookUp = (
      submission: Provider.Lines
    ): Effect.Effect<Option.Option<Provider.RemoteBatch>, ProviderError.ProviderError> =>
      Effect.gen(function*() {
        let digest: string | undefined
        let graceSpent = false
        let waitMs = waitInitialMs
        while (true) {
          const journal = yield* journalOp("find", () => Journal.read(submission.path, submission.batchId))
          if (journal === undefined) return Option.none()
          const known = journal.attempts.find((a) => a.id !== null)
          if (known !== undefined) return Option.some(remoteOf(known.id!, known.at ?? known.startedAt, submission))
          if (Ownership.ambiguous(journal).length === 0) return Option.none()
          digest ??= yield* fileDigest(submission)
          const since = yield* journalOp("find", () =>
            Ownership.earliest([journal, ...Journal.others(submission.path)], Ownership.ambiguous(journal), clockNow()))
          const listed = yield* listSince(since)
          const unreadable = new Set<string>()
          const looking: Looking = { path: submission.path, batchId: submission.batchId, count: journal.count, digest, unreadable }
          let decision = yield* decideAndClaim(looking, listed)
          while (decision._tag === "Confirm") {
            for (const id of yield* confirm(looking, decision.ids)) unreadable.add(id)
            decision = yield* decideAndClaim(looking, listed)
          }
          switch (decision._tag) {
            case "Known":
              return Option.some(remoteOf(decision.id, Date.now(), submission))
            case "Adopt": {
              const at = yield* wallClock
              yield* Effect.logInfo(
                `anthropic: ${submission.batchId} adopts batch ${decision.id} ` +
                  (decision.proven ? "(its results carry exactly the file's custom ids)" : "(the only batch that can be its own)")
              )
              yield* checkDuplicates(submission, listed).pipe(
                Effect.catch((e) => Effect.logWarning(`anthropic: looking for duplicates of ${decision.id}: ${e.message}`))
              )
              return Option.some(remoteOf(decision.id, at, submission))
            }
            case "None": {
              // a batch can be listed a little after it was created: look once more after the grace
              const deadline = Ownership.graceDeadline(journal, clockNow(), listGraceMs)
              const now = Date.now()
              if (!graceSpent && now < deadline) {
                graceSpent = true
                yield* Effect.sleep(Duration.millis(deadline - now))
                continue
              }
              yield* journalOp("find", () => Journal.update(submission.path, submission.batchId, Journal.markAbsent))
              return Option.none()
            }
            case "Wait": {
              if (waitMs === waitInitialMs) {
                yield* Effect.logInfo(
                  `anthropic: ${submission.batchId}: ${decision.ids.length} running batch(es) could be its own ` +
                    `(${decision.ids.join(", ")}); waiting for them to end to compare custom ids`
                )
              }
              yield* Effect.sleep(Duration.millis(waitMs))
              waitMs = Math.min(waitMaxMs, Math.ceil(waitMs * 1.5))
              continue
            }
          }
        }
      })

    const find = (submission: Provider.Submission) =>
      submission._tag !== "Lines" ? Effect.succeed(Option.none<Provider.RemoteBatch>()) : lookUp(submission)

    const submit = (submission: Provider.Submission) =>
      Effect.gen(function*() {
        if (submission._tag !== "Lines") {
          return yield* new ProviderError.ProviderError({
            provider: "anthropic",
            operation: "submit",
            reason: new ProviderError.Unsupported({ message: "Anthropic Message Batches take inline requests, not table jobs" })
          })
        }
        const previous = yield* journalOp("submit", () => Journal.read(submission.path, submission.batchId))
        if (previous !== undefined && (Ownership.held(previous) !== undefined || Ownership.ambiguous(previous).length > 0)) {
          // an earlier attempt may have gone through: look before sending again
          const found = yield* lookUp(submission)
          if (Option.isSome(found)) return found.value
        }
        const startedAt = yield* wallClock
        yield* journalOp("submit", () => Journal.begin(submission.path, submission.batchId, submission.count, startedAt))
        yield* Failpoint.hit("batch.uploaded")
        const batch = yield* create(submission).pipe(
          Effect.onExit((exit) =>
            Exit.isSuccess(exit) ? Effect.void : Effect.gen(function*() {
              // no answer: record when, and whether the API refused (then nothing was created)
              const refused = Exit.isFailure(exit) && Option.match(Cause.findErrorOption(exit.cause), {
                onNone: () => false,
                onSome: isRefusal
              })
              const endedAt = yield* wallClock
              yield* journalOp("submit", () => Journal.failed(submission.path, submission.batchId, startedAt, endedAt, refused)).pipe(
                Effect.catch((e) => Effect.logWarning(e.message))
              )
            })
          )
        )
        const at = yield* wallClock
        const created = Date.parse(batch.created_at)
        yield* journalOp("submit", () =>
          Journal.complete(submission.path, submission.batchId, startedAt, batch.id, at, Number.isFinite(created) ? created : null)
        ).pipe(Effect.catch((e) => Effect.logWarning(e.message)))
        return remoteOf(batch.id, at, submission)
      })

    // ----- status, results, cancel -----

    /** the `results_url` of a batch `status` saw ended, for the `results` call that follows (not retrieved twice) */
    const resultsUrls = new Map<string, string>()
    const status = (batch: Provider.RemoteBatch) =>
      withGrace(batch, call("messages.batches.retrieve", (signal) => client.messages.batches.retrieve(batch.id, {}, { signal })))
        .pipe(
          Effect.tap((remote) =>
            Effect.sync(() => {
              if (remote.results_url) resultsUrls.set(batch.id, remote.results_url)
              else resultsUrls.delete(batch.id)
            })
          ),
          Effect.tap(() => watch(batch)),
          Effect.map(toStatus)
        )

    /**
     * What the SDK's `messages.batches.results` does (the batch's `results_url`, read through the client), with the
     * lines split here: the SDK's line decoder scans the bytes one by one in JavaScript, a few µs a line.
     */
    const results = (batch: Provider.RemoteBatch) =>
      Stream.unwrap(
        withGrace(
          batch,
          call("messages.batches.results", async (signal) => {
            // the url the poll that saw the batch ended read (a download read again retrieves the batch anew)
            let url = resultsUrls.get(batch.id)
            resultsUrls.delete(batch.id)
            if (url === undefined) {
              const remote = await client.messages.batches.retrieve(batch.id, {}, { signal })
              if (!remote.results_url) {
                throw new Anthropic.AnthropicError(
                  `No batch \`results_url\`; Has it finished processing? ${remote.processing_status} - ${remote.id}`
                )
              }
              url = remote.results_url
            }
            return client.get(url, { headers: { Accept: "application/binary" }, signal }).asResponse()
          })
        ).pipe(
          Effect.map((response) =>
            Provider.responseLines(response, toProviderError("messages.batches.results")).pipe(
              // a line that is not JSON fails the download, as the SDK's decoder does (the results are read again)
              Stream.mapArrayEffect((lines) =>
                Effect.try({
                  try: () => Arr.map(lines, (line) => line.length === 0 ? undefined : decodeResult(JSON.parse(line))),
                  catch: toProviderError("messages.batches.results")
                })
              ),
              Stream.filter(Predicate.isNotUndefined)
            )
          )
        )
      )

    const cancel = (batch: Provider.RemoteBatch) =>
      call("messages.batches.cancel", (signal) => client.messages.batches.cancel(batch.id, {}, { signal })).pipe(Effect.asVoid)

    // ----- sync -----

    const syncLimit = options.syncLimit ?? AdaptiveLimit.make({ max: options.syncConcurrency ?? 8 })
    // synchronous calls go through a client whose every answer (the SDK's retries included) adjusts the limit
    const syncClient = client.withOptions({ fetch: syncLimit.fetch() })
    const sync = (text: string): Effect.Effect<Provider.LineResult, ProviderError.ProviderError> => {
      const { custom_id: customId, params } = JSON.parse(text) as RequestLine
      // the SDK refuses non-streaming calls it expects to take over 10 minutes unless given a timeout
      const timeout = Math.min(60 * MINUTE, Math.max(10 * MINUTE, (60 * MINUTE * params.max_tokens) / 128_000))
      return Effect.tryPromise({ try: (signal) => syncClient.messages.create(params, { signal, timeout }), catch: (cause) => cause }).pipe(
        Effect.map((message) => decodeMessage(customId, message)),
        Effect.catch((cause): Effect.Effect<Provider.LineResult, ProviderError.ProviderError> => {
          // an HTTP answer about this request is the line's result; a broken connection is an error to retry
          if (cause instanceof Anthropic.APIError && !(cause instanceof Anthropic.APIConnectionError) && cause.status !== undefined) {
            const type = cause.type ?? (cause.status >= 500 ? "api_error" : "invalid_request_error")
            const line = decodeError(customId, type, cause.apiMessage ?? cause.message, JSON.stringify(cause.error ?? null))
            return Effect.succeed(line._tag === "LineFailed" ? { ...line, status: cause.status } : line)
          }
          return Effect.fail(toProviderError("messages.create")(cause))
        }),
        syncLimit.withPermit
      )
    }

    return Provider.Provider.of({
      name: "anthropic",
      limits: { ...limits, ...options.limits },
      encode: encodeWith(encodeOptions),
      submit,
      find,
      status,
      results,
      cancel,
      decodeOutput,
      pollSchedule,
      sync
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
 * The adapter configured from the environment: `ANTHROPIC_API_KEY`
 * (required), `ANTHROPIC_BASE_URL` (optional), and the poll cadence
 * `OFFPEAK_POLL_INITIAL` / `OFFPEAK_POLL_MAX` (durations such as `5 seconds`,
 * default 5 seconds growing to 1 minute).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  config: Config.Config<Options> = Config.all({
    apiKey: Config.Redacted("ANTHROPIC_API_KEY"),
    baseURL: Config.String("ANTHROPIC_BASE_URL").pipe(Config.option, Config.map(Option.getOrUndefined)),
    pollInterval: Provider.pollIntervalConfig
  })
): Layer.Layer<Provider.Provider, Config.ConfigError> =>
  Layer.effect(Provider.Provider, Effect.flatMap(config, make))
