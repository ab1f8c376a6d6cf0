import { assert, describe, it } from "@effect/vitest"
import { calcPrice } from "@pydantic/genai-prices"
import { Result } from "effect"
import * as Prices from "../src/Prices.ts"

const ok = (r: Result.Result<Prices.Cost, Prices.PriceError>): Prices.Cost => {
  if (Result.isFailure(r)) throw new Error(r.failure.message)
  return r.success
}

const usd = Prices.fromUsd

const MTOK = { inputTokens: 1_000_000, outputTokens: 1_000_000 }

describe("Prices: list prices and batch discounts", () => {
  it("prices known models per million tokens, sync and batch (50 % off)", () => {
    const cases = [
      { provider: "openai", model: "gpt-4o-mini", sync: "0.75", batch: "0.375" },
      { provider: "openai", model: "gpt-5", sync: "11.25", batch: "5.625" },
      { provider: "anthropic", model: "claude-haiku-4-5", sync: "6", batch: "3" },
      { provider: "anthropic", model: "claude-haiku-4-5-20251001", sync: "6", batch: "3" },
      { provider: "gemini", model: "gemini-2.5-flash", sync: "2.8", batch: "1.4" },
      { provider: "vertex", model: "gemini-2.5-flash", sync: "2.8", batch: "1.4" },
      { provider: "gemini", model: "models/gemini-2.5-flash", sync: "2.8", batch: "1.4" },
      { provider: "azure", model: "gpt-4o-mini", sync: "0.75", batch: "0.375" }
    ]
    for (const c of cases) {
      const sync = ok(Prices.price(MTOK, { provider: c.provider, model: c.model, mode: "sync" }))
      const batch = ok(Prices.price(MTOK, { provider: c.provider, model: c.model, mode: "batch" }))
      assert.strictEqual(sync.total, usd(c.sync), `${c.provider}/${c.model} sync`)
      assert.strictEqual(batch.total, usd(c.batch), `${c.provider}/${c.model} batch`)
      assert.strictEqual(sync.source, "genai-prices")
      console.log(`${c.provider}/${c.model}: 1M in + 1M out = ${Prices.formatUsd(sync.total, 4)} sync, ${Prices.formatUsd(batch.total, 4)} batch`)
    }
    // embeddings: input only
    const embed = ok(Prices.price({ inputTokens: 1_000_000, outputTokens: 0 }, { provider: "openai", model: "text-embedding-3-small", mode: "batch" }))
    assert.strictEqual(embed.total, usd("0.01"))
  })

  it("agrees with genai-prices' calcPrice in sync mode on 2,000 random usages (tiers, cache reads and writes)", () => {
    const models = [
      ["openai", "openai", "gpt-4o-mini"],
      ["openai", "openai", "gpt-5"],
      ["anthropic", "anthropic", "claude-haiku-4-5"],
      ["anthropic", "anthropic", "claude-sonnet-4-5"],
      ["anthropic", "anthropic", "claude-opus-4-1"],
      ["gemini", "google", "gemini-2.5-pro"],
      ["gemini", "google", "gemini-2.5-flash"]
    ] as const
    let seed = 42
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2147483648
      return seed % n
    }
    let worst = 0
    for (let i = 0; i < 2000; i++) {
      const [provider, pricesId, model] = models[i % models.length]!
      const inputTokens = rand(2) === 0 ? rand(5000) : rand(400_000)
      const cached = rand(3) === 0 ? rand(inputTokens + 1) : 0
      const write = provider === "anthropic" && rand(3) === 0 ? rand(inputTokens - cached + 1) : 0
      const outputTokens = rand(20_000)
      const ours = ok(Prices.price({ inputTokens, outputTokens, cachedInputTokens: cached, cacheWriteInputTokens: write }, { provider, model, mode: "sync" }))
      const theirs = calcPrice(
        { input_tokens: inputTokens, output_tokens: outputTokens, cache_read_tokens: cached, cache_write_tokens: write },
        model,
        { providerId: pricesId }
      )!
      const diff = Math.abs(Prices.toUsd(ours.total) - theirs.total_price)
      worst = Math.max(worst, diff)
      assert.isBelow(diff, 1e-9, `${model} ${JSON.stringify({ inputTokens, outputTokens, cached, write })}`)
    }
    console.log(`2,000 usages: largest difference from calcPrice ${worst.toExponential(2)} USD (float rounding on its side)`)
  })

  it("prices tiers per request: two 150k-token requests are not one 300k-token request", () => {
    const opts = { provider: "anthropic", model: "claude-sonnet-4-5", mode: "sync" } as const
    const one = ok(Prices.price({ inputTokens: 150_000, outputTokens: 0 }, opts))
    const big = ok(Prices.price({ inputTokens: 300_000, outputTokens: 0 }, opts))
    assert.strictEqual(one.total, usd("0.45")) // $3/MTok below 200k
    assert.strictEqual(big.total, usd("1.8")) // $6/MTok on the whole request above 200k
    assert.strictEqual(one.total * 2n, usd("0.9"))
    // output is priced at the tier the input chose
    assert.strictEqual(ok(Prices.price({ inputTokens: 250_000, outputTokens: 1000 }, opts)).output, usd("0.0225"))
    // batch: half of the tier's price
    assert.strictEqual(ok(Prices.price({ inputTokens: 300_000, outputTokens: 0 }, { ...opts, mode: "batch" })).total, usd("0.9"))
    console.log(`claude-sonnet-4-5: 2 × 150k input = ${Prices.formatUsd(one.total * 2n, 2)}; summed into one 300k usage it would be ${Prices.formatUsd(big.total, 2)}`)
  })
})

describe("Prices: batch and prompt-cache stacking", () => {
  const usage = { inputTokens: 10_000, cachedInputTokens: 8_000, outputTokens: 0 }

  it("OpenAI stacks: a cached token in a batch costs half the cached price", () => {
    const sync = ok(Prices.price(usage, { provider: "openai", model: "gpt-4o-mini", mode: "sync" }))
    const batch = ok(Prices.price(usage, { provider: "openai", model: "gpt-4o-mini", mode: "batch" }))
    assert.deepStrictEqual([sync.input, sync.cachedInput], [usd("0.0003"), usd("0.0006")]) // 2k × $0.15, 8k × $0.075
    assert.deepStrictEqual([batch.input, batch.cachedInput], [usd("0.00015"), usd("0.0003")]) // 2k × $0.075, 8k × $0.0375
  })

  it("Anthropic stacks both ways: batch cache reads are 5 % of the base price, writes 62.5 %", () => {
    const u = { inputTokens: 10_000, cachedInputTokens: 8_000, cacheWriteInputTokens: 1_000, outputTokens: 100 }
    const batch = ok(Prices.price(u, { provider: "anthropic", model: "claude-haiku-4-5", mode: "batch" }))
    assert.strictEqual(batch.cachedInput, usd("0.0004")) // 8k × $1 × 0.1 × 0.5
    assert.strictEqual(batch.cacheWrite, usd("0.000625")) // 1k × $1 × 1.25 × 0.5
    assert.strictEqual(batch.input, usd("0.0005")) // 1k × $1 × 0.5
    assert.strictEqual(batch.output, usd("0.00025")) // 100 × $5 × 0.5
    assert.strictEqual(batch.total, usd("0.001775"))
    const oneHour = ok(Prices.price({ inputTokens: 1000, cacheWrite1hInputTokens: 1000, outputTokens: 0 }, {
      provider: "anthropic",
      model: "claude-haiku-4-5",
      mode: "batch"
    }))
    assert.strictEqual(oneHour.cacheWrite, usd("0.001")) // 1k × $1 × 2 × 0.5
  })

  it("Google does not stack: cached tokens pay the cache price, the rest gets the batch discount", () => {
    for (const provider of ["gemini", "vertex"]) {
      const sync = ok(Prices.price(usage, { provider, model: "gemini-2.5-flash", mode: "sync" }))
      const batch = ok(Prices.price(usage, { provider, model: "gemini-2.5-flash", mode: "batch" }))
      assert.strictEqual(batch.cachedInput, usd("0.00024")) // 8k × $0.03, no batch discount
      assert.strictEqual(batch.cachedInput, sync.cachedInput)
      assert.strictEqual(batch.input, usd("0.0003")) // 2k × $0.15
      assert.strictEqual(sync.input, usd("0.0006"))
    }
  })
})

describe("Prices: overrides and unknown models", () => {
  it("uses an override before the package, with the provider's batch discount unless it gives batch prices", () => {
    const overrides: Prices.Overrides = {
      "my-model": { inputPerMTok: 0.2, outputPerMTok: "0.8", cachedInputPerMTok: 0.05 },
      "gpt-4o-mini": { inputPerMTok: 0.1, outputPerMTok: 0.4 },
      "my-negotiated": { inputPerMTok: 1, outputPerMTok: 2, batch: { inputPerMTok: 0.3, outputPerMTok: 0.6 } }
    }
    const mine = ok(Prices.price(MTOK, { provider: "openai", model: "my-model", mode: "sync", overrides }))
    assert.deepStrictEqual([mine.total, mine.source, mine.model], [usd("1"), "override", "my-model"])
    assert.strictEqual(ok(Prices.price(MTOK, { provider: "openai", model: "my-model", mode: "batch", overrides })).total, usd("0.5"))
    const cached = ok(Prices.price({ inputTokens: 1_000_000, cachedInputTokens: 1_000_000, outputTokens: 0 }, {
      provider: "openai",
      model: "my-model",
      mode: "sync",
      overrides
    }))
    assert.strictEqual(cached.cachedInput, usd("0.05"))
    assert.strictEqual(ok(Prices.price(MTOK, { provider: "openai", model: "gpt-4o-mini", mode: "sync", overrides })).total, usd("0.5"))
    assert.strictEqual(ok(Prices.price(MTOK, { provider: "openai", model: "my-negotiated", mode: "batch", overrides })).total, usd("0.9"))
    // a provider offpeak has no rules for: sync works, batch needs the override's batch prices
    assert.strictEqual(ok(Prices.price(MTOK, { provider: "acme", model: "my-model", mode: "sync", overrides })).total, usd("1"))
    const refused = Prices.price(MTOK, { provider: "acme", model: "my-model", mode: "batch", overrides })
    assert.isTrue(Result.isFailure(refused) && /no batch discount is known/.test(refused.failure.message))
    assert.strictEqual(ok(Prices.price(MTOK, { provider: "acme", model: "my-negotiated", mode: "batch", overrides })).total, usd("0.9"))
  })

  it("an unknown model is a clear error naming the model and provider, never a zero", () => {
    const r = Prices.price(MTOK, { provider: "openai", model: "gpt-unknown-9", mode: "batch" })
    assert.isTrue(Result.isFailure(r))
    if (Result.isFailure(r)) {
      assert.strictEqual(r.failure._tag, "PriceError")
      assert.strictEqual(r.failure.reason._tag, "NoPrice")
      assert.strictEqual(r.failure.message, "no price for model gpt-unknown-9 of provider openai (add an override)")
      console.log(r.failure.message)
    }
    const p = Prices.price(MTOK, { provider: "nowhere", model: "gpt-4o-mini", mode: "sync" })
    assert.isTrue(Result.isFailure(p) && p.failure.message.startsWith("no price for model gpt-4o-mini of provider nowhere"))
  })

  it("refuses usage it cannot price", () => {
    const r = Prices.price({ inputTokens: 10, cachedInputTokens: 20, outputTokens: 0 }, { provider: "openai", model: "gpt-4o-mini", mode: "sync" })
    assert.isTrue(Result.isFailure(r) && r.failure.reason._tag === "InvalidUsage")
    const n = Prices.price({ inputTokens: -1, outputTokens: 0 }, { provider: "openai", model: "gpt-4o-mini", mode: "sync" })
    assert.isTrue(Result.isFailure(n) && n.failure.reason._tag === "InvalidUsage")
    const bad = Prices.price(MTOK, { provider: "openai", model: "m", mode: "sync", overrides: { m: { inputPerMTok: "cheap", outputPerMTok: 1 } } })
    assert.isTrue(Result.isFailure(bad) && bad.failure.reason._tag === "InvalidUsage")
  })
})

describe("Prices: worst case", () => {
  it("is input plus max output at the mode's price, an upper bound of the actual cost", () => {
    const opts = { provider: "openai", model: "gpt-5", mode: "batch" } as const
    const worst = ok(Prices.worstCase({ inputTokens: 1200, maxOutputTokens: 500 }, opts))
    assert.strictEqual(worst.total, ok(Prices.price({ inputTokens: 1200, outputTokens: 500 }, opts)).total)
    assert.strictEqual(worst.total, usd("0.00325")) // 1200 × $0.625 + 500 × $5 per MTok
    for (const actual of [{ inputTokens: 1200, outputTokens: 10 }, { inputTokens: 1200, cachedInputTokens: 1100, outputTokens: 500 }]) {
      assert.isTrue(ok(Prices.price(actual, opts)).total <= worst.total)
    }
    // Anthropic: a marked prefix may be written (1.25×), which the worst case includes
    const marked = ok(Prices.worstCase({ inputTokens: 5000, maxOutputTokens: 0, cacheWriteInputTokens: 4000 }, {
      provider: "anthropic",
      model: "claude-haiku-4-5",
      mode: "sync"
    }))
    assert.strictEqual(marked.total, usd("0.006")) // 1k × $1 + 4k × $1.25
    console.log(`worst case gpt-5 batch, 1,200 in + 500 max out: ${Prices.formatUsd(worst.total)}`)
  })
})

describe("Prices: money", () => {
  it("sums a million answers exactly, where floats drift", () => {
    const cost = ok(Prices.price({ inputTokens: 37, outputTokens: 0 }, { provider: "openai", model: "text-embedding-3-small", mode: "batch" }))
    assert.strictEqual(cost.total, 370_000n) // 37 × $0.01/MTok = 3.7e-7 USD
    let exact = 0n
    let float = 0
    const start = performance.now()
    for (let i = 0; i < 1_000_000; i++) {
      exact += cost.total
      float += Prices.toUsd(cost.total)
    }
    const ms = performance.now() - start
    assert.strictEqual(exact, usd("0.37"))
    assert.strictEqual(Prices.formatUsd(exact), "$0.370000")
    console.log(`1,000,000 × $0.00000037: exact ${Prices.formatUsd(exact, 12)}, float sum ${float.toPrecision(17)} (drift ${(float - 0.37).toExponential(2)}), ${ms.toFixed(0)} ms`)
    assert.notStrictEqual(float, 0.37)
  })

  it("formats and parses USD", () => {
    assert.strictEqual(Prices.formatUsd(usd("1234567.891")), "$1,234,567.891000")
    assert.strictEqual(Prices.formatUsd(usd("0.0000005"), 6), "$0.000001")
    assert.strictEqual(Prices.formatUsd(usd("2.5"), 0), "$3")
    assert.strictEqual(Prices.formatUsd(-usd("0.25"), 2), "-$0.25")
    assert.strictEqual(usd("$12.50"), 12_500_000_000_000n)
    assert.strictEqual(usd(0.1), 100_000_000_000n)
    assert.strictEqual(usd("0.0000000000015"), 2n)
    assert.strictEqual(Prices.sum([usd("0.1"), usd("0.2")]), usd("0.3"))
    assert.throws(() => usd("ten"))
  })

  it("prices fast enough to cost every answer of a large job", () => {
    const opts = { provider: "anthropic", model: "claude-sonnet-4-5", mode: "batch" } as const
    const n = 200_000
    const start = performance.now()
    let total = 0n
    for (let i = 0; i < n; i++) total += ok(Prices.price({ inputTokens: 1000 + (i % 500), cachedInputTokens: i % 300, outputTokens: 120 }, opts)).total
    const us = (performance.now() - start) * 1000 / n
    console.log(`${n} requests priced in ${(us * n / 1e6).toFixed(2)} s (${us.toFixed(2)} µs each), total ${Prices.formatUsd(total, 2)}`)
    assert.isBelow(us, 50)
  })
})
