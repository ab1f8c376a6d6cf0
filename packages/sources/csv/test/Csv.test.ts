import * as PartFiles from "@offpeak/core/PartFiles"
import type * as Source from "@offpeak/core/Source"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Schema, Stream } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as v8 from "node:v8"
import * as vm from "node:vm"
import { Csv } from "../index.ts"
import * as Columns from "../internal/columns.ts"
import * as Parser from "../internal/parser.ts"
import * as Reason from "../../internal/reason.ts"
import * as TextFile from "../../internal/textFile.ts"

const tmpDir = () => fs.mkdtempSync(path.join(os.tmpdir(), "offpeak-csv-"))

const file = (content: string | Uint8Array, name = "tickets.csv") => {
  const p = path.join(tmpDir(), name)
  fs.writeFileSync(p, content)
  return p
}

const Ticket = Schema.Struct({
  id: Schema.Int,
  priority: Schema.Literals(["low", "high"]),
  body: Schema.String
})

const read = <A>(source: Source.Source<A>) => Stream.runCollect(source.read)

const rows = <A>(items: ReadonlyArray<Source.Item<A>>) =>
  items.filter((i): i is Source.Row<A> => i._tag === "Row")

const malformed = <A>(items: ReadonlyArray<Source.Item<A>>) =>
  items.filter((i): i is Source.Malformed => i._tag === "Malformed")

/** position, line and value (or reason) of every item */
const summary = <A>(items: ReadonlyArray<Source.Item<A>>) =>
  items.map((i) => i._tag === "Row" ? [i.position, i.line, i.value] : [i.position, i.line, i.reason])

/** the internal reader with a chosen chunk size, for chunk-boundary and pull tests */
const readWith = <S extends Schema.Top & { readonly DecodingServices: never }>(options: {
  readonly path: string
  readonly schema: S
  readonly chunkSize?: number
  readonly maxRow?: number
  readonly onRead?: (bytes: number) => void
}): Stream.Stream<Source.Item<S["Type"]>, Source.SourceError> => {
  const decode = Reason.decoder(Schema.toCodecStringTree(options.schema))
  const columns = Columns.fromSchema(options.schema)
  return TextFile.stream({
    path: options.path,
    name: "t.csv",
    chunkSize: options.chunkSize,
    onRead: options.onRead,
    parser: () => Parser.make({ name: "t.csv", delimiter: ",", columns, decode, maxRow: options.maxRow })
  })
}

/** a CSV of `n` rows `i,low|high,"body i"`, with the byte offset where each row ends */
const generate = (n: number) => {
  const parts = ["id,priority,body\n"]
  const ends = new Float64Array(n + 1)
  let bytes = parts[0]!.length
  ends[0] = bytes
  for (let i = 1; i <= n; i++) {
    const line = `${i},${i % 2 === 0 ? "low" : "high"},"body of ticket ${i}, with a comma and some padding text"\n`
    parts.push(line)
    bytes += line.length
    ends[i] = bytes
  }
  return { text: parts.join(""), ends, bytes }
}

describe("Csv.source", () => {
  it.effect("bytes that are not UTF-8 make their row malformed, naming the field; a real U+FFFD is kept", () =>
    Effect.gen(function*() {
      const bytes = Buffer.concat([
        Buffer.from("id,priority,body\n1,low,fine\n2,high,caf"),
        Buffer.from([0xe9]), // latin-1 é: not UTF-8
        Buffer.from("\n3,low,fine too\n")
      ])
      const items = yield* read(Csv.source({ path: file(bytes), schema: Ticket, name: "t.csv" }))
      assert.deepStrictEqual(rows(items).map((r) => r.value.id), [1, 3])
      assert.deepStrictEqual(malformed(items).map((m) => m.reason), [
        "t.csv row 2 (line 3): field \"body\": invalid UTF-8 (bytes that are not UTF-8 were replaced by U+FFFD)"
      ])
      // a file that is valid UTF-8 keeps its U+FFFD characters
      const real = yield* read(Csv.source({ path: file("id,priority,body\n1,low,\uFFFD is a character\n"), schema: Ticket }))
      assert.strictEqual(rows(real)[0]!.value.body, "\uFFFD is a character")
    }))

  it.effect("decodes typed cells from text: integers, finite numbers, literals, booleans", () =>
    Effect.gen(function*() {
      const Schema1 = Schema.Struct({
        id: Schema.Int,
        score: Schema.Finite,
        priority: Schema.Literals(["low", "high"]),
        urgent: Schema.Boolean
      })
      const p = file("id,score,priority,urgent\n1,2.5,low,true\n2,-1e3,high,false\n")
      const items = yield* read(Csv.source({ path: p, schema: Schema1 }))
      assert.deepStrictEqual(summary(items), [
        [1, 2, { id: 1, score: 2.5, priority: "low", urgent: true }],
        [2, 3, { id: 2, score: -1000, priority: "high", urgent: false }]
      ])
    }))

  it.effect("source name defaults to the path, schema is the given schema", () =>
    Effect.sync(() => {
      const source = Csv.source({ path: "some/tickets.csv", schema: Ticket })
      assert.strictEqual(source.name, "some/tickets.csv")
      assert.strictEqual(source.schema, Ticket)
      assert.strictEqual(Csv.source({ path: "x.csv", schema: Ticket, name: "tickets" }).name, "tickets")
    }))

  it.effect("quoted fields keep delimiters, escaped quotes and line breaks", () =>
    Effect.gen(function*() {
      const p = file([
        "id,priority,body",
        `1,low,"hello, world"`,
        `2,high,"she said ""hi"""`,
        `3,low,"first line`,
        `second line, ""quoted""`,
        `third line"`,
        `4,high,""`,
        `5,low,plain`
      ].join("\n") + "\n")
      const items = yield* read(Csv.source({ path: p, schema: Ticket }))
      assert.deepStrictEqual(summary(items), [
        [1, 2, { id: 1, priority: "low", body: "hello, world" }],
        [2, 3, { id: 2, priority: "high", body: `she said "hi"` }],
        [3, 4, { id: 3, priority: "low", body: `first line\nsecond line, "quoted"\nthird line` }],
        [4, 7, { id: 4, priority: "high", body: "" }],
        [5, 8, { id: 5, priority: "low", body: "plain" }]
      ])
    }))

  it.effect("CRLF line endings and a UTF-8 BOM", () =>
    Effect.gen(function*() {
      const p = file("\uFEFFid,priority,body\r\n1,low,\"two\r\nlines\"\r\n2,high,héllo wörld ✓\r\n3,low,last")
      const items = yield* read(Csv.source({ path: p, schema: Ticket }))
      assert.deepStrictEqual(summary(items), [
        [1, 2, { id: 1, priority: "low", body: "two\r\nlines" }],
        [2, 4, { id: 2, priority: "high", body: "héllo wörld ✓" }],
        [3, 5, { id: 3, priority: "low", body: "last" }]
      ])
    }))

  it.effect("mixed LF and CRLF lines, and a quoted last cell before CRLF", () =>
    Effect.gen(function*() {
      const p = file("id,priority,body\r\n1,low,\"a\"\r\n2,high,b\n3,low,\"c\"\n")
      const items = yield* read(Csv.source({ path: p, schema: Ticket }))
      assert.deepStrictEqual(rows(items).map((r) => r.value.body), ["a", "b", "c"])
      assert.deepStrictEqual(rows(items).map((r) => r.line), [2, 3, 4])
    }))

  it.effect("old Mac line endings (CR only)", () =>
    Effect.gen(function*() {
      const p = file("id,priority,body\r1,low,\"a\rb\"\r2,high,c\r")
      const items = yield* read(Csv.source({ path: p, schema: Ticket }))
      assert.deepStrictEqual(summary(items), [
        [1, 2, { id: 1, priority: "low", body: "a\rb" }],
        [2, 4, { id: 2, priority: "high", body: "c" }]
      ])
    }))

  it.effect("positions count data rows, lines count physical lines (multi-line rows and blank lines)", () =>
    Effect.gen(function*() {
      const p = file([
        "id,priority,body", // line 1
        "1,low,a", // 2
        `2,high,"x`, // 3
        "y", // 4
        `z"`, // 5
        "", // 6 (blank: skipped)
        "3,low,b", // 7
        `4,high,"p`, // 8
        `q"`, // 9
        "5,low,c" // 10
      ].join("\n"))
      const items = yield* read(Csv.source({ path: p, schema: Ticket }))
      assert.deepStrictEqual(items.map((i) => [i.position, i.line]), [[1, 2], [2, 3], [3, 7], [4, 8], [5, 10]])
    }))

  it.effect("malformed rows (wrong width, unterminated quote, bad quotes, bad cells) are reported and every other row comes through", () =>
    Effect.gen(function*() {
      const p = file([
        "id,priority,body", // 1
        "1,low,ok", // 2: row 1
        "2,high", // 3: row 2, too few fields
        "3,low,ok,extra", // 4: row 3, too many fields
        "4,urgent,bad priority", // 5: row 4
        "x5,low,bad id", // 6: row 5
        `6,low,"bad"quote`, // 7: row 6
        "7,high,ok", // 8: row 7
        `8,low,"never closed`, // 9: row 8
        "9,low,ok" // 10: row 9
      ].join("\n") + "\n")
      const items = yield* read(Csv.source({ path: p, schema: Ticket, name: "tickets.csv" }))
      assert.deepStrictEqual(rows(items).map((r) => r.value.id), [1, 7, 9])
      assert.deepStrictEqual(items.map((i) => [i._tag, i.position, i.line]), [
        ["Row", 1, 2],
        ["Malformed", 2, 3],
        ["Malformed", 3, 4],
        ["Malformed", 4, 5],
        ["Malformed", 5, 6],
        ["Malformed", 6, 7],
        ["Row", 7, 8],
        ["Malformed", 8, 9],
        ["Row", 9, 10]
      ])
      assert.deepStrictEqual(malformed(items).map((m) => [m.reason, m.raw]), [
        ["tickets.csv row 2 (line 3): expected 3 fields, got 2", "2,high"],
        ["tickets.csv row 3 (line 4): expected 3 fields, got 4", "3,low,ok,extra"],
        [`tickets.csv row 4 (line 5): field "priority": Expected "low" | "high", got "urgent"`, "4,urgent,bad priority"],
        [`tickets.csv row 5 (line 6): field "id": Expected a string representing a finite number, got "x5"`, "x5,low,bad id"],
        [`tickets.csv row 6 (line 7): field "body": malformed quoted field`, `6,low,"bad"quote`],
        [`tickets.csv row 8 (line 9): field "body": unterminated quoted field`, `8,low,"never closed`]
      ])
    }))

  it.effect("a reason lists every failing field of the row", () =>
    Effect.gen(function*() {
      const p = file("id,priority,body\n1.5,urgent,x\n")
      const [item] = yield* read(Csv.source({ path: p, schema: Ticket, name: "t.csv" }))
      assert.strictEqual(
        item!._tag === "Malformed" && item!.reason,
        `t.csv row 1 (line 2): field "id": Expected an integer, got "1.5"; field "priority": Expected "low" | "high", got "urgent"`
      )
    }))

  it.effect("an unterminated quote at end of file only takes its first line", () =>
    Effect.gen(function*() {
      const p = file(`id,priority,body\n1,low,"open\n2,high,b\n3,low,c`)
      const items = yield* read(Csv.source({ path: p, schema: Ticket }))
      assert.deepStrictEqual(items.map((i) => [i._tag, i.position, i.line]), [
        ["Malformed", 1, 2],
        ["Row", 2, 3],
        ["Row", 3, 4]
      ])
    }))

  it.effect("extra columns are ignored; an empty cell of an optional key leaves it out", () =>
    Effect.gen(function*() {
      const S = Schema.Struct({ id: Schema.Int, note: Schema.optionalKey(Schema.String), score: Schema.optional(Schema.Finite) })
      const p = file("extra,id,note,score,more\nx,1,hi,2,y\nx,2,,,y\n")
      const items = yield* read(Csv.source({ path: p, schema: S }))
      assert.deepStrictEqual(rows(items).map((r) => r.value), [{ id: 1, note: "hi", score: 2 }, { id: 2 }])
    }))

  it.effect("an optional column may be missing from the header", () =>
    Effect.gen(function*() {
      const S = Schema.Struct({ id: Schema.Int, note: Schema.optionalKey(Schema.String) })
      const items = yield* read(Csv.source({ path: file("id\n1\n2\n"), schema: S }))
      assert.deepStrictEqual(rows(items).map((r) => r.value), [{ id: 1 }, { id: 2 }])
    }))

  it.effect("every column reaches the schema: a record schema takes them all", () =>
    Effect.gen(function*() {
      const AnyRow = Schema.Record(Schema.String, Schema.String)
      const items = yield* read(Csv.source({ path: file("a,b,c\n1,2,3\n"), schema: AnyRow }))
      assert.deepStrictEqual(rows(items).map((r) => r.value), [{ a: "1", b: "2", c: "3" }])
    }))

  it.effect("another delimiter", () =>
    Effect.gen(function*() {
      const p = file("id;priority;body\n1;low;\"a;b\"\n2;high;c,d\n")
      const items = yield* read(Csv.source({ path: p, schema: Ticket, delimiter: ";" }))
      assert.deepStrictEqual(rows(items).map((r) => r.value.body), ["a;b", "c,d"])
      const tabs = yield* read(Csv.source({ path: file("id\tpriority\tbody\n1\tlow\ta, b\n"), schema: Ticket, delimiter: "\t" }))
      assert.deepStrictEqual(rows(tabs).map((r) => r.value.body), ["a, b"])
      const bad = yield* read(Csv.source({ path: p, schema: Ticket, delimiter: "\"", name: "t.csv" })).pipe(Effect.flip)
      assert.strictEqual(bad.message, `t.csv: invalid delimiter "\\""`)
    }))

  it.effect("a header without a column the schema requires fails with SourceError", () =>
    Effect.gen(function*() {
      const p = file("id,priority\n1,low\n")
      const error = yield* read(Csv.source({ path: p, schema: Ticket, name: "tickets.csv" })).pipe(Effect.flip)
      assert.strictEqual(error._tag, "SourceError")
      assert.strictEqual(error.source, "tickets.csv")
      assert.strictEqual(error.message, `tickets.csv: header has no column "body"`)
    }))

  it.effect("a header naming a schema column twice fails with SourceError", () =>
    Effect.gen(function*() {
      const p = file("id,priority,body,body\n1,low,a,b\n")
      const error = yield* read(Csv.source({ path: p, schema: Ticket, name: "t.csv" })).pipe(Effect.flip)
      assert.strictEqual(error.message, `t.csv: header has column "body" twice`)
    }))

  it.effect("a missing file fails with SourceError naming the path", () =>
    Effect.gen(function*() {
      const p = path.join(tmpDir(), "nope.csv")
      const error = yield* read(Csv.source({ path: p, schema: Ticket })).pipe(Effect.flip)
      assert.strictEqual(error._tag, "SourceError")
      assert.strictEqual(error.message, `${p}: no such file`)
      const named = yield* read(Csv.source({ path: p, schema: Ticket, name: "tickets.csv" })).pipe(Effect.flip)
      assert.strictEqual(named.message, `tickets.csv: no such file (${p})`)
    }))

  it.effect("a directory fails with SourceError", () =>
    Effect.gen(function*() {
      const dir = tmpDir()
      const error = yield* read(Csv.source({ path: dir, schema: Ticket, name: "d" })).pipe(Effect.flip)
      assert.strictEqual(error.message, `d: is a directory (${dir})`)
    }))

  it.effect("an empty file, a blank file and a header-only file are empty streams", () =>
    Effect.gen(function*() {
      for (const content of ["", "\uFEFF", "\n\n", "id,priority,body", "id,priority,body\r\n"]) {
        const items = yield* read(Csv.source({ path: file(content), schema: Ticket }))
        assert.deepStrictEqual(items, [], JSON.stringify(content))
      }
    }))

  it.effect("the stream can be run again (resume re-reads the source)", () =>
    Effect.gen(function*() {
      const source = Csv.source({ path: file("id,priority,body\n1,low,a\n2,high,b\n"), schema: Ticket })
      const first = yield* read(source)
      const second = yield* read(source)
      assert.deepStrictEqual(second, first)
      assert.strictEqual(first.length, 2)
    }))

  it.effect("chunk boundaries anywhere (inside quotes, CRLF, multi-byte characters) give the same rows", () =>
    Effect.gen(function*() {
      const text = "\uFEFFid,priority,body\r\n" +
        Array.from({ length: 40 }, (_, i) =>
          i % 5 === 0
            ? `${i},low,"multi ""q"" ✓ line\r\nnext, ünïcødé 😀"\r\n`
            : i % 7 === 0
            ? `${i},urgent,bad\r\n`
            : i % 11 === 0
            ? `${i},low\r\n`
            : `${i},high,plain ${"é".repeat(i)}\r\n`).join("")
      const p = file(text)
      const expected = yield* Stream.runCollect(readWith({ path: p, schema: Ticket }))
      assert.strictEqual(expected.length, 40)
      assert.strictEqual(rows(expected).length, 33)
      for (const chunkSize of [1, 2, 3, 5, 7, 13, 64]) {
        const items = yield* Stream.runCollect(readWith({ path: p, schema: Ticket, chunkSize }))
        assert.deepStrictEqual(items, expected, `chunk size ${chunkSize}`)
      }
    }))

  it.effect("a pending row longer than the limit is cut as malformed and reading goes on", () =>
    Effect.gen(function*() {
      const p = file(`id,priority,body\n1,low,"${"x".repeat(500)}\n2,high,b\n3,low,c\n`)
      const items = yield* Stream.runCollect(readWith({ path: p, schema: Ticket, chunkSize: 64, maxRow: 200 }))
      assert.deepStrictEqual(items.map((i) => [i._tag, i.position, i.line]), [
        ["Malformed", 1, 2],
        ["Row", 2, 3],
        ["Row", 3, 4]
      ])
      assert.include((items[0] as Source.Malformed).reason, "row is longer than 200 characters")
    }))

  it.effect("is pull-driven: taking 10 rows of a 200k-row file reads one chunk and closes it; reading never runs ahead", () =>
    Effect.gen(function*() {
      const { ends, text } = generate(200_000)
      const p = file(text)
      let bytesRead = 0
      const onRead = (n: number) => {
        bytesRead += n
      }
      const openFiles = () => fs.existsSync("/proc/self/fd") ? fs.readdirSync("/proc/self/fd").length : 0
      const before = openFiles()
      const first = yield* readWith({ path: p, schema: Ticket, onRead }).pipe(Stream.take(10), Stream.runCollect)
      assert.deepStrictEqual(first.map((i) => i.position), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
      assert.strictEqual(bytesRead, TextFile.CHUNK_SIZE)
      assert.strictEqual(openFiles(), before, "the file is closed when the consumer stops early")

      // while the consumer handles row n, at most one chunk beyond the end of row n has been read
      bytesRead = 0
      let maxAhead = 0
      let count = 0
      yield* readWith({ path: p, schema: Ticket, onRead }).pipe(
        Stream.runForEach((item) =>
          Effect.sync(() => {
            count++
            maxAhead = Math.max(maxAhead, bytesRead - ends[item.position]!)
          })
        )
      )
      assert.strictEqual(count, 200_000)
      assert.isAtMost(maxAhead, TextFile.CHUNK_SIZE)
    }))

  it.effect("streams a 200k-row file with bounded memory", () =>
    Effect.gen(function*() {
      const { bytes, text } = generate(200_000)
      const p = file(text)
      v8.setFlagsFromString("--expose-gc")
      const gc = vm.runInNewContext("gc") as () => void
      gc()
      const baseline = process.memoryUsage().heapUsed
      let live = 0
      let count = 0
      yield* Csv.source({ path: p, schema: Ticket }).read.pipe(
        Stream.runForEachArray((items) =>
          Effect.sync(() => {
            const before = count
            count += items.length
            if (Math.floor(before / 25_000) !== Math.floor(count / 25_000)) {
              gc()
              live = Math.max(live, process.memoryUsage().heapUsed - baseline)
            }
          })
        )
      )
      assert.strictEqual(count, 200_000)
      assert.isAbove(bytes, 10_000_000)
      // what stays alive while streaming is a few chunks, not the file
      assert.isBelow(live, 4_000_000, `live heap grew by ${live} bytes for a ${bytes}-byte file`)
    }))
})

describe("Csv.sink", () => {
  const part = (seq: number) => ({ runId: "r1", seq })

  it.effect("writes part files with a header line and a manifest; the same part twice is replaced", () =>
    Effect.gen(function*() {
      const dir = tmpDir()
      const sink = Csv.sink<{ id: number; label: string }>({ dir })
      yield* sink.write(part(1), [{ id: 1, label: "a" }, { id: 2, label: "b" }])
      yield* sink.write(part(2), [{ id: 3, label: "c" }])
      yield* sink.write(part(1), [{ id: 1, label: "a2" }, { id: 2, label: "b2" }])
      const file1 = path.join(dir, PartFiles.partFileName(part(1), "csv"))
      assert.strictEqual(fs.readFileSync(file1, "utf8"), "id,label\n1,a2\n2,b2\n")
      assert.strictEqual(fs.readFileSync(path.join(dir, PartFiles.partFileName(part(2), "csv")), "utf8"), "id,label\n3,c\n")
      const manifest = yield* Effect.promise(() => PartFiles.readManifest(dir))
      assert.deepStrictEqual(manifest.map((e) => [e.file, e.seq, e.rows]), [
        [PartFiles.partFileName(part(1), "csv"), 1, 2],
        [PartFiles.partFileName(part(2), "csv"), 2, 1]
      ])
      assert.deepStrictEqual(fs.readdirSync(dir).sort(), [
        PartFiles.MANIFEST,
        PartFiles.partFileName(part(1), "csv"),
        PartFiles.partFileName(part(2), "csv")
      ].sort())
    }))

  it.effect("columns choose and order the cells; values are encoded by type", () =>
    Effect.gen(function*() {
      const dir = tmpDir()
      const sink = Csv.sink<Record<string, unknown>>({
        dir,
        columns: ["id", "n", "ok", "none", "missing", "tags", "when"]
      })
      yield* sink.write(part(1), [{
        id: "k1",
        n: 1.5,
        ok: false,
        none: null,
        tags: ["a", "b"],
        when: new Date("2024-01-02T03:04:05Z"),
        ignored: 1
      }])
      assert.strictEqual(
        fs.readFileSync(path.join(dir, PartFiles.partFileName(part(1), "csv")), "utf8"),
        `id,n,ok,none,missing,tags,when\nk1,1.5,false,,,"[""a"",""b""]",2024-01-02T03:04:05.000Z\n`
      )
    }))

  it.effect("quoting round-trips through Csv.source", () =>
    Effect.gen(function*() {
      const Rec = Schema.Struct({
        id: Schema.Int,
        text: Schema.String,
        score: Schema.Finite,
        ok: Schema.Boolean,
        note: Schema.optionalKey(Schema.String)
      })
      type Rec = typeof Rec.Type
      const records: Array<Rec> = [
        { id: 1, text: "plain", score: 1, ok: true, note: "n" },
        { id: 2, text: "comma, inside", score: -2.5, ok: false },
        { id: 3, text: `quote " inside and ""double""`, score: 0, ok: true },
        { id: 4, text: "line\nbreak and\r\ncrlf", score: 1e-7, ok: false, note: "x,y" },
        { id: 5, text: "  spaces  ", score: 3, ok: true },
        { id: 6, text: "", score: 4, ok: true },
        { id: 7, text: "ünïcødé ✓ 😀", score: 5, ok: false },
        { id: 8, text: `"starts with a quote`, score: 6, ok: true }
      ]
      const dir = tmpDir()
      yield* Csv.sink<Rec>({ dir, columns: ["id", "text", "score", "ok", "note"] }).write(part(7), records)
      const back = yield* read(Csv.source({ path: path.join(dir, PartFiles.partFileName(part(7), "csv")), schema: Rec }))
      assert.deepStrictEqual(rows(back).map((r) => r.value), records)
      assert.deepStrictEqual(back.map((r) => r.position), [1, 2, 3, 4, 5, 6, 7, 8])
    }))

  it.effect("an empty part before any row is an empty file; later parts have the header", () =>
    Effect.gen(function*() {
      const dir = tmpDir()
      const sink = Csv.sink<{ a: number }>({ dir })
      yield* sink.write(part(1), [])
      yield* sink.write(part(2), [{ a: 1 }])
      yield* sink.write(part(3), [])
      const content = (seq: number) => fs.readFileSync(path.join(dir, PartFiles.partFileName(part(seq), "csv")), "utf8")
      assert.deepStrictEqual([content(1), content(2), content(3)], ["", "a\n1\n", "a\n"])
    }))
})
