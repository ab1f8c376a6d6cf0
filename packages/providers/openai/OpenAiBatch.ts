/**
 * The OpenAI Batch adapter, through the official `openai` SDK. Works with any
 * OpenAI-compatible host that implements `/v1/files` and `/v1/batches`: set
 * `baseURL`.
 *
 * Protocol: encoded lines go to a JSONL file uploaded with purpose `batch`; a
 * batch is created over it (tagged with offpeak's batch id in `metadata`, which
 * is how {@link make}'s `find` recovers a batch created just before a crash);
 * status is polled with a backoff schedule; output and error files are
 * downloaded and streamed line by line, joined by `custom_id` — never by order.
 *
 * Quirks handled here (see providers.md §1, §6): per-line HTTP errors arrive in
 * the error file with `error: null` and the error in `response.body.error`;
 * `output_file_id` is null when every line failed; `error_file_id` may be `""`;
 * expired and cancelled batches keep their finished lines.
 *
 * @since 0.1.0
 */
import * as AdaptiveLimit from "@offpeak/core/AdaptiveLimit"
import * as Failpoint from "@offpeak/core/Failpoint"
import * as Provider from "@offpeak/core/Provider"
import * as ProviderError from "@offpeak/core/ProviderError"
import * as StreamingFetch from "@offpeak/core/StreamingFetch"
import * as Telemetry from "@offpeak/core/Telemetry"
import type * as Request from "@offpeak/core/Request"
import type { FailureKind, Usage } from "@offpeak/core/Result"
import { Config, Duration, Effect, Layer, Option, Predicate, Redacted, Result, Schema, Stream } from "effect"
import * as OpenAiStructuredOutput from "effect/ai/OpenAiStructuredOutput"
import * as fs from "node:fs"
import OpenAI from "openai"
import type { Batch as OpenAiBatchObject } from "openai/resources/batches"
import type { ChatCompletion, ChatCompletionCreateParamsNonStreaming } from "openai/resources/chat/completions"
import type { CreateEmbeddingResponse, EmbeddingCreateParams } from "openai/resources/embeddings"

// ===== Options =====

/**
 * Options of the adapter.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  readonly apiKey: Redacted.Redacted<string>
  /** e.g. `https://api.openai.com/v1` (the default), an Azure or compatible host, or the local emulator */
  readonly baseURL?: string | undefined
  readonly organization?: string | undefined
  readonly project?: string | undefined
  /** first and longest pause between two status polls */
  readonly pollInterval?: { readonly initial: Duration.Input; readonly max: Duration.Input } | undefined
  /** tighter limits than the API's (50,000 requests, 200 MB per batch) */
  readonly limits?: Partial<Provider.Limits> | undefined
  /** how many times the SDK retries a failed call (429, 5xx, network) before the error reaches offpeak */
  readonly maxRetries?: number | undefined
  /**
   * synchronous calls at once (`sync`, default 8): the most the adaptive limit allows; it halves on a 429 (or 529) and
   * waits out `retry-after`, then grows back by one after as many answers in a row
   */
  readonly syncConcurrency?: number | undefined
  /** the adaptive limit of synchronous calls, to share one between adapters (default: one of `syncConcurrency`) */
  readonly syncLimit?: AdaptiveLimit.AdaptiveLimit | undefined
}

/**
 * The API's own limits.
 *
 * @since 0.1.0
 * @category constants
 */
export const limits: Provider.Limits = {
  maxRequests: 50_000,
  maxBytes: 200 * 1024 * 1024,
  maxRequestBytes: 200 * 1024 * 1024,
  maxInFlight: 4
}

// ===== Encoding =====

type Endpoint = "/v1/chat/completions" | "/v1/embeddings"

/**
 * A request line of the batch input file, typed with the SDK's own request bodies.
 *
 * @since 0.1.0
 * @category models
 */
export type RequestLine =
  | {
    readonly custom_id: string
    readonly method: "POST"
    readonly url: "/v1/chat/completions"
    readonly body: ChatCompletionCreateParamsNonStreaming
  }
  | {
    readonly custom_id: string
    readonly method: "POST"
    readonly url: "/v1/embeddings"
    readonly body: EmbeddingCreateParams
  }

interface Structured {
  readonly codec: Schema.Codec<unknown, unknown>
  readonly jsonSchema: unknown
}

const structured = new WeakMap<object, Structured>()

const structuredFor = (schema: Schema.Codec<unknown, any>): Structured => {
  let entry = structured.get(schema)
  if (entry === undefined) {
    entry = OpenAiStructuredOutput.toCodecOpenAI(schema as any) as Structured
    structured.set(schema, entry)
  }
  return entry
}

const schemaName = (name: string) => name.replace(/[^A-Za-z0-9_-]/g, "_").slice(0, 64) || "output"

/**
 * The batch line of a request, typed against the SDK.
 *
 * @since 0.1.0
 * @category encoding
 */
export const requestLine = (request: Request.Request, customId: string): RequestLine => {
  switch (request._tag) {
    case "Chat": {
      const body: ChatCompletionCreateParamsNonStreaming = {
        model: request.model,
        messages: request.messages.map((m) => ({ role: m.role, content: m.content }))
      }
      const p = request.params
      if (p.maxTokens !== undefined) body.max_completion_tokens = p.maxTokens
      if (p.temperature !== undefined) body.temperature = p.temperature
      if (p.topP !== undefined) body.top_p = p.topP
      if (p.stop !== undefined) body.stop = [...p.stop]
      if (p.seed !== undefined) body.seed = p.seed
      if (request.output !== undefined) {
        body.response_format = {
          type: "json_schema",
          json_schema: {
            name: schemaName(request.output.name),
            strict: true,
            schema: structuredFor(request.output.schema).jsonSchema as Record<string, unknown>
          }
        }
      }
      return { custom_id: customId, method: "POST", url: "/v1/chat/completions", body }
    }
    case "Embedding": {
      // base64 float32: a quarter of the bytes of JSON numbers, and exact
      const body: EmbeddingCreateParams = { model: request.model, input: request.input, encoding_format: "base64" }
      if (request.dimensions !== undefined) body.dimensions = request.dimensions
      return { custom_id: customId, method: "POST", url: "/v1/embeddings", body }
    }
  }
}

const encode = (request: Request.Request, customId: string): Result.Result<Provider.Encoded, string> => {
  try {
    const line = requestLine(request, customId)
    const text = JSON.stringify(line)
    return Result.succeed({ line: text, bytes: Provider.lineBytes(text), group: `${line.url} ${request.model}` })
  } catch (error) {
    return Result.fail(`cannot encode the request for OpenAI: ${error instanceof Error ? error.message : String(error)}`)
  }
}

const decodeOutput = (output: Request.Output, text: string): Result.Result<unknown, string> => {
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

const decodedMessage = (cause: unknown): string => {
  const text = String(cause)
  const match = /SchemaError[^:]*: ([\s\S]*)/.exec(text)
  return (match?.[1] ?? text).trim().split("\n").slice(0, 6).join("; ")
}

// ===== Errors =====

const toProviderError = (operation: string) => (cause: unknown): ProviderError.ProviderError =>
  new ProviderError.ProviderError({ provider: "openai", operation, reason: ProviderError.reasonOfSdkError(cause) })

const call = <A>(operation: string, f: (signal: AbortSignal) => Promise<A>) =>
  Effect.tryPromise({ try: f, catch: toProviderError(operation) }).pipe(Telemetry.providerCall("openai", operation))

// ===== Status and results =====

const stateOf = (status: OpenAiBatchObject["status"]): Provider.State => {
  switch (status) {
    case "validating":
      return "validating"
    case "in_progress":
      return "running"
    case "finalizing":
      return "finalizing"
    case "completed":
      return "completed"
    case "failed":
      return "failed"
    case "expired":
      return "expired"
    case "cancelling":
      return "cancelling"
    case "cancelled":
      return "cancelled"
  }
}

/**
 * The provider-neutral status of an OpenAI batch object.
 *
 * @since 0.1.0
 * @category decoding
 */
export const toStatus = (batch: OpenAiBatchObject): Provider.Status => ({
  state: stateOf(batch.status),
  providerState: batch.status,
  counts: {
    total: batch.request_counts?.total ?? 0,
    completed: batch.request_counts?.completed ?? 0,
    failed: batch.request_counts?.failed ?? 0
  },
  issues: (batch.errors?.data ?? []).map((e) => ({
    code: e.code ?? "error",
    message: e.message ?? "",
    line: e.line ?? undefined
  }))
})

const usageOf = (u: ChatCompletion["usage"] | CreateEmbeddingResponse["usage"] | undefined): Usage => {
  if (u === undefined || u === null) return { inputTokens: 0, outputTokens: 0 }
  const cached = "prompt_tokens_details" in u ? u.prompt_tokens_details?.cached_tokens : undefined
  return {
    inputTokens: u.prompt_tokens ?? 0,
    outputTokens: "completion_tokens" in u ? u.completion_tokens ?? 0 : 0,
    ...(typeof cached === "number" ? { cachedInputTokens: cached } : {})
  }
}

const finishReasonOf = (r: string | null | undefined): Provider.ChatResponse["finishReason"] =>
  r === "stop" || r === "length" || r === "content_filter" || r === "tool_calls" ? r : r === null ? "stop" : "other"

const errorKindOf = (code: string | undefined): { readonly kind: FailureKind; readonly retryable: boolean } => {
  switch (code) {
    case "batch_expired":
      return { kind: "expired", retryable: true }
    case "batch_cancelled":
      return { kind: "cancelled", retryable: true }
    case "request_timeout":
      return { kind: "provider_error", retryable: true }
    default:
      return { kind: "provider_error", retryable: false }
  }
}

/** an embedding as the API sends it: a base64 string of little-endian float32, or an array of numbers */
const toFloat32 = (embedding: unknown): Float32Array | undefined => {
  if (typeof embedding === "string") {
    const bytes = Buffer.from(embedding, "base64")
    if (bytes.length % 4 !== 0) return undefined
    // copy into an aligned buffer: the decoded bytes may start at any offset of a pooled buffer
    return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length))
  }
  return Array.isArray(embedding) ? Float32Array.from(embedding as Array<number>) : undefined
}

/**
 * Decodes one line of an output or error file. `undefined` for a line that
 * names no `custom_id` (it cannot be joined to anything).
 *
 * @since 0.1.0
 * @category decoding
 */
export const decodeResultLine = (text: string): Provider.LineResult | undefined => {
  if (text.length === 0) return undefined
  let line: any
  try {
    line = JSON.parse(text)
  } catch {
    return undefined
  }
  if (line === null || typeof line !== "object" || typeof line.custom_id !== "string") return undefined
  const id: string = line.custom_id
  if (line.error !== null && line.error !== undefined) {
    const code = typeof line.error.code === "string" ? line.error.code : undefined
    return {
      _tag: "LineFailed",
      id,
      ...errorKindOf(code),
      message: `${code ?? "error"}: ${line.error.message ?? "no message"}`,
      raw: Provider.clipRaw(text)
    }
  }
  const response = line.response
  const status = typeof response?.status_code === "number" ? response.status_code : 0
  const body = response?.body
  if (status < 200 || status >= 300 || body === null || typeof body !== "object") {
    const error = body?.error
    return {
      _tag: "LineFailed",
      id,
      kind: "provider_error",
      retryable: status === 429 || status === 408 || status >= 500 || status === 0,
      status,
      message: `HTTP ${status}${error?.code ? ` ${error.code}` : ""}: ${error?.message ?? "no message"}`,
      raw: Provider.clipRaw(text)
    }
  }
  if (body.object === "list" && Array.isArray(body.data)) {
    const vector = toFloat32((body as CreateEmbeddingResponse).data[0]?.embedding as unknown)
    if (vector === undefined) {
      return { _tag: "LineFailed", id, kind: "provider_error", retryable: false, message: "no embedding", raw: Provider.clipRaw(text) }
    }
    return { _tag: "LineSucceeded", id, response: { _tag: "EmbeddingResponse", vector, usage: usageOf(body.usage) } }
  }
  const completion = body as ChatCompletion
  const choice = completion.choices?.[0]
  if (choice === undefined) {
    return { _tag: "LineFailed", id, kind: "provider_error", retryable: false, message: "no choices", raw: Provider.clipRaw(text) }
  }
  const refusal = choice.message?.refusal
  return {
    _tag: "LineSucceeded",
    id,
    response: {
      _tag: "ChatResponse",
      text: choice.message?.content ?? (typeof refusal === "string" ? refusal : ""),
      finishReason: typeof refusal === "string" && refusal.length > 0
        ? "content_filter"
        : finishReasonOf(choice.finish_reason),
      usage: usageOf(completion.usage)
    }
  }
}

// ===== Constructors =====

/**
 * Crash point for the crash torture, inside a create: the request's whole body has been sent and its answer is not
 * in (with an emulator that answers creates late, the batch exists while the process dies):
 * `OFFPEAK_FAILPOINTS=batch.create.sent:2`.
 */
const CREATE_SENT: Failpoint.Name = "batch.create.sent"
const createSentArmed = (process.env.OFFPEAK_FAILPOINTS ?? "").split(",").some((f) => f.trim().split(":")[0] === CREATE_SENT)

/**
 * `fetch` for creates while {@link CREATE_SENT} is armed: the JSON body goes out as a stream, and once the stream has
 * ended (the request is complete) the pass is counted a moment later, before the answer, as the Anthropic adapter does.
 */
const countingCreateSent = (inner: typeof globalThis.fetch): typeof globalThis.fetch => (input, init) => {
  const body = init?.body
  if (typeof body !== "string") return inner(input, init)
  const bytes = new TextEncoder().encode(body)
  let sent = false
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (!sent) {
        sent = true
        controller.enqueue(bytes)
        return
      }
      controller.close()
      setTimeout(() => Failpoint.hitSync(CREATE_SENT), 100)
    }
  })
  const headers = new Headers(init!.headers)
  headers.delete("content-length")
  return inner(input, { ...init, headers, body: stream, duplex: "half" } as RequestInit)
}

/**
 * Builds the adapter.
 *
 * @example
 * ```ts
 * const provider = yield* OpenAiBatch.make({ apiKey: Redacted.make(process.env.OPENAI_API_KEY!) })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options): Effect.Effect<Provider.Service> =>
  Effect.sync(() => {
    const client = new OpenAI({
      apiKey: Redacted.value(options.apiKey),
      maxRetries: options.maxRetries ?? 3,
      ...(options.baseURL !== undefined ? { baseURL: options.baseURL } : {}),
      ...(options.organization !== undefined ? { organization: options.organization } : {}),
      ...(options.project !== undefined ? { project: options.project } : {})
    })
    const pollSchedule = Provider.pollSchedule(options.pollInterval ?? { initial: "5 seconds", max: "1 minute" })
    // creates go through a client that counts the crash point inside them, when it is armed (tests only)
    const createClient = createSentArmed ? client.withOptions({ fetch: countingCreateSent(globalThis.fetch) }) : client

    // the file is streamed and never held (see StreamingFetch); on interruption its descriptor is closed before the
    // upload counts as stopped
    const uploads = client.withOptions({ fetch: StreamingFetch.fetch })
    const uploadFile = (submission: Provider.Lines) =>
      Effect.acquireUseRelease(
        Effect.sync(() => fs.createReadStream(submission.path)),
        (file) => call("files.create", (signal) => uploads.files.create({ file, purpose: "batch" }, { signal })),
        (file) =>
          Effect.promise(() =>
            new Promise<void>((resolve) => {
              if (file.closed) return resolve()
              file.once("close", () => resolve())
              file.destroy()
            })
          )
      )

    /** the batch file uploaded (`purpose: "batch"`): the id of the file a create goes over */
    const upload = (submission: Provider.Lines) =>
      Effect.gen(function*() {
        const file = yield* uploadFile(submission)
        yield* Failpoint.hit("batch.uploaded")
        return file.id
      })

    const submit = (submission: Provider.Submission) =>
      Effect.gen(function*() {
        if (submission._tag !== "Lines") {
          return yield* new ProviderError.ProviderError({
            provider: "openai",
            operation: "submit",
            reason: new ProviderError.Unsupported({ message: "OpenAI Batch takes JSONL files, not table jobs" })
          })
        }
        const fileId = submission.uploaded ?? (yield* upload(submission))
        const endpoint = submission.group.split(" ")[0] as Endpoint
        // never let the SDK retry a create by itself: a create that went through before the error would be paid
        // twice. The runner looks for the batch with `find` before it sends again.
        const batch = yield* call("batches.create", (signal) =>
          createClient.batches.create({
            input_file_id: fileId,
            endpoint,
            completion_window: "24h",
            metadata: { offpeak_batch: submission.batchId, offpeak_run: submission.runId.slice(0, 512) }
          }, { signal, maxRetries: 0 }))
        return { id: batch.id, meta: { inputFileId: fileId } }
      })

    const find = (submission: Provider.Submission) =>
      Effect.gen(function*() {
        let after: string | undefined = undefined
        for (let page = 0; page < 50; page++) {
          const list = yield* call("batches.list", (signal) =>
            client.batches.list({ limit: 100, ...(after !== undefined ? { after } : {}) }, { signal }))
          for (const batch of list.data) {
            if (batch.metadata?.offpeak_batch === submission.batchId) {
              return Option.some<Provider.RemoteBatch>({ id: batch.id, meta: { inputFileId: batch.input_file_id } })
            }
          }
          const last = list.data.at(-1)
          if (!list.has_more || last === undefined) break
          // batches are listed newest first: stop once they predate the local batch (with a margin for clock skew)
          if (last.created_at * 1000 < submission.sealedAt - 10 * 60_000) break
          after = last.id
        }
        return Option.none<Provider.RemoteBatch>()
      })

    // the output and error files of a batch a poll saw ended, taken by its download (one retrieve fewer)
    const endedFiles = new Map<string, ReadonlyArray<string>>()
    const filesOf = (remote: OpenAiBatchObject) =>
      [remote.output_file_id, remote.error_file_id].filter((id): id is string => typeof id === "string" && id.length > 0)

    const status = (batch: Provider.RemoteBatch) =>
      call("batches.retrieve", (signal) => client.batches.retrieve(batch.id, { signal })).pipe(
        Effect.map((remote) => {
          const status = toStatus(remote)
          if (Provider.isTerminal(status.state)) endedFiles.set(batch.id, filesOf(remote))
          else endedFiles.delete(batch.id)
          return status
        })
      )

    const download = (fileId: string): Stream.Stream<Provider.LineResult, ProviderError.ProviderError> =>
      Stream.unwrap(
        call("files.content", (signal) => client.files.content(fileId, { signal })).pipe(
          Effect.map((response) =>
            Provider.responseLines(response, toProviderError("files.content")).pipe(
              Stream.map(decodeResultLine),
              Stream.filter(Predicate.isNotUndefined)
            )
          )
        )
      )

    const results = (batch: Provider.RemoteBatch) =>
      Stream.unwrap(
        Effect.suspend(() => {
          // the files the poll that saw the batch ended read (a download read again retrieves the batch anew)
          const seen = endedFiles.get(batch.id)
          endedFiles.delete(batch.id)
          return seen !== undefined
            ? Effect.succeed(seen)
            : call("batches.retrieve", (signal) => client.batches.retrieve(batch.id, { signal })).pipe(Effect.map(filesOf))
        }).pipe(
          Effect.map((files) =>
            Stream.concat(
              files.length > 0 ? download(files[0]!) : Stream.empty,
              files.length > 1 ? download(files[1]!) : Stream.empty
            )
          )
        )
      )

    const cancel = (batch: Provider.RemoteBatch) =>
      call("batches.cancel", (signal) => client.batches.cancel(batch.id, { signal })).pipe(Effect.asVoid)

    const syncLimit = options.syncLimit ?? AdaptiveLimit.make({ max: options.syncConcurrency ?? 8 })
    // synchronous calls go through a client whose every answer (the SDK's retries included) adjusts the limit
    const syncClient = client.withOptions({ fetch: syncLimit.fetch() })
    const sync = (text: string): Effect.Effect<Provider.LineResult, ProviderError.ProviderError> => {
      const line = JSON.parse(text) as RequestLine
      const customId = line.custom_id
      const send = (signal: AbortSignal): Promise<unknown> =>
        line.url === "/v1/chat/completions"
          ? syncClient.chat.completions.create(line.body, { signal })
          : syncClient.embeddings.create(line.body, { signal })
      return Effect.tryPromise({ try: send, catch: (cause) => cause }).pipe(
        Effect.map((body): Provider.LineResult =>
          decodeResultLine(JSON.stringify({ custom_id: customId, response: { status_code: 200, body }, error: null }))!
        ),
        Effect.catch((cause): Effect.Effect<Provider.LineResult, ProviderError.ProviderError> => {
          // an HTTP answer about this request is the line's result; a broken connection is an error to retry
          if (cause instanceof OpenAI.APIError && !(cause instanceof OpenAI.APIConnectionError) && cause.status !== undefined) {
            return Effect.succeed(decodeResultLine(JSON.stringify({
              custom_id: customId,
              response: { status_code: cause.status, body: { error: cause.error ?? { message: cause.message } } },
              error: null
            }))!)
          }
          return Effect.fail(toProviderError(line.url === "/v1/embeddings" ? "embeddings.create" : "chat.completions.create")(cause))
        }),
        syncLimit.withPermit
      )
    }

    return Provider.Provider.of({
      name: "openai",
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
 * The adapter configured from the environment: `OPENAI_API_KEY` (required),
 * `OPENAI_BASE_URL` (optional), and the poll cadence `OFFPEAK_POLL_INITIAL` /
 * `OFFPEAK_POLL_MAX` (durations such as `5 seconds`, default 5 seconds growing to 1 minute).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  config: Config.Config<Options> = Config.all({
    apiKey: Config.Redacted("OPENAI_API_KEY"),
    baseURL: Config.String("OPENAI_BASE_URL").pipe(Config.option, Config.map(Option.getOrUndefined)),
    pollInterval: Provider.pollIntervalConfig
  })
): Layer.Layer<Provider.Provider, Config.ConfigError> =>
  Layer.effect(Provider.Provider, Effect.flatMap(config, make))
