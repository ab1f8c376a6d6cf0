import { assert, describe, it } from "@effect/vitest"
import { Cause, Effect, Fiber, Queue, Stream } from "effect"
import { TestClock } from "effect/testing"
import * as Batcher from "../src/Batcher.ts"

const item = (id: number, bytes = 100, group = "g"): Batcher.Item => ({ id: `r${id}`, request: id, line: `line${id}`, bytes, group })

interface Formed {
  readonly _tag: "Batch"
  readonly group: string
  readonly items: ReadonlyArray<Batcher.Item>
  readonly bytes: number
}

/** the batches as a consumer forms them from Appends and Closes (checking each Close against what was appended), and TooLarge in place */
const assemble = (out: ReadonlyArray<Batcher.Output>): Array<Formed | Batcher.TooLarge> => {
  const open = new Map<string, Array<Batcher.Item>>()
  const formed: Array<Formed | Batcher.TooLarge> = []
  for (const o of out) {
    if (o._tag === "TooLarge") formed.push(o)
    else if (o._tag === "Append") {
      assert.isTrue(o.items.every((i) => i.group === o.group))
      open.set(o.group, [...(open.get(o.group) ?? []), ...o.items])
    } else {
      const items = open.get(o.group) ?? []
      open.delete(o.group)
      assert.strictEqual(o.requests, items.length)
      assert.strictEqual(o.bytes, items.reduce((s, i) => s + i.bytes, 0))
      formed.push({ _tag: "Batch", group: o.group, items, bytes: o.bytes })
    }
  }
  assert.strictEqual(open.size, 0, "every Append is followed by its Close")
  return formed
}

const sizes = (out: ReadonlyArray<Batcher.Output>) =>
  assemble(out).map((o) => o._tag === "Batch" ? o.items.length : -1)

describe("Batcher", () => {
  it.effect("never exceeds max requests or max bytes, keeps every item once and in order", () =>
    Effect.gen(function*() {
      const items = Array.from({ length: 2_345 }, (_, i) => item(i, 50 + (i * 37) % 400))
      const out = yield* Stream.fromIterable(items).pipe(
        Stream.rechunk(97),
        Batcher.batches({ maxRequests: 100, maxBytes: 16_384, flushAfter: "1 hour" }),
        Stream.runCollect
      )
      const batches = assemble(out).filter((o): o is Formed => o._tag === "Batch")
      for (const b of batches) {
        assert.isAtMost(b.items.length, 100)
        assert.isAtMost(b.bytes, 16_384)
        assert.strictEqual(b.bytes, b.items.reduce((s, i) => s + i.bytes, 0))
      }
      assert.deepStrictEqual(batches.flatMap((b) => b.items.map((i) => i.id)), items.map((i) => i.id))
      // batches are filled: every batch but the last would have overflowed with the next item
      for (let i = 0; i < batches.length - 1; i++) {
        const next = batches[i + 1]!.items[0]!
        assert.isTrue(batches[i]!.items.length === 100 || batches[i]!.bytes + next.bytes > 16_384)
      }
    }))

  it.effect("a request larger than any batch fails alone with a reason", () =>
    Effect.gen(function*() {
      const out = yield* Stream.make(item(1), item(2, 5_000), item(3)).pipe(
        Batcher.batches({ maxRequests: 10, maxBytes: 4_096, flushAfter: "1 hour" }),
        Stream.runCollect
      )
      assert.deepStrictEqual(sizes(out), [-1, 2])
      const tooLarge = out[0] as Batcher.TooLarge
      assert.strictEqual(tooLarge.item.id, "r2")
      assert.match(tooLarge.message, /4\.9 KiB encoded, over the 4\.0 KiB/)
    }))

  it.effect("maxRequestBytes below maxBytes rejects lines over it", () =>
    Effect.gen(function*() {
      const out = yield* Stream.make(item(1, 900), item(2, 1_100)).pipe(
        Batcher.batches({ maxRequests: 10, maxBytes: 10_000, maxRequestBytes: 1_000, flushAfter: "1 hour" }),
        Stream.runCollect
      )
      assert.deepStrictEqual(sizes(out), [-1, 1])
    }))

  it.effect("groups never share a batch", () =>
    Effect.gen(function*() {
      const items = Array.from({ length: 30 }, (_, i) => item(i, 10, i % 3 === 0 ? "a" : "b"))
      const out = yield* Stream.fromIterable(items).pipe(
        Batcher.batches({ maxRequests: 8, maxBytes: 1_000_000, flushAfter: "1 hour" }),
        Stream.runCollect
      )
      const formed = assemble(out)
      for (const o of formed) {
        assert.strictEqual(o._tag, "Batch")
        if (o._tag === "Batch") assert.isTrue(o.items.every((i) => i.group === o.group))
      }
      assert.strictEqual(formed.reduce((s, o) => s + (o._tag === "Batch" ? o.items.length : 0), 0), 30)
    }))

  it.effect("flushes an open batch after the time window", () =>
    Effect.gen(function*() {
      const input = yield* Queue.unbounded<Batcher.Item, Cause.Done>()
      const emitted: Array<Batcher.Output> = []
      const fiber = yield* Stream.fromQueue(input).pipe(
        Batcher.batches({ maxRequests: 100, maxBytes: 1_000_000, flushAfter: "10 seconds" }),
        Stream.runForEach((o) => Effect.sync(() => emitted.push(o))),
        Effect.forkChild
      )
      yield* Queue.offerAll(input, [item(1), item(2), item(3)])
      yield* TestClock.adjust("5 seconds")
      assert.deepStrictEqual(emitted.map((o) => o._tag), ["Append"], "the lines came out, the batch is open")
      yield* TestClock.adjust("10 seconds")
      assert.deepStrictEqual(sizes(emitted), [3])
      yield* Queue.offer(input, item(4))
      yield* TestClock.adjust("15 seconds")
      assert.deepStrictEqual(sizes(emitted), [3, 1])
      yield* Queue.end(input)
      yield* Fiber.join(fiber)
    }))

  it.effect("reads its input only as fast as batches are taken", () =>
    Effect.gen(function*() {
      let pulled = 0
      let closes = 0
      const source = Stream.fromIterable(Array.from({ length: 10_000 }, (_, i) => i)).pipe(
        Stream.rechunk(10),
        Stream.map((i) => {
          pulled++
          return item(i)
        })
      )
      const firstTwo = yield* source.pipe(
        Batcher.batches({ maxRequests: 100, maxBytes: 1_000_000, flushAfter: "1 hour" }),
        Stream.takeUntil((o) => o._tag === "Close" && ++closes === 2),
        Stream.runCollect
      )
      assert.deepStrictEqual(sizes(firstTwo), [100, 100])
      assert.isAtMost(pulled, 300)
    }))

  it.effect("holds no line: a batch's lines come out with the input that brought them, long before it closes", () =>
    Effect.gen(function*() {
      const input = yield* Queue.unbounded<Batcher.Item, Cause.Done>()
      const emitted: Array<Batcher.Output> = []
      const fiber = yield* Stream.fromQueue(input).pipe(
        Batcher.batches({ maxRequests: 1_000, maxBytes: 1_000_000, flushAfter: "1 hour" }),
        Stream.runForEach((o) => Effect.sync(() => emitted.push(o))),
        Effect.forkChild
      )
      for (let i = 0; i < 50; i++) {
        yield* Queue.offer(input, item(i))
        yield* TestClock.adjust("1 millis")
        // every line offered so far is out, in Appends, and no batch closed
        const appended = emitted.flatMap((o) => o._tag === "Append" ? o.items.map((x) => x.id) : [])
        assert.deepStrictEqual(appended, Array.from({ length: i + 1 }, (_, k) => `r${k}`))
        assert.isFalse(emitted.some((o) => o._tag === "Close"))
      }
      yield* Queue.end(input)
      yield* Fiber.join(fiber)
      assert.deepStrictEqual(sizes(emitted), [50])
    }))
})
