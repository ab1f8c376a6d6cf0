/**
 * BigQuery types in the emulator: table schemas (`{ name, type, mode, fields }`)
 * and their DuckDB column types, the REST encoding of rows (`{ f: [{ v }] }`,
 * RECORD as nested `{ f }`, REPEATED as `[{ v }]`, every scalar a string,
 * TIMESTAMP as int64 microseconds), the values a load or `insertAll` accepts
 * for each type (with BigQuery's error texts), and query parameters.
 *
 * @internal
 */
import type * as Duck from "@duckdb/node-api"

// ===== schemas =====

/** a field of a table schema, as the REST API writes it */
export interface Field {
  readonly name: string
  readonly type: string
  readonly mode?: "NULLABLE" | "REQUIRED" | "REPEATED" | undefined
  readonly fields?: ReadonlyArray<Field> | undefined
  readonly description?: string | undefined
}

/** the REST API's type names (legacy spellings, as responses use them) */
const TYPE_NAMES: Record<string, string> = {
  INT64: "INTEGER",
  INTEGER: "INTEGER",
  FLOAT64: "FLOAT",
  FLOAT: "FLOAT",
  BOOL: "BOOLEAN",
  BOOLEAN: "BOOLEAN",
  STRING: "STRING",
  BYTES: "BYTES",
  NUMERIC: "NUMERIC",
  DECIMAL: "NUMERIC",
  BIGNUMERIC: "BIGNUMERIC",
  BIGDECIMAL: "BIGNUMERIC",
  TIMESTAMP: "TIMESTAMP",
  DATE: "DATE",
  DATETIME: "DATETIME",
  TIME: "TIME",
  JSON: "JSON",
  RECORD: "RECORD",
  STRUCT: "RECORD"
}

const DUCK_TYPES: Record<string, string> = {
  INTEGER: "BIGINT",
  FLOAT: "DOUBLE",
  BOOLEAN: "BOOLEAN",
  STRING: "VARCHAR",
  BYTES: "BLOB",
  NUMERIC: "DECIMAL(38,9)",
  BIGNUMERIC: "DECIMAL(38,9)",
  TIMESTAMP: "TIMESTAMPTZ",
  DATE: "DATE",
  DATETIME: "TIMESTAMP",
  TIME: "TIME",
  JSON: "JSON"
}

const isObject = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)

/** BigQuery's column name rule: letters, digits, underscores, starting with a letter or underscore, at most 300 characters */
export const columnNameProblem = (name: string): string | undefined =>
  /^[A-Za-z_][A-Za-z0-9_]{0,299}$/.test(name) ? undefined : `Invalid field name "${name}". Fields must contain only letters, numbers, and underscores, start with a letter or underscore, and be at most 300 characters long.`

/** a schema from a request (`schema.fields`), checked and normalized; a string says what is wrong */
export const normalizeSchema = (fields: unknown, path = ""): ReadonlyArray<Field> | string => {
  if (!Array.isArray(fields)) return `${path === "" ? "schema.fields" : path}: expected an array of fields`
  const out: Array<Field> = []
  const seen = new Set<string>()
  for (const f of fields as Array<unknown>) {
    if (!isObject(f) || typeof f.name !== "string") return `${path}: every field needs a name`
    const where = path === "" ? f.name : `${path}.${f.name}`
    const problem = columnNameProblem(f.name)
    if (problem !== undefined) return problem
    if (seen.has(f.name.toLowerCase())) return `Duplicate column names in the schema: ${where}`
    seen.add(f.name.toLowerCase())
    const type = TYPE_NAMES[String(f.type ?? "").toUpperCase()]
    if (type === undefined) {
      return `${where}: the type ${JSON.stringify(f.type)} is not supported by the emulator (supported: ${Object.keys(TYPE_NAMES).join(", ")})`
    }
    const mode = f.mode === undefined || f.mode === null ? "NULLABLE" : String(f.mode).toUpperCase()
    if (mode !== "NULLABLE" && mode !== "REQUIRED" && mode !== "REPEATED") return `${where}: invalid mode ${JSON.stringify(f.mode)}`
    let sub: ReadonlyArray<Field> | undefined
    if (type === "RECORD") {
      const nested = normalizeSchema(f.fields, where)
      if (typeof nested === "string") return nested
      if (nested.length === 0) return `${where}: a RECORD needs at least one field`
      sub = nested
    }
    out.push({
      name: f.name,
      type,
      mode: mode as Field["mode"],
      ...(sub === undefined ? {} : { fields: sub }),
      ...(typeof f.description === "string" ? { description: f.description } : {})
    })
  }
  return out
}

const quote = (name: string) => `"${name.replaceAll('"', '""')}"`

/** the DuckDB type of a field (REPEATED: a list) */
export const duckType = (field: Field): string => {
  const base = field.type === "RECORD"
    ? `STRUCT(${(field.fields ?? []).map((f) => `${quote(f.name)} ${duckType(f)}`).join(", ")})`
    : DUCK_TYPES[field.type]!
  return field.mode === "REPEATED" ? `${base}[]` : base
}

/** DuckDB column definitions of a schema */
export const columnDefinitions = (fields: ReadonlyArray<Field>): string =>
  fields.map((f) => `${quote(f.name)} ${duckType(f)}${f.mode === "REQUIRED" ? " NOT NULL" : ""}`).join(", ")

/** a DuckDB column type as `columnNameAndTypeObjectsJson` describes it */
export interface DuckTypeJson {
  readonly typeId: number
  readonly alias?: string
  readonly width?: number
  readonly scale?: number
  readonly valueType?: DuckTypeJson
  readonly entryNames?: ReadonlyArray<string>
  readonly entryTypes?: ReadonlyArray<DuckTypeJson>
}

/** the BigQuery field of a DuckDB column; a string says why it cannot be one */
export const fieldOfDuck = (name: string, type: DuckTypeJson, nullable = true): Field | string => {
  const scalar = (t: DuckTypeJson): string | undefined => {
    switch (t.typeId) {
      case 1:
        return "BOOLEAN"
      case 2:
      case 3:
      case 4:
      case 5:
      case 6:
      case 7:
      case 8:
      case 9:
      case 16:
      case 32:
      case 36: // NULL (SELECT NULL): INT64, as in GoogleSQL
      case 38:
        return "INTEGER"
      case 10:
      case 11:
        return "FLOAT"
      case 12:
      case 20:
      case 21:
      case 22:
        return "DATETIME"
      case 13:
        return "DATE"
      case 14:
        return "TIME"
      case 31:
        return "TIMESTAMP"
      case 17:
      case 37:
        return t.alias === "JSON" ? "JSON" : "STRING"
      case 23:
      case 27:
        return "STRING"
      case 18:
        return "BYTES"
      case 19:
        return "NUMERIC"
      default:
        return undefined
    }
  }
  if (type.typeId === 24 || type.typeId === 33) {
    const inner = type.valueType!
    if (inner.typeId === 24 || inner.typeId === 33) return `column ${name}: BigQuery has no ARRAY of ARRAY`
    const element = fieldOfDuck(name, inner)
    if (typeof element === "string") return element
    return { ...element, mode: "REPEATED" }
  }
  if (type.typeId === 25) {
    const fields: Array<Field> = []
    for (const [i, entry] of (type.entryNames ?? []).entries()) {
      const f = fieldOfDuck(entry, type.entryTypes![i]!)
      if (typeof f === "string") return f
      fields.push(f)
    }
    return { name, type: "RECORD", mode: nullable ? "NULLABLE" : "REQUIRED", fields }
  }
  const t = scalar(type)
  if (t === undefined) return `column ${name}: its type (DuckDB type id ${type.typeId}) has no BigQuery equivalent in the emulator`
  return { name, type: t, mode: nullable ? "NULLABLE" : "REQUIRED" }
}

/**
 * The schema of a table: the declared one where DuckDB's columns still match
 * it (it keeps BIGNUMERIC, REQUIRED inside records, descriptions), DuckDB's
 * own otherwise (columns added or changed by SQL).
 */
export const overlay = (declared: ReadonlyArray<Field> | undefined, derived: ReadonlyArray<Field>): ReadonlyArray<Field> => {
  if (declared === undefined) return derived
  const byName = new Map(declared.map((f) => [f.name.toLowerCase(), f]))
  return derived.map((d) => {
    const f = byName.get(d.name.toLowerCase())
    if (f === undefined || duckType(f) !== duckType(d)) return d
    return f
  })
}

// ===== REST encoding of rows =====

const pad = (n: number | bigint, width: number) => String(n).padStart(width, "0")

/** `YYYY-MM-DD` of a day number since 1970-01-01 */
export const dateOfDays = (days: number): string => {
  const d = new Date(0)
  d.setUTCDate(d.getUTCDate() + days)
  return `${pad(d.getUTCFullYear(), 4)}-${pad(d.getUTCMonth() + 1, 2)}-${pad(d.getUTCDate(), 2)}`
}

const DAY = 86_400_000_000n

/** `HH:MM:SS[.ffffff]` of microseconds since midnight */
export const timeOfMicros = (micros: bigint, alwaysFraction = false): string => {
  const s = micros / 1_000_000n
  const frac = micros % 1_000_000n
  const base = `${pad(s / 3600n, 2)}:${pad((s / 60n) % 60n, 2)}:${pad(s % 60n, 2)}`
  return frac === 0n && !alwaysFraction ? base : `${base}.${pad(frac, 6)}`
}

/** date and time of day of microseconds since the epoch */
const splitMicros = (micros: bigint): { readonly date: string; readonly time: bigint } => {
  let days = micros / DAY
  let rest = micros % DAY
  if (rest < 0n) {
    rest += DAY
    days -= 1n
  }
  return { date: dateOfDays(Number(days)), time: rest }
}

/** `YYYY-MM-DDTHH:MM:SS[.ffffff]` (DATETIME as the REST API gives it) */
export const datetimeOfMicros = (micros: bigint): string => {
  const { date, time } = splitMicros(micros)
  return `${date}T${timeOfMicros(time)}`
}

/** `YYYY-MM-DD HH:MM:SS.ffffff+00` (a TIMESTAMP as DuckDB parses it) */
export const timestampTextOfMicros = (micros: bigint): string => {
  const { date, time } = splitMicros(micros)
  return `${date} ${timeOfMicros(time, true)}+00`
}

/** a DECIMAL's value and scale as BigQuery writes a NUMERIC: no trailing zeros */
export const decimalText = (value: bigint, scale: number): string => {
  const negative = value < 0n
  const digits = (negative ? -value : value).toString().padStart(scale + 1, "0")
  const whole = digits.slice(0, digits.length - scale)
  const frac = digits.slice(digits.length - scale).replace(/0+$/, "")
  return `${negative ? "-" : ""}${whole}${frac === "" ? "" : `.${frac}`}`
}

const floatText = (n: number): string => (Number.isNaN(n) ? "NaN" : n === Infinity ? "Infinity" : n === -Infinity ? "-Infinity" : String(n))

/** options of the REST encoding */
export interface EncodeOptions {
  /** TIMESTAMP as int64 microseconds (`formatOptions.useInt64Timestamp`, what the client asks for), else float seconds */
  readonly int64Timestamp: boolean
}

const encodeScalar = (field: Field, v: Duck.DuckDBValue, options: EncodeOptions): unknown => {
  if (v === null) return null
  switch (field.type) {
    case "INTEGER":
      return String(v)
    case "FLOAT":
      return typeof v === "number" ? floatText(v) : String(v)
    case "BOOLEAN":
      return v === true ? "true" : "false"
    case "BYTES":
      return Buffer.from((v as Duck.DuckDBBlobValue).bytes).toString("base64")
    case "NUMERIC":
    case "BIGNUMERIC": {
      const d = v as Duck.DuckDBDecimalValue
      return typeof d === "object" && "scale" in d ? decimalText(d.value, d.scale) : String(v)
    }
    case "TIMESTAMP": {
      const micros = (v as Duck.DuckDBTimestampTZValue).micros
      if (options.int64Timestamp) return String(micros)
      return `${Number(micros) / 1e6}`
    }
    case "DATE":
      return dateOfDays((v as Duck.DuckDBDateValue).days)
    case "DATETIME":
      return datetimeOfMicros((v as Duck.DuckDBTimestampValue).micros)
    case "TIME":
      return timeOfMicros((v as Duck.DuckDBTimeValue).micros)
    default:
      return typeof v === "string" ? v : String(v)
  }
}

const encodeField = (field: Field, v: Duck.DuckDBValue, options: EncodeOptions): unknown => {
  if (field.mode === "REPEATED") {
    if (v === null) return []
    const items = (v as Duck.DuckDBListValue).items
    const element: Field = { ...field, mode: "NULLABLE" }
    return items.map((item) => ({ v: encodeField(element, item, options) }))
  }
  if (field.type === "RECORD") {
    if (v === null) return null
    const entries = (v as Duck.DuckDBStructValue).entries
    return { f: (field.fields ?? []).map((f) => ({ v: encodeField(f, entries[f.name] ?? null, options) })) }
  }
  return encodeScalar(field, v, options)
}

/** one row as the REST API sends it */
export const encodeRow = (fields: ReadonlyArray<Field>, row: ReadonlyArray<Duck.DuckDBValue>, options: EncodeOptions) => ({
  f: fields.map((f, i) => ({ v: encodeField(f, row[i] ?? null, options) }))
})

// ===== values of loads and insertAll =====

/** a value refused: BigQuery's message and the field's path */
export interface ValueError {
  readonly message: string
  readonly field: string
}

/**
 * A number whose text JSON.parse would change (an integer beyond 2^53, a
 * NUMERIC with many digits) is kept as its source text: `JSON.rawJSON`.
 */
export const parseJsonExact = (text: string): unknown =>
  (JSON.parse as (text: string, reviver: (key: string, value: unknown, context?: { source?: string }) => unknown) => unknown)(
    text,
    (_key, value, context) => {
      if (typeof value === "number" && context?.source !== undefined && String(value) !== context.source) {
        return (JSON as unknown as { rawJSON: (s: string) => unknown }).rawJSON(context.source)
      }
      return value
    }
  )

const rawText = (v: unknown): string | undefined =>
  typeof v === "object" && v !== null && (JSON as unknown as { isRawJSON: (v: unknown) => boolean }).isRawJSON(v)
    ? (v as { rawJSON: string }).rawJSON
    : undefined

const shown = (v: unknown): string => {
  const raw = rawText(v)
  if (raw !== undefined) return raw
  const s = typeof v === "string" ? v : JSON.stringify(v) ?? String(v)
  return s.length > 100 ? `${s.slice(0, 100)}…` : s
}

const INT64_MIN = -(2n ** 63n)
const INT64_MAX = 2n ** 63n - 1n

const int64Of = (v: unknown): bigint | undefined => {
  const raw = rawText(v)
  const text = raw ?? (typeof v === "number" ? (Number.isInteger(v) ? String(v) : undefined) : typeof v === "string" ? v.trim() : typeof v === "bigint" ? String(v) : undefined)
  if (text === undefined || !/^[+-]?\d+(\.0*)?$/.test(text)) return undefined
  const n = BigInt(text.replace(/\.0*$/, "").replace(/^\+/, ""))
  return n < INT64_MIN || n > INT64_MAX ? undefined : n
}

/** NUMERIC: at most 29 integer digits and 9 fractional digits (BIGNUMERIC values are held the same way: see Emulator) */
const numericOf = (v: unknown): string | undefined => {
  const raw = rawText(v)
  let text = raw ?? (typeof v === "number" && Number.isFinite(v) ? String(v) : typeof v === "string" ? v.trim() : undefined)
  if (text === undefined) return undefined
  const m = /^([+-]?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/.exec(text)
  if (m === null || (m[2] === "" && (m[3] ?? "") === "")) return undefined
  let digits = `${m[2]}${m[3] ?? ""}`
  let point = m[2]!.length + Number(m[4] ?? 0)
  if (point < 0) {
    digits = "0".repeat(-point) + digits
    point = 0
  }
  if (point > digits.length) digits = digits + "0".repeat(point - digits.length)
  const whole = digits.slice(0, point).replace(/^0+(?=\d)/, "") || "0"
  const frac = digits.slice(point).replace(/0+$/, "")
  if (whole.replace(/^0+/, "").length > 29 || frac.length > 9) return undefined
  text = `${m[1] === "-" && (whole !== "0" || frac !== "") ? "-" : ""}${whole}${frac === "" ? "" : `.${frac}`}`
  return text
}

/** days since 1970-01-01 of a valid `YYYY-MM-DD`, else undefined */
export const daysOf = (y: number, m: number, d: number): number | undefined => {
  if (m < 1 || m > 12 || d < 1 || d > 31 || y < 1 || y > 9999) return undefined
  const date = new Date(0)
  date.setUTCFullYear(y, m - 1, d)
  if (date.getUTCMonth() !== m - 1 || date.getUTCDate() !== d) return undefined
  return Math.round(date.getTime() / 86_400_000)
}

const TIMESTAMP_RE =
  /^(\d{4})-(\d{1,2})-(\d{1,2})(?:[Tt ](\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?\s*(Z|z|UTC|[+-]\d{1,2}(?::?\d{2})?)?$/

/** microseconds since the epoch of a TIMESTAMP text (`2024-01-02 03:04:05.123456 UTC`, ISO 8601, an offset), else undefined */
export const parseTimestamp = (text: string): bigint | undefined => {
  const m = TIMESTAMP_RE.exec(text.trim())
  if (m === null) return undefined
  const days = daysOf(Number(m[1]), Number(m[2]), Number(m[3]))
  if (days === undefined) return undefined
  const h = Number(m[4] ?? 0)
  const min = Number(m[5] ?? 0)
  const s = Number(m[6] ?? 0)
  if (h > 23 || min > 59 || s > 59) return undefined
  const frac = BigInt((m[7] ?? "").padEnd(6, "0").slice(0, 6) || "0")
  let offsetMinutes = 0
  const zone = m[8]
  if (zone !== undefined && zone !== "Z" && zone !== "z" && zone !== "UTC") {
    const z = /^([+-])(\d{1,2}):?(\d{2})?$/.exec(zone)!
    offsetMinutes = (z[1] === "-" ? -1 : 1) * (Number(z[2]) * 60 + Number(z[3] ?? 0))
  }
  return BigInt(days) * DAY + BigInt(((h * 60 + min - offsetMinutes) * 60 + s)) * 1_000_000n + frac
}

const DATETIME_RE = /^(\d{4})-(\d{1,2})-(\d{1,2})(?:[Tt ](\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?)?$/
const TIME_RE = /^(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?$/

type Coerced = { readonly ok: unknown } | { readonly error: string }

/** one scalar: the canonical JSON value DuckDB's `read_json` reads with the column's type */
const coerceScalar = (type: string, v: unknown, jsonStrings: boolean): Coerced => {
  switch (type) {
    case "INTEGER": {
      const n = int64Of(v)
      return n === undefined ? { error: "integer" } : { ok: n.toString() }
    }
    case "FLOAT": {
      const raw = rawText(v)
      if (raw !== undefined) return { ok: Number(raw) }
      if (typeof v === "number") return { ok: v }
      if (typeof v === "string") {
        const t = v.trim()
        if (["NaN", "Infinity", "-Infinity", "inf", "-inf", "+inf"].includes(t)) return { ok: t.replace(/^\+?inf$/, "Infinity").replace(/^-inf$/, "-Infinity") }
        if (t !== "" && Number.isFinite(Number(t))) return { ok: Number(t) }
      }
      return { error: "double" }
    }
    case "BOOLEAN": {
      if (typeof v === "boolean") return { ok: v }
      if (typeof v === "string" && /^(true|false)$/i.test(v.trim())) return { ok: v.trim().toLowerCase() === "true" }
      if (v === 0 || v === 1) return { ok: v === 1 }
      return { error: "boolean" }
    }
    case "STRING": {
      if (typeof v === "string") return { ok: v }
      if (typeof v === "number" || typeof v === "boolean") return { ok: String(v) }
      const raw = rawText(v)
      return raw !== undefined ? { ok: raw } : { error: "string" }
    }
    case "BYTES":
      return typeof v === "string" && /^[A-Za-z0-9+/\-_]*={0,2}$/.test(v.replace(/\s/g, "")) ? { ok: v.replace(/\s/g, "") } : { error: "bytes" }
    case "NUMERIC":
    case "BIGNUMERIC": {
      const n = numericOf(v)
      return n === undefined ? { error: type === "NUMERIC" ? "NUMERIC (at most 29 integer and 9 fractional digits)" : "BIGNUMERIC (the emulator holds at most 29 integer and 9 fractional digits)" } : { ok: n }
    }
    case "TIMESTAMP": {
      if (typeof v === "number" && Number.isFinite(v)) {
        // a JSON number is seconds since the epoch
        return { ok: timestampTextOfMicros(BigInt(Math.round(v * 1e6))) }
      }
      const micros = typeof v === "string" ? parseTimestamp(v) : undefined
      return micros === undefined ? { error: "timestamp" } : { ok: timestampTextOfMicros(micros) }
    }
    case "DATE": {
      const m = typeof v === "string" ? /^(\d{4})-(\d{1,2})-(\d{1,2})$/.exec(v.trim()) : null
      const days = m === null ? undefined : daysOf(Number(m[1]), Number(m[2]), Number(m[3]))
      return days === undefined ? { error: "date" } : { ok: dateOfDays(days) }
    }
    case "DATETIME": {
      const m = typeof v === "string" ? DATETIME_RE.exec(v.trim()) : null
      if (m === null) return { error: "datetime" }
      const days = daysOf(Number(m[1]), Number(m[2]), Number(m[3]))
      if (days === undefined || Number(m[4] ?? 0) > 23 || Number(m[5] ?? 0) > 59 || Number(m[6] ?? 0) > 59) return { error: "datetime" }
      return { ok: `${dateOfDays(days)} ${pad(Number(m[4] ?? 0), 2)}:${m[5] ?? "00"}:${m[6] ?? "00"}.${(m[7] ?? "").padEnd(6, "0")}` }
    }
    case "TIME": {
      const m = typeof v === "string" ? TIME_RE.exec(v.trim()) : null
      if (m === null || Number(m[1]) > 23 || Number(m[2]) > 59 || Number(m[3] ?? 0) > 59) return { error: "time" }
      return { ok: `${pad(Number(m[1]), 2)}:${m[2]}:${m[3] ?? "00"}.${(m[4] ?? "").padEnd(6, "0")}` }
    }
    case "JSON": {
      if (jsonStrings && typeof v === "string") {
        try {
          return { ok: parseJsonExact(v) }
        } catch {
          return { error: "JSON" }
        }
      }
      return { ok: v }
    }
    default:
      return { error: type.toLowerCase() }
  }
}

/** options of {@link coerceRow} */
export interface CoerceOptions {
  readonly ignoreUnknownValues: boolean
  /** a JSON column's string value holds JSON text (insertAll); else it is a JSON string (loads) */
  readonly jsonStrings: boolean
}

/**
 * Checks one input row against a schema and gives its canonical form (what
 * `read_json` reads with the DuckDB column types), or the first value
 * BigQuery would refuse, with its message and field path.
 */
export const coerceRow = (
  fields: ReadonlyArray<Field>,
  row: unknown,
  options: CoerceOptions,
  path = ""
): { readonly ok: Record<string, unknown> } | { readonly error: ValueError } => {
  if (!isObject(row)) return { error: { message: `Only objects can be rows${path === "" ? "" : ` (at ${path})`}; got ${shown(row)}.`, field: path } }
  const out: Record<string, unknown> = {}
  const byName = new Map(fields.map((f) => [f.name.toLowerCase(), f]))
  if (!options.ignoreUnknownValues) {
    for (const key of Object.keys(row)) {
      if (!byName.has(key.toLowerCase())) {
        const where = path === "" ? key : `${path}.${key}`
        return { error: { message: `no such field: ${where}.`, field: where } }
      }
    }
  }
  const lowerKeys = new Map(Object.keys(row).map((k) => [k.toLowerCase(), k]))
  for (const field of fields) {
    const where = path === "" ? field.name : `${path}.${field.name}`
    const key = lowerKeys.get(field.name.toLowerCase())
    const value = key === undefined ? undefined : row[key]
    if (value === undefined || value === null) {
      if (field.mode === "REQUIRED") return { error: { message: `Missing required field: ${where}.`, field: where } }
      out[field.name] = field.mode === "REPEATED" ? [] : null
      continue
    }
    const one = (v: unknown, at: string): { ok: unknown } | { error: ValueError } => {
      if (field.type === "RECORD") {
        const nested = coerceRow(field.fields ?? [], v, options, at)
        return "error" in nested ? nested : { ok: nested.ok }
      }
      const c = coerceScalar(field.type, v, options.jsonStrings)
      if ("error" in c) {
        return { error: { message: `Could not convert value to ${c.error}. Field: ${at}; Value: ${shown(v)}`, field: at } }
      }
      return { ok: c.ok }
    }
    if (field.mode === "REPEATED") {
      if (!Array.isArray(value)) return { error: { message: `Repeated field must be imported as a JSON array. Field: ${where}.`, field: where } }
      const items: Array<unknown> = []
      for (const [i, item] of value.entries()) {
        if (item === null) return { error: { message: `Cannot have a NULL element in an array: ${where}[${i}].`, field: where } }
        const c = one(item, where)
        if ("error" in c) return c
        items.push(c.ok)
      }
      out[field.name] = items
      continue
    }
    if (Array.isArray(value)) return { error: { message: `Array specified for non-repeated field: ${where}.`, field: where } }
    const c = one(value, where)
    if ("error" in c) return c
    out[field.name] = c.ok
  }
  return { ok: out }
}

const hasBytes = (f: Field): boolean => f.type === "BYTES" || (f.type === "RECORD" && (f.fields ?? []).some(hasBytes))

/** the type `read_json` reads a field as: BYTES are base64 text (decoded by {@link readJsonPlan}'s SELECT) */
const readType = (field: Field): string => {
  const base = field.type === "BYTES"
    ? "VARCHAR"
    : field.type === "RECORD"
    ? `STRUCT(${(field.fields ?? []).map((f) => `${quote(f.name)} ${readType(f)}`).join(", ")})`
    : DUCK_TYPES[field.type]!
  return field.mode === "REPEATED" ? `${base}[]` : base
}

/** the expression turning what `read_json` read at `ref` into the column's value (base64 decoded at any depth) */
const readExpr = (field: Field, ref: string, depth: number): string => {
  if (!hasBytes(field)) return ref
  const one = (r: string): string =>
    field.type === "BYTES"
      ? `from_base64(${r})`
      : `CASE WHEN ${r} IS NULL THEN NULL ELSE struct_pack(${(field.fields ?? []).map((f) => `${quote(f.name)} := ${readExpr(f, `${r}.${quote(f.name)}`, depth + 1)}`).join(", ")}) END`
  if (field.mode === "REPEATED") {
    const x = `x${depth}`
    return `list_transform(${ref}, ${x} -> ${one(x)})`
  }
  return one(ref)
}

/**
 * The `read_json` column spec and the SELECT list that turns what it reads
 * into the table's columns (base64 BYTES decoded, at any depth).
 */
export const readJsonPlan = (fields: ReadonlyArray<Field>) => ({
  columns: `{${fields.map((f) => `${sqlString(f.name)}: ${sqlString(readType(f))}`).join(", ")}}`,
  select: fields.map((f) => readExpr(f, quote(f.name), 0)).join(", "),
  names: fields.map((f) => quote(f.name)).join(", ")
})

export const sqlString = (s: string) => `'${s.replaceAll("'", "''")}'`

// ===== query parameters =====

/** a `queryParameters[]` entry */
export interface QueryParameter {
  readonly name?: string
  readonly parameterType: ParameterType
  readonly parameterValue?: ParameterValue
}

export interface ParameterType {
  readonly type: string
  readonly arrayType?: ParameterType
  readonly structTypes?: ReadonlyArray<{ readonly name?: string; readonly type: ParameterType }>
}

export interface ParameterValue {
  readonly value?: unknown
  readonly arrayValues?: ReadonlyArray<ParameterValue>
  readonly structValues?: Readonly<Record<string, ParameterValue>>
}

/** a parameter's DuckDB type and value, or why it cannot be bound */
export const bindParameter = (
  duck: typeof Duck,
  type: ParameterType,
  value: ParameterValue | undefined,
  name: string
): { readonly type: Duck.DuckDBType; readonly value: Duck.DuckDBValue } | string => {
  const t = String(type.type).toUpperCase()
  if (t === "ARRAY") {
    if (type.arrayType === undefined) return `parameter ${name}: ARRAY needs arrayType`
    const element = bindParameter(duck, type.arrayType, undefined, name)
    if (typeof element === "string") return element
    if (value === undefined || (value.arrayValues === undefined && value.value === null)) return { type: duck.LIST(element.type), value: null }
    const items: Array<Duck.DuckDBValue> = []
    for (const item of value.arrayValues ?? []) {
      const b = bindParameter(duck, type.arrayType, item, name)
      if (typeof b === "string") return b
      items.push(b.value)
    }
    return { type: duck.LIST(element.type), value: duck.listValue(items) }
  }
  if (t === "STRUCT") {
    const entries: Record<string, Duck.DuckDBType> = {}
    const values: Record<string, Duck.DuckDBValue> = {}
    for (const [i, st] of (type.structTypes ?? []).entries()) {
      const field = st.name ?? `_field_${i + 1}`
      const b = bindParameter(duck, st.type, value?.structValues?.[field], `${name}.${field}`)
      if (typeof b === "string") return b
      entries[field] = b.type
      values[field] = b.value
    }
    return { type: duck.STRUCT(entries), value: value === undefined || value.structValues === undefined ? null : duck.structValue(values) }
  }
  const field = TYPE_NAMES[t]
  if (field === undefined) return `parameter ${name}: the type ${type.type} is not supported by the emulator`
  const duckTypes: Record<string, Duck.DuckDBType> = {
    INTEGER: duck.BIGINT,
    FLOAT: duck.DOUBLE,
    BOOLEAN: duck.BOOLEAN,
    STRING: duck.VARCHAR,
    BYTES: duck.BLOB,
    NUMERIC: duck.DECIMAL(38, 9),
    BIGNUMERIC: duck.DECIMAL(38, 9),
    TIMESTAMP: duck.TIMESTAMPTZ,
    DATE: duck.DATE,
    DATETIME: duck.TIMESTAMP,
    TIME: duck.TIME,
    JSON: duck.VARCHAR
  }
  const duckType = duckTypes[field]!
  const raw = value?.value
  if (raw === undefined || raw === null) return { type: duckType, value: null }
  const c = coerceScalar(field, raw, false)
  if ("error" in c) return `parameter ${name}: could not convert ${shown(raw)} to ${c.error}`
  const ok = c.ok
  switch (field) {
    case "INTEGER":
      return { type: duckType, value: BigInt(ok as string) }
    case "FLOAT":
      return { type: duckType, value: typeof ok === "number" ? ok : Number(ok) }
    case "BOOLEAN":
      return { type: duckType, value: ok as boolean }
    case "STRING":
      return { type: duckType, value: ok as string }
    case "JSON":
      return { type: duckType, value: typeof raw === "string" ? raw : JSON.stringify(raw) }
    case "BYTES":
      return { type: duckType, value: duck.blobValue(Buffer.from(ok as string, "base64")) }
    case "NUMERIC":
    case "BIGNUMERIC": {
      const text = ok as string
      const [whole, frac = ""] = text.replace("-", "").split(".")
      const scaled = BigInt(`${whole}${frac.padEnd(9, "0")}`) * (text.startsWith("-") ? -1n : 1n)
      return { type: duckType, value: duck.decimalValue(scaled, 38, 9) }
    }
    case "TIMESTAMP":
      return { type: duckType, value: duck.timestampTZValue(parseTimestamp(String(ok).replace(/\+00$/, "Z"))!) }
    case "DATE": {
      const [y, m, d] = String(ok).split("-").map(Number)
      return { type: duckType, value: duck.dateValue(daysOf(y!, m!, d!)!) }
    }
    case "DATETIME": {
      const micros = parseTimestamp(`${String(ok)}Z`)!
      return { type: duckType, value: duck.timestampValue(micros) }
    }
    case "TIME": {
      const [h, mi, rest] = String(ok).split(":")
      const [s, f] = rest!.split(".")
      return { type: duckType, value: duck.timeValue(BigInt(((Number(h) * 60 + Number(mi)) * 60 + Number(s)) * 1_000_000) + BigInt(f!)) }
    }
    default:
      return `parameter ${name}: the type ${type.type} is not supported by the emulator`
  }
}

/** the REST schema type of a parameter type (for `statistics.query.undeclaredQueryParameters`) */
export const parameterTypeName = (type: ParameterType): string => String(type.type).toUpperCase()
