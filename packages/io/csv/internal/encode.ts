/**
 * CSV writing for `Csv.sink` (RFC 4180 quoting).
 *
 * @internal
 */

const NEEDS_QUOTES = /[",\r\n]/

/** one cell: quoted when it holds a comma, a quote or a line break */
export const cell = (value: unknown): string => {
  let text: string
  switch (typeof value) {
    case "string":
      text = value
      break
    case "number":
    case "boolean":
    case "bigint":
      return String(value)
    case "undefined":
      return ""
    default:
      if (value === null) return ""
      text = value instanceof Date ? value.toISOString() : JSON.stringify(value) ?? ""
  }
  return NEEDS_QUOTES.test(text) ? `"${text.replaceAll("\"", "\"\"")}"` : text
}

/** one line, newline included */
export const line = (values: ReadonlyArray<unknown>): string => {
  let out = ""
  for (let i = 0; i < values.length; i++) {
    if (i > 0) out += ","
    out += cell(values[i])
  }
  return out + "\n"
}

/** the line of `record`'s values in the order of `columns` */
export const recordLine = (columns: ReadonlyArray<string>, record: Record<string, unknown>): string => {
  let out = ""
  for (let i = 0; i < columns.length; i++) {
    if (i > 0) out += ","
    out += cell(record[columns[i]!])
  }
  return out + "\n"
}
