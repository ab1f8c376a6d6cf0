/**
 * The GoogleSQL of a BigQuery pushdown (see `Pushdown.ts`): the expression
 * that builds each row's `request` (or `content`) column server-side, the
 * output schema as columns with the checks a JSON answer must pass, and the
 * "classified" query that joins a job's input to its output and says, per
 * row, the decoded values or why the row failed.
 *
 * Only GoogleSQL that real BigQuery runs is written (the emulator runs the
 * same text): constants travel as named parameters, never pasted into the
 * text; conditional expressions short-circuit (GoogleSQL evaluates only the
 * branch taken), which guards `PARSE_JSON`.
 *
 * @internal
 */
import type { Schema } from "effect"
import { SchemaAST } from "effect"
import * as AnthropicStructuredOutput from "effect/ai/AnthropicStructuredOutput"

// ===== the output as columns =====

/** the BigQuery type of an output column */
export type ColumnType = "STRING" | "INTEGER" | "FLOAT" | "BOOLEAN" | "JSON"

/** one top-level field of the structured answer, as a column of the target */
export interface Column {
  readonly name: string
  readonly type: ColumnType
  /** the answer must hold it (not absent, not null) */
  readonly required: boolean
  /** the values it may take (literals) */
  readonly values?: ReadonlyArray<string | number | boolean> | undefined
}

const isInt = (ast: SchemaAST.AST) =>
  (ast.checks ?? []).some((c) => (c.annotations as { representation?: { id?: string } } | undefined)?.representation?.id === "effect/schema/isInt")

const literalType = (v: unknown): ColumnType | undefined =>
  typeof v === "string" ? "STRING" : typeof v === "boolean" ? "BOOLEAN" : typeof v === "number" ? (Number.isInteger(v) ? "INTEGER" : "FLOAT") : undefined

/** the column of one field (its encoded side: what the answer's JSON holds), or why there is none */
const columnOf = (name: string, ast: SchemaAST.AST, required: boolean): Column | string => {
  switch (ast._tag) {
    case "String":
    case "TemplateLiteral":
      return { name, type: "STRING", required }
    case "Number":
      return { name, type: isInt(ast) ? "INTEGER" : "FLOAT", required }
    case "Boolean":
      return { name, type: "BOOLEAN", required }
    case "Literal": {
      const type = literalType(ast.literal)
      return type === undefined ? `field ${name}: a ${typeof ast.literal} literal has no BigQuery type` : { name, type, required, values: [ast.literal as string | number | boolean] }
    }
    case "Enum": {
      const values = ast.enums.map(([, v]) => v)
      const type = values.every((v) => typeof v === "string") ? "STRING" : values.every((v) => typeof v === "number") ? (values.every(Number.isInteger) ? "INTEGER" : "FLOAT") : undefined
      return type === undefined ? `field ${name}: an enum of strings and numbers has no BigQuery type` : { name, type, required, values }
    }
    case "Union": {
      const members = ast.types.filter((t) => t._tag !== "Null" && t._tag !== "Undefined")
      const nullable = members.length < ast.types.length
      const columns = members.map((m) => columnOf(name, m, false))
      const bad = columns.find((c) => typeof c === "string")
      if (bad !== undefined) return bad
      const cs = columns as ReadonlyArray<Column>
      if (cs.length === 0) return `field ${name}: only null`
      const first = cs[0]!
      const req = required && !nullable
      if (cs.every((c) => c.type === first.type)) {
        const values = cs.every((c) => c.values !== undefined) ? cs.flatMap((c) => c.values!) : undefined
        return { name, type: first.type, required: req, ...(values !== undefined ? { values } : {}) }
      }
      if (cs.every((c) => c.type === "INTEGER" || c.type === "FLOAT")) return { name, type: "FLOAT", required: req }
      return { name, type: "JSON", required: req }
    }
    case "Arrays":
    case "Objects":
    case "Unknown":
    case "Any":
    case "ObjectKeyword":
      return { name, type: "JSON", required }
    default:
      return `field ${name}: a ${ast._tag} has no BigQuery type`
  }
}

const NAME = /^[A-Za-z_][A-Za-z0-9_]{0,299}$/

/** the columns of an output schema (a struct), or why it cannot be decoded server-side */
export const columnsOf = (schema: Schema.Top): ReadonlyArray<Column> | string => {
  let ast = SchemaAST.toEncoded(schema.ast)
  while (ast._tag === "Suspend") ast = ast.thunk()
  if (ast._tag !== "Objects") return "the output schema must be a struct (Schema.Struct)"
  if (ast.indexSignatures.length > 0) return "the output schema must name its fields (no records)"
  const out: Array<Column> = []
  for (const ps of ast.propertySignatures) {
    const name = String(ps.name)
    if (!NAME.test(name)) return `field ${JSON.stringify(name)} cannot be a BigQuery column (letters, digits, underscores)`
    const optional = ps.type.context?.isOptional === true
    const c = columnOf(name, ps.type, !optional)
    if (typeof c === "string") return c
    out.push(c)
  }
  if (out.length === 0) return "the output schema has no fields"
  return out
}

// ===== JSON Schema for responseJsonSchema =====

/** the JSON Schema keywords Gemini's `responseJsonSchema` takes (the same list as the Gemini adapter's) */
const KEYWORDS = new Set([
  "$ref",
  "$defs",
  "type",
  "title",
  "description",
  "enum",
  "format",
  "items",
  "prefixItems",
  "minItems",
  "maxItems",
  "minimum",
  "maximum",
  "anyOf",
  "oneOf",
  "properties",
  "additionalProperties",
  "required",
  "propertyOrdering"
])

const toGemini = (node: unknown): unknown => {
  if (Array.isArray(node)) return node.map(toGemini)
  if (typeof node !== "object" || node === null) return node
  const out: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(node)) {
    if (key === "const") out.enum = [value]
    else if (key === "properties" || key === "$defs") {
      out[key] = Object.fromEntries(Object.entries(value as Record<string, unknown>).map(([k, v]) => [k, toGemini(v)]))
    } else if (KEYWORDS.has(key)) out[key] = key === "enum" || key === "required" || key === "propertyOrdering" ? value : toGemini(value)
  }
  return out
}

/** the `responseJsonSchema` of an output schema (Anthropic's structured-output subset, `const` as a one-value `enum`) */
export const responseJsonSchema = (schema: Schema.Top): unknown =>
  toGemini((AnthropicStructuredOutput.toCodecAnthropic(schema as never) as { readonly jsonSchema: unknown }).jsonSchema)

// ===== identifiers =====

/** a column quoted for GoogleSQL */
export const q = (name: string) => `\`${name.replaceAll("`", "")}\``

// ===== classifying a job's rows =====

/** what the classified query needs to know */
export interface Classify {
  readonly kind: "chat" | "embedding"
  readonly input: string
  readonly output: string
  readonly keys: ReadonlyArray<string>
  readonly columns: ReadonlyArray<Column>
  /** the name of the embedding's column in the target */
  readonly embeddingColumn: string
  /** `SAFE.PARSE_JSON` when the engine has it, else `PARSE_JSON` guarded by a shape check (see the module documentation of `Pushdown.ts`) */
  readonly safeParse: boolean
}

/** a JSON path member for a field name (names are plain identifiers) */
const path = (name: string) => `'$.${name}'`

/** the SQL checks of one column over the parsed answer `j`: [is valid, value, what was expected] */
const columnSql = (c: Column, j: string, enumParam: string | undefined) => {
  const query = `JSON_QUERY(${j}, ${path(c.name)})`
  const text = `TO_JSON_STRING(${query})`
  const present = `(${query} IS NOT NULL AND ${text} != 'null')`
  const scalar = `JSON_VALUE(${j}, ${path(c.name)})`
  let typed: string
  let value: string
  let expected: string
  switch (c.type) {
    case "STRING":
      typed = `STARTS_WITH(${text}, '"')`
      value = scalar
      expected = "a string"
      break
    case "INTEGER":
      typed = `(NOT STARTS_WITH(${text}, '"') AND SAFE_CAST(${scalar} AS FLOAT64) IS NOT NULL AND SAFE_CAST(${scalar} AS FLOAT64) = TRUNC(SAFE_CAST(${scalar} AS FLOAT64)))`
      value = `CAST(SAFE_CAST(${scalar} AS FLOAT64) AS INT64)`
      expected = "an integer"
      break
    case "FLOAT":
      typed = `(NOT STARTS_WITH(${text}, '"') AND SAFE_CAST(${scalar} AS FLOAT64) IS NOT NULL)`
      value = `SAFE_CAST(${scalar} AS FLOAT64)`
      expected = "a number"
      break
    case "BOOLEAN":
      typed = `${text} IN ('true', 'false')`
      value = `(${text} = 'true')`
      expected = "a boolean"
      break
    case "JSON":
      typed = "TRUE"
      value = query
      expected = "a value"
      break
  }
  if (enumParam !== undefined) {
    const member = c.type === "STRING" ? `${scalar} IN UNNEST(@${enumParam})` : c.type === "BOOLEAN" ? `${value} IN UNNEST(@${enumParam})` : `SAFE_CAST(${scalar} AS FLOAT64) IN UNNEST(@${enumParam})`
    typed = `(${typed} AND ${member})`
    expected = `one of ${c.values!.map((v) => JSON.stringify(v)).join(", ")}`
  }
  const valid = c.required ? `(${present} AND ${typed})` : `(NOT ${present} OR ${typed})`
  return { valid, value: `IF(${present}, ${value}, NULL)`, expected, text }
}

/** the parameters the classified query of a chat job needs: each column's values (`__offpeak_enum_<i>`) and what it expects (`__offpeak_expect_<i>`) */
export const columnParams = (columns: ReadonlyArray<Column>): Record<string, string | ReadonlyArray<string | number | boolean>> => {
  const out: Record<string, string | ReadonlyArray<string | number | boolean>> = {}
  columns.forEach((c, i) => {
    if (c.values !== undefined) out[`__offpeak_enum_${i}`] = c.values
    out[`__offpeak_expect_${i}`] = columnSql(c, "j", c.values !== undefined ? "p" : undefined).expected
  })
  return out
}

/**
 * The rows of a job's input, each with its decoded output columns and
 * `__reason` (NULL when the row succeeded: it has an answer that decodes),
 * `__raw` (the status or the answer's text) and `__key` (the key as text).
 */
export const classified = (c: Classify): string => {
  const on = c.keys.map((k) => `i.${q(k)} = o.${q(k)}`).join(" AND ")
  const partition = c.keys.map((k) => q(k)).join(", ")
  const keyText = c.keys.length === 1 ? `CAST(i.${q(c.keys[0]!)} AS STRING)` : `TO_JSON_STRING(STRUCT(${c.keys.map((k) => `i.${q(k)} AS ${q(k)}`).join(", ")}))`
  const status = "COALESCE(o.__status, '')"
  const missing = "'no answer: the job ended without answering this row'"
  // a source row whose prompt (or input) expression is NULL: said as such, not as the provider's "not valid JSON"
  const nullInput = `'the source row gives no ${c.kind === "chat" ? "prompt" : "input"}: its expression is NULL'`
  if (c.kind === "embedding") {
    return `SELECT ${c.keys.map((k) => `i.${q(k)}`).join(", ")}, ${keyText} AS __key,
  o.__vector AS ${q(c.embeddingColumn)},
  CASE
    WHEN i.content IS NULL THEN ${nullInput}
    WHEN o.__present IS NULL THEN ${missing}
    WHEN ${status} != '' THEN CONCAT('the job failed the row: ', o.__status)
    WHEN o.__vector IS NULL THEN 'the answer holds no embedding values'
    ELSE NULL
  END AS __reason,
  IF(${status} != '', o.__status, NULL) AS __raw
FROM ${c.input} AS i
LEFT JOIN (
  SELECT ${partition}, TRUE AS __present, CAST(status AS STRING) AS __status, PARSE_JSON(JSON_QUERY(predictions, '$[0].embeddings.values')) AS __vector
  FROM ${c.output}
  WHERE TRUE
  QUALIFY ROW_NUMBER() OVER (PARTITION BY ${partition} ORDER BY IF(COALESCE(CAST(status AS STRING), '') = '', 0, 1)) = 1
) AS o ON ${on}`
  }
  const parse = (t: string) =>
    c.safeParse
      ? `SAFE.PARSE_JSON(${t})`
      : `IF(REGEXP_CONTAINS(${t}, r'^\\s*\\{[\\s\\S]*\\}\\s*$'), PARSE_JSON(${t}), NULL)`
  const checks = c.columns.map((col, i) => columnSql(col, "o.__j", col.values !== undefined ? `__offpeak_enum_${i}` : undefined))
  const fieldReasons = c.columns.map((col, i) =>
    `    WHEN NOT ${checks[i]!.valid} THEN CONCAT('field "${col.name}": expected ', @__offpeak_expect_${i}, ', got ', COALESCE(${checks[i]!.text}, 'nothing'))`
  ).join("\n")
  return `SELECT ${c.keys.map((k) => `i.${q(k)}`).join(", ")}, ${keyText} AS __key,
  ${c.columns.map((col, i) => `${checks[i]!.value} AS ${q(col.name)}`).join(",\n  ")},
  CASE
    WHEN JSON_VALUE(i.request, '$.contents[0].parts[0].text') IS NULL THEN ${nullInput}
    WHEN o.__present IS NULL THEN ${missing}
    WHEN ${status} != '' THEN CONCAT('the job failed the row: ', o.__status)
    WHEN o.__has_response IS NOT TRUE THEN 'the job wrote neither a response nor a status'
    WHEN o.__finish IS NULL OR o.__finish != 'STOP' THEN CONCAT('the answer is not complete (finishReason ', COALESCE(o.__finish, 'none'), ')')
    WHEN o.__j IS NULL THEN 'the answer is not a JSON object'
${fieldReasons}
    ELSE NULL
  END AS __reason,
  IF(${status} != '', o.__status, o.__text) AS __raw
FROM ${c.input} AS i
LEFT JOIN (
  SELECT ${partition}, __present, __status, __has_response, __finish, __text,
    IF(__has_response AND COALESCE(__status, '') = '' AND __finish = 'STOP' AND __text IS NOT NULL, ${parse("__text")}, NULL) AS __j
  FROM (
    SELECT ${partition}, TRUE AS __present, CAST(status AS STRING) AS __status, response IS NOT NULL AS __has_response,
      JSON_VALUE(response, '$.candidates[0].content.parts[0].text') AS __text,
      JSON_VALUE(response, '$.candidates[0].finishReason') AS __finish
    FROM ${c.output}
    WHERE TRUE
    QUALIFY ROW_NUMBER() OVER (PARTITION BY ${partition} ORDER BY IF(COALESCE(CAST(status AS STRING), '') = '', 0, 1)) = 1
  )
) AS o ON ${on}`
}
