import * as PartFiles from "@offpeak/core/PartFiles"
import * as Sink from "@offpeak/core/Sink"
import type * as Source from "@offpeak/core/Source"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Schema, Stream } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import Papa from "papaparse"
import * as v8 from "node:v8"
import * as vm from "node:vm"
import { Jsonl } from "../../jsonl/index.ts"
import { Csv } from "../index.ts"
import * as Columns from "../internal/columns.ts"
import * as Parser from "../internal/parser.ts"
import * as Reason from "../../internal/reason.ts"
import * as Support from "../../internal/test/support.ts"
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
  readonly key?: string
  readonly onRead?: (bytes: number) => void
}): Stream.Stream<Source.Item<S["Type"]>, Source.SourceError> => {
  const decode = Reason.decoder(Schema.toCodecStringTree(options.schema))
  const columns = Columns.fromSchema(options.schema)
  return TextFile.stream({
    path: options.path,
    name: "t.csv",
    chunkSize: options.chunkSize,
    onRead: options.onRead,
    parser: () => Parser.make({ name: "t.csv", delimiter: ",", columns, decode, maxRecordBytes: options.maxRow, key: options.key })
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
      assert.deepStrictEqual(malformed(items).map((m) => [m.reason, m.raw]), [[
        `t.csv row 2 (line 3): field "body": invalid UTF-8: byte E9 at offset ${bytes.indexOf(0xe9)} (shown as U+FFFD)`,
        "2,high,caf\uFFFD"
      ]])
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

  it.effect("malformed rows (wrong width, bad quotes, bad cells) are reported and every other row comes through", () =>
    Effect.gen(function*() {
      const p = file([
        "id,priority,body", // 1
        "1,low,ok", // 2: row 1
        "2,high", // 3: row 2, too few fields
        "3,low,ok,extra", // 4: row 3, too many fields
        "4,urgent,bad priority", // 5: row 4
        "x5,low,bad id", // 6: row 5
        `6,low,"bad"quote"`, // 7: row 6, a quote not doubled (the field closes at the end of the line)
        "7,high,ok", // 8: row 7
        `8,low,"never closed` // 9: row 8, unterminated at the end of the file
      ].join("\n"))
      const items = yield* read(Csv.source({ path: p, schema: Ticket, name: "tickets.csv" }))
      assert.deepStrictEqual(rows(items).map((r) => r.value.id), [1, 7])
      assert.deepStrictEqual(items.map((i) => [i._tag, i.position, i.line]), [
        ["Row", 1, 2],
        ["Malformed", 2, 3],
        ["Malformed", 3, 4],
        ["Malformed", 4, 5],
        ["Malformed", 5, 6],
        ["Malformed", 6, 7],
        ["Row", 7, 8],
        ["Malformed", 8, 9]
      ])
      assert.deepStrictEqual(malformed(items).map((m) => [m.reason, m.raw]), [
        ["tickets.csv row 2 (line 3): expected 3 fields, got 2", "2,high"],
        ["tickets.csv row 3 (line 4): expected 3 fields, got 4", "3,low,ok,extra"],
        [`tickets.csv row 4 (line 5): field "priority": Expected "low" | "high", got "urgent"`, "4,urgent,bad priority"],
        [`tickets.csv row 5 (line 6): field "id": Expected a string representing a finite number, got "x5"`, "x5,low,bad id"],
        [`tickets.csv row 6 (line 7): field "body": malformed quoted field (a quote inside it is not doubled)`, `6,low,"bad"quote"`],
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

  it.effect("a quoted field never closed takes the rest of the file: one malformed record, its lines named, no row invented", () =>
    Effect.gen(function*() {
      const p = file(`id,priority,body\n0,high,a\n1,low,"open\n2,high,b\n3,low,c\n`)
      for (const chunkSize of [1, 4, 4096]) {
        const items = yield* Stream.runCollect(readWith({ path: p, schema: Ticket, chunkSize }))
        assert.deepStrictEqual(items.map((i) => [i._tag, i.position, i.line]), [["Row", 1, 2], ["Malformed", 2, 3]])
        assert.deepStrictEqual([(items[1] as Source.Malformed).reason, (items[1] as Source.Malformed).raw], [
          `t.csv row 2 (line 3): field "body": unterminated quoted field: no closing quote before the end of the file, so lines 3–5 are this one record`,
          `1,low,"open\n2,high,b\n3,low,c`
        ])
      }
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

  it.effect("a pending row longer than the limit is malformed whole and reading goes on after it", () =>
    Effect.gen(function*() {
      const p = file(`id,priority,body\n1,low,"${"x\n".repeat(250)}"\n2,high,b\n3,low,c\n`)
      const items = yield* Stream.runCollect(readWith({ path: p, schema: Ticket, chunkSize: 64, maxRow: 200 }))
      assert.deepStrictEqual(items.map((i) => [i._tag, i.position, i.line]), [
        ["Malformed", 1, 2],
        ["Row", 2, 253],
        ["Row", 3, 254]
      ])
      assert.strictEqual(
        (items[0] as Source.Malformed).reason,
        `t.csv row 1 (line 2): field "body": record is 508 bytes (lines 2–252), over the limit of 200 bytes`
      )
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

describe("Csv.source: UTF-8 read in chunks", () => {
  const CHUNK = 48
  const BOUNDARIES = 8

  it.effect("a character split at any byte across any chunk boundary is read whole; U+FFFD in the file is kept", () =>
    Effect.gen(function*() {
      let straddles = 0
      for (const [char, split] of Support.splits()) {
        const { bodies, bytes } = Support.straddling({
          head: "id,priority,body\n",
          chunk: CHUNK,
          boundaries: BOUNDARIES,
          char,
          split,
          // unquoted, and quoted over two lines, in turn
          row: (j, body) => j % 2 === 0 ? `${j},low,${body}\n` : `${j},high,"${body}\nline 2"\n`
        })
        const items = yield* Stream.runCollect(readWith({ path: file(bytes), schema: Ticket, chunkSize: CHUNK }))
        assert.deepStrictEqual(malformed(items), [], `${JSON.stringify(char)} split after ${split} bytes`)
        assert.deepStrictEqual(
          rows(items).map((r) => r.value.body),
          bodies.map((b, i) => (i + 1) % 2 === 0 ? b : `${b}\nline 2`)
        )
        assert.isAtLeast(bytes.length, CHUNK * BOUNDARIES)
        straddles += BOUNDARIES
      }
      console.log(`CSV: ${straddles} characters cut at a chunk boundary (é, €, U+FFFD, 😀 at every split), 0 rows malformed`)
    }))

  it.effect("a row with bytes that are not UTF-8 is malformed alone: later rows with a real U+FFFD pass untouched", () =>
    Effect.gen(function*() {
      const lines = ["id,priority,body", "1,low,\uFFFD first"]
      const bytes = Buffer.concat([
        Buffer.from(lines.join("\n") + "\n2,high,bad "),
        Buffer.from([0xff]),
        Buffer.from(" byte\n"),
        Buffer.from(Array.from({ length: 200 }, (_, i) => `${i + 3},low,real \uFFFD number ${i + 3}\n`).join(""))
      ])
      for (const chunkSize of [5, 16, 64, 4096]) {
        const items = yield* Stream.runCollect(readWith({ path: file(bytes), schema: Ticket, chunkSize }))
        assert.strictEqual(items.length, 202)
        assert.deepStrictEqual(malformed(items).map((m) => [m.position, m.line, m.reason, m.raw]), [[
          2,
          3,
          `t.csv row 2 (line 3): field "body": invalid UTF-8: byte FF at offset ${bytes.indexOf(0xff)} (shown as U+FFFD)`,
          "2,high,bad \uFFFD byte"
        ]])
        assert.isTrue(rows(items).every((r) => r.value.body.includes("\uFFFD")))
      }
      console.log("CSV: 1 row with a byte FF dead-lettered, the 201 rows holding a real U+FFFD all read, at chunk sizes 5, 16, 64, 4096")
    }))

  it.effect("cut, overlong and surrogate sequences, at a chunk boundary or at the end of the file, name their row and bytes", () =>
    Effect.gen(function*() {
      const bytes = Buffer.concat([
        Buffer.from("id,priority,body\n1,low,cut "),
        Buffer.from([0xe2, 0x82]), // € without its last byte
        Buffer.from("!\n2,high,overlong "),
        Buffer.from([0xc0, 0xaf]),
        Buffer.from("\n3,low,surrogate "),
        Buffer.from([0xed, 0xa0, 0x80]),
        Buffer.from("\n4,high,fine é\n5,low,end "),
        Buffer.from([0xf0, 0x9f]) // the file ends inside 😀
      ])
      const expected = yield* Stream.runCollect(readWith({ path: file(bytes), schema: Ticket }))
      assert.deepStrictEqual(expected.map((i) => [i._tag, i.position, i.line]), [
        ["Malformed", 1, 2],
        ["Malformed", 2, 3],
        ["Malformed", 3, 4],
        ["Row", 4, 5],
        ["Malformed", 5, 6]
      ])
      assert.deepStrictEqual(malformed(expected).map((m) => m.reason.replace(/^.*invalid UTF-8: /, "")), [
        `bytes E2 82 at offset ${bytes.indexOf(0xe2)} (shown as U+FFFD)`,
        `byte C0 at offset ${bytes.indexOf(0xc0)}, byte AF at offset ${bytes.indexOf(0xaf)} (shown as U+FFFD)`,
        `byte ED at offset ${bytes.indexOf(0xed)}, byte A0 at offset ${bytes.indexOf(0xa0)}, byte 80 at offset ${
          bytes.indexOf(0xa0) + 1
        } (shown as U+FFFD)`,
        `bytes F0 9F at offset ${bytes.indexOf(0xf0)} (shown as U+FFFD)`
      ])
      for (let chunkSize = 1; chunkSize <= 12; chunkSize++) {
        const items = yield* Stream.runCollect(readWith({ path: file(bytes), schema: Ticket, chunkSize }))
        assert.deepStrictEqual(items, expected, `chunk size ${chunkSize}`)
      }
    }))
})

describe("Csv.source: broken quotes", () => {
  const chunkSizes = [1, 2, 3, 5, 8, 13, 64, 4096]

  it.effect("a broken quote in a multi-line field: the field's later lines are that record, never rows", () =>
    Effect.gen(function*() {
      for (const eol of ["\n", "\r\n"]) {
        const p = file([
          "id,priority,body", // 1
          "1,low,ok", // 2
          `2,high,"He said "stop" and left`, // 3: a quote not doubled, in a field that goes on
          "3,low,this line is inside the field", // 4: looks like a row, is field text
          `4,high,so is this one"`, // 5: the field's closing quote
          "5,low,after" // 6
        ].join(eol) + eol)
        for (const chunkSize of chunkSizes) {
          const items = yield* Stream.runCollect(readWith({ path: p, schema: Ticket, chunkSize }))
          assert.deepStrictEqual(items.map((i) => [i._tag, i.position, i.line]), [
            ["Row", 1, 2],
            ["Malformed", 2, 3],
            ["Row", 3, 6]
          ], `${JSON.stringify(eol)}, chunk size ${chunkSize}`)
          assert.deepStrictEqual(rows(items).map((r) => r.value.id), [1, 5])
          const bad = items[1] as Source.Malformed
          assert.strictEqual(
            bad.reason,
            `t.csv row 2 (line 3): field "body": malformed quoted field (a quote inside it is not doubled): the field runs to its closing quote, so lines 3–5 are this one record`
          )
          assert.strictEqual(
            bad.raw,
            [`2,high,"He said "stop" and left`, "3,low,this line is inside the field", `4,high,so is this one"`].join(eol)
          )
        }
      }
    }))

  it.effect("a quote that is not doubled keeps its field open up to the next quote that closes one", () =>
    Effect.gen(function*() {
      // the writer probably meant row 6 to end on its line: the parser cannot know, so rows 7 and 8 are in its record
      const p = file(`id,priority,body\n6,low,"bad"quote\n7,high,ok\n8,low,"quoted"\n9,low,after\n`)
      const items = yield* Stream.runCollect(readWith({ path: p, schema: Ticket }))
      assert.deepStrictEqual(items.map((i) => [i._tag, i.position, i.line]), [["Malformed", 1, 2], ["Row", 2, 5]])
      assert.strictEqual((items[0] as Source.Malformed).raw, `6,low,"bad"quote\n7,high,ok\n8,low,"quoted"`)
      assert.include((items[0] as Source.Malformed).reason, "lines 2–4 are this one record")
    }))

  it.effect("fuzz: no text of a broken field ever becomes a row, whatever the chunking; every other row is read", () =>
    Effect.gen(function*() {
      let seed = 17
      const rand = () => {
        seed = (seed * 1103515245 + 12345) & 0x7fffffff
        return seed / 0x7fffffff
      }
      let files = 0
      let broken = 0
      let good = 0
      for (let round = 0; round < 12; round++) {
        const lines = ["id,priority,body"]
        const expected: Array<Array<string | number | undefined>> = []
        let position = 0
        let fake = 100_000
        for (let id = 1; id <= 60; id++) {
          const r = rand()
          const line = lines.length + 1
          if (r < 0.1) {
            lines.push("")
            continue
          }
          position++
          if (r < 0.45) {
            lines.push(`${id},low,plain ${id}`)
            expected.push(["Row", position, line])
          } else if (r < 0.65) {
            lines.push(`${id},high,"a ""q"" ${id}`, `line 2, with a comma"`)
            expected.push(["Row", position, line])
          } else if (r < 0.85) {
            // a broken quote, then lines that look like rows, then the field's closing quote
            const inner = Array.from({ length: 1 + Math.floor(rand() * 4) }, () => `${fake++},low,INSIDE`)
            lines.push(`${id},low,"said "hi" there`, ...inner, `end of field"`)
            expected.push(["Malformed", position, line])
          } else {
            lines.push(`${id},low`)
            expected.push(["Malformed", position, line])
          }
        }
        const p = file(lines.join("\n") + "\n")
        for (const chunkSize of chunkSizes) {
          const items = yield* Stream.runCollect(readWith({ path: p, schema: Ticket, chunkSize }))
          assert.deepStrictEqual(items.map((i) => [i._tag, i.position, i.line]), expected, `round ${round}, chunk size ${chunkSize}`)
          for (const r of rows(items)) {
            assert.isBelow(r.value.id, 100_000)
            assert.notInclude(r.value.body, "INSIDE")
          }
        }
        files++
        broken += expected.filter((e) => e[0] === "Malformed").length
        good += expected.filter((e) => e[0] === "Row").length
      }
      console.log(`CSV fuzz: ${files} files × ${chunkSizes.length} chunk sizes, ${good} rows read, ${broken} malformed records, 0 rows from field text`)
    }))
})

describe("Csv.source: the record limit", () => {
  it.effect("fuzz: records over the limit read whole or in pieces give the same items; the scan ends records where papaparse does", () =>
    Effect.gen(function*() {
      let seed = 23
      const rand = () => {
        seed = (seed * 1103515245 + 12345) & 0x7fffffff
        return seed / 0x7fffffff
      }
      // the scanner that skips over-long records agrees with papaparse on where every record ends
      const alphabet = ["a", "b", ",", "\"", "\"", "\n", " ", "\r", "é", ";;"]
      let records = 0
      for (let round = 0; round < 5_000; round++) {
        const delimiter = rand() < 0.7 ? "," : ";;"
        let text = ""
        for (let i = Math.floor(rand() * 30); i > 0; i--) text += alphabet[Math.floor(rand() * alphabet.length)]
        const ends: Array<number> = []
        new Papa.Parser({ delimiter, newline: "\n", step: ((r: { meta: { cursor: number } }) => ends.push(r.meta.cursor)) as never })
          .parse(text, 0, false)
        let start = 0
        for (const end of ends) {
          // fed in pieces of 1 to 4 characters, the undecided tail scanned again with the next
          const state = Parser.scanState()
          let held = ""
          let at = start
          let found = text.length
          while (at < text.length) {
            const next = text.slice(at, at + 1 + Math.floor(rand() * 4))
            const piece = held + next
            const pieceStart = at - held.length
            at += next.length
            const got = Parser.scan(state, piece, delimiter, "\n")
            if (got !== -1) {
              found = pieceStart + got
              break
            }
            held = piece.slice(state.hold)
          }
          assert.strictEqual(found, end, JSON.stringify({ text, delimiter, start }))
          records++
          start = end
        }
      }
      // whole files with records over the limit: the same items at every chunk size
      let files = 0
      let over = 0
      for (let round = 0; round < 16; round++) {
        const eol = round % 2 === 0 ? "\n" : "\r\n"
        const lines = ["id,priority,body"]
        for (let id = 1; id <= 40; id++) {
          const r = rand()
          const n = Math.floor(rand() * 200)
          if (r < 0.3) lines.push(`${id},low,${"u".repeat(n)}`)
          else if (r < 0.55) lines.push(`${id},high,"${"q".repeat(n)}${eol}more, ""quoted""${eol}${"é".repeat(n / 2)}"`)
          else if (r < 0.75) lines.push(`${id},low,"said "hi" ${"w".repeat(n)}${eol}${id + 100_000},low,INSIDE${eol}end"`)
          else if (r < 0.85) lines.push(`${id},${"c".repeat(n)},${"d".repeat(n)}`)
          else lines.push(`${id},high,plain`)
        }
        const p = file(lines.join(eol) + (rand() < 0.5 ? eol : ""))
        const expected = yield* Stream.runCollect(readWith({ path: p, schema: Ticket, maxRow: 120, chunkSize: 1 << 16 }))
        for (const chunkSize of [2, 7, 16, 64, 121]) {
          const items = yield* Stream.runCollect(readWith({ path: p, schema: Ticket, maxRow: 120, chunkSize }))
          assert.deepStrictEqual(items, expected, `round ${round}, chunk size ${chunkSize}`)
        }
        for (const r of rows(expected)) assert.notInclude(r.value.body, "INSIDE")
        over += malformed(expected).filter((m) => m.reason.includes("over the limit")).length
        files++
      }
      console.log(`scan vs papaparse: ${records} record ends agree; ${files} files with ${over} records over the limit: same items at 6 chunk sizes`)
    }))


  it.effect("one limit, in UTF-8 bytes, for every record: quoted or not, one line or many, complete or still being read", () =>
    Effect.gen(function*() {
      const records = [
        `1,low,${"x".repeat(194)}`, // 200 bytes: at the limit, a row
        `2,low,${"x".repeat(195)}`, // 201 bytes
        `3,high,"${"y".repeat(300)}"`, // quoted
        `4,high,"${"ab\n".repeat(100)}"`, // quoted over 101 lines
        `5,low,${"é".repeat(97)}`, // 103 characters, 200 bytes: a row
        `6,low,${"é".repeat(98)}`, // 104 characters, 202 bytes
        `7,low,"${"z".repeat(600)}` // never closed
      ]
      const p = file(`id,priority,body\n${records.slice(0, 6).join("\n")}\n8,high,after\n${records[6]}`)
      const expected = yield* Stream.runCollect(readWith({ path: p, schema: Ticket, maxRow: 200 }))
      assert.deepStrictEqual(expected.map((i) => [i._tag, i.position, i.line]), [
        ["Row", 1, 2],
        ["Malformed", 2, 3],
        ["Malformed", 3, 4],
        ["Malformed", 4, 5],
        ["Row", 5, 106],
        ["Malformed", 6, 107],
        ["Row", 7, 108],
        ["Malformed", 8, 109]
      ])
      assert.deepStrictEqual(malformed(expected).map((m) => m.reason), [
        `t.csv row 2 (line 3): field "body": record is 201 bytes (line 3), over the limit of 200 bytes`,
        `t.csv row 3 (line 4): field "body": record is 309 bytes (line 4), over the limit of 200 bytes`,
        `t.csv row 4 (line 5): field "body": record is 309 bytes (lines 5–105), over the limit of 200 bytes`,
        `t.csv row 6 (line 107): field "body": record is 202 bytes (line 107), over the limit of 200 bytes`,
        `t.csv row 8 (line 109): field "body": unterminated quoted field: record is 607 bytes (line 109, to the end of the file), over the limit of 200 bytes`
      ])
      // small chunks see the long records while they are pending, large ones see them complete: the same items
      for (const chunkSize of [1, 7, 64, 199, 4096]) {
        const items = yield* Stream.runCollect(readWith({ path: p, schema: Ticket, maxRow: 200, chunkSize }))
        assert.deepStrictEqual(items, expected, `chunk size ${chunkSize}`)
      }
      // raw: the first 1,000 characters and how many more
      const long = yield* Stream.runCollect(readWith({ path: file(`id,priority,body\n1,low,"${"q".repeat(5_000)}"\n`), schema: Ticket, maxRow: 200, chunkSize: 64 }))
      assert.strictEqual((long[0] as Source.Malformed).raw, `1,low,"${"q".repeat(993)}… (4008 more characters)`)
    }))

  it.effect("the default limit (16 MiB): a 20 MB quoted field and a 50 MB unquoted row are refused, a 10 MB quoted field passes", () =>
    Effect.gen(function*() {
      const MB = 1_000_000
      const p = file([
        "id,priority,body",
        `1,low,"${"a".repeat(10 * MB)}"`,
        `2,high,"${"bb, \"\"c\"\"\n".repeat(2 * MB)}"`, // 20 MB over 2 million lines, with delimiters and doubled quotes
        `3,low,${"d".repeat(50 * MB)}`,
        "4,high,after"
      ].join("\n") + "\n")
      const started = performance.now()
      const items = yield* read(Csv.source({ path: p, schema: Ticket, name: "big.csv" }))
      const seconds = (performance.now() - started) / 1000
      assert.deepStrictEqual(items.map((i) => [i._tag, i.position, i.line]), [
        ["Row", 1, 2],
        ["Malformed", 2, 3],
        ["Malformed", 3, 2_000_004],
        ["Row", 4, 2_000_005]
      ])
      assert.deepStrictEqual(malformed(items).map((m) => m.reason), [
        `big.csv row 2 (line 3): field "body": record is 19.1 MiB (20000009 bytes, lines 3–2000003), over the limit of 16.0 MiB (16777216 bytes)`,
        `big.csv row 3 (line 2000004): field "body": record is 47.7 MiB (50000006 bytes, line 2000004), over the limit of 16.0 MiB (16777216 bytes)`
      ])
      assert.strictEqual((rows(items)[0]!.value.body).length, 10 * MB)
      console.log(`default limit: ${(fs.statSync(p).size / MB).toFixed(0)} MB file read in ${seconds.toFixed(2)} s: 10 MB field passed, 20 MB quoted and 50 MB unquoted refused`)
    }))

  it.effect("a record over the limit is read to its end without being kept: memory stays about the limit", () =>
    Effect.gen(function*() {
      const MB = 1_000_000
      const p = file([
        "id,priority,body",
        `1,low,${"u".repeat(40 * MB)}`,
        `2,low,"${"q\n".repeat(20 * MB)}"`,
        "3,high,after"
      ].join("\n") + "\n")
      v8.setFlagsFromString("--expose-gc")
      const gc = vm.runInNewContext("gc") as () => void
      gc()
      const baseline = process.memoryUsage().heapUsed
      let peak = 0
      let chunks = 0
      // live heap (after a full collection) every 2 MB read
      const onRead = () => {
        if (++chunks % 32 !== 0) return
        gc()
        peak = Math.max(peak, process.memoryUsage().heapUsed - baseline)
      }
      const items = yield* Stream.runCollect(readWith({ path: p, schema: Ticket, maxRow: 1024 * 1024, onRead }))
      assert.deepStrictEqual(items.map((i) => [i._tag, i.position]), [["Malformed", 1], ["Malformed", 2], ["Row", 3]])
      assert.include((items[1] as Source.Malformed).reason, "record is 38.1 MiB (40000008 bytes, lines 3–20000003)")
      console.log(`limit 1 MiB: an 80 MB file with a 40 MB line and a 40 MB quoted field read with at most ${(peak / MB).toFixed(1)} MB more live heap`)
      assert.isBelow(peak, 16 * MB)
    }))
})

describe("Csv.source: key", () => {
  it.effect("maxRecordBytes must be a positive integer", () =>
    Effect.gen(function*() {
      for (const max of [0, -1, 1.5, Number.NaN]) {
        const error = yield* read(Csv.source({ path: file("id,priority,body\n"), schema: Ticket, name: "t.csv", maxRecordBytes: max })).pipe(Effect.flip)
        assert.strictEqual(error.message, `t.csv: maxRecordBytes must be a positive integer, got ${max}`)
      }
      const jsonl = yield* read(Jsonl.source({ path: file("{}\n"), schema: Schema.Struct({}), name: "e.jsonl", maxRecordBytes: 0 })).pipe(Effect.flip)
      assert.strictEqual(jsonl.message, "e.jsonl: maxRecordBytes must be a positive integer, got 0")
    }))

  const Keyed = Schema.Struct({ id: Schema.NonEmptyString, priority: Schema.Literals(["low", "high"]), body: Schema.String })

  it.effect("a malformed row carries its key when the key cell can be read, and names it; raw is always there", () =>
    Effect.gen(function*() {
      const bytes = Buffer.concat([
        Buffer.from([
          "id,priority,body", // 1
          "r1,urgent,bad priority", // 2: schema
          "r2,low", // 3: wrong width, key first
          `r3,low,"a "bad" quote"`, // 4: quote error after the key
          ",low,empty key", // 5: no key to read
          `r6,high,"${"x".repeat(300)}"`, // 6: over the limit
          "r7,low,bad "
        ].join("\n")),
        Buffer.from([0xff]), // 7: not UTF-8, in the body
        Buffer.from("\nr"),
        Buffer.from([0xfe]), // 8: not UTF-8, in the key
        Buffer.from(",low,x\nr9,high,fine\n")
      ])
      for (const chunkSize of [3, 4096]) {
        const items = yield* Stream.runCollect(readWith({ path: file(bytes), schema: Keyed, key: "id", maxRow: 200, chunkSize }))
        assert.deepStrictEqual(malformed(items).map((m) => [m.position, m.key]), [
          [1, "r1"],
          [2, "r2"],
          [3, "r3"],
          [4, undefined],
          [5, "r6"],
          [6, "r7"],
          [7, undefined]
        ])
        assert.deepStrictEqual(malformed(items).map((m) => m.reason.split(":")[0]), [
          `t.csv row 1 (line 2, id "r1")`,
          `t.csv row 2 (line 3, id "r2")`,
          `t.csv row 3 (line 4, id "r3")`,
          `t.csv row 4 (line 5)`,
          `t.csv row 5 (line 6, id "r6")`,
          `t.csv row 6 (line 7, id "r7")`,
          `t.csv row 7 (line 8)`
        ])
        for (const m of malformed(items)) assert.isAbove(m.raw?.length ?? 0, 0)
        assert.deepStrictEqual(rows(items).map((r) => r.value.id), ["r9"])
      }
    }))

  it.effect("a row of the wrong width has no key unless the key is the first column; the header must have the key column", () =>
    Effect.gen(function*() {
      const items = yield* Stream.runCollect(
        readWith({ path: file("body,id,priority\nx,y,r1,low\nok,r2,urgent\n"), schema: Keyed, key: "id" })
      )
      assert.deepStrictEqual(malformed(items).map((m) => [m.position, m.key]), [[1, undefined], [2, "r2"]])
      const error = yield* read(Csv.source({ path: file("ident,priority,body\n"), schema: Schema.Struct({ priority: Schema.String }), key: "id", name: "t.csv" })).pipe(Effect.flip)
      assert.strictEqual(error.message, `t.csv: header has no key column "id"`)
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

  it.effect("disposition: replace (the default) leaves a completed run's parts only; append keeps earlier runs' parts", () =>
    Effect.gen(function*() {
      for (const disposition of [undefined, "replace", "append"] as const) {
        const dir = tmpDir()
        const sink = Csv.sink<{ id: string }>({ dir, ...(disposition === undefined ? {} : { disposition }) })
        assert.deepStrictEqual(sink.dispositions, ["replace", "append"])
        const chosen = Sink.dispositionOf(sink)
        assert.strictEqual(chosen, disposition ?? "replace")
        yield* sink.write({ runId: "run-1", seq: 1 }, [{ id: "a" }])
        yield* sink.finish!({ runId: "run-1", disposition: chosen })
        // the same pipeline run again
        yield* sink.write({ runId: "run-2", seq: 1 }, [{ id: "a" }])
        yield* sink.finish!({ runId: "run-2", disposition: chosen })
        const manifest = yield* Effect.promise(() => PartFiles.readManifest(dir))
        const files = fs.readdirSync(dir).filter((f) => f.endsWith(".csv")).sort()
        if (chosen === "replace") {
          assert.deepStrictEqual(manifest.map((e) => e.runId), ["run-2"])
          assert.deepStrictEqual(files, [PartFiles.partFileName({ runId: "run-2", seq: 1 }, "csv")])
        } else {
          assert.deepStrictEqual(manifest.map((e) => e.runId), ["run-1", "run-2"])
          assert.strictEqual(files.length, 2)
        }
      }
    }))
})
