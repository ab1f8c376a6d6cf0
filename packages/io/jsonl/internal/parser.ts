/**
 * The incremental JSON Lines parser behind `Jsonl.source`: splits text on
 * `\n` (a trailing `\r` is dropped), skips blank lines, parses each line with
 * `JSON.parse` and decodes the value with the schema.
 *
 * - One limit for every line: its UTF-8 bytes, line break excluded. A line
 *   over it is malformed, complete or still being read; a pending one is
 *   skipped to its line break without being kept.
 * - Bytes that are not UTF-8 make their line malformed, naming the file
 *   offset; a U+FFFD in the file is a character like any other.
 * - With a `key` field, a malformed line whose JSON parses and holds the key
 *   (a non-empty string or a number) carries it.
 *
 * @internal
 */
import type { Item, Malformed } from "@offpeak/core/Source"
import type { Schema } from "effect"
import { Result } from "effect"
import * as Reason from "../../internal/reason.ts"
import type { Parser as TextParser } from "../../internal/textFile.ts"

/** the default longest line, in UTF-8 bytes */
export const MAX_RECORD_BYTES = 16 * 1024 * 1024

/** @internal */
export interface Options<A> {
  readonly name: string
  readonly decode: (input: unknown) => Result.Result<A, Schema.SchemaError>
  /** the key field: a malformed line whose key can be read carries it */
  readonly key?: string | undefined
  /** the longest line in UTF-8 bytes, {@link MAX_RECORD_BYTES} by default */
  readonly maxRecordBytes?: number | undefined
}

const isBlank = (text: string): boolean => {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c !== 32 && c !== 9 && c !== 13) return false
  }
  return true
}

/** an invalid byte sequence at an absolute UTF-16 offset of the text pushed */
interface Bad {
  readonly abs: number
  readonly offset: number
  readonly bytes: string
}

/** a line over the limit, skipped to its end */
interface Skipped {
  readonly position: number
  readonly line: number
  raw: string
  units: number
  bytes: number
  /** the last character taken is a `\r` */
  cr: boolean
}

/** @internal */
export const make = <A>(options: Options<A>): TextParser<Item<A>> => {
  const { decode, name } = options
  const maxBytes = options.maxRecordBytes ?? MAX_RECORD_BYTES
  const keyField = options.key
  /** the unfinished line */
  let buffer = ""
  /** its UTF-8 bytes, counted once it may be near the limit */
  let bufferBytes: number | undefined
  /** UTF-16 units pushed so far */
  let pushed = 0
  /** the number of the line in `buffer` */
  let line = 1
  let position = 0
  /** a line over the limit is being skipped */
  let skipped: Skipped | undefined

  let bad: Array<Bad> = []
  let badHead = 0

  /** the invalid sequences between absolute offsets `from` and `to`; those before `to` are then forgotten */
  const badIn = (from: number, to: number): ReadonlyArray<Bad> | undefined => {
    if (badHead === bad.length) return undefined
    let found: Array<Bad> | undefined
    while (badHead < bad.length && bad[badHead]!.abs < to) {
      const b = bad[badHead++]!
      if (b.abs >= from) (found ??= []).push(b)
    }
    if (badHead === bad.length) {
      bad = []
      badHead = 0
    }
    return found
  }

  const malformed = (reason: string, raw: string, key?: string): Malformed => ({
    _tag: "Malformed",
    position,
    line,
    reason: `${Reason.where(name, position, line, key === undefined ? undefined : { column: keyField!, value: key })}: ${reason}`,
    raw,
    ...(key === undefined ? {} : { key })
  })

  /** the key of a parsed value: a non-empty string or a finite number, not cut by bad bytes */
  const keyOf = (json: unknown, invalid: boolean): string | undefined => {
    if (keyField === undefined || json === null || typeof json !== "object" || Array.isArray(json)) return undefined
    if (!Object.hasOwn(json, keyField)) return undefined
    const value = (json as Record<string, unknown>)[keyField]
    const key = typeof value === "string" ? value : typeof value === "number" && Number.isFinite(value) ? String(value) : ""
    return key.length === 0 || (invalid && key.includes("\uFFFD")) ? undefined : key
  }

  const tooLong = (size: number) => `line is ${Reason.bytes(size)}, over the limit of ${Reason.bytes(maxBytes)}`

  /** one complete line starting at absolute offset `abs` */
  const handle = (out: Array<Item<A>>, text: string, abs: number) => {
    const invalid = badIn(abs, abs + text.length)
    if (text.charCodeAt(text.length - 1) === 13) text = text.slice(0, -1)
    if (text.length === 0 || isBlank(text)) return
    position++
    if (text.length * 3 > maxBytes) {
      const size = Buffer.byteLength(text)
      if (size > maxBytes) return out.push(malformed(tooLong(size), Reason.truncate(text)))
    }
    let json: unknown
    try {
      json = JSON.parse(text)
    } catch (error) {
      if (invalid !== undefined) return out.push(malformed(notUtf8(invalid), Reason.truncate(text)))
      return out.push(
        malformed(`invalid JSON: ${error instanceof Error ? error.message : String(error)}`, Reason.truncate(text))
      )
    }
    if (invalid !== undefined) return out.push(malformed(notUtf8(invalid), Reason.truncate(text), keyOf(json, true)))
    const decoded = decode(json)
    if (Result.isSuccess(decoded)) out.push({ _tag: "Row", position, line, value: decoded.success })
    else out.push(malformed(Reason.schemaReason(decoded.failure, json), Reason.truncate(text), keyOf(json, false)))
  }

  const notUtf8 = (invalid: ReadonlyArray<Bad>) => `invalid UTF-8: ${Reason.invalidBytes(invalid)} (shown as U+FFFD)`

  const finishSkipped = (s: Skipped): Malformed => {
    skipped = undefined
    const saved = { position, line }
    position = s.position
    line = s.line
    if (s.cr) {
      // a `\r` ending the line is not part of it
      s.units -= 1
      s.bytes -= 1
      if (s.raw.length > s.units) s.raw = s.raw.slice(0, s.units)
    }
    const item = malformed(tooLong(s.bytes), Reason.truncated(s.raw, s.units))
    position = saved.position
    line = saved.line
    return item
  }

  /** takes the text of a skipped line */
  const consume = (s: Skipped, text: string) => {
    if (s.raw.length < Reason.MAX_RAW) s.raw += text.slice(0, Reason.MAX_RAW - s.raw.length)
    s.units += text.length
    s.bytes += Buffer.byteLength(text)
    if (text.length > 0) s.cr = text.charCodeAt(text.length - 1) === 13
  }

  return {
    push: (text, invalid) => {
      const textAbs = pushed
      pushed += text.length
      for (const i of invalid) bad.push({ abs: textAbs + i.at, offset: i.offset, bytes: i.bytes })
      const out: Array<Item<A>> = []
      let start = 0
      if (skipped !== undefined) {
        const s = skipped
        const eol = text.indexOf("\n")
        consume(s, eol === -1 ? text : text.slice(0, eol))
        badIn(-1, textAbs + (eol === -1 ? text.length : eol))
        if (eol === -1) return out
        out.push(finishSkipped(s))
        line++
        start = eol + 1
      }
      let eol = text.indexOf("\n", start)
      if (eol !== -1) {
        // the pending line ends in this chunk
        handle(out, buffer.length === 0 ? text.slice(start, eol) : buffer + text.slice(start, eol), textAbs + start - buffer.length)
        buffer = ""
        bufferBytes = undefined
        line++
        start = eol + 1
        while ((eol = text.indexOf("\n", start)) !== -1) {
          handle(out, text.slice(start, eol), textAbs + start)
          line++
          start = eol + 1
        }
      }
      const tail = start === 0 ? text : text.slice(start)
      buffer = buffer.length === 0 ? tail : buffer + tail
      if (buffer.length * 3 > maxBytes) {
        bufferBytes = bufferBytes === undefined ? Buffer.byteLength(buffer) : bufferBytes + Buffer.byteLength(tail)
        // a `\r` at its end may be the first half of its CRLF, not part of the line
        if (bufferBytes - (buffer.charCodeAt(buffer.length - 1) === 13 ? 1 : 0) > maxBytes) {
          // a pending line over the limit: count the rest of it without keeping it
          position++
          const s: Skipped = { position, line, raw: "", units: 0, bytes: 0, cr: false }
          consume(s, buffer)
          skipped = s
          badIn(-1, pushed)
          buffer = ""
          bufferBytes = undefined
        }
      }
      return out
    },
    end: () => {
      if (skipped !== undefined) return [finishSkipped(skipped)]
      const out: Array<Item<A>> = []
      if (buffer.length > 0) handle(out, buffer, pushed - buffer.length)
      buffer = ""
      return out
    }
  }
}
