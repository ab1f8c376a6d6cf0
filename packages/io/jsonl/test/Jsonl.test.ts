import * as PartFiles from "@offpeak/core/PartFiles"
import * as Sink from "@offpeak/core/Sink"
import type * as Source from "@offpeak/core/Source"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Schema, Stream } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Reason from "../../internal/reason.ts"
import * as Support from "../../internal/test/support.ts"
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

const readWith = <S extends Schema.Top & { readonly DecodingServices: never } = typeof Event>(options: {
  readonly path: string
  readonly schema?: S
  readonly chunkSize?: number
  readonly maxLine?: number
  readonly key?: string
  readonly onRead?: (bytes: number) => void
}) =>
  TextFile.stream({
    path: options.path,
    name: "e.jsonl",
    chunkSize: options.chunkSize,
    onRead: options.onRead,
    parser: () =>
      Parser.make<S["Type"]>({
        name: "e.jsonl",
        decode: Reason.decoder(options.schema ?? Event as unknown as S),
        maxRecordBytes: options.maxLine,
        key: options.key
      })
  })

const malformed = <A>(items: ReadonlyArray<Source.Item<A>>) =>
  items.filter((i): i is Source.Malformed => i._tag === "Malformed")

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
        "e.jsonl row 2 (line 2): invalid UTF-8: byte FF at offset 24, byte FE at offset 25 (shown as U+FFFD)",
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

  it.effect("one line limit in UTF-8 bytes, whether the line is complete or still being read; raw says what was cut", () =>
    Effect.gen(function*() {
      const at = (n: number, char = "x") => JSON.stringify({ ...event(0), id: char.repeat(n) })
      const base = Buffer.byteLength(at(0))
      const lines = [
        at(300 - base), // 300 bytes: at the limit
        at(301 - base),
        at((300 - base) / 2, "é"), // fewer characters than bytes: 300 bytes
        at((302 - base) / 2, "é"), // 302 bytes
        JSON.stringify(event(5)),
        at(5_000)
      ]
      const p = file(lines.join("\r\n"))
      const expected = yield* Stream.runCollect(readWith({ path: p, maxLine: 300 }))
      assert.deepStrictEqual(expected.map((i) => [i._tag, i.position, i.line]), [
        ["Row", 1, 1],
        ["Malformed", 2, 2],
        ["Row", 3, 3],
        ["Malformed", 4, 4],
        ["Row", 5, 5],
        ["Malformed", 6, 6]
      ])
      assert.deepStrictEqual(malformed(expected).map((m) => m.reason), [
        "e.jsonl row 2 (line 2): line is 301 bytes, over the limit of 300 bytes",
        "e.jsonl row 4 (line 4): line is 302 bytes, over the limit of 300 bytes",
        `e.jsonl row 6 (line 6): line is 4.9 KiB (${base + 5_000} bytes), over the limit of 300 bytes`
      ])
      assert.strictEqual(malformed(expected)[2]!.raw, `${at(5_000).slice(0, 1_000)}… (${at(5_000).length - 1_000} more characters)`)
      for (const chunkSize of [1, 7, 16, 299, 4096]) {
        assert.deepStrictEqual(yield* Stream.runCollect(readWith({ path: p, maxLine: 300, chunkSize })), expected, `chunk size ${chunkSize}`)
      }
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

describe("Jsonl.source: UTF-8 read in chunks", () => {
  const CHUNK = 48
  const BOUNDARIES = 8
  const Line = Schema.Struct({ id: Schema.String, body: Schema.String })

  it.effect("a character split at any byte across any chunk boundary is read whole; U+FFFD in the file is kept", () =>
    Effect.gen(function*() {
      let straddles = 0
      for (const [char, split] of Support.splits()) {
        const { bodies, bytes } = Support.straddling({
          head: "",
          chunk: CHUNK,
          boundaries: BOUNDARIES,
          char,
          split,
          row: (j, body) => `${JSON.stringify({ id: `e${j}`, body })}\n`
        })
        const items = yield* Stream.runCollect(readWith({ path: Support.file(bytes, "s.jsonl"), schema: Line, chunkSize: CHUNK }))
        assert.deepStrictEqual(malformed(items), [], `${JSON.stringify(char)} split after ${split} bytes`)
        assert.deepStrictEqual(rows(items).map((r) => r.value.body), bodies)
        straddles += BOUNDARIES
      }
      console.log(`JSONL: ${straddles} characters cut at a chunk boundary (é, €, U+FFFD, 😀 at every split), 0 lines malformed`)
    }))

  it.effect("a line with bytes that are not UTF-8 is malformed alone: later lines with a real U+FFFD pass untouched", () =>
    Effect.gen(function*() {
      const bytes = Buffer.concat([
        Buffer.from(`{"id":"e1","body":"\uFFFD first"}\n{"id":"e2","body":"bad `),
        Buffer.from([0xc3]), // é without its second byte
        Buffer.from(` byte"}\n`),
        Buffer.from(Array.from({ length: 200 }, (_, i) => `{"id":"e${i + 3}","body":"real \uFFFD ${i + 3}"}\n`).join(""))
      ])
      for (const chunkSize of [5, 16, 64, 4096]) {
        const items = yield* Stream.runCollect(readWith({ path: Support.file(bytes, "e.jsonl"), schema: Line, chunkSize, key: "id" }))
        assert.strictEqual(items.length, 202)
        assert.deepStrictEqual(malformed(items).map((m) => [m.position, m.line, m.key, m.reason, m.raw]), [[
          2,
          2,
          "e2",
          `e.jsonl row 2 (line 2, id "e2"): invalid UTF-8: byte C3 at offset ${bytes.indexOf(0xc3)} (shown as U+FFFD)`,
          `{"id":"e2","body":"bad \uFFFD byte"}`
        ]])
        assert.isTrue(rows(items).every((r) => r.value.body.includes("\uFFFD")))
      }
      console.log("JSONL: 1 line with a cut é dead-lettered, the 201 lines holding a real U+FFFD all read, at chunk sizes 5, 16, 64, 4096")
    }))
})

describe("Jsonl.source: key", () => {
  it.effect("a malformed line carries its key when its JSON parses and holds one; raw is always there", () =>
    Effect.gen(function*() {
      const Keyed = Schema.Struct({ id: Schema.Union([Schema.String, Schema.Finite]), n: Schema.Int })
      const p = file([
        `{"id":"a1","n":1.5}`, // schema
        `{"id":17,"n":"x"}`, // a number key
        `{"id":"a3","n":`, // not JSON
        `{"n":4.5}`, // no key
        `{"id":"","n":0.5}`, // empty key
        `["a6"]`, // not an object
        `{"id":"${"k".repeat(400)}","n":7}`, // over the limit
        `{"id":"a8","n":8}`
      ].join("\n"))
      const items = yield* Stream.runCollect(readWith({ path: p, schema: Keyed, key: "id", maxLine: 300 }))
      assert.deepStrictEqual(malformed(items).map((m) => [m.position, m.key]), [
        [1, "a1"],
        [2, "17"],
        [3, undefined],
        [4, undefined],
        [5, undefined],
        [6, undefined],
        [7, undefined]
      ])
      assert.deepStrictEqual(malformed(items).slice(0, 3).map((m) => m.reason.split(":")[0]), [
        `e.jsonl row 1 (line 1, id "a1")`,
        `e.jsonl row 2 (line 2, id "17")`,
        `e.jsonl row 3 (line 3)`
      ])
      for (const m of malformed(items)) assert.isAbove(m.raw?.length ?? 0, 0)
      assert.deepStrictEqual(rows(items).map((r) => r.value.id), ["a8"])
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

  it.effect("disposition: replace (the default) leaves a completed run's parts only; append keeps earlier runs' parts", () =>
    Effect.gen(function*() {
      for (const disposition of [undefined, "replace", "append"] as const) {
        const dir = tmpDir()
        const sink = Jsonl.sink<{ id: string }>({ dir, ...(disposition === undefined ? {} : { disposition }) })
        assert.deepStrictEqual(sink.dispositions, ["replace", "append"])
        const chosen = Sink.dispositionOf(sink)
        assert.strictEqual(chosen, disposition ?? "replace")
        yield* sink.write({ runId: "run-1", seq: 1 }, [{ id: "a" }])
        yield* sink.finish!({ runId: "run-1", disposition: chosen })
        // the same pipeline run again
        yield* sink.write({ runId: "run-2", seq: 1 }, [{ id: "a" }])
        yield* sink.finish!({ runId: "run-2", disposition: chosen })
        const manifest = yield* Effect.promise(() => PartFiles.readManifest(dir))
        const files = fs.readdirSync(dir).filter((f) => f.endsWith(".jsonl")).sort()
        if (chosen === "replace") {
          assert.deepStrictEqual(manifest.map((e) => e.runId), ["run-2"])
          assert.deepStrictEqual(files, [PartFiles.partFileName({ runId: "run-2", seq: 1 }, "jsonl")])
        } else {
          assert.deepStrictEqual(manifest.map((e) => e.runId), ["run-1", "run-2"])
          assert.strictEqual(files.length, 2)
        }
      }
    }))
})
