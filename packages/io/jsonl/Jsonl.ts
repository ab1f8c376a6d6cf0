/**
 * JSON Lines files as a source and as a sink.
 *
 * `source` streams a file holding one JSON value per line into typed rows,
 * decoded by a `Schema`; lines that are not JSON or fail the schema come out
 * as `Malformed` with a reason naming the file, the line and the field.
 * `sink` writes part files of one JSON value per line.
 *
 * @since 0.1.0
 */
import * as PartFiles from "@offpeak/core/PartFiles"
import type * as Sink from "@offpeak/core/Sink"
import type * as Source from "@offpeak/core/Source"
import { SourceError } from "@offpeak/core/Source"
import { Schema, Stream } from "effect"
import * as Reason from "../internal/reason.ts"
import * as TextFile from "../internal/textFile.ts"
import * as Parser from "./internal/parser.ts"

/**
 * Options of {@link source}.
 *
 * @since 0.1.0
 * @category models
 */
export interface SourceOptions<S extends Schema.Top> {
  /** the file to read */
  readonly path: string
  /** the schema of one line's JSON value, decoded as it is (no string coercion) */
  readonly schema: S
  /** the name used in messages, the path by default */
  readonly name?: string | undefined
  /**
   * The key field (the one the pipeline's `key` reads, at the top level of
   * each value): a malformed line whose JSON parses and holds it (a non-empty
   * string, or a number as its text) carries it (`Malformed.key`, the dead
   * letter is filed under it) and names it in its reason.
   */
  readonly key?: string | undefined
  /** the longest line, in UTF-8 bytes (line break excluded), 16 MiB by default; a longer one is malformed */
  readonly maxRecordBytes?: number | undefined
}

/**
 * Streams the values of a JSON Lines file.
 *
 * - Reads 64 KiB at a time, only as fast as the stream is pulled; UTF-8, with
 *   or without BOM, LF or CRLF.
 * - Blank lines are skipped but counted: `line` is the 1-based line number,
 *   `position` the 1-based ordinal among non-blank lines.
 * - A line that is not JSON, whose value fails the schema, with bytes that
 *   are not UTF-8 (named with their file offset) or over the line limit
 *   (`maxRecordBytes`, 16 MiB, counted in UTF-8 bytes, read to its end
 *   without being kept) is `Malformed`, e.g.
 *   `events.jsonl row 3 (line 4): field "user.id": Expected a string, got 17`,
 *   with its text as `raw` (the first 1,000 characters of a longer one, and
 *   how many more there were), and the stream goes on. With `key`:
 *   `events.jsonl row 3 (line 4, id "e3"): …`.
 * - A character split across two reads is put together; a U+FFFD written in
 *   the file is a character like any other.
 * - A missing or unreadable file fails with `SourceError`.
 *
 * @example
 * ```ts
 * import { Jsonl } from "@offpeak/io/jsonl"
 * import { Schema, Stream } from "effect"
 *
 * const Event = Schema.Struct({ id: Schema.String, score: Schema.Finite })
 * const events = Jsonl.source({ path: "events.jsonl", schema: Event })
 * const count = events.read.pipe(Stream.runCount)
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const source = <S extends Schema.Top & { readonly DecodingServices: never }>(
  options: SourceOptions<S>
): Source.Source<S["Type"]> => {
  const name = options.name ?? options.path
  const decode = Reason.decoder(options.schema)
  const max = options.maxRecordBytes
  const read = max !== undefined && !(Number.isSafeInteger(max) && max > 0)
    ? Stream.fail(new SourceError({ source: name, message: `${name}: maxRecordBytes must be a positive integer, got ${max}` }))
    : TextFile.stream({
      path: options.path,
      name,
      parser: () => Parser.make({ name, decode, key: options.key, maxRecordBytes: max })
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
 * Writes rows as JSON Lines part files (`part-<run>-<seq>.jsonl`) plus
 * `_manifest.json`, atomically; writing a part again replaces it. Each line is
 * `JSON.stringify(row)`; shape rows with the pipeline's `row` option. When a
 * run completes, the parts of other runs are removed (`disposition:
 * "replace"`, the default) or kept (`"append"`).
 *
 * @example
 * ```ts
 * import { Jsonl } from "@offpeak/io/jsonl"
 *
 * const sink = Jsonl.sink<{ id: string; label: string }>({ dir: "out/labels" })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const sink = <A = unknown>(options: SinkOptions): Sink.Sink<A> => {
  return PartFiles.make<A>({
    dir: options.dir,
    name: options.name,
    disposition: options.disposition,
    format: { extension: "jsonl", encodeRow: (a) => `${JSON.stringify(a) ?? "null"}\n` }
  })
}
