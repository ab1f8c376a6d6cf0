import * as PartFiles from "@offpeak/core/PartFiles"
import type * as Source from "@offpeak/core/Source"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Schema, Stream } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Reason from "../../internal/reason.ts"
import * as TextFile from "../../internal/textFile.ts"
import { Jsonl } from "../index.ts"
import * as Parser from "../internal/parser.ts"

const tmpDir = () => fs.mkdtempSync(path.join(os.tmpdir(), "offpeak-jsonl-"))

const file = (content: string, name = "events.jsonl") => {
  const p = path.join(tmpDir(), name)
  fs.writeFileSync(p, content)
  return p
}

const Event = Schema.Struct({
  id: Schema.String,
  score: Schema.Finite,
  user: Schema.Struct({ name: Schema.String, tags: Schema.Array(Schema.String) })
})
type Event = typeof Event.Type

const event = (i: number): Event => ({ id: `e${i}`, score: i / 2, user: { name: `user ${i}`, tags: ["a", `t${i}`] } })

const read = <A>(source: Source.Source<A>) => Stream.runCollect(source.read)

const rows = <A>(items: ReadonlyArray<Source.Item<A>>) =>
  items.filter((i): i is Source.Row<A> => i._tag === "Row")

const readWith = (options: {
  readonly path: string
  readonly chunkSize?: number
  readonly maxLine?: number
  readonly onRead?: (bytes: number) => void
}) =>
  TextFile.stream({
    path: options.path,
    name: "e.jsonl",
    chunkSize: options.chunkSize,
    onRead: options.onRead,
    parser: () => Parser.make({ name: "e.jsonl", decode: Reason.decoder(Event), maxLine: options.maxLine })
  })

describe("Jsonl.source", () => {
  it.effect("a line with bytes that are not UTF-8 is malformed; the rest comes through", () =>
    Effect.gen(function*() {
      const p = path.join(tmpDir(), "e.jsonl")
      fs.writeFileSync(p, Buffer.concat([
        Buffer.from('{"id":"a","n":1}\n{"id":"'),
        Buffer.from([0xff, 0xfe]),
        Buffer.from('","n":2}\n{"id":"c","n":3}\n')
      ]))
      const items = yield* Stream.runCollect(Jsonl.source({ path: p, schema: Schema.Struct({ id: Schema.String, n: Schema.Int }), name: "e.jsonl" }).read)
      assert.deepStrictEqual(items.map((i) => i._tag === "Row" ? i.value.id : i.reason), [
        "a",
        "e.jsonl row 2 (line 2): invalid UTF-8 (bytes that are not UTF-8 were replaced by U+FFFD)",
        "c"
      ])
    }))

  it.effect("decodes one value per line; blank lines are skipped but counted", () =>
    Effect.gen(function*() {
      const p = file(["", JSON.stringify(event(1)), "   ", JSON.stringify(event(2)), "", "", JSON.stringify(event(3))].join("\n") + "\n")
      const source = Jsonl.source({ path: p, schema: Event })
      assert.strictEqual(source.name, p)
      assert.strictEqual(source.schema, Event)
      const items = yield* read(source)
      assert.deepStrictEqual(items.map((i) => [i._tag, i.position, i.line]), [["Row", 1, 2], ["Row", 2, 4], ["Row", 3, 7]])
      assert.deepStrictEqual(rows(items).map((r) => r.value), [event(1), event(2), event(3)])
    }))

  it.effect("bad JSON and schema failures are Malformed naming file, line and field; the rest comes through", () =>
    Effect.gen(function*() {
      const p = file([
        JSON.stringify(event(1)), // line 1, row 1
        "{not json", // 2, row 2
        "", // 3
        JSON.stringify({ ...event(4), score: "2" }), // 4, row 3: no string coercion
        JSON.stringify({ ...event(5), user: { name: "u", tags: ["a", 7] } }), // 5, row 4
        JSON.stringify({ id: "e6" }), // 6, row 5
        JSON.stringify(event(7)) // 7, row 6
      ].join("\n"))
      const items = yield* read(Jsonl.source({ path: p, schema: Event, name: "events.jsonl" }))
      assert.deepStrictEqual(items.map((i) => [i._tag, i.position, i.line]), [
        ["Row", 1, 1],
        ["Malformed", 2, 2],
        ["Malformed", 3, 4],
        ["Malformed", 4, 5],
        ["Malformed", 5, 6],
        ["Row", 6, 7]
      ])
      const reasons = items.flatMap((i) => i._tag === "Malformed" ? [i.reason] : [])
      assert.match(reasons[0]!, /^events\.jsonl row 2 \(line 2\): invalid JSON: /)
      assert.deepStrictEqual(reasons.slice(1), [
        `events.jsonl row 3 (line 4): field "score": Expected number, got "2"`,
        `events.jsonl row 4 (line 5): field "user.tags[1]": Expected string, got 7`,
        `events.jsonl row 5 (line 6): field "score": Missing key; field "user": Missing key`
      ])
      assert.strictEqual((items[1] as Source.Malformed).raw, "{not json")
    }))

  it.effect("CRLF line endings and a UTF-8 BOM", () =>
    Effect.gen(function*() {
      const p = file("\uFEFF" + JSON.stringify(event(1)) + "\r\n\r\n" + JSON.stringify({ ...event(2), id: "é ✓ 😀" }) + "\r\n")
      const items = yield* read(Jsonl.source({ path: p, schema: Event }))
      assert.deepStrictEqual(items.map((i) => [i._tag, i.position, i.line]), [["Row", 1, 1], ["Row", 2, 3]])
      assert.strictEqual(rows(items)[1]!.value.id, "é ✓ 😀")
    }))

  it.effect("a missing file fails with SourceError naming the path", () =>
    Effect.gen(function*() {
      const p = path.join(tmpDir(), "nope.jsonl")
      const error = yield* read(Jsonl.source({ path: p, schema: Event })).pipe(Effect.flip)
      assert.strictEqual(error._tag, "SourceError")
      assert.strictEqual(error.source, p)
      assert.strictEqual(error.message, `${p}: no such file`)
    }))

  it.effect("an empty file is an empty stream", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual(yield* read(Jsonl.source({ path: file(""), schema: Event })), [])
      assert.deepStrictEqual(yield* read(Jsonl.source({ path: file("\n \n"), schema: Event })), [])
    }))

  it.effect("chunk boundaries anywhere give the same items", () =>
    Effect.gen(function*() {
      const lines = Array.from({ length: 30 }, (_, i) =>
        i % 7 === 3 ? "" : i % 5 === 4 ? "{broken" : JSON.stringify({ ...event(i), id: `ü ${"😀".repeat(i)}` }))
      const p = file(lines.join("\r\n"))
      const expected = yield* Stream.runCollect(readWith({ path: p }))
      assert.strictEqual(expected.length, 26)
      for (const chunkSize of [1, 2, 3, 5, 11, 64]) {
        assert.deepStrictEqual(yield* Stream.runCollect(readWith({ path: p, chunkSize })), expected, `chunk size ${chunkSize}`)
      }
    }))

  it.effect("a line longer than the limit is Malformed and skipped without being kept", () =>
    Effect.gen(function*() {
      const p = file([JSON.stringify(event(1)), JSON.stringify({ ...event(2), id: "x".repeat(1_000) }), JSON.stringify(event(3))].join("\n"))
      const items = yield* Stream.runCollect(readWith({ path: p, chunkSize: 16, maxLine: 300 }))
      assert.deepStrictEqual(items.map((i) => [i._tag, i.position, i.line]), [["Row", 1, 1], ["Malformed", 2, 2], ["Row", 3, 3]])
      assert.include((items[1] as Source.Malformed).reason, "e.jsonl row 2 (line 2): line is longer than 300 characters")
    }))

  it.effect("is pull-driven: taking 10 values of a 200k-line file reads one chunk", () =>
    Effect.gen(function*() {
      const p = file(Array.from({ length: 200_000 }, (_, i) => JSON.stringify(event(i))).join("\n"))
      let bytesRead = 0
      const first = yield* readWith({ path: p, onRead: (n) => (bytesRead += n) }).pipe(Stream.take(10), Stream.runCollect)
      assert.deepStrictEqual(first.map((i) => i.position), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
      assert.strictEqual(bytesRead, TextFile.CHUNK_SIZE)
      const count = yield* Stream.runCount(Jsonl.source({ path: p, schema: Event }).read)
      assert.strictEqual(count, 200_000)
    }))
})

describe("Jsonl.sink", () => {
  const part = (seq: number) => ({ runId: "r1", seq })

  it.effect("writes part files and a manifest; the same part twice is replaced", () =>
    Effect.gen(function*() {
      const dir = tmpDir()
      const sink = Jsonl.sink<{ id: string; n: number }>({ dir })
      yield* sink.write(part(1), [{ id: "a", n: 1 }, { id: "b", n: 2 }])
      yield* sink.write(part(2), [{ id: "c", n: 3 }])
      yield* sink.write(part(1), [{ id: "a", n: 10 }])
      const content = (seq: number) => fs.readFileSync(path.join(dir, PartFiles.partFileName(part(seq), "jsonl")), "utf8")
      assert.strictEqual(content(1), `{"id":"a","n":10}\n`)
      assert.strictEqual(content(2), `{"id":"c","n":3}\n`)
      const manifest = yield* Effect.promise(() => PartFiles.readManifest(dir))
      assert.deepStrictEqual(manifest.map((e) => [e.seq, e.rows]), [[1, 1], [2, 1]])
      assert.strictEqual(fs.readdirSync(dir).length, 3)
    }))

  it.effect("round-trips through Jsonl.source", () =>
    Effect.gen(function*() {
      const dir = tmpDir()
      const events = [event(1), { ...event(2), id: "line\nbreak \"quoted\" ✓" }, event(3)]
      yield* Jsonl.sink<Event>({ dir }).write(part(4), events)
      const back = yield* read(Jsonl.source({ path: path.join(dir, PartFiles.partFileName(part(4), "jsonl")), schema: Event }))
      assert.deepStrictEqual(rows(back).map((r) => r.value), events)
      assert.deepStrictEqual(back.map((r) => [r.position, r.line]), [[1, 1], [2, 2], [3, 3]])
    }))
})
