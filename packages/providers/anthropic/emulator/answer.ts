/**
 * The emulator's answers to single Messages API requests, shared by batch
 * lines and `POST /v1/messages`: request params in, the real API's `message`
 * object (or its error) out, computed by the local engine.
 *
 * What the engine sees: the system prompt (text blocks joined by newlines) as
 * a leading `system` message, then every turn with its text (a string, or the
 * `text` of its blocks joined by newlines), `max_tokens`, and — when
 * `tool_choice` forces a tool (`{type: "tool", name}`, or `{type: "any"}` with
 * one tool) — that tool's `input_schema` as the JSON Schema of the answer,
 * which then comes back as a `tool_use` block.
 */
import * as crypto from "node:crypto"
import * as Engine from "../../local/Engine.ts"
import type { InjectedType } from "./store.ts"

// ===== errors =====

/** the API's error object */
export interface ErrorObject {
  readonly type: string
  readonly message: string
}

/** the API's error response body */
export const errorBody = (type: string, message: string, requestId: string | null = null) => ({
  type: "error" as const,
  error: { type, message },
  request_id: requestId
})

/** the HTTP status of each error type */
export const STATUS: Record<string, number> = {
  invalid_request_error: 400,
  authentication_error: 401,
  billing_error: 402,
  permission_error: 403,
  not_found_error: 404,
  request_too_large: 413,
  rate_limit_error: 429,
  api_error: 500,
  timeout_error: 504,
  overloaded_error: 529
}

/** the error a line gets when a failure of `type` is injected */
export const injectedError = (type: InjectedType): ErrorObject => {
  switch (type) {
    case "api_error":
      return { type, message: "Internal server error" }
    case "overloaded_error":
      return { type, message: "Overloaded" }
    case "invalid_request_error":
      return { type, message: "prompt is too long: 204817 tokens > 200000 maximum" }
  }
}

// ===== params =====

const isObject = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)

/** every body parameter of `POST /v1/messages` (API version 2026-10-21) */
const PARAMS = new Set([
  "model",
  "max_tokens",
  "messages",
  "cache_control",
  "container",
  "diagnostics",
  "inference_geo",
  "metadata",
  "output_config",
  "service_tier",
  "speed",
  "stop_sequences",
  "stream",
  "system",
  "thinking",
  "tool_choice",
  "tools",
  "user_profile_id"
])

/** sampling parameters: accepted only by API versions before 2026-10-21 */
const SAMPLING = ["temperature", "top_p", "top_k"] as const

/** the version that removed the sampling parameters */
export const SAMPLING_REMOVED_IN = "2026-10-21"

interface Block {
  readonly text: string
  readonly marked: boolean
}

/** a validated request: what the engine needs, plus its prompt-cache prefix */
export interface Parsed {
  readonly model: string
  readonly maxTokens: number
  readonly system: string | undefined
  readonly messages: ReadonlyArray<{ readonly role: string; readonly content: string }>
  readonly stop: ReadonlyArray<string>
  readonly tool: { readonly name: string; readonly inputSchema: unknown } | undefined
  /** the prefix up to the last `cache_control` marker: a key and its tokens */
  readonly cache: { readonly key: string; readonly tokens: number } | undefined
}

const blocksOf = (content: unknown, at: string): ReadonlyArray<Block> | string => {
  if (typeof content === "string") return [{ text: content, marked: false }]
  if (!Array.isArray(content)) return `${at}: Input should be a valid string or a valid list`
  const blocks: Array<Block> = []
  for (let i = 0; i < content.length; i++) {
    const b = content[i]
    if (!isObject(b) || typeof b.type !== "string") return `${at}.${i}: Input should be a valid dictionary with a \`type\``
    if (b.type === "text" && typeof b.text !== "string") return `${at}.${i}.text: Field required`
    const text = typeof b.text === "string" ? b.text : typeof b.content === "string" ? b.content : ""
    blocks.push({ text, marked: isObject(b.cache_control) })
  }
  return blocks
}

const joined = (blocks: ReadonlyArray<Block>) => blocks.map((b) => b.text).filter((t) => t.length > 0).join("\n")

/**
 * Validates Messages API params the way the API does (unknown parameters,
 * required fields, types, the sampling parameters of API version `version`):
 * the parsed request, or the `invalid_request_error` message.
 */
export const parse = (params: unknown, version: string): Parsed | string => {
  if (!isObject(params)) return "Input should be a valid dictionary"
  const sampling = version < SAMPLING_REMOVED_IN
  for (const key of Object.keys(params)) {
    if (PARAMS.has(key)) continue
    if (sampling && (SAMPLING as ReadonlyArray<string>).includes(key)) continue
    return `${key}: Extra inputs are not permitted`
  }
  if (sampling) {
    for (const key of SAMPLING) {
      const v = params[key]
      if (v === undefined) continue
      if (typeof v !== "number" || !Number.isFinite(v)) return `${key}: Input should be a valid number`
      if (key !== "top_k" && (v < 0 || v > 1)) return `${key}: Input should be less than or equal to 1 and greater than or equal to 0`
    }
  }
  const { max_tokens, messages, model } = params
  if (model === undefined) return "model: Field required"
  if (typeof model !== "string" || model.length === 0) return "model: Input should be a valid string"
  if (max_tokens === undefined) return "max_tokens: Field required"
  if (typeof max_tokens !== "number" || !Number.isInteger(max_tokens)) return "max_tokens: Input should be a valid integer"
  if (max_tokens < 1) return "max_tokens: Input should be greater than or equal to 1"
  if (messages === undefined) return "messages: Field required"
  if (!Array.isArray(messages)) return "messages: Input should be a valid list"
  if (messages.length === 0) return "messages: at least one message is required"
  if (params.stream === true) return "stream: streaming is not supported by the emulator"

  // the prompt-cache prefix: everything up to the last marked block, in the order the API reads it
  const prefix: Array<string> = []
  let cacheKey: string | undefined
  let cacheTokens = 0
  let tokens = 0
  const visit = (label: string, blocks: ReadonlyArray<Block>) => {
    for (const b of blocks) {
      prefix.push(`${label}\u0000${b.text}`)
      tokens += Engine.countTokens(b.text, model, "anthropic")
      if (b.marked) {
        cacheKey = prefix.join("\u0001")
        cacheTokens = tokens
      }
    }
  }

  let tool: Parsed["tool"] = undefined
  const tools = params.tools
  if (tools !== undefined) {
    if (!Array.isArray(tools)) return "tools: Input should be a valid list"
    for (let i = 0; i < tools.length; i++) {
      const t = tools[i]
      if (!isObject(t) || typeof t.name !== "string") return `tools.${i}.name: Field required`
      if (t.type === undefined || t.type === "custom") {
        if (!isObject(t.input_schema)) return `tools.${i}.input_schema: Field required`
        if (t.input_schema.type !== "object") return `tools.${i}.input_schema.type: Input should be 'object'`
      }
    }
    prefix.push(`tools\u0000${JSON.stringify(tools)}`)
    if (tools.some((t) => isObject(t) && isObject(t.cache_control))) cacheKey = prefix.join("\u0001")
    const choice = params.tool_choice
    if (isObject(choice)) {
      if (choice.type === "tool") {
        const forced = tools.find((t) => isObject(t) && t.name === choice.name) as Record<string, unknown> | undefined
        if (forced === undefined) return `tool_choice.name: no tool named '${String(choice.name)}' in tools`
        tool = { name: forced.name as string, inputSchema: forced.input_schema }
      } else if (choice.type === "any" && tools.length === 1) {
        const only = tools[0] as Record<string, unknown>
        tool = { name: only.name as string, inputSchema: only.input_schema }
      }
    }
  } else if (params.tool_choice !== undefined) {
    return "tool_choice: tool_choice may only be specified while providing tools"
  }

  let system: string | undefined
  if (params.system !== undefined) {
    const blocks = blocksOf(params.system, "system")
    if (typeof blocks === "string") return blocks
    system = joined(blocks)
    visit("system", blocks)
  }
  const turns: Array<{ role: string; content: string }> = []
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i]
    if (!isObject(m)) return `messages.${i}: Input should be a valid dictionary`
    const role = m.role
    const roles = sampling ? ["user", "assistant"] : ["user", "assistant", "system"]
    if (typeof role !== "string" || !roles.includes(role)) {
      return `messages.${i}.role: Input should be ${roles.map((r) => `'${r}'`).join(" or ")}`
    }
    if (m.content === undefined) return `messages.${i}.content: Field required`
    const blocks = blocksOf(m.content, `messages.${i}.content`)
    if (typeof blocks === "string") return blocks
    turns.push({ role, content: joined(blocks) })
    visit(role, blocks)
  }
  const stop = params.stop_sequences
  if (stop !== undefined && (!Array.isArray(stop) || stop.some((s) => typeof s !== "string"))) {
    return "stop_sequences: Input should be a valid list of strings"
  }
  return {
    model,
    maxTokens: max_tokens,
    system,
    messages: turns,
    stop: (stop as Array<string> | undefined) ?? [],
    tool,
    cache: cacheKey !== undefined
      ? { key: crypto.createHash("sha256").update(`${model}\u0002${cacheKey}`).digest("hex"), tokens: cacheTokens }
      : undefined
  }
}

// ===== answers =====

/** how the prompt cache treats a request: it writes the prefix, reads it, or is not cached */
export type CacheUse = "write" | "read" | null

/** ids of one answer */
export interface Ids {
  readonly message: string
  readonly toolUse: string
}

/** a `message` object and its tokens */
export interface Answer {
  readonly message: unknown
  readonly inputTokens: number
  readonly outputTokens: number
}

/** what the engine is asked for a parsed request (exported so tests can compute expected answers) */
export const engineInput = (p: Parsed): Engine.ChatInput => ({
  model: p.model,
  messages: [...(p.system !== undefined && p.system.length > 0 ? [{ role: "system", content: p.system }] : []), ...p.messages],
  maxTokens: p.maxTokens,
  jsonSchema: p.tool?.inputSchema
})

/** the `message` answering a parsed request */
export const answer = (p: Parsed, ids: Ids, cache: CacheUse, serviceTier: "standard" | "batch"): Answer => {
  const out = Engine.chat(engineInput(p))
  let content: Array<unknown>
  let stopReason: string
  let stopSequence: string | null = null
  let outputTokens = out.usage.outputTokens
  if (p.tool !== undefined) {
    const complete = out.finishReason === "stop"
    content = [{
      type: "tool_use",
      id: ids.toolUse,
      name: p.tool.name,
      input: complete ? JSON.parse(out.text) : {},
      caller: { type: "direct" }
    }]
    stopReason = complete ? "tool_use" : "max_tokens"
  } else {
    let text = out.text
    stopReason = out.finishReason === "length" ? "max_tokens" : "end_turn"
    let cut = -1
    for (const s of p.stop) {
      if (s.length === 0) continue
      const at = text.indexOf(s)
      if (at >= 0 && (cut < 0 || at < cut)) {
        cut = at
        stopSequence = s
      }
    }
    if (cut >= 0) {
      text = text.slice(0, cut)
      stopReason = "stop_sequence"
      outputTokens = Engine.countTokens(text)
    }
    content = [{ type: "text", text, citations: null }]
  }
  const total = out.usage.inputTokens
  const cached = p.cache !== undefined && cache !== null ? Math.min(p.cache.tokens, total) : 0
  return {
    message: {
      id: ids.message,
      type: "message",
      role: "assistant",
      model: p.model,
      content,
      stop_reason: stopReason,
      stop_sequence: stopSequence,
      stop_details: null,
      container: null,
      diagnostics: null,
      usage: {
        input_tokens: total - cached,
        cache_creation_input_tokens: cache === "write" ? cached : 0,
        cache_read_input_tokens: cache === "read" ? cached : 0,
        cache_creation: { ephemeral_5m_input_tokens: cache === "write" ? cached : 0, ephemeral_1h_input_tokens: 0 },
        output_tokens: outputTokens,
        output_tokens_details: null,
        server_tool_use: null,
        service_tier: serviceTier,
        inference_geo: null,
        speed: null
      }
    },
    inputTokens: total,
    outputTokens
  }
}
