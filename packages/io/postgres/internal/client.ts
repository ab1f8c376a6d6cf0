/**
 * Connections of the Postgres connector: one `@effect/sql-pg` client on one
 * connection per source read or sink write, messages that never show a
 * password, and a binary codec for pgvector's `vector` so a row holding one
 * decodes to numbers instead of tearing the connection down.
 *
 * @internal
 */
import { PgClient, PgTypes } from "@effect/sql-pg"
import { Effect, Redacted, Result } from "effect"
import type { Scope } from "effect"
import * as Reactivity from "effect/reactivity/Reactivity"
import type { SqlError } from "effect/sql"

/** a URL given as text or as a `Redacted` */
export type Url = Redacted.Redacted<string> | Redacted.Redacted | string

/** how long connecting may take */
export const CONNECT_TIMEOUT = "10 seconds"

const urlText = (url: Url): string => typeof url === "string" ? url : String(Redacted.value(url))

/** `127.0.0.1:5432/app` (no user, no password), or `postgres` when the URL cannot be parsed */
export const where = (url: Url): string => {
  try {
    const u = new URL(urlText(url))
    const db = decodeURIComponent(u.pathname.replace(/^\//u, ""))
    return `${u.hostname}${u.port === "" ? "" : `:${u.port}`}${db === "" ? "" : `/${db}`}`
  } catch {
    return "postgres"
  }
}

/**
 * What went wrong, from a `SqlError`: the server's or the socket's message,
 * with the server's detail and hint when it gave them.
 */
export const describe = (error: SqlError.SqlError): string => {
  const cause = error.reason.cause as
    | { readonly message?: unknown; readonly detail?: unknown; readonly hint?: unknown }
    | undefined
  const base = typeof cause?.message === "string" && cause.message.length > 0 ? cause.message : error.reason.message
  const detail = typeof cause?.detail === "string" ? ` (${cause.detail})` : ""
  const hint = typeof cause?.hint === "string" ? ` hint: ${cause.hint}` : ""
  const kind = error.reason._tag === "ConnectionError" || error.reason._tag === "AuthenticationError"
    ? `${error.reason.message}: `
    : ""
  return `${kind}${base}${detail}${hint}`
}

/** pgvector's binary form: int16 dimensions, int16 unused, then float32 big-endian values */
const vectorCodec: PgTypes.Codec<ReadonlyArray<number>> = {
  encode: (values) => {
    const bytes = new Uint8Array(4 + 4 * values.length)
    const view = new DataView(bytes.buffer)
    view.setInt16(0, values.length)
    view.setInt16(2, 0)
    values.forEach((v, i) => view.setFloat32(4 + 4 * i, v))
    return Result.succeed(bytes)
  },
  decode: (bytes) => {
    if (bytes.length < 4) return Result.fail(new PgTypes.CodecError({ message: "vector: short value" }))
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    const dim = view.getInt16(0)
    if (bytes.length !== 4 + 4 * dim) {
      return Result.fail(new PgTypes.CodecError({ message: `vector: ${bytes.length} bytes for ${dim} dimensions` }))
    }
    const out = new Array<number>(dim)
    for (let i = 0; i < dim; i++) out[i] = view.getFloat32(4 + 4 * i)
    return Result.succeed(out)
  }
}

/**
 * A client on one connection, closed with the scope. With `vectors`, the
 * `vector` type of the database (when pgvector is installed) decodes to an
 * array of numbers.
 */
export const open = (
  url: Url,
  options?: { readonly vectors?: boolean | undefined }
): Effect.Effect<PgClient.PgClient, SqlError.SqlError, Scope.Scope> =>
  Effect.gen(function*() {
    const types = PgTypes.makeRegistry()
    const client = yield* PgClient.makeClient({
      url: Redacted.make(urlText(url)),
      connectTimeout: CONNECT_TIMEOUT,
      applicationName: "offpeak",
      types
    })
    if (options?.vectors) {
      // OIDs of extension types differ per database: look them up; codecs are read at each row description
      const rows = yield* client.unsafe<{ oid: unknown; typarray: unknown }>(
        "SELECT oid, typarray FROM pg_type WHERE typname = 'vector' AND typtype = 'b'"
      )
      for (const row of rows) types.register(Number(row.oid), vectorCodec, { arrayOid: Number(row.typarray) })
    }
    return client
  }).pipe(Effect.provideServiceEffect(Reactivity.Reactivity, Reactivity.make))
