/**
 * Provider-neutral requests: what one source record asks of a model.
 *
 * A pipeline turns each record into a `Request`; a provider adapter encodes it
 * into its own wire format (an OpenAI batch line, an Anthropic `params` object,
 * …). Requests carry no provider ids and no row index: identical requests from
 * different rows get the same {@link Fingerprint} and are sent once.
 *
 * @since 0.1.0
 */
import type { Schema } from "effect"

/**
 * One chat message.
 *
 * @since 0.1.0
 * @category models
 */
export interface Message {
  readonly role: "system" | "user" | "assistant"
  readonly content: string
}

/**
 * Sampling parameters shared by every chat provider. Unset keys are left to the
 * provider's defaults and are not part of the fingerprint.
 *
 * @since 0.1.0
 * @category models
 */
export interface ChatParams {
  readonly maxTokens?: number | undefined
  readonly temperature?: number | undefined
  readonly topP?: number | undefined
  readonly stop?: ReadonlyArray<string> | undefined
  readonly seed?: number | undefined
}

/**
 * A structured-output request: the model must answer with JSON that decodes
 * with `schema`. Adapters send the schema through the provider's JSON-schema
 * mode; `name` is the schema name some providers require.
 *
 * @since 0.1.0
 * @category models
 */
export interface Output<A = unknown> {
  readonly name: string
  readonly schema: Schema.Codec<A, any>
}

/**
 * A chat completion request.
 *
 * @since 0.1.0
 * @category models
 */
export interface Chat {
  readonly _tag: "Chat"
  readonly model: string
  readonly messages: ReadonlyArray<Message>
  readonly params: ChatParams
  readonly output?: Output | undefined
  /**
   * The first `cachePrefix` messages (system included) are a prefix shared by
   * many requests: providers with prompt caching mark it (Anthropic
   * `cache_control`). It does not change the answer, so it is not part of the
   * fingerprint.
   */
  readonly cachePrefix?: number | undefined
}

/**
 * An embedding request for one input text.
 *
 * @since 0.1.0
 * @category models
 */
export interface Embedding {
  readonly _tag: "Embedding"
  readonly model: string
  readonly input: string
  readonly dimensions?: number | undefined
}

/**
 * Any request a pipeline can send.
 *
 * @since 0.1.0
 * @category models
 */
export type Request = Chat | Embedding

/**
 * Builds a chat request. `system` is a shorthand for a leading system message;
 * `prompt` for a single user message.
 *
 * @example
 * ```ts
 * Request.chat({ model: "gpt-4o-mini", system: "Classify the ticket.", prompt: ticket.body, maxTokens: 200 })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const chat = (options: ChatParams & {
  readonly model: string
  readonly system?: string | undefined
  readonly prompt?: string | undefined
  readonly messages?: ReadonlyArray<Message> | undefined
  readonly output?: Output | undefined
  readonly cachePrefix?: number | undefined
}): Chat => {
  const messages: Array<Message> = []
  if (options.system !== undefined) messages.push({ role: "system", content: options.system })
  if (options.messages !== undefined) messages.push(...options.messages)
  if (options.prompt !== undefined) messages.push({ role: "user", content: options.prompt })
  if (messages.length === 0) throw new TypeError("Request.chat: give `prompt` or `messages`")
  const params: { -readonly [K in keyof ChatParams]: ChatParams[K] } = {}
  if (options.maxTokens !== undefined) params.maxTokens = options.maxTokens
  if (options.temperature !== undefined) params.temperature = options.temperature
  if (options.topP !== undefined) params.topP = options.topP
  if (options.stop !== undefined) params.stop = options.stop
  if (options.seed !== undefined) params.seed = options.seed
  return {
    _tag: "Chat",
    model: options.model,
    messages,
    params,
    output: options.output,
    ...(options.cachePrefix !== undefined ? { cachePrefix: options.cachePrefix } : {})
  }
}

/**
 * Builds an embedding request.
 *
 * @since 0.1.0
 * @category constructors
 */
export const embedding = (options: {
  readonly model: string
  readonly input: string
  readonly dimensions?: number | undefined
}): Embedding => ({ _tag: "Embedding", model: options.model, input: options.input, dimensions: options.dimensions })

/**
 * Attaches a structured-output schema to a chat request that has none.
 *
 * @since 0.1.0
 * @category combinators
 */
export const withOutput = (request: Request, output: Output | undefined): Request =>
  output === undefined || request._tag !== "Chat" || request.output !== undefined ? request : { ...request, output }
