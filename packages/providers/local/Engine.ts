/**
 * The deterministic local engine the emulators answer with: chat answers
 * (plain text or JSON valid against a JSON Schema) and hashed n-gram
 * embeddings. Pure functions: the same input gives the same output, byte for
 * byte, with no randomness and no clock.
 *
 * Usage is counted the way offpeak estimates it (`@offpeak/core/Tokens`, for
 * the request's provider family): input tokens as `Tokens.countChat` counts the
 * request, output tokens as `Tokens.countText` counts the answer. So an
 * estimate and the emulators' usage can be compared; against a real provider
 * they differ by the approximation `Tokens` states. A {@link PromptCache}
 * passed to {@link chat} models the providers' prompt caches.
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
import * as Tokens from "@offpeak/core/Tokens"
import { fmix32, hashString } from "./internal/hash.ts"
import { generate } from "./internal/jsonSchema.ts"
import * as Cache from "./internal/promptCache.ts"
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
  /** the provider whose token counting the usage follows (`openai`, `anthropic`, `gemini`, …); default: the model's family */
  readonly provider?: string | undefined
  /**
   * Explicit prompt caching (Anthropic `cache_control`): the number of leading
   * messages (a system message counts) the marked prefix covers. Without it,
   * OpenAI and Gemini requests use automatic prefix caching and Anthropic
   * requests are not cached.
   */
  readonly cachePrefix?: number | undefined
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
  readonly usage: Usage
}

/**
 * The usage of an answer. `inputTokens` counts every input token, cached and
 * cache-write ones included; the cache fields are set when {@link chat} was
 * given a {@link PromptCache}.
 *
 * @since 0.1.0
 * @category models
 */
export interface Usage {
  readonly inputTokens: number
  readonly outputTokens: number
  /** input tokens read from the prompt cache */
  readonly cachedInputTokens?: number | undefined
  /** input tokens written to the prompt cache (explicit caching only) */
  readonly cacheWriteInputTokens?: number | undefined
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
  /** the provider whose token counting the usage follows; default: the model's family */
  readonly provider?: string | undefined
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
 * The tokens of a text as the usage counts them: for `model` (and
 * `provider`, default the model's family) as `Tokens.countText` counts them;
 * without a model, OpenAI's `o200k_base`.
 *
 * @since 0.1.0
 * @category tokens
 */
export const countTokens = (text: string, model?: string, provider?: string): number =>
  model === undefined
    ? Tokens.countText(text, "openai", "gpt-4o")
    : Tokens.countText(text, Tokens.familyOf(provider, model), model)

/**
 * Options of a prompt cache: `minTokens` (the shortest cached prefix, default
 * 1,024 as the providers' minimum), `window` (a prefix stays cached while fewer
 * than this many requests were answered since its last use, default 1,000),
 * `capacity` (the most prefixes cached at once, least recently used evicted,
 * default 8).
 *
 * @since 0.1.0
 * @category cache
 */
export type PromptCacheOptions = Cache.Options

/**
 * An emulator's prompt cache: create one per emulator and pass it to every
 * {@link chat}. Deterministic: answers depend on the order of requests, not on
 * a clock. OpenAI and Gemini requests read the longest earlier prefix at a
 * message boundary (OpenAI in 128-token steps past 1,024); an Anthropic request
 * reads or writes only the prefix its `cache_control` marks
 * ({@link ChatInput.cachePrefix}). `stats()` gives the running hit share.
 *
 * @since 0.1.0
 * @category cache
 */
export type PromptCache = Cache.PromptCache

/**
 * A new, empty prompt cache.
 *
 * @since 0.1.0
 * @category cache
 */
export const promptCache = (options?: PromptCacheOptions): PromptCache => new Cache.PromptCache(options)

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
 * The longest prefix of `text` (whole code points) that has at most `max`
 * tokens: a binary search over the answer's length.
 */
const cutToTokens = (text: string, max: number, count: (s: string) => number): string => {
  const points = Array.from(text)
  let lo = 0
  let hi = points.length
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2)
    if (count(points.slice(0, mid).join("")) <= max) lo = mid
    else hi = mid - 1
  }
  return points.slice(0, lo).join("")
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
 * When the answer has more than `maxTokens` tokens it is cut to its longest
 * prefix of at most that many and `finishReason` is `"length"`.
 *
 * Usage: input tokens as `Tokens.countChat` counts the request for its
 * provider family, output tokens as `Tokens.countText` counts the answer. With
 * `options.cache`, the cached (and, for explicit caching, written) input
 * tokens too; the cache then remembers this request's prefixes.
 *
 * @since 0.1.0
 * @category chat
 */
export const chat = (input: ChatInput, options?: { readonly cache?: PromptCache | undefined }): ChatOutput => {
  const seed = seedOf(input)
  const user = lastUserMessage(input.messages)
  let text = input.jsonSchema === undefined || input.jsonSchema === null
    ? plainAnswer(user, seed)
    : JSON.stringify(generate(input.jsonSchema, user, seed))
  const outputFamily = Tokens.familyOf(input.provider, input.model)
  const count = (s: string) => Tokens.countText(s, outputFamily, input.model)
  let finishReason: ChatOutput["finishReason"] = "stop"
  let outputTokens = count(text)
  if (input.maxTokens !== undefined && outputTokens > input.maxTokens) {
    text = cutToTokens(text, Math.max(0, Math.floor(input.maxTokens)), count)
    outputTokens = count(text)
    finishReason = "length"
  }
  const cache = options?.cache
  if (cache === undefined) return { text, finishReason, usage: { inputTokens: countInput(input).count.tokens, outputTokens } }
  const use = cacheUse(input, cache)
  return { text, finishReason, usage: { inputTokens: use.inputTokens, outputTokens, ...use.cache } }
}

const countInput = (input: ChatInput) => {
  const family = Tokens.familyOf(input.provider, input.model)
  const schema = input.jsonSchema === undefined || input.jsonSchema === null ? undefined : JSON.stringify(input.jsonSchema)
  return { family, schema, count: Tokens.countChat({ model: input.model, messages: input.messages, jsonSchema: schema }, family) }
}

/**
 * Looks a request up in a prompt cache and records its prefixes, without
 * answering it: the input tokens, and the cached and written ones. A batch
 * emulator that writes its answers in shuffled order calls this for every line
 * in input order first (the order a provider works through a batch), then
 * answers each line with {@link chat} without a cache and adds these figures.
 *
 * @since 0.1.0
 * @category cache
 */
export const cacheUse = (input: ChatInput, cache: PromptCache): {
  readonly inputTokens: number
  readonly cache: { readonly cachedInputTokens: number; readonly cacheWriteInputTokens: number }
} => {
  const { count, family, schema } = countInput(input)
  const use = cache.use({
    family,
    model: input.model,
    schema: schema ?? "",
    messages: input.messages,
    fixed: count.fixed,
    perMessage: count.messages,
    inputTokens: count.tokens,
    marked: family === "anthropic" ? (input.cachePrefix !== undefined && input.cachePrefix > 0 ? input.cachePrefix : 0) : undefined
  })
  return { inputTokens: count.tokens, cache: use }
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
 * Embeds a text (usage: its tokens as `Tokens.countEmbedding` counts them):
 * character trigrams of the lower-cased text (whitespace
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
  const tokens = Tokens.countEmbedding(input, Tokens.familyOf(input.provider, input.model)).tokens
  return { vector, usage: { inputTokens: tokens } }
}
