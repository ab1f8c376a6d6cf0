/**
 * The emulator's answers to single requests, shared by batch lines and the
 * synchronous endpoints: `/v1/chat/completions` and `/v1/embeddings` bodies
 * in, the real API's response bodies (or its error bodies) out, computed by
 * the local engine.
 */
import * as Engine from "../../local/Engine.ts"

/** the API's error object */
export interface ErrorBody {
  readonly error: {
    readonly message: string
    readonly type: string
    readonly param: string | null
    readonly code: string | null
  }
}

/** an HTTP answer: status, body, and the tokens it used */
export interface Answer {
  readonly status: number
  readonly body: unknown
  readonly inputTokens: number
  readonly outputTokens: number
  /** of `inputTokens`, those read from the prompt cache */
  readonly cachedInputTokens?: number | undefined
}

/** how an answer meets the prompt cache: looked up in `cache` now, or `cachedInputTokens` found earlier */
export type CacheOption = { readonly cache: Engine.PromptCache } | { readonly cachedInputTokens: number } | undefined

/** the endpoints a batch may target */
export const BATCH_ENDPOINTS: ReadonlyArray<string> = [
  "/v1/chat/completions",
  "/v1/embeddings",
  "/v1/responses",
  "/v1/completions",
  "/v1/moderations"
]

/** the API's error body */
export const errorBody = (
  message: string,
  options?: { readonly type?: string; readonly param?: string | null; readonly code?: string | null }
): ErrorBody => ({
  error: {
    message,
    type: options?.type ?? "invalid_request_error",
    param: options?.param ?? null,
    code: options?.code ?? null
  }
})

const invalid = (message: string, param: string | null, code: string | null = null): Answer => ({
  status: 400,
  body: errorBody(message, { param, code }),
  inputTokens: 0,
  outputTokens: 0
})

/** the error body the real API sends with a given HTTP status (used for injected per-line failures) */
export const injectedError = (status: number, model: string): ErrorBody => {
  switch (status) {
    case 400:
      return errorBody(
        "This model's maximum context length is 128000 tokens. However, your messages resulted in 131072 tokens. Please reduce the length of the messages.",
        { param: "messages", code: "context_length_exceeded" }
      )
    case 401:
      return errorBody("Incorrect API key provided.", { code: "invalid_api_key" })
    case 403:
      return errorBody("You are not allowed to sample from this model.", { type: "permission_error" })
    case 404:
      return errorBody(`The model \`${model}\` does not exist or you do not have access to it.`, { code: "model_not_found" })
    case 408:
      return errorBody("The request timed out.", { type: "timeout_error", code: "request_timeout" })
    case 409:
      return errorBody("The request conflicted with another request.", { type: "conflict_error" })
    case 422:
      return errorBody("The request could not be processed.")
    case 429:
      return errorBody(`Rate limit reached for ${model} on requests per min (RPM). Please try again in 1s.`, {
        type: "requests",
        code: "rate_limit_exceeded"
      })
    case 500:
      return errorBody("The server had an error while processing your request. Sorry about that!", { type: "server_error" })
    case 502:
    case 503:
    case 504:
      return errorBody("The server is overloaded or not ready yet.", { type: "server_error" })
    default:
      return errorBody(`The request failed with status ${status}.`, { type: status >= 500 ? "server_error" : "invalid_request_error" })
  }
}

const isObject = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)

/** message content as text: a string, or the `text` of text parts joined by newlines */
export const contentText = (content: unknown): string => {
  if (typeof content === "string") return content
  if (Array.isArray(content)) {
    return content
      .map((part) => (isObject(part) && typeof part.text === "string" ? part.text : ""))
      .filter((t) => t.length > 0)
      .join("\n")
  }
  return ""
}

/** the engine's input for a chat completion body, or the 400 the API would answer */
export const chatInput = (body: unknown): Engine.ChatInput | Answer => {
  if (!isObject(body)) return invalid("The request body must be a JSON object.", null)
  if (typeof body.model !== "string" || body.model.length === 0) {
    return invalid("you must provide a model parameter", "model", "missing_required_parameter")
  }
  if (!Array.isArray(body.messages)) {
    return invalid("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
  }
  if (body.messages.length === 0) {
    return invalid("Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.", "messages", "empty_array")
  }
  const messages: Array<{ role: string; content: string }> = []
  for (let i = 0; i < body.messages.length; i++) {
    const m = body.messages[i]
    if (!isObject(m) || typeof m.role !== "string") {
      return invalid(`Missing required parameter: 'messages[${i}].role'.`, `messages[${i}].role`, "missing_required_parameter")
    }
    messages.push({ role: m.role, content: contentText(m.content) })
  }
  if (body.stream === true) return invalid("Streaming is not supported by the emulator.", "stream", "unsupported_value")
  const max = typeof body.max_completion_tokens === "number"
    ? body.max_completion_tokens
    : typeof body.max_tokens === "number"
    ? body.max_tokens
    : undefined
  if (max !== undefined && (!Number.isInteger(max) || max < 1)) {
    return invalid(`Invalid 'max_completion_tokens': integer below minimum value. Expected a value >= 1, but got ${max} instead.`, "max_completion_tokens", "integer_below_min_value")
  }
  let jsonSchema: unknown = undefined
  const format = body.response_format
  if (isObject(format)) {
    if (format.type === "json_schema") {
      const spec = format.json_schema
      if (!isObject(spec) || typeof spec.name !== "string") {
        return invalid("Missing required parameter: 'response_format.json_schema.name'.", "response_format.json_schema.name", "missing_required_parameter")
      }
      jsonSchema = isObject(spec.schema) ? spec.schema : {}
    } else if (format.type === "json_object") {
      jsonSchema = { type: "object", additionalProperties: { type: "string" } }
    }
  }
  return { model: body.model, messages, maxTokens: max, jsonSchema }
}

const usageDetails = (input: number, output: number, cached: number) => ({
  prompt_tokens: input,
  completion_tokens: output,
  total_tokens: input + output,
  prompt_tokens_details: { cached_tokens: cached, audio_tokens: 0 },
  completion_tokens_details: { reasoning_tokens: 0, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 }
})

/** answers a `/v1/chat/completions` body; `id` is the completion id, `created` unix seconds */
export const chat = (body: unknown, id: string, created: number, caching?: CacheOption): Answer => {
  const input = chatInput(body)
  if ("status" in input) return input
  const out = Engine.chat(input, caching !== undefined && "cache" in caching ? { cache: caching.cache } : undefined)
  const cached = caching === undefined ? 0 : "cache" in caching ? out.usage.cachedInputTokens ?? 0 : caching.cachedInputTokens
  return {
    status: 200,
    body: {
      id,
      object: "chat.completion",
      created,
      model: input.model,
      choices: [
        {
          index: 0,
          message: { role: "assistant", content: out.text, refusal: null, annotations: [] },
          logprobs: null,
          finish_reason: out.finishReason
        }
      ],
      usage: usageDetails(out.usage.inputTokens, out.usage.outputTokens, cached),
      service_tier: "default",
      system_fingerprint: "fp_offpeak"
    },
    inputTokens: out.usage.inputTokens,
    outputTokens: out.usage.outputTokens,
    cachedInputTokens: cached
  }
}

const toBase64 = (vector: ReadonlyArray<number>) => Buffer.from(new Float32Array(vector).buffer).toString("base64")

/** the most tokens one embedding input may have (`text-embedding-3-*`, `ada-002`: 8,191) */
const EMBEDDING_CONTEXT = 8_191

/** answers a `/v1/embeddings` body */
export const embeddings = (body: unknown): Answer => {
  if (!isObject(body)) return invalid("The request body must be a JSON object.", null)
  if (typeof body.model !== "string" || body.model.length === 0) {
    return invalid("you must provide a model parameter", "model", "missing_required_parameter")
  }
  const raw = body.input
  let inputs: Array<string>
  if (typeof raw === "string") inputs = [raw]
  else if (Array.isArray(raw) && raw.length > 0 && raw.every((x) => typeof x === "string")) inputs = raw as Array<string>
  else if (Array.isArray(raw) && raw.length > 0 && raw.every((x) => typeof x === "number")) inputs = [raw.join(" ")]
  else if (Array.isArray(raw) && raw.length > 0 && raw.every((x) => Array.isArray(x) && x.every((t) => typeof t === "number"))) {
    inputs = (raw as Array<Array<number>>).map((t) => t.join(" "))
  } else if (raw === undefined) {
    return invalid("Missing required parameter: 'input'.", "input", "missing_required_parameter")
  } else return invalid("'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.", "input")
  if (inputs.length > 2048) return invalid("'$.input' is too long: at most 2048 inputs per request.", "input")
  if (inputs.some((s) => s.length === 0)) {
    return invalid("'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.", "input")
  }
  const dimensions = body.dimensions
  if (dimensions !== undefined && (typeof dimensions !== "number" || !Number.isInteger(dimensions) || dimensions < 1)) {
    return invalid("Invalid 'dimensions': expected a positive integer.", "dimensions")
  }
  const encoding = body.encoding_format ?? "float"
  if (encoding !== "float" && encoding !== "base64") {
    return invalid(`Invalid value for 'encoding_format': '${String(encoding)}'. Supported values are: 'float' and 'base64'.`, "encoding_format")
  }
  let tokens = 0
  const outs = inputs.map((input) => Engine.embed({ model: body.model as string, input, dimensions: dimensions as number | undefined }))
  // each input is held to the embedding models' context, as the API does (and nothing is billed)
  const over = outs.find((out) => out.usage.inputTokens > EMBEDDING_CONTEXT)
  if (over !== undefined) {
    const n = over.usage.inputTokens
    return invalid(
      `This model's maximum context length is ${EMBEDDING_CONTEXT + 1} tokens, however you requested ${n} tokens ` +
        `(${n} in your prompt; 0 for the completion). Please reduce your prompt; or completion length.`,
      null
    )
  }
  const data = outs.map((out, index) => {
    tokens += out.usage.inputTokens
    return { object: "embedding", index, embedding: encoding === "base64" ? toBase64(out.vector) : out.vector }
  })
  return {
    status: 200,
    body: { object: "list", data, model: body.model, usage: { prompt_tokens: tokens, total_tokens: tokens } },
    inputTokens: tokens,
    outputTokens: 0
  }
}

/** answers a body sent to `endpoint` (endpoints without an engine answer 400) */
export const answer = (endpoint: string, body: unknown, id: string, created: number, caching?: CacheOption): Answer => {
  switch (endpoint) {
    case "/v1/chat/completions":
      return chat(body, id, created, caching)
    case "/v1/embeddings":
      return embeddings(body)
    default:
      return invalid(`The local emulator does not answer ${endpoint} requests.`, "url", "unsupported_endpoint")
  }
}
