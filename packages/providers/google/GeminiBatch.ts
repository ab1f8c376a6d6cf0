/**
 * The Gemini API batch-mode adapter (Google AI Studio keys,
 * `generativelanguage.googleapis.com`), through the official
 * `@google/genai`. Also works with the local emulator: set `baseURL`.
 *
 * Protocol: a chat batch whose create body stays under the inline limit
 * (20 MB) is sent inline, each line an `InlinedRequest` carrying its custom
 * id in `metadata.key`; a larger one, and every embedding batch, is written
 * as a JSONL file (`{"key", "request"}` lines), uploaded through the Files
 * API (resumable upload) and created over it (`models/*:batchGenerateContent`
 * or `models/*:asyncBatchEmbedContent`). The batch's display name carries
 * offpeak's batch id, which is how {@link make}'s `find` recovers a batch
 * created just before a crash. Status is polled with a backoff schedule;
 * results are read from `metadata.output.inlinedResponses` or streamed from
 * the responses file, joined on the key, never on order (Google documents
 * input order; offpeak does not rely on it).
 *
 * **Details**
 *
 * - System messages become `systemInstruction` (one part each), user turns
 *   `user`, assistant turns `model`; `maxTokens` → `maxOutputTokens`, `stop`
 *   → `stopSequences`, `topP`, `temperature` and `seed` as they are.
 * - Structured output: `responseMimeType: "application/json"` and
 *   `responseJsonSchema`, the output schema's JSON Schema
 *   ({@link responseJsonSchema}); the answer is decoded with the matching
 *   codec (`decodeOutput`).
 * - Embeddings: `outputDimensionality` from `dimensions`; the answer's
 *   `embedding.values` as float32.
 * - `group` is the kind and the model (`generate gemini-2.5-flash`): the
 *   model is in the batch's URL, so one model per batch.
 * - A batch line is exactly one inlined request as the SDK sends it
 *   (`{"request": {...}, "metadata": {"key": ...}}`), so an inline create
 *   body is the batch's bytes plus about 150, and a file the batch's bytes
 *   less 13 a line: the Batcher's byte limit bounds both.
 * - Per-line errors are `google.rpc.Status`es (`{code, message}`, gRPC
 *   codes): `RESOURCE_EXHAUSTED`, `INTERNAL`, `UNAVAILABLE`,
 *   `DEADLINE_EXCEEDED`, `ABORTED`, `UNKNOWN` are retryable, `CANCELLED` is a
 *   retryable `cancelled`; the rest are final. A batch that ends
 *   `BATCH_STATE_SUCCEEDED` is never trusted as a whole: each line is read on
 *   its own, so "succeeded" with every line failed records every line failed.
 * - The uploaded input file is deleted once the batch's results were read
 *   (Files count against the project's storage quota until they expire).
 * - `sync` sends `models/*:generateContent` (or `:embedContent`, which the
 *   SDK sends as `:batchEmbedContents`) under an {@link AdaptiveLimit} that
 *   halves on a 429 (`RESOURCE_EXHAUSTED`) and waits out its `retry-after`
 *   header or RetryInfo `retryDelay`; 429s and 5xx are tried `maxRetries`
 *   more times before the line fails (retryable).
 *
 * **Gotchas of `@google/genai` 3.3.0 handled here**
 *
 * - In Gemini mode the SDK's `BatchJob` drops `batchStats`, `error` and
 *   `inputConfig` (its converter keeps name, display name, state, times,
 *   model and output): every batch call passes a fetch of its own
 *   (`httpOptions.fetch`) that keeps the response text, and the adapter
 *   reads the operation from it.
 * - `ApiError` carries the status and the error body (as its message) but no
 *   headers: the same fetch keeps the headers of an error answer, for
 *   `retry-after`; the body's RetryInfo `retryDelay` is read too.
 * - `files.download` only writes to a path, and pipes the body without
 *   passing a broken connection on (its promise never settles then): the
 *   responses file is streamed with a plain `fetch` of the same URL
 *   (`{base}/{version}/files/{id}:download?alt=media`, `x-goog-api-key`).
 * - `batches.createEmbeddings` logs an "experimental" warning on every call;
 *   it is silenced for that synchronous moment.
 * - The SDK's default API version is `v1`; the batch reference documents
 *   `v1beta`, which the adapter uses unless told otherwise (`apiVersion`).
 *
 * **Limits** ({@link limits}): the 20 MB inline limit is documented; the
 * rest (2 GB per input file, 100,000 requests per batch) are not verified
 * against an official page and are labelled so.
 *
 * @since 0.1.0
 */
import { Files } from "../local/Kit.ts"
import { ApiError, GoogleGenAI } from "@google/genai"
import type { GenerateContentConfig, GenerateContentResponse, InlinedRequest } from "@google/genai"
import * as AdaptiveLimit from "@offpeak/core/AdaptiveLimit"
import * as Failpoint from "@offpeak/core/Failpoint"
import * as Provider from "@offpeak/core/Provider"
import * as ProviderError from "@offpeak/core/ProviderError"
import * as StreamingFetch from "@offpeak/core/StreamingFetch"
import * as Telemetry from "@offpeak/core/Telemetry"
import type * as Request from "@offpeak/core/Request"
import type { FailureKind, Usage } from "@offpeak/core/Result"
import { Config, Duration, Effect, Layer, Option, Predicate, Redacted, Result, Schedule, Schema, Stream } from "effect"
import * as AnthropicStructuredOutput from "effect/ai/AnthropicStructuredOutput"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Wire from "./internal/geminiWire.ts"

// ===== Options =====

/**
 * Options of the adapter.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  readonly apiKey: Redacted.Redacted<string>
  /** e.g. `https://generativelanguage.googleapis.com` (the default) or the local emulator's URL */
  readonly baseURL?: string | undefined
  /** the API version in every path (default `v1beta`, the batch reference's) */
  readonly apiVersion?: string | undefined
  /** first and longest pause between two status polls */
  readonly pollInterval?: { readonly initial: Duration.Input; readonly max: Duration.Input } | undefined
  /** tighter limits than the API's (see {@link limits}) */
  readonly limits?: Partial<Provider.Limits> | undefined
  /** a chat batch whose create body would be larger goes as an uploaded file (default {@link INLINE_MAX_BYTES}) */
  readonly inlineMaxBytes?: number | undefined
  /** how many more times a synchronous call answered 429 or 5xx is sent (default 3) */
  readonly maxRetries?: number | undefined
  /**
   * synchronous calls at once (`sync`, default 8): the most the adaptive limit allows; it halves on a 429 and
   * waits out `retry-after` / `retryDelay`, then grows back by one after as many answers in a row
   */
  readonly syncConcurrency?: number | undefined
  /** the adaptive limit of synchronous calls, to share one between adapters (default: one of `syncConcurrency`) */
  readonly syncLimit?: AdaptiveLimit.AdaptiveLimit | undefined
}

/**
 * The Gemini API's endpoint.
 *
 * @since 0.1.0
 * @category constants
 */
export const DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"

/**
 * The largest inline create body: "keep the total request under 20 MB"
 * (the batch-mode guide), read as decimal megabytes.
 *
 * @since 0.1.0
 * @category constants
 */
export const INLINE_MAX_BYTES = 20_000_000

/**
 * The API's limits as far as they are known:
 *
 * - `maxBytes` 2 GB per input file: **unverified** (third-party sources; no
 *   official page in the reference).
 * - `maxRequests` 100,000: **unverified** (no documented count limit; kept
 *   finite so a batch's results stay a manageable download).
 * - `maxRequestBytes`: one request must fit an inline create body and a
 *   synchronous call (20 MB, documented), less room for the wrapper.
 * - `maxInFlight` 4: offpeak's default, not an API limit.
 *
 * @since 0.1.0
 * @category constants
 */
export const limits: Provider.Limits = {
  maxRequests: 100_000,
  maxBytes: 2_000_000_000,
  maxRequestBytes: INLINE_MAX_BYTES - 4096,
  maxInFlight: 4
}

/**
 * The display name a batch is created with: it carries offpeak's batch id,
 * so `find` can tell our batch after a crash (a hash of it when it would be
 * longer than 128 characters, a length the API is not documented to accept).
 *
 * @since 0.1.0
 * @category encoding
 */
export const displayNameOf = (batchId: string): string => {
  const name = `offpeak ${batchId}`
  return name.length <= 128 ? name : `offpeak #${crypto.createHash("sha256").update(batchId).digest("hex").slice(0, 40)}`
}

// ===== Encoding =====

interface Structured {
  readonly codec: Schema.Codec<unknown, unknown>
  readonly jsonSchema: unknown
}

const structured = new WeakMap<object, Structured>()

/** JSON Schema keywords `responseJsonSchema` takes (per the structured-output guide; not verified against the API) */
const KEYWORDS = new Set([
  "$ref",
  "$defs",
  "type",
  "title",
  "description",
  "enum",
  "format",
  "items",
  "prefixItems",
  "minItems",
  "maxItems",
  "minimum",
  "maximum",
  "anyOf",
  "oneOf",
  "properties",
  "additionalProperties",
  "required",
  "propertyOrdering"
])

const toGemini = (node: unknown): unknown => {
  if (Array.isArray(node)) return node.map(toGemini)
  if (typeof node !== "object" || node === null) return node
  const out: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(node)) {
    if (key === "const") out.enum = [value]
    else if (key === "properties" || key === "$defs") {
      out[key] = Object.fromEntries(Object.entries(value as Record<string, unknown>).map(([k, v]) => [k, toGemini(v)]))
    } else if (KEYWORDS.has(key)) out[key] = key === "enum" || key === "required" || key === "propertyOrdering" ? value : toGemini(value)
  }
  return out
}

const structuredFor = (schema: Schema.Codec<unknown, any>): Structured => {
  let entry = structured.get(schema)
  if (entry === undefined) {
    // Anthropic's subset is Gemini's but for `const` (→ a one-value `enum`), `allOf` and `pattern` (left to the codec)
    const { codec, jsonSchema } = AnthropicStructuredOutput.toCodecAnthropic(schema as any) as {
      readonly codec: Schema.Codec<unknown, unknown>
      readonly jsonSchema: unknown
    }
    entry = { codec, jsonSchema: toGemini(jsonSchema) }
    structured.set(schema, entry)
  }
  return entry
}

/**
 * The `responseJsonSchema` of an output schema.
 *
 * @since 0.1.0
 * @category encoding
 */
export const responseJsonSchema = (schema: Schema.Codec<unknown, any>): unknown => structuredFor(schema).jsonSchema

const modelPath = (model: string) => model.startsWith("models/") || model.startsWith("tunedModels/") ? model : `models/${model}`

/**
 * The batch request of a chat request (`GenerateContentRequest`). Throws when
 * Gemini cannot take it (no user or assistant turn).
 *
 * @since 0.1.0
 * @category encoding
 */
export const generateContentRequest = (request: Request.Chat): Wire.GenerateContentRequest => {
  const system: Array<Wire.Part> = []
  const contents: Array<Wire.Content> = []
  for (const m of request.messages) {
    if (m.role === "system") system.push({ text: m.content })
    else contents.push({ parts: [{ text: m.content }], role: m.role === "assistant" ? "model" : "user" })
  }
  if (contents.length === 0) throw new Error("Gemini needs at least one user or assistant message; this request has only system messages")
  const p = request.params
  const generationConfig: Wire.GenerationConfig = {}
  if (p.temperature !== undefined) generationConfig.temperature = p.temperature
  if (p.topP !== undefined) generationConfig.topP = p.topP
  if (p.maxTokens !== undefined) generationConfig.maxOutputTokens = p.maxTokens
  if (p.stop !== undefined && p.stop.length > 0) generationConfig.stopSequences = [...p.stop]
  if (p.seed !== undefined) generationConfig.seed = p.seed
  if (request.output !== undefined) {
    generationConfig.responseMimeType = "application/json"
    generationConfig.responseJsonSchema = structuredFor(request.output.schema).jsonSchema
  }
  return {
    model: modelPath(request.model),
    contents,
    ...(system.length > 0 ? { systemInstruction: { parts: system } } : {}),
    generationConfig
  }
}

/**
 * The batch line of a request: one inlined request, its custom id in
 * `metadata.key`.
 *
 * @since 0.1.0
 * @category encoding
 */
export const batchLine = (request: Request.Request, customId: string): Wire.BatchLine => ({
  request: request._tag === "Chat"
    ? generateContentRequest(request)
    : {
      model: modelPath(request.model),
      content: { parts: [{ text: request.input }] },
      ...(request.dimensions !== undefined ? { outputDimensionality: request.dimensions } : {})
    },
  metadata: { key: customId }
})

/**
 * Encodes a request as a batch line; `group` is `generate <model>` or `embed <model>`.
 *
 * @since 0.1.0
 * @category encoding
 */
export const encode = (request: Request.Request, customId: string): Result.Result<Provider.Encoded, string> => {
  try {
    const text = JSON.stringify(batchLine(request, customId))
    return Result.succeed({
      line: text,
      bytes: Provider.lineBytes(text),
      group: `${request._tag === "Chat" ? "generate" : "embed"} ${request.model}`
    })
  } catch (error) {
    return Result.fail(`cannot encode the request for Gemini: ${error instanceof Error ? error.message : String(error)}`)
  }
}

const decodedMessage = (cause: unknown): string => {
  const text = String(cause)
  const match = /SchemaError[^:]*: ([\s\S]*)/.exec(text)
  return (match?.[1] ?? text).trim().split("\n").slice(0, 6).join("; ")
}

/**
 * Decodes a structured-output answer (JSON text) with the request's schema.
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
  const decoded = Schema.decodeUnknownExit(structuredFor(output.schema).codec)(json)
  return decoded._tag === "Success"
    ? Result.succeed(decoded.value)
    : Result.fail(`the answer does not match ${output.name}: ${decodedMessage(decoded.cause)}`)
}

/**
 * The `InlinedRequest` (the SDK's form) of a chat batch line: what
 * `ai.batches.create` turns back into exactly that line.
 *
 * @since 0.1.0
 * @category encoding
 */
export const inlinedRequest = (line: Wire.BatchLine): InlinedRequest => {
  const request = line.request as Wire.GenerateContentRequest
  const config: GenerateContentConfig = { ...request.generationConfig }
  if (request.systemInstruction !== undefined) {
    config.systemInstruction = request.systemInstruction as NonNullable<GenerateContentConfig["systemInstruction"]>
  }
  return {
    model: request.model,
    contents: request.contents as NonNullable<InlinedRequest["contents"]>,
    metadata: { key: line.metadata.key },
    config
  }
}

// ===== Status =====

/** the JSON of a batch `Operation`, as far as offpeak reads it */
interface OperationJson {
  readonly name?: string
  readonly done?: boolean
  readonly error?: { readonly code?: number; readonly message?: string }
  readonly metadata?: {
    readonly displayName?: string
    readonly state?: string
    readonly createTime?: string
    readonly inputConfig?: { readonly fileName?: string }
    readonly batchStats?: Readonly<Record<string, string | number | undefined>>
    readonly output?: {
      readonly responsesFile?: string
      readonly inlinedResponses?: { readonly inlinedResponses?: ReadonlyArray<unknown> }
      readonly inlinedEmbedContentResponses?: { readonly inlinedResponses?: ReadonlyArray<unknown> }
    }
  }
}

const stateOf = (state: string | undefined): Provider.State => {
  switch (state?.replace(/^(BATCH|JOB)_STATE_/, "")) {
    case "RUNNING":
      return "running"
    case "SUCCEEDED":
      return "completed"
    case "FAILED":
      return "failed"
    case "CANCELLED":
      return "cancelled"
    case "EXPIRED":
      return "expired"
    default:
      // UNSPECIFIED, PENDING, QUEUED
      return "validating"
  }
}

const int64 = (u: unknown): number => {
  const n = typeof u === "string" ? Number(u) : typeof u === "number" ? u : 0
  return Number.isFinite(n) ? n : 0
}

/**
 * The provider-neutral status of a batch operation: `BATCH_STATE_PENDING` is
 * validating, `_RUNNING` running, `_SUCCEEDED` completed, `_FAILED` failed
 * (its `error` the issue, with the input line when the message names one),
 * `_CANCELLED` cancelled, `_EXPIRED` expired (the SDK's `JOB_STATE_*` names
 * are read too). Counts are the int64 strings of `batchStats`, absent ones 0.
 *
 * @since 0.1.0
 * @category decoding
 */
export const toStatus = (op: OperationJson): Provider.Status => {
  const m = op.metadata ?? {}
  const state = stateOf(m.state)
  const stats = m.batchStats ?? {}
  const error = op.error
  const issues: Array<Provider.Issue> = []
  if (state === "failed") {
    const code = typeof error?.code === "number" ? Wire.CODE_NAMES[error.code] ?? String(error.code) : "FAILED"
    const message = error?.message ?? "the batch failed with no message"
    const line = /\bline (\d+)\b/.exec(message)
    issues.push({ code, message, ...(line !== null ? { line: Number(line[1]) } : {}) })
  }
  return {
    state,
    providerState: m.state ?? "BATCH_STATE_UNSPECIFIED",
    counts: {
      total: int64(stats.requestCount),
      completed: int64(stats.successfulRequestCount),
      failed: int64(stats.failedRequestCount)
    },
    issues
  }
}

// ===== Results =====

const RETRYABLE_CODES = new Set([2, 4, 8, 10, 13, 14])

/**
 * A line failure from a `google.rpc.Status` (`{code, message}` with a gRPC
 * code; an HTTP status in `code`, or a status name in `status`, is read too).
 *
 * @since 0.1.0
 * @category decoding
 */
export const decodeStatus = (id: string, status: unknown, raw?: string): Provider.LineResult => {
  const s = (typeof status === "object" && status !== null ? status : {}) as { code?: unknown; message?: unknown; status?: unknown }
  let code = typeof s.code === "number" ? s.code : typeof s.status === "string" ? Wire.codeOfName(s.status) ?? 2 : 2
  // an HTTP status where a gRPC code belongs
  if (code >= 100) code = Wire.codeOfName(typeof s.status === "string" ? s.status : Wire.statusNameOfHttp(code)) ?? 2
  const name = Wire.CODE_NAMES[code] ?? String(code)
  const kind: FailureKind = code === 1 ? "cancelled" : "provider_error"
  return {
    _tag: "LineFailed",
    id,
    kind,
    retryable: code === 1 || RETRYABLE_CODES.has(code),
    status: Wire.HTTP_OF_CODE[code] ?? 500,
    message: `${name} (${code}): ${typeof s.message === "string" ? s.message : "no message"}`,
    ...(raw !== undefined ? { raw: Provider.clipRaw(raw) } : {})
  }
}

const finishReasonOf = (r: unknown): Provider.ChatResponse["finishReason"] => {
  switch (r) {
    case undefined:
    case null:
    case "STOP":
    case "FINISH_REASON_UNSPECIFIED":
      return "stop"
    case "MAX_TOKENS":
      return "length"
    case "SAFETY":
    case "RECITATION":
    case "BLOCKLIST":
    case "PROHIBITED_CONTENT":
    case "SPII":
    case "IMAGE_SAFETY":
      return "content_filter"
    default:
      return "other"
  }
}

interface ResponseJson {
  readonly candidates?: ReadonlyArray<{
    readonly content?: { readonly parts?: ReadonlyArray<{ readonly text?: string; readonly thought?: boolean }> }
    readonly finishReason?: string
  }>
  readonly promptFeedback?: { readonly blockReason?: string }
  readonly usageMetadata?: {
    readonly promptTokenCount?: number
    readonly candidatesTokenCount?: number
    readonly thoughtsTokenCount?: number
    readonly cachedContentTokenCount?: number
  }
  readonly embedding?: { readonly values?: ReadonlyArray<number> }
  readonly tokenCount?: string | number
}

const usageOf = (u: ResponseJson["usageMetadata"]): Usage => {
  if (u === undefined) return { inputTokens: 0, outputTokens: 0 }
  return {
    inputTokens: u.promptTokenCount ?? 0,
    outputTokens: (u.candidatesTokenCount ?? 0) + (u.thoughtsTokenCount ?? 0),
    ...(typeof u.cachedContentTokenCount === "number" ? { cachedInputTokens: u.cachedContentTokenCount } : {})
  }
}

/**
 * The answer of a `GenerateContentResponse` (text parts of the first
 * candidate, thoughts left out; a blocked prompt is an empty
 * `content_filter` answer) or of an embedding response.
 *
 * @since 0.1.0
 * @category decoding
 */
export const decodeResponse = (id: string, response: unknown, raw?: string): Provider.LineResult => {
  const r = (typeof response === "object" && response !== null ? response : {}) as ResponseJson
  if (r.embedding !== undefined) {
    const values = r.embedding.values
    if (!Array.isArray(values)) {
      return { _tag: "LineFailed", id, kind: "provider_error", retryable: false, message: "no embedding values", ...(raw !== undefined ? { raw: Provider.clipRaw(raw) } : {}) }
    }
    const tokens = r.usageMetadata?.promptTokenCount ?? int64(r.tokenCount)
    return {
      _tag: "LineSucceeded",
      id,
      response: { _tag: "EmbeddingResponse", vector: Float32Array.from(values), usage: { inputTokens: tokens, outputTokens: 0 } }
    }
  }
  const candidate = r.candidates?.[0]
  if (candidate === undefined) {
    if (r.promptFeedback?.blockReason !== undefined) {
      return {
        _tag: "LineSucceeded",
        id,
        response: { _tag: "ChatResponse", text: "", finishReason: "content_filter", usage: usageOf(r.usageMetadata) }
      }
    }
    return { _tag: "LineFailed", id, kind: "provider_error", retryable: false, message: "no candidates", ...(raw !== undefined ? { raw: Provider.clipRaw(raw) } : {}) }
  }
  const text = (candidate.content?.parts ?? []).filter((p) => p.thought !== true).map((p) => p.text ?? "").join("")
  return {
    _tag: "LineSucceeded",
    id,
    response: { _tag: "ChatResponse", text, finishReason: finishReasonOf(candidate.finishReason), usage: usageOf(r.usageMetadata) }
  }
}

/**
 * Decodes one result: a line of a responses file (`{"key", "response" |
 * "error" | "status"}`) or an inlined response (`{"response" | "error",
 * "metadata": {"key"}}`). `undefined` when it names no key (it cannot be
 * joined to anything).
 *
 * @since 0.1.0
 * @category decoding
 */
export const decodeEntry = (entry: unknown, raw?: () => string): Provider.LineResult | undefined => {
  if (typeof entry !== "object" || entry === null) return undefined
  const e = entry as { key?: unknown; metadata?: { key?: unknown }; response?: unknown; error?: unknown; status?: unknown }
  const key = typeof e.key === "string" ? e.key : typeof e.metadata?.key === "string" ? e.metadata.key : undefined
  if (key === undefined) return undefined
  const failure = e.error ?? (typeof e.status === "object" ? e.status : undefined)
  if (failure !== undefined && failure !== null) return decodeStatus(key, failure, raw?.())
  if (e.response === undefined || e.response === null) {
    return { _tag: "LineFailed", id: key, kind: "provider_error", retryable: false, message: "neither a response nor an error", raw: Provider.clipRaw(raw?.() ?? JSON.stringify(entry)) }
  }
  return decodeResponse(key, e.response, raw?.())
}

/**
 * Decodes one line of a responses file. `undefined` for a blank or unreadable
 * line, or one without a key.
 *
 * @since 0.1.0
 * @category decoding
 */
export const decodeFileLine = (text: string): Provider.LineResult | undefined => {
  if (text.trim().length === 0) return undefined
  let entry: unknown
  try {
    entry = JSON.parse(text)
  } catch {
    return undefined
  }
  return decodeEntry(entry, () => text)
}

// ===== Errors =====

/** what a call's own fetch saw: the body text of a success (when asked for), the headers of an error answer */
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

/** `STATUS: message` of a Google error body, or the raw message */
const errorMessage = (body: unknown, fallback: string) => {
  const error = (body as { error?: { message?: unknown; status?: unknown } } | undefined)?.error
  if (typeof error?.message !== "string") return fallback
  return typeof error.status === "string" ? `${error.status}: ${error.message}` : error.message
}

const toProviderError = (operation: string, seen?: Seen) => (cause: unknown): ProviderError.ProviderError => {
  if (cause instanceof ApiError) {
    const body = errorBodyOf(cause)
    const retryAfter = ProviderError.retryAfterMs(seen?.headers) ?? Wire.retryDelayMs(body)
    const status = (body as { error?: { status?: unknown } } | undefined)?.error?.status
    return new ProviderError.ProviderError({
      provider: "gemini",
      operation,
      reason: ProviderError.reasonOfStatus(cause.status, errorMessage(body, cause.message), {
        retryAfterMs: retryAfter,
        code: typeof status === "string" ? status : undefined
      })
    })
  }
  return new ProviderError.ProviderError({ provider: "gemini", operation, reason: ProviderError.reasonOfFailure(cause) })
}

const localError = (operation: string, message: string) =>
  new ProviderError.ProviderError({ provider: "gemini", operation, reason: new ProviderError.Protocol({ message }) })

// ===== Constructors =====

const MINUTE = 60_000
/** how far before a batch was sealed (local clock) its remote batch may look created, for clock skew */
const SKEW_MS = 10 * MINUTE
/** at most this many list pages are read when looking for a batch */
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
        wait = Wire.retryDelayMs(JSON.parse(await response.clone().text()))
      } catch {
        wait = undefined
      }
    }
    limit.overloaded(wait)
  } else if (response.ok) limit.succeeded()
  return response
}

/**
 * Builds the adapter.
 *
 * **Finding a batch after a crash**: `submit` creates every batch with the
 * display name {@link displayNameOf} its offpeak batch id; `find` lists the
 * batches (up to 50 pages of 100) and adopts the one with that name. It
 * stops early at a page whose batches were all created more than 10 minutes
 * before the local batch was sealed, once the list has shown itself newest
 * first (the order is not documented). Creating a batch is never retried by
 * the SDK itself (no `retryOptions`): the runner calls `find` before it
 * sends again.
 *
 * @example
 * ```ts
 * const provider = yield* GeminiBatch.make({ apiKey: Redacted.make(process.env.GEMINI_API_KEY!) })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options): Effect.Effect<Provider.Service> =>
  Effect.sync(() => {
    const baseUrl = (options.baseURL ?? DEFAULT_BASE_URL).replace(/\/+$/, "")
    const apiVersion = options.apiVersion ?? "v1beta"
    const apiKey = Redacted.value(options.apiKey)
    const ai = new GoogleGenAI({ apiKey, vertexai: false, httpOptions: { baseUrl, apiVersion } })
    const pollSchedule = Provider.pollSchedule(options.pollInterval ?? { initial: "5 seconds", max: "1 minute" })
    const inlineMax = options.inlineMaxBytes ?? INLINE_MAX_BYTES

    /**
     * A call through the SDK with a fetch of its own that keeps what the SDK
     * drops: the response text (with `keepText`) and the headers of an error.
     */
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
      }).pipe(Telemetry.providerCall("gemini", operation))

    /** the operation JSON a call answered with */
    const operationOf = (operation: string, text: string | undefined) =>
      Effect.try({
        try: () => JSON.parse(text ?? "") as OperationJson,
        catch: () => localError(operation, `the answer is not an operation: ${Provider.clipRaw(text ?? "(empty)")}`)
      })

    /**
     * A batch's operation, read with a plain fetch and parsed once: through the SDK an ended inline batch's responses
     * would be held three times over (its text, its parse, its conversion), and they can be tens of megabytes.
     */
    const getOperation = (name: string) =>
      restCall("batches.get", "GET", name).pipe(Effect.flatMap((text) => operationOf("batches.get", text)))

    /**
     * One call of the REST API with a plain fetch: the answer's text, or the error the SDK would have raised. A body
     * made by `body` (each attempt reads it anew) is streamed with backpressure (`StreamingFetch`), never held.
     */
    const restCall = (operation: string, method: "GET" | "POST", resource: string, body?: () => AsyncIterable<Uint8Array>) =>
      Effect.suspend(() => {
        const seen: Seen = { text: undefined, headers: undefined }
        return Effect.tryPromise({
          try: async (signal) => {
            const response = await StreamingFetch.fetch(`${baseUrl}/${apiVersion}/${resource}`, {
              method,
              headers: { "x-goog-api-key": apiKey, ...(body !== undefined ? { "content-type": "application/json" } : {}) },
              // `duplex` for the global fetch, which takes a streamed body only with it (behind a proxy)
              ...(body !== undefined ? { body: body() as unknown as ReadableStream, duplex: "half" } : {}),
              signal
            } as RequestInit)
            const text = await response.text()
            if (!response.ok) {
              seen.headers = response.headers
              throw new ApiError({ message: text, status: response.status })
            }
            return text
          },
          catch: toProviderError(operation, seen)
        })
      }).pipe(Telemetry.providerCall("gemini", operation))

    const remoteOf = (op: OperationJson, fallbackName?: string): Provider.RemoteBatch => {
      const file = op.metadata?.inputConfig?.fileName
      return { id: op.name ?? fallbackName ?? "", ...(file !== undefined ? { meta: { inputFile: file } } : {}) }
    }

    // ----- submit and find -----

    /** the batch file as an input file of `{"key", "request"}` lines, in a temp file removed with the scope */
    const inputFile = (submission: Provider.Lines) =>
      Effect.acquireRelease(
        Effect.gen(function*() {
          const temp = path.join(os.tmpdir(), `offpeak-gemini-${process.pid}-${crypto.randomBytes(6).toString("hex")}.jsonl`)
          const fd = fs.openSync(temp, "w")
          try {
            let pending: Array<string> = []
            let size = 0
            yield* Files.forEachLine(submission.path, (data, start, end) => {
              if (end === start) return
              const line = Wire.toFileLine(data.toString("utf8", start, end)) + "\n"
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
        }).pipe(Effect.mapError((e) => localError("files.upload", `cannot write the input file: ${String(e)}`))),
        (temp) => Effect.sync(() => fs.rmSync(temp, { force: true }))
      )

    const uploadFile = (submission: Provider.Lines, displayName: string) =>
      Effect.scoped(
        Effect.gen(function*() {
          const temp = yield* inputFile(submission)
          const { value } = yield* call("files.upload", false, (httpOptions, abortSignal) =>
            ai.files.upload({ file: temp, config: { mimeType: "jsonl", displayName, httpOptions, abortSignal } }))
          if (typeof value.name !== "string") return yield* localError("files.upload", "the uploaded file has no name")
          return value.name
        })
      )

    /** the kind and model of a batch's group, and whether its create body carries its requests inline */
    const shapeOf = (submission: Provider.Lines) => {
      const [kind, ...rest] = submission.group.split(" ")
      const displayName = displayNameOf(submission.batchId)
      // the inline create body: the lines joined by commas in a wrapper with the display name
      const inline = kind === "generate" && submission.bytes + 256 + displayName.length <= inlineMax
      return { kind, model: rest.join(" "), displayName, inline }
    }

    /** a batch's input file uploaded: its name */
    const uploadNamed = (submission: Provider.Lines, displayName: string) =>
      Effect.tap(uploadFile(submission, displayName), () => Failpoint.hit("batch.uploaded"))

    /** a batch over the inline limit: its input file uploaded, its name answered; an inline batch uploads nothing */
    const upload = (submission: Provider.Lines) =>
      Effect.suspend(() => {
        const { displayName, inline } = shapeOf(submission)
        return inline ? Effect.succeed(undefined) : uploadNamed(submission, displayName)
      })

    const submit = (submission: Provider.Submission) =>
      Effect.gen(function*() {
        if (submission._tag !== "Lines") {
          return yield* new ProviderError.ProviderError({
            provider: "gemini",
            operation: "submit",
            reason: new ProviderError.Unsupported({ message: "the Gemini API's batch mode takes inline requests or files, not table jobs" })
          })
        }
        const { kind, model, displayName, inline } = shapeOf(submission)
        if (inline) {
          // each line is already the request as the API takes it (what `ai.batches.create` makes of
          // `inlinedRequest(line)`): the body is streamed from the file around them, never parsed, converted or held
          const head = `{"batch":{"displayName":${JSON.stringify(displayName)},"inputConfig":{"requests":{"requests":[`
          yield* Failpoint.hit("batch.uploaded")
          const text = yield* restCall(
            "batches.create",
            "POST",
            `${modelPath(model)}:batchGenerateContent`,
            () => Files.joinedLines(submission.path, head, "]}}}}")
          )
          return remoteOf(yield* operationOf("batches.create", text))
        }
        const fileName = submission.uploaded ?? (yield* uploadNamed(submission, displayName))
        const { text } = kind === "embed"
          ? yield* call("batches.createEmbeddings", true, (httpOptions, abortSignal) => {
            // the SDK warns "experimental" on every call, synchronously: silenced for that moment only
            const warn = console.warn
            console.warn = () => {}
            try {
              return ai.batches.createEmbeddings({ model, src: { fileName }, config: { displayName, httpOptions, abortSignal } })
            } finally {
              console.warn = warn
            }
          })
          : yield* call("batches.create", true, (httpOptions, abortSignal) =>
            ai.batches.create({ model, src: fileName, config: { displayName, httpOptions, abortSignal } }))
        const op = yield* operationOf("batches.create", text)
        return { id: op.name ?? "", meta: { inputFile: fileName } } satisfies Provider.RemoteBatch
      })

    const find = (submission: Provider.Submission) =>
      Effect.gen(function*() {
        const tag = displayNameOf(submission.batchId)
        const since = submission.sealedAt - SKEW_MS
        let pageToken: string | undefined = undefined
        let newestFirst = true
        let previous = Number.POSITIVE_INFINITY
        for (let page = 0; page < MAX_PAGES; page++) {
          const token: string | undefined = pageToken
          const { text }: { readonly text: string | undefined } = yield* call("batches.list", true, (httpOptions, abortSignal) =>
            ai.batches.list({ config: { pageSize: 100, ...(token !== undefined ? { pageToken: token } : {}), httpOptions, abortSignal } }))
          const list: { operations?: ReadonlyArray<OperationJson>; nextPageToken?: string } = yield* Effect.try({
            try: () => JSON.parse(text ?? "") as { operations?: ReadonlyArray<OperationJson>; nextPageToken?: string },
            catch: () => localError("batches.list", `the answer is not a list: ${Provider.clipRaw(text ?? "(empty)")}`)
          })
          const operations = list.operations ?? []
          let allOlder = operations.length > 0
          for (const op of operations) {
            if (op.metadata?.displayName === tag) return Option.some(remoteOf(op))
            const created = Date.parse(op.metadata?.createTime ?? "")
            if (!(created < since)) allOlder = false
            if (Number.isFinite(created)) {
              if (created > previous) newestFirst = false
              previous = created
            }
          }
          if (list.nextPageToken === undefined || list.nextPageToken === "") break
          if (allOlder && newestFirst) break
          pageToken = list.nextPageToken
        }
        return Option.none<Provider.RemoteBatch>()
      })

    // ----- status, results, cancel -----

    /** the operation of a batch `status` saw ended, kept for the `results` call that follows (not fetched twice) */
    const ended = new Map<string, OperationJson>()
    const status = (batch: Provider.RemoteBatch) =>
      Effect.map(getOperation(batch.id), (op) => {
        const s = toStatus(op)
        if (Provider.isTerminal(s.state)) ended.set(batch.id, op)
        else ended.delete(batch.id)
        return s
      })

    /** streams a responses file: a plain fetch of the SDK's download URL (see the module's gotchas) */
    const download = (fileName: string): Stream.Stream<Provider.LineResult, ProviderError.ProviderError> =>
      Stream.unwrap(
        Effect.tryPromise({
          try: async (signal) => {
            const id = fileName.replace(/^files\//, "")
            const response = await globalThis.fetch(`${baseUrl}/${apiVersion}/files/${id}:download?alt=media`, {
              headers: { "x-goog-api-key": apiKey },
              signal
            })
            if (!response.ok) {
              const text = await response.text()
              throw new ApiError({ message: text, status: response.status })
            }
            return response
          },
          catch: toProviderError("files.download")
        }).pipe(
          Effect.map((response) =>
            Provider.responseLines(response, toProviderError("files.download")).pipe(
              Stream.map(decodeFileLine),
              Stream.filter(Predicate.isNotUndefined)
            )
          )
        )
      )

    /** the uploaded input file is not needed once the batch ended: best effort, it expires anyway */
    const deleteInput = (op: OperationJson, batch: Provider.RemoteBatch) => {
      const file = op.metadata?.inputConfig?.fileName ?? batch.meta?.inputFile
      return file === undefined ? Effect.void : call("files.delete", false, (httpOptions, abortSignal) =>
        ai.files.delete({ name: file, config: { httpOptions, abortSignal } })).pipe(Effect.ignore)
    }

    const results = (batch: Provider.RemoteBatch) =>
      Stream.unwrap(
        Effect.suspend(() => {
          const op = ended.get(batch.id)
          ended.delete(batch.id)
          return op !== undefined ? Effect.succeed(op) : getOperation(batch.id)
        }).pipe(
          Effect.map((op) => {
            const output = op.metadata?.output
            const inline = output?.inlinedResponses?.inlinedResponses ?? output?.inlinedEmbedContentResponses?.inlinedResponses
            const lines = output?.responsesFile !== undefined
              ? download(output.responsesFile)
              : Array.isArray(inline)
              ? Stream.fromIterable(inline).pipe(
                Stream.map((entry) => decodeEntry(entry, () => JSON.stringify(entry))),
                Stream.filter(Predicate.isNotUndefined)
              )
              : Stream.empty
            return Stream.concat(lines, Stream.fromEffect(deleteInput(op, batch)).pipe(Stream.drain))
          })
        )
      )

    const cancel = (batch: Provider.RemoteBatch) =>
      call("batches.cancel", false, (httpOptions, abortSignal) => ai.batches.cancel({ name: batch.id, config: { httpOptions, abortSignal } })).pipe(
        Effect.asVoid
      )

    // ----- sync -----

    const syncLimit = options.syncLimit ?? AdaptiveLimit.make({ max: options.syncConcurrency ?? 8 })
    // synchronous calls go through a client whose every answer adjusts the limit
    const syncAi = new GoogleGenAI({ apiKey, vertexai: false, httpOptions: { baseUrl, apiVersion, fetch: limitedFetch(syncLimit) } })
    const maxRetries = Math.max(0, options.maxRetries ?? 3)
    const sync = (text: string): Effect.Effect<Provider.LineResult, ProviderError.ProviderError> => {
      const line = JSON.parse(text) as Wire.BatchLine
      const key = line.metadata.key
      const request = line.request
      const send = (abortSignal: AbortSignal): Promise<Provider.LineResult> =>
        Wire.isEmbed(request)
          ? syncAi.models.embedContent({
            model: request.model,
            contents: [request.content as never],
            config: { ...(request.outputDimensionality !== undefined ? { outputDimensionality: request.outputDimensionality } : {}), abortSignal }
          }).then((r) => decodeResponse(key, { embedding: r.embeddings?.[0], usageMetadata: r.usageMetadata }))
          : syncAi.models.generateContent({
            model: request.model,
            contents: request.contents as never,
            config: { ...inlinedRequest(line).config, abortSignal }
          }).then((r: GenerateContentResponse) => decodeResponse(key, r))
      const attempt = Effect.tryPromise({ try: send, catch: (cause) => cause }).pipe(syncLimit.withPermit)
      return attempt.pipe(
        Effect.retry({
          while: (cause) => cause instanceof ApiError && SYNC_RETRY.has(cause.status),
          times: maxRetries,
          schedule: Schedule.exponential("200 millis", 2).pipe(Schedule.jittered)
        }),
        Effect.catch((cause): Effect.Effect<Provider.LineResult, ProviderError.ProviderError> => {
          // an HTTP answer about this request is the line's result; a broken connection is an error to retry
          if (cause instanceof ApiError) {
            const body = errorBodyOf(cause) as { error?: { message?: unknown; status?: unknown } } | undefined
            const name = typeof body?.error?.status === "string" ? body.error.status : Wire.statusNameOfHttp(cause.status)
            const failed = decodeStatus(key, { code: Wire.codeOfName(name) ?? 2, message: body?.error?.message ?? cause.message }, cause.message)
            return Effect.succeed(failed._tag === "LineFailed" ? { ...failed, status: cause.status } : failed)
          }
          return Effect.fail(toProviderError(Wire.isEmbed(request) ? "models.embedContent" : "models.generateContent")(cause))
        })
      )
    }

    return Provider.Provider.of({
      name: "gemini",
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
 * The adapter configured from the environment: `GEMINI_API_KEY` (or
 * `GOOGLE_API_KEY`, required), `GOOGLE_GEMINI_BASE_URL` (optional, the SDK's
 * own variable), and the poll cadence `OFFPEAK_POLL_INITIAL` /
 * `OFFPEAK_POLL_MAX` (durations such as `5 seconds`, default 5 seconds
 * growing to 1 minute).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  config: Config.Config<Options> = Config.all({
    apiKey: Config.Redacted("GEMINI_API_KEY").pipe(Config.orElse(() => Config.Redacted("GOOGLE_API_KEY"))),
    baseURL: Config.String("GOOGLE_GEMINI_BASE_URL").pipe(Config.option, Config.map(Option.getOrUndefined)),
    pollInterval: Provider.pollIntervalConfig
  })
): Layer.Layer<Provider.Provider, Config.ConfigError> =>
  Layer.effect(Provider.Provider, Effect.flatMap(config, make))
