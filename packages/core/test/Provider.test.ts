/**
 * The poll cadence every adapter uses: backing off while a batch runs, and polling at the first interval again once
 * the provider says only its results are left to write, so they are fetched soon after they are ready.
 */
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Schedule, Stream } from "effect"
import * as Provider from "../src/Provider.ts"
import * as ProviderError from "../src/ProviderError.ts"

const status = (
  state: Provider.State,
  counts: Provider.Status["counts"] = { total: 100, completed: 10, failed: 0 }
): Provider.Status => ({ state, providerState: state, counts, issues: [] })

/** the delays (ms) the schedule gives after each of these statuses, in order */
const delays = (schedule: Schedule.Schedule<unknown, Provider.Status>, inputs: ReadonlyArray<Provider.Status>) =>
  Effect.gen(function*() {
    const step = yield* Schedule.toStep(schedule)
    const out: Array<number> = []
    for (const input of inputs) {
      const [, delay] = yield* step(0, input)
      out.push(Duration.toMillis(delay))
    }
    return out
  })

describe("Provider.pollSchedule", () => {
  const schedule = Provider.pollSchedule({ initial: "100 millis", max: "1 second" })

  it.effect("backs off 1.5x a poll from the first interval up to the longest while a batch runs", () =>
    Effect.gen(function*() {
      const ms = yield* delays(schedule, Array.from({ length: 8 }, () => status("running")))
      assert.deepStrictEqual(ms.map(Math.round), [100, 150, 225, 338, 506, 759, 1000, 1000])
    }))

  it.effect("polls at the first interval again while the batch is finalizing, and backs off after", () =>
    Effect.gen(function*() {
      const ms = yield* delays(schedule, [
        ...Array.from({ length: 7 }, () => status("running")),
        status("finalizing"),
        status("finalizing"),
        status("validating")
      ])
      assert.deepStrictEqual(ms.slice(6).map(Math.round), [1000, 100, 100, 1000])
    }))

  it.effect("counts that add up to the total while running count as finishing; partial counts do not", () =>
    Effect.gen(function*() {
      const ms = yield* delays(schedule, [
        ...Array.from({ length: 7 }, () => status("running")),
        status("running", { total: 100, completed: 97, failed: 3 }),
        status("running", { total: 100, completed: 99, failed: 0 }),
        status("running", { total: 0, completed: 0, failed: 0 })
      ])
      assert.deepStrictEqual(ms.slice(7).map(Math.round), [100, 1000, 1000])
    }))

  it("isFinishing: finalizing, or every request counted while running; never a batch that has not started", () => {
    assert.isTrue(Provider.isFinishing(status("finalizing")))
    assert.isTrue(Provider.isFinishing(status("running", { total: 5, completed: 4, failed: 1 })))
    assert.isFalse(Provider.isFinishing(status("running", { total: 5, completed: 4, failed: 0 })))
    assert.isFalse(Provider.isFinishing(status("validating", { total: 5, completed: 5, failed: 0 })))
    assert.isFalse(Provider.isFinishing(status("running", { total: 0, completed: 0, failed: 0 })))
  })
})

describe("Provider.textLines", () => {
  it.effect("cuts large chunks into small pieces to decode, and characters split between pieces come back whole", () =>
    Effect.gen(function*() {
      // lines of 1- to 4-byte characters, so piece boundaries fall inside characters; CRLF and LF both end a line
      const lines = Array.from({ length: 3_000 }, (_, i) => `${i}: ${"aé€😀".repeat(1 + (i % 37))}`)
      const text = lines.map((l, i) => l + (i % 2 === 0 ? "\r\n" : "\n")).join("")
      const bytes = new TextEncoder().encode(text)
      assert.isAbove(bytes.byteLength, 3 * 64 * 1024)
      // one chunk of everything, then the same bytes in uneven chunks (a large one between small ones)
      const whole = yield* Stream.runCollect(Provider.textLines(Stream.make(bytes)))
      assert.deepStrictEqual(whole, lines)
      const cuts = [0, 7, 70_001, 200_003, bytes.byteLength]
      const uneven = Stream.fromIterable(cuts.slice(1).map((end, i) => bytes.subarray(cuts[i], end)))
      assert.deepStrictEqual(yield* Stream.runCollect(Provider.textLines(uneven)), lines)
    }))
})

describe("ProviderError.reasonOfStatus", () => {
  it("an HTML error page (a wrong base URL, a proxy) becomes one line of its text with a hint; long bodies are clipped", () => {
    const page = "<html>\n<head><title>404 Not Found</title><style>body { color: red }</style></head>\n<body>\n" +
      "<h1>404 Not Found</h1>\n<hr><center>nginx</center>\n</body>\n</html>\n"
    const reason = ProviderError.reasonOfStatus(404, page)
    assert.strictEqual(reason._tag, "NotFound")
    assert.strictEqual(reason.message, "404 Not Found 404 Not Found nginx (an HTML page: is the base URL right?)")
    const json = ProviderError.reasonOfStatus(400, `{\n  "error": {\n    "message": "bad",\n    "code": "x"\n  }\n}`)
    assert.strictEqual(json.message, `{ "error": { "message": "bad", "code": "x" } }`)
    const long = ProviderError.reasonOfStatus(500, "x".repeat(2_000))
    assert.strictEqual(long.message.length, 501)
    assert.isTrue(long.message.endsWith("…"))
  })
})
