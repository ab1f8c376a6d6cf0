/**
 * The deterministic local engine the emulators answer with: chat answers
 * (plain text or JSON valid against a JSON Schema) and hashed n-gram
 * embeddings. Pure functions: the same input gives the same output, byte for
 * byte, with no randomness and no clock.
 *
 * @example
 * ```ts
 * import * as Engine from "@offpeak/providers/local/Engine"
 *
 * const answer = Engine.chat({
 *   model: "gpt-4o-mini",
 *   messages: [{ role: "user", content: "I was charged twice" }],
 *   jsonSchema: { type: "object", properties: { category: { enum: ["billing", "bug"] } }, required: ["category"] }
 * })
 * // answer.text === '{"category":"billing"}'
 * ```
 *
 * @since 0.1.0
 */
import { fmix32, hashString, utf8Length, utf8Prefix } from "./internal/hash.ts"
import { generate } from "./internal/jsonSchema.ts"
import * as Text from "./internal/text.ts"

// ===== Models =====

/**
 * One chat request: the messages (content as plain text), an optional output
 * token cap and an optional JSON Schema the answer must satisfy.
 *
 * @since 0.1.0
 * @category models
 */
export interface ChatInput {
  readonly model: string
  readonly messages: ReadonlyArray<{ readonly role: string; readonly content: string }>
  readonly maxTokens?: number | undefined
  /** a JSON Schema (draft 2020-12 or OpenAI's strict subset); the answer is then JSON valid against it */
  readonly jsonSchema?: unknown
}

/**
 * A chat answer. `finishReason` is `"length"` when the answer was cut at
 * `maxTokens` (structured output is then invalid JSON, as with a real model).
 *
 * @since 0.1.0
 * @category models
 */
export interface ChatOutput {
  readonly text: string
  readonly finishReason: "stop" | "length"
  readonly usage: { readonly inputTokens: number; readonly outputTokens: number }
}

/**
 * One embedding request.
 *
 * @since 0.1.0
 * @category models
 */
export interface EmbedInput {
  readonly model: string
  readonly input: string
  /** the vector length; defaults to the model's ({@link defaultDimensions}) */
  readonly dimensions?: number | undefined
}

/**
 * An embedding: a unit-length vector whose entries are exact `float32` values
 * (so a base64 `float32` round trip is lossless).
 *
 * @since 0.1.0
 * @category models
 */
export interface EmbedOutput {
  readonly vector: Array<number>
  readonly usage: { readonly inputTokens: number }
}

// ===== Tokens =====

/**
 * A cheap deterministic token estimate: `ceil(utf8 bytes / 4)`.
 *
 * @since 0.1.0
 * @category tokens
 */
export const countTokens = (text: string): number => Math.ceil(utf8Length(text) / 4)

// ===== Chat =====

const lastUserMessage = (messages: ChatInput["messages"]): string => {
  for (let i = messages.length - 1; i >= 0; i--) {
    if (messages[i]!.role === "user") return messages[i]!.content
  }
  return messages.length > 0 ? messages[messages.length - 1]!.content : ""
}

const seedOf = (input: ChatInput): number => {
  let h = hashString(input.model)
  for (const m of input.messages) h = hashString(`${m.role}\u0000${m.content}`, h)
  return h
}

const OPENERS = ["Summary:", "In short:", "Key points:", "Gist:"] as const

const plainAnswer = (text: string, seed: number): string => {
  const words = Text.displayWords(text)
  if (words.length === 0) return "Nothing to summarise."
  const salient = words.filter((w) => w.length > 3)
  const picked = (salient.length >= 3 ? salient : words).slice(0, 16)
  const opener = OPENERS[seed % OPENERS.length]!
  return `${opener} ${picked.join(" ")}${picked.length < words.length ? " …" : "."}`
}

/**
 * Answers a chat request. Without `jsonSchema`: a short summary made of the
 * words of the last user message. With it: `JSON.stringify` of a value valid
 * against the schema (objects, strings with enum/const/length bounds,
 * numbers and integers within bounds, booleans, null, arrays with item
 * bounds, `anyOf`/`oneOf`, `allOf`, `$ref` to `#/$defs` or `#/definitions`),
 * where string enums pick the option whose words best overlap the last user
 * message and free strings are a few of its words.
 *
 * When the answer has more than `maxTokens` tokens it is cut to that many
 * tokens' worth of bytes and `finishReason` is `"length"`.
 *
 * @since 0.1.0
 * @category chat
 */
export const chat = (input: ChatInput): ChatOutput => {
  const seed = seedOf(input)
  const user = lastUserMessage(input.messages)
  let text = input.jsonSchema === undefined || input.jsonSchema === null
    ? plainAnswer(user, seed)
    : JSON.stringify(generate(input.jsonSchema, user, seed))
  let finishReason: ChatOutput["finishReason"] = "stop"
  if (input.maxTokens !== undefined && countTokens(text) > input.maxTokens) {
    text = utf8Prefix(text, Math.max(0, Math.floor(input.maxTokens)) * 4)
    finishReason = "length"
  }
  let inputTokens = 0
  for (const m of input.messages) inputTokens += countTokens(m.content)
  return { text, finishReason, usage: { inputTokens, outputTokens: countTokens(text) } }
}

// ===== Embeddings =====

/**
 * The vector length of a model when no `dimensions` is given: 3072 for
 * `text-embedding-3-large`, else 1536.
 *
 * @since 0.1.0
 * @category embeddings
 */
export const defaultDimensions = (model: string): number => (model.includes("text-embedding-3-large") ? 3072 : 1536)

const WORD_SEED = 0x9e3779b9
const WORD = /[\p{L}\p{N}]+/gu

/**
 * Embeds a text: character trigrams of the lower-cased text (whitespace
 * collapsed, padded with a space) plus word unigrams, each hashed into one of
 * `dimensions` buckets with a hashed sign, then L2-normalised. Texts sharing
 * n-grams have a higher cosine similarity than unrelated ones.
 *
 * @since 0.1.0
 * @category embeddings
 */
export const embed = (input: EmbedInput): EmbedOutput => {
  const dims = input.dimensions !== undefined && Number.isInteger(input.dimensions) && input.dimensions > 0
    ? input.dimensions
    : defaultDimensions(input.model)
  const acc = new Float64Array(dims)
  const text = ` ${input.input.toLowerCase().replace(/\s+/g, " ").trim()} `
  const add = (h: number, weight: number) => {
    acc[(h >>> 1) % dims]! += h & 1 ? weight : -weight
  }
  for (let i = 0; i + 3 <= text.length; i++) {
    let h = 0x811c9dc5
    h = Math.imul(h ^ text.charCodeAt(i), 0x01000193)
    h = Math.imul(h ^ text.charCodeAt(i + 1), 0x01000193)
    h = Math.imul(h ^ text.charCodeAt(i + 2), 0x01000193)
    add(fmix32(h), 1)
  }
  for (const word of text.match(WORD) ?? []) add(hashString(word, WORD_SEED), 1)
  let norm = 0
  for (let i = 0; i < dims; i++) norm += acc[i]! * acc[i]!
  const vector = new Array<number>(dims)
  if (norm === 0) {
    // no n-gram at all (empty input): a fixed unit vector
    vector.fill(0)
    vector[hashString(input.model) % dims] = 1
  } else {
    const scale = 1 / Math.sqrt(norm)
    for (let i = 0; i < dims; i++) vector[i] = Math.fround(acc[i]! * scale)
  }
  return { vector, usage: { inputTokens: countTokens(input.input) } }
}
