/**
 * Postgres.sink names the row and column of a value the database refuses
 * (`SinkError` with a `Refused` reason) and keeps nothing of the part; an
 * unreachable database is `Unavailable`. Real PostgreSQL
 * (`OFFPEAK_TEST_PG_URL`), each test in a schema of its own.
 */
import { assert, it } from "@effect/vitest"
import type { PgClient } from "@effect/sql-pg"
import * as Sink from "@offpeak/core/Sink"
import { Effect } from "effect"
import type { Scope } from "effect"
import * as Pg from "../../../core/test/support/postgres.ts"
import { Postgres } from "../index.ts"

const fresh = (prefix: string): Effect.Effect<{ url: string; sql: PgClient.PgClient }, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const schema = yield* Pg.freshSchema(Pg.url()!, prefix)
    const sql = yield* Pg.connect(schema.url)
    return { url: schema.url, sql }
  })

const part = (seq: number) => ({ runId: "run-1", seq })

/** the reason of a failed write, with the time the write took */
const refusal = <A>(sink: Sink.Sink<A>, rows: ReadonlyArray<A>) =>
  Effect.gen(function*() {
    const started = Date.now()
    const error = yield* Effect.flip(sink.write(part(1), rows))
    return { error, reason: error.reason, ms: Date.now() - started }
  })

const countRows = (sql: PgClient.PgClient, table: string) =>
  Effect.map(sql.unsafe<{ n: number }>(`SELECT count(*)::int AS n FROM ${table}`), (rows) => rows[0]!.n)

Pg.describePostgres("Postgres.sink: refused values name their row and column", () => {
  it.effect("a NUL character in a text column: Refused with the row's index, key and column, found before sending; the rest then writes once", () =>
    Effect.gen(function*() {
      const { sql, url } = yield* fresh("nul")
      yield* sql.unsafe("CREATE TABLE labels (id text PRIMARY KEY, label text, tags text[])")
      const sink = Postgres.sink<{ id: string; label: string; tags: ReadonlyArray<string> }>({ url, table: "labels", key: "id" })
      assert.deepStrictEqual(sink.dispositions, ["merge"])
      assert.strictEqual(Sink.dispositionOf(sink), "merge")
      const input = Array.from({ length: 50 }, (_, i) => ({ id: `k${i}`, label: i === 37 ? "bad\u0000label" : `label ${i}`, tags: [`t${i}`] }))
      const { error, reason, ms } = yield* refusal(sink, input)
      assert.isTrue(Sink.isRefused(error))
      assert.deepStrictEqual(
        reason,
        new Sink.Refused({
          message: "id \"k37\": column \"label\": the value holds a NUL character (\\u0000) at offset 3, which PostgreSQL cannot store in text",
          row: 37,
          column: "label"
        })
      )
      assert.strictEqual(error.message, `labels: part run-1/1 row 38 (id "k37"): column "label": the value holds a NUL character (\\u0000) at offset 3, which PostgreSQL cannot store in text`)
      assert.strictEqual(yield* countRows(sql, "labels"), 0)
      // in an array element too
      const inArray = input.map((r, i) => i === 12 ? { ...r, label: "fine", tags: ["ok", "x\u0000"] } : { ...r, label: "fine" })
      const array = yield* refusal(sink, inArray)
      assert.deepStrictEqual([array.reason?._tag, (array.reason as Sink.Refused).row, (array.reason as Sink.Refused).column], ["Refused", 12, "tags"])
      // without the refused row the part writes, and again changes nothing
      const rest = input.filter((_, i) => i !== 37)
      yield* sink.write(part(1), rest)
      yield* sink.write(part(1), rest)
      assert.strictEqual(yield* countRows(sql, "labels"), 49)
      console.log(`NUL in text: refused row ${(reason as Sink.Refused).row} column ${(reason as Sink.Refused).column} in ${ms} ms, nothing kept; the other 49 written once`)
    }))

  it.effect("a NUL character anywhere in a jsonb value (a model's answer): Refused naming the column; a json column stores it", () =>
    Effect.gen(function*() {
      const { sql, url } = yield* fresh("jsonb")
      yield* sql.unsafe("CREATE TABLE answers (id int PRIMARY KEY, output jsonb, raw json)")
      const sink = Postgres.sink<{ id: number; output: unknown; raw: unknown }>({ url, table: "answers", key: "id", name: "answers" })
      const input = Array.from({ length: 20 }, (_, i) => ({
        id: i,
        output: i === 12 ? { label: "ok", reasons: ["a", "the model wrote \u0000 here"] } : { label: "ok", reasons: [] },
        raw: { text: `answer ${i}` }
      }))
      const { reason } = yield* refusal(sink, input)
      assert.deepStrictEqual(
        reason,
        new Sink.Refused({
          message: "id 12: column \"output\": a string in the value holds a NUL character (\\u0000), which jsonb cannot store (json can)",
          row: 12,
          column: "output"
        })
      )
      assert.strictEqual(yield* countRows(sql, "answers"), 0)
      // a key holding NUL, too
      const key = yield* refusal(sink, [{ id: 1, output: { ["k\u0000"]: 1 }, raw: null }])
      assert.strictEqual((key.reason as Sink.Refused).column, "output")
      // json keeps the text: a NUL there is stored and reads back
      yield* sink.write(part(2), [{ id: 1, output: { label: "ok" }, raw: { text: "a\u0000b" } }])
      const back = yield* sql.unsafe<{ raw: string }>("SELECT raw::text AS raw FROM answers")
      assert.deepStrictEqual(back, [{ raw: "{\"text\":\"a\\u0000b\"}" }])
    }))

  it.effect("a string over a varchar(n): Refused with row and column before sending; excess spaces are cut as PostgreSQL does", () =>
    Effect.gen(function*() {
      const { sql, url } = yield* fresh("varchar")
      yield* sql.unsafe("CREATE TABLE codes (id int PRIMARY KEY, code varchar(8), flag char(2))")
      const sink = Postgres.sink<{ id: number; code: string; flag: string }>({ url, table: "codes", key: "id" })
      const input = Array.from({ length: 30 }, (_, i) => ({ id: i, code: i === 21 ? "ABCDEFGHIJ" : `C${i}`, flag: "y" }))
      const { reason } = yield* refusal(sink, input)
      assert.deepStrictEqual(
        reason,
        new Sink.Refused({ message: "id 21: column \"code\": the value is 10 characters long; the column is character varying(8)", row: 21, column: "code" })
      )
      const flag = yield* refusal(sink, [{ id: 1, code: "x", flag: "yes" }])
      assert.deepStrictEqual([(flag.reason as Sink.Refused).row, (flag.reason as Sink.Refused).column], [0, "flag"])
      assert.strictEqual(yield* countRows(sql, "codes"), 0)
      // characters, not UTF-16 units, and trailing spaces past the length are cut without an error
      yield* sink.write(part(2), [{ id: 1, code: "🙂🙂🙂🙂🙂🙂🙂🙂", flag: "n" }, { id: 2, code: "ABCDEFGH    ", flag: "n " }])
      assert.deepStrictEqual(yield* sql.unsafe("SELECT id, code FROM codes ORDER BY id"), [{ id: 1, code: "🙂🙂🙂🙂🙂🙂🙂🙂" }, { id: 2, code: "ABCDEFGH" }])
    }))

  it.effect("refusals the server finds: the row from the parameter it names, else from a search in the failed statement; the column when it says", () =>
    Effect.gen(function*() {
      const { sql, url } = yield* fresh("server")
      yield* sql.unsafe(`CREATE TABLE scores (
        id int PRIMARY KEY, label text NOT NULL, score float8 CHECK (score BETWEEN 0 AND 1), email text UNIQUE, n int)`)
      type Score = { id: number; label: string | null; score: number; email: string; n: number | string }
      const sink = Postgres.sink<Score>({
        url,
        table: "scores",
        key: "id",
        name: "scores"
      })
      const base = Array.from({ length: 2_500 }, (_, i): Score => ({ id: i, label: `l${i}`, score: 0.5, email: `u${i}@x`, n: i }))
      const cases: ReadonlyArray<readonly [string, ReadonlyArray<typeof base[number]>, number, string | undefined, RegExp]> = [
        // a bind-time error names its parameter: row and column at once
        ["type", base.map((r, i) => i === 1_999 ? { ...r, n: "12abc" } : r), 1_999, "n", /invalid input syntax for type integer: "12abc"/],
        // NOT NULL: the server names the column, the search finds the row (second of three statements)
        ["not null", base.map((r, i) => i === 1_337 ? { ...r, label: null } : r), 1_337, "label", /null value in column "label" of relation "scores" violates not-null constraint/],
        // CHECK: no column from the server, the row from the search
        ["check", base.map((r, i) => i === 2_222 ? { ...r, score: 7 } : r), 2_222, undefined, /violates check constraint "scores_score_check"/],
        // a unique index on another column: the later of the two rows
        ["unique", base.map((r, i) => i === 900 ? { ...r, email: "u5@x" } : r), 900, undefined, /duplicate key value violates unique constraint "scores_email_key".*\(Key \(email\)=\(u5@x\) already exists\.\)/],
        // the same, with the two rows in different statements: the statements before are written again first
        ["unique across statements", base.map((r, i) => i === 1_500 ? { ...r, email: "u5@x" } : r), 1_500, undefined, /duplicate key value violates unique constraint "scores_email_key"/],
        // a number out of range, and a key repeated in the part: the row that stays (the last) is named
        [
          "range",
          base.map((r, i) => i === 40 ? { ...r, id: 3, n: "99999999999" } : r),
          40,
          "n",
          /value "99999999999" is out of range for type integer/
        ]
      ]
      for (const [label, input, row, column, message] of cases) {
        const { error, reason, ms } = yield* refusal(sink, input)
        assert.strictEqual(reason?._tag, "Refused", `${label}: ${error.message}`)
        const refused = reason as Sink.Refused
        assert.strictEqual(refused.row, row, label)
        assert.strictEqual(refused.column, column, label)
        assert.match(refused.message, message, label)
        assert.match(error.message, new RegExp(`^scores: part run-1/1 row ${row + 1} \\(id ${input[row]!.id}\\): `), label)
        assert.strictEqual(yield* countRows(sql, "scores"), 0, label)
        console.log(`server refusal (${label}): row ${refused.row} of 2,500, column ${refused.column ?? "-"}, located in ${ms} ms: ${refused.message}`)
      }
      yield* sink.write(part(1), base)
      assert.strictEqual(yield* countRows(sql, "scores"), 2_500)
    }))

  it.effect("keys equal for the column but not as text (numeric 1.0 and 1.00): Refused naming the second row, not a failure forever", () =>
    Effect.gen(function*() {
      const { sql, url } = yield* fresh("cardinality")
      yield* sql.unsafe("CREATE TABLE n (id numeric PRIMARY KEY, v text)")
      const sink = Postgres.sink<{ id: string; v: string }>({ url, table: "n", key: "id" })
      const { reason } = yield* refusal(sink, [{ id: "1.0", v: "a" }, { id: "2", v: "b" }, { id: "1.00", v: "c" }, { id: "3", v: "d" }])
      assert.deepStrictEqual([reason?._tag, (reason as Sink.Refused).row], ["Refused", 2])
      assert.match((reason as Sink.Refused).message, /^id "1\.00": ON CONFLICT DO UPDATE command cannot affect row a second time/)
      assert.strictEqual(yield* countRows(sql, "n"), 0)
    }))

  it.effect("a deferred constraint that fails at COMMIT is Refused (no row: the part's)", () =>
    Effect.gen(function*() {
      const { sql, url } = yield* fresh("deferred")
      yield* sql.unsafe("CREATE TABLE parent (id int PRIMARY KEY)")
      yield* sql.unsafe("CREATE TABLE child (id int PRIMARY KEY, parent int REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)")
      const sink = Postgres.sink<{ id: number; parent: number }>({ url, table: "child", key: "id" })
      const { error, reason } = yield* refusal(sink, [{ id: 1, parent: 7 }])
      assert.strictEqual(reason?._tag, "Refused")
      assert.isUndefined((reason as Sink.Refused).row)
      assert.match(error.message, /violates foreign key constraint "child_parent_fkey"/)
    }))

  it.effect("update mode: an over-long array element is refused, not cut by a cast", () =>
    Effect.gen(function*() {
      const { sql, url } = yield* fresh("update")
      yield* sql.unsafe("CREATE TABLE docs (id int PRIMARY KEY, body text NOT NULL, tags varchar(3)[])")
      yield* sql.unsafe("INSERT INTO docs SELECT g, 'b', NULL FROM generate_series(1, 10) g")
      const sink = Postgres.sink<{ id: number; tags: ReadonlyArray<string> }>({ url, table: "docs", key: "id", columns: ["id", "tags"], mode: "update" })
      const { reason } = yield* refusal(sink, Array.from({ length: 10 }, (_, i) => ({ id: i + 1, tags: i === 6 ? ["abc", "abcdef"] : ["abc"] })))
      assert.deepStrictEqual([reason?._tag, (reason as Sink.Refused).row], ["Refused", 6])
      assert.match((reason as Sink.Refused).message, /value too long for type character varying\(3\)/)
      assert.deepStrictEqual(yield* sql.unsafe("SELECT count(*)::int AS n FROM docs WHERE tags IS NOT NULL"), [{ n: 0 }])
    }))

  it.effect("rows that are not objects or lack a key are Refused; a dead port, a missing table are Unavailable", () =>
    Effect.gen(function*() {
      const { sql, url } = yield* fresh("unavail")
      yield* sql.unsafe("CREATE TABLE t (id int PRIMARY KEY, v text)")
      const sink = Postgres.sink<unknown>({ url, table: "t", key: "id" })
      const notObject = yield* refusal(sink, [{ id: 1, v: "a" }, "text"])
      assert.deepStrictEqual(notObject.reason, new Sink.Refused({ message: "the row is not an object", row: 1 }))
      const noKey = yield* refusal(sink, [{ id: 1, v: "a" }, { id: 2, v: "b" }, { v: "c" }])
      assert.deepStrictEqual(noKey.reason, new Sink.Refused({ message: "column \"id\": no value for the key column", row: 2, column: "id" }))

      const dead = yield* refusal(Postgres.sink({ url: "postgres://app:s3cret-pw@127.0.0.1:1/appdb", table: "t", key: "id", name: "out" }), [{ id: 1 }])
      assert.strictEqual(dead.reason?._tag, "Unavailable")
      assert.isFalse(Sink.isRefused(dead.error))
      assert.match(dead.error.message, /^out: part run-1\/1: 127\.0\.0\.1:1\/appdb: .*ECONNREFUSED/)
      assert.match(dead.reason!.message, /ECONNREFUSED/)
      assert.notInclude(dead.error.message, "s3cret")
      const missing = yield* refusal(Postgres.sink({ url, table: "missing", key: "id" }), [{ id: 1 }])
      assert.deepStrictEqual(
        missing.reason,
        new Sink.Unavailable({ message: "table \"missing\" does not exist (pass createTable to create it)" })
      )
      console.log(`dead port: ${dead.reason!._tag} after ${dead.ms} ms`)
    }))
})
