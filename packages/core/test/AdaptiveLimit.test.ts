import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as AdaptiveLimit from "../src/AdaptiveLimit.ts"

/** runs `n` calls of `ms` each under the limit; the most that ran at once */
const peak = (limit: AdaptiveLimit.AdaptiveLimit, n: number, ms = 10) =>
  Effect.gen(function*() {
    let running = 0
    let most = 0
    const call = Effect.gen(function*() {
      running++
      most = Math.max(most, running)
      yield* Effect.sleep(ms)
      running--
    })
    yield* Effect.all(Array.from({ length: n }, () => limit.withPermit(call)), { concurrency: "unbounded", discard: true })
    return most
  })

describe("AdaptiveLimit", () => {
  it.live("runs at most max calls at once; an overload halves that, once per burst; answers grow it back by one", () =>
    Effect.gen(function*() {
      const limit = AdaptiveLimit.make({ max: 8 })
      assert.strictEqual(yield* peak(limit, 30), 8)
      limit.overloaded()
      limit.overloaded() // the same burst: 429s to calls started together count once
      assert.strictEqual(limit.current(), 4)
      assert.strictEqual(yield* peak(limit, 30), 4)
      // after as many answers in a row as the limit, one more slot
      for (let i = 0; i < 3; i++) limit.succeeded()
      assert.strictEqual(limit.current(), 4)
      limit.succeeded()
      assert.strictEqual(limit.current(), 5)
      for (let i = 0; i < 5 + 6 + 7 + 50; i++) limit.succeeded()
      assert.strictEqual(limit.current(), 8, "never above max")
      assert.strictEqual(yield* peak(limit, 30), 8)
    }))

  it.live("never below one call", () =>
    Effect.gen(function*() {
      const limit = AdaptiveLimit.make({ max: 2 })
      limit.overloaded()
      assert.strictEqual(limit.current(), 1)
      yield* Effect.sleep("1100 millis")
      limit.overloaded()
      assert.strictEqual(limit.current(), 1)
      assert.strictEqual(yield* peak(limit, 5), 1)
    }))

  it.live("a retry-after holds back every new call until it has passed", () =>
    Effect.gen(function*() {
      const limit = AdaptiveLimit.make({ max: 4 })
      limit.overloaded(300)
      const started = Date.now()
      yield* Effect.all([limit.withPermit(Effect.void), limit.withPermit(Effect.void)], { concurrency: 2 })
      assert.isAtLeast(Date.now() - started, 280)
    }))

  it.live("fetch reports every answer: 429 and 529 slow it down with their retry-after, 2xx count as answers, others do not", () =>
    Effect.gen(function*() {
      const answers: Array<Response> = [
        new Response("", { status: 429, headers: { "retry-after-ms": "40" } }),
        ...Array.from({ length: 4 }, () => new Response("{}", { status: 200 })),
        new Response("", { status: 400 }),
        new Response("", { status: 500 })
      ]
      const limit = AdaptiveLimit.make({ max: 8 })
      const fetch = limit.fetch(async () => answers.shift()!)
      assert.strictEqual((yield* Effect.promise(() => fetch("http://x"))).status, 429)
      assert.strictEqual(limit.current(), 4)
      for (let i = 0; i < 4; i++) yield* Effect.promise(() => fetch("http://x"))
      assert.strictEqual(limit.current(), 5)
      yield* Effect.promise(() => fetch("http://x"))
      yield* Effect.promise(() => fetch("http://x"))
      assert.strictEqual(limit.current(), 5)
    }))

  it("retryAfterMs reads retry-after-ms, retry-after in seconds and as an HTTP date", () => {
    const now = Date.parse("2026-11-27T10:00:00Z")
    assert.strictEqual(AdaptiveLimit.retryAfterMs(new Headers({ "retry-after-ms": "250" }), now), 250)
    assert.strictEqual(AdaptiveLimit.retryAfterMs(new Headers({ "retry-after": "2" }), now), 2000)
    assert.strictEqual(AdaptiveLimit.retryAfterMs(new Headers({ "retry-after": "Fri, 27 Nov 2026 10:00:03 GMT" }), now), 3000)
    assert.strictEqual(AdaptiveLimit.retryAfterMs(new Headers({ "retry-after": "soon" }), now), undefined)
    assert.strictEqual(AdaptiveLimit.retryAfterMs(new Headers(), now), undefined)
  })
})
