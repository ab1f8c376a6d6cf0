/**
 * Which errors of the Postgres sink are the data's fault (the same rows fail
 * the same way again) and which are the database's (unreachable, a missing
 * table): the first become a `Refused` reason naming the row and column, the
 * others `Unavailable`.
 *
 * @internal
 */
import type { SqlError } from "effect/sql"

/** the fields of the server's error, when the server answered */
export interface ServerError {
  readonly code?: string | undefined
  readonly message?: string | undefined
  readonly detail?: string | undefined
  readonly where?: string | undefined
  readonly column?: string | undefined
  readonly constraint?: string | undefined
}

/** the server's error fields behind a `SqlError` (none for a socket error) */
export const serverError = (error: SqlError.SqlError): ServerError => {
  const cause = error.reason.cause as Record<string, unknown> | undefined
  const text = (key: string) => typeof cause?.[key] === "string" ? cause[key] as string : undefined
  return {
    code: text("code"),
    message: text("message"),
    detail: text("detail"),
    where: text("where"),
    column: text("column"),
    constraint: text("constraint")
  }
}

/**
 * True when the server refused the values themselves (the same rows fail the
 * same way again): SQLSTATE class 22 (data exceptions: a NUL byte, a string
 * over a length, a number out of range, bad input syntax, a vector of the
 * wrong dimension), class 23 (integrity: NOT NULL, unique on another index,
 * foreign key, check), 21000 (two rows of a statement on one key the sink
 * could not tell apart, as `1.0` and `1.00` in a numeric key), 54000 (a value
 * too large for an index), and 42804 (datatype mismatch) when it names a
 * parameter: a mismatch of the statement itself is the table's, not a row's.
 */
export const isRefusal = (server: ServerError): boolean => {
  const code = server.code
  if (code === undefined) return false
  if (code === "42804") return parameterOf(server.where) !== undefined
  return code.startsWith("22") || code.startsWith("23") || code === "21000" || code === "54000"
}

/**
 * The 1-based number of the parameter a bind-time error names
 * (`unnamed portal parameter $4 = '...'`): a value the server could not read
 * as its column's type.
 */
export const parameterOf = (where: string | undefined): number | undefined => {
  const match = where === undefined ? null : /\bparameter \$(\d+)\b/u.exec(where)
  return match === null ? undefined : Number(match[1])
}
