/**
 * Postgres for tests: where it is, and a fresh schema per suite or test.
 *
 * Tests find Postgres through `OFFPEAK_TEST_PG_URL`
 * (`eval "$(scripts/postgres.sh env)"` sets it). When it is missing, suites
 * declared with {@link describePostgres} **fail** when `CI` is set (CI must
 * never silently skip them) and are **skipped** with a message otherwise, so
 * a developer without Postgres can still run everything else.
 */
import { describe, it } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { Effect, Redacted } from "effect"
import type { Scope } from "effect"
import { Reactivity } from "effect/reactivity"
import type { SqlError } from "effect/sql"
import * as crypto from "node:crypto"

/** the environment variable holding the URL of the test server */
export const ENV = "OFFPEAK_TEST_PG_URL"

/** true when `CI` is set to anything but `""`, `0` or `false` */
export const isCI = (): boolean => {
  const ci = process.env.CI
  return ci !== undefined && ci !== "" && ci !== "0" && ci.toLowerCase() !== "false"
}

/** the URL of the test server, if there is one */
export const url = (): string | undefined => {
  const value = process.env[ENV]
  return value === undefined || value.trim() === "" ? undefined : value.trim()
}

const howTo = `start one with \`scripts/postgres.sh start\` and run \`${ENV}=$(scripts/postgres.sh url) npm test\``

const warned = new Set<string>()

/**
 * `describe(name, …)` for tests that need Postgres; `body` gets the URL.
 * Without `OFFPEAK_TEST_PG_URL`: a failing test under CI, a skipped one (and a
 * warning) elsewhere.
 */
export const describePostgres = (name: string, body: (url: string) => void): void => {
  const found = url()
  if (found !== undefined) {
    describe(name, () => body(found))
    return
  }
  if (isCI()) {
    describe(name, () => {
      it(`needs Postgres: ${ENV} is not set`, () => {
        throw new Error(`${name}: ${ENV} is not set and CI is: Postgres tests must run in CI (${howTo})`)
      })
    })
    return
  }
  if (!warned.has(name)) {
    warned.add(name)
    console.warn(`[skipped] ${name}: ${ENV} is not set; ${howTo}`)
  }
  describe(name, () => {
    it.skip(`skipped: ${ENV} is not set (${howTo})`, () => {})
  })
}

/** a client on one connection, closed with the scope */
export const connect = (target: string): Effect.Effect<PgClient.PgClient, SqlError.SqlError, Scope.Scope> =>
  PgClient.makeClient({ url: Redacted.make(target) }).pipe(
    Effect.provideServiceEffect(Reactivity.Reactivity, Reactivity.make)
  )

/** `url` whose connections use `search_path` (through the startup `options`) */
export const withSearchPath = (base: string, searchPath: ReadonlyArray<string>): string => {
  const u = new URL(base)
  const options = [u.searchParams.get("options"), `-c search_path=${searchPath.join(",")}`].filter(Boolean).join(" ")
  u.searchParams.set("options", options)
  return u.toString()
}

/** a schema of its own: connections to `url` create and find tables in it */
export interface FreshSchema {
  readonly schema: string
  /** the server's URL with `search_path` set to the schema, then `public` (where extensions live) */
  readonly url: string
}

/**
 * Creates an empty schema with a random name and drops it (with everything in
 * it) when the scope closes.
 */
export const freshSchema = (base: string, prefix = "t"): Effect.Effect<FreshSchema, SqlError.SqlError, Scope.Scope> => {
  const schema = `offpeak_${prefix.toLowerCase().replace(/[^a-z0-9_]/g, "_")}_${crypto.randomBytes(5).toString("hex")}`
  const run = (statement: string) => Effect.scoped(Effect.flatMap(connect(base), (sql) => sql.unsafe(statement)))
  return Effect.acquireRelease(
    Effect.as(run(`CREATE SCHEMA "${schema}"`), { schema, url: withSearchPath(base, [schema, "public"]) }),
    () => Effect.ignore(run(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`))
  )
}
