/**
 * GoogleSQL → DuckDB, for the BigQuery emulator: a tokenizer and a rewriter
 * of the subset the connectors, the examples and ordinary queries use.
 * Anything outside the subset fails with an error naming the construct; the
 * rewriter never guesses. What is supported is listed in `Emulator.ts`.
 *
 * Projects are DuckDB catalogs and datasets DuckDB schemas, so table paths
 * need no resolution here: `` `p.ds.t` `` becomes `"p"."ds"."t"` and `ds.t`
 * stays `ds.t` (the engine runs each job with its project as the default
 * catalog, and its default dataset, if any, as the default schema).
 *
 * @internal
 */

// ===== tokens =====

export type Token =
  | { readonly t: "ident"; readonly text: string; readonly upper: string; readonly at: number }
  | { readonly t: "qident"; readonly value: string; readonly at: number }
  | { readonly t: "string"; readonly value: string; readonly bytes: boolean; readonly at: number }
  | { readonly t: "number"; readonly text: string; readonly at: number }
  | { readonly t: "param"; readonly name: string; readonly at: number }
  | { readonly t: "op"; readonly text: string; readonly at: number }

/** a query the emulator cannot run, with the construct named */
export class SqlError extends Error {
  readonly position: number | undefined
  constructor(message: string, position?: number) {
    super(message)
    this.position = position
  }
}

const isIdentStart = (c: string) => /[A-Za-z_]/.test(c)
const isIdentPart = (c: string) => /[A-Za-z0-9_]/.test(c)

const ESCAPES: Record<string, string> = { n: "\n", t: "\t", r: "\r", b: "\b", f: "\f", v: "\v", a: "\x07", "\\": "\\", "'": "'", '"': '"', "`": "`", "?": "?" }

/** the value of a GoogleSQL string literal's body (escapes resolved unless raw) */
const unescape = (body: string, raw: boolean, at: number): string => {
  if (raw) return body
  let out = ""
  for (let i = 0; i < body.length; i++) {
    const c = body[i]!
    if (c !== "\\") {
      out += c
      continue
    }
    const n = body[++i]
    if (n === undefined) throw new SqlError("a string literal ends with a lone backslash", at)
    if (ESCAPES[n] !== undefined) out += ESCAPES[n]
    else if (n === "x" || n === "X") {
      out += String.fromCharCode(parseInt(body.slice(i + 1, i + 3), 16))
      i += 2
    } else if (n === "u") {
      out += String.fromCodePoint(parseInt(body.slice(i + 1, i + 5), 16))
      i += 4
    } else if (n === "U") {
      out += String.fromCodePoint(parseInt(body.slice(i + 1, i + 9), 16))
      i += 8
    } else if (/[0-7]/.test(n)) {
      out += String.fromCharCode(parseInt(body.slice(i, i + 3), 8))
      i += 2
    } else throw new SqlError(`unknown escape \\${n} in a string literal`, at)
  }
  return out
}

/** splits GoogleSQL text into tokens (comments and spaces dropped) */
export const tokenize = (sql: string): Array<Token> => {
  const out: Array<Token> = []
  let i = 0
  while (i < sql.length) {
    const c = sql[i]!
    if (/\s/.test(c)) {
      i++
      continue
    }
    if (c === "#" || (c === "-" && sql[i + 1] === "-")) {
      const nl = sql.indexOf("\n", i)
      i = nl < 0 ? sql.length : nl + 1
      continue
    }
    if (c === "/" && sql[i + 1] === "*") {
      const end = sql.indexOf("*/", i + 2)
      if (end < 0) throw new SqlError("an unterminated /* comment", i)
      i = end + 2
      continue
    }
    // string and bytes literals, with r / b / rb / br prefixes
    const prefix = /^(rb|br|r|b)?(['"])/i.exec(sql.slice(i, i + 3))
    if (prefix !== null) {
      const flags = (prefix[1] ?? "").toLowerCase()
      const start = i
      i += flags.length
      const quote = sql[i]!
      const triple = sql.slice(i, i + 3) === quote.repeat(3)
      const delimiter = triple ? quote.repeat(3) : quote
      i += delimiter.length
      let body = ""
      while (true) {
        if (i >= sql.length) throw new SqlError("an unterminated string literal", start)
        if (sql[i] === "\\" && !flags.includes("r")) {
          body += sql.slice(i, i + 2)
          i += 2
          continue
        }
        if (sql.startsWith(delimiter, i)) {
          i += delimiter.length
          break
        }
        if (!triple && (sql[i] === "\n" || sql[i] === "\r")) throw new SqlError("a newline in a string literal (use a triple-quoted string)", start)
        body += sql[i]
        i++
      }
      out.push({ t: "string", value: unescape(body, flags.includes("r"), start), bytes: flags.includes("b"), at: start })
      continue
    }
    if (c === "`") {
      const end = sql.indexOf("`", i + 1)
      if (end < 0) throw new SqlError("an unterminated `quoted identifier`", i)
      out.push({ t: "qident", value: unescape(sql.slice(i + 1, end), false, i), at: i })
      i = end + 1
      continue
    }
    if (c === "@") {
      if (sql[i + 1] === "@") throw new SqlError("system variables (@@…) are not supported by the emulator", i)
      let j = i + 1
      if (sql[j] === "`") {
        const end = sql.indexOf("`", j + 1)
        out.push({ t: "param", name: sql.slice(j + 1, end), at: i })
        i = end + 1
        continue
      }
      while (j < sql.length && isIdentPart(sql[j]!)) j++
      if (j === i + 1) throw new SqlError("positional parameters (?) and bare @ are not supported: name the parameter (@name)", i)
      out.push({ t: "param", name: sql.slice(i + 1, j), at: i })
      i = j
      continue
    }
    if (c === "?") throw new SqlError("positional query parameters (?) are not supported by the emulator: use named parameters (@name)", i)
    if (/[0-9]/.test(c) || (c === "." && /[0-9]/.test(sql[i + 1] ?? ""))) {
      const m = /^(0[xX][0-9a-fA-F]+|(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?)/.exec(sql.slice(i))!
      out.push({ t: "number", text: m[0], at: i })
      i += m[0].length
      continue
    }
    if (isIdentStart(c)) {
      let j = i + 1
      while (j < sql.length && isIdentPart(sql[j]!)) j++
      const text = sql.slice(i, j)
      out.push({ t: "ident", text, upper: text.toUpperCase(), at: i })
      i = j
      continue
    }
    const two = sql.slice(i, i + 2)
    // `>>` stays two tokens: it closes nested types (ARRAY<STRUCT<…>>)
    if (["<=", ">=", "<>", "!=", "||", "<<", "=>"].includes(two)) {
      out.push({ t: "op", text: two, at: i })
      i += 2
      continue
    }
    if ("(),.;[]<>=+-*/%&|^~:{}".includes(c)) {
      out.push({ t: "op", text: c, at: i })
      i++
      continue
    }
    throw new SqlError(`unexpected character ${JSON.stringify(c)}`, i)
  }
  return out
}

// ===== types =====

/** GoogleSQL scalar type names → DuckDB */
const SCALAR_TYPES: Record<string, string> = {
  INT64: "BIGINT",
  INT: "BIGINT",
  INTEGER: "BIGINT",
  SMALLINT: "BIGINT",
  BIGINT: "BIGINT",
  TINYINT: "BIGINT",
  BYTEINT: "BIGINT",
  FLOAT64: "DOUBLE",
  FLOAT: "DOUBLE",
  BOOL: "BOOLEAN",
  BOOLEAN: "BOOLEAN",
  STRING: "VARCHAR",
  BYTES: "BLOB",
  DATE: "DATE",
  DATETIME: "TIMESTAMP",
  TIME: "TIME",
  TIMESTAMP: "TIMESTAMPTZ",
  JSON: "JSON",
  NUMERIC: "DECIMAL(38,9)",
  DECIMAL: "DECIMAL(38,9)",
  BIGNUMERIC: "DECIMAL(38,9)",
  BIGDECIMAL: "DECIMAL(38,9)",
  INTERVAL: "INTERVAL"
}

// ===== the rewriter =====

/** what a statement is, for the engine: how to run it and what its job reports */
export type StatementKind =
  | "SELECT"
  | "INSERT"
  | "UPDATE"
  | "DELETE"
  | "MERGE"
  | "CREATE_TABLE"
  | "CREATE_TABLE_AS_SELECT"
  | "CREATE_SCHEMA"
  | "CREATE_VIEW"
  | "DROP_TABLE"
  | "DROP_SCHEMA"
  | "DROP_VIEW"
  | "ALTER_TABLE"
  | "TRUNCATE_TABLE"

export interface Statement {
  readonly kind: StatementKind
  /** the DuckDB text */
  readonly sql: string
  /**
   * For a MERGE: a query that returns a row when some target row matches
   * more than one source row (GoogleSQL refuses such a MERGE; DuckDB would
   * pick one silently).
   */
  readonly mergeCheck?: string | undefined
}

export interface Translation {
  readonly statements: ReadonlyArray<Statement>
  /** the named parameters used (`@name`), in order of first use */
  readonly params: ReadonlyArray<string>
}

/** keywords never read as a function name when followed by `(` */
const NOT_FUNCTIONS = new Set([
  "ALL", "AND", "ANY", "AS", "ASC", "AT", "BETWEEN", "BY", "CASE", "CROSS", "CURRENT", "DEFAULT", "DESC", "DISTINCT", "ELSE",
  "END", "EXCEPT", "EXISTS", "FALSE", "FOLLOWING", "FOR", "FROM", "FULL", "GROUP", "HAVING", "IN", "INNER", "INTERSECT",
  "INTO", "IS", "JOIN", "LIKE", "LIMIT", "NOT", "NULL", "NULLS", "OF", "ON", "OR", "ORDER", "OUTER", "OVER", "PARTITION",
  "PRECEDING", "QUALIFY", "RECURSIVE", "ROWS", "RANGE", "SELECT", "SET", "SOME", "THEN", "TO", "TRUE", "UNBOUNDED", "UNION",
  "USING", "WHEN", "WHERE", "WINDOW", "WITH", "WITHIN", "VALUES", "OPTIONS", "TABLE", "MATCHED", "ROW", "ESCAPE", "OFFSET",
  "RETURNS", "CLUSTER", "INSERT", "UPDATE", "DELETE", "MERGE", "CREATE", "DROP", "ALTER", "TRUNCATE", "SCHEMA", "VIEW",
  "COLUMN", "ADD", "IGNORE", "RESPECT", "LATERAL", "NATURAL", "LEFT", "RIGHT"
])

/**
 * Words emitted as they are; every other bare word is an identifier and is
 * quoted (DuckDB reserves words GoogleSQL does not: `at`, `value`, …; quoted
 * identifiers stay case-insensitive in DuckDB).
 */
const KEYWORDS = new Set([
  "ALL", "AND", "ANY", "ARRAY", "AS", "ASC", "BETWEEN", "BY", "CASE", "CAST", "COLLATE", "CONTAINS", "CREATE", "CROSS",
  "CUBE", "CURRENT", "DEFAULT", "DESC", "DISTINCT", "ELSE", "END", "ESCAPE", "EXCEPT", "EXCLUDE", "EXISTS", "EXTRACT", "FALSE",
  "FETCH", "FOLLOWING", "FOR", "FROM", "FULL", "GROUP", "GROUPING", "GROUPS", "HAVING", "IF", "IGNORE", "IN", "INNER",
  "INTERSECT", "INTERVAL", "INTO", "IS", "JOIN", "LATERAL", "LEFT", "LIKE", "LIMIT", "MERGE", "NATURAL", "NO", "NOT", "NULL",
  "NULLS", "OF", "ON", "OR", "ORDER", "OUTER", "OVER", "PARTITION", "PRECEDING", "QUALIFY", "RANGE", "RECURSIVE", "RESPECT",
  "RIGHT", "ROLLUP", "ROWS", "SELECT", "SET", "SOME", "STRUCT", "THEN", "TO", "TRUE", "UNBOUNDED", "UNION", "UNNEST", "USING",
  "WHEN", "WHERE", "WINDOW", "WITH", "WITHIN", "FIRST", "LAST", "ROW", "MATCHED", "TARGET", "SOURCE", "INSERT", "UPDATE",
  "DELETE", "VALUES", "TABLE", "REPLACE", "OFFSET", "CURRENT_TIMESTAMP", "CURRENT_DATE", "CURRENT_TIME"
])

/** clause keywords that end a FROM list */
const FROM_ENDERS = new Set(["WHERE", "GROUP", "HAVING", "QUALIFY", "WINDOW", "ORDER", "LIMIT", "UNION", "EXCEPT", "INTERSECT", "SELECT", "SET", "WHEN"])

const EXTRACT_PARTS: Record<string, (expr: string) => string> = {
  YEAR: (e) => `EXTRACT(year FROM ${e})`,
  QUARTER: (e) => `EXTRACT(quarter FROM ${e})`,
  MONTH: (e) => `EXTRACT(month FROM ${e})`,
  DAY: (e) => `EXTRACT(day FROM ${e})`,
  DAYOFYEAR: (e) => `EXTRACT(doy FROM ${e})`,
  DAYOFWEEK: (e) => `(EXTRACT(dow FROM ${e}) + 1)`,
  HOUR: (e) => `EXTRACT(hour FROM ${e})`,
  MINUTE: (e) => `EXTRACT(minute FROM ${e})`,
  SECOND: (e) => `EXTRACT(second FROM ${e})`,
  MILLISECOND: (e) => `(EXTRACT(millisecond FROM ${e}) % 1000)`,
  MICROSECOND: (e) => `(EXTRACT(microsecond FROM ${e}) % 1000000)`,
  ISOWEEK: (e) => `EXTRACT(week FROM ${e})`,
  ISOYEAR: (e) => `EXTRACT(isoyear FROM ${e})`,
  DATE: (e) => `CAST(${e} AS DATE)`
}

const DIFF_UNITS = new Set(["MICROSECOND", "MILLISECOND", "SECOND", "MINUTE", "HOUR", "DAY"])
const TRUNC_UNITS = new Set(["MICROSECOND", "MILLISECOND", "SECOND", "MINUTE", "HOUR", "DAY", "MONTH", "QUARTER", "YEAR", "ISOWEEK"])
const INTERVAL_UNITS = new Set(["MICROSECOND", "MILLISECOND", "SECOND", "MINUTE", "HOUR", "DAY", "WEEK", "MONTH", "QUARTER", "YEAR"])

/** joins output pieces with single spaces, none around `.` nor inside parentheses and before commas */
const join = (pieces: ReadonlyArray<string>): string => {
  let out = ""
  for (const piece of pieces) {
    if (out.length > 0 && piece !== "." && piece !== "," && piece !== ")" && !out.endsWith(".") && !out.endsWith("(")) out += " "
    out += piece
  }
  return out
}

const quoteIdent = (name: string) => `"${name.replaceAll('"', '""')}"`
const quoteString = (value: string) => `'${value.replaceAll("'", "''")}'`

/** a BLOB literal: every byte as `\xHH` */
const bytesLiteral = (value: string) => {
  let out = ""
  for (const byte of Buffer.from(value, "latin1")) out += `\\x${byte.toString(16).padStart(2, "0")}`
  return `'${out}'::BLOB`
}

/** the number of capture groups of a regular expression, ignoring escaped and non-capturing parentheses */
const captureGroups = (re: string) => {
  let n = 0
  for (let i = 0; i < re.length; i++) {
    if (re[i] === "\\") {
      i++
      continue
    }
    if (re[i] === "(" && re[i + 1] !== "?") n++
  }
  return n
}

class Rewriter {
  readonly params: Array<string> = []
  private readonly tokens: ReadonlyArray<Token>
  constructor(tokens: ReadonlyArray<Token>) {
    this.tokens = tokens
  }

  private tok(i: number): Token | undefined {
    return this.tokens[i]
  }

  private isOp(i: number, text: string): boolean {
    const t = this.tokens[i]
    return t !== undefined && t.t === "op" && t.text === text
  }

  private isKw(i: number, upper: string): boolean {
    const t = this.tokens[i]
    return t !== undefined && t.t === "ident" && t.upper === upper
  }

  private fail(message: string, i: number): never {
    throw new SqlError(message, this.tokens[i]?.at)
  }

  /** the index of the `)` (or `]`, `>`) matching the opener at `open` */
  close(open: number, end = this.tokens.length): number {
    const opener = (this.tokens[open] as { text: string }).text
    const closer = opener === "(" ? ")" : opener === "[" ? "]" : ">"
    let depth = 0
    for (let i = open; i < end; i++) {
      const t = this.tokens[i]!
      if (t.t !== "op") continue
      if (t.text === opener || (opener !== "<" && (t.text === "(" || t.text === "["))) depth++
      else if (t.text === closer || (opener !== "<" && (t.text === ")" || t.text === "]"))) {
        depth--
        if (depth === 0) return i
      }
    }
    return this.fail(`an unbalanced ${opener}`, open)
  }

  /** top-level comma-separated ranges of `[start, end)` */
  split(start: number, end: number, separator = ","): Array<[number, number]> {
    const out: Array<[number, number]> = []
    let from = start
    for (let i = start; i < end; i++) {
      const t = this.tokens[i]!
      if (t.t === "op" && (t.text === "(" || t.text === "[")) {
        i = this.close(i, end)
        continue
      }
      if (t.t === "ident" && (t.upper === "STRUCT" || t.upper === "ARRAY") && this.isOp(i + 1, "<")) {
        i = this.close(i + 1, end)
        continue
      }
      if (t.t === "op" && t.text === separator) {
        out.push([from, i])
        from = i + 1
      }
    }
    if (from < end || out.length > 0) out.push([from, end])
    return out
  }

  /** the index of the last top-level `AS` keyword in `[start, end)`, or -1 */
  lastAs(start: number, end: number): number {
    let found = -1
    for (let i = start; i < end; i++) {
      const t = this.tokens[i]!
      if (t.t === "op" && (t.text === "(" || t.text === "[")) {
        i = this.close(i, end)
        continue
      }
      if (t.t === "ident" && t.upper === "AS") found = i
    }
    return found
  }

  // ----- types -----

  /** a GoogleSQL type in `[start, end)` → DuckDB type text */
  type(start: number, end: number): string {
    const t = this.tok(start)
    if (t === undefined || start >= end) return this.fail("a type is missing", start)
    if (t.t !== "ident") return this.fail("expected a type name", start)
    if (t.upper === "ARRAY") {
      if (!this.isOp(start + 1, "<")) return this.fail("ARRAY needs its element type: ARRAY<T>", start)
      const close = this.close(start + 1, end)
      return `${this.type(start + 2, close)}[]`
    }
    if (t.upper === "STRUCT") {
      if (!this.isOp(start + 1, "<")) return this.fail("STRUCT needs its fields: STRUCT<name T, …>", start)
      const close = this.close(start + 1, end)
      const fields = this.split(start + 2, close).map(([a, b]) => {
        const name = this.tok(a)
        if (name === undefined || (name.t !== "ident" && name.t !== "qident") || a + 1 >= b) {
          return this.fail("the emulator needs every STRUCT field named: STRUCT<name T, …>", a)
        }
        return `${quoteIdent(name.t === "ident" ? name.text : name.value)} ${this.type(a + 1, b)}`
      })
      return `STRUCT(${fields.join(", ")})`
    }
    const scalar = SCALAR_TYPES[t.upper]
    if (scalar === undefined) return this.fail(`the type ${t.text} is not supported by the emulator`, start)
    // parameterized types: STRING(10), NUMERIC(10, 2), BYTES(5)
    if (this.isOp(start + 1, "(")) {
      const close = this.close(start + 1, end)
      if (t.upper === "NUMERIC" || t.upper === "DECIMAL") {
        const args = this.split(start + 2, close).map(([a]) => Number((this.tok(a) as { text: string }).text))
        if (args.length === 0 || args[0]! > 38) return this.fail("NUMERIC(P[, S]) with P over 38 is not supported by the emulator", start)
        return `DECIMAL(${args[0]},${args[1] ?? 0})`
      }
      if (t.upper === "BIGNUMERIC" || t.upper === "BIGDECIMAL") return this.fail("parameterized BIGNUMERIC is not supported by the emulator", start)
      return scalar // STRING(n), BYTES(n): the length is not enforced
    }
    return scalar
  }

  // ----- expressions -----

  /** translates `[start, end)`; `inFrom` when the range starts in a FROM list */
  expr(start: number, end: number, inFrom = false): string {
    const out: Array<string> = []
    let fromList = inFrom
    let expectTable = inFrom
    let i = start
    const emit = (s: string) => out.push(s)
    while (i < end) {
      const t = this.tokens[i]!
      const prev = this.tokens[i - 1]
      switch (t.t) {
        case "string": {
          // typed literals: DATE '…', TIMESTAMP '…', …
          emit(t.bytes ? bytesLiteral(t.value) : quoteString(t.value))
          i++
          expectTable = false
          continue
        }
        case "number": {
          emit(
            /^0x/i.test(t.text)
              ? BigInt(t.text).toString()
              : /[.eE]/.test(t.text)
              ? `CAST(${t.text} AS DOUBLE)`
              : t.text
          )
          i++
          continue
        }
        case "param": {
          if (!this.params.includes(t.name)) this.params.push(t.name)
          emit(`$${t.name.replace(/[^A-Za-z0-9_]/g, "_")}`)
          i++
          continue
        }
        case "qident": {
          if (expectTable) {
            const [path, next] = this.tablePath(i, end)
            emit(path)
            i = next
            expectTable = false
            continue
          }
          emit(t.value.split(".").map(quoteIdent).join("."))
          i++
          continue
        }
        case "op": {
          if (t.text === "(") {
            const close = this.close(i, end)
            // a subquery in a FROM list, or any parenthesized expression: its own clause state
            emit(`(${this.expr(i + 1, close)})`)
            i = close + 1
            expectTable = false
            continue
          }
          if (t.text === "[") {
            const close = this.close(i, end)
            const isSubscript = prev !== undefined &&
              ((prev.t === "op" && (prev.text === ")" || prev.text === "]")) || prev.t === "ident" || prev.t === "qident" || prev.t === "param")
              && !(prev.t === "ident" && NOT_FUNCTIONS.has(prev.upper) && prev.upper !== "OFFSET")
            if (isSubscript && !(prev.t === "ident" && prev.upper === "ARRAY") && out.length > 0) {
              out[out.length - 1] += this.subscript(i + 1, close)
            } else {
              emit(`[${this.split(i + 1, close).map(([a, b]) => this.expr(a, b)).join(", ")}]`)
            }
            i = close + 1
            continue
          }
          if (t.text === "*" && this.isKw(i + 1, "EXCEPT") && this.isOp(i + 2, "(")) {
            emit("* EXCLUDE")
            i += 2
            continue
          }
          if (t.text === "," && fromList) expectTable = true
          if (t.text === "{" || t.text === "}") return this.fail(`unexpected ${t.text}`, i)
          emit(t.text === "<>" ? "!=" : t.text)
          i++
          continue
        }
        case "ident": {
          const u = t.upper
          // a table path after FROM / JOIN / a comma in a FROM list
          if (expectTable && u !== "UNNEST" && !this.isOp(i + 1, "(")) {
            if (u === "LATERAL") return this.fail("LATERAL is not supported by the emulator", i)
            const [path, next] = this.tablePath(i, end)
            emit(path)
            i = next
            expectTable = false
            if (this.isKw(i, "FOR") && this.isKw(i + 1, "SYSTEM_TIME")) return this.fail("FOR SYSTEM_TIME AS OF (time travel) is not supported by the emulator", i)
            if (this.isKw(i, "TABLESAMPLE")) return this.fail("TABLESAMPLE is not supported by the emulator", i)
            continue
          }
          expectTable = false
          if (u === "FROM" || u === "JOIN") {
            emit(t.text)
            fromList = fromList || u === "FROM"
            expectTable = true
            i++
            continue
          }
          if (fromList && FROM_ENDERS.has(u)) fromList = false
          if (u === "ON" || u === "USING") fromList = fromList && true
          // typed literals
          const next = this.tok(i + 1)
          if (next?.t === "string" && ["DATE", "TIMESTAMP", "DATETIME", "TIME", "NUMERIC", "BIGNUMERIC", "DECIMAL", "BIGDECIMAL", "JSON", "RANGE", "INTERVAL"].includes(u)) {
            if (u === "RANGE") return this.fail("RANGE literals are not supported by the emulator", i)
            if (u === "INTERVAL") return this.fail("INTERVAL '…' literals are not supported by the emulator: use INTERVAL n DAY", i)
            emit(`CAST(${quoteString(next.value)} AS ${SCALAR_TYPES[u]})`)
            i += 2
            continue
          }
          if (u === "INTERVAL") {
            i = this.interval(i, end, out)
            continue
          }
          if (u === "SELECT" && this.isKw(i + 1, "AS") && (this.isKw(i + 2, "STRUCT") || this.isKw(i + 2, "VALUE"))) {
            return this.fail(`SELECT AS ${(this.tok(i + 2) as { text: string }).text} is not supported by the emulator`, i)
          }
          if (u === "IN" && this.isKw(i + 1, "UNNEST") && this.isOp(i + 2, "(")) {
            const close = this.close(i + 2, end)
            emit(`IN (SELECT unnest(${this.expr(i + 3, close)}))`)
            i = close + 1
            continue
          }
          if ((u === "ARRAY" || u === "STRUCT") && this.isOp(i + 1, "<")) {
            // a typed constructor: ARRAY<T>[…], STRUCT<a T, …>(…)
            const closeType = this.close(i + 1, end)
            const type = this.type(i, closeType + 1)
            const open = closeType + 1
            if (u === "ARRAY" && this.isOp(open, "[")) {
              const close = this.close(open, end)
              emit(`CAST([${this.split(open + 1, close).map(([a, b]) => this.expr(a, b)).join(", ")}] AS ${type})`)
              i = close + 1
              continue
            }
            if (u === "STRUCT" && this.isOp(open, "(")) {
              const close = this.close(open, end)
              emit(`CAST(row(${this.split(open + 1, close).map(([a, b]) => this.expr(a, b)).join(", ")}) AS ${type})`)
              i = close + 1
              continue
            }
            return this.fail(`a typed ${u} constructor needs its values`, i)
          }
          if (u === "ARRAY" && this.isOp(i + 1, "[")) {
            i++ // ARRAY[…] is the literal […]
            continue
          }
          if (u === "PIVOT" || u === "UNPIVOT") return this.fail(`${u} is not supported by the emulator`, i)
          if (u === "SAFE" && this.isOp(i + 1, ".")) {
            // SAFE.PARSE_JSON(x): NULL instead of an error for text that is not JSON
            const fn = this.tok(i + 2)
            if (fn?.t === "ident" && fn.upper === "PARSE_JSON" && this.isOp(i + 3, "(")) {
              const close = this.close(i + 3, end)
              const x = this.expr(i + 4, close)
              emit(`(CASE WHEN json_valid(${x}) THEN json(${x}) END)`)
              i = close + 1
              continue
            }
            return this.fail("the SAFE. function prefix is not supported by the emulator (but for SAFE.PARSE_JSON)", i)
          }
          if (u === "REPLACE" && prev?.t === "op" && prev.text === "*") {
            emit("REPLACE")
            i++
            continue
          }
          if (u === "UNNEST" && fromList && this.isOp(i + 1, "(")) {
            // FROM UNNEST(arr) [AS] x: x is the element (DuckDB: a table alias with one column named x)
            const close = this.close(i + 1, end)
            emit(`unnest(${this.expr(i + 2, close)})`)
            let k = close + 1
            if (this.isKw(k, "AS")) k++
            const alias = this.tok(k)
            if ((alias?.t === "ident" && !NOT_FUNCTIONS.has(alias.upper) && alias.upper !== "WITH") || alias?.t === "qident") {
              const name = alias.t === "ident" ? alias.text : alias.value
              emit(`AS ${quoteIdent(`__unnest_${name}`)}(${quoteIdent(name)})`)
              k++
            }
            if (this.isKw(k, "WITH") && this.isKw(k + 1, "OFFSET")) return this.fail("UNNEST … WITH OFFSET is not supported by the emulator", k)
            i = k
            continue
          }
          if (this.isOp(i + 1, "(") && !NOT_FUNCTIONS.has(u) && !(prev?.t === "op" && prev.text === ".")) {
            const close = this.close(i + 1, end)
            emit(this.call(i, close, end))
            i = close + 1
            continue
          }
          // a function that is also a keyword: IF(…), LEFT(…), RIGHT(…), REPLACE(…)
          if (this.isOp(i + 1, "(") && (u === "LEFT" || u === "RIGHT") && !(prev?.t === "op" && prev.text === ".")) {
            const close = this.close(i + 1, end)
            emit(this.call(i, close, end))
            i = close + 1
            continue
          }
          emit(KEYWORDS.has(u) && !(prev?.t === "op" && prev.text === ".") ? t.text : quoteIdent(t.text))
          i++
          continue
        }
      }
    }
    return join(out)
  }

  /** the source text of token `i` (identifiers, numbers) */
  private text(i: number): string {
    const t = this.tokens[i]!
    return t.t === "ident" || t.t === "number" || t.t === "op" ? t.text : t.t === "qident" ? t.value : ""
  }

  /** the end (exclusive) of the source text of token `i` */
  private endOf(i: number): number {
    const t = this.tokens[i]!
    return t.at + (t.t === "qident" ? t.value.length + 2 : this.text(i).length)
  }

  /**
   * A table path starting at `i`: `t`, `ds.t`, `` `p.ds.t` ``, `p.ds.t`, and
   * unquoted project ids with dashes (`my-project.ds.t`, as GoogleSQL allows
   * in table paths). Returns the DuckDB text and the index after the path.
   */
  tablePath(i: number, end: number): [string, number] {
    const parts: Array<string> = []
    let quotedAny = false
    const part = (k: number): [string, number] | undefined => {
      const t = this.tok(k)
      if (t === undefined || k >= end) return undefined
      if (t.t === "qident") {
        quotedAny = true
        return [t.value, k + 1]
      }
      if (t.t !== "ident" && t.t !== "number") return undefined
      let text = this.text(k)
      let j = k + 1
      // dashes glued to the name (no space): one unquoted project id
      while (j + 1 < end && this.isOp(j, "-") && this.tok(j)!.at === this.endOf(j - 1) && this.tok(j + 1)!.at === this.tok(j)!.at + 1
        && (this.tok(j + 1)!.t === "ident" || this.tok(j + 1)!.t === "number")) {
        text += `-${this.text(j + 1)}`
        j += 2
      }
      if (text.includes("-")) quotedAny = true
      return [text, j]
    }
    const first = part(i)
    if (first === undefined) return this.fail("expected a table name", i)
    parts.push(...first[0].split("."))
    let k = first[1]
    while (k < end && this.isOp(k, ".")) {
      const next = part(k + 1)
      if (next === undefined) break
      parts.push(...next[0].split("."))
      k = next[1]
    }
    void quotedAny
    return [parts.map(quoteIdent).join("."), k]
  }

  /** `[OFFSET(i)]`, `[SAFE_OFFSET(i)]`, `[ORDINAL(i)]`, `[SAFE_ORDINAL(i)]`, `[i]` */
  private subscript(start: number, end: number): string {
    const t = this.tok(start)
    if (t?.t === "ident" && ["OFFSET", "SAFE_OFFSET", "ORDINAL", "SAFE_ORDINAL"].includes(t.upper) && this.isOp(start + 1, "(")) {
      const close = this.close(start + 1, end)
      const inner = this.expr(start + 2, close)
      return t.upper.endsWith("ORDINAL") ? `[bq_ordinal(${inner})]` : `[bq_offset(${inner})]`
    }
    if (t?.t === "string") return `[${quoteString(t.value)}]` // a JSON or struct field by name
    return `[bq_offset(${this.expr(start, end)})]`
  }

  /** `INTERVAL <expr> <unit>` */
  private interval(i: number, end: number, out: Array<string>): number {
    // the expression runs up to the unit keyword
    let j = i + 1
    while (j < end && !(this.tok(j)?.t === "ident" && INTERVAL_UNITS.has((this.tok(j) as { upper: string }).upper))) {
      if (this.isOp(j, "(")) j = this.close(j, end)
      j++
    }
    if (j >= end) return this.fail("INTERVAL needs a unit (DAY, HOUR, …)", i)
    const unit = (this.tok(j) as { upper: string }).upper
    if (this.isKw(j + 1, "TO")) return this.fail("INTERVAL … TO … is not supported by the emulator", j)
    const amount = this.expr(i + 1, j)
    out.push(unit === "QUARTER" ? `(INTERVAL ((${amount}) * 3) MONTH)` : `(INTERVAL (${amount}) ${unit})`)
    return j + 1
  }

  /** the translated arguments of a call whose `(` is at `open` */
  private args(open: number, close: number): Array<string> {
    if (close === open + 1) return []
    return this.split(open + 1, close).map(([a, b]) => this.expr(a, b))
  }

  private unit(range: [number, number] | undefined, allowed: ReadonlySet<string>, fn: string): string {
    const t = range === undefined ? undefined : this.tok(range[0])
    if (t?.t !== "ident" || range![1] !== range![0] + 1 || !allowed.has(t.upper)) {
      return this.fail(`${fn}: the emulator supports the date parts ${[...allowed].join(", ")}`, range?.[0] ?? 0)
    }
    return t.upper === "ISOWEEK" ? "week" : t.upper.toLowerCase()
  }

  /** a function call `name(…)`: the name at `i`, its `)` at `close` */
  private call(i: number, close: number, _end: number): string {
    const name = (this.tok(i) as { upper: string; text: string })
    const open = i + 1
    const u = name.upper
    const ranges = close === open + 1 ? [] : this.split(open + 1, close)
    const args = () => this.args(open, close)
    const arity = (min: number, max = min) => {
      if (ranges.length < min || ranges.length > max) {
        this.fail(`${name.text}() takes ${min === max ? min : `${min} to ${max}`} arguments, got ${ranges.length}`, i)
      }
    }
    const same = (duck = u.toLowerCase()) => `${duck}(${args().join(", ")})`
    // a DISTINCT or ORDER BY inside an aggregate is passed through by `expr`
    const raw = () => `${u.toLowerCase()}(${this.expr(open + 1, close)})`
    switch (u) {
      case "CAST":
      case "SAFE_CAST": {
        const as = this.lastAs(open + 1, close)
        if (as < 0) return this.fail(`${name.text}(x AS type) needs AS`, i)
        for (let k = as; k < close; k++) if (this.isKw(k, "FORMAT")) return this.fail("CAST … FORMAT is not supported by the emulator", k)
        return `${u === "CAST" ? "CAST" : "TRY_CAST"}(${this.expr(open + 1, as)} AS ${this.type(as + 1, close)})`
      }
      case "EXTRACT": {
        const part = this.tok(open + 1)
        if (part?.t !== "ident" || !this.isKw(open + 2, "FROM")) return this.fail("EXTRACT(part FROM expr)", i)
        for (let k = open + 3; k < close; k++) {
          if (this.isKw(k, "AT") && this.isKw(k + 1, "TIME")) return this.fail("EXTRACT … AT TIME ZONE is not supported by the emulator", k)
        }
        const f = EXTRACT_PARTS[part.upper]
        if (f === undefined) return this.fail(`EXTRACT(${part.text} …) is not supported by the emulator (supported: ${Object.keys(EXTRACT_PARTS).join(", ")})`, i)
        return f(this.expr(open + 3, close))
      }
      case "STRUCT": {
        const fields = ranges.map(([a, b]) => {
          const as = this.lastAs(a, b)
          if (as >= 0) {
            const alias = this.tok(as + 1)
            if (alias === undefined || (alias.t !== "ident" && alias.t !== "qident")) return this.fail("STRUCT(x AS name)", as)
            return `${quoteIdent(alias.t === "ident" ? alias.text : alias.value)} := ${this.expr(a, as)}`
          }
          const last = this.tok(b - 1)
          const simplePath = [...Array(b - a).keys()].every((k) => {
            const tk = this.tok(a + k)!
            return k % 2 === 0 ? tk.t === "ident" || tk.t === "qident" : tk.t === "op" && tk.text === "."
          })
          if (!simplePath || last === undefined || (last.t !== "ident" && last.t !== "qident")) {
            return this.fail("the emulator needs every STRUCT(…) field named: STRUCT(x AS name, …)", a)
          }
          return `${quoteIdent(last.t === "ident" ? last.text : last.value)} := ${this.expr(a, b)}`
        })
        if (fields.length === 0) return this.fail("STRUCT() with no fields is not supported by the emulator", i)
        return `struct_pack(${fields.join(", ")})`
      }
      case "CONCAT": {
        if (ranges.length === 0) return this.fail("CONCAT() needs arguments", i)
        return `(${args().map((a) => `(${a})`).join(" || ")})`
      }
      case "IF":
        arity(3)
        return `(CASE WHEN ${args()[0]} THEN ${args()[1]} ELSE ${args()[2]} END)`
      case "IFNULL":
        arity(2)
        return same("coalesce")
      case "COALESCE":
      case "NULLIF":
      case "ABS":
      case "SIGN":
      case "SQRT":
      case "POW":
      case "POWER":
      case "EXP":
      case "LN":
      case "LOG10":
      case "FLOOR":
      case "CEIL":
      case "CEILING":
      case "ROUND":
      case "TRUNC":
      case "MOD":
      case "LOWER":
      case "UPPER":
      case "LENGTH":
      case "CHAR_LENGTH":
      case "CHARACTER_LENGTH":
      case "TRIM":
      case "LTRIM":
      case "RTRIM":
      case "REPLACE":
      case "REVERSE":
      case "REPEAT":
      case "LPAD":
      case "RPAD":
      case "STARTS_WITH":
      case "ENDS_WITH":
      case "STRPOS":
      case "LEFT":
      case "RIGHT":
      case "ASCII":
      case "TO_BASE64":
      case "FROM_BASE64":
      case "ROW_NUMBER":
      case "RANK":
      case "DENSE_RANK":
      case "PERCENT_RANK":
      case "CUME_DIST":
      case "NTILE":
      case "LAG":
      case "LEAD":
      case "FIRST_VALUE":
      case "LAST_VALUE":
      case "NTH_VALUE":
      case "UNNEST":
        return same()
      case "LOG":
        return ranges.length === 1 ? same("ln") : `(ln(${args()[0]}) / ln(${args()[1]}))`
      case "COUNT":
      case "SUM":
      case "AVG":
      case "MIN":
      case "MAX":
      case "ANY_VALUE":
      case "ARRAY_AGG":
      case "STRING_AGG":
      case "STDDEV":
      case "STDDEV_SAMP":
      case "STDDEV_POP":
      case "VARIANCE":
      case "VAR_SAMP":
      case "VAR_POP":
      case "APPROX_COUNT_DISTINCT": {
        for (let k = open + 1; k < close; k++) {
          if (this.isKw(k, "IGNORE") || this.isKw(k, "RESPECT") || (this.isKw(k, "LIMIT") && u === "ARRAY_AGG")) {
            return this.fail(`${name.text}(… ${(this.tok(k) as { text: string }).text} …) is not supported by the emulator`, k)
          }
        }
        return raw()
      }
      case "COUNTIF":
        return `count_if(${this.expr(open + 1, close)})`
      case "LOGICAL_AND":
        return `bool_and(${this.expr(open + 1, close)})`
      case "LOGICAL_OR":
        return `bool_or(${this.expr(open + 1, close)})`
      case "GREATEST":
      case "LEAST": {
        const a = args()
        return `(CASE WHEN ${a.map((x) => `(${x}) IS NULL`).join(" OR ")} THEN NULL ELSE ${u.toLowerCase()}(${a.join(", ")}) END)`
      }
      case "SAFE_DIVIDE": {
        arity(2)
        const [a, b] = args()
        return `(CASE WHEN (${b}) = 0 THEN NULL ELSE (${a}) / (${b}) END)`
      }
      case "IEEE_DIVIDE": {
        arity(2)
        const [a, b] = args()
        return `(CAST(${a} AS DOUBLE) / CAST(${b} AS DOUBLE))`
      }
      case "SUBSTR":
      case "SUBSTRING":
        arity(2, 3)
        return same("substring")
      case "SPLIT": {
        arity(1, 2)
        const a = args()
        return `string_split(${a[0]}, ${a[1] ?? "','"})`
      }
      case "REGEXP_CONTAINS":
        arity(2)
        return same("regexp_matches")
      case "REGEXP_REPLACE": {
        arity(3)
        const a = args()
        return `regexp_replace(${a[0]}, ${a[1]}, ${a[2]}, 'g')`
      }
      case "REGEXP_EXTRACT": {
        arity(2)
        const pattern = this.tok(ranges[1]![0])
        if (pattern?.t !== "string" || ranges[1]![1] !== ranges[1]![0] + 1) {
          return this.fail("REGEXP_EXTRACT: the emulator needs the pattern as a string literal", i)
        }
        const groups = captureGroups(pattern.value)
        if (groups > 1) return this.fail("REGEXP_EXTRACT with more than one capture group is refused by BigQuery", i)
        const [s, re] = args()
        return `(CASE WHEN regexp_matches(${s}, ${re}) THEN regexp_extract(${s}, ${re}, ${groups}) END)`
      }
      case "ARRAY_LENGTH":
        arity(1)
        return same("len")
      case "ARRAY_TO_STRING":
        arity(2)
        return same("array_to_string")
      case "ARRAY_CONCAT": {
        const a = args()
        return a.slice(1).reduce((acc, x) => `list_concat(${acc}, ${x})`, a[0] ?? "[]")
      }
      case "ARRAY_REVERSE":
        arity(1)
        return same("list_reverse")
      case "GENERATE_ARRAY":
        arity(2, 3)
        return same("generate_series")
      case "ARRAY":
        // ARRAY(subquery)
        return `ARRAY(${this.expr(open + 1, close)})`
      case "CURRENT_TIMESTAMP":
        arity(0)
        return "get_current_timestamp()"
      case "CURRENT_DATE":
        arity(0)
        return "current_date"
      case "CURRENT_DATETIME":
        arity(0)
        return "CAST(get_current_timestamp() AS TIMESTAMP)"
      case "TIMESTAMP_MICROS":
        arity(1)
        return `CAST(make_timestamp(CAST(${args()[0]} AS BIGINT)) AS TIMESTAMPTZ)`
      case "TIMESTAMP_MILLIS":
        arity(1)
        return `CAST(make_timestamp(CAST(${args()[0]} AS BIGINT) * 1000) AS TIMESTAMPTZ)`
      case "TIMESTAMP_SECONDS":
        arity(1)
        return `CAST(make_timestamp(CAST(${args()[0]} AS BIGINT) * 1000000) AS TIMESTAMPTZ)`
      case "UNIX_MICROS":
        arity(1)
        return same("epoch_us")
      case "UNIX_MILLIS":
        arity(1)
        return `(epoch_us(${args()[0]}) // 1000)`
      case "UNIX_SECONDS":
        arity(1)
        return `(epoch_us(${args()[0]}) // 1000000)`
      case "UNIX_DATE":
        arity(1)
        return `date_diff('day', DATE '1970-01-01', ${args()[0]})`
      case "DATE": {
        arity(1, 3)
        const a = args()
        return a.length === 3 ? `make_date(${a.join(", ")})` : a.length === 2 ? this.fail("DATE(timestamp, time_zone) is not supported by the emulator", i) : `CAST(${a[0]} AS DATE)`
      }
      case "TIMESTAMP":
        arity(1)
        return `CAST(${args()[0]} AS TIMESTAMPTZ)`
      case "DATETIME":
        arity(1)
        return `CAST(${args()[0]} AS TIMESTAMP)`
      case "STRING":
        arity(1)
        return `CAST(${args()[0]} AS VARCHAR)`
      case "DATE_ADD":
      case "DATE_SUB":
      case "DATETIME_ADD":
      case "DATETIME_SUB":
      case "TIMESTAMP_ADD":
      case "TIMESTAMP_SUB": {
        arity(2)
        const [a, b] = args()
        const sum = `(${a} ${u.endsWith("ADD") ? "+" : "-"} ${b})`
        return u.startsWith("DATE_") ? `CAST(${sum} AS DATE)` : u.startsWith("DATETIME") ? `CAST(${sum} AS TIMESTAMP)` : sum
      }
      case "DATE_DIFF": {
        arity(3)
        const unit = this.unit(ranges[2], new Set(["DAY"]), "DATE_DIFF")
        const [a, b] = args()
        return `date_diff('${unit}', ${b}, ${a})`
      }
      case "TIMESTAMP_DIFF":
      case "DATETIME_DIFF": {
        arity(3)
        const unit = this.unit(ranges[2], DIFF_UNITS, name.text)
        const [a, b] = args()
        return `date_sub('${unit}', ${b}, ${a})`
      }
      case "TIMESTAMP_TRUNC":
      case "DATETIME_TRUNC":
      case "DATE_TRUNC": {
        arity(2)
        const unit = this.unit(ranges[1], TRUNC_UNITS, name.text)
        const inner = `date_trunc('${unit}', ${this.expr(ranges[0]![0], ranges[0]![1])})`
        return u === "DATE_TRUNC" ? `CAST(${inner} AS DATE)` : u === "DATETIME_TRUNC" ? `CAST(${inner} AS TIMESTAMP)` : inner
      }
      case "GENERATE_UUID":
        arity(0)
        return "CAST(gen_random_uuid() AS VARCHAR)"
      case "TO_JSON_STRING":
        arity(1)
        return `CAST(to_json(${args()[0]}) AS VARCHAR)`
      case "TO_JSON":
        arity(1)
        return same("to_json")
      case "PARSE_JSON":
        arity(1)
        return `json(${args()[0]})`
      case "JSON_VALUE":
      case "JSON_EXTRACT_SCALAR": {
        arity(1, 2)
        const a = args()
        const path = a[1] ?? "'$'"
        return `(CASE WHEN json_type(${a[0]}, ${path}) IN ('OBJECT', 'ARRAY') THEN NULL ELSE json_extract_string(${a[0]}, ${path}) END)`
      }
      case "JSON_QUERY":
      case "JSON_EXTRACT": {
        arity(1, 2)
        const a = args()
        return `json_extract(${a[0]}, ${a[1] ?? "'$'"})`
      }
      case "SHA256":
        arity(1)
        return `unhex(sha256(${args()[0]}))`
      case "MD5":
        arity(1)
        return `unhex(md5(${args()[0]}))`
      case "TO_HEX":
        arity(1)
        return `lower(hex(${args()[0]}))`
      case "BYTE_LENGTH":
        arity(1)
        return same("octet_length")
      case "FORMAT":
      case "FORMAT_TIMESTAMP":
      case "FORMAT_DATE":
      case "PARSE_TIMESTAMP":
      case "PARSE_DATE":
      default:
        return this.fail(`the function ${name.text}() is not supported by the emulator`, i)
    }
  }

  // ----- statements -----

  statement(start: number, end: number): Statement {
    const first = this.tok(start)
    if (first === undefined) return this.fail("an empty statement", start)
    const word = first.t === "ident" ? first.upper : first.t === "op" && first.text === "(" ? "SELECT" : ""
    switch (word) {
      case "SELECT":
      case "WITH":
        return { kind: "SELECT", sql: this.expr(start, end) }
      case "INSERT": {
        const [path, k] = this.tablePath(this.isKw(start + 1, "INTO") ? start + 2 : start + 1, end)
        return { kind: "INSERT", sql: `INSERT INTO ${path} ${this.expr(k, end)}` }
      }
      case "UPDATE": {
        const [path, k] = this.tablePath(start + 1, end)
        return { kind: "UPDATE", sql: `UPDATE ${path} ${this.expr(k, end)}` }
      }
      case "DELETE": {
        const [path, k] = this.tablePath(this.isKw(start + 1, "FROM") ? start + 2 : start + 1, end)
        return { kind: "DELETE", sql: `DELETE FROM ${path} ${this.expr(k, end)}` }
      }
      case "MERGE":
        return this.merge(start, end)
      case "TRUNCATE":
        if (!this.isKw(start + 1, "TABLE")) return this.fail("TRUNCATE TABLE name", start)
        return { kind: "TRUNCATE_TABLE", sql: `TRUNCATE TABLE ${this.tablePath(start + 2, end)[0]}` }
      case "CREATE":
        return this.create(start, end)
      case "DROP": {
        const what = (this.tok(start + 1) as { upper?: string } | undefined)?.upper
        const kind = what === "TABLE" ? "DROP_TABLE" : what === "SCHEMA" ? "DROP_SCHEMA" : what === "VIEW" ? "DROP_VIEW" : undefined
        if (kind === undefined) return this.fail(`DROP ${what ?? ""} is not supported by the emulator`, start)
        let k = start + 2
        let ifExists = ""
        if (this.isKw(k, "IF") && this.isKw(k + 1, "EXISTS")) {
          ifExists = "IF EXISTS "
          k += 2
        }
        const [path, after] = this.tablePath(k, end)
        const cascade = this.isKw(after, "CASCADE") ? " CASCADE" : ""
        return { kind, sql: `DROP ${what} ${ifExists}${path}${cascade}` }
      }
      case "ALTER": {
        if (!this.isKw(start + 1, "TABLE")) return this.fail("only ALTER TABLE is supported by the emulator", start)
        // ALTER TABLE t ADD COLUMN [IF NOT EXISTS] c TYPE
        const out: Array<string> = []
        let [path, k] = this.tablePath(start + 2, end)
        if (this.isKw(k, "IF") && this.isKw(k + 1, "EXISTS")) {
          path = `IF EXISTS ${path}`
          k += 2
        }
        if (this.isKw(k, "ADD") && this.isKw(k + 1, "COLUMN")) {
          k += 2
          let ifNot = ""
          if (this.isKw(k, "IF") && this.isKw(k + 1, "NOT") && this.isKw(k + 2, "EXISTS")) {
            ifNot = "IF NOT EXISTS "
            k += 3
          }
          const col = this.tok(k)
          if (col === undefined || (col.t !== "ident" && col.t !== "qident")) return this.fail("ADD COLUMN name TYPE", k)
          const optionsAt = [...Array(end - k).keys()].map((x) => k + x).find((x) => this.isKw(x, "OPTIONS"))
          out.push(`ALTER TABLE ${path} ADD COLUMN ${ifNot}${quoteIdent(col.t === "ident" ? col.text : col.value)} ${this.type(k + 1, optionsAt ?? end)}`)
          return { kind: "ALTER_TABLE", sql: out.join(" ") }
        }
        if (this.isKw(k, "DROP") && this.isKw(k + 1, "COLUMN")) return { kind: "ALTER_TABLE", sql: `ALTER TABLE ${path} ${this.expr(k, end)}` }
        if (this.isKw(k, "RENAME")) return { kind: "ALTER_TABLE", sql: `ALTER TABLE ${path} ${this.expr(k, end)}` }
        return this.fail("the emulator supports ALTER TABLE … ADD COLUMN, DROP COLUMN and RENAME", k)
      }
      default:
        return this.fail(
          `${first.t === "ident" ? first.text : "this"} statements are not supported by the emulator (scripting, transactions, DECLARE/SET/IF/LOOP, EXPORT, LOAD DATA, CALL)`,
          start
        )
    }
  }

  private create(start: number, end: number): Statement {
    let k = start + 1
    let orReplace = ""
    if (this.isKw(k, "OR") && this.isKw(k + 1, "REPLACE")) {
      orReplace = "OR REPLACE "
      k += 2
    }
    if (this.isKw(k, "TEMP") || this.isKw(k, "TEMPORARY")) return this.fail("temporary tables (scripts) are not supported by the emulator", k)
    if (this.isKw(k, "SCHEMA")) {
      k++
      let ifNot = ""
      if (this.isKw(k, "IF") && this.isKw(k + 1, "NOT") && this.isKw(k + 2, "EXISTS")) {
        ifNot = "IF NOT EXISTS "
        k += 3
      }
      let optionsAt = k
      while (optionsAt < end && !this.isKw(optionsAt, "OPTIONS") && !this.isKw(optionsAt, "DEFAULT")) optionsAt++
      return { kind: "CREATE_SCHEMA", sql: `CREATE SCHEMA ${ifNot}${this.tablePath(k, optionsAt)[0]}` }
    }
    if (this.isKw(k, "VIEW")) {
      const as = [...Array(end - k).keys()].map((x) => k + x).find((x) => this.isKw(x, "AS"))
      if (as === undefined) return this.fail("CREATE VIEW name AS query", k)
      return { kind: "CREATE_VIEW", sql: `CREATE ${orReplace}VIEW ${this.tablePath(k + 1, as)[0]} AS ${this.expr(as + 1, end)}` }
    }
    if (!this.isKw(k, "TABLE")) return this.fail("the emulator supports CREATE TABLE, CREATE SCHEMA and CREATE VIEW", k)
    k++
    let ifNot = ""
    if (this.isKw(k, "IF") && this.isKw(k + 1, "NOT") && this.isKw(k + 2, "EXISTS")) {
      ifNot = "IF NOT EXISTS "
      k += 3
    }
    const [name, afterName] = this.tablePath(k, end)
    k = afterName
    if (this.isKw(k, "LIKE") || this.isKw(k, "COPY") || this.isKw(k, "CLONE")) return this.fail(`CREATE TABLE … ${(this.tok(k) as { text: string }).text} is not supported by the emulator`, k)
    let columns = ""
    if (this.isOp(k, "(")) {
      const close = this.close(k, end)
      const defs = this.split(k + 1, close).map(([a, b]) => {
        const col = this.tok(a)
        if (col === undefined || (col.t !== "ident" && col.t !== "qident")) return this.fail("a column definition: name TYPE", a)
        let typeEnd = b
        let notNull = ""
        for (let x = a + 1; x < b; x++) {
          if (this.isOp(x, "(") || this.isOp(x, "<")) {
            x = this.close(x, b)
            continue
          }
          if (this.isKw(x, "NOT") && this.isKw(x + 1, "NULL")) {
            notNull = " NOT NULL"
            typeEnd = Math.min(typeEnd, x)
          }
          if (this.isKw(x, "OPTIONS") || this.isKw(x, "DEFAULT") || this.isKw(x, "COLLATE")) typeEnd = Math.min(typeEnd, x)
          if (this.isKw(x, "PRIMARY") || this.isKw(x, "REFERENCES")) return this.fail("column constraints (PRIMARY KEY, REFERENCES) are not supported by the emulator", x)
        }
        return `${quoteIdent(col.t === "ident" ? col.text : col.value)} ${this.type(a + 1, typeEnd)}${notNull}`
      })
      columns = ` (${defs.join(", ")})`
      k = close + 1
    }
    // PARTITION BY …, CLUSTER BY …, OPTIONS(…) only shape storage: skipped
    let asAt: number | undefined
    for (let x = k; x < end; x++) {
      if (this.isOp(x, "(")) {
        x = this.close(x, end)
        continue
      }
      if (this.isKw(x, "AS")) {
        asAt = x
        break
      }
    }
    if (asAt === undefined) {
      if (columns === "") return this.fail("CREATE TABLE needs columns or AS query", start)
      return { kind: "CREATE_TABLE", sql: `CREATE ${orReplace}TABLE ${ifNot}${name}${columns}` }
    }
    if (columns !== "") return this.fail("CREATE TABLE with both columns and AS query is not supported by the emulator", asAt)
    return { kind: "CREATE_TABLE_AS_SELECT", sql: `CREATE ${orReplace}TABLE ${ifNot}${name} AS ${this.expr(asAt + 1, end)}` }
  }

  private merge(start: number, end: number): Statement {
    let k = start + 1
    if (this.isKw(k, "INTO")) k++
    // target path [AS] alias
    const [target, afterTarget] = this.tablePath(k, end)
    k = afterTarget
    let targetAlias: string | undefined
    if (this.isKw(k, "AS")) k++
    if (!this.isKw(k, "USING")) {
      const a = this.tok(k)
      if (a?.t !== "ident" && a?.t !== "qident") return this.fail("MERGE target [AS alias] USING source ON condition", k)
      targetAlias = this.expr(k, k + 1)
      k++
    }
    if (!this.isKw(k, "USING")) return this.fail("MERGE … USING source ON condition", k)
    k++
    const sourceStart = k
    let source: string
    if (this.isOp(k, "(")) {
      const close = this.close(k, end)
      source = `(${this.expr(k + 1, close)})`
      k = close + 1
    } else {
      ;[source, k] = this.tablePath(k, end)
    }
    let sourceAlias: string | undefined
    if (this.isKw(k, "AS")) k++
    if (!this.isKw(k, "ON")) {
      const a = this.tok(k)
      if (a?.t !== "ident" && a?.t !== "qident") return this.fail("MERGE … USING source [AS alias] ON condition", k)
      sourceAlias = this.expr(k, k + 1)
      k++
    }
    if (!this.isKw(k, "ON")) return this.fail("MERGE … USING source ON condition", k)
    const onStart = k + 1
    let whenAt = onStart
    while (whenAt < end && !this.isKw(whenAt, "WHEN")) {
      if (this.isOp(whenAt, "(")) whenAt = this.close(whenAt, end)
      whenAt++
    }
    const on = this.expr(onStart, whenAt)
    // the WHEN clauses: INSERT ROW is refused, the rest is DuckDB's syntax too
    for (let x = whenAt; x < end; x++) {
      if (this.isKw(x, "INSERT") && this.isKw(x + 1, "ROW")) return this.fail("MERGE … INSERT ROW is not supported by the emulator: name the columns", x)
    }
    const whens = this.expr(whenAt, end)
    const tq = targetAlias ?? target.split(".").at(-1)!
    const targetRef = `${target}${targetAlias === undefined ? "" : ` AS ${targetAlias}`}`
    const sourceRef = `${source}${sourceAlias === undefined ? (this.isOp(sourceStart, "(") ? " AS __offpeak_source" : "") : ` AS ${sourceAlias}`}`
    return {
      kind: "MERGE",
      sql: `MERGE INTO ${targetRef} USING ${sourceRef} ON ${on} ${whens}`,
      mergeCheck: `SELECT 1 FROM ${targetRef} JOIN ${sourceRef} ON ${on} GROUP BY ${tq}.rowid HAVING count(*) > 1 LIMIT 1`
    }
  }
}

/** splits a script into statements and translates each */
export const translate = (sql: string): Translation => {
  const tokens = tokenize(sql)
  const rewriter = new Rewriter(tokens)
  const statements: Array<Statement> = []
  let start = 0
  for (let i = 0; i <= tokens.length; i++) {
    const t = tokens[i]
    if (t !== undefined && t.t === "op" && (t.text === "(" || t.text === "[")) {
      i = rewriter.close(i)
      continue
    }
    if (t === undefined || (t.t === "op" && t.text === ";")) {
      if (i > start) statements.push(rewriter.statement(start, i))
      start = i + 1
    }
  }
  if (statements.length === 0) throw new SqlError("the query is empty")
  return { statements, params: rewriter.params }
}

/**
 * DuckDB macros the translations call: 0-based and 1-based array positions,
 * NULL (DuckDB's answer for a missing position) for negatives instead of
 * DuckDB's counting from the end.
 */
export const MACROS = [
  "CREATE OR REPLACE MACRO bq_offset(i) AS CASE WHEN i < 0 THEN NULL ELSE i + 1 END",
  "CREATE OR REPLACE MACRO bq_ordinal(i) AS CASE WHEN i < 1 THEN NULL ELSE i END"
]
