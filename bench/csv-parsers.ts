/**
 * CSV parsers on the benchmark's CSV: offpeak's papaparse wrapper (`Csv.source`) against csv-parse 7, in one
 * process, each run `--repeat` times (default 3, interleaved; medians reported).
 *
 *   node bench/csv-parsers.ts [--rows 100000] [--repeat 3]
 *
 * The input is bench/run.ts's: `writeTickets` (id,text; every 17th text quoted with a comma, every 29th quoted over
 * two lines), generated into bench/.data. Every side reads the file 64 KiB at a time and ends with the same items
 * (`Source.Item`: position, start line, the row decoded by the same schema), so the figures compare what a switch
 * would change:
 *
 * - `papaparse wrapper`: `Csv.source(…).read` run to the end.
 * - `csv-parse 7 (core)`: csv-parse's parser fed the same chunks through the core API its Transform calls per chunk
 *   (`Parser#api.parse`; no stream plumbing), with the header, positions, start lines and decoding done as in
 *   offpeak.
 * - `csv-parse 7 (stream)`: the same through its public stream API (`fs.createReadStream` piped into `parse()`).
 *
 * Prints rows/s and MB/s of each side (medians), whether every side produced identical items, then what each does
 * with a broken quote and with a record over the size limit (`max_record_size`, `skip_records_with_error`), since
 * those decide whether rows are lost or invented. Nothing is asserted: it prints figures.
 */
import * as Source from "@offpeak/core/Source"
import { Csv } from "@offpeak/io/csv"
import { Parser as CsvParse, parse as csvParse } from "csv-parse"
import { Effect, Result, Schema, Stream } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { isDeepStrictEqual, parseArgs } from "node:util"
import * as Reason from "../packages/io/internal/reason.ts"
import { repo, writeTickets } from "../test/support/files.ts"

const { values } = parseArgs({
  options: {
    rows: { type: "string", default: "100000" },
    repeat: { type: "string", default: "3" }
  }
})
const rows = Number(values.rows)
const repeat = Number(values.repeat)
if (!Number.isInteger(rows) || rows < 1 || !Number.isInteger(repeat) || repeat < 1) {
  throw new Error("--rows and --repeat must be positive integers")
}

const CHUNK = 64 * 1024
const Ticket = Schema.Struct({ id: Schema.String, text: Schema.String })
type Ticket = typeof Ticket.Type
type Item = Source.Item<Ticket>

const dataDir = path.join(repo, "bench/.data")
fs.mkdirSync(dataDir, { recursive: true })
const input = path.join(dataDir, `csv-parsers-${rows}.csv`)
if (!fs.existsSync(input)) writeTickets(input, rows)
const bytes = fs.statSync(input).size

// ===== the sides =====

const papaparse = (file: string): Promise<ReadonlyArray<Item>> =>
  Effect.runPromise(Stream.runCollect(Csv.source({ path: file, schema: Ticket, name: "tickets.csv" }).read))

/** csv-parse's core parser, as its Transform drives it: `parse(chunk, end, push, close)` */
interface CsvParseApi {
  readonly parse: (
    chunk: Buffer | undefined,
    end: boolean,
    push: (record: { readonly record: Array<string>; readonly info: { readonly lines: number } }) => void,
    close: () => void
  ) => Error | undefined
}

const OPTIONS = { bom: true, skip_empty_lines: true, info: true } as const

/** turns csv-parse records (cells, and the line where each ends) into offpeak's items, as `Csv.source` does */
const itemsOf = () => {
  const decode = Reason.decoder(Schema.toCodecStringTree(Ticket))
  const out: Array<Item> = []
  let header: ReadonlyArray<string> | undefined
  let position = 0
  const push = (record: { readonly record: Array<string>; readonly info: { readonly lines: number } }) => {
    const cells = record.record
    if (header === undefined) {
      header = cells
      return
    }
    position++
    // csv-parse gives the line where a record ends: its start is that minus the line breaks inside its cells
    let inner = 0
    for (const cell of cells) for (let i = cell.indexOf("\n"); i !== -1; i = cell.indexOf("\n", i + 1)) inner++
    const line = record.info.lines - inner
    if (cells.length !== header.length) {
      out.push({ _tag: "Malformed", position, line, reason: `expected ${header.length} fields, got ${cells.length}` })
      return
    }
    const values: Record<string, string> = {}
    for (let i = 0; i < cells.length; i++) values[header[i]!] = cells[i]!
    const decoded = decode(values)
    out.push(
      Result.isSuccess(decoded)
        ? { _tag: "Row", position, line, value: decoded.success }
        : { _tag: "Malformed", position, line, reason: Reason.schemaReason(decoded.failure, values) }
    )
  }
  return { out, push }
}

const csvParseCore = (file: string): ReadonlyArray<Item> => {
  const { out, push } = itemsOf()
  const api = (new CsvParse(OPTIONS) as unknown as { readonly api: CsvParseApi }).api
  const fd = fs.openSync(file, "r")
  try {
    const buffer = Buffer.allocUnsafe(CHUNK)
    for (;;) {
      const n = fs.readSync(fd, buffer, 0, CHUNK, null)
      // csv-parse keeps the unparsed tail of a chunk: hand it a copy it may hold on to
      const error = n === 0
        ? api.parse(undefined, true, push, () => {})
        : api.parse(Buffer.from(buffer.subarray(0, n)), false, push, () => {})
      if (error !== undefined) throw error
      if (n === 0) break
    }
  } finally {
    fs.closeSync(fd)
  }
  return out
}

const csvParseStream = async (file: string): Promise<ReadonlyArray<Item>> => {
  const { out, push } = itemsOf()
  const records = fs.createReadStream(file, { highWaterMark: CHUNK }).pipe(csvParse(OPTIONS))
  for await (const record of records) push(record)
  return out
}

const sides: ReadonlyArray<readonly [string, (file: string) => ReadonlyArray<Item> | Promise<ReadonlyArray<Item>>]> = [
  ["papaparse wrapper (Csv.source)", papaparse],
  ["csv-parse 7 (core, same chunks)", csvParseCore],
  ["csv-parse 7 (stream API)", csvParseStream]
]

// ===== throughput =====

const median = (xs: ReadonlyArray<number>) => {
  const sorted = [...xs].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)]!
}

process.stderr.write(`input: ${input} (${rows} rows, ${(bytes / 1e6).toFixed(1)} MB)\n`)
const seconds = sides.map(() => [] as Array<number>)
const results: Array<ReadonlyArray<Item>> = []
for (let round = 0; round < repeat; round++) {
  for (let s = 0; s < sides.length; s++) {
    const started = performance.now()
    const items = await sides[s]![1](input)
    seconds[s]!.push((performance.now() - started) / 1000)
    results[s] = items
    process.stderr.write(`round ${round + 1}: ${sides[s]![0]}: ${seconds[s]!.at(-1)!.toFixed(3)} s\n`)
  }
}

const reference = results[0]!
const same = results.map((items) => items.length === reference.length && items.every((item, i) => isDeepStrictEqual(item, reference[i])))
const readRows = reference.filter((i) => i._tag === "Row").length

console.log(`\nCSV parsers: ${rows} rows, ${(bytes / 1e6).toFixed(1)} MB (${input.slice(repo.length + 1)}), median of ${repeat}\n`)
console.log("| parser | s | rows/s | MB/s | items identical to papaparse's |")
console.log("|---|---:|---:|---:|---|")
sides.forEach(([name], s) => {
  const t = median(seconds[s]!)
  console.log(`| ${name} | ${t.toFixed(3)} | ${Math.round(readRows / t).toLocaleString("en-US")} | ${(bytes / 1e6 / t).toFixed(1)} | ${
    s === 0 ? `(reference: ${reference.length} items, ${readRows} rows)` : same[s] ? "yes" : "NO"
  } |`)
})

// ===== bad input: what each does with a broken quote and an over-long record =====

const show = (items: ReadonlyArray<Item>) =>
  items.map((i) => i._tag === "Row" ? `row ${i.value.id}` : `malformed (line ${i.line})`).join(", ") || "nothing"

const badDir = fs.mkdtempSync(path.join(dataDir, "bad-"))
const brokenQuote = path.join(badDir, "broken-quote.csv")
// r2's field has a quote that is not doubled; the field closes on line 5: lines 3–5 are one record
fs.writeFileSync(brokenQuote, `id,text\nr1,ok\nr2,"he said "stop" and left\nr3,inside the field\nr4,inside too"\nr5,after\n`)
const overLong = path.join(badDir, "over-long.csv")
fs.writeFileSync(overLong, `id,text\nr1,ok\nr2,${"x".repeat(300)}\nr3,after\nr4,after too\n`)

const skipped: Array<string> = []
const csvParseSkipping = (file: string, extra: Record<string, unknown>) => {
  const { out, push } = itemsOf()
  const api = (new CsvParse({
    ...OPTIONS,
    skip_records_with_error: true,
    on_skip: (error: { readonly code?: string } | undefined) => {
      skipped.push(error?.code ?? "error")
      return undefined
    },
    ...extra
  }) as unknown as { readonly api: CsvParseApi }).api
  const content = fs.readFileSync(file)
  for (let i = 0; i < content.length; i += 16) api.parse(content.subarray(i, i + 16), false, push, () => {})
  api.parse(undefined, true, push, () => {})
  return out
}
const limited = (file: string) =>
  Effect.runPromise(Stream.runCollect(Csv.source({ path: file, schema: Ticket, maxRecordBytes: 200 }).read))

try {
  console.log("\nBad input (the file read 16 bytes at a time by csv-parse, as its stream would be fed):\n")
  console.log("| input | papaparse wrapper | csv-parse 7 (`skip_records_with_error`) |")
  console.log("|---|---|---|")
  console.log(`| broken quote in a multi-line field (r1, one record r2–r4, r5) | ${show(await papaparse(brokenQuote))} | ${
    show(csvParseSkipping(brokenQuote, {}))
  } (on_skip ${skipped.splice(0).join(", ")}) |`)
  console.log(`| r2 over a 200-byte limit (\`maxRecordBytes\` / \`max_record_size\`), then r3, r4 | ${show(await limited(overLong))} | ${
    show(csvParseSkipping(overLong, { max_record_size: 200 }))
  } (on_skip ×${skipped.splice(0).length}) |`)
} finally {
  fs.rmSync(badDir, { recursive: true, force: true })
}
