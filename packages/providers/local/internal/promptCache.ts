/**
 * The emulators' prompt cache: which prompt prefixes a request finds cached.
 * Deterministic (no clock): "shortly before" is counted in requests.
 *
 * - Automatic caching (OpenAI, Gemini implicit caching): every message
 *   boundary before the last message is a candidate prefix (the request's
 *   fixed part, i.e. its output schema, then the first k messages). A request
 *   reads the longest candidate of at least `minTokens` tokens that an earlier
 *   request left in the cache; OpenAI counts cache hits in 128-token steps past
 *   the first 1,024.
 * - Explicit caching (Anthropic): only the prefix ending at the marked message
 *   (`cache_control`) is a candidate; it is read when cached, else written.
 *
 * A cached prefix stays while fewer than `window` requests have been answered
 * since it was last used and while it is among the `capacity` most recently
 * used prefixes (a provider's cache is spread over many machines and holds few
 * of one customer's prefixes: interleaving many prefixes costs hits, grouping
 * them wins them back).
 */
import * as crypto from "node:crypto"

/** options of a cache */
export interface Options {
  readonly minTokens?: number | undefined
  readonly window?: number | undefined
  readonly capacity?: number | undefined
}

/** what a request got from the cache */
export interface Use {
  readonly cachedInputTokens: number
  readonly cacheWriteInputTokens: number
}

/** running totals of a cache */
export interface Stats {
  /** requests looked up */
  readonly requests: number
  /** requests that read a cached prefix */
  readonly hits: number
  /** input tokens of every request looked up */
  readonly inputTokens: number
  /** of those, tokens read from the cache */
  readonly cachedInputTokens: number
  /** tokens written to the cache (explicit caching) */
  readonly cacheWriteInputTokens: number
}

/** a request as the cache sees it */
export interface Prompt {
  readonly family: "openai" | "anthropic" | "google"
  readonly model: string
  readonly schema: string
  readonly messages: ReadonlyArray<{ readonly role: string; readonly content: string }>
  /** tokens before the first message (schema and framing) */
  readonly fixed: number
  /** tokens of each message */
  readonly perMessage: ReadonlyArray<number>
  /** every input token of the request */
  readonly inputTokens: number
  /** explicit caching: the number of leading messages the marked prefix covers */
  readonly marked: number | undefined
}

/** OpenAI: hits past the first 1,024 tokens come in steps of 128 */
const openAiCached = (tokens: number, min: number) => min + Math.floor((tokens - min) / 128) * 128

/** a prompt cache (see the module's notes) */
export class PromptCache {
  readonly minTokens: number
  readonly window: number
  readonly capacity: number
  /** prefix key → the request number that last used it; iteration order is least recently used first */
  private readonly entries = new Map<string, number>()
  private seq = 0
  private totals = { requests: 0, hits: 0, inputTokens: 0, cachedInputTokens: 0, cacheWriteInputTokens: 0 }

  constructor(options: Options = {}) {
    this.minTokens = Math.max(1, Math.floor(options.minTokens ?? 1024))
    this.window = Math.max(1, Math.floor(options.window ?? 1000))
    this.capacity = Math.max(1, Math.floor(options.capacity ?? 8))
  }

  /** running totals */
  stats(): Stats {
    return { ...this.totals }
  }

  private live(key: string): boolean {
    const at = this.entries.get(key)
    return at !== undefined && this.seq - at <= this.window
  }

  private touch(key: string): void {
    this.entries.delete(key)
    this.entries.set(key, this.seq)
    while (this.entries.size > this.capacity) this.entries.delete(this.entries.keys().next().value!)
  }

  private evictStale(): void {
    for (const [key, at] of this.entries) {
      if (this.seq - at <= this.window) break
      this.entries.delete(key)
    }
  }

  /** looks a request up, records its prefixes, and says what it read or wrote */
  use(prompt: Prompt): Use {
    this.seq++
    this.evictStale()
    const hash = crypto.createHash("sha256").update(`${prompt.family}\u0000${prompt.model}\u0000${prompt.schema}\u0001`)
    // candidate boundaries: after message k-1, for k in 1..n-1 (explicit: only the marked one)
    const n = prompt.messages.length
    const candidates: Array<{ key: string; tokens: number }> = []
    let tokens = prompt.fixed
    const last = prompt.marked !== undefined ? Math.min(prompt.marked, n) : n - 1
    for (let k = 1; k <= last; k++) {
      const m = prompt.messages[k - 1]!
      hash.update(`${m.role}\u0000${m.content}\u0001`)
      tokens += prompt.perMessage[k - 1]!
      if (prompt.marked !== undefined && k !== last) continue
      if (tokens >= this.minTokens) candidates.push({ key: hash.copy().digest("base64"), tokens })
    }
    let read = 0
    let write = 0
    if (prompt.marked !== undefined) {
      const c = candidates[0]
      if (c !== undefined) {
        if (this.live(c.key)) read = c.tokens
        else write = c.tokens
      }
    } else {
      for (let i = candidates.length - 1; i >= 0; i--) {
        if (this.live(candidates[i]!.key)) {
          read = prompt.family === "openai" ? openAiCached(candidates[i]!.tokens, this.minTokens) : candidates[i]!.tokens
          break
        }
      }
    }
    for (const c of candidates) this.touch(c.key)
    read = Math.min(read, prompt.inputTokens)
    write = Math.min(write, prompt.inputTokens - read)
    this.totals.requests++
    this.totals.inputTokens += prompt.inputTokens
    if (read > 0) {
      this.totals.hits++
      this.totals.cachedInputTokens += read
    }
    this.totals.cacheWriteInputTokens += write
    return { cachedInputTokens: read, cacheWriteInputTokens: write }
  }
}
