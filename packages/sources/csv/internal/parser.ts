/**
 * The incremental CSV parser behind `Csv.source`: papaparse's quote-aware
 * low-level `Parser`, fed the unparsed tail plus each new chunk (as its own
 * ChunkStreamer does), with the header, positions, line numbers, malformed
 * rows and schema decoding done here.
 *
 * - Rows are split on `\n` and a trailing `\r` is dropped from the last cell,
 *   so LF, CRLF and mixed files read alike (`\r`-only files are detected).
 * - A row with a quote error (unterminated or malformed quoted field) becomes
 *   `Malformed` and only its first physical line is consumed: parsing resumes
 *   on the next line, so one stray quote cannot swallow the rest of the file.
 * - A pending row longer than {@link MAX_ROW} characters is cut the same way,
 *   which bounds memory on files with an unterminated quote.
 * - Blank lines are skipped (they still count as lines).
 *
 * @internal
 */
import type { Item } from "@offpeak/core/Source"
import { SourceError } from "@offpeak/core/Source"
import type { Schema } from "effect"
import { Result } from "effect"
import Papa from "papaparse"
import type { Columns } from "./columns.ts"
import { schemaReason, truncate, where } from "../../internal/reason.ts"
import type { Parser as TextParser } from "../../internal/textFile.ts"
import { CHUNK_SIZE } from "../../internal/textFile.ts"

/** longest row, in characters, before it is cut as malformed */
export const MAX_ROW = 16 * 1024 * 1024

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
  readonly maxRow?: number | undefined
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

/** @internal */
export const make = <A>(options: Options<A>): TextParser<Item<A>> => {
  const { columns, decode, delimiter, name } = options
  const maxRow = options.maxRow ?? MAX_ROW

  /** unparsed text: the pending row, plus what was read since */
  let buffer = ""
  /** physical line at `buffer[0]` */
  let line = 1
  let position = 0
  let newline: "\n" | "\r" | undefined
  /** do not parse again before the buffer is this long (a huge row is pending) */
  let waitFor = 0
  /** a row was cut at `maxRow` and its first line did not end yet: drop text up to the next newline */
  let skipping = false

  let header: ReadonlyArray<string> | undefined
  /** per header column: the record key, or undefined to leave the column out */
  let keys: Array<string | undefined> = []
  /** per header column: an empty cell leaves the key out */
  let emptyIsAbsent: Array<boolean> = []

  const readHeader = (cells: ReadonlyArray<string>): SourceError | undefined => {
    const fail = (message: string) => new SourceError({ source: name, message: `${name}: ${message}` })
    const seen = new Set<string>()
    const missing = [...columns.required].filter((c) => !cells.includes(c))
    if (missing.length > 0) {
      return fail(`header has no column ${missing.map((c) => JSON.stringify(c)).join(", ")}`)
    }
    keys = []
    emptyIsAbsent = []
    for (const cell of cells) {
      const relevant = columns.known === undefined || columns.known.has(cell)
      if (seen.has(cell)) {
        if (relevant) return fail(`header has column ${JSON.stringify(cell)} twice`)
        keys.push(undefined)
      } else {
        keys.push(cell === "__proto__" ? undefined : cell)
      }
      emptyIsAbsent.push(columns.optional.has(cell))
      seen.add(cell)
    }
    header = cells
    return undefined
  }

  const run = (final: boolean): Array<Item<A>> | SourceError => {
    const out: Array<Item<A>> = []
    const nl = newline ??= buffer.includes("\n") || !buffer.includes("\r") ? "\n" : "\r"
    let failure: SourceError | undefined

    for (;;) {
      /** where the next row starts in `buffer` */
      let rowStart = 0
      /** after a quote error on a multi-line row: where to parse again */
      let resume = -1

      const malformed = (reason: string, end: number) => {
        let text = buffer.slice(rowStart, end)
        if (text.endsWith("\n")) text = text.slice(0, text.endsWith("\r\n") ? -2 : -1)
        else if (nl === "\r" && text.endsWith("\r")) text = text.slice(0, -1)
        out.push({ _tag: "Malformed", position, line, reason: `${where(name, position, line)}: ${reason}`, raw: truncate(text) })
      }

      const step = (results: StepResult) => {
        const end = results.meta.cursor
        const cells = results.data[0]!
        const errors = results.errors
        if (nl === "\n") {
          const last = cells[cells.length - 1]!
          if (last.charCodeAt(last.length - 1) === CR) cells[cells.length - 1] = last.slice(0, -1)
        }
        const lines = countOf(buffer, nl, rowStart, end)
        const blank = cells.length === 1 && cells[0]!.length === 0 && buffer.charCodeAt(rowStart) !== QUOTE
        if (!blank) {
          if (header === undefined) {
            failure = errors.length > 0
              ? new SourceError({ source: name, message: `${name}: header (line ${line}) has a malformed quoted field` })
              : readHeader(cells)
            if (failure !== undefined) return parser.abort()
          } else {
            position++
            if (errors.length > 0) {
              const error = errors[0]!
              const field = error.code === "MissingQuotes"
                ? cells.length - 1
                : fieldIndexAt(buffer, rowStart, error.index - 1, delimiter)
              const label = header[field] !== undefined ? JSON.stringify(header[field]) : `#${field + 1}`
              const what = error.code === "MissingQuotes" ? "unterminated quoted field" : "malformed quoted field"
              const eol = buffer.indexOf(nl, rowStart)
              if (eol !== -1 && eol + 1 < end) {
                // the row spans lines: consume only its first line and parse again from the next one
                malformed(`field ${label}: ${what}`, eol + 1)
                resume = eol + 1
                return parser.abort()
              }
              malformed(`field ${label}: ${what}`, end)
            } else if (cells.length !== header.length) {
              malformed(`expected ${header.length} fields, got ${cells.length}`, end)
            } else if (suspect && cells.some((c) => c.includes("\uFFFD"))) {
              const field = cells.findIndex((c) => c.includes("\uFFFD"))
              const label = header[field] !== undefined ? JSON.stringify(header[field]) : `#${field + 1}`
              malformed(`field ${label}: invalid UTF-8 (bytes that are not UTF-8 were replaced by U+FFFD)`, end)
            } else {
              const record: Record<string, string> = {}
              for (let i = 0; i < cells.length; i++) {
                const key = keys[i]
                if (key === undefined) continue
                const cell = cells[i]!
                if (cell.length === 0 && emptyIsAbsent[i]) continue
                record[key] = cell
              }
              const decoded = decode(record)
              if (Result.isSuccess(decoded)) {
                out.push({ _tag: "Row", position, line, value: decoded.success })
              } else {
                malformed(schemaReason(decoded.failure, record), end)
              }
            }
          }
        }
        line += lines
        rowStart = end
      }

      const parser = new Papa.Parser({ delimiter, newline: nl, step: step as never })
      parser.parse(buffer, 0, !final)
      if (failure !== undefined) return failure
      if (resume !== -1) {
        buffer = buffer.slice(resume)
        line += 1
        continue
      }
      buffer = rowStart === 0 ? buffer : buffer.slice(rowStart)
      if (!final && buffer.length > maxRow) {
        // a pending row too long to be real: cut its first line as malformed
        if (header === undefined) {
          return new SourceError({ source: name, message: `${name}: header is longer than ${maxRow} characters` })
        }
        position++
        rowStart = 0
        const eol = buffer.indexOf(nl)
        const end = eol === -1 ? buffer.length : eol + 1
        malformed(`row is longer than ${maxRow} characters (unterminated quoted field?)`, end)
        buffer = buffer.slice(end)
        if (eol === -1) skipping = true
        else line += 1
        continue
      }
      break
    }
    // a huge row is pending: parse again only once the buffer doubled, which keeps the work linear
    waitFor = buffer.length > CHUNK_SIZE ? buffer.length * 2 : 0
    return out
  }

  /** the pending text came from bytes that were not all UTF-8 */
  let suspect = false

  return {
    push: (text, invalid = false) => {
      suspect = invalid || (suspect && buffer.length > 0)
      if (skipping) {
        const eol = text.indexOf(newline ?? "\n")
        if (eol === -1) return []
        skipping = false
        line += 1
        text = text.slice(eol + 1)
      }
      buffer = buffer.length === 0 ? text : buffer + text
      if (buffer.length < waitFor) return []
      if (newline === undefined) {
        // line ends are known at the first `\n`, or at a `\r` followed by something else
        const cr = buffer.indexOf("\r")
        if (!buffer.includes("\n") && (cr === -1 || cr === buffer.length - 1)) return []
      }
      return run(false)
    },
    end: () => {
      if (buffer.length === 0 || skipping) return []
      return run(true)
    }
  }
}
