/**
 * The incremental CSV parser behind `Csv.source`: papaparse's quote-aware
 * low-level `Parser`, fed the unparsed tail plus each new chunk (as its own
 * ChunkStreamer does), with the header, positions, line numbers, malformed
 * records, the record limit and schema decoding done here.
 *
 * Records (the rule `Csv.source` documents):
 *
 * - A field that starts with `"` is quoted: it holds delimiters, line breaks
 *   and doubled quotes (`""`), and ends at a quote followed (after optional
 *   whitespace) by the delimiter, a line break or the end of the file. A quote
 *   followed by anything else is a quote that should have been doubled: the
 *   record is malformed and the field goes on to its closing quote. A record
 *   therefore always ends where the quoting rules end it, malformed or not;
 *   parsing never restarts inside it, so no text of a field ever becomes a
 *   row. A quoted field never closed takes the rest of the file: one
 *   malformed record, its lines named in the reason.
 * - Rows are split on `\n` and a trailing `\r` is dropped from the last cell,
 *   so LF, CRLF and mixed files read alike (`\r`-only files are detected).
 * - One limit for every record: its UTF-8 bytes, line break excluded, quoted
 *   or not, complete or still being read. A record over it is malformed; a
 *   pending one is then scanned to its end by the same quoting rules without
 *   being kept ({@link scan}), so memory stays about the limit.
 * - Bytes that are not UTF-8 make their record malformed, naming the field
 *   and the file offset; a U+FFFD in the file is a character like any other.
 * - Blank lines are skipped (they still count as lines).
 *
 * @internal
 */
import type { Item, Malformed } from "@offpeak/core/Source"
import { SourceError } from "@offpeak/core/Source"
import type { Schema } from "effect"
import { Result } from "effect"
import Papa from "papaparse"
import type { Columns } from "./columns.ts"
import * as Reason from "../../internal/reason.ts"
import type { Parser as TextParser } from "../../internal/textFile.ts"
import { CHUNK_SIZE } from "../../internal/textFile.ts"

/** the default longest record, in UTF-8 bytes */
export const MAX_RECORD_BYTES = 16 * 1024 * 1024

/** how much of an over-long record is parsed to read its key */
const KEY_PROBE = 64 * 1024

const QUOTE = 34 // "
const CR = 13

interface PapaError {
  readonly code: string
  readonly index: number
}

interface StepResult {
  readonly data: ReadonlyArray<Array<string>>
  readonly errors: ReadonlyArray<PapaError>
  readonly meta: { readonly cursor: number }
}

/** @internal */
export interface Options<A> {
  readonly name: string
  readonly delimiter: string
  readonly columns: Columns
  readonly decode: (input: unknown) => Result.Result<A, Schema.SchemaError>
  /** the key column: a malformed record whose key cell can be read carries it */
  readonly key?: string | undefined
  /** the longest record in UTF-8 bytes, {@link MAX_RECORD_BYTES} by default */
  readonly maxRecordBytes?: number | undefined
}

/**
 * Index of the field that starts at or before `offset` in the row starting at
 * `start`, counting delimiters outside quotes.
 */
const fieldIndexAt = (text: string, start: number, offset: number, delimiter: string): number => {
  let field = 0
  let i = start
  let atFieldStart = true
  while (i < offset) {
    if (atFieldStart && text.charCodeAt(i) === QUOTE) {
      i++
      while (i < offset) {
        if (text.charCodeAt(i) === QUOTE) {
          if (text.charCodeAt(i + 1) === QUOTE) i += 2
          else break
        } else i++
      }
      i++
      atFieldStart = false
    } else if (text.startsWith(delimiter, i)) {
      field++
      i += delimiter.length
      atFieldStart = true
    } else {
      i++
      atFieldStart = false
    }
  }
  return field
}

const countOf = (text: string, char: string, start: number, end: number): number => {
  let n = 0
  let i = text.indexOf(char, start)
  while (i !== -1 && i < end) {
    n++
    i = text.indexOf(char, i + 1)
  }
  return n
}

/** the whitespace `String.prototype.trim` removes (papaparse allows it between a closing quote and what follows) */
const isSpace = (code: number): boolean =>
  code === 32 || (code >= 9 && code <= 13) || (code > 127 && /\s/.test(String.fromCharCode(code)))

/**
 * Where a record scanned in pieces is: inside a quoted field or not, at the
 * start of a field, which field (0-based), and its longest field so far.
 *
 * @internal
 */
export interface ScanState {
  quoted: boolean
  fieldStart: boolean
  field: number
  /** characters of the current field so far (quotes included) */
  length: number
  /** the longest finished field and its length */
  longest: number
  longestLength: number
  /** set when {@link scan} returns -1: the undecided tail of the text starts here and must be scanned again */
  hold: number
}

/** @internal */
export const scanState = (): ScanState => ({
  quoted: false,
  fieldStart: true,
  field: 0,
  length: 0,
  longest: 0,
  longestLength: -1,
  hold: 0
})

/** ends the current field, `length` characters long with what it had so far */
const endField = (state: ScanState, length: number) => {
  const total = state.length + length
  if (total > state.longestLength) {
    state.longest = state.field
    state.longestLength = total
  }
  state.length = 0
}

/**
 * Finds where a record ends without keeping it, by the quoting rules of the
 * module doc (papaparse's): scans `text` from its start in `state` and
 * returns the index just past the line break that ends the record, or -1
 * when the record goes on (then `text.slice(state.hold)`, a few characters
 * that could still be a closing quote or a delimiter, must be scanned again
 * in front of the next text).
 *
 * @internal
 */
export const scan = (state: ScanState, text: string, delimiter: string, newline: string): number => {
  const n = text.length
  let i = 0
  /** where the current field's text starts in `text` */
  let from = 0
  let nextNewline = -2
  let nextDelimiter = -2
  const hold = (at: number) => {
    state.hold = at
    state.length += at - from
    return -1
  }
  for (;;) {
    if (state.quoted) {
      const q = text.indexOf("\"", i)
      if (q === -1) return hold(n)
      let j = q + 1
      if (j < n && text.charCodeAt(j) === QUOTE) {
        i = j + 1 // a doubled quote
        continue
      }
      // a closing quote is followed, after optional whitespace, by the delimiter or a line break
      let closes: "field" | "record" | "no" | undefined
      while (closes === undefined) {
        if (j === n || (n - j < delimiter.length && delimiter.startsWith(text.slice(j)))) {
          return hold(q) // undecided until more text comes
        }
        if (text.startsWith(newline, j)) closes = "record"
        else if (text.startsWith(delimiter, j)) closes = "field"
        else if (isSpace(text.charCodeAt(j))) j++
        else closes = "no"
      }
      if (closes === "record") {
        state.quoted = false
        endField(state, j - from - (newline === "\n" && text.charCodeAt(j - 1) === CR ? 1 : 0))
        return j + newline.length
      }
      if (closes === "field") {
        state.quoted = false
        endField(state, j - from)
        state.field++
        state.fieldStart = true
        i = from = j + delimiter.length
        continue
      }
      i = q + 1 // a quote that should have been doubled: the field goes on
      continue
    }
    if (i >= n) return hold(n)
    if (state.fieldStart) {
      state.fieldStart = false
      if (text.charCodeAt(i) === QUOTE) {
        state.quoted = true
        i++
        continue
      }
    }
    if (nextNewline !== -1 && nextNewline < i) nextNewline = text.indexOf(newline, i)
    if (nextDelimiter !== -1 && nextDelimiter < i) nextDelimiter = text.indexOf(delimiter, i)
    if (nextDelimiter !== -1 && (nextNewline === -1 || nextDelimiter < nextNewline)) {
      endField(state, nextDelimiter - from)
      state.field++
      state.fieldStart = true
      i = from = nextDelimiter + delimiter.length
      continue
    }
    if (nextNewline !== -1) {
      // a `\r` before the `\n` ends the record, it is not field text
      const cr = newline === "\n" && nextNewline > from && text.charCodeAt(nextNewline - 1) === CR ? 1 : 0
      endField(state, nextNewline - from - cr)
      return nextNewline + newline.length
    }
    // no delimiter and no line break: keep a tail that could be the start of a delimiter, or a `\r` before a `\n`
    let keep = newline === "\n" && n > i && text.charCodeAt(n - 1) === CR ? 1 : 0
    for (let k = Math.min(delimiter.length - 1, n - i); k > keep; k--) {
      if (delimiter.startsWith(text.slice(n - k))) {
        keep = k
        break
      }
    }
    return hold(n - keep)
  }
}

/**
 * The longest field of a whole record's text (line break excluded), by the
 * same count as {@link scan}: the field an over-long record is blamed on.
 *
 * @internal
 */
export const longestField = (text: string, delimiter: string, newline: string): number => {
  const state = scanState()
  if (scan(state, text, delimiter, newline) === -1) endField(state, text.length - state.hold)
  return state.longest
}

/** a record over the limit, scanned to its end without being kept */
interface Skipped {
  readonly position: number
  readonly line: number
  readonly state: ScanState
  readonly key: string | undefined
  /** its first characters, for `raw` */
  raw: string
  /** UTF-16 length and UTF-8 bytes of its text so far (line break excluded) */
  units: number
  bytes: number
  /** line breaks inside it so far */
  lines: number
  /** the last character taken is a line break (at the end of the file, not one more line) */
  broken: boolean
  /** the last character taken is a `\r` (the first half of a CRLF split between two pieces) */
  cr: boolean
  /** text to scan again in front of the next piece */
  held: string
}

/** an invalid byte sequence at an absolute UTF-16 offset of the text pushed */
interface Bad {
  readonly abs: number
  readonly offset: number
  readonly bytes: string
}

/** @internal */
export const make = <A>(options: Options<A>): TextParser<Item<A>> => {
  const { columns, decode, delimiter, name } = options
  const maxBytes = options.maxRecordBytes ?? MAX_RECORD_BYTES
  const keyColumn = options.key

  /** unparsed text: the pending row, plus what was read since; always a suffix of the text pushed */
  let buffer = ""
  /** UTF-16 units pushed so far: `buffer` starts at `pushed - buffer.length` */
  let pushed = 0
  /** physical line at `buffer[0]` */
  let line = 1
  let position = 0
  let newline: "\n" | "\r" | undefined
  /** do not parse again before the buffer is this long (a long row is pending) */
  let waitFor = 0
  /** a record over the limit is being scanned to its end */
  let skipped: Skipped | undefined

  /** invalid byte sequences not yet behind a finished record, in order */
  let bad: Array<Bad> = []
  let badHead = 0

  let header: ReadonlyArray<string> | undefined
  /** per header column: the record key, or undefined to leave the column out */
  let keys: Array<string | undefined> = []
  /** per header column: an empty cell leaves the key out */
  let emptyIsAbsent: Array<boolean> = []
  /** the key column's index, -1 without one */
  let keyIndex = -1

  const fail = (message: string) => new SourceError({ source: name, message: `${name}: ${message}` })

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

  const label = (field: number) =>
    header !== undefined && header[field] !== undefined ? JSON.stringify(header[field]) : `#${field + 1}`

  /** the key of a malformed record when its cell can be read: present, not empty, not cut by bad bytes */
  const keyOf = (cells: ReadonlyArray<string>, readable: boolean, invalid: boolean): string | undefined => {
    if (!readable || keyIndex < 0 || keyIndex >= cells.length) return undefined
    const value = cells[keyIndex]!
    return value.length === 0 || (invalid && value.includes("\uFFFD")) ? undefined : value
  }

  const malformed = (position: number, line: number, reason: string, raw: string, key: string | undefined): Malformed => ({
    _tag: "Malformed",
    position,
    line,
    reason: `${Reason.where(name, position, line, key === undefined ? undefined : { column: keyColumn!, value: key })}: ${reason}`,
    raw,
    ...(key === undefined ? {} : { key })
  })

  const readHeader = (cells: ReadonlyArray<string>): SourceError | undefined => {
    const seen = new Set<string>()
    const missing = [...columns.required].filter((c) => !cells.includes(c))
    if (missing.length > 0) {
      return fail(`header has no column ${missing.map((c) => JSON.stringify(c)).join(", ")}`)
    }
    if (keyColumn !== undefined && !cells.includes(keyColumn)) {
      return fail(`header has no key column ${JSON.stringify(keyColumn)}`)
    }
    keys = []
    emptyIsAbsent = []
    for (const cell of cells) {
      const relevant = columns.known === undefined || columns.known.has(cell)
      if (seen.has(cell)) {
        if (relevant || cell === keyColumn) return fail(`header has column ${JSON.stringify(cell)} twice`)
        keys.push(undefined)
      } else {
        keys.push(cell === "__proto__" ? undefined : cell)
      }
      emptyIsAbsent.push(columns.optional.has(cell))
      seen.add(cell)
    }
    keyIndex = keyColumn === undefined ? -1 : cells.indexOf(keyColumn)
    header = cells
    return undefined
  }

  /** the text of `buffer[start, end)` without the line break that ends it */
  const recordText = (start: number, end: number, nl: string): string => {
    let text = buffer.slice(start, end)
    if (text.endsWith("\n")) text = text.slice(0, text.endsWith("\r\n") ? -2 : -1)
    else if (nl === "\r" && text.endsWith("\r")) text = text.slice(0, -1)
    return text
  }

  /** where the text of a record ends in `text` when its line break ends at `end` (a `\r` before `\n` excluded) */
  const bodyEnd = (text: string, end: number, nl: string): number =>
    end - nl.length - (nl === "\n" && end >= 2 && text.charCodeAt(end - 2) === CR ? 1 : 0)

  /** more than `maxBytes` UTF-8 bytes (a UTF-16 unit is 1 to 3 bytes) */
  const overLimit = (text: string): boolean =>
    text.length > maxBytes || (text.length * 3 > maxBytes && Buffer.byteLength(text) > maxBytes)

  /** takes `text[0, stop)` into a skipped record (`body`: the part of it before its line break) */
  const consume = (s: Skipped, text: string, body: number) => {
    if (s.raw.length < Reason.MAX_RAW) s.raw += text.slice(0, Math.min(body, Reason.MAX_RAW - s.raw.length))
    s.units += body
    s.bytes += Buffer.byteLength(body === text.length ? text : text.slice(0, body))
    s.lines += countOf(text, newline!, 0, body)
    if (body > 0) {
      s.broken = text.startsWith(newline!, body - 1)
      s.cr = text.charCodeAt(body - 1) === CR
    }
  }

  /** takes the last text of a skipped record, up to the line break that ends it at `end` */
  const consumeLast = (s: Skipped, text: string, end: number) => {
    const body = bodyEnd(text, end, newline!)
    if (body === 0 && newline === "\n" && s.cr) {
      // the `\r` of its CRLF came with the piece before
      s.units -= 1
      s.bytes -= 1
      if (s.raw.length > s.units) s.raw = s.raw.slice(0, s.units)
    }
    consume(s, text, body)
  }

  /**
   * The reason of a record over the limit, the same whether it was complete
   * when seen or scanned to its end: the longest field, the size, the lines.
   */
  const overReason = (field: number, size: number, first: number, last: number, unterminated: boolean) =>
    `field ${label(field)}: ${unterminated ? "unterminated quoted field: " : ""}record is ${
      Reason.bytes(size, `${Reason.lines(first, last)}${unterminated ? ", to the end of the file" : ""}`)
    }, over the limit of ${Reason.bytes(maxBytes)}`

  /**
   * The key of a record over the limit, from its first characters: the key
   * cell must end within them, before any quote error, and hold no bad byte
   * (`invalid`: the record has some there).
   */
  const overKey = (text: string, nl: "\n" | "\r", invalid: boolean): string | undefined => {
    if (keyIndex < 0) return undefined
    const probe = new Papa.Parser({ delimiter, newline: nl }).parse(text.slice(0, KEY_PROBE), 0, false) as StepResult
    const cells = probe.data[0] ?? []
    const firstError = probe.errors.length === 0
      ? cells.length - 1
      : Math.min(cells.length - 1, fieldIndexAt(text, 0, probe.errors[0]!.index - 1, delimiter))
    return keyOf(cells, keyIndex < firstError, invalid)
  }

  /** `end`: the record ended at the end of the file, not at a line break */
  const finishSkipped = (s: Skipped, end: boolean): Malformed => {
    skipped = undefined
    const last = s.line + s.lines - (end && s.broken ? 1 : 0)
    const unterminated = end && s.state.quoted && s.held !== "\""
    if (end) endField(s.state, s.held.length)
    const reason = overReason(s.state.longest, s.bytes, s.line, last, unterminated)
    return malformed(s.position, s.line, reason, Reason.truncated(s.raw, s.units), s.key)
  }

  /** the pending record (all of `buffer`) is over the limit: its key, then scan it to its end */
  const startSkipping = (nl: "\n" | "\r"): Skipped => {
    position++
    const invalid = bad.length > badHead && bad[badHead]!.abs < pushed - buffer.length + KEY_PROBE
    const state = scanState()
    const s: Skipped = {
      position,
      line,
      state,
      key: overKey(buffer, nl, invalid),
      raw: "",
      units: 0,
      bytes: 0,
      lines: 0,
      broken: false,
      cr: false,
      held: ""
    }
    return s
  }

  const run = (final: boolean): Array<Item<A>> | SourceError => {
    const out: Array<Item<A>> = []
    const nl = newline ??= buffer.includes("\n") || !buffer.includes("\r") ? "\n" : "\r"
    let failure: SourceError | undefined

    for (;;) {
      /** where the next row starts in `buffer` */
      let rowStart = 0
      const base = pushed - buffer.length

      const record = (cells: Array<string>, errors: ReadonlyArray<PapaError>, end: number) => {
        const invalid = badIn(base + rowStart, base + end)
        // the record's length without its line break (a `\r` or two more are fine for the quick test)
        const long = (end - rowStart) * 3 > maxBytes
        let text: string | undefined
        const textOf = () => (text ??= recordText(rowStart, end, nl))
        const put = (reason: string, key: string | undefined) =>
          out.push(malformed(position, line, reason, Reason.truncate(textOf()), key))
        const span = () => Reason.lines(line, line + countOf(textOf(), nl, 0, textOf().length))
        if (long && overLimit(textOf())) {
          const text = textOf()
          const last = line + countOf(text, nl, 0, text.length)
          const unterminated = errors.length > 0 && errors[0]!.code === "MissingQuotes"
          return put(
            overReason(longestField(text, delimiter, nl), Buffer.byteLength(text), line, last, unterminated),
            overKey(text, nl, invalid !== undefined)
          )
        }
        if (invalid !== undefined) {
          const fields = new Set(invalid.map((b) => fieldIndexAt(buffer, rowStart, b.abs - base, delimiter)))
          const first = Math.min(...fields)
          return put(
            `field ${label(first)}: invalid UTF-8: ${Reason.invalidBytes(invalid)} (shown as U+FFFD)`,
            keyOf(cells, errors.length === 0 && !fields.has(keyIndex), true)
          )
        }
        if (errors.length > 0) {
          const error = errors[0]!
          const unterminated = error.code === "MissingQuotes"
          const field = unterminated ? cells.length - 1 : fieldIndexAt(buffer, rowStart, error.index - 1, delimiter)
          const lines = span()
          const spans = lines.startsWith("lines")
            ? unterminated
              ? `: no closing quote before the end of the file, so ${lines} are this one record`
              : `: the field runs to its closing quote, so ${lines} are this one record`
            : ""
          return put(
            `field ${label(field)}: ${unterminated ? "unterminated" : "malformed"} quoted field${
              unterminated ? "" : " (a quote inside it is not doubled)"
            }${spans}`,
            keyOf(cells, keyIndex < field, false)
          )
        }
        if (cells.length !== header!.length) {
          // only the first cell is surely in its column when a delimiter is missing or extra
          return put(`expected ${header!.length} fields, got ${cells.length}`, keyOf(cells, keyIndex === 0, false))
        }
        const values: Record<string, string> = {}
        for (let i = 0; i < cells.length; i++) {
          const key = keys[i]
          if (key === undefined) continue
          const cell = cells[i]!
          if (cell.length === 0 && emptyIsAbsent[i]) continue
          values[key] = cell
        }
        const decoded = decode(values)
        if (Result.isSuccess(decoded)) out.push({ _tag: "Row", position, line, value: decoded.success })
        else put(Reason.schemaReason(decoded.failure, values), keyOf(cells, true, false))
      }

      const step = (results: StepResult) => {
        const end = results.meta.cursor
        const cells = results.data[0]!
        if (nl === "\n") {
          const last = cells[cells.length - 1]!
          if (last.charCodeAt(last.length - 1) === CR) cells[cells.length - 1] = last.slice(0, -1)
        }
        const lines = countOf(buffer, nl, rowStart, end)
        const blank = cells.length === 1 && cells[0]!.length === 0 && buffer.charCodeAt(rowStart) !== QUOTE
        if (!blank) {
          if (header === undefined) {
            const invalid = badIn(base + rowStart, base + end)
            failure = overLimit(recordText(rowStart, end, nl))
              ? fail(`header (line ${line}) is over the limit of ${Reason.bytes(maxBytes)}`)
              : invalid !== undefined
              ? fail(`header (line ${line}) is not UTF-8: ${Reason.invalidBytes(invalid)}`)
              : results.errors.length > 0
              ? fail(`header (line ${line}) has a malformed quoted field`)
              : readHeader(cells)
            if (failure !== undefined) return parser.abort()
          } else {
            position++
            record(cells, results.errors, end)
          }
        }
        line += lines
        rowStart = end
      }

      const parser = new Papa.Parser({ delimiter, newline: nl, step: step as never })
      parser.parse(buffer, 0, !final)
      if (failure !== undefined) return failure
      buffer = rowStart === 0 ? buffer : buffer.slice(rowStart)
      // a `\r` at its end may be the first half of its CRLF, not part of the record
      if (final || !overLimit(nl === "\n" && buffer.endsWith("\r") ? buffer.slice(0, -1) : buffer)) break
      if (header === undefined) return fail(`header (line ${line}) is over the limit of ${Reason.bytes(maxBytes)}`)
      // the pending record is over the limit: scan it to its end without keeping it
      const s = startSkipping(nl)
      const end = scan(s.state, buffer, delimiter, nl)
      if (end === -1) {
        consume(s, buffer, s.state.hold)
        s.held = buffer.slice(s.state.hold)
        skipped = s
        buffer = ""
        break
      }
      consumeLast(s, buffer, end)
      out.push(finishSkipped(s, false))
      line = s.line + s.lines + 1
      buffer = buffer.slice(end)
    }
    // a long row is pending: parse again only once the buffer doubled (which keeps the work linear) or passed the limit
    waitFor = buffer.length > CHUNK_SIZE ? Math.min(buffer.length * 2, maxBytes + 1) : 0
    return out
  }

  /** forgets the invalid sequences before absolute offset `abs` (they were in a skipped record) */
  const dropBad = (abs: number) => {
    badIn(-1, abs)
  }

  return {
    push: (text, invalid) => {
      const start = pushed
      pushed += text.length
      for (const i of invalid) bad.push({ abs: start + i.at, offset: i.offset, bytes: i.bytes })
      const out: Array<Item<A>> = []
      if (skipped !== undefined) {
        const s = skipped
        const piece = s.held.length === 0 ? text : s.held + text
        const end = scan(s.state, piece, delimiter, newline!)
        if (end === -1) {
          consume(s, piece, s.state.hold)
          s.held = piece.slice(s.state.hold)
          dropBad(pushed - s.held.length)
          return out
        }
        consumeLast(s, piece, end)
        out.push(finishSkipped(s, false))
        line = s.line + s.lines + 1
        text = piece.slice(end)
        dropBad(pushed - text.length)
      }
      buffer = buffer.length === 0 ? text : buffer + text
      if (buffer.length < waitFor) return out
      if (newline === undefined) {
        // line ends are known at the first `\n`, or at a `\r` followed by something else
        const cr = buffer.indexOf("\r")
        if (!buffer.includes("\n") && (cr === -1 || cr === buffer.length - 1)) {
          return overLimit(buffer) ? fail(`header (line 1) is over the limit of ${Reason.bytes(maxBytes)}`) : out
        }
      }
      const more = run(false)
      if (more instanceof SourceError) return more
      return out.length === 0 ? more : [...out, ...more]
    },
    end: () => {
      if (skipped !== undefined) {
        const s = skipped
        consume(s, s.held, s.held.length)
        return [finishSkipped(s, true)]
      }
      if (buffer.length === 0) return []
      return run(true)
    }
  }
}
