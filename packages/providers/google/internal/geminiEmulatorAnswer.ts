/**
 * The Gemini emulator's answers to single requests, shared by batch lines and
 * the synchronous endpoints: a `GenerateContentRequest` or an
 * `EmbedContentRequest` in, the API's response body (or the
 * `google.rpc.Status` it would fail with) out, computed by the local engine.
 *
 * Requests are checked as the API checks them: an unknown field is refused
 * with Google's "Unknown name" message, `contents` must be a non-empty list
 * of turns with text parts, `maxOutputTokens` a positive integer, and a
 * schema needs `responseMimeType: "application/json"`.
 *
 * @internal
 */
import * as Engine from "../../local/Engine.ts"
import type { Failure } from "./geminiEmulatorStore.ts"

const isObject = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)

const invalid = (message: string): Failure => ({ code: 3, message })

const unknownName = (name: string, at: string | null) =>
  invalid(`Invalid JSON payload received. Unknown name "${name}"${at === null ? "" : ` at '${at}'`}: Cannot find field.`)

const REQUEST_FIELDS = new Set([
  "model",
  "contents",
  "systemInstruction",
  "generationConfig",
  "safetySettings",
  "tools",
  "toolConfig",
  "cachedContent",
  "labels"
])

const GENERATION_FIELDS = new Set([
  "temperature",
  "topP",
  "topK",
  "candidateCount",
  "maxOutputTokens",
  "stopSequences",
  "seed",
  "presencePenalty",
  "frequencyPenalty",
  "responseMimeType",
  "responseSchema",
  "responseJsonSchema",
  "responseLogprobs",
  "logprobs",
  "responseModalities",
  "thinkingConfig",
  "mediaResolution"
])

const EMBED_FIELDS = new Set(["model", "content", "taskType", "title", "outputDimensionality"])

/** the text of a `Content`'s parts, joined by newlines; a failure when it is not a `Content` */
const contentText = (u: unknown, at: string): string | Failure => {
  if (!isObject(u)) return invalid(`Invalid value at '${at}': expected a Content object.`)
  if (!Array.isArray(u.parts)) return invalid(`* ${at}.parts: must be a non-empty list of parts`)
  const texts: Array<string> = []
  for (let i = 0; i < u.parts.length; i++) {
    const part = u.parts[i]
    if (!isObject(part)) return invalid(`Invalid value at '${at}.parts[${i}]': expected a Part object.`)
    if (typeof part.text === "string") texts.push(part.text)
    else if (part.inlineData === undefined && part.fileData === undefined) {
      return invalid(`* ${at}.parts[${i}]: a part must have one of text, inlineData or fileData`)
    }
  }
  return texts.join("\n")
}

/** OpenAPI-style `responseSchema` types (`OBJECT`, `STRING`, …) as JSON Schema, for the engine */
const openApiToJsonSchema = (u: unknown): unknown => {
  if (Array.isArray(u)) return u.map(openApiToJsonSchema)
  if (!isObject(u)) return u
  const out: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(u)) {
    if (key === "type" && typeof value === "string") out.type = value.toLowerCase()
    else if (key === "properties" && isObject(value)) {
      out.properties = Object.fromEntries(Object.entries(value).map(([k, v]) => [k, openApiToJsonSchema(v)]))
    } else out[key] = openApiToJsonSchema(value)
  }
  if (u.nullable === true && typeof out.type === "string") out.type = [out.type, "null"]
  return out
}

/** the engine's input for a `GenerateContentRequest`, or the status the API answers with */
export const chatInput = (body: unknown, model: string): Engine.ChatInput | Failure => {
  if (!isObject(body)) return invalid("Invalid JSON payload received. Expected a GenerateContentRequest object.")
  for (const key of Object.keys(body)) if (!REQUEST_FIELDS.has(key)) return unknownName(key, null)
  if (body.model !== undefined && typeof body.model !== "string") return invalid("Invalid value at 'model': expected a string.")
  if (!Array.isArray(body.contents) || body.contents.length === 0) {
    return invalid("* GenerateContentRequest.contents: contents is not specified")
  }
  const messages: Array<{ role: string; content: string }> = []
  if (body.systemInstruction !== undefined) {
    const text = contentText(body.systemInstruction, "system_instruction")
    if (typeof text !== "string") return text
    messages.push({ role: "system", content: text })
  }
  for (let i = 0; i < body.contents.length; i++) {
    const turn = body.contents[i]
    const text = contentText(turn, `contents[${i}]`)
    if (typeof text !== "string") return text
    const role = (turn as Record<string, unknown>).role
    if (role !== undefined && role !== "user" && role !== "model") {
      return invalid(`Please use a valid role: user, model. Got "${String(role)}" at contents[${i}].`)
    }
    messages.push({ role: role === "model" ? "assistant" : "user", content: text })
  }
  let maxTokens: number | undefined
  let jsonSchema: unknown = undefined
  const config = body.generationConfig
  if (config !== undefined) {
    if (!isObject(config)) return invalid("Invalid value at 'generation_config': expected a GenerationConfig object.")
    for (const key of Object.keys(config)) if (!GENERATION_FIELDS.has(key)) return unknownName(key, "generation_config")
    const max = config.maxOutputTokens
    if (max !== undefined) {
      if (typeof max !== "number" || !Number.isInteger(max)) {
        return invalid(`Invalid value at 'generation_config.max_output_tokens' (TYPE_INT32), ${JSON.stringify(max)}`)
      }
      if (max < 1) return invalid("* GenerateContentRequest.generation_config.max_output_tokens: must be positive")
      maxTokens = max
    }
    const schema = config.responseJsonSchema ?? config.responseSchema
    if (schema !== undefined) {
      if (config.responseMimeType !== "application/json") {
        return invalid(
          "* GenerateContentRequest.generation_config.response_mime_type: response_mime_type must be application/json when a response schema is set"
        )
      }
      if (config.responseJsonSchema !== undefined && config.responseSchema !== undefined) {
        return invalid("* GenerateContentRequest.generation_config: only one of response_schema and response_json_schema may be set")
      }
      jsonSchema = config.responseJsonSchema !== undefined ? config.responseJsonSchema : openApiToJsonSchema(config.responseSchema)
    } else if (config.responseMimeType === "application/json") {
      jsonSchema = { type: "object", additionalProperties: { type: "string" } }
    }
  }
  return { model, messages, maxTokens, jsonSchema }
}

/** a model name without its `models/` prefix */
export const bareModel = (model: string) => model.startsWith("models/") ? model.slice(7) : model

/** an answer: the response body and the tokens it used */
export interface Answer {
  readonly body: Record<string, unknown>
  readonly inputTokens: number
  readonly outputTokens: number
}

/** how an answer meets the prompt cache: looked up in `cache` now, or `cachedInputTokens` found earlier */
export type CacheOption = { readonly cache: Engine.PromptCache } | { readonly cachedInputTokens: number } | undefined

/** answers a `GenerateContentRequest` for `model` (`models/…`); `responseId` names the answer */
export const generate = (body: unknown, model: string, responseId: string, caching?: CacheOption): Answer | Failure => {
  const input = chatInput(body, bareModel(model))
  if ("code" in input) return input
  const out = Engine.chat(input, caching !== undefined && "cache" in caching ? { cache: caching.cache } : undefined)
  const cached = caching === undefined ? 0 : "cache" in caching ? out.usage.cachedInputTokens ?? 0 : caching.cachedInputTokens
  return {
    body: {
      candidates: [{
        content: { parts: [{ text: out.text }], role: "model" },
        finishReason: out.finishReason === "length" ? "MAX_TOKENS" : "STOP",
        index: 0
      }],
      usageMetadata: {
        promptTokenCount: out.usage.inputTokens,
        candidatesTokenCount: out.usage.outputTokens,
        totalTokenCount: out.usage.inputTokens + out.usage.outputTokens,
        promptTokensDetails: [{ modality: "TEXT", tokenCount: out.usage.inputTokens }],
        ...(cached > 0
          ? { cachedContentTokenCount: cached, cacheTokensDetails: [{ modality: "TEXT", tokenCount: cached }] }
          : {})
      },
      modelVersion: bareModel(model),
      responseId
    },
    inputTokens: out.usage.inputTokens,
    outputTokens: out.usage.outputTokens
  }
}

/** the vector length of a Gemini embedding model when no `outputDimensionality` is given */
export const defaultDimensions = (model: string): number =>
  /gemini-embedding/.test(model) ? 3072 : /text-embedding-00[45]|embedding-001/.test(model) ? 768 : Engine.defaultDimensions(model)

/** answers an `EmbedContentRequest` for `model` (`models/…`): `{embedding: {values}}` */
export const embed = (body: unknown, model: string): Answer | Failure => {
  if (!isObject(body)) return invalid("Invalid JSON payload received. Expected an EmbedContentRequest object.")
  for (const key of Object.keys(body)) if (!EMBED_FIELDS.has(key)) return unknownName(key, null)
  if (body.model !== undefined && body.model !== model && bareModel(String(body.model)) !== bareModel(model)) {
    return invalid(`* BatchEmbedContentsRequest.requests: model "${String(body.model)}" does not match the model of the request "${model}"`)
  }
  if (body.content === undefined) return invalid("* EmbedContentRequest.content: content is not specified")
  const text = contentText(body.content, "content")
  if (typeof text !== "string") return text
  if (text.length === 0) return invalid("* EmbedContentRequest.content: contents must not be empty")
  const dims = body.outputDimensionality
  if (dims !== undefined && (typeof dims !== "number" || !Number.isInteger(dims) || dims < 1)) {
    return invalid("* EmbedContentRequest.output_dimensionality: must be a positive integer")
  }
  const out = Engine.embed({ model: bareModel(model), input: text, dimensions: (dims as number | undefined) ?? defaultDimensions(model) })
  return {
    body: { embedding: { values: out.vector } },
    inputTokens: out.usage.inputTokens,
    outputTokens: 0
  }
}

/** answers one request of a batch of `kind` */
export const answer = (kind: "generate" | "embed", body: unknown, model: string, responseId: string): Answer | Failure =>
  kind === "generate" ? generate(body, model, responseId) : embed(body, model)
