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
import { Schema } from "effect"
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
}

/**
 * Streams the values of a JSON Lines file.
 *
 * - Reads 64 KiB at a time, only as fast as the stream is pulled; UTF-8, with
 *   or without BOM, LF or CRLF.
 * - Blank lines are skipped but counted: `line` is the 1-based line number,
 *   `position` the 1-based ordinal among non-blank lines.
 * - A line that is not JSON or whose value fails the schema is `Malformed`,
 *   e.g. `events.jsonl row 3 (line 4): field "user.id": Expected a string, got 17`,
 *   and the stream goes on.
 * - A missing or unreadable file fails with `SourceError`.
 *
 * @example
 * ```ts
 * import { Jsonl } from "@offpeak/sources/jsonl"
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
  const read = TextFile.stream({
    path: options.path,
    name,
    parser: () => Parser.make({ name, decode })
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
}

/**
 * Writes rows as JSON Lines part files (`part-<run>-<seq>.jsonl`) plus
 * `_manifest.json`, atomically; writing a part again replaces it. Each line is
 * `JSON.stringify(row)`; shape rows with the pipeline's `row` option.
 *
 * @example
 * ```ts
 * import { Jsonl } from "@offpeak/sources/jsonl"
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
    format: { extension: "jsonl", encodeRow: (a) => `${JSON.stringify(a) ?? "null"}\n` }
  })
}
