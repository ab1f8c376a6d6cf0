/**
 * Text tables for the terminal: columns as wide as their widest cell (whatever the ids' length), numbers aligned to
 * the right, the last column left ragged so nothing trails.
 *
 * @internal
 */

/** a column: its header, and whether its cells align right (numbers) */
export interface Column {
  readonly header: string
  readonly align?: "left" | "right" | undefined
}

/** the table's lines, the header first; `indent` before each */
export const render = (columns: ReadonlyArray<Column>, rows: ReadonlyArray<ReadonlyArray<string>>, indent = ""): Array<string> => {
  const widths = columns.map((c, i) => Math.max(c.header.length, ...rows.map((r) => (r[i] ?? "").length)))
  const line = (cells: ReadonlyArray<string>) =>
    indent + cells.map((cell, i) => {
      const last = i === cells.length - 1
      const column = columns[i]!
      if (column.align === "right") return cell.padStart(widths[i]!)
      return last ? cell : cell.padEnd(widths[i]!)
    }).join("  ").trimEnd()
  return [line(columns.map((c) => c.header)), ...rows.map(line)]
}

/** `2025-01-02 13:04:05` in local time (or the text as it was, when it is not a time) */
export const dateTime = (iso: string | null | undefined): string => {
  if (iso === null || iso === undefined) return "-"
  const d = new Date(iso)
  if (Number.isNaN(d.getTime())) return iso
  const p = (n: number) => String(n).padStart(2, "0")
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`
}

/** a time of the same day as `reference` as `13:04:05`, else in full */
export const timeNear = (iso: string | null | undefined, reference: string | null | undefined): string => {
  const full = dateTime(iso)
  const ref = dateTime(reference)
  return full.length === 19 && ref.slice(0, 10) === full.slice(0, 10) ? full.slice(11) : full
}
