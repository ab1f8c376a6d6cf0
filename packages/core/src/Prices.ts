/**
 * Over 400 lines on purpose: exact money arithmetic, the providers' batch rules and the price lookup are one
 * concept; the bundled data is `internal/pricesData.ts`.
 *
 * What a request costs: a usage (input, cached input, cache writes, output
 * tokens) priced for a provider, model and mode (`batch` | `sync`).
 *
 * - **List prices** come from `@pydantic/genai-prices` (its bundled data, no
 *   network), looked up once per provider and model. Prices are computed **per
 *   request**, never on usage summed over a batch: tiered models (e.g.
 *   claude-sonnet-4-5, gemini-2.5-pro above 200k input tokens) pick their tier
 *   from the request's own input tokens, as the providers bill.
 * - **Batch discounts** are applied by offpeak (the package has none), per
 *   provider ({@link BATCH_RULES}): 50 % for OpenAI Batch and Azure Global Batch,
 *   Anthropic Message Batches, Gemini batch mode and Vertex batch prediction.
 *   How batch stacks with the prompt-cache discount differs: OpenAI and
 *   Anthropic stack them (a cached input token in a batch costs half the cached
 *   price; Anthropic's cache-write premium is halved too); Google does not (a
 *   cached token costs the cache price, the batch discount covers the rest).
 * - **Overrides** per model (`{ "my-model": { inputPerMTok, outputPerMTok,
 *   cachedInputPerMTok? } }`) come before the package, for models it does not
 *   know or prices you negotiated.
 * - An unknown model is a {@link PriceError} saying "no price for model X of
 *   provider Y (add an override)", never a zero.
 *
 * **Money** is a `bigint` of picodollars (10⁻¹² USD): every published price
 * has at most 6 decimals per million tokens, so a token's price is a whole
 * number of picodollars and a request's cost is exact (a halved price can end in
 * half a picodollar: each of a request's parts is rounded half up, so at most
 * 2 × 10⁻¹² USD per request). Sums of a million answers are exact; a 64-bit
 * integer column holds up to 9.2 million USD. {@link formatUsd} and
 * {@link toUsd} display it.
 *
 * @example
 * ```ts
 * import * as Prices from "@offpeak/core/Prices"
 *
 * const cost = Prices.price({ inputTokens: 1200, outputTokens: 80 }, { provider: "openai", model: "gpt-4o-mini", mode: "batch" })
 * // Result.succeed({ total: 114000000n, … }): Prices.formatUsd(114000000n) === "$0.000114"
 * ```
 *
 * @since 0.1.0
 */
import { Result, Schema } from "effect"
import * as Data from "./internal/pricesData.ts"

// ===== Models =====

/**
 * How a request is sent: the provider's batch API or its synchronous API.
 *
 * @since 0.1.0
 * @category models
 */
export type Mode = "batch" | "sync"

/**
 * An amount of money in picodollars (10⁻¹² USD).
 *
 * @since 0.1.0
 * @category models
 */
export type Money = bigint

/**
 * The usage of one request. `inputTokens` is every input token, cached and
 * cache-write ones included (as OpenAI, Gemini and offpeak's `Result.Usage`
 * report it).
 *
 * @since 0.1.0
 * @category models
 */
export interface Usage {
  readonly inputTokens: number
  readonly outputTokens: number
  /** input tokens read from the prompt cache */
  readonly cachedInputTokens?: number | undefined
  /** input tokens written to the prompt cache (Anthropic's `cache_creation_input_tokens`, 5-minute TTL) */
  readonly cacheWriteInputTokens?: number | undefined
  /** input tokens written to the prompt cache with a 1-hour TTL (Anthropic) */
  readonly cacheWrite1hInputTokens?: number | undefined
}

/**
 * A user's price for a model, in USD per million tokens (a number, or a decimal
 * string for more than 15 significant digits). Without `batch`, batch mode
 * takes the provider's discount ({@link BATCH_RULES}); with it, those prices as
 * they are.
 *
 * @since 0.1.0
 * @category models
 */
export interface Override {
  readonly inputPerMTok: number | string
  readonly outputPerMTok: number | string
  /** default: the input price */
  readonly cachedInputPerMTok?: number | string | undefined
  /** default: the input price */
  readonly cacheWritePerMTok?: number | string | undefined
  readonly batch?: {
    readonly inputPerMTok: number | string
    readonly outputPerMTok: number | string
    readonly cachedInputPerMTok?: number | string | undefined
    readonly cacheWritePerMTok?: number | string | undefined
  } | undefined
}

/**
 * Overrides by model name.
 *
 * @since 0.1.0
 * @category models
 */
export type Overrides = Readonly<Record<string, Override>>

/**
 * The cost of one request, by part.
 *
 * @since 0.1.0
 * @category models
 */
export interface Cost {
  readonly total: Money
  /** input tokens neither read from nor written to the cache */
  readonly input: Money
  readonly cachedInput: Money
  readonly cacheWrite: Money
  readonly output: Money
  readonly mode: Mode
  readonly provider: string
  /** the model priced (genai-prices' id for it, or the override's key) */
  readonly model: string
  readonly source: "genai-prices" | "override"
}

/**
 * How a provider discounts its batch API and how that stacks with the prompt
 * cache: `stack` (cached tokens get the batch discount on top of the cache
 * price) or `cache-precedence` (cached tokens pay the cache price alone).
 *
 * @since 0.1.0
 * @category models
 */
export interface BatchRule {
  /** the batch price as a fraction of the list price */
  readonly numerator: bigint
  readonly denominator: bigint
  readonly cache: "stack" | "cache-precedence"
  /** the genai-prices provider id */
  readonly pricesId: string
  /** where the rule comes from */
  readonly source: string
}

// ===== Errors =====

/**
 * No price is known for the model at the provider.
 *
 * @since 0.1.0
 * @category errors
 */
export class NoPrice extends Schema.TaggedError<NoPrice>()("NoPrice", {
  provider: Schema.String,
  model: Schema.String,
  message: Schema.String
}) {}

/**
 * The usage cannot be priced (negative counts, more cached than input tokens).
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidUsage extends Schema.TaggedError<InvalidUsage>()("InvalidUsage", {
  message: Schema.String
}) {}

/**
 * A request could not be priced, with the reason.
 *
 * @since 0.1.0
 * @category errors
 */
export class PriceError extends Schema.TaggedError<PriceError>()("PriceError", {
  reason: Schema.Union([NoPrice, InvalidUsage]),
  message: Schema.String
}) {}

const noPrice = (provider: string, model: string, detail = "") => {
  const message = `no price for model ${model} of provider ${provider}${detail} (add an override)`
  return new PriceError({ reason: new NoPrice({ provider, model, message }), message })
}

const invalid = (message: string) => new PriceError({ reason: new InvalidUsage({ message }), message })

// ===== Batch rules =====

const HALF = { numerator: 1n, denominator: 2n } as const

/**
 * Each provider's batch discount and its stacking with the prompt cache.
 *
 * - `openai`: Batch API at 50 % of the synchronous price (OpenAI Batch guide and
 *   FAQ); cached input stacks (OpenAI's pricing page lists Batch cached input
 *   at half the standard cached price).
 * - `azure`: Global/Data-Zone Batch at 50 % (Azure OpenAI batch docs), priced as
 *   OpenAI.
 * - `anthropic`: "all batch usage is billed at 50 % of standard API prices"
 *   (Message Batches guide); prompt-caching multipliers (reads 0.1×, writes
 *   1.25× / 2×) apply on top (Anthropic's pricing page: the multipliers stack;
 *   a cached batch read is 5 % of the base input price).
 * - `gemini`, `vertex`: batch at 50 % (Gemini batch-mode guide; Vertex batch
 *   prediction); the implicit-cache discount and the batch discount do not
 *   stack, the cache discount takes precedence (Vertex batch prediction docs;
 *   applied to the Gemini API too).
 *
 * @since 0.1.0
 * @category batch
 */
export const BATCH_RULES: Readonly<Record<string, BatchRule>> = {
  openai: { ...HALF, cache: "stack", pricesId: "openai", source: "OpenAI Batch API: 50 % of synchronous prices; cached input stacks" },
  azure: { ...HALF, cache: "stack", pricesId: "azure", source: "Azure OpenAI Global Batch: 50 % of global standard prices" },
  anthropic: {
    ...HALF,
    cache: "stack",
    pricesId: "anthropic",
    source: "Anthropic Message Batches: 50 % of standard prices; prompt-caching multipliers stack"
  },
  gemini: {
    ...HALF,
    cache: "cache-precedence",
    pricesId: "google",
    source: "Gemini batch mode: 50 %; the cache discount takes precedence over it"
  },
  vertex: {
    ...HALF,
    cache: "cache-precedence",
    pricesId: "google-vertex",
    source: "Vertex AI batch prediction: 50 %; the cache discount takes precedence over it"
  }
}

// ===== Pricing =====

/**
 * What {@link price} needs besides the usage.
 *
 * @since 0.1.0
 * @category models
 */
export interface PriceOptions {
  /** the provider's name (`openai`, `azure`, `anthropic`, `gemini`, `vertex`) */
  readonly provider: string
  readonly model: string
  readonly mode: Mode
  readonly overrides?: Overrides | undefined
  /** the date whose prices apply (default: now) */
  readonly at?: Date | undefined
}

interface Rates {
  readonly input: bigint
  readonly cacheRead: bigint
  readonly cacheWrite: bigint
  readonly cacheWrite1h: bigint
  readonly output: bigint
  /** the batch multiplier (1/1 in sync mode or for an override's batch prices) */
  readonly numerator: bigint
  readonly denominator: bigint
  readonly cache: BatchRule["cache"]
  readonly model: string
  readonly source: Cost["source"]
}

const bareModel = (model: string) => {
  const slash = model.lastIndexOf("/")
  return slash >= 0 ? model.slice(slash + 1) : model
}

const isCount = (n: number | undefined) => n === undefined || (Number.isSafeInteger(n) && n >= 0)

const ratesFor = (options: PriceOptions, inputTokens: number): Rates | PriceError => {
  const rule = BATCH_RULES[options.provider]
  const batch = options.mode === "batch"
  const override = options.overrides?.[options.model] ?? options.overrides?.[bareModel(options.model)]
  if (override !== undefined) {
    try {
      const prices = batch && override.batch !== undefined ? override.batch : override
      if (batch && override.batch === undefined && rule === undefined) {
        return noPrice(options.provider, options.model, ": no batch discount is known for this provider, so give the override's `batch` prices")
      }
      const input = Data.perMTokToPico(prices.inputPerMTok)
      const cacheWrite = prices.cacheWritePerMTok !== undefined ? Data.perMTokToPico(prices.cacheWritePerMTok) : input
      const scaled = batch && override.batch === undefined
      return {
        input,
        output: Data.perMTokToPico(prices.outputPerMTok),
        cacheRead: prices.cachedInputPerMTok !== undefined ? Data.perMTokToPico(prices.cachedInputPerMTok) : input,
        cacheWrite,
        cacheWrite1h: cacheWrite,
        numerator: scaled ? rule!.numerator : 1n,
        denominator: scaled ? rule!.denominator : 1n,
        cache: scaled ? rule!.cache : "stack",
        model: options.model,
        source: "override"
      }
    } catch (error) {
      return invalid(`the override of ${options.model} has a price that is not a non-negative decimal: ${(error as Error).message}`)
    }
  }
  if (rule === undefined) return noPrice(options.provider, options.model, ": offpeak has no price data for this provider")
  const found = Data.lookup(rule.pricesId, bareModel(options.model), options.at === undefined ? Date.now() : options.at.getTime())
  if (found === null) return noPrice(options.provider, options.model)
  // a model whose every rate is flat has the same rates whatever the input: made once per model, rule and mode
  const flat = isFlat(found)
  if (flat) {
    const made = flatRates.get(found)?.get(rule)?.[batch ? 1 : 0]
    if (made !== undefined) return made
  }
  const input = Data.perToken(found.input, inputTokens)
  const cacheWrite = found.cacheWrite !== undefined ? Data.perToken(found.cacheWrite, inputTokens) : input
  const rates: Rates = {
    input,
    output: found.output !== undefined ? Data.perToken(found.output, inputTokens) : 0n,
    cacheRead: found.cacheRead !== undefined ? Data.perToken(found.cacheRead, inputTokens) : input,
    cacheWrite,
    cacheWrite1h: found.cacheWrite1h !== undefined ? Data.perToken(found.cacheWrite1h, inputTokens) : cacheWrite,
    numerator: batch ? rule.numerator : 1n,
    denominator: batch ? rule.denominator : 1n,
    cache: rule.cache,
    model: found.model,
    source: "genai-prices"
  }
  if (flat) {
    const byRule = flatRates.get(found) ?? new Map<BatchRule, [Rates | undefined, Rates | undefined]>()
    const pair = byRule.get(rule) ?? [undefined, undefined]
    pair[batch ? 1 : 0] = rates
    byRule.set(rule, pair)
    flatRates.set(found, byRule)
  }
  return rates
}

/** the rates of models whose every rate is flat, by model, batch rule and mode (sync, batch) */
const flatRates = new WeakMap<Data.ModelRates, Map<BatchRule, [Rates | undefined, Rates | undefined]>>()

const isFlat = (found: Data.ModelRates) =>
  found.input._tag === "Flat" && (found.output?._tag ?? "Flat") === "Flat" && (found.cacheRead?._tag ?? "Flat") === "Flat" &&
  (found.cacheWrite?._tag ?? "Flat") === "Flat" && (found.cacheWrite1h?._tag ?? "Flat") === "Flat"

/** tokens × rate × numerator / denominator, rounded half up to the picodollar */
const part = (tokens: number, perToken: bigint, numerator: bigint, denominator: bigint): Money => {
  if (tokens === 0 || perToken === 0n) return 0n
  const x = BigInt(tokens) * perToken * numerator
  return denominator === 1n ? x : (x * 2n + denominator) / (2n * denominator)
}

/**
 * The cost of one request's usage. Call it per request and sum the results:
 * tiers depend on each request's own input tokens.
 *
 * @since 0.1.0
 * @category pricing
 */
export const price = (usage: Usage, options: PriceOptions): Result.Result<Cost, PriceError> => {
  const cached = usage.cachedInputTokens ?? 0
  const write = usage.cacheWriteInputTokens ?? 0
  const write1h = usage.cacheWrite1hInputTokens ?? 0
  if (!isCount(usage.inputTokens) || !isCount(usage.outputTokens) || !isCount(cached) || !isCount(write) || !isCount(write1h)) {
    return Result.fail(invalid(`token counts must be non-negative integers: ${JSON.stringify(usage)}`))
  }
  const uncached = usage.inputTokens - cached - write - write1h
  if (uncached < 0) {
    return Result.fail(
      invalid(`cached (${cached}) and cache-write (${write + write1h}) input tokens exceed the input tokens (${usage.inputTokens})`)
    )
  }
  const r = ratesFor(options, usage.inputTokens)
  if (r instanceof PriceError) return Result.fail(r)
  const { denominator: den, numerator: num } = r
  // Google: a cached token pays the cache price, without the batch discount
  const cachedNum = r.cache === "stack" ? num : 1n
  const cachedDen = r.cache === "stack" ? den : 1n
  const input = part(uncached, r.input, num, den)
  const cachedInput = part(cached, r.cacheRead, cachedNum, cachedDen)
  const cacheWrite = part(write, r.cacheWrite, num, den) + part(write1h, r.cacheWrite1h, num, den)
  const output = part(usage.outputTokens, r.output, num, den)
  return Result.succeed({
    total: input + cachedInput + cacheWrite + output,
    input,
    cachedInput,
    cacheWrite,
    output,
    mode: options.mode,
    provider: options.provider,
    model: r.model,
    source: r.source
  })
}

/**
 * The most a request can cost: all its input uncached (or written to the cache,
 * for a marked prefix) and `maxOutputTokens` of output, at the mode's price —
 * what a budget reserves before the request is sent.
 *
 * @since 0.1.0
 * @category pricing
 */
export const worstCase = (
  request: {
    readonly inputTokens: number
    readonly maxOutputTokens: number
    /** input tokens a marked prefix may write to the cache (Anthropic `cache_control`) */
    readonly cacheWriteInputTokens?: number | undefined
  },
  options: PriceOptions
): Result.Result<Cost, PriceError> =>
  price({
    inputTokens: request.inputTokens,
    outputTokens: request.maxOutputTokens,
    cacheWriteInputTokens: request.cacheWriteInputTokens
  }, options)

// ===== Money =====

const PICO_PER_USD = 1_000_000_000_000n

/**
 * An amount in USD (a number, or a decimal string such as `"12.50"`) as
 * picodollars; decimals past the twelfth are rounded half up.
 *
 * @since 0.1.0
 * @category money
 */
export const fromUsd = (usd: number | string): Money => {
  const text = typeof usd === "number" ? (Number.isFinite(usd) ? usd.toFixed(12) : "x") : usd.trim().replace(/^\$/, "")
  const match = /^(-?)(\d*)(?:\.(\d*))?$/.exec(text)
  if (match === null || (match[2] === "" && (match[3] ?? "") === "")) throw new RangeError(`not an amount of USD: ${String(usd)}`)
  const frac = match[3] ?? ""
  const pico = BigInt(match[2] || "0") * PICO_PER_USD + BigInt((frac + "000000000000").slice(0, 12)) +
    (frac.length > 12 && frac.charCodeAt(12) >= 53 ? 1n : 0n)
  return match[1] === "-" ? -pico : pico
}

/**
 * An amount in USD as a float, for display and ratios only (never sum these).
 *
 * @since 0.1.0
 * @category money
 */
export const toUsd = (money: Money): number => Number(money) / 1e12

/**
 * An amount as `$1,234.567891`: `digits` decimals (default 6), rounded half
 * up, thousands separated.
 *
 * @since 0.1.0
 * @category money
 */
export const formatUsd = (money: Money, digits = 6): string => {
  const d = Math.max(0, Math.min(12, Math.floor(digits)))
  const negative = money < 0n
  const abs = negative ? -money : money
  const unit = 10n ** BigInt(12 - d)
  const rounded = (abs + unit / 2n) / unit
  const scale = 10n ** BigInt(d)
  const whole = (rounded / scale).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",")
  const frac = d === 0 ? "" : "." + (rounded % scale).toString().padStart(d, "0")
  return `${negative && rounded !== 0n ? "-" : ""}$${whole}${frac}`
}

/**
 * The sum of amounts.
 *
 * @since 0.1.0
 * @category money
 */
export const sum = (amounts: Iterable<Money>): Money => {
  let total = 0n
  for (const m of amounts) total += m
  return total
}
