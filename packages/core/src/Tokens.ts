/**
 * Over 400 lines on purpose: the counting rules of every provider's request shape (text, images, tools, system
 * prompts) stay side by side so they can be compared; the tokenizer plumbing is in `internal/tokens*.ts`.
 *
 * Input tokens of a request, counted before it is sent: what the estimate, the
 * budget reservation and the emulators' usage stand on.
 *
 * - **OpenAI** (and Azure, OpenAI-compatible hosts): the model's BPE encoding
 *   through gpt-tokenizer — `o200k_base` for current models (gpt-4o, gpt-4.1,
 *   gpt-5, o-series; any model gpt-tokenizer does not list), `cl100k_base` for
 *   the ones it maps to it (gpt-4, gpt-3.5-turbo, text-embedding-3-*, ada-002).
 *   Special tokens in user text (`<|endoftext|>`) are counted as the characters
 *   they are, never thrown on. A chat adds OpenAI's documented framing (3 tokens
 *   per message plus its role, 3 to prime the reply: the cookbook's
 *   `num_tokens_from_messages`, which matches the API's `prompt_tokens`).
 *   Exact for text (`exact: true`); a structured-output schema is counted as the
 *   tokens of its JSON text, which OpenAI does not document, so a count with a
 *   schema is `exact: false`.
 * - **Anthropic** and **Gemini/Vertex** publish no offline tokenizer: the count
 *   is an approximation (`exact: false`) derived from `o200k_base`. Anthropic:
 *   ×1.16 for message text and ×1.30 for the tool schema (the published
 *   Claude-vs-GPT-4o ratios: English +16 %, code +30 %), 3 tokens per message
 *   (fitted on Anthropic's documented `count_tokens` example: "You are a
 *   scientist" + "Hello, Claude" = 14), and 313 tokens for the forced tool a
 *   structured output uses (Anthropic's tool-use system prompt for
 *   `tool_choice` `any`/`tool`, Claude 4 models). Gemini: ×1.00 and 1 token per
 *   turn (Google's example: "The quick brown fox jumps over the lazy dog." is 10
 *   tokens to `countTokens`, 11 as `promptTokenCount`). On the four published
 *   counts we found the error is 0 (`packages/core/test/Tokens.test.ts`), but
 *   the Anthropic one fixed the per-message framing, so it is no independent
 *   check: expect the spread of the published ratios (English +16 % to code
 *   +30 %), i.e. up to about ±10 % on a given prompt for Claude. Claude
 *   models from Opus 4.7 on use a newer tokenizer that Anthropic says takes up
 *   to 35 % more tokens: use {@link Counter} with the provider's count-tokens
 *   call to calibrate.
 *
 * Speed: gpt-tokenizer's o200k pass, which every family's count is (Node 24;
 * `packages/core/test/Tokens.test.ts` measures it on 6 MB of real text in 2 KB
 * requests): 2–5 MB/s on this shared 2-core machine under a load average of
 * about 8, 7.6 MB/s on an idle core (the infrastructure notes). The input of a
 * 1M-row job of 1 KB prompts (1 GB) is thus counted in 3–8 minutes on one
 * core; a system prompt or output schema repeated on every row is counted once
 * (texts of 128+ characters are remembered, schemas rendered once per schema).
 *
 * @example
 * ```ts
 * import * as Tokens from "@offpeak/core/Tokens"
 *
 * const count = Tokens.countRequest(Request.chat({ model: "gpt-4o-mini", system: "Classify.", prompt: "I was charged twice" }), "openai")
 * // count.tokens === 18 (3 + 1 role per message, 3 for the reply, 3 + 4 of text), count.exact === true
 * ```
 *
 * @since 0.1.0
 */
import { Context, Effect, Layer } from "effect"
import * as Encoding from "./internal/tokensEncoding.ts"
import { schemaText } from "./internal/tokensSchema.ts"
import type * as Request from "./Request.ts"

// ===== Models =====

/**
 * The provider families whose counts differ: `openai` (also `azure` and
 * OpenAI-compatible hosts), `anthropic`, `google` (Gemini API and Vertex AI).
 *
 * @since 0.1.0
 * @category models
 */
export type Family = "openai" | "anthropic" | "google"

/**
 * A token count.
 *
 * @since 0.1.0
 * @category models
 */
export interface Count {
  /** the input tokens of the request */
  readonly tokens: number
  /** true when it is the provider's own count (OpenAI encodings on plain text, or a provider count-tokens call) */
  readonly exact: boolean
  /** how it was found, e.g. `"o200k_base"` or `"approximation: o200k_base ×1.16 (Anthropic)"` */
  readonly method: string
  /** tokens before the first message: the request's fixed framing and its output schema */
  readonly fixed: number
  /** of `fixed`, the output schema's tokens */
  readonly schema: number
  /** tokens of each message, its framing included (an embedding: one entry, its input) */
  readonly messages: ReadonlyArray<number>
  /** tokens after the last message (OpenAI's reply priming) */
  readonly trailing: number
}

/**
 * A chat as the wire carries it, provider-neutral: what the local engine sees
 * of a request (messages as text, the output's JSON Schema as sent).
 *
 * @since 0.1.0
 * @category models
 */
export interface ChatInput {
  readonly model: string
  readonly messages: ReadonlyArray<{ readonly role: string; readonly content: string }>
  /** the JSON Schema of a structured output (a value, or its JSON text) */
  readonly jsonSchema?: unknown
}

// ===== Families =====

const PROVIDER_FAMILIES: Record<string, Family> = {
  openai: "openai",
  azure: "openai",
  anthropic: "anthropic",
  gemini: "google",
  google: "google",
  vertex: "google"
}

/** a model name without its provider path (`models/gemini-2.5-flash`, `publishers/google/models/…`) */
const bareModel = (model: string): string => {
  const slash = model.lastIndexOf("/")
  return (slash >= 0 ? model.slice(slash + 1) : model).toLowerCase()
}

/**
 * The family of a provider name (`openai`, `azure`, `anthropic`, `gemini`,
 * `vertex`), or, for an unknown or missing provider, of the model's name:
 * `claude-*` is Anthropic, `gemini-*`/`gemma-*`/`text-embedding-00*` Google,
 * anything else OpenAI.
 *
 * @since 0.1.0
 * @category families
 */
export const familyOf = (provider: string | undefined, model: string): Family => {
  if (provider !== undefined) {
    const family = PROVIDER_FAMILIES[provider.toLowerCase()]
    if (family !== undefined) return family
  }
  const m = bareModel(model)
  if (m.startsWith("claude")) return "anthropic"
  if (
    m.startsWith("gemini") || m.startsWith("gemma") || m.startsWith("text-embedding-00") ||
    m.startsWith("text-multilingual-embedding") || m === "embedding-001"
  ) return "google"
  return "openai"
}

/**
 * The encoding of an OpenAI model: `cl100k_base` for the models gpt-tokenizer
 * maps to it or to an older encoding (gpt-4, gpt-3.5-turbo,
 * text-embedding-3-*, text-embedding-ada-002), else `o200k_base`. A fine-tuned
 * model (`ft:gpt-4o-mini:…`) uses its base model's.
 *
 * @since 0.1.0
 * @category families
 */
export const encodingOf = (model: string): Encoding.Encoding => {
  const m = baseOf(model)
  const encoding = Encoding.modelEncodings()[m]
  return encoding === undefined || encoding === "o200k_base" || encoding === "o200k_harmony" ? "o200k_base" : "cl100k_base"
}

const baseOf = (model: string): string => {
  const m = bareModel(model)
  return m.startsWith("ft:") ? m.slice(3).split(":")[0]! : m
}

/** OpenAI model names whose encoding is known (gpt-tokenizer lists them, or they follow OpenAI's current naming) */
const isOpenAiModel = (model: string): boolean => {
  const m = baseOf(model)
  return Encoding.modelEncodings()[m] !== undefined ||
    /^(gpt-|chatgpt-|o\d|text-embedding-3|text-embedding-ada|codex-|computer-use)/.test(m)
}

// ===== Counting =====

interface Rules {
  /** per message, beyond its text */
  readonly perMessage: number
  /** before the first message, when there is a schema (Anthropic's tool-use system prompt) */
  readonly schemaFixed: number
  /** after the last message of a chat */
  readonly trailing: number
  /** text tokens = round(o200k tokens × textScale) */
  readonly textScale: number
  /** schema tokens = round(o200k tokens of its JSON × schemaScale) */
  readonly schemaScale: number
}

const RULES: Record<Family, Rules> = {
  // OpenAI cookbook, num_tokens_from_messages: 3 per message plus its role's tokens, 3 to prime the reply
  openai: { perMessage: 3, schemaFixed: 0, trailing: 3, textScale: 1, schemaScale: 1 },
  // Claude vs GPT-4o (published: English +16 %, code +30 %); 3 per message fitted on Anthropic's documented
  // count_tokens example; 313 = the tool-use system prompt with tool_choice any/tool (Claude 4 models)
  anthropic: { perMessage: 3, schemaFixed: 313, trailing: 0, textScale: 1.16, schemaScale: 1.3 },
  // Google's countTokens example matches o200k; promptTokenCount is one more per turn
  google: { perMessage: 1, schemaFixed: 0, trailing: 0, textScale: 1, schemaScale: 1 }
}

const scaled = (tokens: number, scale: number): number => scale === 1 ? tokens : Math.round(tokens * scale)

/**
 * Loads an encoding now (default `o200k_base`, which every family's count uses;
 * 0.3–0.9 s and about 80 MB resident), so that the first count does not stall a
 * server that is answering requests. Counting loads it on first use otherwise.
 *
 * @since 0.1.0
 * @category counting
 */
export const preload = (encoding: "o200k_base" | "cl100k_base" = "o200k_base"): void => Encoding.preload(encoding)

/**
 * The tokens of a text for a family and model: exact for OpenAI models, an
 * approximation for the others (see the module's notes).
 *
 * @since 0.1.0
 * @category counting
 */
export const countText = (text: string, family: Family, model: string): number =>
  family === "openai"
    ? Encoding.count(text, encodingOf(model))
    : scaled(Encoding.count(text, "o200k_base"), RULES[family].textScale)

const methodOf = (family: Family, model: string, schema: boolean): { readonly exact: boolean; readonly method: string } => {
  switch (family) {
    case "openai": {
      const encoding = encodingOf(model)
      if (!isOpenAiModel(model)) return { exact: false, method: `${encoding} (model unknown to the tokenizer: an estimate)` }
      return schema
        ? { exact: false, method: `${encoding}; the output schema counted as its JSON text (an estimate)` }
        : { exact: true, method: encoding }
    }
    case "anthropic":
      return { exact: false, method: "approximation: o200k_base ×1.16 (schema ×1.30), 3 per message (Anthropic)" }
    case "google":
      return { exact: false, method: "approximation: o200k_base ×1.00, 1 per turn (Gemini)" }
  }
}

const schemaJsonText = (jsonSchema: unknown): string | undefined =>
  jsonSchema === undefined || jsonSchema === null
    ? undefined
    : typeof jsonSchema === "string"
    ? jsonSchema
    : JSON.stringify(jsonSchema)

const chatCount = (
  family: Family,
  model: string,
  messages: ReadonlyArray<{ readonly role: string; readonly content: string }>,
  schemaJson: string | undefined
): Count => {
  const rules = RULES[family]
  const schema = schemaJson === undefined
    ? 0
    : family === "openai"
    ? Encoding.count(schemaJson, encodingOf(model))
    : scaled(Encoding.count(schemaJson, "o200k_base"), rules.schemaScale)
  const fixed = schema + (schemaJson === undefined ? 0 : rules.schemaFixed)
  const perMessage = new Array<number>(messages.length)
  let tokens = fixed + rules.trailing
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i]!
    // OpenAI counts the role's own tokens (1 for system, user, assistant)
    const n = rules.perMessage + (family === "openai" ? Encoding.count(m.role, encodingOf(model)) : 0) +
      countText(m.content, family, model)
    perMessage[i] = n
    tokens += n
  }
  return { tokens, ...methodOf(family, model, schemaJson !== undefined), fixed, schema, messages: perMessage, trailing: rules.trailing }
}

/**
 * Counts a chat as the wire carries it (messages as text, the output's JSON
 * Schema as sent) for a family. The local engine reports this as the input
 * tokens of the requests it answers, so an estimate made with
 * {@link countRequest} and the emulators' usage agree.
 *
 * @since 0.1.0
 * @category counting
 */
export const countChat = (input: ChatInput, family: Family): Count =>
  chatCount(family, input.model, input.messages, schemaJsonText(input.jsonSchema))

/**
 * Counts an embedding input for a family: its text alone (no framing).
 *
 * @since 0.1.0
 * @category counting
 */
export const countEmbedding = (input: { readonly model: string; readonly input: string }, family: Family): Count => {
  const n = countText(input.input, family, input.model)
  const how = methodOf(family, input.model, false)
  return { tokens: n, ...how, fixed: 0, schema: 0, messages: [n], trailing: 0 }
}

/**
 * The input tokens of a request sent to `provider` (a provider name such as
 * `openai`, `azure`, `anthropic`, `gemini`, `vertex`; unknown names fall back
 * to the model's family). A structured output's schema is rendered the way
 * that provider's adapter sends it, once per schema.
 *
 * @since 0.1.0
 * @category counting
 */
export const countRequest = (request: Request.Request, provider: string): Count => {
  const family = familyOf(provider, request.model)
  if (request._tag === "Embedding") return countEmbedding(request, family)
  const schema = request.output === undefined ? undefined : schemaText(request.output.schema, family)
  return chatCount(family, request.model, request.messages, schema)
}

// ===== Service =====

/**
 * A provider's own count of a request's input tokens (Anthropic
 * `messages.countTokens`, Gemini `models.countTokens`), supplied by an adapter
 * when the user allows network calls for counting. offpeak never calls a
 * network by itself to count.
 *
 * @since 0.1.0
 * @category models
 */
export type CountTokensCall = (request: Request.Request) => Effect.Effect<number, unknown>

/**
 * Counts requests for a provider, effectfully: offline by default, or
 * calibrated by a provider's count-tokens call.
 *
 * @since 0.1.0
 * @category models
 */
export interface Service {
  readonly count: (request: Request.Request, provider: string) => Effect.Effect<Count>
}

/**
 * The token counter service.
 *
 * @since 0.1.0
 * @category services
 */
export class Counter extends Context.Service<Counter, Service>()("@offpeak/core/Tokens/Counter") {}

/**
 * Options of {@link make}.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** per provider name, its count-tokens call */
  readonly calls?: Readonly<Record<string, CountTokensCall>> | undefined
  /** how many requests per provider are counted by the call before the rest are scaled offline (default 20) */
  readonly calibrationSample?: number | undefined
}

/**
 * A counter. Without `calls` it is {@link countRequest}. With a call for a
 * provider, the first `calibrationSample` requests of that provider are counted
 * by the call (`exact: true`), and each later request's offline count is scaled
 * by the ratio of the calls' total to the offline total over that sample
 * (`exact: false`, the method names the factor and the sample). A call that
 * fails leaves the offline count.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Service => {
  const sample = Math.max(1, Math.floor(options.calibrationSample ?? 20))
  const calibrations = new Map<string, { remote: number; offline: number; n: number }>()
  return {
    count: (request, provider) => {
      const offline = countRequest(request, provider)
      const call = options.calls?.[provider]
      if (call === undefined) return Effect.succeed(offline)
      let c = calibrations.get(provider)
      if (c === undefined) {
        c = { remote: 0, offline: 0, n: 0 }
        calibrations.set(provider, c)
      }
      const cal = c
      if (cal.n >= sample) {
        const factor = cal.remote / Math.max(1, cal.offline)
        return Effect.succeed({
          ...offline,
          tokens: Math.round(offline.tokens * factor),
          exact: false,
          method: `${offline.method}, calibrated ×${factor.toFixed(3)} on ${cal.n} provider counts`
        })
      }
      return call(request).pipe(
        Effect.map((tokens): Count => {
          if (cal.n < sample) {
            cal.remote += tokens
            cal.offline += offline.tokens
            cal.n++
          }
          return { ...offline, tokens, exact: true, method: `${provider} count-tokens call` }
        }),
        Effect.catchCause(() => Effect.succeed(offline))
      )
    }
  }
}

/**
 * The offline counter.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<Counter> = Layer.sync(Counter, () => make())

/**
 * A counter calibrated by providers' count-tokens calls (see {@link make}).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerWithCalls = (options: Options): Layer.Layer<Counter> => Layer.sync(Counter, () => make(options))
