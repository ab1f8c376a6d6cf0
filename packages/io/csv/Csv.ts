/**
 * CSV files as a source and as a sink.
 *
 * `source` streams a CSV file with a header row into typed rows: cells are
 * decoded by a `Schema` from their text, rows that cannot be read or decoded
 * come out as `Malformed` with a reason naming the file, the row and the field.
 * `sink` writes part files with a header line, quoted per RFC 4180.
 *
 * @since 0.1.0
 */
import * as PartFiles from "@offpeak/core/PartFiles"
import type * as Sink from "@offpeak/core/Sink"
import type * as Source from "@offpeak/core/Source"
import { SourceError } from "@offpeak/core/Source"
import { Effect, Schema, Stream } from "effect"
import * as Columns from "./internal/columns.ts"
import * as Encode from "./internal/encode.ts"
import * as Parser from "./internal/parser.ts"
import * as Reason from "../internal/reason.ts"
import * as TextFile from "../internal/textFile.ts"

/**
 * Options of {@link source}.
 *
 * @since 0.1.0
 * @category models
 */
export interface SourceOptions<S extends Schema.Top> {
  /** the file to read */
  readonly path: string
  /** the schema of one row; cells are decoded from text, so `Schema.Finite` reads `"2.5"` */
  readonly schema: S
  /** the field delimiter, `,` by default (any non-empty text without quotes or line breaks) */
  readonly delimiter?: string | undefined
  /** the name used in messages, the path by default */
  readonly name?: string | undefined
  /**
   * The key column (the one the pipeline's `key` reads): a malformed row whose
   * key cell can be read carries it (`Malformed.key`, the dead letter is filed
   * under it) and names it in its reason. The header must have it.
   */
  readonly key?: string | undefined
  /** the longest record, in UTF-8 bytes (line break excluded), 16 MiB by default; a longer one is malformed */
  readonly maxRecordBytes?: number | undefined
}

/**
 * Streams the rows of a CSV file whose first row is the header.
 *
 * - Reads 64 KiB at a time, only as fast as the stream is pulled; UTF-8, with
 *   or without BOM, LF or CRLF; quoted fields may hold delimiters, escaped
 *   quotes (`""`) and line breaks.
 * - Each data row is a `Row` with its 1-based `position` (header excluded) and
 *   the `line` where it starts. Cells are decoded through
 *   `Schema.toCodecStringTree(schema)`; columns the schema does not name are
 *   passed on (a plain struct ignores them); an empty cell of an optional key
 *   leaves the key out.
 * - A row of the wrong width, with a bad quoted field, with bytes that are
 *   not UTF-8, over the record limit, or whose cells fail the schema is
 *   `Malformed`, e.g.
 *   `tickets.csv row 17 (line 19): field "priority": Expected "low" | "high", got "urgent"`,
 *   with its text as `raw` (the first 1,000 characters of a longer one, and
 *   how many more there were), and the stream goes on. Blank lines are skipped.
 * - With `key`, a malformed row carries its key when the key cell can be read:
 *   the cell is there, not empty, and no quote error or bad byte comes before
 *   or in it (a row of the wrong width: only when the key is the first column,
 *   the one cell a missing or extra delimiter cannot shift). The reason then
 *   reads `tickets.csv row 17 (line 19, id "T-0017"): …`. A record over the
 *   limit carries its key when the key cell ends in its first 64 KiB.
 *
 * Broken quotes: a field that starts with `"` is quoted and ends at a quote
 * followed (after optional whitespace) by the delimiter, a line break or the
 * end of the file; `""` inside it is one quote. A quote followed by anything
 * else should have been doubled: its row is malformed, and its field still
 * runs to its closing quote, however many lines later. The parser cannot
 * know where the writer meant the field to end, so it never guesses: text
 * inside a field never becomes a row. What is lost is that one record —
 * whole in the dead letter, its lines named in the reason (`the field runs
 * to its closing quote, so lines 7–9 are this one record`), which may hold
 * lines that were meant as rows of their own; a quoted field never closed
 * takes the rest of the file. Fix the quote and run again.
 *
 * The record limit (`maxRecordBytes`, 16 MiB) is the same for every record:
 * its UTF-8 bytes from its first byte to its line break, quoted or not. A
 * record over it is malformed, whole: a pending one is read on to its end by
 * the same quoting rules without being kept, so memory stays about the limit.
 *
 * Encoding: UTF-8, with or without BOM. A character split across two reads is
 * put together; bytes that are not UTF-8 make their row malformed, naming the
 * field and the bytes' file offset. A U+FFFD written in the file is a
 * character like any other.
 *
 * A missing or unreadable file, a header without a column the schema
 * requires (or without the `key` column), or a header over the limit, not
 * UTF-8 or with a broken quote fails with `SourceError`. An empty file is an
 * empty stream.
 *
 * @example
 * ```ts
 * import { Csv } from "@offpeak/io/csv"
 * import { Schema, Stream } from "effect"
 *
 * const Ticket = Schema.Struct({ id: Schema.String, priority: Schema.Literals(["low", "high"]), age: Schema.Int })
 * const tickets = Csv.source({ path: "tickets.csv", schema: Ticket, key: "id" })
 * const rows = tickets.read.pipe(Stream.filter((item) => item._tag === "Row"), Stream.runCollect)
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const source = <S extends Schema.Top & { readonly DecodingServices: never }>(
  options: SourceOptions<S>
): Source.Source<S["Type"]> => {
  const name = options.name ?? options.path
  const delimiter = options.delimiter ?? ","
  const columns = Columns.fromSchema(options.schema)
  const decode = Reason.decoder(Schema.toCodecStringTree(options.schema))
  const max = options.maxRecordBytes
  const read = delimiter.length === 0 || /["\r\n]/.test(delimiter)
    ? Stream.fail(new SourceError({ source: name, message: `${name}: invalid delimiter ${JSON.stringify(delimiter)}` }))
    : max !== undefined && !(Number.isSafeInteger(max) && max > 0)
    ? Stream.fail(new SourceError({ source: name, message: `${name}: maxRecordBytes must be a positive integer, got ${max}` }))
    : TextFile.stream({
      path: options.path,
      name,
      parser: () =>
        Parser.make({ name, delimiter, columns, decode, key: options.key, maxRecordBytes: options.maxRecordBytes })
    })
  return { name, schema: options.schema as unknown as Schema.Codec<S["Type"], any>, read }
}

/**
 * Options of {@link sink}.
 *
 * @since 0.1.0
 * @category models
 */
export interface SinkOptions {
  /** the folder of the part files and `_manifest.json` */
  readonly dir: string
  /** the columns, in order; by default the keys of the first row written */
  readonly columns?: ReadonlyArray<string> | undefined
  /** the name used in messages, the folder by default */
  readonly name?: string | undefined
  /**
   * What a new run does to earlier runs' part files: `replace` (default) —
   * once the run completes the folder holds its parts only, so running an
   * unchanged pipeline again does not duplicate rows — or `append`: earlier
   * parts stay (an incremental pipeline adding new rows). A resumed run
   * always continues its own parts.
   */
  readonly disposition?: "replace" | "append" | undefined
}

/**
 * Writes rows as CSV part files (`part-<run>-<seq>.csv`, each with a header
 * line) plus `_manifest.json`, atomically; writing a part again replaces it.
 * When a run completes, the parts of other runs are removed (`disposition:
 * "replace"`, the default) or kept (`"append"`).
 *
 * Strings are written as they are, numbers and booleans plainly, `null` and
 * `undefined` as an empty cell, dates as ISO 8601, anything else as JSON; a
 * cell holding a comma, a quote or a line break is quoted. Without `columns`,
 * the keys of the first row the sink sees are the columns of every part.
 *
 * @example
 * ```ts
 * import { Csv } from "@offpeak/io/csv"
 *
 * const sink = Csv.sink<{ id: string; label: string; score: number }>({
 *   dir: "out/labels",
 *   columns: ["id", "label", "score"]
 * })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const sink = <A = unknown>(options: SinkOptions): Sink.Sink<A> => {
  const toRecord = (a: A) => a as unknown as Record<string, unknown>
  let columns: ReadonlyArray<string> | undefined = options.columns
  let header: string | undefined = columns === undefined ? undefined : Encode.line(columns)
  const files = PartFiles.make<A>({
    dir: options.dir,
    name: options.name,
    disposition: options.disposition,
    format: {
      extension: "csv",
      // read at each write: columns are fixed by the first non-empty part
      get header() {
        return header
      },
      encodeRow: (a) => Encode.recordLine(columns!, toRecord(a))
    }
  })
  return {
    ...files,
    write: (part, rows) =>
      Effect.suspend(() => {
        if (columns === undefined && rows.length > 0) {
          columns = Object.keys(toRecord(rows[0]!))
          header = Encode.line(columns)
        }
        return files.write(part, rows)
      })
  }
}
