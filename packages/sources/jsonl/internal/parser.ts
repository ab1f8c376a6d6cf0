/**
 * The incremental JSON Lines parser behind `Jsonl.source`: splits text on
 * `\n` (a trailing `\r` is dropped), skips blank lines, parses each line with
 * `JSON.parse` and decodes the value with the schema.
 *
 * A line longer than {@link MAX_LINE} characters is malformed and skipped
 * without being held in memory.
 *
 * @internal
 */
import type { Item } from "@offpeak/core/Source"
import type { Schema } from "effect"
import { Result } from "effect"
import { schemaReason, truncate, where } from "../../internal/reason.ts"
import type { Parser as TextParser } from "../../internal/textFile.ts"

/** longest line, in characters, before it is cut as malformed */
export const MAX_LINE = 16 * 1024 * 1024

/** @internal */
export interface Options<A> {
  readonly name: string
  readonly decode: (input: unknown) => Result.Result<A, Schema.SchemaError>
  readonly maxLine?: number | undefined
}

const isBlank = (text: string): boolean => {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c !== 32 && c !== 9 && c !== 13) return false
  }
  return true
}

/** @internal */
export const make = <A>(options: Options<A>): TextParser<Item<A>> => {
  const { decode, name } = options
  const maxLine = options.maxLine ?? MAX_LINE
  /** the unfinished line */
  let buffer = ""
  /** the number of the line in `buffer` */
  let line = 1
  let position = 0
  /** a line was cut at `maxLine`: drop text up to its end */
  let skipping = false

  const malformed = (out: Array<Item<A>>, reason: string, raw: string) =>
    out.push({ _tag: "Malformed", position, line, reason: `${where(name, position, line)}: ${reason}`, raw: truncate(raw) })

  const handle = (out: Array<Item<A>>, text: string) => {
    if (text.charCodeAt(text.length - 1) === 13) text = text.slice(0, -1)
    if (text.length === 0 || isBlank(text)) return
    position++
    if (suspect && text.includes("\uFFFD")) {
      return malformed(out, "invalid UTF-8 (bytes that are not UTF-8 were replaced by U+FFFD)", text)
    }
    let json: unknown
    try {
      json = JSON.parse(text)
    } catch (error) {
      return malformed(out, `invalid JSON: ${error instanceof Error ? error.message : String(error)}`, text)
    }
    const decoded = decode(json)
    if (Result.isSuccess(decoded)) out.push({ _tag: "Row", position, line, value: decoded.success })
    else malformed(out, schemaReason(decoded.failure, json), text)
  }

  /** the pending text came from bytes that were not all UTF-8 */
  let suspect = false

  return {
    push: (text, invalid = false) => {
      suspect = invalid || (suspect && buffer.length > 0)
      const out: Array<Item<A>> = []
      let start = 0
      if (skipping) {
        const eol = text.indexOf("\n")
        if (eol === -1) return out
        skipping = false
        line++
        start = eol + 1
      }
      let eol = text.indexOf("\n", start)
      if (eol !== -1) {
        // the pending line ends in this chunk
        handle(out, buffer.length === 0 ? text.slice(start, eol) : buffer + text.slice(start, eol))
        buffer = ""
        line++
        start = eol + 1
        while ((eol = text.indexOf("\n", start)) !== -1) {
          handle(out, text.slice(start, eol))
          line++
          start = eol + 1
        }
      }
      buffer = buffer.length === 0 ? text.slice(start) : buffer + text.slice(start)
      if (buffer.length > maxLine) {
        position++
        malformed(out, `line is longer than ${maxLine} characters`, buffer)
        buffer = ""
        skipping = true
      }
      return out
    },
    end: () => {
      const out: Array<Item<A>> = []
      if (!skipping && buffer.length > 0) handle(out, buffer)
      buffer = ""
      return out
    }
  }
}
