/**
 * Model prices from `@pydantic/genai-prices` (its bundled data: no network),
 * turned into integer picodollars per token. Every price in the package has at
 * most 6 decimals per million tokens, so `$/MTok × 10^6` is an exact integer
 * number of picodollars per token.
 */
import { calcPrice } from "@pydantic/genai-prices"

/** picodollars per token: a flat rate, or tiers chosen by the request's total input tokens */
export type Rate =
  | { readonly _tag: "Flat"; readonly perToken: bigint }
  | { readonly _tag: "Tiered"; readonly base: bigint; readonly tiers: ReadonlyArray<{ readonly start: number; readonly perToken: bigint }> }

/** the rates of one model, per token class */
export interface ModelRates {
  readonly input: Rate
  readonly output: Rate | undefined
  readonly cacheRead: Rate | undefined
  readonly cacheWrite: Rate | undefined
  readonly cacheWrite1h: Rate | undefined
  /** the package's id of the model that matched */
  readonly model: string
}

/** $/MTok (at most 6 decimals) → picodollars per token */
export const perMTokToPico = (usdPerMTok: number | string): bigint => {
  const text = typeof usdPerMTok === "number" ? toPlain(usdPerMTok) : usdPerMTok.trim()
  const match = /^(\d*)(?:\.(\d*))?$/.exec(text)
  if (match === null || (match[1] === "" && (match[2] ?? "") === "")) throw new RangeError(`not a price: ${String(usdPerMTok)}`)
  const whole = match[1] === "" ? 0n : BigInt(match[1]!)
  const frac = match[2] ?? ""
  // 6 decimals are exact; more are rounded half up to the picodollar
  const head = (frac + "000000").slice(0, 6)
  const roundUp = frac.length > 6 && frac.charCodeAt(6) >= 53 /* '5' */
  return whole * 1_000_000n + BigInt(head) + (roundUp ? 1n : 0n)
}

/** a number as plain decimal text (no exponent) */
const toPlain = (n: number): string => {
  if (!Number.isFinite(n) || n < 0) throw new RangeError(`not a price: ${n}`)
  const s = String(n)
  return s.includes("e") ? n.toFixed(12) : s
}

const rateOf = (value: unknown): Rate | undefined => {
  if (typeof value === "number") return { _tag: "Flat", perToken: perMTokToPico(value) }
  if (typeof value === "object" && value !== null && "base" in value && "tiers" in value) {
    const v = value as { readonly base: number; readonly tiers: ReadonlyArray<{ readonly start: number; readonly price: number }> }
    return {
      _tag: "Tiered",
      base: perMTokToPico(v.base),
      tiers: [...v.tiers].sort((a, b) => a.start - b.start).map((t) => ({ start: t.start, perToken: perMTokToPico(t.price) }))
    }
  }
  return undefined
}

/** the rate of a request with `inputTokens` input tokens in all (tiers start strictly above `start`, as genai-prices does) */
export const perToken = (rate: Rate, inputTokens: number): bigint => {
  if (rate._tag === "Flat") return rate.perToken
  let r = rate.base
  for (const t of rate.tiers) if (inputTokens > t.start) r = t.perToken
  return r
}

const cache = new Map<string, ModelRates | null>()

/** the last answer of {@link lookup}: a run prices its answers of one model on one day, one after the other */
let last: { readonly providerId: string; readonly model: string; readonly day: number; readonly rates: ModelRates | null } | undefined

/**
 * The rates of `model` at `providerId` (a genai-prices provider id) at time
 * `atMs` (epoch ms), or null when the package has no token price for it. Resolved once per
 * provider, model and day.
 */
export const lookup = (providerId: string, model: string, atMs: number): ModelRates | null => {
  // the UTC day, as a number: no date text to build per answer
  const day = Math.floor(atMs / 86_400_000)
  if (last !== undefined && last.day === day && last.model === model && last.providerId === providerId) return last.rates
  const key = `${providerId}\u0000${model}\u0000${day}`
  const known = cache.get(key)
  if (known !== undefined) {
    last = { providerId, model, day, rates: known }
    return known
  }
  let rates: ModelRates | null = null
  const found = calcPrice({ input_tokens: 0, output_tokens: 0 }, model, { providerId, timestamp: new Date(atMs) })
  if (found !== null) {
    const p = found.model_price
    const input = rateOf(p.input_mtok)
    if (input !== undefined) {
      rates = {
        input,
        output: rateOf(p.output_mtok),
        cacheRead: rateOf(p.cache_read_mtok),
        cacheWrite: rateOf(p.cache_write_mtok),
        cacheWrite1h: rateOf(p.cache_write_1h_mtok),
        model: found.model.id
      }
    }
  }
  cache.set(key, rates)
  return rates
}
